"""DDP vs FSDP on CPU (gloo): update time, checkpoint save and load, checkpoint size.

For one preset, in separate launches: 1 process with accumulation 2, then 2 processes under torchrun
with DDP and with FSDP (the same global batch: 2 micro-batches per update). Each launch times
`--steps` updates through THE training loop, then one checkpoint save (DDP: rank 0 writes the model,
optimizer and RNG files; FSDP: every rank writes its DCP shard and rank 0 the gathered model) and one
load of it, as `--resume` does.

    python benchmarks/bench_distributed.py                    # mini preset, 8 timed updates
    python benchmarks/bench_distributed.py --preset small --steps 4

On a shared machine the wall times mean little alone; the JSON keeps each process's CPU time too.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def worker(spec: dict[str, Any]) -> dict[str, Any] | None:
    """One launch: train, save, load; returns rank 0's figures (None on the other ranks)."""
    import numpy as np
    import torch

    from gptkit.data.sampler import WindowSampler
    from gptkit.model import GPT, preset
    from gptkit.training import CheckpointManager, TrainConfig, build_optimizer, constant, lm_objective, train
    from gptkit.training.checkpoint import (
        OPTIMIZER_FILE,
        optimizer_state_from_safetensors,
        optimizer_state_to_safetensors,
        read_checkpoint,
    )
    from gptkit.training.distributed import apply_parallelism, distributed_session
    from gptkit.training.ranks import barrier, rank_info
    from gptkit.training.sharded import export_view, load_shards, save_sharded_checkpoint

    torch.set_num_threads(spec["threads"])
    with distributed_session():
        ranks = rank_info()
        config = preset(spec["preset"])
        torch.manual_seed(0)
        model = apply_parallelism(GPT(config), spec["parallel"])
        optimizer = build_optimizer(model, lr=1e-4)
        tokens = np.random.default_rng(0).integers(0, config.vocab_size, size=200_000).astype(np.uint16)
        sampler = WindowSampler([tokens], spec["batch"], spec["seq_len"], rank=ranks.rank, world_size=ranks.world_size)
        stamps: list[float] = []
        accum = 2 // ranks.world_size
        cfg = TrainConfig(max_steps=spec["warmup"] + spec["steps"], grad_accum_steps=accum, log_every=10**6,
                          progress=False)
        cpu0 = time.process_time()
        train(model, lm_objective, sampler, optimizer, constant(1e-4), cfg,
              on_step=lambda step, _m: stamps.append(time.perf_counter()))
        cpu_train = time.process_time() - cpu0
        timed = stamps[spec["warmup"]:]
        update_s = (timed[-1] - stamps[spec["warmup"] - 1]) / len(timed)

        ckpt = CheckpointManager(spec["out"], keep_last=1)

        def write_model(directory: Path) -> None:
            export_view(model).save_pretrained(directory)

        state = {"step": 1, "world_size": ranks.world_size, "rng": {}}
        barrier()
        t0 = time.perf_counter()
        if spec["parallel"] == "fsdp" and ranks.world_size > 1:
            path = save_sharded_checkpoint(ckpt, 1, model, optimizer, write_model, state, {})
        else:
            path = None
            if ranks.is_main:
                opt_tensors, opt_meta = optimizer_state_to_safetensors(optimizer)
                path = ckpt.save(1, write_model, {**state, "optimizer": opt_meta}, {OPTIMIZER_FILE: opt_tensors})
            barrier()
        save_s = time.perf_counter() - t0
        path = Path(spec["out"]) / "checkpoints" / "step_000001"
        barrier()
        t0 = time.perf_counter()
        checkpoint = read_checkpoint(path)
        if spec["parallel"] == "fsdp" and ranks.world_size > 1:
            load_shards(path, model, optimizer, checkpoint.state["optimizer"])
        else:
            from gptkit.interop.hf import load_weights_into

            load_weights_into(model, path)
            optimizer_state_from_safetensors(optimizer, checkpoint.tensors(OPTIMIZER_FILE),
                                             checkpoint.state["optimizer"], path)
        barrier()
        load_s = time.perf_counter() - t0
        if not ranks.is_main:
            return None
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        return {"update_s": update_s, "tokens_per_s": 2 * spec["batch"] * spec["seq_len"] / update_s,
                "save_s": save_s, "load_s": load_s, "checkpoint_mib": size / 2**20,
                "cpu_s_rank0_train": cpu_train, "peak_rss_mib_rank0": common.peak_rss_mib()}


def launch(spec: dict[str, Any], nproc: int, timeout: float) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": str(spec["threads"])}
    base = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"] if nproc > 1 \
        else [sys.executable]
    with tempfile.TemporaryDirectory() as d:
        result = Path(d) / "result.json"
        spec = {**spec, "out": str(Path(d) / "run"), "result": str(result)}
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        proc = subprocess.run([*base, __file__, "--worker", json.dumps(spec)], capture_output=True, text=True,
                              timeout=timeout, env=env)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != 0 or not result.is_file():
            return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
        row = json.loads(result.read_text())
    row["cpu_s_all_processes"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return row


COLUMNS = [("mode", "mode", ""), ("update_s", "s / update", ".3f"), ("tokens_per_s", "tokens/s", ".0f"),
           ("save_s", "save s", ".2f"), ("load_s", "load s", ".2f"), ("checkpoint_mib", "checkpoint MiB", ".1f"),
           ("cpu_s_all_processes", "CPU s (all)", ".1f")]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="mini", help="model preset (default mini)")
    p.add_argument("--steps", type=int, default=8, help="timed updates (default 8)")
    p.add_argument("--warmup", type=int, default=2, help="untimed updates first (default 2)")
    p.add_argument("--batch", type=int, default=8, help="windows per micro-batch (default 8)")
    p.add_argument("--seq-len", type=int, default=128, help="tokens per window (default 128)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process (default 1)")
    p.add_argument("--timeout", type=float, default=900, help="seconds per launch")
    p.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/results/)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        spec = json.loads(args.worker)
        row = worker(spec)
        if row is not None:
            Path(spec["result"]).write_text(json.dumps(row))
        return 0

    spec = {"preset": args.preset, "steps": args.steps, "warmup": args.warmup, "batch": args.batch,
            "seq_len": args.seq_len, "threads": args.threads}
    rows = []
    for mode, nproc, parallel in (("1 process, accumulation 2", 1, "ddp"), ("2 processes, DDP", 2, "ddp"),
                                  ("2 processes, FSDP", 2, "fsdp")):
        print(f"{mode}...", file=sys.stderr)
        rows.append({"mode": mode, "processes": nproc, "parallel": parallel,
                     **launch({**spec, "parallel": parallel}, nproc, args.timeout)})
    print(f"{args.preset}: global batch 2 x {args.batch} windows x {args.seq_len} tokens per update, "
          f"{args.threads} thread(s) per process")
    print(common.format_table(rows, COLUMNS))
    for r in rows:
        if "error" in r:
            print(f"{r['mode']}: {r['error']}")
    out = common.write_results("distributed", {"machine": common.machine_info(), "settings": spec, "rows": rows},
                               args.out)
    print(f"wrote {out}", file=sys.stderr)
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
