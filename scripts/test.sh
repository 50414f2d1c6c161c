#!/usr/bin/env bash
# The README's test command: set up .venv, then run the whole pytest suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
# Tests use small tensors: one thread each is faster and steadier than two threads contending for two cores.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
exec .venv/bin/python -m pytest -q "$@"
