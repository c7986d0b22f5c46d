"""`torch.compile` (TrainConfig.compile / `--compile`) trains to the same losses as eager.

Inductor needs a C++ compiler on CPU; where compilation is impossible the test skips with the reason.
Compiling even a tiny model takes tens of seconds on 2 cores, so the default suite compiles one model
for 3 steps; the bf16 variant is marked slow.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

STEPS = 3


def _losses(compile: bool, precision: str = "fp32") -> list[float]:
    from gptkit.data.sampler import WindowSampler
    from gptkit.model import GPT, preset
    from gptkit.training import TrainConfig, build_optimizer, constant, lm_objective, train

    tokens = np.random.default_rng(0).integers(0, 512, size=2000).astype(np.uint16)
    # Dropout off: compiled code draws its masks with its own generator, so they would differ.
    config = preset("tiny", embd_pdrop=0.0, attn_pdrop=0.0, resid_pdrop=0.0)
    torch.manual_seed(0)
    model = GPT(config)
    optimizer = build_optimizer(model, lr=3e-3)
    sampler = WindowSampler([tokens], 4, 32, seed=3)
    losses: list[float] = []
    cfg = TrainConfig(max_steps=STEPS, log_every=1, progress=False, compile=compile, precision=precision)
    train(model, lm_objective, sampler, optimizer, constant(3e-3), cfg,
          on_step=lambda step, metrics: losses.append(metrics["loss"]))
    return losses


def _require_compiler() -> None:
    if not hasattr(torch, "compile"):
        pytest.skip("this torch has no torch.compile")
    if shutil.which("g++") is None and shutil.which("c++") is None and shutil.which("clang++") is None:
        pytest.skip("torch.compile on CPU needs a C++ compiler (g++/clang++), none on PATH")


def _compiled_or_skip(precision: str) -> list[float]:
    try:
        return _losses(True, precision)
    except Exception as e:  # a platform where inductor cannot build its kernels
        if "torch._dynamo" in type(e).__module__ or "torch._inductor" in type(e).__module__ or "CppCompileError" in repr(e):
            pytest.skip(f"torch.compile does not work on this platform: {type(e).__name__}: {str(e)[:200]}")
        raise


def _compiled_graphs() -> int:
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


def test_compiled_training_matches_eager() -> None:
    _require_compiler()
    graphs = _compiled_graphs()
    eager = _losses(False)
    assert _compiled_graphs() == graphs  # eager captures nothing
    compiled = _compiled_or_skip("fp32")
    assert _compiled_graphs() > graphs  # dynamo really captured the model: compile was applied
    assert len(compiled) == len(eager) == STEPS
    # Fused kernels sum in another order: equal to float32 rounding, compounded over 3 updates.
    np.testing.assert_allclose(compiled, eager, rtol=0, atol=1e-4)
    assert eager[-1] < eager[0]


@pytest.mark.slow
def test_compiled_bf16_training_matches_eager_bf16() -> None:
    _require_compiler()
    graphs = _compiled_graphs()
    eager = _losses(False, "bf16")
    compiled = _compiled_or_skip("bf16")
    assert _compiled_graphs() > graphs
    np.testing.assert_allclose(compiled, eager, rtol=0, atol=2e-2)  # bf16 rounds at ~3 significant digits
