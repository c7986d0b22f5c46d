"""Training throughput: gptkit vs transformers' OpenAIGPTLMHeadModel, against this machine's ceilings.

One command measures, in the same run, the fp32 and bf16 matmul ceilings and then, for each preset,
one training step (forward, LM loss, backward, clipping, fused AdamW step) in fp32 and in bf16, eager
and (with --compile) torch.compile'd, for gptkit's GPT as its loop runs it (bf16 weights cast once
per forward, chunked head loss), for gptkit's model with the step it had before issue #12
(`gptkit-legacy`: autocast, full logits) and for transformers' GPT-1 on the same config (autocast,
full logits). Each configuration runs in its own subprocess so that peak memory (the RSS
high-water mark) belongs to that configuration alone.

    python benchmarks/bench_train.py                      # small + gpt1, fp32 + bf16, eager
    python benchmarks/bench_train.py --quick              # small only, 2 timed steps
    python benchmarks/bench_train.py --presets gpt1 --compile --steps 3
    python benchmarks/bench_train.py --device cuda --presets gpt1   # a GPU (scripts/gpu-check.sh)

MFU = (tokens/s x training FLOPs per token) / matmul ceiling of the same dtype, with FLOPs per token
from `gptkit.model.training_flops_per_token` (6 N + 12 L C T).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

# Batch shapes: the 4 x 512 for gpt1; the preset's own context for the CPU-sized ones.
BATCH = {"tiny": 8, "mini": 8, "small": 8, "gpt1": 4, "gpt2": 2}
DTYPES = {"fp32": None, "bf16": torch.bfloat16}


# --- one configuration (runs in a subprocess) -----------------------------------------------------


def build(impl: str, preset_name: str, dropout: bool) -> tuple[torch.nn.Module, Any]:
    """The model, in train mode (dropout on unless asked otherwise, as in real training), and its GPTConfig."""
    from gptkit.model import GPT, preset

    config = preset(preset_name)
    if not dropout:
        config = config.replace(embd_pdrop=0.0, attn_pdrop=0.0, resid_pdrop=0.0)
    torch.manual_seed(0)
    if impl.startswith("gptkit"):
        model = GPT(config)
    else:
        from transformers import OpenAIGPTConfig, OpenAIGPTLMHeadModel

        hf_config = OpenAIGPTConfig(
            vocab_size=config.vocab_size,
            n_positions=config.n_ctx,
            n_embd=config.n_embd,
            n_layer=config.n_layer,
            n_head=config.n_head,
            afn="gelu",
            resid_pdrop=config.resid_pdrop,
            embd_pdrop=config.embd_pdrop,
            attn_pdrop=config.attn_pdrop,
            layer_norm_epsilon=config.layer_norm_epsilon,
        )
        model = OpenAIGPTLMHeadModel(hf_config)
    model.train()
    return model, config


def run_config(spec: dict[str, Any]) -> dict[str, Any]:
    """One configuration, timed: the step `gptkit.training.train` runs for pre-training (the LM
    objective's loss, backward, global-norm clipping at 1.0, AdamW from `build_optimizer`, fused where
    torch has it). transformers' model gets exactly the same step, loss and optimizer, so the ratio
    compares the models."""
    from gptkit.training import build_optimizer
    from gptkit.training.allocator import keep_freed_memory

    keep_freed_memory()  # the training loop's malloc settings (a no-op under --allocators glibc/jemalloc/tcmalloc)
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    impl, preset_name, dtype_name = spec["impl"], spec["preset"], spec["dtype"]
    device = torch.device(spec.get("device", "cpu"))
    model, config = build(impl, preset_name, spec.get("dropout", True))
    model.to(device)
    optimizer = build_optimizer(model, lr=2.5e-4, weight_decay=0.01)
    params = [p for p in model.parameters() if p.requires_grad]
    B, T, V = spec.get("batch") or BATCH[preset_name], config.n_ctx, config.vocab_size
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, V, (B, T + 1), generator=g).to(device)
    x, y = ids[:, :-1].contiguous(), ids[:, 1:].contiguous()
    forward = torch.compile(model) if spec["compile"] else model
    if impl == "gptkit":
        # gptkit's step as the loop runs it: bf16 = bf16 casts of the fp32 master weights made once per
        # forward (training/precision.py), the chunked head loss (model/loss.py), no B x T x V logits.
        from gptkit.training.precision import MixedPrecision

        policy = MixedPrecision(model, dtype_name, device)

        def forward_loss() -> torch.Tensor:
            with policy.forward():
                return forward(x, targets=y)
    else:
        # the pre-#12 step (gptkit-legacy) and transformers' own way: autocast, full logits, fp32 loss
        autocast_dtype = DTYPES[dtype_name]

        def forward_loss() -> torch.Tensor:
            with torch.autocast(device.type, dtype=autocast_dtype or torch.bfloat16, enabled=autocast_dtype is not None):
                out = forward(x)
                logits = out if impl == "gptkit-legacy" else out.logits
                return F.cross_entropy(logits.float().view(-1, V), y.view(-1))

    def step() -> float:  # loss.item() waits for the device, so a timed step is complete on CUDA too
        loss = forward_loss()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    if spec.get("profile"):
        step()
        step()
        activities = [torch.profiler.ProfilerActivity.CPU]
        if device.type == "cuda":
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        with torch.profiler.profile(activities=activities) as prof:
            step()
        sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
        table = prof.key_averages().table(sort_by=sort, row_limit=25, max_name_column_width=40)
        print(f"--- profile of one step: {impl} {preset_name} {dtype_name} ---\n{table}", file=sys.stderr)
    t0 = time.perf_counter()
    first_loss = step()  # warm-up: allocator, oneDNN primitives, compilation
    warmup_s = time.perf_counter() - t0
    for _ in range(spec.get("warmup", 1) - 1):
        step()
    best, median = common.time_best(step, spec["steps"])
    device_peak = {"peak_device_mib": torch.cuda.max_memory_allocated(device) / 2**20} if device.type == "cuda" else {}
    return {
        **spec,
        **device_peak,
        "batch": B,
        "seq_len": T,
        "first_loss": first_loss,
        "warmup_s": warmup_s,
        "step_s": best,
        "step_s_median": median,
        "tokens_per_s": B * T / best,
        "peak_rss_mib": common.peak_rss_mib(),
        "threads": torch.get_num_threads(),
    }


# --- the driver ---------------------------------------------------------------------------------


ALLOCATORS = {
    "default": None,  # glibc with the training loop's settings (training/allocator.py): what a gptkit run gets
    "glibc": None,  # glibc untouched (GPTKIT_MALLOC=default)
    "jemalloc": "libjemalloc.so.2",
    "tcmalloc": "libtcmalloc_minimal.so.4",
}
LIB_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib")


def allocator_path(name: str) -> str | None:
    """The shared library to LD_PRELOAD for `name` (None: glibc malloc); a missing one is an error."""
    lib = ALLOCATORS[name]
    if lib is None:
        return None
    for d in LIB_DIRS:
        if (Path(d) / lib).is_file():
            return str(Path(d) / lib)
    raise SystemExit(f"bench_train: {lib} not found (Debian/Ubuntu: apt-get install "
                     f"{'libjemalloc2' if name == 'jemalloc' else 'libtcmalloc-minimal4'})")


def run_in_subprocess(spec: dict[str, Any], timeout: float, allocator: str, preload: str | None,
                      show_stderr: bool = False) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--worker", json.dumps(spec)]
    env = {k: v for k, v in os.environ.items() if k != "GPTKIT_MALLOC"}
    if allocator == "glibc":
        env["GPTKIT_MALLOC"] = "default"
    if preload:
        env["LD_PRELOAD"] = preload
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {**spec, "error": f"timed out after {timeout:.0f} s"}
    if show_stderr:
        print(proc.stderr, file=sys.stderr)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return {**spec, "error": f"exit {proc.returncode}: {tail}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


COLUMNS = [
    ("preset", "preset", "s"),
    ("impl", "impl", "s"),
    ("dtype", "dtype", "s"),
    ("mode", "mode", "s"),
    ("allocator", "malloc", "s"),
    ("shape", "B x T", "s"),
    ("tokens_per_s", "tok/s", ".0f"),
    ("step_s", "step s", ".3f"),
    ("gflops", "GFLOP/s", ".1f"),
    ("mfu", "MFU", ".1%"),
    ("vs_hf", "vs HF", ".2f"),
    ("vs_hf_fp32", "vs HF fp32", ".2f"),
    ("peak_rss_mib", "peak RSS MiB", ".0f"),
]
DEVICE_COLUMNS = [("peak_device_mib", "peak GPU MiB", ".0f")]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--presets", default="small,gpt1", help="comma-separated presets (default small,gpt1)")
    p.add_argument("--dtypes", default="fp32,bf16", help="comma-separated: fp32, bf16")
    p.add_argument("--steps", type=int, default=3, help="timed steps per configuration (best is reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first (default 1)")
    p.add_argument("--batch", type=int, default=None, help="override the batch size of every preset")
    p.add_argument("--compile", action="store_true", help="also measure torch.compile'd gptkit (slow to compile)")
    p.add_argument("--no-hf", action="store_true", help="skip transformers' model")
    p.add_argument("--no-legacy", action="store_true",
                   help="skip gptkit-legacy (gptkit's model with the pre-#12 step: autocast, full logits)")
    p.add_argument("--profile", action="store_true",
                   help="print torch.profiler's per-op breakdown of one step of each configuration (stderr)")
    p.add_argument("--allocators", default="default",
                   help="comma-separated malloc for the workers: default (glibc with the training loop's "
                        "settings, training/allocator.py), glibc (untouched), jemalloc, tcmalloc (LD_PRELOAD)")
    p.add_argument("--no-dropout", action="store_true",
                   help="dropout 0 in both models (shows the cost of attention dropout, which rules out fused SDPA)")
    p.add_argument("--threads", type=int, default=None, help="torch threads in the workers (default: torch's)")
    p.add_argument("--device", default="cpu",
                   help="cpu (default) or cuda[:N]: where the models train and the matmul ceilings are measured")
    p.add_argument("--rounds", type=int, default=1,
                   help="run the whole set of configurations this many times, keeping each one's best: on a "
                        "shared machine this spreads the neighbours' load over every configuration")
    p.add_argument("--quick", action="store_true", help="small preset, 2 timed steps: a smoke run")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per configuration")
    p.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/results/train-<time>.json)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.worker:
        print(json.dumps(run_config(json.loads(args.worker))))
        return 0

    presets = ["small"] if args.quick else [s for s in args.presets.split(",") if s]
    steps = 2 if args.quick else args.steps
    dtypes = [d for d in args.dtypes.split(",") if d]
    for d in dtypes:
        if d not in DTYPES:
            p.error(f"--dtypes: unknown dtype {d!r}; choose from {sorted(DTYPES)}")
    allocators = [a for a in args.allocators.split(",") if a]
    for a in allocators:
        if a not in ALLOCATORS:
            p.error(f"--allocators: unknown allocator {a!r}; choose from {sorted(ALLOCATORS)}")
    preloads = {a: allocator_path(a) for a in allocators}
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        device = torch.device(args.device)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        p.error(f"--device: expected cpu or cuda[:N], got {args.device!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error(f"--device {args.device}: torch.cuda.is_available() is False (no GPU or a CPU build of torch)")

    from gptkit.model import preset, training_flops_per_token
    from gptkit.training.precision import bf16_matmul_speed, cpu_emulates_bf16

    # A CPU without bf16 units emulates bf16 (AVX2 only: 0.17x fp32 at the model's products, ~1 GFLOP/s
    # on the ceiling's 3072^3 square, a minute per product): its bf16 rows and ceiling are left out.
    ceiling_dtypes = ["fp32", "bf16"]
    speed = bf16_matmul_speed()
    if device.type == "cpu" and cpu_emulates_bf16():
        print(f"bf16 left out: this CPU runs a bf16 matmul at {speed:.2f}x its fp32 rate (no bf16 units; "
              "torch emulates bf16)", file=sys.stderr)
        dtypes = [d for d in dtypes if d != "bf16"]
        ceiling_dtypes = ["fp32"]

    def measure_ceilings() -> dict[str, float]:
        return {d: common.matmul_ceiling(torch.float32 if d == "fp32" else torch.bfloat16, device=str(device))
                for d in ceiling_dtypes}

    where = str(device) if device.type == "cuda" else f"{torch.get_num_threads()} threads"
    print(f"measuring matmul ceilings ({where})...", file=sys.stderr)
    # Measured before and after the runs; the higher of the two is the ceiling (on a shared machine
    # the lower one mostly measures the neighbours).
    probes = [measure_ceilings()]
    copy_gbs = common.copy_bandwidth()

    plan = []
    for name in presets:
        for dtype in dtypes:
            for alloc in allocators:
                impls = [("gptkit", False)] + ([("gptkit", True)] if args.compile else [])
                impls += [] if args.no_legacy else [("gptkit-legacy", False)]
                impls += [] if args.no_hf else [("hf", False)]
                plan.append([(name, dtype, alloc, impl, compiled) for impl, compiled in impls])

    best: dict[tuple, dict[str, Any]] = {}
    for round_ in range(args.rounds):
        for group in plan:
            for name, dtype, alloc, impl, compiled in group:
                spec = {"impl": impl, "preset": name, "dtype": dtype, "compile": compiled, "steps": steps,
                        "warmup": args.warmup, "batch": args.batch, "dropout": not args.no_dropout,
                        "threads": args.threads, "profile": args.profile, "device": args.device}
                print(f"  [{round_ + 1}/{args.rounds}] {name} {impl} {dtype} {'compiled' if compiled else 'eager'} "
                      f"{alloc}...", file=sys.stderr)
                r = run_in_subprocess(spec, args.timeout, alloc, preloads[alloc], show_stderr=args.profile)
                r.update(mode="compiled" if compiled else "eager", allocator=alloc)
                key = (name, dtype, alloc, impl, compiled)
                prev = best.get(key)
                if "error" in r:
                    print(f"    failed: {r['error']}", file=sys.stderr)
                    best.setdefault(key, r)
                    continue
                r["round_tokens_per_s"] = (prev or {}).get("round_tokens_per_s", []) + [r["tokens_per_s"]]
                r["peak_rss_mib"] = max(r["peak_rss_mib"], (prev or {}).get("peak_rss_mib", 0.0))
                if prev is None or "error" in prev or r["tokens_per_s"] >= prev["tokens_per_s"]:
                    best[key] = r
                else:
                    prev["round_tokens_per_s"] = r["round_tokens_per_s"]
                    prev["peak_rss_mib"] = r["peak_rss_mib"]

    rows: list[dict[str, Any]] = []
    for group in plan:
        group_rows = [best[key] for key in group]
        for r in group_rows:
            r["flops_per_token"] = training_flops_per_token(preset(r["preset"]))
            if "error" not in r:
                r["shape"] = f"{r['batch']} x {r['seq_len']}"
                r["gflops"] = r["tokens_per_s"] * r["flops_per_token"] / 1e9
        hf = next((r for r in group_rows if r["impl"] == "hf" and "error" not in r), None)
        for r in group_rows:
            if hf is not None and "error" not in r:
                r["vs_hf"] = r["tokens_per_s"] / hf["tokens_per_s"]
        rows.extend(group_rows)
    for r in rows:  # the issue's yardstick for bf16: transformers' fp32 step on the same preset
        hf32 = next((h for h in rows if h["impl"] == "hf" and h["dtype"] == "fp32" and h["preset"] == r["preset"]
                     and h.get("allocator") == r.get("allocator") and "error" not in h), None)
        if hf32 is not None and "error" not in r:
            r["vs_hf_fp32"] = r["tokens_per_s"] / hf32["tokens_per_s"]

    probes.append(measure_ceilings())
    ceilings = {d: max(p[d] for p in probes) for d in ceiling_dtypes}
    for r in rows:
        if "gflops" in r:
            r["mfu"] = r["gflops"] / ceilings[r["dtype"]]

    gpu = f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    print(f"host: {common.machine_info()['cpu']} ({os.cpu_count()} cores{gpu}, torch {torch.__version__})")
    print("ceilings: " + ", ".join(f"{d} matmul {ceilings[d]:.0f} GFLOP/s" for d in ceiling_dtypes) + ", "
          f"copy {copy_gbs:.1f} GB/s ({torch.get_num_threads()} threads); "
          f"dropout {'off' if args.no_dropout else 'on (0.1, as the paper)'}")
    print("ceiling probes (before, after): " + ", ".join(
        f"{d} {probes[0][d]:.0f} / {probes[1][d]:.0f}" for d in ceiling_dtypes) + " GFLOP/s; MFU uses the higher")
    print(common.format_table(rows, COLUMNS + (DEVICE_COLUMNS if device.type == "cuda" else [])))
    for r in rows:
        if "error" in r:
            print(f"{r['preset']} {r['impl']} {r['dtype']} {r['mode']}: {r['error']}")
    out = common.write_results(
        "train",
        {"argv": sys.argv[1:], "machine": common.machine_info(), "device": str(device),
         "ceilings_gflops": ceilings, "ceiling_probes": probes,
         "bf16_matmul_speed": speed,
         "copy_gbs": copy_gbs, "env": {k: v for k, v in os.environ.items() if k.startswith(("OMP_", "MKL_", "LD_PRELOAD"))},
         "rows": rows},
        args.out,
    )
    print(f"wrote {out}", file=sys.stderr)
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
