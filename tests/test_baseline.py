"""`gptkit baseline`: majority class and TF-IDF + logistic regression from the files `finetune` reads."""

from __future__ import annotations

import csv
import json
import random

import pytest

from gptkit.baseline import BaselineConfig, run_baselines
from gptkit.cli import main
from gptkit.errors import GptkitError

pytest.importorskip("sklearn")

GOOD = "great wonderful superb moving delightful".split()
BAD = "dull awful boring tedious clumsy".split()
FILLER = "the film was a with and of its cast story".split()


def _sentence(rng: random.Random, positive: bool) -> str:
    cue = rng.choice(GOOD if positive else BAD)
    words = [rng.choice(FILLER) for _ in range(6)]
    words.insert(rng.randrange(len(words)), cue)
    return " ".join(words)


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def sentiment_files(tmp_path):
    """A separable task whose majority class is 'neg' (60%): TF-IDF must find the cue words."""
    rng = random.Random(0)
    files = {}
    for split, n in (("train", 100), ("val", 40), ("test", 40)):
        rows = [{"text": _sentence(rng, i % 5 < 2), "label": "pos" if i % 5 < 2 else "neg"} for i in range(n)]
        files[split] = _write_jsonl(tmp_path / f"{split}.jsonl", rows)
    return files


def test_baseline_cli_end_to_end(sentiment_files, capsys):
    f = sentiment_files
    argv = ["baseline", "--task", "classification", "--train", str(f["train"]), "--val", str(f["val"]),
            "--test", str(f["test"])]
    assert main(argv + ["--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["examples"] == {"train": 100, "val": 40, "test": 40}
    assert result["labels"] == ["neg", "pos"]
    assert result["majority"]["label"] == "neg"
    assert result["majority"]["test"]["accuracy"] == pytest.approx(0.6)
    assert result["majority"]["test"]["f1"] == 0.0  # never predicts the positive class
    assert result["tfidf"]["test"]["accuracy"] >= 0.95
    assert set(result["tfidf"]["test"]) == {"accuracy", "f1", "matthews"}  # the metrics finetune prints
    predicted = result["tfidf"]["test_predictions"]  # label indices in file order, for paired comparisons
    gold = [result["labels"].index(r["label"]) for r in map(json.loads, f["test"].read_text().splitlines())]
    assert predicted["labels"] == gold
    right = sum(p == y for p, y in zip(predicted["predictions"], gold, strict=True))
    assert right / len(gold) == pytest.approx(result["tfidf"]["test"]["accuracy"])
    assert set(result["tfidf"]["search"]) == {"1", "3", "10", "30", "100"}
    assert result["tfidf"]["chosen_on"] == "validation"
    best = max(result["tfidf"]["search"].values())
    assert result["tfidf"]["search"][f"{result['tfidf']['C']:g}"] == best

    assert main(argv + ["--c", "0.01", "1"]) == 0
    printed = capsys.readouterr().out
    assert "majority class (always 'neg'):" in printed
    assert "TF-IDF (1-2 grams" in printed and "C=0.01" in printed and "test: accuracy" in printed


def test_c_is_chosen_on_validation_not_test(tmp_path):
    """With 70% of training labels 0, a tiny C predicts 0 everywhere and a large one follows the cue
    words. A validation file labelled all 0 favours the tiny C; the test file (true labels) would favour
    the large one: the chosen C must be the validation's choice."""
    rng = random.Random(1)

    def rows(n, all_zero=False):
        labels = [int(i % 10 >= 7) for i in range(n)]
        return [{"text": _sentence(rng, y == 1), "label": 0 if all_zero else y} for y in labels]

    train = _write_jsonl(tmp_path / "train.jsonl", rows(100))
    val = _write_jsonl(tmp_path / "val.jsonl", rows(30, all_zero=True))
    test = _write_jsonl(tmp_path / "test.jsonl", rows(30))
    result = run_baselines(BaselineConfig(task="classification", train=train, val=val, test=test,
                                          c_grid=(0.001, 100.0)))
    assert result["tfidf"]["search"] == {"0.001": 1.0, "100": pytest.approx(0.7, abs=0.1)}
    assert result["tfidf"]["C"] == 0.001
    assert result["tfidf"]["test"]["accuracy"] == pytest.approx(0.7)  # always 0; C=100 would score ~1.0


def test_pair_task_joins_texts_and_reads_csv_columns(tmp_path):
    """Entailment from CSV with renamed columns: the label depends on the hypothesis's words only, which
    the joined bag of words sees; without a validation file C comes from cross-validation."""
    rng = random.Random(2)

    def rows(n):
        for i in range(n):
            yes = i % 2 == 0
            yield {"p": " ".join(rng.choice(FILLER) for _ in range(5)),
                   "h": _sentence(rng, yes), "gold": "entailment" if yes else "contradiction"}

    for split, n in (("train", 80), ("test", 30)):
        with open(tmp_path / f"{split}.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=["p", "h", "gold"])
            w.writeheader()
            w.writerows(rows(n))
    cfg = BaselineConfig(task="entailment", train=tmp_path / "train.csv", test=tmp_path / "test.csv",
                         columns={"premise": "p", "hypothesis": "h", "label": "gold"})
    result = run_baselines(cfg)
    assert result["tfidf"]["chosen_on"] == "5-fold cross-validation of train"
    assert result["tfidf"]["test"]["accuracy"] >= 0.9
    assert "val" not in result["tfidf"]


def test_regression_labels_use_ridge_and_correlations(tmp_path):
    rng = random.Random(3)

    def rows(n):
        out = []
        for _ in range(n):
            k = rng.randrange(4)
            out.append({"sentence1": " ".join(rng.choice(FILLER) for _ in range(4)),
                        "sentence2": " ".join(["great"] * k + [rng.choice(FILLER) for _ in range(3)]),
                        "label": k + 0.5})
        return out

    files = {s: _write_jsonl(tmp_path / f"{s}.jsonl", rows(n)) for s, n in (("train", 80), ("val", 30), ("test", 30))}
    result = run_baselines(BaselineConfig(task="similarity", train=files["train"], val=files["val"], test=files["test"]))
    assert result["regression"] and result["metric"] == "pearson"
    assert result["tfidf"]["test"]["pearson"] > 0.8
    assert result["majority"]["test"]["pearson"] == pytest.approx(0.0, abs=1e-9)  # a constant prediction


def test_bad_input_is_one_line_naming_the_file(tmp_path, capsys):
    train = _write_jsonl(tmp_path / "train.jsonl", [{"text": "a b", "label": 0}, {"sentence": "c d", "label": 1}])
    assert main(["baseline", "--task", "classification", "--train", str(train)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("gptkit baseline: error:") and "train.jsonl, line 2" in err and "\n" not in err
    with pytest.raises(GptkitError, match="--c"):
        BaselineConfig(task="classification", train=train, c_grid=(0.0,))


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "0"])
def test_c_must_be_positive_and_finite(tmp_path, capsys, value):
    """`--c nan` passed the `c <= 0` check (NaN compares false) and ended in scikit-learn's
    InvalidParameterError traceback."""
    train = _write_jsonl(tmp_path / "train.jsonl", [{"text": "a b", "label": 0}, {"text": "c d", "label": 1}])
    assert main(["baseline", "--task", "classification", "--train", str(train), "--c", "1", value]) == 2
    err = capsys.readouterr().err
    assert err == f"gptkit baseline: error: --c 1.0 {float(value)}: every value must be a positive, finite number\n"


def _choice_rows(rng: random.Random, n: int, *, base: int = 0):
    """4 candidates, the right one holds a GOOD cue word, the others a BAD one; the right answer sits at
    position 2 in 40% of the rows (the majority), else at 0, 1 or 3."""
    rows = []
    for i in range(n):
        answer = 2 if i % 5 < 2 else (0, 1, 3)[i % 3]
        choices = [_sentence(rng, k == answer) for k in range(4)]
        rows.append({"context": " ".join(rng.choice(FILLER) for _ in range(5)), "choices": choices,
                     "label": answer + base})
    return rows


def test_multiple_choice_scores_each_candidate_and_takes_the_best(tmp_path, capsys):
    rng = random.Random(4)
    files = {s: _write_jsonl(tmp_path / f"{s}.jsonl", _choice_rows(rng, n)) for s, n in
             (("train", 100), ("val", 30), ("test", 40))}
    test_rows = [json.loads(line) for line in files["test"].read_text().splitlines()]
    share = sum(r["label"] == 2 for r in test_rows) / len(test_rows)
    argv = ["baseline", "--task", "multiple_choice", "--train", str(files["train"]), "--val", str(files["val"]),
            "--test", str(files["test"])]
    assert main(argv + ["--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["majority"]["label"] == "2"  # the commonest training position
    assert result["majority"]["test"] == {"accuracy": pytest.approx(share)}
    assert result["tfidf"]["test"]["accuracy"] >= 0.95  # the cue words pick the right candidate
    assert result["tfidf"]["chosen_on"] == "validation"
    assert main(argv) == 0
    assert "majority class (always candidate 2):" in capsys.readouterr().out

    # 1-based labels and no validation file: C by cross-validation, the same answers
    rng = random.Random(4)
    for s, n in (("train", 100), ("val", 30), ("test", 40)):
        _write_jsonl(tmp_path / f"{s}1.jsonl", _choice_rows(rng, n, base=1))
    one = run_baselines(BaselineConfig(task="multiple_choice", train=tmp_path / "train1.jsonl",
                                       test=tmp_path / "test1.jsonl", label_base=1))
    assert one["majority"]["label"] == "3"
    assert one["majority"]["test"]["accuracy"] == pytest.approx(share)
    assert one["tfidf"]["chosen_on"] == "5-fold cross-validation of train"
    assert one["tfidf"]["test"]["accuracy"] >= 0.95
