#!/usr/bin/env bash
# One command for a fresh GPU machine without network (the device tool's H200), sized to
# <= 8 minutes of device time: environment report, the kernel sweep (qrt's kernels beside
# torch bf16 cuBLAS and torch's _weight_int4pack_mm / tinygemm, all bf16, timed side by
# side), the measured time next to the static sm_90 estimate per row
# (bench/static_vs_measured.py against the newest bench/results/*-gpu-static.json), and the
# pytest suite with real Triton compilation (no interpreter, bf16 included). Run from the
# repository root:
#
#   bash bench/gpu_suite.sh                      # writes to $OUT, or ./out/gpu-<date>
#
# Through the device tool (one call; carry .whl if bench/gpu_wheels.sh made it):
#   run(command="bash bench/gpu_suite.sh", carry=[".whl"], timeout_s=540)
#
# The device returns at most 8 files from $OUT; the suite writes:
#   suite.log  pytest.log  pytest-junit.xml  pytest-slow-junit.xml (if that stage runs)
#   kernels_<gpu>.json  kernels_<gpu>.png  kernels_<gpu>_vs_static.json  decode_<gpu>.json (if asked)
#
# Budgets (seconds; each stage also gets at most what is left of SUITE_TOTAL_S):
#   SUITE_TOTAL_S=470 SUITE_KERNELS_S=210 SUITE_TESTS_S=230 SUITE_DECODE_S=150 SUITE_TEST_TIMEOUT=120
# Sweep size: SUITE_KERNELS_ARGS (default: bf16, 4 shapes, M 1..1024, w4a16/w8a16/w8a8/w4a8),
#   SUITE_DECODE_ARGS (e.g. "--batch 1,8 --layers 16"), SUITE_PYTEST_ARGS (extra pytest args),
#   SUITE_TESTS (what pytest collects, default "tests").
# SUITE_STAGES: which stages run (default "kernels,tests"; add decode and slow-tests as
#   "kernels,tests,decode,slow" when a second call is available).
# SUITE_INSTALL=editable: pip install -e . --no-deps --no-build-isolation instead of the
#   symlink folder (qrt -> ./qrt, qrt_kernels -> ./kernels) put on PYTHONPATH.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
OUTDIR="${OUT:-$ROOT/out/gpu-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUTDIR"
LOG="$OUTDIR/suite.log"
START=$(date +%s)
TOTAL=${SUITE_TOTAL_S:-470}  # 8-minute device budget, start and transfers outside
PY=python3
[ -x /opt/torch/.venv/bin/python3 ] && PY=/opt/torch/.venv/bin/python3
export PYTHONUNBUFFERED=1
unset TRITON_INTERPRET  # real Triton compilation on the GPU

STAGES=",${SUITE_STAGES:-kernels,tests},"
want() { [[ "$STAGES" == *",$1,"* ]]; }
say() { echo "[suite +$(( $(date +%s) - START ))s] $*" | tee -a "$LOG"; }
# seconds a stage may take: its budget, capped by what is left of the total (min 10)
budget() { local left=$(( TOTAL - ($(date +%s) - START) - 5 )); local b=$1
  [ "$left" -lt "$b" ] && b=$left; [ "$b" -lt 10 ] && b=10; echo "$b"; }
stage() { local secs=$1; shift; say "stage (<= ${secs}s): $*"
  timeout -s INT -k 20 "$secs" "$@" 2>&1 | tee -a "$LOG"; local rc=${PIPESTATUS[0]}
  say "stage rc=$rc: $1 $2"; return 0; }

# -- environment -------------------------------------------------------------------------
say "repo $ROOT -> $OUTDIR"
{ nvidia-smi; nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem,power.limit \
    --format=csv; uname -a; nproc; free -g; } >>"$LOG" 2>&1
"$PY" - >>"$LOG" 2>&1 <<'EOF'
import platform, torch
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda,
      "gpu", torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
for m in ("triton", "transformers", "compressed_tensors", "hypothesis", "matplotlib", "pytest_timeout"):
    try:
        print(m, __import__(m).__version__)
    except Exception as e:
        print(m, "MISSING", type(e).__name__)
EOF

# -- import path: carried wheels, then qrt + qrt_kernels -----------------------------------
EXTRA=""
if ls "$ROOT"/.whl/*.whl >/dev/null 2>&1; then
  if "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/qrt-site "$ROOT"/.whl/*.whl >>"$LOG" 2>&1; then
    EXTRA=/tmp/qrt-site; say "installed carried wheels: $(ls "$ROOT"/.whl | tr '\n' ' ')"
  else
    say "carried wheels did not install (python $("$PY" -V 2>&1)); see suite.log"
  fi
fi
if [ "${SUITE_INSTALL:-symlinks}" = editable ] && \
   "$PY" -m pip install -q -e . --no-deps --no-build-isolation >>"$LOG" 2>&1; then
  export PYTHONPATH="${EXTRA}"
  say "qrt installed editable"
else
  rm -rf /tmp/qrt-path && mkdir -p /tmp/qrt-path
  ln -s "$ROOT/qrt" /tmp/qrt-path/qrt && ln -s "$ROOT/kernels" /tmp/qrt-path/qrt_kernels
  export PYTHONPATH="/tmp/qrt-path${EXTRA:+:$EXTRA}"
  say "qrt via symlinks, PYTHONPATH=$PYTHONPATH"
fi
(cd /tmp && "$PY" -c "import qrt, qrt_kernels; print('import ok', qrt.__file__, qrt_kernels.__file__)") \
  2>&1 | tee -a "$LOG"

# -- benchmarks: each stops starting new work ~40 s before its stage limit ------------------
if want kernels; then
  T=$(budget "${SUITE_KERNELS_S:-210}")
  # shellcheck disable=SC2086
  stage "$T" "$PY" bench/bench_kernels.py --out "$OUTDIR" --budget-s $(( T - 40 )) \
    ${SUITE_KERNELS_ARGS:---dtype bf16 --shapes 4096x4096,14336x4096,4096x14336,8192x8192 --m 1,4,16,64,256,1024 --schemes w4a16,w8a16,w8a8,w4a8}
  # measured time next to the static sm_90 estimate committed in bench/results
  STATIC=$(ls bench/results/*-gpu-static.json 2>/dev/null | grep -v before | sort | tail -1)
  for SW in "$OUTDIR"/kernels_*.json; do
    [ -f "$SW" ] && [ -n "$STATIC" ] && "$PY" bench/static_vs_measured.py "$SW" "$STATIC" 2>&1 | tee -a "$LOG"
  done
fi
if want decode; then
  T=$(budget "${SUITE_DECODE_S:-150}")
  # shellcheck disable=SC2086
  stage "$T" "$PY" bench/bench_decode.py --out "$OUTDIR" --budget-s $(( T - 45 )) ${SUITE_DECODE_ARGS:-}
fi

# -- tests: fast ones first, then the slow ones with what is left ---------------------------
# test_gpu_static.py compiles for sm_90 with the pinned triton on CPU CI; here the kernels run
PYTEST=("$PY" -m pytest -q -p no:cacheprovider -rfEs --continue-on-collection-errors --durations=15
        --ignore=tests/kernels/test_gpu_static.py)
"$PY" -c "import pytest_timeout" 2>/dev/null && PYTEST+=(--timeout="${SUITE_TEST_TIMEOUT:-120}")
if want tests; then
  # shellcheck disable=SC2086
  stage "$(budget "${SUITE_TESTS_S:-230}")" "${PYTEST[@]}" -m "not slow" --junitxml="$OUTDIR/pytest-junit.xml" \
    ${SUITE_PYTEST_ARGS:-} ${SUITE_TESTS:-tests} 2>&1 | tee -a "$OUTDIR/pytest.log" >/dev/null
fi
if want slow; then
  # shellcheck disable=SC2086
  stage "$(budget 560)" "${PYTEST[@]}" -m slow --junitxml="$OUTDIR/pytest-slow-junit.xml" \
    ${SUITE_PYTEST_ARGS:-} ${SUITE_TESTS:-tests} 2>&1 | tee -a "$OUTDIR/pytest.log" >/dev/null
fi

# -- summary (the device reply shows the end of the output) ---------------------------------
"$PY" bench/suite_summary.py "$OUTDIR" 2>&1 | tee -a "$LOG"
say "done in $(( $(date +%s) - START ))s; files: $(ls "$OUTDIR" | tr '\n' ' ')"
