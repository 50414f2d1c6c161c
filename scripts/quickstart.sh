#!/usr/bin/env bash
# The README's main command: set up .venv, then build ProcPEDES, train, evaluate and report (tbps quickstart).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
exec .venv/bin/tbps quickstart "$@"
