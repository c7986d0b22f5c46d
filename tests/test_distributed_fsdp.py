"""FSDP from the CLI (`--parallel fsdp`), DCP sharded checkpoints, and resuming at another world size.

Every run here is `gptkit pretrain` on a tiny model without dropout (each rank would otherwise draw its
own masks, which one process cannot reproduce), on 2 gloo processes under torchrun or on 1 process.
This file is also a torchrun worker script: `torchrun ... tests/test_distributed_fsdp.py kill-save ARGS`
runs the CLI with one rank set to die in the middle of writing its checkpoint shard.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from gptkit.cli import main
from gptkit.training import CheckpointManager
from test_distributed_cli import corpus, write_sentences  # noqa: F401  (corpus: a fixture, a tiny prepared corpus)

STEPS = 10
NO_DROPOUT = {"vocab_size": 512, "n_ctx": 64, "n_embd": 64, "n_layer": 2, "n_head": 4,
              "embd_pdrop": 0.0, "attn_pdrop": 0.0, "resid_pdrop": 0.0}


def pretrain_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["pretrain", "--data", str(data), "--out", str(out), "--config", str(data.parent / "tiny.json"),
            "--batch-size", "2", "--seq-len", "32", "--eval-windows", "4", "--eval-every", "5", "--log-every", "1",
            "--steps", str(STEPS), "--precision", "fp32", "--quiet", "--peak-flops", "1e11", *extra]


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "GPTKIT_DIST_TIMEOUT": "60",
            "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), *sys.path])}


def torchrun_cmd(*args: str, script: list[str] | None = None) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
            "--monitor-interval=0.5", *(script or ["-m", "gptkit.cli"]), *args]


def torchrun(*args: str, script: list[str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(torchrun_cmd(*args, script=script), capture_output=True, text=True, timeout=300, env=env())


def one_process(*args: str) -> int:
    threads = torch.get_num_threads()
    try:
        return main([*args, "--threads", "1"])
    finally:
        torch.set_num_threads(threads)


def losses(run: Path, key: str = "loss") -> dict[int, float]:
    return {r["step"]: r[key] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if key in r}


def steps_logged(run: Path) -> int:
    """The last step in metrics.jsonl so far (the file grows while we read it)."""
    try:
        lines = (run / "metrics.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return 0
    complete = [json.loads(x) for x in lines if x.endswith("}")]
    return max((r["step"] for r in complete), default=0)


def state(checkpoint: Path) -> dict:
    return json.loads((checkpoint / "trainer_state.json").read_text())


@pytest.fixture(scope="module")
def data(corpus: Path) -> Path:  # noqa: F811
    (corpus.parent / "tiny.json").write_text(json.dumps(NO_DROPOUT))
    return corpus


@pytest.fixture(scope="module")
def fsdp_run(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted reference: 2 FSDP ranks x 1 micro-batch of 2 windows per update."""
    run = tmp_path_factory.mktemp("fsdp") / "run"
    proc = torchrun(*pretrain_args(data, run, "--parallel", "fsdp", "--save-every", "5"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run


def test_fsdp_on_two_processes_matches_one_process_from_the_cli(data: Path, fsdp_run: Path, tmp_path: Path) -> None:
    # 1 process x 2 accumulated micro-batches draws exactly the windows of 2 ranks x 1
    assert one_process(*pretrain_args(data, tmp_path / "one", "--grad-accum", "2", "--save-every", "5")) == 0
    one, two = losses(tmp_path / "one"), losses(fsdp_run)
    assert sorted(two) == list(range(1, STEPS + 1))
    for step in one:
        assert abs(two[step] - one[step]) < 1e-5, (step, two[step], one[step])
    assert one[STEPS] < one[1]  # it trained
    for step, value in losses(tmp_path / "one", "val_loss").items():
        assert abs(losses(fsdp_run, "val_loss")[step] - value) < 1e-5
    # the checkpoint is sharded: one DCP safetensors file per rank, no single-file optimizer state
    last = fsdp_run / "checkpoints" / f"step_{STEPS:06d}"
    assert len(list((last / "sharded").glob("*.safetensors"))) == 2
    assert not (last / "optimizer.safetensors").exists()
    assert state(last)["world_size"] == 2 and state(last)["optimizer"]["sharded"]
    assert not (fsdp_run / "model" / "sharded").exists()  # the exported model is the model alone


def test_export_of_a_sharded_run_loads_in_transformers_with_the_unsharded_logits(fsdp_run: Path) -> None:
    transformers = pytest.importorskip("transformers")
    from gptkit.model import GPT
    from gptkit.training import build_optimizer
    from gptkit.training.sharded import load_shards

    hf = transformers.OpenAIGPTLMHeadModel.from_pretrained(fsdp_run / "model").eval()
    # the unsharded model: the DCP shards of the last checkpoint read into a plain model, in one process
    last = fsdp_run / "checkpoints" / f"step_{STEPS:06d}"
    model = GPT.from_pretrained(last)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    load_shards(last, model, build_optimizer(model, lr=1e-3), state(last)["optimizer"])
    ids = torch.randint(0, model.config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = model.eval()(ids)
        theirs = hf(ids).logits
    assert ours.abs().max() > 0
    torch.testing.assert_close(theirs, ours, rtol=0, atol=1e-5)


@pytest.mark.slow
def test_sigterm_a_two_process_fsdp_run_then_resume_with_two_and_with_one(data: Path, fsdp_run: Path,
                                                                          tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = subprocess.Popen(torchrun_cmd(*pretrain_args(data, run, "--parallel", "fsdp", "--save-every", "1")),
                            env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and steps_logged(run) < 2:
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGTERM)  # a scheduler's pre-emption: every process of the job gets it
    _, err = proc.communicate(timeout=120)
    saved = CheckpointManager(run).latest()
    assert saved is not None, err.decode()[-3000:]
    stopped = state(saved)["step"]
    assert 2 <= stopped < STEPS, f"the run was not interrupted (stopped at {stopped})"
    assert "SIGTERM received" in err.decode()
    reference = losses(fsdp_run)
    shutil.copytree(run, tmp_path / "copy")

    # 2 ranks again: bit-identical losses and final weights
    proc = torchrun(*pretrain_args(data, run, "--parallel", "fsdp", "--save-every", "1", "--resume"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    resumed = losses(run)
    assert [s for s in resumed if s > stopped] == list(range(stopped + 1, STEPS + 1))
    for step in range(stopped + 1, STEPS + 1):
        assert resumed[step] == reference[step], (step, resumed[step], reference[step])
    from safetensors.torch import load_file

    w_ref, w_res = load_file(fsdp_run / "model" / "model.safetensors"), load_file(run / "model" / "model.safetensors")
    assert all(torch.equal(w_ref[k], w_res[k]) for k in w_ref)
    # the last 3 sharded checkpoints are kept (--keep-last's default), older ones removed whole
    assert [step for step, _ in CheckpointManager(run).complete()] == [STEPS - 2, STEPS - 1, STEPS]
    assert sorted(p.name for p in (run / "checkpoints").iterdir() if p.is_dir()) == \
        [f"step_{s:06d}" for s in (STEPS - 2, STEPS - 1, STEPS)]

    # 1 process: DCP reshards, accumulation 2 keeps the global batch of 4 windows, same windows next
    one = tmp_path / "copy"
    assert one_process(*pretrain_args(data, one, "--save-every", "1", "--resume")) == 0
    continued = losses(one)
    for step in range(stopped + 1, STEPS + 1):
        assert abs(continued[step] - reference[step]) < 1e-5, (step, continued[step], reference[step])
    final = state(one / "checkpoints" / f"step_{STEPS:06d}")
    assert (final["world_size"], final["config"]["grad_accum_steps"]) == (1, 2)
    assert final["tokens_seen"] == state(fsdp_run / "checkpoints" / f"step_{STEPS:06d}")["tokens_seen"]


def test_a_ddp_run_written_by_two_processes_resumes_with_one(data: Path, tmp_path: Path) -> None:
    run = tmp_path / "ddp"
    proc = torchrun(*pretrain_args(data, run, "--save-every", "5"))  # DDP is the default
    assert proc.returncode == 0, proc.stderr[-3000:]
    reference = losses(run)
    shutil.rmtree(run / "checkpoints" / f"step_{STEPS:06d}")  # as if it had stopped at step 5
    assert one_process(*pretrain_args(data, run, "--save-every", "5", "--resume")) == 0
    continued = losses(run)
    for step in range(6, STEPS + 1):
        assert abs(continued[step] - reference[step]) < 1e-5, (step, continued[step], reference[step])
    final = state(run / "checkpoints" / f"step_{STEPS:06d}")
    assert (final["world_size"], final["config"]["grad_accum_steps"]) == (1, 2)


@pytest.mark.slow
def test_kill_9_of_one_rank_during_a_sharded_save_leaves_the_previous_checkpoint(data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    # rank 1 dies (SIGKILL) once its shard of the step-4 checkpoint is written, before the commit
    proc = torchrun(*pretrain_args(data, run, "--parallel", "fsdp", "--save-every", "2"),
                    script=[__file__, "kill-save", "step_000004"])
    assert proc.returncode != 0
    assert "SIGKILL" in proc.stderr, proc.stderr[-3000:]
    leftover = [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".tmp-step_000004")]
    assert leftover and any((leftover[0] / "sharded").iterdir())  # the half-written checkpoint
    assert not (run / "checkpoints" / "step_000004").exists()
    latest = CheckpointManager(run).latest()
    assert latest is not None and latest.name == "step_000002"
    # the previous checkpoint resumes (here on 2 ranks again) and the run completes
    proc = torchrun(*pretrain_args(data, run, "--parallel", "fsdp", "--save-every", "2", "--resume"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resumed from" in proc.stderr and "step_000002 at step 2" in proc.stderr
    assert CheckpointManager(run).latest().name == f"step_{STEPS:06d}"
    assert not any(p.name.startswith(".tmp-") for p in (run / "checkpoints").iterdir())


@pytest.mark.slow
def test_fsdp_finetuning_matches_ddp_and_writes_a_loadable_task_model(data: Path, tmp_path: Path) -> None:
    from gptkit.tasks.model import load_task_model

    train = write_sentences(tmp_path / "train.jsonl", 24)
    runs = {}
    for parallel in ("ddp", "fsdp"):
        # same seed on every rank, same ops: DDP and FSDP draw the same dropout masks
        runs[parallel] = tmp_path / parallel
        proc = torchrun("finetune", "--task", "classification", "--train", str(train), "--val", str(train),
                        "--no-pretrain", "--preset", "tiny", "--tokenizer", str(data.parent / "tok"),
                        "--out", str(runs[parallel]), "--epochs", "2", "--batch-size", "4", "--quiet", "--json",
                        "--precision", "fp32", "--parallel", parallel)
        assert proc.returncode == 0, proc.stderr[-3000:]
    ddp, fsdp = losses(runs["ddp"]), losses(runs["fsdp"])
    assert sorted(fsdp) == sorted(ddp) == [1, 3, 6]  # logged every 3 updates (an epoch)
    for step in ddp:
        assert abs(fsdp[step] - ddp[step]) < 1e-5, (step, fsdp[step], ddp[step])
    model, _ = load_task_model(runs["fsdp"] / "best")  # gathered and written by rank 0
    reference, _ = load_task_model(runs["ddp"] / "best")
    for (name, a), (_, b) in zip(model.state_dict().items(), reference.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5, msg=name)


def _die_while_saving(step_dir: str) -> None:
    """Rank 1's DCP writer: write the shard, then SIGKILL this process before the checkpoint commits."""
    from torch.distributed.checkpoint import HuggingFaceStorageWriter

    class Dying(HuggingFaceStorageWriter):
        def write_data(self, plan, planner):  # type: ignore[no-untyped-def]
            written = super().write_data(plan, planner)
            if torch.distributed.get_rank() == 1 and f".tmp-{step_dir}" in str(self.path):
                written.wait()
                os.kill(os.getpid(), signal.SIGKILL)
            return written

    torch.distributed.checkpoint.HuggingFaceStorageWriter = Dying


if __name__ == "__main__":
    if sys.argv[1] == "kill-save":
        _die_while_saving(sys.argv[2])
        sys.exit(main(sys.argv[3:]))
