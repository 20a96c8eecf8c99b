#!/usr/bin/env bash
# Every GPU-only check in one go (about 10 minutes on one GPU; the first run also installs):
#   bash benchmarks/gpu.sh              # on a machine with a CUDA GPU
#   bash benchmarks/gpu.sh --dry-run    # anywhere: the same script on the CPU with a tiny model
# Writes its section of benchmarks/RESULTS.md (RESULTS_MD=... to write elsewhere) and gpu.json.
# What it checks: benchmarks/gpu_checks.py (bf16 training and CUDA peak memory vs `codepeft
# estimate` for every method, QLoRA vs LoRA memory, vLLM vs Hugging Face greedy generation).
set -euo pipefail
cd "$(dirname "$0")/.."
RESULTS_MD=${RESULTS_MD:-benchmarks/RESULTS.md}
OUT=${OUT:-benchmarks/gpu.json}
if [ "${1:-}" = "--dry-run" ]; then
  [ -x .venv/bin/python ] || bash scripts/setup.sh
  tiny=$(mktemp -d)
  trap 'rm -rf "$tiny"' EXIT
  .venv/bin/python - "$tiny" <<'EOF'
import sys
from codepeft.corpus import stdlib_files
from codepeft.models.tiny import build_tiny_model
from codepeft.models.tokenizer import train_bpe_tokenizer
tok = train_bpe_tokenizer((f.read() for f in stdlib_files()[:40]), vocab_size=2048)
print(build_tiny_model("llama", sys.argv[1] + "/llama", tok, seed=0, width=64, layers=2))
EOF
  exec .venv/bin/python benchmarks/gpu_checks.py --dry-run --model "$tiny/llama" --results "$RESULTS_MD" --out "$OUT"
fi

command -v nvidia-smi >/dev/null && nvidia-smi -L || { echo "no CUDA GPU here; try --dry-run" >&2; exit 2; }
# codepeft with PyPI's torch (the CUDA build on Linux x86-64) and bitsandbytes' CUDA kernels
[ -x .venv/bin/python ] || bash scripts/setup.sh
.venv/bin/python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || {
  echo "the .venv torch has no CUDA; reinstall it: .venv/bin/pip install --force-reinstall torch==2.13.0" >&2
  exit 2
}
# vLLM pins its own torch and transformers (0.34: torch 2.14, transformers < 5.23), so it gets an
# environment of its own; only the model directory and a prompts file pass between the two.
if [ ! -x .venv-vllm/bin/python ]; then
  python3 -m venv .venv-vllm
  .venv-vllm/bin/python -m pip install --quiet "vllm==0.34.*" || echo "vLLM did not install; its check is skipped" >&2
fi
vllm=()
.venv-vllm/bin/python -c "import vllm" 2>/dev/null && vllm=(--vllm-python .venv-vllm/bin/python)
timeout 1200 .venv/bin/python benchmarks/gpu_checks.py "${vllm[@]}" --results "$RESULTS_MD" --out "$OUT"
