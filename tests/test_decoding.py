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


def test_generate_in_bf16_weights(tmp_path, capsys):
    model_dir = make_model_dir(tmp_path / "tiny")
    args = ["generate", str(model_dir), "the cat", "--max-new-tokens", "6", "--temperature", "0", "--json"]
    assert main(args) == 0
    fp32 = json.loads(capsys.readouterr().out)["samples"][0]
    assert main(args + ["--dtype", "bf16"]) == 0
    bf16 = json.loads(capsys.readouterr().out)["samples"][0]
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


def test_one_bf16_row_goes_through_the_kernel_measured_faster(monkeypatch):
    """Batch-1 bf16 decoding reads every weight once per token; which of torch's kernels reads a bf16
    weight faster for one row (`torch.mv` or the one-row `F.linear`) depends on the CPU, so
    model/blocks.py measures it once per process and `linear` takes the winner. Same values as
    F.linear to bf16 rounding."""
    import torch.nn.functional as F

    from gptkit.model import blocks
    from gptkit.model.blocks import linear

    first = blocks.bf16_row_kernel()
    assert first in ("mv", "linear") and blocks.bf16_row_kernel() == first
    assert blocks.bf16_row_kernel.cache_info().misses == 1  # measured once per process, then remembered

    g = torch.Generator().manual_seed(0)
    w, b = torch.randn(48, 32, generator=g).bfloat16(), torch.randn(48, generator=g).bfloat16()
    x = torch.randn(1, 1, 32, generator=g).bfloat16()
    with torch.no_grad(), _Ops() as ops:  # the default path: this host's measured choice
        linear(x, w, b)
    assert any("aten.mv" in op for op in ops.seen) == (first == "mv")
    # both branches, whichever this host measured faster
    monkeypatch.setattr(blocks, "bf16_row_kernel", lambda: "linear")
    with torch.no_grad(), _Ops() as ops:
        y_linear = linear(x, w, b)
    assert not any("aten.mv" in op for op in ops.seen)
    monkeypatch.setattr(blocks, "bf16_row_kernel", lambda: "mv")
    with torch.no_grad(), _Ops() as ops:
        y = linear(x, w, b)
    assert any("aten.mv" in op for op in ops.seen)
    assert y.shape == y_linear.shape == (1, 1, 48)
    torch.testing.assert_close(y.float(), F.linear(x, w, b).float(), atol=0.05, rtol=0.02)
    for args, grad in (((x.float(), w.float(), b.float()), False), ((x.repeat(1, 2, 1), w, b), False), ((x, w, b), True)):
        with torch.set_grad_enabled(grad), _Ops() as ops:
            linear(*args)
        assert not any("aten.mv" in op for op in ops.seen)  # fp32, two rows, or training: F.linear
    # a bf16 model decodes with it (mv chosen): one generated token runs only matrix-vector products in its blocks
    model = GPT(GPTConfig(vocab_size=64, n_ctx=16, n_embd=32, n_layer=1, n_head=2)).to(torch.bfloat16).eval()
    with torch.no_grad(), _Ops() as ops:
        model(torch.tensor([[3]]))
    assert sum("aten.mv" in op for op in ops.seen) == 5 and not any("aten.addmm" in op or "aten.mm" in op for op in ops.seen)
