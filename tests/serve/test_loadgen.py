"""The load generator: arrival processes, statistics, loopback guard, and a real run."""
import asyncio
import json
import math
import statistics
import threading
import time

import numpy as np
import pytest

from qrt.serve.bench_report import format_table, percentile, summarize
from qrt.serve.loadgen import LoadSpec, arrival_times, check_loopback, make_prompts, run_load


@pytest.mark.parametrize("url", ["http://127.0.0.1:8000", "http://localhost:1", "http://[::1]:80",
                                 "http://127.3.2.1:9"])
def test_loopback_accepted(url):
    check_loopback(url)


@pytest.mark.parametrize("url", ["http://10.0.0.1:8000", "http://example.com", "ftp://127.0.0.1", "127.0.0.1:80",
                                 "http://0.0.0.0:8000"])
def test_non_loopback_refused(url):
    with pytest.raises(ValueError, match="base_url"):
        LoadSpec(base_url=url)


def test_bounds_are_enforced():
    with pytest.raises(ValueError, match="num_prompts"):
        LoadSpec(base_url="http://127.0.0.1:1", num_prompts=10 ** 6)
    with pytest.raises(ValueError, match="max_concurrency"):
        LoadSpec(base_url="http://127.0.0.1:1", max_concurrency=0)


def test_poisson_and_gamma_arrivals(rng_seed):
    n, rate = 4000, 8.0
    for burstiness in (1.0, 0.25):
        t = arrival_times(LoadSpec(base_url="http://127.0.0.1:1", num_prompts=n, request_rate=rate,
                                   burstiness=burstiness, seed=rng_seed))
        gaps = np.diff(t)
        assert t[0] == 0 and (gaps >= 0).all()
        # gamma(k, 1/(rate k)) gaps: mean 1/rate, coefficient of variation^2 = 1/k; 6 standard errors
        assert abs(gaps.mean() - 1 / rate) < 6 * (1 / rate) / math.sqrt(burstiness * n)
        assert abs(gaps.var() / gaps.mean() ** 2 - 1 / burstiness) < 0.25 / burstiness
    assert arrival_times(LoadSpec(base_url="http://127.0.0.1:1", num_prompts=5)) == [0.0] * 5


def test_percentile_matches_numpy(rng_seed):
    v = np.random.default_rng(rng_seed).exponential(size=101).tolist()
    for q in (0, 50, 99, 100):
        assert percentile(v, q) == pytest.approx(float(np.percentile(v, q)), rel=1e-12)


def test_prompts_from_file_and_random(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text('{"prompt": "a b"}\n\n{"prompt": "c"}\n')
    spec = LoadSpec(base_url="http://127.0.0.1:1", num_prompts=5, dataset_path=str(f))
    assert make_prompts(spec) == ["a b", "c", "a b", "c", "a b"]
    rand = make_prompts(LoadSpec(base_url="http://127.0.0.1:1", num_prompts=3, input_len=7))
    assert len(rand) == 3 and all(len(p.split()) == 7 for p in rand)


def test_real_run_against_the_server(server, tmp_path):
    """12 streamed requests, at most 4 in flight: all succeed, token counts and timings add up."""
    peak, stop = [0], threading.Event()

    def watch():
        while not stop.is_set():
            peak[0] = max(peak[0], sum(server.engine.num_requests()))
            time.sleep(0.002)
    watcher = threading.Thread(target=watch)
    watcher.start()
    spec = LoadSpec(base_url=server.base_url, num_prompts=12, request_rate=math.inf, max_concurrency=4,
                    input_len=12, output_len=8, max_duration_s=120)
    try:
        results, duration = asyncio.run(run_load(spec, progress=False))
    finally:
        stop.set()
        watcher.join()
    s = summarize(results, duration, spec)
    assert s["completed"] == 12 and s["failed"] == 0 and s["total_output_tokens"] == 12 * 8
    assert 1 <= peak[0] <= 4
    for r in results:
        assert 0 < r.ttft <= r.latency and len(r.itl) <= 7
        assert r.ttft + sum(r.itl) <= r.latency + 1e-6
    assert s["output_throughput"] == pytest.approx(96 / duration)
    assert s["median_e2el_ms"] == pytest.approx(statistics.median(r.latency for r in results) * 1000)
    assert "Output token throughput (tok/s):" in format_table(s)
    json.dumps(s)  # the summary is plain JSON (inf rate written as "inf")


def test_cli_bench_serve(server, tmp_path, capsys):
    from qrt.cli import main
    out = tmp_path / "r.json"
    code = main(["bench", "serve", "--base-url", server.base_url, "--num-prompts", "4", "--request-rate", "50",
                 "--input-len", "5", "--output-len", "4", "--result-json", str(out), "--endpoint", "chat"])
    summary = json.loads(out.read_text())
    assert code == 0 and summary["completed"] == 4 and summary["total_output_tokens"] == 16
    assert "Serving Benchmark Result" in capsys.readouterr().out
