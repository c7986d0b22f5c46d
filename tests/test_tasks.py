"""Task data, the paper's input transformations, batching, metrics, the objective (issue 4)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from gptkit.errors import GptkitError
from gptkit.model import GPT, preset
from gptkit.tasks import (
    FinetuneObjective,
    InputTransform,
    TaskModel,
    TaskSpec,
    collate,
    fit_parts,
    load_examples,
    load_training_examples,
    task_loss,
)
from gptkit.tasks.metrics import accuracy, f1, matthews, pearson, rankdata, spearman
from gptkit.tasks.objective import masked_lm_loss
from gptkit.tokenizer import train_from_texts

WORDS = "the cat sat on a mat dog ran far away is good bad it was very nice story ends well poorly what did do"


@pytest.fixture(scope="module")
def tok():
    return train_from_texts([WORDS] * 20, vocab_size=400, min_frequency=1)


def w(tok, word: str) -> int:
    """The id of a whole word in the gpt1 style (lowercase, `</w>` at the end of a word)."""
    i = tok.token_to_id(word + "</w>")
    assert i is not None, word
    return i


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# --- golden layouts ----------------------------------------------------------------------------------


def test_golden_classification(tok, tmp_path):
    f = write_jsonl(tmp_path / "c.jsonl", [{"sentence": "The cat sat", "label": 1}, {"sentence": "a dog", "label": 0}])
    spec = TaskSpec("classification")
    spec, xs = load_training_examples(spec, f)
    assert spec.labels == ["0", "1"] and not spec.regression
    enc = InputTransform(spec, tok, 64).encode(xs[0])
    assert enc.sequences == [[tok.start_id, w(tok, "the"), w(tok, "cat"), w(tok, "sat"), tok.extract_id]]
    assert enc.label == 1 and not enc.truncated


def test_golden_entailment_all_column_layouts(tok, tmp_path):
    expected = [tok.start_id, w(tok, "a"), w(tok, "dog"), tok.delim_id, w(tok, "it"), w(tok, "ran"), tok.extract_id]
    for a, b in (("premise", "hypothesis"), ("sentence1", "sentence2"), ("question", "sentence")):
        rows = [{a: "a dog", b: "it ran", "label": "entailment"}, {a: "x", b: "y", "label": "neutral"}]
        spec = TaskSpec("entailment")
        spec, xs = load_training_examples(spec, write_jsonl(tmp_path / f"{a}.jsonl", rows))
        assert spec.labels == ["entailment", "neutral"]
        assert InputTransform(spec, tok, 64).encode(xs[0]).sequences == [expected]


def test_golden_similarity_both_orders(tok, tmp_path):
    f = tmp_path / "s.tsv"
    f.write_text("sentence1\tsentence2\tlabel\nthe cat\ta dog ran\t1\nx\ty\t0\n", encoding="utf-8")
    spec = TaskSpec("similarity")
    spec, xs = load_training_examples(spec, f)
    seqs = InputTransform(spec, tok, 64).encode(xs[0]).sequences
    S, D, E = tok.start_id, tok.delim_id, tok.extract_id
    cat = [w(tok, "the"), w(tok, "cat")]
    dog = [w(tok, "a"), w(tok, "dog"), w(tok, "ran")]
    assert seqs == [[S, *cat, D, *dog, E], [S, *dog, D, *cat, E]]


def test_golden_multiple_choice_numbered_and_list_columns(tok, tmp_path):
    S, D, E = tok.start_id, tok.delim_id, tok.extract_id
    ctx = [w(tok, "the"), w(tok, "dog"), w(tok, "ran")]
    q = [w(tok, "what"), w(tok, "did"), w(tok, "it"), w(tok, "do")]
    answers = [[w(tok, "far")], [w(tok, "sat")], [w(tok, "is"), w(tok, "bad")]]
    want = [[S, *ctx, *q, D, *a, E] for a in answers]
    csv_file = tmp_path / "mc.csv"
    csv_file.write_text('context,question,ending0,ending1,ending2,label\nthe dog ran,what did it do,far,sat,is bad,0\n',
                        encoding="utf-8")
    jsonl = write_jsonl(tmp_path / "mc.jsonl",
                        [{"article": "the dog ran", "question": "what did it do", "options": ["far", "sat", "is bad"],
                          "answer": "C"}])
    for f, label in ((csv_file, 0), (jsonl, 2)):
        spec = TaskSpec("multiple_choice")
        spec, xs = load_training_examples(spec, f)
        assert spec.n_choices == 3
        enc = InputTransform(spec, tok, 64).encode(xs[0])
        assert enc.sequences == want and enc.label == label


def test_story_cloze_style_one_based_labels(tok, tmp_path):
    f = tmp_path / "sc.csv"
    f.write_text("story,answer1,answer2,right\nthe dog ran,far,away,2\n", encoding="utf-8")
    spec = TaskSpec("multiple_choice", columns={"label": "right"}, label_base=1)
    assert load_examples(spec, f)[0].label == 1


def test_column_overrides_join_columns(tok, tmp_path):
    f = write_jsonl(tmp_path / "o.jsonl", [{"title": "the cat", "body": "sat", "stars": 5}, {"title": "a", "body": "b", "stars": 1}])
    spec = TaskSpec("classification", columns={"text": "title,body", "label": "stars"})
    spec, xs = load_training_examples(spec, f)
    assert xs[0].texts == ("the cat sat",) and spec.labels == ["1", "5"] and xs[0].label == 1


# --- truncation -------------------------------------------------------------------------------------


def test_fit_parts_longest_first():
    assert fit_parts([10, 2], 8) == [6, 2]
    assert fit_parts([5, 5], 6) == [3, 3]
    assert fit_parts([3, 2], 10) == [3, 2]
    assert sum(fit_parts([100, 40, 3], 20)) == 20


def test_truncation_keeps_task_tokens_and_counts(tok, tmp_path):
    long = " ".join(["the cat sat on a mat"] * 10)
    rows = [{"premise": long, "hypothesis": "it was nice", "label": 0}, {"premise": "a", "hypothesis": "b", "label": 1}]
    spec = TaskSpec("entailment")
    spec, xs = load_training_examples(spec, write_jsonl(tmp_path / "t.jsonl", rows))
    encoded = InputTransform(spec, tok, 16).encode_all(xs)
    seq = encoded[0].sequences[0]
    assert len(seq) == 16 and seq[0] == tok.start_id and seq[-1] == tok.extract_id
    assert seq[-5:] == [tok.delim_id, w(tok, "it"), w(tok, "was"), w(tok, "nice"), tok.extract_id]  # short part kept whole
    assert [x.truncated for x in encoded] == [True, False]
    # Multiple choice: the context loses its beginning; each candidate still ends in <e>.
    mc = TaskSpec("multiple_choice")
    mx = load_examples(mc, write_jsonl(tmp_path / "m.jsonl", [{"context": long + " story ends", "choices": ["well", "poorly"], "label": 0}]))
    for s in InputTransform(mc, tok, 12).encode(mx[0]).sequences:
        assert len(s) == 12 and s[-1] == tok.extract_id and s[-3] == tok.delim_id
        assert s[-5:-3] == [w(tok, "story"), w(tok, "ends")]  # the context's end is kept
        assert s[1] == w(tok, "the") and s.count(w(tok, "cat")) == 1


# --- batching ---------------------------------------------------------------------------------------


def test_collate_right_pads_and_extract_positions(tok, tmp_path):
    rows = [{"text": "the cat sat on a mat", "label": 0}, {"text": "dog", "label": 1}]
    spec = TaskSpec("classification")
    spec, xs = load_training_examples(spec, write_jsonl(tmp_path / "b.jsonl", rows))
    enc = InputTransform(spec, tok, 64).encode_all(xs)
    b = collate(enc, tok.pad_id, spec)
    assert b.ids.shape == (2, 8)
    assert b.extract.tolist() == [7, 2]
    assert b.ids[1, 3:].tolist() == [tok.pad_id] * 5 and b.mask[1].tolist() == [True] * 3 + [False] * 5
    assert b.ids[1, 2].item() == tok.extract_id and b.labels.tolist() == [0, 1]


# --- objective --------------------------------------------------------------------------------------


def tiny_task_model(tok, spec, seed=0):
    torch.manual_seed(seed)
    gpt = GPT(preset("tiny", vocab_size=tok.vocab_size, n_ctx=32, n_layer=1))
    return TaskModel(gpt, spec).eval()


def _cls_batch(tok, tmp_path, texts):
    rows = [{"text": t, "label": i % 2} for i, t in enumerate(texts)]
    spec = TaskSpec("classification")
    spec, xs = load_training_examples(spec, write_jsonl(tmp_path / "o.jsonl", rows))
    return spec, InputTransform(spec, tok, 32).encode_all(xs)


def test_lm_loss_ignores_padding(tok, tmp_path):
    spec, enc = _cls_batch(tok, tmp_path, ["the cat sat on a mat", "dog ran"])
    model = tiny_task_model(tok, spec)
    batch = collate(enc, tok.pad_id, spec)
    with torch.no_grad():
        loss = masked_lm_loss(model, model(batch).hidden, batch.ids, batch.mask)
        # Different pad ids and extra padding change nothing.
        batch2 = collate(enc, w(tok, "cat"), spec)
        wide = torch.nn.functional.pad(batch.ids, (0, 5), value=7)
        wide_mask = torch.nn.functional.pad(batch.mask, (0, 5), value=False)
        loss2 = masked_lm_loss(model, model(batch2).hidden, batch2.ids, batch2.mask)
        loss3 = masked_lm_loss(model, model.gpt.transformer(wide).hidden, wide, wide_mask)
        # By hand: each sequence alone, mean over its real targets, then the mean of the two.
        per = []
        for seq in (x.sequences[0] for x in enc):
            ids = torch.tensor([seq])
            lg = model.gpt(ids)[0, :-1]
            per.append(torch.nn.functional.cross_entropy(lg, ids[0, 1:]))
    want = torch.stack(per).mean()
    torch.testing.assert_close(loss, want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(loss2, want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(loss3, want, rtol=1e-5, atol=1e-6)


def test_lm_coef_zero_is_exactly_the_task_loss(tok, tmp_path):
    spec, enc = _cls_batch(tok, tmp_path, ["the cat sat", "dog ran far", "a mat", "it is good"])
    model = tiny_task_model(tok, spec)
    batch = collate(enc, tok.pad_id, spec)
    with torch.no_grad():
        loss0, m0 = FinetuneObjective(0.0)(model, batch)
        want = task_loss(model, model(batch), batch.labels)
        loss5, m5 = FinetuneObjective(0.5)(model, batch)
    assert torch.equal(loss0, want) and "lm_loss" not in m0
    assert m5["lm_loss"] > 0 and "tokens" not in m0
    torch.testing.assert_close(loss5, want + 0.5 * torch.tensor(m5["lm_loss"]), rtol=1e-5, atol=1e-6)


def test_similarity_output_identical_when_swapped(tok, tmp_path):
    rows = [{"sentence1": "the cat sat on a mat", "sentence2": "dog ran", "label": 1},
            {"sentence1": "dog ran", "sentence2": "the cat sat on a mat", "label": 1},
            {"sentence1": "x", "sentence2": "y", "label": 0}]
    spec = TaskSpec("similarity")
    spec, xs = load_training_examples(spec, write_jsonl(tmp_path / "s.jsonl", rows))
    model = tiny_task_model(tok, spec)
    enc = InputTransform(spec, tok, 32).encode_all(xs)
    with torch.no_grad():
        out = model(collate(enc, tok.pad_id, spec)).logits
        # One example per call: (A, B) gives rows [AB, BA], (B, A) gives [BA, AB]; the head adds the
        # two <e> states, so the outputs must be bit-identical, not merely close.
        one = model(collate(enc[:1], tok.pad_id, spec)).logits
        two = model(collate(enc[1:2], tok.pad_id, spec)).logits
    assert out.shape == (3, 2)
    assert torch.equal(one, two)
    torch.testing.assert_close(out[0], out[1])
    assert not torch.equal(out[0], out[2])


def test_multiple_choice_scores_softmax(tok, tmp_path):
    rows = [{"context": "the dog", "choices": ["ran", "sat", "is bad"], "label": 1}] * 2
    spec = TaskSpec("multiple_choice")
    xs = load_examples(spec, write_jsonl(tmp_path / "m.jsonl", rows))
    model = tiny_task_model(tok, spec)
    batch = collate(InputTransform(spec, tok, 32).encode_all(xs), tok.pad_id, spec)
    assert batch.ids.shape[0] == 6 and batch.n_choices == 3
    with torch.no_grad():
        probs = model.probabilities(model(batch).logits)
    assert probs.shape == (2, 3)
    torch.testing.assert_close(probs.sum(-1), torch.ones(2))


# --- metrics ----------------------------------------------------------------------------------------


def test_metrics_against_hand_values():
    gold = np.array([1, 1, 1, 0, 0, 0, 1, 0])
    pred = np.array([1, 1, 0, 0, 0, 1, 1, 0])
    assert accuracy(pred, gold) == 0.75
    # tp 3, fp 1, fn 1 -> F1 = 6/8; MCC = (3*3 - 1*1)/sqrt(4*4*4*4) = 0.5
    assert f1(pred, gold) == pytest.approx(0.75)
    assert matthews(pred, gold) == pytest.approx(0.5)
    assert matthews(np.zeros(4, int), np.array([0, 1, 0, 1])) == 0.0
    assert matthews(np.array([0, 1, 2]), np.array([0, 1, 2]), 3) == pytest.approx(1.0)
    x = np.array([1.0, 2.0, 3.0, 4.0])
    assert pearson(x, 2 * x + 1) == pytest.approx(1.0)
    assert pearson(x, -x) == pytest.approx(-1.0)
    assert rankdata(np.array([10.0, 20.0, 20.0, 5.0])).tolist() == [2.0, 3.5, 3.5, 1.0]
    assert spearman(x, x**3) == pytest.approx(1.0)
    assert pearson(np.array([1.0, 2.0, 3.0]), np.array([1.0, 3.0, 2.0])) == pytest.approx(0.5)


# --- bad files --------------------------------------------------------------------------------------


def _err(spec, path, infer: bool = False) -> str:
    with pytest.raises(GptkitError) as e:
        load_training_examples(spec, path) if infer else load_examples(spec, path)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_bad_missing_column_lists_columns(tmp_path):
    f = write_jsonl(tmp_path / "m.jsonl", [{"review": "good", "label": 1}])
    msg = _err(TaskSpec("classification"), f, infer=True)
    assert str(f) in msg and "missing column for text" in msg and "columns found: review, label" in msg


def test_bad_malformed_json_line(tmp_path):
    f = tmp_path / "j.jsonl"
    f.write_text('{"text": "a", "label": 1}\n{"text": "b", "label": \n', encoding="utf-8")
    assert f"{f}, line 2: malformed JSON" in _err(TaskSpec("classification"), f, infer=True)


def test_bad_ragged_csv_row(tmp_path):
    f = tmp_path / "r.csv"
    f.write_text("text,label\na,1\nb,0,extra\n", encoding="utf-8")
    assert f"{f}, line 3: ragged row: 3 fields but the header has 2" in _err(TaskSpec("classification"), f, infer=True)


def test_bad_empty_text(tmp_path):
    f = write_jsonl(tmp_path / "e.jsonl", [{"premise": "a", "hypothesis": "b", "label": 0},
                                           {"premise": "  ", "hypothesis": "b", "label": 1}])
    assert f"{f}, line 2: empty text in field 'premise'" in _err(TaskSpec("entailment"), f, infer=True)


def test_bad_label_not_in_set(tmp_path):
    spec = TaskSpec("classification")
    spec, _ = load_training_examples(spec, write_jsonl(tmp_path / "train.jsonl", [{"text": "a", "label": "pos"}, {"text": "b", "label": "neg"}]))
    val = write_jsonl(tmp_path / "val.jsonl", [{"text": "a", "label": "pos"}, {"text": "c", "label": "neutral"}])
    msg = _err(spec, val)
    assert f"{val}, line 2: label 'neutral' in field 'label' is not in the label set ['neg', 'pos']" in msg


def test_bad_multiple_choice_label_out_of_range(tmp_path):
    f = write_jsonl(tmp_path / "mc.jsonl", [{"context": "a", "choices": ["x", "y"], "label": 2}])
    msg = _err(TaskSpec("multiple_choice"), f)
    assert f"{f}, line 1: label '2' in field 'label' is out of range for 2 candidates" in msg


def test_bad_files_misc(tmp_path):
    assert "no such file" in _err(TaskSpec("classification"), tmp_path / "nope.jsonl")
    f = write_jsonl(tmp_path / "k.jsonl", [{"context": "a", "choices": ["x", "y"], "label": 0},
                                           {"context": "a", "choices": ["x", "y", "z"], "label": 0}])
    assert "line 2: 3 candidates, but this task has 2" in _err(TaskSpec("multiple_choice"), f)
    g = write_jsonl(tmp_path / "g.jsonl", [{"sentence1": "a", "sentence2": "b", "label": "x"},
                                           {"sentence1": "a", "sentence2": "b", "label": 0.5}])
    assert "line 1: label 'x' in field 'label' is not a number" in _err(TaskSpec("similarity", regression=True), g, infer=True)
    with pytest.raises(GptkitError, match="unknown task type"):
        TaskSpec("summarization")


def test_regression_inferred_from_float_labels(tmp_path):
    f = write_jsonl(tmp_path / "sts.jsonl", [{"sentence1": "a", "sentence2": "b", "label": 4.2},
                                             {"sentence1": "c", "sentence2": "d", "label": 1}])
    spec = TaskSpec("similarity")
    spec, xs = load_training_examples(spec, f)
    assert spec.regression and spec.labels is None and spec.n_outputs == 1 and xs[0].label == pytest.approx(4.2)


# --- other formats, resumable batches ---------------------------------------------------------------


def test_saved_dataset_and_parquet(tmp_path):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict({"premise": ["a b", "c"], "hypothesis": ["x", "y"], "label": [0, 1]})
    ds.save_to_disk(str(tmp_path / "ds"))
    ds.to_parquet(str(tmp_path / "p.parquet"))
    for path in (tmp_path / "ds", tmp_path / "p.parquet"):
        spec = TaskSpec("entailment")
        spec, xs = load_training_examples(spec, path)
        assert [x.texts for x in xs] == [("a b", "x"), ("c", "y")] and [x.label for x in xs] == [0, 1]
        assert xs[1].where == f"{path}, line 2"
    datasets.DatasetDict({"train": ds, "validation": ds}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(GptkitError, match="several splits"):
        load_examples(TaskSpec("entailment"), tmp_path / "dd")


def test_csv_quoted_multiline_and_tsv_quotes(tmp_path):
    f = tmp_path / "q.csv"
    f.write_text('\ufefftext,label\n"a, quoted\nline",1\nplain,0\n', encoding="utf-8")  # with a BOM
    _, xs = load_training_examples(TaskSpec("classification"), f)
    assert xs[0].texts == ("a, quoted\nline",) and xs[1].where.endswith("line 4")
    g = tmp_path / "q.tsv"
    g.write_text('sentence\tlabel\nit "works\t1\nno\t0\n', encoding="utf-8")  # GLUE TSVs hold bare quotes
    assert load_training_examples(TaskSpec("classification"), g)[1][0].texts == ('it "works',)
    (tmp_path / "x.txt").write_text("text\n", encoding="utf-8")
    with pytest.raises(GptkitError, match="unknown task file type '.txt'"):
        load_examples(TaskSpec("classification"), tmp_path / "x.txt")


def test_epoch_batches_resume_exactly(tok, tmp_path):
    from gptkit.tasks.epochs import EpochBatches

    rows = [{"text": f"the cat {'sat ' * (i % 5)}", "label": i % 2} for i in range(10)]
    spec = TaskSpec("classification")
    spec, xs = load_training_examples(spec, write_jsonl(tmp_path / "e.jsonl", rows))
    enc = InputTransform(spec, tok, 32).encode_all(xs)
    a = EpochBatches(enc, 4, tok.pad_id, spec, seed=3)
    first = [a.next_batch() for _ in range(4)]  # crosses the epoch boundary (3 batches per epoch)
    assert [b.n_examples for b in first] == [4, 4, 2, 4]
    assert sorted(torch.cat([b.labels for b in first[:3]]).tolist()) == sorted(r["label"] for r in rows)
    b = EpochBatches(enc, 4, tok.pad_id, spec, seed=3)
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    for _ in range(4):
        x, y = a.next_batch(), b.next_batch()
        assert torch.equal(x.ids, y.ids) and torch.equal(x.labels, y.labels)
    with pytest.raises(GptkitError, match="another training file"):
        EpochBatches(enc[:5], 4, tok.pad_id, spec, seed=3).load_state_dict(a.state_dict())


def _varied_lengths(tok, tmp_path, n=160):
    rng = np.random.default_rng(0)
    words = WORDS.split()
    texts = [" ".join(rng.choice(words, size=int(rng.integers(1, 25)))) for _ in range(n)]
    return _cls_batch(tok, tmp_path, texts)


def test_epoch_batches_group_similar_lengths_and_stay_shuffled(tok, tmp_path):
    from gptkit.tasks.epochs import EpochBatches

    spec, enc = _varied_lengths(tok, tmp_path)  # 160 examples: 20 batches of 8 per epoch

    def epoch(grouped: bool, ep: int = 0):
        b = EpochBatches(enc, 8, tok.pad_id, spec, seed=5, group_by_length=grouped)
        b.epoch = ep
        return [b.next_batch() for _ in range(20)]

    def padded(batches):
        return sum(x.ids.numel() for x in batches) / sum(int(x.mask.sum()) for x in batches)

    grouped, plain = epoch(True), epoch(False)
    # every example once per epoch, grouped or not
    for batches in (grouped, plain):
        rows = [tuple(r[m].tolist()) for x in batches for r, m in zip(x.ids, x.mask)]
        assert sorted(rows) == sorted(tuple(x.sequences[0]) for x in enc)
    assert padded(grouped) < 1.25 < padded(plain)
    # the batches go in a shuffled order, not shortest or longest first, and another epoch differs
    widths = [x.ids.shape[1] for x in grouped]
    assert widths != sorted(widths) and widths != sorted(widths, reverse=True)
    assert [x.ids.shape[1] for x in epoch(True, 1)] != widths
    a = EpochBatches(enc, 8, tok.pad_id, spec, seed=5)
    a.next_batch()
    with pytest.raises(GptkitError, match="group_by_length=True"):
        EpochBatches(enc, 8, tok.pad_id, spec, seed=5, group_by_length=False).load_state_dict(a.state_dict())


def test_inference_batches_by_length_and_answers_in_input_order(tok, tmp_path):
    from gptkit.tasks.inference import infer

    spec, enc = _varied_lengths(tok, tmp_path, n=48)
    model = tiny_task_model(tok, spec)
    widths = []
    model.register_forward_pre_hook(lambda m, args: widths.append(args[0].ids.shape[1]))
    preds, probs, _ = infer(model, enc, tok.pad_id, batch_size=8)
    one_by_one = [infer(model, [x], tok.pad_id, batch_size=1) for x in enc]
    np.testing.assert_allclose(probs, np.concatenate([p for _, p, _ in one_by_one]), rtol=1e-5, atol=1e-6)
    assert preds.tolist() == [int(p[0]) for p, _, _ in one_by_one]
    # six batches of similar lengths: together far less padding than six batches in file order
    in_file_order = sum(max(len(x.sequences[0]) for x in enc[i : i + 8]) for i in range(0, 48, 8))
    assert sum(widths[:6]) < 0.8 * in_file_order


def test_a_task_files_json_error_says_at_once(tmp_path):
    """json's message for a control character ends in 'at'; the reader added its own 'at column'."""
    from gptkit.tasks.readers import read_rows

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a\tb", "label": 1}\n', encoding="utf-8")
    with pytest.raises(GptkitError) as e:
        read_rows(bad)
    assert "malformed JSON" in str(e.value) and " at at " not in str(e.value)
