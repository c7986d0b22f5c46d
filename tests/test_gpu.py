"""The CUDA path: what `scripts/gpu-check.sh` runs on a machine with a GPU (`pytest -m gpu`).

Skipped where no CUDA device is present (as on the 2-core CPU machine gptkit is developed on, where
none of these has run yet); the script's test list is this file's gpu-marked tests.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def tiny(**overrides):
    from gptkit.model import GPT, preset

    torch.manual_seed(0)
    return GPT(preset("tiny", **overrides)).cuda()


def batch(model, b: int = 4, t: int = 32) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, model.config.vocab_size, (b, t + 1), generator=g).cuda()


def test_bf16_autocast_runs_the_matmuls_in_bf16_on_cuda() -> None:
    model = tiny()
    seen: list[torch.dtype] = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
             for m in model.modules() if isinstance(m, torch.nn.Linear)]
    ids = batch(model)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        logits = model(ids[:, :-1])
        loss = F.cross_entropy(logits.float().flatten(0, 1), ids[:, 1:].flatten())
    loss.backward()
    for h in hooks:
        h.remove()
    assert seen and all(d == torch.bfloat16 for d in seen), seen
    assert torch.isfinite(loss) and all(p.grad.dtype == torch.float32 for p in model.parameters() if p.grad is not None)


def test_sdpa_flash_attention_matches_the_math_kernel() -> None:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    model = tiny(embd_pdrop=0.0, attn_pdrop=0.0, resid_pdrop=0.0).eval()
    ids = batch(model)[:, :-1]
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):  # raises if the flash kernel cannot run
            flash = model(ids).float()
        with sdpa_kernel([SDPBackend.MATH]):
            math_ = model(ids).float()
    torch.testing.assert_close(flash, math_, rtol=0, atol=5e-2)


def test_compiled_model_matches_eager_on_cuda() -> None:
    model = tiny(embd_pdrop=0.0, attn_pdrop=0.0, resid_pdrop=0.0).eval()
    ids = batch(model)[:, :-1]
    with torch.no_grad():
        eager = model(ids)
        compiled = torch.compile(model)(ids)
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("sampling", [{"temperature": 0.0}, {"temperature": 0.9, "top_k": 20, "seed": 3}])
def test_kv_cache_generation_equals_full_recompute_on_cuda(sampling: dict) -> None:
    from gptkit.generation.engine import GenerationConfig, generate

    model = tiny(initializer_range=0.3).eval()  # a wide init: greedy output does not collapse onto one token
    prompts = [[5, 6, 7], [8, 9, 10, 11, 12], [13]]

    def ids(use_cache: bool) -> list[list[int]]:
        config = GenerationConfig(max_new_tokens=40, use_cache=use_cache, **sampling)
        return [c.ids for c in generate(model, prompts, config)]

    cached, uncached = ids(True), ids(False)
    assert cached == uncached
    assert all(len(set(x)) > 3 for x in cached), "degenerate output cannot test the cache"


def test_short_pretrain_and_finetune_on_cuda(tmp_path: Path) -> None:
    from gptkit.cli import main

    rng = random.Random(0)
    words = "the a cat dog sat on mat ran far away big small red blue house tree river stone".split()
    text = tmp_path / "text.txt"
    text.write_text("\n\n".join(" ".join(rng.choice(words) for _ in range(60)) + "." for _ in range(120)) + "\n")
    assert main(["tokenizer", "train", str(text), "--out", str(tmp_path / "tok"), "--vocab-size", "300", "--quiet"]) == 0
    assert main(["prepare", str(text), "--tokenizer", str(tmp_path / "tok"), "--out", str(tmp_path / "corpus"),
                 "--doc-split", "blank-line", "--val-fraction", "0.05", "--workers", "1", "--quiet"]) == 0
    run = tmp_path / "pre"
    assert main(["pretrain", "--data", str(tmp_path / "corpus"), "--out", str(run), "--preset", "tiny", "--steps", "20",
                 "--batch-size", "8", "--seq-len", "64", "--device", "cuda", "--precision", "bf16", "--eval-every", "10",
                 "--eval-windows", "8", "--quiet"]) == 0
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r["loss"] for r in lines if "loss" in r]
    assert train[-1] < train[0]
    rows = [{"sentence": " ".join(rng.sample(words, 3)), "label": rng.randint(0, 1)} for _ in range(32)]
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "ft"
    cmd = [sys.executable, "-m", "gptkit", "finetune", "--task", "classification", "--train", str(data), "--val",
           str(data), "--init", str(run), "--out", str(out), "--epochs", "1", "--batch-size", "8", "--device", "cuda",
           "--precision", "bf16", "--quiet", "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ})
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    assert summary["steps"] == 4 and 0.0 <= summary["val"]["accuracy"] <= 1.0
    assert (out / "best" / "task.json").is_file()
