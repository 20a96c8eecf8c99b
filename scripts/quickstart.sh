#!/usr/bin/env bash
# The main job on the offline default: set up, build the default model (cached after the first
# time), run the quickstart study (six tuning methods, zero-shot, ICL and RAG) and write its report.
# Extra arguments go to `codepeft study` (e.g. --set train.max_steps=10).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/codepeft bootstrap
.venv/bin/codepeft study configs/quickstart-study.yaml "$@"
