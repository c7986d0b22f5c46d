"""A run directory a script can trust (issue 17 items 6-9, 11): exit codes on signals with no
partial results, an exclusive lock, fallback past a damaged checkpoint, a failed save that leaves
the previous checkpoint and no temp files, stale temp files cleaned, RUN_DIR/model never absent."""

from __future__ import annotations

import errno
import json
import logging
import os
import resource
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch

from gptkit.atomic import replace_dir
from gptkit.cli import main
from gptkit.errors import GptkitError
from gptkit.training import CheckpointManager, RunLock, prepare_run_dir
from gptkit.training import checkpoint as checkpoint_module
from test_finetune import classification_rows, write_jsonl  # tests/ is on sys.path under pytest
from test_pretrain import args, make_corpus

ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("data"), 60)


@pytest.fixture(autouse=True)
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def save(mgr, step):
    return mgr.save(step, lambda d: (d / "weights.txt").write_text("w"), {"step": step},
                    {"x.safetensors": {"t": torch.arange(100.0) + step}})


# --- 7: one process per run directory -------------------------------------------------------------


def test_a_live_lock_refuses_and_a_dead_one_is_taken_over(tmp_path, caplog):
    run = tmp_path / "run"
    prepare_run_dir(run)
    RunLock.acquire(run).release()  # this process is done with it
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run / ".lock").write_text(f"{holder.pid}\n")
        with pytest.raises(GptkitError, match=rf"in use by process {holder.pid}"):
            prepare_run_dir(run, resume=True)
    finally:
        holder.kill()
        holder.wait()
    with caplog.at_level(logging.WARNING):
        prepare_run_dir(run, resume=True)  # the holder is gone: its lock is stale
    assert f"taking over the lock of process {holder.pid}" in caplog.text
    assert (run / ".lock").read_text().strip() == str(os.getpid())


def test_second_cli_run_on_a_busy_directory_is_refused(corpus, tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "gptkit", *args(corpus, run, "--steps", "100000", "--save-every", "5",
                                                 "--eval-every", "0")]
    first = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while CheckpointManager(run).latest() is None and time.monotonic() < deadline and first.poll() is None:
            time.sleep(0.05)
        second = subprocess.run([*cmd, "--resume"], env=ENV, capture_output=True, text=True, timeout=120)
        assert second.returncode == 2 and f"in use by process {first.pid}" in second.stderr, second.stderr
        assert second.stderr.count("\n") == 1
        assert first.poll() is None  # the first run was not disturbed
    finally:
        first.send_signal(signal.SIGTERM)
        _, err = first.communicate(timeout=120)
    assert first.returncode == 143, err


# --- 8: fall back past a damaged newest checkpoint -----------------------------------------------


def test_truncated_newest_checkpoint_falls_back_with_a_warning(corpus, tmp_path, caplog):
    run = tmp_path / "run"
    assert main(args(corpus, run, "--steps", "4", "--save-every", "2", "--eval-every", "0")) == 0
    weights = run / "checkpoints" / "step_000004" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with caplog.at_level(logging.WARNING):
        assert main(args(corpus, run, "--steps", "6", "--save-every", "2", "--eval-every", "0", "--resume")) == 0
    assert "skipping damaged checkpoint" in caplog.text and "step_000004" in caplog.text
    state = json.loads((run / "checkpoints" / "step_000006" / "trainer_state.json").read_text())
    assert state["step"] == 6


# --- 9: a failed save, and what a killed run left behind -----------------------------------------


def test_disk_full_during_a_save_is_one_line_and_leaves_the_last_checkpoint(tmp_path, monkeypatch):
    mgr = CheckpointManager(tmp_path / "run")
    first = save(mgr, 1)
    real = checkpoint_module.atomic_save_safetensors

    def full(tensors, path, *a, **k):
        real(tensors, path, *a, **k)  # the file lands, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(checkpoint_module, "atomic_save_safetensors", full)
    with pytest.raises(GptkitError) as e:
        save(mgr, 2)
    msg = str(e.value)
    assert "\n" not in msg and "No space left on device" in msg and f"{first} is intact" in msg
    assert [p.name for p in (tmp_path / "run" / "checkpoints").iterdir() if p.name.startswith(".")] == []
    assert mgr.latest() == first and (tmp_path / "run" / "model" / "weights.txt").is_file()


def test_file_size_limit_through_the_cli(corpus, tmp_path):
    """A real write failure (RLIMIT_FSIZE: EFBIG, like a full disk) in a subprocess."""
    run = tmp_path / "run"
    assert main(args(corpus, run, "--steps", "2", "--eval-every", "0")) == 0
    before = sorted(p.name for p in (run / "checkpoints").iterdir())
    limit = (run / "checkpoints" / "step_000002" / "model.safetensors").stat().st_size // 2

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = subprocess.run([sys.executable, "-m", "gptkit", *args(corpus, run, "--steps", "4", "--eval-every", "0",
                                                                 "--resume")],
                          env=ENV, capture_output=True, text=True, timeout=180, preexec_fn=small_files)
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("gptkit pretrain: error: ") and "could not write the checkpoint of step 4" in last
    assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == before
    assert not any(p.name.startswith(".tmp-") for p in run.iterdir())


def test_stale_temp_files_are_cleaned_at_the_next_start(corpus, tmp_path):
    run = tmp_path / "run"
    assert main(args(corpus, run, "--steps", "2", "--eval-every", "0")) == 0
    litter = [run / "checkpoints" / ".tmp-step_000003-99999999", run / ".tmp-model-99999999"]
    for d in litter:
        d.mkdir()
        (d / "model.safetensors").write_bytes(b"half")
    (run / ".metrics.jsonl.x1y2.tmp").write_text("half")
    (run / "checkpoints" / ".latest.abc.tmp").write_text("half")
    assert main(args(corpus, run, "--steps", "3", "--eval-every", "0", "--resume")) == 0
    left = [p.name for p in [*run.iterdir(), *(run / "checkpoints").iterdir()] if p.name.startswith(".")]
    assert left == []  # and the lock was released when the run ended


# --- 11: RUN_DIR/model exists at every instant -----------------------------------------------------


def test_model_directory_is_never_absent_while_replaced(tmp_path):
    mgr = CheckpointManager(tmp_path / "run", keep_last=2)
    ckpt = save(mgr, 1)
    for i in range(30):  # give the checkpoint some files, so a delete takes a while
        (ckpt / f"part{i}.bin").write_bytes(os.urandom(1024))
    target = tmp_path / "run" / "model"
    missing, stop = [], threading.Event()

    def watch():
        while not stop.is_set():
            if not (target / "weights.txt").exists():
                missing.append(time.monotonic())

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for _ in range(150):
            mgr.export_model(ckpt)
    finally:
        stop.set()
        watcher.join()
    assert missing == []
    assert (target / "part29.bin").is_file() and not any(p.name.startswith(".") for p in target.parent.iterdir())


def test_replace_dir_fallback_without_exchange(tmp_path, monkeypatch):
    from gptkit import atomic

    monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)  # a kernel or filesystem without it
    target, new = tmp_path / "model", tmp_path / ".new"
    target.mkdir()
    (target / "old").write_text("old")
    new.mkdir()
    (new / "new").write_text("new")
    replace_dir(new, target)
    assert [p.name for p in target.iterdir()] == ["new"] and [p.name for p in tmp_path.iterdir()] == ["model"]


# --- 6: finetune stopped by a signal --------------------------------------------------------------


@pytest.mark.parametrize("sig, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_finetune_stopped_by_a_signal_exits_128_plus_n_without_results(tmp_path, sig, status):
    import random

    from gptkit.tokenizer import train_from_texts
    from test_finetune import FILL  # noqa: F401  (the tokenizer words)

    tok = train_from_texts([" ".join(FILL + ["good", "bad"])] * 5, vocab_size=200, min_frequency=1)
    tok.save(tmp_path / "tok")
    rows = classification_rows(random.Random(0), 400)
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    val = write_jsonl(tmp_path / "val.jsonl", rows[:40])
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "gptkit", "finetune", "--task", "classification", "--train", str(train), "--val",
           str(val), "--out", str(out), "--no-pretrain", "--preset", "tiny", "--tokenizer", str(tmp_path / "tok"),
           "--batch-size", "2", "--epochs", "5", "--evals-per-epoch", "1", "--threads", "1", "--quiet"]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    metrics = out / "metrics.jsonl"
    while time.monotonic() < deadline and proc.poll() is None:
        if metrics.is_file() and metrics.read_text():
            proc.send_signal(sig)
            break
        time.sleep(0.01)
    out_text, err = proc.communicate(timeout=120)
    assert proc.returncode == status, err
    assert f"stopped by {signal.Signals(sig).name}" in err and out_text == ""
    assert not (out / "summary.json").exists() and not (out / "best").exists()
    assert CheckpointManager(out).latest() is not None  # resumable


@pytest.mark.parametrize("sig, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_any_command_exits_128_plus_n_on_a_signal_and_leaves_nothing(tmp_path, sig, status):
    """Not only training: `prepare` (here) and every other command turn SIGTERM into 143 after
    their temp files are gone (SIGTERM used to kill the process where it stood)."""
    from gptkit.tokenizer import train_from_texts

    train_from_texts(["the king and queen of a castle"] * 5, vocab_size=120, min_frequency=1).save(tmp_path / "tok")
    (tmp_path / "big.txt").write_text("the king and the queen walk to the castle by the sea. " * 150_000)
    out = tmp_path / "corpus"
    proc = subprocess.Popen([sys.executable, "-m", "gptkit", "prepare", str(tmp_path / "big.txt"), "--tokenizer",
                             str(tmp_path / "tok"), "--out", str(out), "--workers", "1"],
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if list(tmp_path.glob(".corpus.partial-*")):  # under way: its temp directory exists
            time.sleep(0.3)
            proc.send_signal(sig)
            break
        time.sleep(0.01)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == status, err
    assert "Traceback" not in err
    assert not out.exists() and not list(tmp_path.glob(".corpus.*"))


@pytest.mark.parametrize("sig, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_tokenizer_train_stops_at_once_on_a_signal_and_writes_nothing(tmp_path, sig, status):
    """The `tokenizers` trainer computes its merges in Rust without returning to Python, so a SIGTERM
    waited for the whole training (~4 s more here; sent at 9 s, exited at 15.8 s in the audit). Now
    training runs in a child process that the command kills. SIGINT goes to the whole process group,
    as Ctrl-C sends it: the child must not print a KeyboardInterrupt traceback of its own."""
    import random
    import string

    rng = random.Random(0)
    words = ["".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(8, 16))) for _ in range(100_000)]
    words *= 2  # many distinct long words: ~0.1 s to read, ~5 s of merges on one core
    rng.shuffle(words)
    (tmp_path / "words.txt").write_text("\n".join(" ".join(words[i : i + 12]) for i in range(0, len(words), 12)))
    out = tmp_path / "tok"
    proc = subprocess.Popen([sys.executable, "-m", "gptkit", "-v", "tokenizer", "train", str(tmp_path / "words.txt"),
                             "--vocab-size", "20000", "--style", "bytelevel", "--out", str(out)],
                            env=ENV, stderr=subprocess.PIPE, text=True, start_new_session=True)
    for line in proc.stderr:
        if "training a bytelevel BPE" in line:  # the last line before training starts
            break
    time.sleep(1.5)  # in the merges by now
    sent = time.monotonic()
    if sig == signal.SIGINT:
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)
    first = proc.stderr.readline()
    took = time.monotonic() - sent
    err = first + proc.stderr.read()
    proc.wait(timeout=60)
    assert proc.returncode == status, err
    stopped = "terminated (SIGTERM)" if sig == signal.SIGTERM else "interrupted"
    assert first == f"gptkit tokenizer: {stopped}\n" and took < 1.5, (took, err)
    assert "Traceback" not in err and not out.exists()
    with pytest.raises(ProcessLookupError):  # and the training process is gone with it
        os.killpg(proc.pid, 0)


def test_a_lock_that_cannot_be_removed_does_not_hide_the_result(corpus, tmp_path, monkeypatch, caplog):
    """The run directory made read-only mid-run: the lock's removal fails on the way out. It used to
    raise PermissionError from pretrain's `finally`, replacing the run's own one-line error (or its
    success) with a traceback and exit 1."""
    import pathlib

    real_unlink = pathlib.Path.unlink

    def unlink(self, missing_ok=False):
        if self.name == ".lock":
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(pathlib.Path, "unlink", unlink)
    run = tmp_path / "run"
    with caplog.at_level(logging.WARNING):
        assert main(args(corpus, run, "--steps", "2", "--eval-every", "0")) == 0
    assert "could not remove the lock file" in caplog.text
    monkeypatch.undo()
    assert main(args(corpus, run, "--steps", "3", "--eval-every", "0", "--resume")) == 0  # the stale lock is ours


def test_a_run_directory_under_a_file_is_one_line(corpus, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")  # was: a NotADirectoryError traceback from mkdir, exit 1
    assert main(args(corpus, tmp_path / "afile" / "run", "--steps", "2")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"gptkit pretrain: error: {tmp_path / 'afile' / 'run'}: cannot create the run directory or its " \
                      "lock: Not a directory"
    assert (tmp_path / "afile").read_text() == "x"


@pytest.mark.parametrize("stopped_by, status", [("SIGTERM", 143), ("SIGINT", 130), (None, 0)])
def test_every_rank_of_a_stopped_job_exits_with_the_signal_status(tmp_path, monkeypatch, stopped_by, status):
    """Rank 0 prints the report; the other ranks print nothing, but a rank that exits 0 after a
    signal tells its scheduler the work is done. Both commands, seen from rank 1 of 2."""
    import importlib
    import types

    # the modules, not the functions of the same names their packages re-export
    finetune_module = importlib.import_module("gptkit.tasks.finetune")
    pretrain_module = importlib.import_module("gptkit.training.pretrain")
    ranks_module = importlib.import_module("gptkit.training.ranks")

    monkeypatch.setattr(ranks_module, "rank_info", lambda: ranks_module.RankInfo(rank=1, world_size=2))
    monkeypatch.setattr(pretrain_module, "pretrain", lambda opts: types.SimpleNamespace(stopped_by=stopped_by, step=3))
    monkeypatch.setattr(finetune_module, "finetune", lambda cfg: {"steps": 3, "stopped_by": stopped_by, "rank": 1})
    assert main(["pretrain", "--data", str(tmp_path / "shards"), "--out", str(tmp_path / "lm")]) == status
    assert main(["finetune", "--init", str(tmp_path / "lm"), "--task", "classification",
                 "--train", str(tmp_path / "t.jsonl"), "--out", str(tmp_path / "ft")]) == status
