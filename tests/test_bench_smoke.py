"""Smoke runs of the benchmarks (bench/): they start, check their candidates' outputs
against float32 references, and write the JSON/PNG the tables in docs/benchmarks.md come from.
Timings themselves are not asserted (benchmarks are never timed tests)."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


def _run(script: str, *args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=BENCH.parent)
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def _packed_bytes(n: int, k: int, bits: int, groups: int, scale_bytes: int) -> int:
    """Checkpoint-layout bytes, computed independently of QuantLinear: int32 words packed
    along K plus one scale per (row, group)."""
    return n * math.ceil(k * bits / 32) * 4 + n * groups * scale_bytes


def test_bench_kernels_quick(tmp_path):
    _run("bench_kernels.py", "--quick", "--out", str(tmp_path))
    report = json.loads((tmp_path / "kernels_cpu.json").read_text())
    assert (tmp_path / "kernels_cpu.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    m = report["machine"]
    assert m["device_type"] == "cpu" and m["cpu_model"] and m["torch"] and "triton" in m
    assert report["copy_bandwidth_GBps"] > 0
    assert report["errors"] == [], report["errors"]
    rows = report["results"]
    names = {r["candidate"] for r in rows}
    assert {"torch_fp32", "qrt_w4a16", "qrt_w8a16"} <= names
    assert {(r["N"], r["K"], r["M"]) for r in rows} == {(n, k, mm) for n, k in [(256, 256), (384, 512)]
                                                          for mm in (1, 16)}
    for r in rows:
        # every candidate computed x @ W_deq.T within its stated tolerance
        assert r["ok"] and r["rel_err"] <= r["tol"], r
        assert 0 < r["ms"] < 1e4 and math.isfinite(r["GBps"])
        assert r["GBps"] == pytest.approx(r["bytes"] / r["ms"] / 1e6, rel=1e-9)
        assert r["TFLOPs"] == pytest.approx(2 * r["M"] * r["N"] * r["K"] / r["ms"] / 1e9, rel=1e-9)
    by = {(r["N"], r["K"], r["M"], r["candidate"]): r for r in rows}
    for (n, k, mm, name), r in by.items():
        if name != "torch_fp32":
            assert r["speedup_vs_torch_fp32"] == pytest.approx(by[(n, k, mm, "torch_fp32")]["ms"] / r["ms"])
        io = mm * k * 4 + mm * n * 4  # fp32 x in, fp32 y out
        if name == "qrt_w4a16":
            assert r["bytes"] == _packed_bytes(n, k, 4, math.ceil(k / 128), 4) + io
        if name == "qrt_w8a16":
            assert r["bytes"] == _packed_bytes(n, k, 8, 1, 4) + io
        if name == "torch_fp32":
            assert r["bytes"] == n * k * 4 + io
    assert {t["name"] for t in report["targets"]} == {
        f"CPU {s} M=1 4096x4096 speedup vs fp32 F.linear" for s in ("w4a16", "w8a16")}


def test_bench_kernels_shape_parsing():
    sys.path.insert(0, str(BENCH))
    try:
        from bench_kernels import parse_shape
    finally:
        sys.path.remove(str(BENCH))
    assert parse_shape("14336x4096") == (14336, 4096)  # N (out) first, K (in) second
    for bad in ("4096", "4096x", "ax4096", "1x2x3"):
        with pytest.raises(ValueError, match="shape must be NxK"):
            parse_shape(bad)


@pytest.mark.slow  # ~30 s on two busy cores: six tiny models plus three dynamo traces
def test_bench_decode_quick(tmp_path):
    _run("bench_decode.py", "--quick", "--schemes", "dense,w4a16,torch_int4", "--batch", "1,2",
         "--out", str(tmp_path))
    report = json.loads((tmp_path / "decode_cpu_quick.json").read_text())
    rows = report["results"]
    assert all("error" not in r for r in rows), rows
    assert {(r["scheme"], r["batch"]) for r in rows} == {(s, b) for s in ("fp32", "w4a16", "torch_int4")
                                                          for b in (1, 2)}
    layers = report["config"]["model"]["num_hidden_layers"]
    for r in rows:
        assert r["tokens_per_s"] > 0 and r["mode"] == "eager"
        assert r["tokens_per_s"] == pytest.approx(r["batch"] * 1e3 / r["ms_per_step"])
        if r["scheme"] != "fp32":  # 7 Linear layers per block swapped; lm_head kept dense
            assert r["quantize"]["quantized_layers"] == 7 * layers
            assert not r["quantize"].get("lm_head_quantized", False)
    checks = {c["scheme"]: c for c in report["compile_checks"]}
    for scheme in ("dense", "w4a16", "torch_int4"):
        # a graph break would raise under fullgraph=True; aot_eager runs the same float32 ops
        assert checks[scheme]["fullgraph_ok"], checks[scheme]
        assert checks[scheme]["rel_diff_vs_eager"] < 1e-5


@pytest.mark.slow
def test_decode_vs_llamacpp_qrt_worker_protocol():
    """The qrt side of bench/decode_vs_llamacpp.py: one JSON line per request, the int8 head
    for a quantized model ("auto"), the dense model's own head, greedy tokens that agree
    between the W8A16 and fp32 engines for the first token of a plain prompt."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, str(BENCH / "qrt_worker.py")], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    reqs = [{"op": "load", "name": "fp32", "scheme": "fp32", "dtype": "float32"},
            {"op": "load", "name": "q", "scheme": "w8a16", "dtype": "float32"},
            {"op": "decode", "name": "fp32", "prompt": [504, 3575, 282, 4649, 314], "tokens": 3},
            {"op": "decode", "name": "q", "prompt": [504, 3575, 282, 4649, 314], "tokens": 3},
            {"op": "nope"}, {"op": "quit"}]
    out, _ = proc.communicate("".join(json.dumps(r) + "\n" for r in reqs), timeout=600)
    answers = [json.loads(line) for line in out.splitlines()]
    assert answers[0]["lm_head"] == "model" and answers[1]["lm_head"] == "int8"
    assert len(answers[2]["ids"]) == 3 and answers[2]["seconds"] > 0
    assert answers[3]["ids"][0] == answers[2]["ids"][0]
    assert "unknown op" in answers[4]["error"]
    assert proc.returncode == 0
