#!/usr/bin/env bash
# The README demo: set up (.venv, see scripts/setup.sh), then quantize the embedded SmolLM2 to
# W4A16, save, load_quantized, generate, and print size / load time / peak memory / decode
# tokens/s next to fp32. Extra arguments go to examples/demo.py (e.g. --scheme w8a16 --new-tokens 32).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
"${QRT_VENV:-.venv}/bin/python" examples/demo.py "$@"
