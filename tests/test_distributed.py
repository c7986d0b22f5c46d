"""Multi-process training on torch.distributed (CPU, gloo), launched by torchrun as users launch it.

This file is also the worker script: `torchrun ... tests/test_distributed.py MODE OUT` runs `worker()`
on every rank. One launch covers DDP parity and exact resume (so the suite pays torchrun's start-up
once); a second checks that a killed rank ends the job quickly.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch

from gptkit.errors import GptkitError
from gptkit.training.distributed import LaunchEnv, distributed_session, timeout_from_env

STEPS = 4
MICRO_BATCH = 2
SEQ_LEN = 32


def _train(run_dir: Path | None, *, steps: int, grad_accum: int, resume: bool = False,
           kill_rank_at: tuple[int, int] | None = None, fsdp: bool = False) -> dict:
    """A tiny GPT pre-trained through THE loop on a synthetic token stream; returns rank 0's view:
    the rank-averaged loss of every step and the final weights (written to run_dir/final.safetensors)."""
    from safetensors.torch import save_file

    from gptkit.data.sampler import WindowSampler
    from gptkit.model import GPT, preset
    from gptkit.training import (
        TrainConfig,
        build_optimizer,
        constant,
        lm_objective,
        prepare_run_dir,
        rank_info,
        train,
    )

    torch.set_num_threads(1)  # same kernels (and summation order) in every process
    ranks = rank_info()
    tokens = np.random.default_rng(0).integers(0, 512, size=4000).astype(np.uint16)
    # Dropout off: every rank would otherwise draw its own masks, which one process cannot reproduce.
    config = preset("tiny", embd_pdrop=0.0, attn_pdrop=0.0, resid_pdrop=0.0)
    torch.manual_seed(0)
    model = GPT(config)
    if fsdp:
        from gptkit.training.distributed import shard_model

        shard_model(model)  # before the optimizer: it must hold the sharded parameters
    optimizer = build_optimizer(model, lr=3e-3)
    sampler = WindowSampler([tokens], MICRO_BATCH, SEQ_LEN, seed=7, rank=ranks.rank, world_size=ranks.world_size)
    resume_from = prepare_run_dir(run_dir, resume=resume, kind="test") if run_dir is not None else None

    def on_step(step: int, metrics: dict) -> None:
        if kill_rank_at is not None and (ranks.rank, step) == kill_rank_at:
            (run_dir / "killed_at").write_text(repr(time.time()))
            os.kill(os.getpid(), signal.SIGKILL)

    # fp32: the FSDP and one-process runs must compute the same way (auto could pick bf16 here)
    cfg = TrainConfig(max_steps=steps, grad_accum_steps=grad_accum, checkpoint_every=2, log_every=1, progress=False,
                      precision="fp32")
    result = train(model, lm_objective, sampler, optimizer, constant(3e-3), cfg, run_dir=run_dir,
                   resume_from=resume_from, on_step=on_step)
    losses = {r["step"]: r["loss"] for r in result.history if "loss" in r}
    if ranks.is_main and run_dir is not None:
        save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(run_dir / "final.safetensors"))
        (run_dir / "losses.json").write_text(json.dumps(losses))
    return losses


def _fsdp_bf16_compute_dtypes() -> dict[str, list[str]]:
    """The dtype of each block's weight as forward sees it, and of the sharded weight the optimizer
    updates, under `shard_model(precision="bf16")` (torch's MixedPrecisionPolicy)."""
    from gptkit.model import GPT, preset
    from gptkit.training.distributed import shard_model

    torch.manual_seed(0)
    model = shard_model(GPT(preset("tiny")), precision="bf16")
    seen: list[str] = []
    for block in model.transformer.blocks:
        block.register_forward_pre_hook(lambda m, _args: seen.append(str(m.attn.qkv.weight.dtype)))
    model(torch.zeros(1, 8, dtype=torch.long)).float().sum().backward()
    return {"forward": seen, "master": sorted({str(p.dtype) for p in model.parameters()}),
            "grads": sorted({str(p.grad.dtype) for p in model.parameters() if p.grad is not None})}


def _fsdp_trunk_call_matches_forward() -> bool:
    """After a training step, the sharded model's trunk called on its own, then the tied LM head (as
    evaluation and fine-tuning's auxiliary loss do), gives the logits of the whole model's forward."""
    from gptkit.model import GPT, preset
    from gptkit.training.distributed import shard_model

    torch.manual_seed(0)
    model = shard_model(GPT(preset("tiny", embd_pdrop=0.0, attn_pdrop=0.0, resid_pdrop=0.0)))
    x = torch.randint(0, 512, (2, 9), generator=torch.Generator().manual_seed(1))
    torch.nn.functional.cross_entropy(model(x[:, :-1]).flatten(0, 1), x[:, 1:].flatten()).backward()
    with torch.no_grad():
        via_trunk = model.lm_logits(model.transformer(x[:, :-1]).hidden)
        whole = model(x[:, :-1])
    return bool(torch.equal(via_trunk, whole))


def worker(mode: str, out: Path) -> None:
    with distributed_session() as env:
        assert env is not None and env.world_size == 2, "run me under torchrun --nproc-per-node 2"
        if mode == "parity":
            _train(out / "full", steps=STEPS, grad_accum=1)
            _train(out / "split", steps=STEPS // 2, grad_accum=1)
            _train(out / "split", steps=STEPS, grad_accum=1, resume=True)
            fsdp_losses = _train(None, steps=STEPS, grad_accum=1, fsdp=True)
            if env.rank == 0:
                (out / "fsdp_losses.json").write_text(json.dumps(fsdp_losses))
            dtypes = _fsdp_bf16_compute_dtypes()
            trunk_ok = _fsdp_trunk_call_matches_forward()
            if env.rank == 0:
                (out / "fsdp_bf16_dtypes.json").write_text(json.dumps(dtypes))
                (out / "fsdp_trunk_call.json").write_text(json.dumps(trunk_ok))
        elif mode == "kill":
            _train(out / "kill", steps=1000, grad_accum=1, kill_rank_at=(1, 2))


def torchrun(mode: str, out: Path, timeout: float = 240, nproc: int = 2) -> tuple[subprocess.CompletedProcess, float]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GPTKIT_DIST_TIMEOUT": "60"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "--monitor-interval=0.5", __file__, mode, str(out)]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    return proc, time.monotonic() - t0


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


@pytest.fixture(scope="module")
def parity_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ddp")
    proc, _ = torchrun("parity", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def single_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    """The reference: 1 process x 2 accumulation micro-batches sees exactly the windows that 2 ranks x 1
    see (the sampler's draw counter interleaves ranks)."""
    out = tmp_path_factory.mktemp("single")
    return _train(out / "single", steps=STEPS, grad_accum=2), out


def test_ddp_matches_one_process_with_the_same_global_batch(parity_run: Path, single_run: tuple[dict, Path]) -> None:
    # Same windows, gradients averaged by DDP instead of accumulated: equal to float rounding.
    single, single_dir = single_run
    ddp = json.loads((parity_run / "full" / "losses.json").read_text())
    assert sorted(int(k) for k in ddp) == list(range(1, STEPS + 1))
    for step, loss in single.items():
        assert abs(ddp[str(step)] - loss) < 1e-6, (step, ddp[str(step)], loss)
    assert single[STEPS] < single[1]  # it trained
    w1 = read_weights(single_dir / "single" / "final.safetensors")
    w2 = read_weights(parity_run / "full" / "final.safetensors")
    assert w1.keys() == w2.keys()
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], rtol=0, atol=1e-6, msg=k)


def test_fsdp_matches_one_process(parity_run: Path, single_run: tuple[dict, Path]) -> None:
    # fully_shard reduce-scatters the gradients instead of all-reducing them: same maths, other rounding.
    single, _ = single_run
    fsdp = json.loads((parity_run / "fsdp_losses.json").read_text())
    assert sorted(int(k) for k in fsdp) == list(range(1, STEPS + 1))
    for step, loss in single.items():
        assert abs(fsdp[str(step)] - loss) < 1e-5, (step, fsdp[str(step)], loss)


def test_fsdp_bf16_gathers_bf16_parameters_and_keeps_fp32_master_weights(parity_run: Path) -> None:
    dtypes = json.loads((parity_run / "fsdp_bf16_dtypes.json").read_text())
    assert dtypes["forward"] == ["torch.bfloat16"] * 2  # each block computes with bf16 weights
    assert dtypes["master"] == ["torch.float32"] and dtypes["grads"] == ["torch.float32"]


def test_a_sharded_trunk_runs_on_its_own(parity_run: Path) -> None:
    assert json.loads((parity_run / "fsdp_trunk_call.json").read_text()) is True


def test_resume_after_two_process_run_continues_exactly(parity_run: Path) -> None:
    full = json.loads((parity_run / "full" / "losses.json").read_text())
    resumed = json.loads((parity_run / "split" / "losses.json").read_text())
    assert sorted(resumed) == [str(s) for s in range(STEPS // 2 + 1, STEPS + 1)]  # only the resumed steps
    for step, loss in resumed.items():
        assert loss == full[step], (step, loss, full[step])  # bit-identical
    w_full = read_weights(parity_run / "full" / "final.safetensors")
    w_split = read_weights(parity_run / "split" / "final.safetensors")
    for k in w_full:
        assert torch.equal(w_full[k], w_split[k]), k


def test_resume_with_another_world_size_keeps_the_global_batch(parity_run: Path, tmp_path: Path) -> None:
    import shutil

    # 2 ranks x 1 micro-batch, resumed by 1 process asking for accumulation 1: the loop makes it 2
    shutil.copytree(parity_run / "split", tmp_path / "single")
    resumed = _train(tmp_path / "single", steps=STEPS + 2, grad_accum=1, resume=True)
    assert sorted(resumed) == [STEPS + 1, STEPS + 2]
    state = json.loads((tmp_path / "single" / "checkpoints" / f"step_{STEPS + 2:06d}" / "trainer_state.json").read_text())
    assert (state["world_size"], state["config"]["grad_accum_steps"]) == (1, 2)
    assert state["batches"]["draws"] == 2 * (STEPS + 2)  # the global position: 2 micro-batches per update
    # 3 processes cannot split 2 micro-batches per update
    from gptkit.training.config import TrainConfig
    from gptkit.training.ranks import RankInfo
    from gptkit.training.sharded import fit_world_size

    with pytest.raises(GptkitError, match="2 micro-batches per update, which 3 process"):
        fit_world_size(state | {"world_size": 2, "config": {"grad_accum_steps": 1}}, TrainConfig(max_steps=9),
                       RankInfo(0, 3), Path("ckpt"))


def test_a_killed_rank_ends_the_job_quickly(tmp_path: Path) -> None:
    # Rank 1 SIGKILLs itself after step 2 while rank 0 trains on: rank 0's next all-reduce finds the
    # peer's socket closed and fails, torchrun sees the dead worker, stops the rest and exits non-zero.
    proc, _ = torchrun("kill", tmp_path, timeout=120)
    ended = time.time()
    assert proc.returncode != 0
    killed_at = float((tmp_path / "kill" / "killed_at").read_text())
    assert ended - killed_at < 30, f"the job took {ended - killed_at:.1f} s to end after a rank was killed"
    assert "Signals.SIGKILL" in proc.stderr or "SIGKILL" in proc.stderr, proc.stderr[-2000:]


# --- the launch environment, without launching ------------------------------------------------------


def test_launch_env_from_torchrun_variables() -> None:
    assert LaunchEnv.from_env({}) is None
    env = LaunchEnv.from_env({"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4",
                              "MASTER_ADDR": "node0", "MASTER_PORT": "1234"})
    assert env == LaunchEnv(rank=3, world_size=8, local_rank=1, local_world_size=4, master_addr="node0", master_port=1234)


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"RANK": "0"}, "WORLD_SIZE is missing"),
        ({"RANK": "x", "WORLD_SIZE": "2"}, "RANK='x' is not an integer"),
        ({"RANK": "2", "WORLD_SIZE": "2"}, r"RANK=2 must be in \[0, WORLD_SIZE=2\)"),
        ({"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "5", "LOCAL_WORLD_SIZE": "2"}, "LOCAL_RANK=5"),
    ],
)
def test_launch_env_errors_name_the_variable(environ: dict, message: str) -> None:
    with pytest.raises(GptkitError, match=message):
        LaunchEnv.from_env(environ)


def test_timeout_from_env() -> None:
    assert timeout_from_env({"GPTKIT_DIST_TIMEOUT": "12.5"}) == timedelta(seconds=12.5)
    assert timeout_from_env({}) == timedelta(seconds=600)
    with pytest.raises(GptkitError, match="GPTKIT_DIST_TIMEOUT"):
        timeout_from_env({"GPTKIT_DIST_TIMEOUT": "soon"})


def test_session_outside_a_launcher_is_a_plain_process() -> None:
    with distributed_session({}) as env:
        assert env is None
        assert not torch.distributed.is_initialized()


if __name__ == "__main__":
    worker(sys.argv[1], Path(sys.argv[2]))
