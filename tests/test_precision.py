"""Training precision (training/precision.py): bf16 really runs the matmuls in bf16 on fp32 master
weights, `auto` decides by measuring without touching the run's random stream, resume keeps it."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gptkit.data.sampler import WindowSampler
from gptkit.errors import GptkitError
from gptkit.model import GPT, preset
from gptkit.training import TrainConfig, build_optimizer, constant, lm_objective, train
from gptkit.training import precision as P


def tiny_gpt(seed=0):
    torch.manual_seed(seed)
    return GPT(preset("tiny", vocab_size=64, n_ctx=32))


def tokens(n=3000):
    return np.random.default_rng(0).integers(0, 64, size=n).astype(np.uint16)


def _run(precision: str, steps: int = 2):
    """Train a tiny model; return it, the dtypes its MLP matmul and LayerNorm produced, the losses."""
    model = tiny_gpt()
    seen: dict[str, set] = {"fc": set(), "ln": set(), "fc_weight": set()}
    block = model.transformer.blocks[0]

    def on_fc(mod, inputs, out):
        seen["fc"].add(out.dtype)
        seen["fc_weight"].add(mod.weight.dtype)

    def on_ln(mod, inputs, out):
        seen["ln"].add((out.dtype, mod.weight.dtype))

    block.mlp.fc.register_forward_hook(on_fc)
    block.ln_attn.register_forward_hook(on_ln)
    losses: list[float] = []
    opt = build_optimizer(model, lr=1e-3)
    train(model, lm_objective, WindowSampler([tokens()], batch_size=2, seq_len=16, seed=0), opt,
          constant(1e-3), TrainConfig(max_steps=steps, precision=precision, progress=False, log_every=1),
          on_step=lambda step, m: losses.append(m["loss"]))
    return model, opt, seen, losses


def test_bf16_really_runs_the_matmuls_in_bf16_on_fp32_masters():
    model, opt, seen, losses = _run("bf16")
    assert seen["fc"] == {torch.bfloat16} and seen["fc_weight"] == {torch.bfloat16}
    assert seen["ln"] == {(torch.bfloat16, torch.float32)}  # LayerNorm keeps fp32 gains
    assert all(math.isfinite(x) for x in losses)
    # master weights, their gradients' destination and the optimizer state stay fp32
    assert all(p.dtype == torch.float32 and isinstance(p, torch.nn.Parameter) for p in model.parameters())
    assert {s["exp_avg"].dtype for s in opt.state.values()} == {torch.float32}
    names = [n for n, _ in model.named_parameters()]
    assert names == [n for n, _ in tiny_gpt().named_parameters()]  # order restored after each forward
    _, _, seen32, losses32 = _run("fp32")
    assert seen32["fc"] == {torch.float32}
    assert losses32 != losses and abs(losses32[0] - losses[0]) < 0.05  # different rounding, same model


def test_bf16_casts_each_weight_once_per_forward():
    model = tiny_gpt()
    policy = P.MixedPrecision(model, "bf16", "cpu")
    casts = []
    param_ptrs = {p.data_ptr() for p in model.parameters()}

    class Count(torch.utils._python_dispatch.TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.aten._to_copy.default and (kwargs or {}).get("dtype") == torch.bfloat16 \
                    and args[0].data_ptr() in param_ptrs:
                casts.append(args[0].shape)
            return func(*args, **(kwargs or {}))

    ids = torch.randint(0, 64, (2, 17))
    with Count(), policy.forward():
        loss = model(ids[:, :-1], targets=ids[:, 1:])
    loss.backward()
    n_cast = len({id(p) for p in model.parameters()}) - 2 * 2 * model.config.n_layer  # LayerNorms stay fp32
    assert len(casts) == n_cast  # the tied embedding/head once, no per-use re-casts
    assert model.transformer.tok_emb.weight.grad.dtype == torch.float32


def test_auto_chooses_by_measuring(monkeypatch):
    model = tiny_gpt()
    monkeypatch.setattr(P, "probe_matmul_rates", lambda device, k, n: (100e9, 600e9))
    choice = P.choose_precision("auto", model, "cpu")
    assert choice.precision == "bf16" and "6.0x" in choice.reason
    monkeypatch.setattr(P, "probe_matmul_rates", lambda device, k, n: (100e9, 120e9))
    assert P.choose_precision("auto", model, "cpu").precision == "fp32"
    assert P.choose_precision("fp32", model, "cpu").precision == "fp32"
    # a resumed auto run keeps what its checkpoint used, whatever the probe says now
    assert P.resolve_precision("auto", model, "cpu", "ckpt", saved="bf16").precision == "bf16"
    with pytest.raises(GptkitError, match="precision"):
        P.choose_precision("fp16", model, "cpu")


def test_the_probe_leaves_the_global_random_stream_alone():
    P._probe.cache_clear()
    before = torch.get_rng_state()
    fp32, bf16 = P.probe_matmul_rates("cpu", 64, 128)
    assert fp32 > 0 and bf16 > 0
    assert torch.equal(torch.get_rng_state(), before)


def test_auto_is_the_default_and_says_what_it_chose(caplog, monkeypatch):
    assert TrainConfig(max_steps=1).precision == "auto"
    monkeypatch.setattr(P, "probe_matmul_rates", lambda device, k, n: (100e9, 100e9))
    with caplog.at_level("INFO", logger="gptkit.training.precision"):
        _, _, seen, _ = _run("auto", steps=1)
    assert seen["fc"] == {torch.float32}
    assert "precision: fp32 (auto: bf16 matmul measured 1.0x fp32" in caplog.text
