#!/usr/bin/env bash
# The main job, offline: set up, convert the built-in real model SmolLM2-135M-Instruct (cached
# after the first time), run the quickstart study (four tuning methods, zero-shot, ICL and RAG on
# real benchmarks) and write its report.
# Extra arguments go to `codepeft study` (e.g. --set train.max_steps=10).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/codepeft bootstrap smollm2-135m
.venv/bin/codepeft study configs/quickstart-study.yaml "$@"
