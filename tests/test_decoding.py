"""Decoding at the bandwidth limit: the KV cache is allocated once and its unwritten slots are never
read; bf16 inference weights (`generate --dtype bf16`) decode to nearly the fp32 log-probabilities."""

from __future__ import annotations

import json

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from gptkit.cli import main
from gptkit.generation import GenerationConfig, generate
from gptkit.interop import load_pretrained
from gptkit.model import GPT, GPTConfig, KVCache, preset
from test_generation_cli import make_model_dir

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def test_unwritten_cache_slots_are_never_read():
    torch.manual_seed(0)
    model = GPT(preset("tiny")).eval()
    ids = torch.randint(0, 512, (2, 12))
    cache = KVCache.for_model(model.config, 2)
    cache.keys.fill_(float("nan"))  # what an uninitialised (torch.empty) buffer may hold
    cache.values.fill_(float("nan"))
    with torch.no_grad():
        steps = [model(ids[:, :8], cache=cache)[:, -1]]
        for t in range(8, 12):
            steps.append(model(ids[:, t : t + 1], cache=cache)[:, -1])
        full = model(ids)
    for i, logits in enumerate(steps):
        torch.testing.assert_close(logits, full[:, 7 + i], rtol=1e-4, atol=1e-5)


def test_generate_in_bf16_weights(tmp_path, capsys, caplog, monkeypatch):
    from gptkit.training import precision
    from gptkit.training.precision import cpu_emulates_bf16

    model_dir = make_model_dir(tmp_path / "tiny")
    args = ["generate", str(model_dir), "the cat", "--max-new-tokens", "6", "--temperature", "0", "--json"]
    assert main(args) == 0
    fp32 = json.loads(capsys.readouterr().out)["samples"][0]
    with caplog.at_level("WARNING", logger="gptkit.cli.generate"):
        assert main(args + ["--dtype", "bf16"]) == 0
    bf16 = json.loads(capsys.readouterr().out)["samples"][0]
    # a CPU without bf16 units is told what bf16 costs it; one with them is not
    assert ("bf16 on a CPU without bf16 units" in caplog.text) == cpu_emulates_bf16()
    caplog.clear()
    monkeypatch.setattr(precision, "bf16_matmul_speed", lambda: 0.03)  # as an AVX2-only CPU measures
    with caplog.at_level("WARNING", logger="gptkit.cli.generate"):
        assert main(args + ["--dtype", "bf16"]) == 0
    capsys.readouterr()
    assert "bf16 on a CPU without bf16 units (a bf16 matmul runs at 0.03x" in caplog.text
    monkeypatch.undo()
    assert bf16["ids"] and bf16["logprobs"] != fp32["logprobs"]  # it really ran in bf16
    n = next((i for i, (a, b) in enumerate(zip(fp32["ids"], bf16["ids"])) if a != b), len(bf16["ids"]))
    assert n >= 1 and bf16["logprobs"][:n] == pytest.approx(fp32["logprobs"][:n], abs=0.1)
    # the engine on a bf16 model keeps its cache in bf16 and gives the CLI's ids
    model = load_pretrained(model_dir).to(torch.bfloat16).eval()
    cache = KVCache.for_model(model.config, 1, dtype=next(model.parameters()).dtype)
    assert cache.keys.dtype == torch.bfloat16
    from gptkit.generation.bundle import load_bundle

    prompt = load_bundle(model_dir, device="cpu").encode_prompt("the cat")
    out = generate(model, [prompt], GenerationConfig(max_new_tokens=6, temperature=0.0))[0]
    assert out.ids[: len(bf16["ids"])] == bf16["ids"]


class _Ops(TorchDispatchMode):
    """Records the aten ops a block of code dispatches."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        self.seen.append(str(func))
        return func(*args, **(kwargs or {}))


KERNEL_OPS = {"mv": "aten.mv", "split": "aten.bmm"}


def _kernel_ops(seen: list[str]) -> set[str]:
    """Which of the few-row kernels' ops a recorded block of code ran."""
    return {kernel for kernel, op in KERNEL_OPS.items() if any(op in s for s in seen)}


def test_few_rows_go_through_the_kernel_measured_fastest(monkeypatch):
    """A decoding step multiplies a few rows by every weight, so its speed is how fast a kernel
    streams the weights; which kernel does that fastest (`F.linear`, `torch.mv` for one row, or
    `split_product`'s batched product over the threads) depends on the CPU, the dtype and the threads,
    so model/linear.py measures it once per process for each and `linear` takes the winner. Same values
    as F.linear (to bf16 rounding in bf16)."""
    import torch.nn.functional as F

    from gptkit.model import linear as kernels
    from gptkit.model.linear import FEW_ROWS, linear

    for dtype in (torch.float32, torch.bfloat16):
        assert kernels.few_rows_kernel(dtype, 1, 1) in ("linear", "mv")  # split needs two threads
        assert kernels.few_rows_kernel(dtype, 2, 1) in ("linear", "mv", "split")
        assert kernels.few_rows_kernel(dtype, 1, 8) == "linear"  # mv takes one row
        assert kernels.few_rows_kernel(dtype, 2, 8) in ("linear", "split")
    misses = kernels.few_rows_kernel.cache_info().misses
    assert all(kernels.few_rows_kernel(d, t, r) for d in (torch.float32, torch.bfloat16) for t in (1, 2) for r in (1, 8))
    assert kernels.few_rows_kernel.cache_info().misses == misses  # measured once, then remembered

    g = torch.Generator().manual_seed(0)
    for dtype, tol in ((torch.float32, {"atol": 1e-5, "rtol": 1e-5}), (torch.bfloat16, {"atol": 0.05, "rtol": 0.02})):
        for rows in (1, 3):
            x = torch.randn(rows, 1, 32, generator=g).to(dtype)  # a decoding step's (B, 1, C)
            for out_features in (48, 47):  # 47: a row of the weight left over after the even split
                w = torch.randn(out_features, 32, generator=g).to(dtype)
                b = torch.randn(out_features, generator=g).to(dtype)
                expected = F.linear(x, w, b)
                for threads in (1, 2):  # the default path, on one thread and on torch's usual two
                    torch.set_num_threads(threads)  # (the one_thread fixture restores the count)
                    with torch.no_grad(), _Ops() as ops:
                        y = linear(x, w, b)
                    chosen = kernels.few_rows_kernel(dtype, threads, 1 if rows == 1 else 8)
                    assert _kernel_ops(ops.seen) == ({chosen} - {"linear"})  # this host's measured choice
                    torch.testing.assert_close(y.float(), expected.float(), **tol)
                torch.set_num_threads(1)
                for kernel in ("linear", "mv", "split") if rows == 1 else ("linear", "split"):  # every branch
                    monkeypatch.setattr(kernels, "few_rows_kernel", lambda d, t, r, kernel=kernel: kernel)
                    with torch.no_grad(), _Ops() as ops:
                        y = linear(x, w, b)
                    assert _kernel_ops(ops.seen) == ({kernel} - {"linear"})
                    assert y.shape == expected.shape == (rows, 1, out_features)
                    torch.testing.assert_close(y.float(), expected.float(), **tol)
                    monkeypatch.undo()
                for parts in (2, 3, 64):  # more parts than weight rows: all of them through F.linear
                    y = kernels.split_product(x.reshape(rows, 32), w, parts)
                    torch.testing.assert_close(y.float(), x.reshape(rows, 32).float() @ w.float().T, **tol)

    monkeypatch.setattr(kernels, "few_rows_kernel", lambda dtype, threads, rows: "split")
    x, w, b = torch.randn(1, 1, 32), torch.randn(48, 32), torch.randn(48)
    for args, grad in (((x.repeat(1, FEW_ROWS + 1, 1), w, b), False), ((x, w, b), True),
                       ((x.half(), w.half(), b.half()), False)):
        with torch.set_grad_enabled(grad), _Ops() as ops:
            linear(*args)
        assert not _kernel_ops(ops.seen)  # too many rows, training, or another dtype: F.linear
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16), _Ops() as ops:
        assert linear(x, w, b).dtype == torch.bfloat16  # under autocast: F.linear, autocast's dtype
    assert not _kernel_ops(ops.seen)

    # a model decodes with the chosen kernel: one generated token's five products (qkv, attention
    # projection, the MLP's two, the head) go through it, for one sequence or a batch, and no
    # matrix-matrix product is left
    model = GPT(GPTConfig(vocab_size=64, n_ctx=16, n_embd=32, n_layer=1, n_head=2)).eval()
    for kernel, dtype, batch in (("mv", torch.bfloat16, 1), ("split", torch.float32, 1), ("split", torch.bfloat16, 4)):
        model = model.to(dtype)
        counts = {}
        for forced in ("linear", kernel):
            monkeypatch.setattr(kernels, "few_rows_kernel", lambda d, t, r, forced=forced: forced)
            with torch.no_grad(), _Ops() as ops:
                model(torch.full((batch, 1), 3))
            counts[forced] = sum(KERNEL_OPS[kernel] in op for op in ops.seen)
        assert counts[kernel] == counts["linear"] + 5
        assert not any("aten.addmm" in op or "aten.mm" in op for op in ops.seen)
