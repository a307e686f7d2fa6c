"""Timers for the benchmarks: one sample = one pass over a rotation of input sets.

Why rotation: the H100's L2 is 50 MB and a W4 8192x8192 weight is 34 MB, so timing one
weight over and over measures the cache, not HBM. Each candidate gets enough weight copies
that one pass touches several times the last-level cache; the time per call is the pass
time over the number of calls. On CUDA the pass is captured once as a CUDA graph and
replayed (no launch gaps between small kernels, as in a graph-captured decode step);
`triton.testing.do_bench` (its own L2 flush, median) is recorded beside it as a check.
Candidates are sampled round-robin so that drift and noisy neighbours hit all alike.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

# one pass touches >= this many times the last-level cache (CUDA: the 50 MB L2 is small
# next to HBM traffic, so 4x; CPU: 2x the L3 already evicts, and copies cost RAM and time)
ROTATE_CACHE_MULTIPLE = {"cuda": 4, "cpu": 2}
MAX_COPIES = 64  # bench_kernels --quick lowers it: tiny smoke shapes need no cache defeat


def last_level_cache_bytes(device: torch.device) -> int:
    """L2 on CUDA; on CPU the L3 from sysfs (32 MiB if unreadable)."""
    if device.type == "cuda":
        return int(getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 50e6))
    best = 0
    try:
        from pathlib import Path
        for f in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
            txt = f.read_text().strip()
            mult = {"K": 2**10, "M": 2**20}.get(txt[-1], 1)
            best = max(best, int(txt.rstrip("KM")) * mult)
    except (OSError, ValueError):
        pass
    return best or 32 * 2**20


def rotation_count(bytes_per_set: int, device: torch.device) -> int:
    """How many input sets one timed pass cycles through (>= 1, <= MAX_COPIES)."""
    want = ROTATE_CACHE_MULTIPLE.get(device.type, 4) * last_level_cache_bytes(device)
    return max(1, min(MAX_COPIES, -(-want // max(1, bytes_per_set))))


class HostTimer:
    """CPU: wall clock around one pass (torch CPU ops are synchronous)."""

    method = "host_clock"

    def __init__(self, run_pass: Callable[[], None]):
        self.run_pass = run_pass
        run_pass()  # warm-up: first-call allocations and lazy repacks stay out of the numbers

    def sample_ms(self) -> float:
        t0 = time.perf_counter()
        self.run_pass()
        return (time.perf_counter() - t0) * 1e3


class CudaGraphTimer:
    """CUDA: capture one pass as a graph, time replays with events. Falls back to timing
    the eager pass with events (method 'cuda_events_eager') if capture fails."""

    def __init__(self, run_pass: Callable[[], None]):
        self.run_pass, self.graph, self.error = run_pass, None, None
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up off the capture stream, as torch.cuda.graphs asks
            run_pass()
            run_pass()
        torch.cuda.current_stream().wait_stream(side)
        torch.cuda.synchronize()
        try:
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g):
                run_pass()
            g.replay()
            torch.cuda.synchronize()
            self.graph = g
        except Exception as e:  # e.g. a host sync inside the pass; record why, time eagerly
            self.error = f"{type(e).__name__}: {e}"[:300]
            torch.cuda.synchronize()
        self.method = "cuda_graph" if self.graph is not None else "cuda_events_eager"

    def sample_ms(self) -> float:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        self.graph.replay() if self.graph is not None else self.run_pass()
        end.record()
        end.synchronize()
        return start.elapsed_time(end)


def make_timer(device: torch.device, run_pass: Callable[[], None]):
    return CudaGraphTimer(run_pass) if device.type == "cuda" else HostTimer(run_pass)


def interleaved_medians(timers: dict[str, object], rounds: int, min_round_s: float = 0.0) -> dict[str, float]:
    """Median pass time (ms) per timer, sampling the timers round-robin `rounds` times
    (more rounds while the total is under min_round_s * rounds, up to 4x)."""
    samples: dict[str, list[float]] = {k: [] for k in timers}
    t0, r = time.perf_counter(), 0
    while r < rounds or (time.perf_counter() - t0 < min_round_s * rounds and r < 4 * rounds):
        for k, t in timers.items():
            samples[k].append(t.sample_ms())
        r += 1
    return {k: statistics.median(v) for k, v in samples.items()}


def do_bench_ms(fn: Callable[[], object]) -> float | None:
    """triton.testing.do_bench median (it flushes L2 before each call); None off CUDA."""
    try:
        from triton.testing import do_bench
    except ImportError:
        return None
    return float(do_bench(fn, warmup=5, rep=25, return_mode="median"))


def copy_bandwidth_GBps(device: torch.device, nbytes: int | None = None, rounds: int = 10) -> float:
    """Measured device copy bandwidth: bytes read + bytes written per second (GB/s),
    dst.copy_(src) of a buffer much larger than the last-level cache."""
    nbytes = nbytes or (1 << 30 if device.type == "cuda" else 256 << 20)
    src = torch.randn(nbytes // 4, device=device)  # random, never zeros
    dst = torch.empty_like(src)
    timer = make_timer(device, lambda: dst.copy_(src))
    ms = interleaved_medians({"copy": timer}, rounds)["copy"]
    return 2 * nbytes / (ms * 1e-3) / 1e9
