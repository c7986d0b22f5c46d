#!/usr/bin/env bash
# Set up gptkit in ./.venv. `scripts/setup.sh` installs the package; `scripts/setup.sh test` adds the
# test tools (pytest, ruff, transformers for parity, the server, plotting and baseline extras).
#
# PyTorch: an already-installed torch is kept. Otherwise, on a machine without an NVIDIA GPU, the CPU
# build is installed first (a plain `pip install torch` would pull a multi-GB CUDA build); set
# GPTKIT_TORCH_SPEC to choose another version, e.g. GPTKIT_TORCH_SPEC='torch>=2.5'.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# shellcheck disable=SC1091
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1

if ! python -c "import torch" >/dev/null 2>&1; then
  if command -v nvidia-smi >/dev/null 2>&1; then
    echo "setup: NVIDIA GPU found: installing torch from PyPI (CUDA build)"
    pip install -q "${GPTKIT_TORCH_SPEC:-torch}"
  else
    # The wheel alone from PyTorch's CPU index (one quick try: pip's own index settings still apply,
    # e.g. a local wheel folder); torch's dependencies then come from the normal index below.
    echo "setup: no GPU: installing the CPU build of torch"
    pip install -q --no-deps --retries 0 --timeout 20 "${GPTKIT_TORCH_SPEC:-torch==2.13.0}" \
      --index-url https://download.pytorch.org/whl/cpu 2>/dev/null \
      || pip install -q "${GPTKIT_TORCH_SPEC:-torch==2.13.0}"
  fi
fi

if [ "${1:-}" = "test" ]; then
  pip install -q -e ".[test]"
  # Headless Chromium for the attention-page browser test; optional (the test skips without it).
  if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) >/dev/null 2>&1 \
      || echo "setup: chromium not installed; the browser test will be skipped"
  fi
else
  pip install -q -e ".[plot,serve,baseline]"
fi
echo "setup: done ($(python -c 'import torch; print("torch", torch.__version__)'))"
