"""Training precision (training/precision.py): bf16 really runs the matmuls in bf16 on fp32 master
weights, `auto` decides by measuring without touching the run's random stream, resume keeps it."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from gptkit.data.sampler import WindowSampler
from gptkit.errors import GptkitError
from gptkit.model import GPT, preset
from gptkit.training import TrainConfig, build_optimizer, constant, lm_objective, train
from gptkit.training import precision as P
from gptkit.training.perf import measure_matmul_flops

REAL_BF16_MATMUL_SPEED = P.bf16_matmul_speed


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


def fake_parts(fb32: float, fb16: float, opt: float, calls: list | None = None):
    """Stands in for the timed probe: CPU seconds of forward+backward in each precision, and the optimizer."""

    def parts(config, rows, seq_len, threads, with_bf16=True):
        if calls is not None:
            calls.append((config, rows, seq_len) if with_bf16 else (config, rows, seq_len, "fp32 only"))
        return fb32, fb16 if with_bf16 else None, opt

    return parts


@pytest.fixture(autouse=True)
def bf16_units(monkeypatch):
    """These tests decide on faked step times as a CPU with bf16 units would (bf16 matmuls 2x fp32),
    whatever this host's own units are; the test of emulated bf16 sets its own speed."""
    monkeypatch.setattr(P, "bf16_matmul_speed", lambda: 2.0)


def test_a_cpu_that_emulates_bf16_gets_fp32_without_timing_a_bf16_step(monkeypatch):
    config = tiny_gpt().config
    calls: list = []
    monkeypatch.setattr(P, "_timed_parts", fake_parts(1.0, 0.1, 0.0, calls))  # bf16 would look 10x faster
    monkeypatch.setattr(P, "bf16_matmul_speed", lambda: 0.03)  # an AVX2-only CPU's measured rate
    choice = P.choose_precision("auto", "cpu", config, (2, 16))
    assert choice.precision == "fp32" and "emulates" in choice.reason and "0.03x" in choice.reason
    assert calls == [(config, 2, 16, "fp32 only")]  # the fp32 step is still timed: a run's cost estimate
    assert choice.measured["step_cpu_seconds"] == {"fp32": 1.0} and "ratio" not in choice.measured
    monkeypatch.setattr(P, "bf16_matmul_speed", lambda: P.BF16_MATMUL_FLOOR)  # at the floor: timed
    assert P.choose_precision("auto", "cpu", config, (2, 16)).precision == "bf16"


def test_bf16_asked_for_on_a_cpu_that_emulates_it_is_run_with_a_warning(monkeypatch, caplog):
    """--precision bf16 is obeyed everywhere, but on a CPU without bf16 units the run says what it
    costs; on one with them (the fixture's 2x) nothing is said."""
    with caplog.at_level("WARNING", logger="gptkit.training.precision"):
        _, _, seen, _ = _run("bf16", steps=1)
    assert seen["fc"] == {torch.bfloat16} and not caplog.records
    monkeypatch.setattr(P, "bf16_matmul_speed", lambda: 0.03)  # an AVX2-only CPU's measured rate
    assert P.cpu_emulates_bf16() and P.emulated_bf16_warning("meta") is None  # not a CPU: not said
    with caplog.at_level("WARNING", logger="gptkit.training.precision"):
        _, _, seen, _ = _run("bf16", steps=1)
    assert seen["fc"] == {torch.bfloat16}  # still bf16, as asked
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert "without bf16 units" in caplog.text and "0.03x" in caplog.text and "slower than fp32" in caplog.text


def test_the_matmul_probes_are_real_and_cheap():
    """bf16_matmul_speed measures (no fixture here: the real function, kept aside before it is
    replaced); a product slower than the whole time budget is timed once after the warm-up."""
    from torch.overrides import TorchFunctionMode

    threads = torch.get_num_threads()
    speed = REAL_BF16_MATMUL_SPEED.__wrapped__()  # timed on one thread, the run's count restored
    assert speed > 0 and math.isfinite(speed) and torch.get_num_threads() == threads

    class CountMatmuls(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            calls.append(func)
            return func(*args, **(kwargs or {}))

    calls: list = []
    with CountMatmuls():
        assert measure_matmul_flops("cpu", torch.float32, size=32, seconds=0.0) > 0
    assert sum(getattr(f, "__name__", "") in ("__matmul__", "matmul") for f in calls) == 2  # warm-up, one timed
    calls.clear()
    with CountMatmuls():
        measure_matmul_flops("cpu", torch.float32, size=32, seconds=0.2)
    assert sum(getattr(f, "__name__", "") in ("__matmul__", "matmul") for f in calls) > 10  # best of many in 0.2 s


def test_auto_takes_bf16_only_when_its_measured_step_beats_the_margin(monkeypatch):
    config = tiny_gpt().config
    monkeypatch.setattr(P, "_timed_parts", fake_parts(1.0, 0.5, 0.1))
    choice = P.choose_precision("auto", "cpu", config, (2, 16))
    assert choice.precision == "bf16" and "0.55x the CPU time in bf16" in choice.reason
    assert choice.measured["step_cpu_seconds"] == {"fp32": 1.1, "bf16": 0.6}
    monkeypatch.setattr(P, "_timed_parts", fake_parts(1.0, 0.95, 0.1))  # 1.05 / 1.1: within the margin
    choice = P.choose_precision("auto", "cpu", config, (2, 16))
    assert choice.precision == "fp32" and "0.95x" in choice.reason
    # exactly at the margin bf16 pays; a hair above it does not
    at = P.StepCosts(fp32=P.BF16_MARGIN, bf16=1.0, rows=1, seq_len=1, scaled=False)
    assert P.bf16_pays(at) and not P.bf16_pays(P.StepCosts(P.BF16_MARGIN * 0.999, 1.0, 1, 1, False))
    assert P.choose_precision("fp32", "cpu", config).precision == "fp32"
    assert P.choose_precision("bf16", "cpu").precision == "bf16"
    # a resumed auto run keeps what its checkpoint used, whatever the probe says now
    assert P.resolve_precision("auto", tiny_gpt(), "cpu", "ckpt", saved="bf16").precision == "bf16"
    with pytest.raises(GptkitError, match="precision"):
        P.choose_precision("fp16", "cpu", config)


def test_a_large_batch_is_timed_on_fewer_rows_and_scaled(monkeypatch):
    config = tiny_gpt().config.replace(n_ctx=64)
    per_token = P.training_flops_per_token(config)
    monkeypatch.setattr(P, "PROBE_FLOPS", per_token * 64 * 3)  # room for 3 rows of 64 tokens
    assert P.probe_shape(config, 2, 64) == (2, 64)  # fits: the run's own micro-batch
    assert P.probe_shape(config, 10, 64) == (3, 64)
    monkeypatch.setattr(P, "PROBE_FLOPS", per_token * 20)
    assert P.probe_shape(config, 10, 64) == (1, 64)  # not even one row fits: one whole row, never a cut one
    calls: list = []
    monkeypatch.setattr(P, "_timed_parts", fake_parts(0.2, 0.1, 0.05, calls))
    costs = P.measure_step_costs(config, 8, 64, accum=2)
    assert calls == [(config, 1, 64)] and costs.scaled
    scale = 2 * 8  # forward/backward per row, per micro-batch; the optimizer once per update
    assert costs.fp32 == pytest.approx(0.2 * scale + 0.05) and costs.bf16 == pytest.approx(0.1 * scale + 0.05)


def test_the_probe_times_real_steps_and_leaves_the_global_random_stream_alone():
    P._timed_parts.cache_clear()
    before = torch.get_rng_state()
    config = tiny_gpt().config
    costs = P.measure_step_costs(config, 2, 16)
    assert costs.fp32 > 0 and costs.bf16 > 0 and not costs.scaled and (costs.rows, costs.seq_len) == (2, 16)
    assert torch.equal(torch.get_rng_state(), before)
    assert P.measure_step_costs(config, 2, 16) == costs  # measured once per shape and thread count


def test_auto_is_the_default_and_says_what_it_chose(caplog, monkeypatch):
    assert TrainConfig(max_steps=1).precision == "auto"
    calls: list = []
    monkeypatch.setattr(P, "_timed_parts", fake_parts(1.0, 1.0, 0.0, calls))
    with caplog.at_level("INFO", logger="gptkit.training.precision"):
        _, _, seen, _ = _run("auto", steps=1)
    assert seen["fc"] == {torch.float32}
    assert calls == [(tiny_gpt().config, 2, 16)]  # the sampler's micro-batch: 2 windows of 16 tokens
    assert "precision: fp32 (auto: a training step of this model took 1.00x the CPU time in bf16" in caplog.text


def test_demo_and_pretrain_decide_with_the_same_function(monkeypatch, tmp_path):
    """One decider: the demo's host stage and `gptkit pretrain --precision auto` both reach
    choose_precision -> measure_step_costs, with their own model and micro-batch."""
    from gptkit.cli import main
    from gptkit.demo.host import probe_host
    from test_pretrain import args, make_corpus

    calls: list = []
    monkeypatch.setattr(P, "_timed_parts", fake_parts(1.0, 0.5, 0.0, calls))
    monkeypatch.setattr("gptkit.training.perf.measure_matmul_flops", lambda device, dtype: 1e9)
    config = tiny_gpt().config
    host = probe_host("auto", config, 3)
    assert host["precision"] == "bf16" and calls == [(config, 3, config.n_ctx)]
    assert host["step_cpu_seconds"] == {"fp32": 1.0, "bf16": 0.5} and host["ratio"] == 0.5
    corpus = make_corpus(tmp_path / "data", 30)
    assert main([*args(corpus, tmp_path / "run"), "--steps", "1", "--precision", "auto"]) == 0
    assert [c[1:] for c in calls[1:]] == [(4, 32)]  # --batch-size 4 --seq-len 32
    saved = json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    assert calls[1][0].n_embd == saved["n_embd"]
    assert probe_host("fp32", config, 3)["reason"] == "set by the profile" and len(calls) == 2


def test_the_demo_estimates_its_pre_training_time_from_the_timed_step(monkeypatch, caplog):
    from gptkit.demo import host as H

    monkeypatch.setattr("gptkit.training.perf.measure_matmul_flops", lambda device, dtype: 1e9)
    monkeypatch.setattr(P, "_timed_parts", fake_parts(1.0, 0.5, 0.0))
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    config = tiny_gpt().config
    with caplog.at_level("INFO", logger="gptkit.demo.host"):
        out = H.probe_host("auto", config, 3, steps=1000)  # bf16 chosen: 0.5 s of CPU per step on 2 threads
    assert out["pretrain_estimate_seconds"] == 250.0 and "about 4 min for 1,000 steps" in caplog.text
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    assert out["bf16_gflops"] == 1.0 and out["bf16_matmul_speed"] == 2.0
    caplog.clear()
    monkeypatch.setattr(P, "bf16_matmul_speed", lambda: 0.1)  # emulated: fp32, 1 s per step
    with caplog.at_level("INFO", logger="gptkit.demo.host"):
        out = H.probe_host("auto", config, 3, steps=1500)
    assert out["precision"] == "fp32" and out["pretrain_estimate_seconds"] == 750.0
    # its bf16 ceiling is not measured (seconds per product there); the header says why
    from gptkit.demo.report import _bf16_ceiling

    assert out["bf16_gflops"] is None and _bf16_ceiling(out) == "bf16 emulated (0.10x fp32's rate: no bf16 units)"
    assert [r.levelname for r in caplog.records if "estimate" in r.getMessage()] == ["WARNING"]
    assert "well over 15 minutes" in caplog.text and "--quick" in caplog.text
    assert "pretrain_estimate_seconds" not in H.probe_host("fp32", config, 3, steps=1000)  # nothing timed


def test_fine_tuning_batches_tell_the_probe_their_padded_shape():
    from gptkit.tasks.epochs import EpochBatches
    from gptkit.tasks.transforms import EncodedExample

    # multiple choice: 3 sequences per example, so a batch of 4 examples is 12 rows, padded to the longest
    examples = [EncodedExample([[1] * n, [2] * (n + 1), [3]], label=0, truncated=False) for n in (5, 9, 7)]
    assert EpochBatches(examples, 4, 0, spec=None, seed=0).step_shape == (12, 10)
