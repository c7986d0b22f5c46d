"""One summary of a `scripts/gpu-check.sh` run: test outcome, training MFU against the GPU's bf16 peak,
generation speed. Reads the JSON files that benchmarks/bench_train.py and bench_generate.py wrote.

    python scripts/gpu_summary.py --tests-rc 0 --train train.json --generate generate.json

MFU here = tokens/s x training FLOPs per token / the GPU's dense bf16 peak (its data sheet, looked up by
name; measured with a bf16 matmul probe for a GPU not in the table). That is the usual definition for
GPUs; benchmarks/bench_train.py's own MFU column divides by the matmul ceiling it measured instead.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

BF16_PEAK_TFLOPS = {
    # dense (no sparsity) bf16 tensor-core peak, from the vendors' data sheets
    "H200": 989.0,
    "H100 SXM": 989.0,
    "H100 NVL": 835.0,
    "H100 PCIe": 756.0,
    "H100": 756.0,  # an H100 whose form factor the name does not tell: the PCIe (lower) figure
    "GH200": 989.0,
    "B200": 2250.0,
    "A100": 312.0,
    "A800": 312.0,
    "L40S": 362.0,
    "L40": 181.0,
    "L4": 121.0,
    "A10G": 70.0,
    "A10": 125.0,
    "RTX 4090": 165.0,
    "RTX 3090": 71.0,
    "RTX A6000": 155.0,
}


def bf16_peak(name: str) -> float | None:
    """FLOP/s for a device name such as 'NVIDIA H100 80GB HBM3' (None when unknown). The longest
    matching key wins, so 'H100 PCIe' is not taken for 'H100' and 'L40S' not for 'L40' or 'L4'."""
    upper = name.upper()
    if "H100" in upper and "PCIE" not in upper and "NVL" not in upper and "HBM3" in upper:
        return BF16_PEAK_TFLOPS["H100 SXM"] * 1e12  # the SXM part reports HBM3 in its name
    matches = [k for k in BF16_PEAK_TFLOPS if k.upper() in upper]
    return BF16_PEAK_TFLOPS[max(matches, key=len)] * 1e12 if matches else None


def summarize(tests_rc: int | None, train: dict[str, Any] | None, generate: dict[str, Any] | None,
              device: str, peak: float, peak_source: str) -> list[str]:
    lines = [f"gpu-check summary: {device}, bf16 peak {peak / 1e12:.0f} TFLOP/s ({peak_source})"]
    if tests_rc is not None:
        lines.append(f"  gpu-marked tests: {'passed' if tests_rc == 0 else f'FAILED (pytest exit {tests_rc})'}")
    for r in (train or {}).get("rows", []):
        label = f"{r.get('preset')} {r.get('impl')} {r.get('dtype')} {r.get('mode', '')}".strip()
        if "error" in r:
            lines.append(f"  train {label}: error: {r['error']}")
            continue
        achieved = r["tokens_per_s"] * r["flops_per_token"]
        lines.append(f"  train {label}: {r['tokens_per_s']:,.0f} tokens/s, {achieved / 1e12:.1f} TFLOP/s, "
                     f"MFU {100 * achieved / peak:.1f}% of the bf16 peak")
    for r in (generate or {}).get("rows", []):
        lines.append(f"  generate {r.get('preset')} {r.get('prompts')} prompt(s) {r.get('mode')}: "
                     f"{r['tokens_per_s']:,.1f} tokens/s ({r.get('new_tokens')} new tokens)")
    if train is None:
        lines.append("  train benchmark: no results")
    if generate is None:
        lines.append("  generation benchmark: no results")
    return lines


def _read(path: Path | None) -> dict[str, Any] | None:
    if path is None or not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tests-rc", type=int, help="exit status of the gpu-marked pytest run")
    p.add_argument("--train", type=Path, help="bench_train.py JSON")
    p.add_argument("--generate", type=Path, help="bench_generate.py JSON")
    args = p.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        print("gpu_summary: no CUDA device is present", file=sys.stderr)
        return 77
    device = torch.cuda.get_device_name()
    peak, source = bf16_peak(device), "data sheet"
    if peak is None:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
        from gptkit.training.perf import measure_matmul_flops

        peak, source = measure_matmul_flops(torch.device("cuda"), torch.bfloat16), "measured: bf16 matmul probe"
    print("\n".join(summarize(args.tests_rc, _read(args.train), _read(args.generate), device, peak, source)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
