"""Loss curves of the same pre-training run in fp32 and in bf16, on one plot (docs/performance.md).

    gptkit pretrain --data CORPUS --preset mini --steps 400 --batch-size 16 --lr 3e-3 --warmup 40 \
        --eval-every 50 --threads 1 --seed 1 --precision fp32 --out runs/fp32    # and --precision bf16
    python benchmarks/compare_precision.py runs/fp32 runs/bf16 --out docs/images/bf16-vs-fp32.png

Prints, per run, the mean training loss over the last quarter of the steps and every validation loss,
and the differences, next to the step-to-step noise of the fp32 curve (the standard deviation of its
training loss around a running mean over the same quarter): bf16 is "within noise" when the
difference of the means is smaller than that.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path


def read(run: Path) -> tuple[dict[int, float], dict[int, float]]:
    train, val = {}, {}
    for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        if "loss" in r:
            train[r["step"]] = r["loss"]
        if "val_loss" in r:
            val[r["step"]] = r["val_loss"]
    return train, val


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("fp32", type=Path, help="run directory of the fp32 run")
    p.add_argument("bf16", type=Path, help="run directory of the bf16 run")
    p.add_argument("--out", type=Path, default=None, help="PNG to write (default: no plot)")
    args = p.parse_args(argv)
    (t32, v32), (t16, v16) = read(args.fp32), read(args.bf16)
    steps = sorted(set(t32) & set(t16))
    tail = steps[len(steps) * 3 // 4 :]
    m32, m16 = statistics.mean(t32[s] for s in tail), statistics.mean(t16[s] for s in tail)
    window = 3
    resid = [t32[s] - statistics.mean(t32[x] for x in tail[max(0, i - window) : i + window + 1])
             for i, s in enumerate(tail)]
    noise = statistics.pstdev(resid) if len(resid) > 1 else float("nan")
    print(f"train loss, mean of the last {len(tail)} logged steps: fp32 {m32:.4f}, bf16 {m16:.4f}, "
          f"difference {m16 - m32:+.4f}; fp32 step-to-step noise (std) {noise:.4f}")
    for s in sorted(set(v32) & set(v16)):
        print(f"val loss at step {s}: fp32 {v32[s]:.4f}  bf16 {v16[s]:.4f}  difference {v16[s] - v32[s]:+.4f}")
    if args.out is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4))
        ax.plot(steps, [t32[s] for s in steps], label="train, fp32", color="tab:blue", lw=1)
        ax.plot(steps, [t16[s] for s in steps], label="train, bf16", color="tab:orange", lw=1)
        vs = sorted(set(v32) & set(v16))
        ax.plot(vs, [v32[s] for s in vs], "o--", label="validation, fp32", color="tab:blue", ms=4)
        ax.plot(vs, [v16[s] for s in vs], "s--", label="validation, bf16", color="tab:orange", ms=4)
        ax.set_xlabel("step")
        ax.set_ylabel("next-token cross-entropy (nats)")
        ax.set_title("The same run in fp32 and in bf16 (fp32 master weights)")
        ax.legend()
        fig.tight_layout()
        args.out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.out, dpi=110)
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
