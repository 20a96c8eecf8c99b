#!/usr/bin/env bash
# Set up, build the offline default model (cached after the first time) and tune it with LoRA.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/codepeft bootstrap
.venv/bin/codepeft train configs/quickstart.yaml --set method.name="${METHOD:-lora}" "$@"
