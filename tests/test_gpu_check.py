"""scripts/gpu-check.sh on a machine without CUDA, and its summary's arithmetic."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import gpu_summary  # noqa: E402


@pytest.mark.slow  # collects the whole test suite twice (~25 s each on 2 busy cores)
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU path")
def test_gpu_check_says_no_cuda_device_and_lists_the_gpu_marked_tests() -> None:
    env = {"PATH": "/usr/bin:/bin", "PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "gpu-check.sh")], capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode == 77, proc.stdout + proc.stderr
    assert "no CUDA device is present" in proc.stdout
    listed = [line.strip() for line in proc.stdout.splitlines() if "::" in line]
    collected = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-o", "addopts=", "-m", "gpu",
                                "tests/"], capture_output=True, text=True, cwd=ROOT, timeout=300).stdout
    expected = [line.strip() for line in collected.splitlines() if "::" in line]
    assert listed == expected and len(listed) >= 6
    assert any("flash" in t for t in listed) and any("kv_cache" in t for t in listed)


def test_bf16_peak_by_device_name() -> None:
    assert gpu_summary.bf16_peak("NVIDIA H100 80GB HBM3") == 989e12  # SXM
    assert gpu_summary.bf16_peak("NVIDIA H100 PCIe") == 756e12
    assert gpu_summary.bf16_peak("NVIDIA H200") == 989e12
    assert gpu_summary.bf16_peak("NVIDIA L40S") == 362e12  # not L40's or L4's
    assert gpu_summary.bf16_peak("NVIDIA L4") == 121e12
    assert gpu_summary.bf16_peak("NVIDIA A100-SXM4-80GB") == 312e12
    assert gpu_summary.bf16_peak("Some Future GPU") is None


def test_summary_reports_mfu_against_the_bf16_peak() -> None:
    train = {"rows": [{"preset": "gpt1", "impl": "gptkit", "dtype": "bf16", "mode": "eager",
                       "tokens_per_s": 100_000.0, "flops_per_token": 7.535e8},
                      {"preset": "gpt1", "impl": "hf", "dtype": "bf16", "mode": "eager", "error": "out of memory"}]}
    generate = {"rows": [{"preset": "gpt1", "prompts": 1, "mode": "gptkit cache", "tokens_per_s": 512.0,
                          "new_tokens": 256}]}
    lines = gpu_summary.summarize(0, train, generate, "NVIDIA H100 80GB HBM3", 989e12, "data sheet")
    text = "\n".join(lines)
    assert "gpu-marked tests: passed" in text
    assert "MFU 7.6% of the bf16 peak" in text  # 1e5 x 7.535e8 / 989e12
    assert "error: out of memory" in text and "512.0 tokens/s" in text
    failed = "\n".join(gpu_summary.summarize(1, None, None, "x", 1e12, "measured"))
    assert "FAILED (pytest exit 1)" in failed and "train benchmark: no results" in failed


def test_every_benchmark_flag_gpu_check_passes_exists() -> None:
    """The script's benchmark command lines use only options the benchmarks have: it passed
    `bench_train.py --device cuda` while bench_train had no --device, so on a GPU its training
    benchmark could never run and the check could never exit 0."""
    script = (ROOT / "scripts" / "gpu-check.sh").read_text(encoding="utf-8").replace("\\\n", " ")
    calls = re.findall(r"benchmarks/(bench_\w+\.py)([^\n|]*)", script)
    calls = [(name, set(re.findall(r"(?<!\S)(--[a-z][a-z-]*)", rest))) for name, rest in calls]
    assert {name for name, _ in calls} >= {"bench_train.py", "bench_generate.py"}
    for name, flags in calls:
        help_text = subprocess.run([sys.executable, str(ROOT / "benchmarks" / name), "--help"], capture_output=True,
                                   text=True, timeout=120, check=True).stdout
        missing = sorted(f for f in flags if f not in help_text)
        assert not missing, f"scripts/gpu-check.sh passes {missing} to benchmarks/{name}, which has no such option"
