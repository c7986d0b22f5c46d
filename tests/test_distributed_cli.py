"""`torchrun --nproc-per-node 2 -m gptkit.cli pretrain ...` works unchanged, end to end, on CPU (gloo)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from gptkit.cli import main


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    rng = random.Random(0)
    words = "the a cat dog sat on mat ran far away big small red blue house tree river stone".split()
    docs = [" ".join(rng.choice(words) for _ in range(60)) + "." for _ in range(120)]
    (root / "text.txt").write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    assert main(["tokenizer", "train", str(root / "text.txt"), "--out", str(root / "tok"), "--vocab-size", "300",
                 "--quiet"]) == 0
    assert main(["prepare", str(root / "text.txt"), "--tokenizer", str(root / "tok"), "--out", str(root / "corpus"),
                 "--doc-split", "blank-line", "--val-fraction", "0.05", "--workers", "1", "--quiet"]) == 0
    return root / "corpus"


def write_sentences(path: Path, n: int) -> Path:
    """A tiny labelled classification file (3-word sentences, random 0/1 labels)."""
    rng = random.Random(1)
    words = "the a cat dog sat on mat ran far away big small red blue house tree river stone".split()
    rows = [{"sentence": " ".join(rng.sample(words, 3)), "label": rng.randint(0, 1)} for _ in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def torchrun_pretrain(corpus: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GPTKIT_DIST_TIMEOUT": "60"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "gptkit.cli",
           "pretrain", "--data", str(corpus), "--out", str(out), "--preset", "tiny", "--batch-size", "2",
           "--seq-len", "32", "--eval-windows", "4", "--log-every", "1", "--quiet", "--peak-flops", "1e11", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)


def test_torchrun_pretrain_runs_unchanged_and_a_single_process_continues_it(corpus: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = torchrun_pretrain(corpus, run, "--steps", "4", "--save-every", "2", "--eval-every", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    # rank 0 alone printed the summary and wrote the run; the ranks' losses were averaged into one line per step
    assert proc.stdout.count("done: step 4") == 1, proc.stdout
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if "loss" in r] == [1, 2, 3, 4]
    assert sum("val_loss" in r for r in lines) == 2
    state = json.loads((run / "checkpoints" / "step_000004" / "trainer_state.json").read_text())
    assert state["world_size"] == 2
    assert state["tokens_seen"] == 4 * 2 * 2 * 32  # steps x ranks x windows x tokens
    assert (run / "model" / "model.safetensors").is_file()

    # a single process continues a 2-process run with the same global batch (accumulation 2)
    # (exact resume and resharding are tested in test_distributed.py and test_distributed_fsdp.py)
    assert main(["pretrain", "--data", str(corpus), "--out", str(run), "--preset", "tiny", "--batch-size", "2",
                 "--seq-len", "32", "--steps", "6", "--resume", "--quiet"]) == 0
    state = json.loads((run / "checkpoints" / "step_000006" / "trainer_state.json").read_text())
    assert (state["world_size"], state["config"]["grad_accum_steps"]) == (1, 2)
    assert state["tokens_seen"] == 6 * 2 * 2 * 32


def test_torchrun_finetune_runs_unchanged_and_refuses_another_world_size(corpus: Path, tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture) -> None:
    # a tiny random model with the corpus's tokenizer, fine-tuned on 2 ranks
    train = write_sentences(tmp_path / "train.jsonl", 21)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GPTKIT_DIST_TIMEOUT": "60"}
    run = tmp_path / "ft"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "gptkit.cli",
           "finetune", "--task", "classification", "--train", str(train), "--val", str(train), "--no-pretrain",
           "--preset", "tiny", "--tokenizer", str(corpus.parent / "tok"), "--out", str(run), "--epochs", "2",
           "--batch-size", "4", "--quiet", "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)  # rank 0 alone printed it
    # 21 examples, 4 per rank x 2 ranks per update: 3 updates per epoch (the last one topped up)
    assert summary["steps"] == 6
    assert (run / "best" / "task.json").is_file()
    state = json.loads((run / "checkpoints" / "step_000006" / "trainer_state.json").read_text())
    assert state["world_size"] == 2

    # resumed by one process, it is refused (its epochs and schedule were planned for 2), nothing changed
    before = sorted(p.name for p in (run / "checkpoints").iterdir())
    cmd = ["finetune", "--task", "classification", "--train", str(train), "--val", str(train), "--no-pretrain",
           "--preset", "tiny", "--tokenizer", str(corpus.parent / "tok"), "--out", str(run), "--epochs", "2",
           "--batch-size", "4", "--quiet", "--resume"]
    assert main(cmd) == 2  # was: re-planned 2x the updates with accumulation 2, and trained 2x the epochs
    err = capsys.readouterr().err
    assert "step_000006: written by 2 process(es), resumed by 1; fine-tuning" in err
    assert "resumes only under torchrun --nproc-per-node 2" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == before


def test_a_non_finite_loss_under_torchrun_names_the_same_checkpoint_on_every_rank(corpus: Path, tmp_path: Path) -> None:
    # rank 1 used to say "no checkpoint was written" while rank 0 named step_000002
    proc = torchrun_pretrain(corpus, tmp_path / "run", "--steps", "20", "--save-every", "2", "--eval-every", "0",
                             "--lr", "1e5", "--warmup", "0")
    import re

    assert proc.returncode != 0
    # the two ranks write to one stderr: their lines may run into each other
    errors = re.findall(r"gptkit pretrain: error: step \d+: non-finite .*?(?:is untouched|no checkpoint was written)",
                        proc.stderr)
    assert len(errors) == 2 and errors[0] == errors[1], proc.stderr[-3000:]
    assert f"the last good checkpoint, {tmp_path / 'run' / 'checkpoints'}/step_0000" in errors[0]
