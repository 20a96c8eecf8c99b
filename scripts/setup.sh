#!/usr/bin/env bash
# Create .venv and install codepeft with its pinned stack (idempotent).
# torch is installed first and pinned, so no dependency can pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet "torch==2.13.0"
.venv/bin/python -m pip install --quiet -e ".[dev]" "torch==2.13.0"
.venv/bin/python -c "import codepeft, torch; print('codepeft', codepeft.__version__, '| torch', torch.__version__)"
