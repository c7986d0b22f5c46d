"""GLUE's own files, read without --column; the --glue presets (task type, labels, metrics, the paper's
hyper-parameters); `datasets` ClassLabel names kept.

The files are written here in the layouts GLUE distributes (headers spelled out literally, not taken
from gptkit's table), with rows that look like GLUE's, including a bare `"` that a CSV reader would
take for the start of a quoted field."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gptkit.cli import main
from gptkit.errors import GptkitError
from gptkit.tasks import TaskSpec, load_examples, load_training_examples, read_rows
from gptkit.tasks.config import FinetuneConfig
from gptkit.tasks.glue import TASKS as GLUE
from gptkit.tokenizer import train_from_texts

pytestmark = pytest.mark.usefixtures("one_thread")

PAIRS = [
    ("The sailors rode the breeze clear of the rocks.", "The sailors steered away from the rocks."),
    ('He said "enough and walked out of the room.', "He left the room without a word."),
    ("Stocks fell sharply on Monday after the report.", "The market rose on Monday."),
    ("A man is playing a guitar on the street.", "A man plays music outside."),
    ("The committee approved the new budget in May.", "The budget was rejected in May."),
    ("Two dogs are running through the snow.", "Animals are outside in the winter."),
    ("She bought the 12\" pizza for the party.", "Nobody ordered any food for the party."),
    ("The bill passed the senate by a wide margin.", "The senate voted for the bill."),
]
BINARY = ["1", "0", "0", "1", "0", "1", "0", "1"]
NLI3 = ["entailment", "neutral", "contradiction", "entailment", "contradiction", "neutral", "contradiction",
        "entailment"]
NLI2 = ["entailment", "not_entailment"] * 4
SCORES = ["4.200", "1.000", "0.400", "3.800", "0.750", "2.600", "0.000", "4.800"]

MNLI_COLS = ("index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\t"
             "sentence2_parse\tsentence1\tsentence2")
STSB_COLS = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2"
MRPC_COLS = "#1 ID\t#2 ID\t#1 String\t#2 String"


def _mnli(i, a, b, y, dev=False):
    parse = f"( ( {a.split()[0]} ) )"  # a parse column holds other text: reading it would be caught
    labels = [y] * (5 if dev else 1)
    return [str(i), str(3000 + i), f"{3000 + i}e", "fiction", parse, parse, f"(ROOT {parse})", f"(ROOT {parse})",
            a, b, *labels, y]


# name: (train file name, header of train/dev (None: CoLA's headerless files), a row, the labels as
# the file writes them, the header of GLUE's unlabelled test file, a test row)
LAYOUTS = {
    "cola": ("train.tsv", None, lambda i, a, b, y: [f"gj0{i % 3}", y, "" if y == "1" else "*", a], BINARY,
             "index\tsentence", lambda i, a, b: [str(i), a]),
    "sst2": ("train.tsv", "sentence\tlabel", lambda i, a, b, y: [a, y], BINARY,
             "index\tsentence", lambda i, a, b: [str(i), a]),
    "mrpc": ("msr_paraphrase_train.txt", "\ufeffQuality\t" + MRPC_COLS,
             lambda i, a, b, y: [y, str(702876 + i), str(702977 + i), a, b], BINARY,
             "index\t" + MRPC_COLS, lambda i, a, b: [str(i), str(1089874 + i), str(1089925 + i), a, b]),
    "qqp": ("train.tsv", "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate",
            lambda i, a, b, y: [str(i), str(2 * i + 1), str(2 * i + 2), a, b, y], BINARY,
            "id\tquestion1\tquestion2", lambda i, a, b: [str(i), a, b]),
    "stsb": ("train.tsv", STSB_COLS + "\tscore",
             lambda i, a, b, y: [str(i), "main-news", "headlines", "2015", str(i), "none", "none", a, b, y], SCORES,
             STSB_COLS, lambda i, a, b: [str(i), "main-news", "headlines", "2016", str(i), "none", "none", a, b]),
    "mnli": ("train.tsv", MNLI_COLS + "\tlabel1\tgold_label", _mnli, NLI3, MNLI_COLS,
             lambda i, a, b: _mnli(i, a, b, "")[:10]),
    "qnli": ("train.tsv", "index\tquestion\tsentence\tlabel", lambda i, a, b, y: [str(i), a, b, y], NLI2,
             "index\tquestion\tsentence", lambda i, a, b: [str(i), a, b]),
    "rte": ("train.tsv", "index\tsentence1\tsentence2\tlabel", lambda i, a, b, y: [str(i), a, b, y], NLI2,
            "index\tsentence1\tsentence2", lambda i, a, b: [str(i), a, b]),
    "wnli": ("train.tsv", "index\tsentence1\tsentence2\tlabel", lambda i, a, b, y: [str(i), a, b, y], BINARY,
             "index\tsentence1\tsentence2", lambda i, a, b: [str(i), a, b]),
}
# name: (task type, labels as gptkit names them (None: regression), metrics as GLUE reports them)
PRESETS = {
    "cola": ("classification", ["unacceptable", "acceptable"], ["matthews"]),
    "sst2": ("classification", ["negative", "positive"], ["accuracy"]),
    "mrpc": ("similarity", ["not_equivalent", "equivalent"], ["f1", "accuracy"]),
    "qqp": ("similarity", ["not_duplicate", "duplicate"], ["f1", "accuracy"]),
    "stsb": ("similarity", None, ["pearson", "spearman"]),
    "mnli": ("entailment", ["entailment", "neutral", "contradiction"], ["accuracy"]),
    "qnli": ("entailment", ["entailment", "not_entailment"], ["accuracy"]),
    "rte": ("entailment", ["entailment", "not_entailment"], ["accuracy"]),
    "wnli": ("entailment", ["not_entailment", "entailment"], ["accuracy"]),
}


def write_glue(directory, name):
    """GLUE's train file (8 rows), dev file (the last 4; MNLI's dev_matched has label1..label5) and
    unlabelled test file of one task."""
    train_name, header, row, labels, test_header, test_row = LAYOUTS[name]
    directory.mkdir(parents=True, exist_ok=True)

    def write(path, head, rows):
        lines = ([head] if head is not None else []) + ["\t".join(r) for r in rows]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path

    rows = [row(i, a, b, y) for i, ((a, b), y) in enumerate(zip(PAIRS, labels))]
    train = write(directory / train_name, header, rows)
    if name == "mnli":
        dev = write(directory / "dev_matched.tsv", MNLI_COLS + "\t" + "\t".join(f"label{k}" for k in range(1, 6)) +
                    "\tgold_label", [_mnli(i, a, b, y, dev=True) for i, ((a, b), y) in enumerate(zip(PAIRS, labels))][4:])
    else:
        dev = write(directory / "dev.tsv", header.lstrip("\ufeff") if header else None, rows[4:])
    test = write(directory / "test.tsv", test_header, [test_row(i, a, b) for i, (a, b) in enumerate(PAIRS[:3])])
    return train, dev, test


def expected_texts(name):
    return [(a,) if PRESETS[name][0] == "classification" else (a, b) for a, b in PAIRS]


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_glue_layout_read_without_columns(name, tmp_path):
    """The plain task type (no preset) reads every GLUE file: the right text columns, a bare quote kept
    as a character, the label column (MNLI's gold_label, QQP's is_duplicate, MRPC's Quality)."""
    train, dev, test = write_glue(tmp_path, name)
    task = PRESETS[name][0]
    spec, examples = load_training_examples(TaskSpec(task), train)
    assert [x.texts for x in examples] == expected_texts(name)
    labels = LAYOUTS[name][3]
    if name == "stsb":
        assert spec.regression and [x.label for x in examples] == [float(y) for y in labels]
    else:
        assert [spec.labels[x.label] for x in examples] == labels
    assert [x.texts for x in load_examples(spec, dev)] == expected_texts(name)[4:]
    unlabelled = load_examples(spec, test, need_label=False)
    assert [x.texts for x in unlabelled] == expected_texts(name)[:3] and {x.label for x in unlabelled} == {None}


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tok")
    train_from_texts([a + " " + b for a, b in PAIRS] * 3, vocab_size=300, min_frequency=1).save(d)
    return d


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_glue_preset_finetunes_on_original_files(name, tmp_path, tok_dir, capsys):
    """`gptkit finetune --glue NAME` on GLUE's train and dev files, no --task and no --column: the
    preset's task type, label names, metrics (the first picks the best checkpoint); a flag overrides a
    preset default; `predict` on GLUE's unlabelled test file."""
    train, dev, test = write_glue(tmp_path / "data", name)
    run = tmp_path / "run"
    rc = main(["finetune", "--glue", name, "--train", str(train), "--val", str(dev), "--out", str(run),
               "--no-pretrain", "--preset", "tiny", "--tokenizer", str(tok_dir), "--max-steps", "2",
               "--batch-size", "4", "--lr", "1e-3", "--quiet", "--json"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    task, labels, metrics = PRESETS[name]
    assert summary["task"] == task and summary["glue"] == name and summary["labels"] == labels
    assert summary["regression"] is (labels is None) and summary["examples"] == {"train": 8, "val": 4}
    assert summary["metric"] == metrics[0] and list(summary["val"]) == [*metrics, "loss"]
    spec = json.loads((run / "best" / "task.json").read_text())
    assert spec["metrics"] == metrics and spec["training"]["lr"] == 1e-3 and spec["training"]["batch_size"] == 4
    assert spec["training"]["lm_coef"] == 0.5 and spec["training"]["clf_pdrop"] == 0.1  # the paper's

    assert main(["evaluate", str(run), "--data", str(dev), "--json"]) == 0
    assert list(json.loads(capsys.readouterr().out))[-len(metrics) - 1:-1] == metrics
    out = tmp_path / "preds.jsonl"
    assert main(["predict", str(run), "--data", str(test), "--out", str(out)]) == 0
    preds = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(preds) == 3 and "gold" not in preds[0]
    if labels:
        assert {p["prediction"] for p in preds} <= set(labels)


def test_presets_use_the_papers_hyperparameters_and_refuse_contradictions(tmp_path):
    cfg = FinetuneConfig(glue="rte", train="t.tsv", init="m")
    assert cfg.task == "entailment"
    assert (cfg.lr, cfg.batch_size, cfg.epochs, cfg.warmup, cfg.lm_coef, cfg.clf_pdrop) == (6.25e-5, 32, 3, 0.002,
                                                                                             0.5, 0.1)
    with pytest.raises(GptkitError, match="contradicts glue rte"):
        FinetuneConfig(glue="rte", task="similarity", train="t.tsv", init="m")
    with pytest.raises(GptkitError, match="is needed"):
        FinetuneConfig(train="t.tsv", init="m")


def test_preset_metrics_are_glues(tmp_path):
    """MRPC's F1 is of `equivalent` (GLUE's class 1), even though a sorted label set would put it
    first; CoLA reports Matthews only; a GLUE file's 0/1 is the preset's class id."""
    spec = TaskSpec("similarity", **GLUE["mrpc"].spec_fields())
    gold = np.array([1, 1, 1, 0, 0, 0])
    pred = np.array([1, 1, 0, 0, 0, 1])  # equivalent: tp 2, fp 1, fn 1 -> F1 2/3
    assert spec.type.metrics(spec, pred, gold) == {"f1": pytest.approx(2 / 3), "accuracy": pytest.approx(4 / 6)}
    pred = np.array([1, 1, 1, 1, 0, 0])  # equivalent F1 6/7; not_equivalent's would be 4/5
    assert spec.type.metrics(spec, pred, gold)["f1"] == pytest.approx(6 / 7)
    cola = TaskSpec("classification", **GLUE["cola"].spec_fields())
    # Matthews for tp 2, tn 1, fp 1, fn 0: (2*1 - 1*0) / sqrt(3*2*2*1)
    assert cola.type.metrics(cola, np.array([1, 1, 1, 0]), np.array([1, 1, 0, 0])) == {
        "matthews": pytest.approx(2 / np.sqrt(12))}
    train, _, _ = write_glue(tmp_path, "cola")
    learned, examples = load_training_examples(cola, train)
    assert learned.labels == ["unacceptable", "acceptable"] and [x.label for x in examples] == [int(y) for y in BINARY]


def test_cola_headerless_is_strict(tmp_path):
    """Only a file whose every line is a CoLA record is read as CoLA; a line that is not, after a first
    line that is, is an error naming it; a TSV with a header is never taken for CoLA."""
    bad = tmp_path / "in_domain_train.tsv"
    bad.write_text("gj04\t1\t\tThe sailors rode the breeze.\ngj04\tmaybe\t\tA sentence.\n", encoding="utf-8")
    with pytest.raises(GptkitError, match=r"in_domain_train.tsv, line 2: not a CoLA record"):
        read_rows(bad)
    header = tmp_path / "h.tsv"
    header.write_text("src\tlabel\tmark\tsentence\ngj04\t1\t\tThe sailors rode the breeze.\n", encoding="utf-8")
    assert [r.fields["src"] for r in read_rows(header)] == ["gj04"]


def test_txt_needs_a_glue_header(tmp_path):
    """A `.txt` is read only when its header is one of GLUE's (MRPC's msr_paraphrase files)."""
    other = tmp_path / "notes.txt"
    other.write_text("a\tb\n1\t2\n", encoding="utf-8")
    with pytest.raises(GptkitError, match="unknown task file type '.txt'"):
        read_rows(other)


def test_glue_layout_under_another_task_type_is_an_error(tmp_path):
    """A recognised layout with a task type of another number of texts is refused (today's default
    would read QNLI's `sentence` alone), unless --column names the text."""
    train, _, _ = write_glue(tmp_path, "qnli")
    with pytest.raises(GptkitError, match=r"GLUE.s qnli layout .* task type entailment \(--glue qnli\)"):
        load_training_examples(TaskSpec("classification"), train)
    _, examples = load_training_examples(TaskSpec("classification", columns={"text": "question"}), train)
    assert examples[0].texts == (PAIRS[0][0],)


# --- datasets: ClassLabel names -----------------------------------------------------------------

def _mrpc_dataset(datasets, labels):
    features = datasets.Features({"sentence1": datasets.Value("string"), "sentence2": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["not_equivalent", "equivalent"])})
    return datasets.Dataset.from_dict({"sentence1": [a for a, _ in PAIRS[:len(labels)]],
                                       "sentence2": [b for _, b in PAIRS[:len(labels)]], "label": labels},
                                      features=features)


def test_classlabel_names_survive_parquet_and_save_to_disk(tmp_path):
    """Labels are the ClassLabel's names in its id order (not "0"/"1", not sorted: F1's class stays
    `equivalent`); the ids are accepted as aliases (a GLUE file's 0/1); -1 (no label) reads as none."""
    datasets = pytest.importorskip("datasets")
    ds = _mrpc_dataset(datasets, [int(y) for y in BINARY])
    ds.to_parquet(str(tmp_path / "train.parquet"))
    ds.save_to_disk(str(tmp_path / "train_ds"))
    _, glue_dev, _ = write_glue(tmp_path / "glue", "mrpc")
    for path in (tmp_path / "train.parquet", tmp_path / "train_ds"):
        spec, examples = load_training_examples(TaskSpec("similarity"), path)
        assert spec.labels == ["not_equivalent", "equivalent"], path
        assert [x.label for x in examples] == [int(y) for y in BINARY]
        assert [x.label for x in load_examples(spec, glue_dev)] == [int(y) for y in BINARY[4:]]
    _mrpc_dataset(datasets, [-1, -1]).to_parquet(str(tmp_path / "test.parquet"))
    assert {x.label for x in load_examples(spec, tmp_path / "test.parquet", need_label=False)} == {None}
    # multiple choice reads a ClassLabel's id as the candidate index (COPA names them choice1, choice2)
    copa = datasets.Dataset.from_dict(
        {"premise": ["The man broke his toe.", "I tipped the bottle."], "choice1": ["He dropped a hammer.", "It froze."],
         "choice2": ["He got a hole in his sock.", "It spilled."], "label": [0, 1]},
        features=datasets.Features({**{c: datasets.Value("string") for c in ("premise", "choice1", "choice2")},
                                    "label": datasets.ClassLabel(names=["choice1", "choice2"])}))
    copa.to_parquet(str(tmp_path / "copa.parquet"))
    mc = TaskSpec("multiple_choice", columns={"choices": "choice1,choice2"})
    assert [x.label for x in load_training_examples(mc, tmp_path / "copa.parquet")[1]] == [0, 1]


def test_classlabel_ids_out_of_range_and_to_json(tmp_path):
    """An id outside the ClassLabel is an error naming the row; `to_json` writes the ids alone, so
    those files give "0"/"1" (the --glue presets map them to the names)."""
    datasets = pytest.importorskip("datasets")
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "train.parquet"
    _mrpc_dataset(datasets, [0, 1]).to_parquet(str(path))
    table = pq.read_table(str(path))
    bad = table.set_column(2, "label", pa.array([0, 7], type=pa.int64()))
    pq.write_table(bad.replace_schema_metadata(table.schema.metadata), str(path))
    with pytest.raises(GptkitError, match=r"train.parquet, line 2: label 7 in field 'label' is not an id"):
        read_rows(path)
    ds = _mrpc_dataset(datasets, [int(y) for y in BINARY])
    ds.to_json(str(tmp_path / "train.jsonl"))
    assert load_training_examples(TaskSpec("similarity"), tmp_path / "train.jsonl")[0].labels == ["0", "1"]
    preset = TaskSpec("similarity", **GLUE["mrpc"].spec_fields())
    assert [x.label for x in load_training_examples(preset, tmp_path / "train.jsonl")[1]] == [int(y) for y in BINARY]
