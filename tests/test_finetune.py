"""Fine-tuning through the shared training loop: synthetic tasks learned, the model directory, the CLI."""

from __future__ import annotations

import json
import random

import pytest
import torch

from gptkit.cli import main
from gptkit.interop import load_pretrained, save_pretrained
from gptkit.model import GPT, preset
from gptkit.tasks import load_task_model
from gptkit.tasks.config import FinetuneConfig
from gptkit.tasks.finetune import finetune
from gptkit.tokenizer import GPTTokenizer, train_from_texts

FILL = "apple river stone cloud music table window garden silver paper orange bread candle forest mirror".split()


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread (and do not fight other processes for cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tok")
    tok = train_from_texts([" ".join(FILL + ["good", "bad", "which"])] * 5, vocab_size=200, min_frequency=1)
    tok.save(d)
    return d


def _part(rng, good: bool) -> str:
    words = rng.sample(FILL, 2) + ["good" if good else "bad"]
    rng.shuffle(words)
    return " ".join(words)


def _both(rng) -> tuple[int, int]:
    a, b = rng.randint(0, 1), rng.randint(0, 1)
    return (1, 1) if rng.random() < 0.33 else (a, b)


# Synthetic tasks: the label is a function of the text that a tiny model can learn in a few seconds.
# The pair tasks depend on BOTH parts ("entailment" iff premise and hypothesis are both "good").
def classification_rows(rng, n):
    return [{"sentence": _part(rng, y), "label": y} for y in (rng.randint(0, 1) for _ in range(n))]


def entailment_rows(rng, n):
    return [{"premise": _part(rng, a), "hypothesis": _part(rng, b), "label": "entailment" if a and b else "neutral"}
            for a, b in (_both(rng) for _ in range(n))]


def similarity_rows(rng, n):
    return [{"sentence1": _part(rng, a), "sentence2": _part(rng, b), "label": int(a and b)}
            for a, b in (_both(rng) for _ in range(n))]


def regression_rows(rng, n):  # a 0-5 score, as STS-B: 2.5 per "good" sentence
    return [{"sentence1": _part(rng, a), "sentence2": _part(rng, b), "label": 2.5 * (a + b) + 0.1}
            for a, b in (_both(rng) for _ in range(n))]


def multiple_choice_rows(rng, n):
    rows = []
    for _ in range(n):
        y = rng.randint(0, 2)
        rows.append({"context": " ".join(rng.sample(FILL, 3)), "question": "which",
                     "choices": [_part(rng, i == y) for i in range(3)], "label": y})
    return rows


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def make_task(tmp_path, rows_fn, n_train=160, n_val=60):
    rng = random.Random(0)
    return write_jsonl(tmp_path / "train.jsonl", rows_fn(rng, n_train)), write_jsonl(tmp_path / "val.jsonl", rows_fn(rng, n_val))


CASES = {
    "classification": (classification_rows, "accuracy", 0.95),
    "entailment": (entailment_rows, "accuracy", 0.95),
    "similarity": (similarity_rows, "accuracy", 0.95),
    "multiple_choice": (multiple_choice_rows, "accuracy", 0.95),
    "regression": (regression_rows, "pearson", 0.95),
}


@pytest.mark.parametrize("case", list(CASES))
def test_tiny_model_learns_synthetic_task(case, tmp_path, tok_dir):
    rows_fn, metric, floor = CASES[case]
    train, val = make_task(tmp_path, rows_fn)
    summary = finetune(FinetuneConfig(
        task="similarity" if case == "regression" else case, train=train, val=val, out=tmp_path / "run",
        no_pretrain=True, preset="tiny", tokenizer=tok_dir, lr=3e-3, epochs=8, batch_size=16, warmup=0.1,
        progress=False,
    ))
    assert summary["val"][metric] >= floor, summary["val"]
    assert summary["regression"] is (case == "regression")
    assert summary["metric"] == metric and summary["truncated"] == {"train": 0, "val": 0}
    # The best model directory reloads to the same validation score.
    model, tok = load_task_model(tmp_path / "run" / "best")
    assert model.spec.task == summary["task"] and tok.vocab_size == GPTTokenizer.load(tok_dir).vocab_size


@pytest.fixture(scope="module")
def pretrained_dir(tmp_path_factory, tok_dir):
    """A stand-in for a pre-trained model: random tiny GPT whose vocabulary lacks the tokenizer's last
    3 ids (so fine-tuning has to grow the embedding), saved with its tokenizer."""
    d = tmp_path_factory.mktemp("pre")
    tok = GPTTokenizer.load(tok_dir)
    torch.manual_seed(0)
    gpt = GPT(preset("tiny", vocab_size=tok.vocab_size - 3, n_ctx=24))
    save_pretrained(gpt, d / "model")
    tok.save(d / "model")
    return d


def test_cli_finetune_evaluate_predict(tmp_path, pretrained_dir, capsys):
    rng = random.Random(1)
    rows = classification_rows(rng, 40)
    rows[0] = {"sentence": " ".join(["apple river stone"] * 12) + " good", "label": 1}  # longer than n_ctx 24
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    val = tmp_path / "val.csv"
    val.write_text("sentence,label\n" + "".join(f"{r['sentence']},{r['label']}\n" for r in classification_rows(rng, 20)),
                   encoding="utf-8")
    run = tmp_path / "run"
    # --init is a pre-training RUN directory: its model/ is used.
    rc = main(["finetune", "--task", "classification", "--train", str(train), "--val", str(val), "--test", str(val),
               "--init", str(pretrained_dir), "--out", str(run), "--epochs", "2", "--batch-size", "8", "--quiet",
               "--json"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["truncated"] == {"train": 1, "val": 0, "test": 0}
    assert summary["steps"] == 10 and summary["labels"] == ["0", "1"] and summary["lm_coef"] == 0.5
    assert set(summary["test"]) == {"accuracy", "f1", "matthews", "loss"}
    # every test example's prediction, in file order, next to its label (for paired comparisons)
    written = json.loads((run / "test_predictions.json").read_text())
    assert summary["test_predictions"] == str(run / "test_predictions.json")
    assert len(written["predictions"]) == len(written["labels"]) == 20
    right = sum(p == y for p, y in zip(written["predictions"], written["labels"], strict=True))
    assert right / 20 == pytest.approx(summary["test"]["accuracy"])
    assert written["labels"] == [int(line.rsplit(",", 1)[1]) for line in val.read_text().splitlines()[1:]]
    best = run / "best"
    for name in ("config.json", "model.safetensors", "tokenizer.json", "task.json", "head.safetensors"):
        assert (best / name).is_file(), name
    assert not (best / "optimizer.safetensors").exists()
    gpt = load_pretrained(best)
    tok = GPTTokenizer.load(best)
    assert gpt.config.vocab_size == tok.vocab_size  # grown for the task tokens
    task = json.loads((best / "task.json").read_text())
    assert task["task"] == "classification" and task["labels"] == ["0", "1"] and task["max_len"] == 24
    metrics_lines = (run / "metrics.jsonl").read_text().splitlines()
    assert any("val_accuracy" in line for line in metrics_lines)

    assert main(["evaluate", str(run), "--data", str(val), "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["examples"] == 20 and ev["accuracy"] == pytest.approx(summary["val"]["accuracy"])

    for suffix in (".jsonl", ".csv"):
        out = tmp_path / f"preds{suffix}"
        assert main(["predict", str(best), "--data", str(val), "--out", str(out)]) == 0
        text = out.read_text().splitlines()
        if suffix == ".jsonl":
            rec = json.loads(text[0])
            assert rec["prediction"] in ("0", "1") and rec["p_0"] + rec["p_1"] == pytest.approx(1.0)
            assert rec["where"].endswith("line 2") and rec["gold"] in ("0", "1")
            assert len(text) == 20
        else:
            assert text[0].split(",")[:4] == ["where", "prediction", "p_0", "p_1"] and len(text) == 21


def test_cli_errors_are_one_line(tmp_path, pretrained_dir, capsys):
    train = write_jsonl(tmp_path / "train.jsonl", [{"review": "good", "label": 1}])
    rc = main(["finetune", "--task", "classification", "--train", str(train), "--init", str(pretrained_dir),
               "--out", str(tmp_path / "run"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("gptkit finetune: error: ") and "columns found: review, label" in err
    assert "\n" not in err and not (tmp_path / "run").exists()
    rc = main(["finetune", "--task", "classification", "--train", str(train), "--out", str(tmp_path / "r2")])
    assert rc == 2 and "--no-pretrain" in capsys.readouterr().err
    rc = main(["finetune", "--task", "classification", "--train", str(train), "--out", str(tmp_path / "r3"),
               "--no-pretrain", "--init", str(pretrained_dir), "--transfer-layers", "1"])
    assert rc == 2 and "contradicts --no-pretrain" in capsys.readouterr().err
    rc = main(["evaluate", str(tmp_path), "--data", str(train)])
    assert rc == 2 and "not a fine-tuned task model" in capsys.readouterr().err


def test_transfer_layers_and_lm_coef_zero(tmp_path, pretrained_dir):
    rng = random.Random(2)
    train = write_jsonl(tmp_path / "t.jsonl", entailment_rows(rng, 16))
    summary = finetune(FinetuneConfig(task="entailment", train=train, out=tmp_path / "run", init=pretrained_dir,
                                      transfer_layers=1, lm_coef=0.0, max_steps=1, lr=1e-12, progress=False))
    assert summary["transfer_layers"] == 1 and summary["lm_coef"] == 0.0
    pre = load_pretrained(pretrained_dir / "model")
    post = load_pretrained(tmp_path / "run" / "best")
    # lr ~ 0: kept parts equal the pre-trained ones, re-initialised block 1 does not.
    torch.testing.assert_close(post.transformer.blocks[0].attn.qkv.weight, pre.transformer.blocks[0].attn.qkv.weight)
    torch.testing.assert_close(post.transformer.pos_emb.weight, pre.transformer.pos_emb.weight)
    n = pre.config.vocab_size
    tok = GPTTokenizer.load(pretrained_dir / "model")
    kept = [i for i in range(n) if i not in (tok.start_id, tok.delim_id, tok.extract_id)]  # those are drawn afresh
    torch.testing.assert_close(post.transformer.tok_emb.weight[kept], pre.transformer.tok_emb.weight[kept])
    assert not torch.allclose(post.transformer.blocks[1].attn.qkv.weight, pre.transformer.blocks[1].attn.qkv.weight)
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert "lm_loss" not in lines[0] and "task_loss" in lines[0]


def test_resume_from_an_earlier_checkpoint_is_exact(tmp_path, tok_dir):
    import shutil

    from safetensors.torch import load_file

    train, val = make_task(tmp_path, similarity_rows, n_train=32, n_val=8)
    cfg = dict(task="similarity", train=train, val=val, no_pretrain=True, preset="tiny", tokenizer=tok_dir,
               lr=3e-3, epochs=2, batch_size=8, evals_per_epoch=1, keep_last=2, progress=False)
    full = finetune(FinetuneConfig(out=tmp_path / "a", **cfg))
    assert full["steps"] == 8
    # A crash after step 4: only the step-4 checkpoint survives; resuming must redo steps 5-8 exactly.
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    shutil.rmtree(tmp_path / "b" / "checkpoints" / "step_000008")
    assert (tmp_path / "b" / "checkpoints" / "step_000004").is_dir()
    resumed = finetune(FinetuneConfig(out=tmp_path / "b", resume=True, **cfg))
    assert resumed["steps"] == 8
    a = load_file(tmp_path / "a" / "checkpoints" / "step_000008" / "model.safetensors")
    b = load_file(tmp_path / "b" / "checkpoints" / "step_000008" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ha = load_file(tmp_path / "a" / "checkpoints" / "step_000008" / "head.safetensors")
    hb = load_file(tmp_path / "b" / "checkpoints" / "step_000008" / "head.safetensors")
    assert all(torch.equal(ha[k], hb[k]) for k in ha)



def test_resume_refuses_another_recipe(tmp_path, tok_dir, capsys):
    """`finetune --resume` checked only the training file's row count and the seed: a label set in
    another order was taken (and best/ exported with the labels inverted), and so were another
    --batch-size or a 100x --lr. Each change is now refused in one line naming the flag, as
    pre-training's resume does, the run is left as it was, and the same command still resumes."""
    rows = classification_rows(random.Random(5), 16)
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    val = write_jsonl(tmp_path / "val.jsonl", rows[:8])
    # the audit's case: label 0 -> "b", 1 -> "a", so in sorted order index 0 now means the old 1
    swapped = [{**r, "label": "ab"[1 - r["label"]]} for r in rows]
    swapped_train, swapped_val = write_jsonl(tmp_path / "s.jsonl", swapped), write_jsonl(tmp_path / "sv.jsonl", swapped[:8])
    edited = write_jsonl(tmp_path / "edited.jsonl", [{**r, "sentence": r["sentence"] + " apple"} for r in rows])
    run = tmp_path / "run"
    base = ["finetune", "--task", "classification", "--train", str(train), "--val", str(val), "--no-pretrain",
            "--preset", "tiny", "--tokenizer", str(tok_dir), "--epochs", "1", "--batch-size", "8", "--out", str(run),
            "--quiet"]
    assert main(base) == 0
    capsys.readouterr()
    state = run / "checkpoints" / "step_000002" / "trainer_state.json"
    before = state.read_bytes()
    used = f"but the run being resumed ({run / 'checkpoints' / 'step_000002'}) used"
    for extra, message in [
        (["--lr", "0.01"], f"--lr is 0.01 {used} 6.25e-05; resume with the same settings"),
        (["--batch-size", "4"], f"--batch-size is 4 {used} 8;"),
        (["--max-steps", "5"], f"--max-steps is 5 {used} None;"),
        (["--epochs", "2"], f"--epochs is 2.0 {used} 1.0;"),
        (["--lm-coef", "0"], f"--lm-coef is 0.0 {used} 0.5;"),
        (["--max-len", "16"], f"--max-len is 16 {used} "),
        (["--seed", "1"], f"--seed is 1 {used} 42;"),
        (["--column", "text=sentence"], f"--column is {{'text': 'sentence'}} {used} {{}};"),
        (["--train", str(swapped_train), "--val", str(swapped_val)], "--train gives the labels ['a', 'b'] but the run being resumed"),
        (["--train", str(edited)], "--train holds other examples than the run being resumed"),
        (["--val", str(edited)], "--val holds other examples than the run being resumed"),
    ]:
        assert main([*base, *extra, "--resume"]) == 2, extra
        err = capsys.readouterr().err
        assert err.startswith(f"gptkit finetune: error: {message}") and err.count("\n") == 1, (extra, err)
        assert state.read_bytes() == before
    assert main([*base, "--resume"]) == 0

def test_task_tokens_get_fresh_rows_from_a_language_model(tmp_path, tok_dir):
    """The vocabulary a gptkit tokenizer trains already holds start/delimiter/extract, but the LM never
    read them: fine-tuning draws their rows afresh (the paper's new embeddings), leaves every other row
    as pre-trained, keeps them with fresh_task_tokens off, and keeps a fine-tuned init's rows."""
    tok = GPTTokenizer.load(tok_dir)
    torch.manual_seed(0)
    gpt = GPT(preset("tiny", vocab_size=tok.vocab_size, n_ctx=24))
    task_ids = [tok.start_id, tok.delim_id, tok.extract_id]
    with torch.no_grad():  # what pre-training leaves them: one shared direction, larger than a word's row
        gpt.transformer.tok_emb.weight[task_ids] = 0.05
    save_pretrained(gpt, tmp_path / "lm")
    tok.save(tmp_path / "lm")
    pre = gpt.transformer.tok_emb.weight.detach().clone()
    others = [i for i in range(tok.vocab_size) if i not in task_ids]
    train = write_jsonl(tmp_path / "t.jsonl", entailment_rows(random.Random(3), 16))

    def rows_after(out, init, **kw):
        summary = finetune(FinetuneConfig(task="entailment", train=train, out=tmp_path / out, init=init,
                                          max_steps=1, lr=1e-12, progress=False, **kw))
        return summary, load_pretrained(tmp_path / out / "best").transformer.tok_emb.weight.detach()

    summary, fresh = rows_after("fresh", tmp_path / "lm")
    assert summary["fresh_task_tokens"] == task_ids
    torch.testing.assert_close(fresh[others], pre[others])
    assert not torch.allclose(fresh[task_ids], pre[task_ids])
    assert 0.01 < fresh[task_ids].std().item() < 0.04 and not torch.allclose(fresh[task_ids[0]], fresh[task_ids[2]])
    summary, kept = rows_after("kept", tmp_path / "lm", fresh_task_tokens=False)
    assert "fresh_task_tokens" not in summary
    torch.testing.assert_close(kept, pre)
    # A fine-tuned directory as init (it has task.json): its task rows were learned and stay.
    summary, again = rows_after("again", tmp_path / "fresh" / "best")
    assert "fresh_task_tokens" not in summary
    torch.testing.assert_close(again, fresh)


@pytest.fixture(scope="module")
def task_model(tmp_path_factory, pretrained_dir):
    """A fine-tuned task model (one update: only its directory matters) and a labelled file."""
    d = tmp_path_factory.mktemp("task")
    data = write_jsonl(d / "val.jsonl", classification_rows(random.Random(4), 8))
    finetune(FinetuneConfig(task="classification", train=data, out=d / "run", init=pretrained_dir, max_steps=1,
                            progress=False))
    return d / "run" / "best", data


BAD_SCORING_OPTIONS = [
    (["--batch-size", "0"], "--batch-size must be a positive integer, got 0"),
    (["--batch-size", "-1"], "--batch-size must be a positive integer, got -1"),
    (["--device", "bogus"], "--device must be 'cpu', or 'cuda' / 'cuda:N' naming a GPU this machine has, got 'bogus'"),
    (["--device", f"cuda:{torch.cuda.device_count()}"], "--device must be 'cpu', or 'cuda' / 'cuda:N'"),
    (["--max-len", "0"], "--max-len must be a positive integer, got 0"),  # was silently "the default"
    (["--max-len", "25"], "--max-len 25 exceeds the model's context window n_ctx=24"),
]


@pytest.mark.parametrize("command, flags, message", [
    (command, flags, message) for command in ("evaluate", "predict", "zeroshot") for flags, message in BAD_SCORING_OPTIONS
    if not (command == "zeroshot" and flags[0] == "--max-len")  # zeroshot has no --max-len
])
def test_scoring_commands_refuse_bad_options_in_one_line(command, flags, message, task_model, pretrained_dir,
                                                         tmp_path, capsys):
    """These were tracebacks (range() arg 3 must not be zero, Torch not compiled with CUDA, a sequence
    longer than n_ctx) or, for --max-len 0, silently the default."""
    model, data = task_model
    if command == "zeroshot":
        argv = ["zeroshot", str(pretrained_dir), "--task", "sentiment", "--data", str(data)]
    else:
        argv = [command, str(model), "--data", str(data), "--quiet"]
        if command == "predict":
            argv += ["--out", str(tmp_path / "p.jsonl")]
    assert main(argv + flags) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"gptkit {command}: error: {message}") and err.count("\n") == 1, err
    assert not (tmp_path / "p.jsonl").exists()


def test_predict_refuses_to_write_over_its_input(task_model, tmp_path, capsys):
    """`predict --data F --out F` replaced the input file with the predictions."""
    model, data = task_model
    copy = tmp_path / "data.jsonl"
    copy.write_bytes(data.read_bytes())
    link = tmp_path / "link.jsonl"
    link.hardlink_to(copy)
    for out in (copy, tmp_path / ".." / tmp_path.name / "data.jsonl", link):
        assert main(["predict", str(model), "--data", str(copy), "--out", str(out), "--quiet"]) == 2
        assert "is the input file" in capsys.readouterr().err
        assert copy.read_bytes() == data.read_bytes()
    assert main(["predict", str(model), "--data", str(copy), "--out", str(tmp_path / "preds.jsonl"), "--quiet"]) == 0


def test_init_refuses_a_tokenizer_that_is_not_the_models(tmp_path, tok_dir, capsys):
    """`--init LM --tokenizer OTHER` took any tokenizer: a larger byte-level one had the LM's rows read
    under another vocabulary, an empty one encoded every text to nothing, and both exited 0."""
    tok = GPTTokenizer.load(tok_dir)
    torch.manual_seed(0)
    gpt = GPT(preset("tiny", vocab_size=tok.vocab_size, n_ctx=24))
    save_pretrained(gpt, tmp_path / "lm")
    tok.save(tmp_path / "lm")
    save_pretrained(gpt, tmp_path / "weights_only")  # an HF directory without a tokenizer
    tok.save(tmp_path / "tok_copy")
    bigger = train_from_texts([" ".join(FILL + ["good", "bad"])] * 20, vocab_size=300, style="bytelevel",
                              min_frequency=1)
    bigger.save(tmp_path / "bigger")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "tokenizer.json").write_text(
        '{"version": "1.0", "model": {"type": "BPE", "vocab": {}, "merges": []}}', encoding="utf-8")
    train = write_jsonl(tmp_path / "t.jsonl", classification_rows(random.Random(6), 8))

    def run(out, init, tokenizer, *extra):
        argv = ["finetune", "--task", "classification", "--train", str(train), "--out", str(tmp_path / out),
                "--init", str(tmp_path / init), "--tokenizer", str(tmp_path / tokenizer), "--max-steps", "1",
                "--quiet", *extra]
        rc = main(argv)
        return rc, capsys.readouterr().err

    for out, init, tokenizer, message in [
        ("a", "lm", "bigger", f"runs to id {bigger.vocab_size - 1} but the model in {tmp_path / 'lm'} embeds "
                              f"{tok.vocab_size} tokens"),
        ("b", "weights_only", "bigger", "runs to id"),
        ("c", "lm", "empty", f"not the tokenizer of {tmp_path / 'lm'}, which holds its own (id 0 is "
                             "'<|endoftext|>' there, '_start_' here)"),
    ]:
        rc, err = run(out, init, tokenizer)
        assert rc == 2 and err.startswith(f"gptkit finetune: error: {tmp_path / tokenizer}: ") and message in err, err
        assert err.count("\n") == 1 and not (tmp_path / out).exists()
    # the model's own tokenizer (a copy), one for a weights-only directory, any one for a random model
    assert run("d", "lm", "tok_copy")[0] == 0
    assert run("e", "weights_only", "tok_copy")[0] == 0
    assert run("f", "lm", "bigger", "--no-pretrain")[0] == 0
