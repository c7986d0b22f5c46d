#!/usr/bin/env bash
# The CUDA check, in one command, for the day a GPU is at hand (under 5 minutes on one GPU):
#   1. the gpu-marked tests (tests/test_gpu.py: bf16 on CUDA, SDPA flash attention, torch.compile,
#      KV-cache equality on CUDA, a short pretrain + finetune on CUDA)
#   2. benchmarks/bench_train.py --device cuda --presets gpt1
#   3. benchmarks/bench_generate.py --device cuda --presets gpt1
#   4. one summary (scripts/gpu_summary.py) with MFU against the GPU's bf16 peak
#
#   scripts/gpu-check.sh            # uses ./.venv/bin/python, or $PYTHON
#
# Exit status: 0 all passed; 1 a test or benchmark failed; 77 no CUDA device is present (nothing was
# run: the "skipped" status of automake and meson). The test list is whatever `pytest -m gpu` collects,
# printed in either case. Results land in benchmarks/results/ (JSON) and on stdout; copy the summary
# into docs/performance.md.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3

tests=$("$PYTHON" -m pytest --collect-only -q -o addopts="" -m gpu tests/ 2>/dev/null | grep '::')
echo "gpu-check: the gpu-marked tests:"
printf '  %s\n' $tests

if ! "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  version=$("$PYTHON" -c 'import torch; print(torch.__version__)' 2>/dev/null || echo "not importable")
  echo "gpu-check: no CUDA device is present (torch $version: torch.cuda.is_available() is False)."
  echo "gpu-check: nothing was run; run this script on a machine with an NVIDIA GPU and a CUDA build of torch."
  exit 77
fi

"$PYTHON" -c 'import torch; print("gpu-check:", torch.cuda.get_device_name(), "| torch", torch.__version__, "| CUDA", torch.version.cuda)'
stamp=$(date -u +%Y%m%dT%H%M%SZ)
results=benchmarks/results
mkdir -p "$results"
failed=0

echo "gpu-check: [1/3] gpu-marked tests"
timeout 180 "$PYTHON" -m pytest -q -o addopts="-ra" -m gpu tests/
tests_rc=$?
[ "$tests_rc" = 0 ] || failed=1

echo "gpu-check: [2/3] training benchmark (gpt1)"
train_json="$results/gpu-train-$stamp.json"
timeout 150 "$PYTHON" benchmarks/bench_train.py --device cuda --presets gpt1 --out "$train_json" || failed=1

echo "gpu-check: [3/3] generation benchmark (gpt1)"
generate_json="$results/gpu-generate-$stamp.json"
timeout 90 "$PYTHON" benchmarks/bench_generate.py --device cuda --presets gpt1 --new-tokens 256 \
  --slow-new-tokens 64 --out "$generate_json" || failed=1

echo
"$PYTHON" scripts/gpu_summary.py --tests-rc "$tests_rc" --train "$train_json" --generate "$generate_json" || failed=1
exit "$failed"
