#!/usr/bin/env bash
# Set up and run the test suite (the full-budget bootstrap test is marked slow and left out;
# a short-budget bootstrap test runs instead). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -m "not slow" "$@"
