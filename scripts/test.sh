#!/usr/bin/env bash
# Set up (qrt + test extras + the isolated llmcompressor venv), then run the whole test
# suite on the CPU (Triton kernels under TRITON_INTERPRET=1). Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --llmcompressor
export TRITON_INTERPRET=1
export QRT_LLMCOMPRESSOR_PYTHON="$PWD/.venv-llmc/bin/python"
python3 -m pytest -q -p no:cacheprovider "$@"
