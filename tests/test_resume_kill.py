"""kill -9 at random moments while checkpoints are being written never leaves a run unresumable."""

import os
import random
import signal
import subprocess
import sys
import time

import torch

from gptkit.cli import main
from gptkit.interop import load_pretrained
from gptkit.training import CheckpointManager
from gptkit.training.checkpoint import OPTIMIZER_FILE, RNG_FILE
from test_pretrain import args, make_corpus  # tests/ is on sys.path under pytest


def wait_for(predicate, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_kill_9_during_checkpoint_writes(tmp_path):
    corpus = make_corpus(tmp_path / "data", 60)
    run = tmp_path / "run"
    rng = random.Random(1234)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    newest = -1
    for attempt in range(3):
        # checkpoint every step: the process spends most of its time writing checkpoints
        cmd = [sys.executable, "-m", "gptkit", *args(corpus, run, "--steps", "100000", "--save-every", "1",
                                                     "--keep-last", "2", "--eval-every", "0")]
        if attempt:
            cmd.append("--resume")
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            # resumed and made progress: a checkpoint newer than the last one we saw
            def progressed(after=newest):
                latest = CheckpointManager(run).latest()
                return latest is not None and int(latest.name[5:]) > after

            assert wait_for(progressed, 60), proc.stderr.read1().decode() if proc.poll() is not None else "no progress"
            time.sleep(rng.uniform(0.0, 0.3))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        latest = CheckpointManager(run).latest()
        assert latest is not None
        newest = int(latest.name[5:])
        # the newest complete checkpoint is whole: model, optimizer, RNG and state all load
        load_pretrained(latest)
        CheckpointManager.read_tensors(latest, OPTIMIZER_FILE)
        CheckpointManager.read_tensors(latest, RNG_FILE)
        assert CheckpointManager.read_state(latest)["step"] == newest
    # and the run continues from there, in process
    threads = torch.get_num_threads()
    try:
        assert main(args(corpus, run, "--steps", str(newest + 2), "--resume", "--eval-every", "0")) == 0
    finally:
        torch.set_num_threads(threads)
    assert CheckpointManager(run).latest().name == f"step_{newest + 2:06d}"
    assert not any(p.name.startswith(".tmp-") for p in (run / "checkpoints").iterdir())
