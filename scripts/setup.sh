#!/usr/bin/env bash
# Install attnbench into the active Python environment.
#   bash scripts/setup.sh         # the pipeline
#   bash scripts/setup.sh test    # the pipeline + test dependencies
# Without a GPU, torch's small CPU build is installed first (a bare `torch` would pull the
# multi-GB CUDA build); with a GPU, the project's torch range takes the CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q --upgrade pip
if ! (command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1); then
  python -c "import torch" 2>/dev/null || python -m pip install -q "torch==2.13.0"
fi
if [ "${1:-}" = "test" ]; then
  python -m pip install -q -e ".[test]"
else
  python -m pip install -q -e ".[cluster]"
fi
