"""`gptkit pretrain` and `gptkit plot` through real invocations, on a corpus the test prepares."""

import hashlib
import json
import re

import pytest

from gptkit.cli import main
from gptkit.data.prepare import PrepareOptions, prepare_corpus
from gptkit.interop import load_pretrained
from gptkit.tokenizer import GPTTokenizer, train_from_texts

WORDS = "the king and queen of a castle walk to the sea while my lord sings softly under stars".split()


def make_text(n_paragraphs, seed=0):
    import random

    rng = random.Random(seed)
    return "\n\n".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 60))) + "."
                       for _ in range(n_paragraphs))


def make_corpus(root, n_paragraphs):
    root.mkdir(parents=True, exist_ok=True)
    text = make_text(n_paragraphs)
    (root / "text.txt").write_text(text, encoding="utf-8")
    tok = train_from_texts([make_text(200)], vocab_size=200)
    tok.save(root / "tok")
    prepare_corpus([root / "text.txt"], root / "tok", root / "corpus",
                   PrepareOptions(val_fraction=0.2, workers=1, doc_split="blank-line", show_progress=False))
    return root / "corpus"


@pytest.fixture(autouse=True)
def restore_threads():
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)  # --threads is process-wide; do not slow down later tests


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("data"), 120)


def args(corpus, out, *extra):
    return ["pretrain", "--data", str(corpus), "--out", str(out), "--preset", "tiny", "--batch-size", "4",
            "--seq-len", "32", "--eval-windows", "4", "--peak-flops", "1e11", "--quiet", "--threads", "1",
            "--log-every", "1", *extra]


def tree_digest(root):
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_pretrain_end_to_end(corpus, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(args(corpus, run, "--steps", "6", "--save-every", "3", "--eval-every", "3")) == 0
    assert "val loss" in capsys.readouterr().out
    tok = GPTTokenizer.load(run / "model")
    model = load_pretrained(run / "model")
    assert model.config.vocab_size == tok.vocab_size  # the vocabulary comes from the tokenizer
    assert load_pretrained(run / "checkpoints" / "step_000003").config.n_layer == 2
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train_lines = [r for r in records if "loss" in r]
    assert [r["step"] for r in train_lines] == [1, 2, 3, 4, 5, 6]
    assert all(k in train_lines[-1] for k in ("lr", "grad_norm", "tokens_per_s", "mfu"))
    val = [r for r in records if "val_loss" in r]
    assert [r["step"] for r in val] == [3, 6] and val[-1]["val_ppl"] > 1
    state = json.loads((run / "checkpoints" / "step_000006" / "trainer_state.json").read_text())
    assert state["step"] == 6 and state["batches"]["draws"] == 6 and state["schedule"]["name"] == "warmup_cosine"

    # a second run into the same directory is refused
    assert main(args(corpus, run, "--steps", "6")) == 2
    assert "--resume" in capsys.readouterr().err
    # resume extends the run; --overwrite starts over
    assert main(args(corpus, run, "--steps", "8", "--resume", "--eval-every", "0")) == 0
    assert (run / "checkpoints" / "step_000008").is_dir()
    assert main(args(corpus, run, "--steps", "1", "--overwrite")) == 0
    assert sorted(p.name for p in (run / "checkpoints").glob("step_*")) == ["step_000001"]

    # the picture
    capsys.readouterr()
    assert main(["plot", str(run)]) == 0
    png = run / "curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and capsys.readouterr().out.strip() == str(png)


def test_nan_stops_with_step_and_checkpoint_untouched(corpus, tmp_path, capsys):
    run = tmp_path / "run"
    rc = main(args(corpus, run, "--steps", "8", "--warmup", "0", "--lr", "1e30", "--save-every", "1",
                   "--eval-every", "0", "--keep-last", "8"))
    err = capsys.readouterr().err
    assert rc == 2
    m = re.search(r"step (\d+): non-finite", err)
    assert m and int(m.group(1)) > 1, err
    last = run / "checkpoints" / f"step_{int(m.group(1)) - 1:06d}"
    assert str(last) in err and "untouched" in err
    assert json.loads((last / "trainer_state.json").read_text())["step"] == int(m.group(1)) - 1
    assert not (run / "checkpoints" / f"step_{int(m.group(1)):06d}").exists()


def test_resume_with_other_settings_is_refused(corpus, tmp_path, capsys):
    """Issue 17 item 5: a resume with another --lr or --preset is refused, and changes nothing."""
    run = tmp_path / "run"
    assert main(args(corpus, run, "--steps", "2", "--warmup", "0", "--eval-every", "0")) == 0
    before = tree_digest(run)
    capsys.readouterr()
    assert main(args(corpus, run, "--steps", "4", "--warmup", "0", "--lr", "1e-3", "--resume")) == 2
    err = capsys.readouterr().err
    assert "--lr is 0.001 but the run being resumed" in err and "used 0.00025" in err
    base = [a for a in args(corpus, run, "--steps", "4", "--warmup", "0", "--resume") if a not in ("--preset", "tiny")]
    assert main([*base, "--preset", "mini"]) == 2
    assert "another model than preset mini" in capsys.readouterr().err
    assert tree_digest(run) == before
    assert main(base) == 0  # no --preset on resume: the run's own model


def test_resume_without_preset_or_seq_len_takes_the_runs_own(corpus, tmp_path, capsys):
    """`--preset` and `--seq-len` default to the run's own on resume: the default preset's n_ctx
    (256) was compared with the run's 64-token windows and the resume refused."""
    run = tmp_path / "run"
    first = [a for a in args(corpus, run, "--steps", "2", "--eval-every", "0") if a not in ("--seq-len", "32")]
    assert main(first) == 0
    again = [a for a in first if a not in ("--preset", "tiny")]
    assert main([*again[:again.index("--steps")], "--steps", "3", *again[again.index("--steps") + 2:], "--resume"]) == 0, \
        capsys.readouterr().err
    state = json.loads((run / "checkpoints" / "step_000003" / "trainer_state.json").read_text())
    assert state["extra"]["recipe"]["seq_len"] == 64


def test_a_run_stopped_before_saving_anything_restarts_with_the_same_command(corpus, tmp_path, capsys, caplog):
    """A stop in the first seconds leaves run.json (and maybe metrics) but no checkpoint: the same
    command starts again instead of asking for --resume or --overwrite; real files are still kept."""
    from gptkit.training.rundir import RunLock, prepare_run_dir

    run = tmp_path / "run"
    prepare_run_dir(run, kind="pretrain")
    RunLock.release_dir(run)
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 5.0}\n')
    assert main(args(corpus, run, "--steps", "2", "--eval-every", "0")) == 0
    assert (run / "checkpoints" / "step_000002").is_dir()
    assert "stopped before it saved anything" in caplog.text

    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert main(args(corpus, other, "--steps", "2")) == 2
    assert "not a gptkit run directory" in capsys.readouterr().err and (other / "notes.txt").read_text() == "mine"


def test_bad_inputs_write_nothing(corpus, tmp_path, capsys):
    short = make_corpus(tmp_path / "short", 1)
    out = tmp_path / "out"
    assert main(args(short, out, "--steps", "2", "--seq-len", "64")) == 2
    assert "too short for one window" in capsys.readouterr().err
    assert not out.exists()
    assert main(args(tmp_path / "missing", out, "--steps", "2")) == 2
    assert "missing" in capsys.readouterr().err
    assert main(args(corpus, out, "--steps", "2", "--seq-len", "65")) == 2
    assert "n_ctx (64)" in capsys.readouterr().err
    assert not out.exists()
    assert main(["plot", str(tmp_path)]) == 2


def test_sigterm_then_resume_with_default_flags_is_bit_exact(corpus, tmp_path):
    """Issue 17 item 1: SIGTERM mid-run, then the same command plus --resume, with the default flags
    (no --peak-flops, so the MFU probe runs both times), ends with weights bit-equal to a run that was
    never interrupted."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import torch
    from safetensors.torch import load_file

    def cmd(out, *extra):
        return ["pretrain", "--data", str(corpus), "--out", str(out), "--preset", "tiny", "--batch-size", "4",
                "--seq-len", "32", "--eval-windows", "4", "--quiet", "--threads", "1", "--log-every", "1",
                "--steps", "160", "--eval-every", "40", "--save-every", "80", *extra]

    stopped = tmp_path / "stopped"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "gptkit", *cmd(stopped)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = stopped / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if metrics.is_file() and sum(1 for _ in metrics.open()) >= 8:  # a few steps in
            proc.send_signal(signal.SIGTERM)
            break
        time.sleep(0.005)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    latest = (stopped / "checkpoints" / "latest").read_text().strip()
    state = json.loads((stopped / "checkpoints" / latest / "trainer_state.json").read_text())
    assert 0 < state["step"] < 160 and state["step"] % 80 != 0  # saved at the signal, not on schedule
    assert main(cmd(stopped, "--resume")) == 0

    whole = tmp_path / "whole"
    assert main(cmd(whole)) == 0
    a, b = load_file(stopped / "model" / "model.safetensors"), load_file(whole / "model" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_with_more_steps_warns_that_the_schedule_is_replanned(corpus, tmp_path, caplog):
    """Extending a run is allowed, but it re-plans the cosine for the new --steps: the lr jumps back
    up at the step resumed from. That used to happen without a word."""
    import logging

    run = tmp_path / "run"
    assert main(args(corpus, run, "--steps", "4", "--save-every", "4", "--eval-every", "0")) == 0
    with caplog.at_level(logging.WARNING):
        assert main(args(corpus, run, "--steps", "4", "--eval-every", "0", "--resume")) == 0
    assert "learning-rate schedule" not in caplog.text  # the same command: nothing to say
    with caplog.at_level(logging.WARNING):
        assert main(args(corpus, run, "--steps", "8", "--eval-every", "0", "--resume")) == 0
    assert "resuming with another learning-rate schedule (warmup_cosine(max_lr=0.00025, total=8, warmup=1); " \
           "the run's: warmup_cosine(max_lr=0.00025, total=4, warmup=1)): update 5 runs at lr 0.000153 instead " \
           "of 0" in caplog.text
