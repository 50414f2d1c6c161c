#!/usr/bin/env bash
# Creates (or reuses) .venv and installs tbps-hf with its extras. Safe to run repeatedly.
# torch==2.13.0 is installed first when missing: on these machines that is a local CPU wheel; letting pip
# resolve "torch" on its own would download a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
    .venv/bin/python -m pip install --quiet "torch==2.13.0"
fi
.venv/bin/python -m pip install --quiet -e ".[dev,demo,faiss]"
