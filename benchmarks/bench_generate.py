"""Generation throughput: gptkit with the KV cache vs gptkit without it vs transformers' generate().

For each preset (random weights, fixed seed) and each batch size (1 and 8 prompts of 16 tokens), one
run measures greedy decoding of N new tokens with
  - gptkit, KV cache (prefill once, then one token per step),
  - gptkit, no cache (`use_cache=False`: the whole prefix re-run every step),
  - transformers `generate()` (greedy) on `OpenAIGPTLMHeadModel` loaded from the directory that
    gptkit's `save_pretrained` wrote: the same weights (HF's GPT-1 has no KV cache),
and checks that all three produce the same ids; each in fp32 and bf16 weights (`--dtypes`). Every
row shows its fraction of the decoding ceiling (prompts x copy bandwidth / weight bytes: each
decoding step reads every weight once) and its ratio to transformers.

    python benchmarks/bench_generate.py                       # small + gpt1, fp32 + bf16, 256 new tokens
    python benchmarks/bench_generate.py --quick               # small only, 64 new tokens
    python benchmarks/bench_generate.py --presets gpt1 --slow-new-tokens 64

The two uncached modes cost O(N^2) and are very slow at the gpt1 shape on a small CPU:
`--slow-new-tokens K` runs them for K tokens only (their tokens/s is then an over-estimate of what they
would reach over N tokens, since each step re-runs a longer prefix; the table says which N each row
used). New tokens are capped at n_ctx - prompt length (the `small` preset has n_ctx 256), because
transformers cannot go past its position table. With --slow-new-tokens the cache is also timed over
the short run, so every speed-up compares runs of the same length. Throughput = prompts x new tokens /
wall seconds, prefill included; best of --repeats runs, the modes interleaved.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from gptkit import GPT  # noqa: E402
from gptkit.generation import GenerationConfig, generate  # noqa: E402
from gptkit.interop import save_pretrained  # noqa: E402
from gptkit.model import preset  # noqa: E402
from gptkit.model.linear import PROBE_ROWS, few_rows_kernel  # noqa: E402

PROMPT_LEN = 16
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def prompts_for(vocab: int, batch: int, seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (batch, PROMPT_LEN), generator=g).tolist()


def run_gptkit(model: GPT, prompts: list[list[int]], new: int, use_cache: bool) -> list[list[int]]:
    config = GenerationConfig(max_new_tokens=new, temperature=0.0, use_cache=use_cache)
    return [c.ids for c in generate(model, prompts, config)]


def run_hf(hf_model: Any, prompts: list[list[int]], new: int) -> list[list[int]]:
    ids = torch.tensor(prompts)
    with torch.inference_mode():
        out = hf_model.generate(
            ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, min_new_tokens=new, do_sample=False,
            pad_token_id=0, eos_token_id=None,
        )
    return out[:, ids.size(1):].tolist()


def measure_round_robin(modes: list[tuple], prompts: list[list[int]], repeats: int, device: str) -> list[dict[str, Any]]:
    """Time each mode `repeats` times, interleaved (mode 1, 2, 3, 1, 2, 3, ...), so that load from other
    processes on a shared machine falls on all modes alike; each mode's best time counts."""
    times: list[list[float]] = [[] for _ in modes]
    ids: list[list[list[int]]] = [[] for _ in modes]
    for _ in range(repeats):
        for i, (name, fn, target, new, kw) in enumerate(modes):
            t0 = time.perf_counter()
            ids[i] = fn(target, prompts, new, **kw)
            if device != "cpu":
                torch.cuda.synchronize()
            times[i].append(time.perf_counter() - t0)
            print(f"  {name:<16} {len(prompts)} x {new:>3} tokens: {times[i][-1]:8.2f} s  "
                  f"{len(prompts) * new / times[i][-1]:9.1f} tok/s", file=sys.stderr)
    out = []
    for (name, _fn, _target, new, _kw), t, got in zip(modes, times, ids):
        t.sort()
        out.append({"mode": name, "prompts": len(prompts), "new_tokens": new, "seconds": t[0],
                    "median_seconds": t[len(t) // 2], "tokens_per_s": len(prompts) * new / t[0], "ids": got})
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", default="small,gpt1", help="comma-separated presets (default small,gpt1)")
    p.add_argument("--batches", default="1,8", help="comma-separated prompt counts (default 1,8)")
    p.add_argument("--new-tokens", type=int, default=256, help="greedy tokens per prompt (default 256)")
    p.add_argument("--slow-new-tokens", type=int, default=None,
                   help="run the uncached modes (gptkit no-cache, transformers) for this many tokens only")
    p.add_argument("--repeats", type=int, default=1, help="timed runs per mode, interleaved; the best counts")
    p.add_argument("--no-hf", action="store_true", help="skip transformers")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads (default: torch's choice; 1 is far steadier on a busy shared CPU)")
    p.add_argument("--dtypes", default="fp32,bf16",
                   help="comma-separated weight dtypes for decoding (default fp32,bf16; bf16 = `generate --dtype bf16`)")
    p.add_argument("--quick", action="store_true", help="small preset, 64 new tokens")
    p.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/results/)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.presets, args.new_tokens = "small", min(args.new_tokens, 64)

    hf_classes = None
    if not args.no_hf:
        try:
            import transformers

            transformers.logging.set_verbosity_error()
            hf_classes = transformers.OpenAIGPTLMHeadModel
        except ImportError:
            print("transformers is not installed: skipping it", file=sys.stderr)

    # The ceiling of decoding: every step reads every weight once (batch 1: per token; batch B: per B
    # tokens), so tokens/s <= batch x copy bandwidth / weight bytes. Copy bandwidth (read + write) is
    # measured before and after the runs; the higher counts (the lower one mostly measures neighbours).
    copy_probes = [common.copy_bandwidth()]
    rows: list[dict[str, Any]] = []
    for name, dtype_name in ((n, d) for n in args.presets.split(",") for d in args.dtypes.split(",")):
        torch.manual_seed(0)
        config = preset(name)
        dtype = DTYPES[dtype_name]
        model = GPT(config).eval()
        hf_model = None
        if hf_classes is not None and config.block_order == "post_ln":
            with tempfile.TemporaryDirectory() as d:
                save_pretrained(model, d)
                hf_model = hf_classes.from_pretrained(d, torch_dtype=dtype).to(args.device).eval()
        model = model.to(args.device, dtype)
        weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
        new = min(args.new_tokens, config.n_ctx - PROMPT_LEN)
        slow_new = min(new, args.slow_new_tokens or new)
        for batch in (int(b) for b in args.batches.split(",")):
            prompts = prompts_for(config.vocab_size, batch)
            print(f"{name} {dtype_name}, {batch} prompt(s):", file=sys.stderr)
            run_gptkit(model, prompts, 4, True)  # warm-up (allocator, kernels)
            modes = [("gptkit cache", run_gptkit, model, new, {"use_cache": True})]
            if slow_new < new:  # the cache over the same short run, for a like-for-like ratio
                modes.append(("gptkit cache", run_gptkit, model, slow_new, {"use_cache": True}))
            modes.append(("gptkit no cache", run_gptkit, model, slow_new, {"use_cache": False}))
            if hf_model is not None:
                run_hf(hf_model, prompts, 4)
                modes.append(("transformers", run_hf, hf_model, slow_new, {}))
            results = measure_round_robin(modes, prompts, args.repeats, args.device)
            reference = results[0]["ids"]  # the longest cached run
            cache_tps = {r["new_tokens"]: r["tokens_per_s"] for r in results if r["mode"] == "gptkit cache"}
            for r in results:
                k = r["new_tokens"]
                r["same_ids_as_cache"] = all(a[:k] == b for a, b in zip(reference, r["ids"]))
                r["cache_speedup"] = cache_tps[k] / r["tokens_per_s"]
            hf_tps = {r["new_tokens"]: r["tokens_per_s"] for r in results if r["mode"] == "transformers"}
            for r in results:
                del r["ids"]
                if r["new_tokens"] in hf_tps:
                    r["vs_hf"] = r["tokens_per_s"] / hf_tps[r["new_tokens"]]
                rows.append({"preset": name, "dtype": dtype_name, "weight_mb": weight_bytes / 1e6, **r})

    copy_probes.append(common.copy_bandwidth())
    copy_gbs = max(copy_probes)
    for r in rows:
        r["ceiling_tokens_per_s"] = r["prompts"] * copy_gbs * 1e9 / (r["weight_mb"] * 1e6)
        r["of_ceiling"] = r["tokens_per_s"] / r["ceiling_tokens_per_s"]
    columns = [("preset", "preset", ""), ("dtype", "dtype", ""), ("prompts", "prompts", "d"), ("mode", "mode", ""),
               ("new_tokens", "new tokens", "d"), ("seconds", "seconds", ".2f"), ("tokens_per_s", "tokens/s", ".1f"),
               ("ceiling_tokens_per_s", "ceiling", ".1f"), ("of_ceiling", "of ceiling", ".0%"),
               ("vs_hf", "vs HF", ".2f"), ("cache_speedup", "cache x faster (same tokens)", ".2f"),
               ("same_ids_as_cache", "same ids", "")]
    print(f"host: {common.machine_info()['cpu']} ({torch.get_num_threads()} threads, torch {torch.__version__}); "
          f"copy bandwidth {copy_gbs:.1f} GB/s (probes {copy_probes[0]:.1f} / {copy_probes[1]:.1f}); ceiling = "
          f"prompts x copy bandwidth / weight bytes (every weight read once per decoding step)")
    kernels = {}
    if args.device == "cpu":  # which kernel this host's decoding steps used (measured during the runs)
        threads = torch.get_num_threads()
        kernels = {f"{d} {label}": few_rows_kernel(DTYPES[d], threads, rows)
                   for d in args.dtypes.split(",") for label, rows in (("1 row", 1), ("2-16 rows", PROBE_ROWS))}
        print("decoding-step kernels measured on this host (model/linear.py): "
              + ", ".join(f"{k}: {v}" for k, v in kernels.items()))
    print(common.format_table(rows, columns))
    out = common.write_results("bench_generate", {
        "machine": common.machine_info(), "copy_gbs": copy_gbs, "copy_probes": copy_probes, "decoding_kernels": kernels,
        "settings": {"presets": args.presets, "new_tokens": args.new_tokens, "slow_new_tokens": args.slow_new_tokens,
                     "prompt_len": PROMPT_LEN, "repeats": args.repeats, "device": args.device, "greedy": True,
                     "dtypes": args.dtypes, "threads": torch.get_num_threads()},
        "rows": rows,
    }, args.out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
