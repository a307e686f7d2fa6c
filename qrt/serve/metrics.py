"""Server metrics in the Prometheus text exposition format (version 0.0.4), without a
client library: a few counters, histograms and gauges read at scrape time.

Names follow vLLM's where one exists (vllm:time_to_first_token_seconds ->
qrt_time_to_first_token_seconds), so dashboards translate directly.
"""
from __future__ import annotations

import bisect
import threading
from collections.abc import Callable

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0)


class Histogram:
    def __init__(self, name: str, help_text: str, buckets=LATENCY_BUCKETS):
        self.name, self.help, self.buckets = name, help_text, tuple(buckets)
        self.counts = [0] * (len(self.buckets) + 1)  # the last is +Inf
        self.sum, self.count = 0.0, 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        cum = 0
        for le, c in zip([*map(repr, self.buckets), "+Inf"], self.counts):
            cum += c
            lines.append(f'{self.name}_bucket{{le="{le}"}} {cum}')
        return lines + [f"{self.name}_sum {self.sum}", f"{self.name}_count {self.count}"]


class ServerMetrics:
    """Thread-safe: updated from the event loop, read by /metrics."""

    def __init__(self, gauges: dict[str, tuple[str, Callable[[], float]]] | None = None):
        self._lock = threading.Lock()
        self.requests: dict[str, int] = {}  # finish status -> count
        self.responses: dict[str, int] = {}  # HTTP status class ("2xx", "4xx", "5xx") -> count
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.ttft = Histogram("qrt_time_to_first_token_seconds", "Time from arrival to the first token.")
        self.tpot = Histogram("qrt_time_per_output_token_seconds", "Mean time between output tokens of a request.",
                              (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0))
        self.e2e = Histogram("qrt_e2e_request_latency_seconds", "Time from arrival to the last token.")
        self.gauges = gauges or {}

    def record(self, status: str, prompt_tokens: int = 0, output_tokens: int = 0, ttft: float | None = None,
               e2e: float | None = None) -> None:
        """One finished request. status: stop/length/abort/error, or rejected_<code>."""
        with self._lock:
            self.requests[status] = self.requests.get(status, 0) + 1
            self.prompt_tokens += prompt_tokens
            self.generation_tokens += output_tokens
            if ttft is not None:
                self.ttft.observe(ttft)
            if e2e is not None:
                self.e2e.observe(e2e)
                if ttft is not None and output_tokens > 1:
                    self.tpot.observe((e2e - ttft) / (output_tokens - 1))

    def record_http(self, status: int) -> None:
        """One HTTP response (every route, every error), by status class."""
        key = f"{status // 100}xx"
        with self._lock:
            self.responses[key] = self.responses.get(key, 0) + 1

    def render(self) -> str:
        with self._lock:
            lines = ["# HELP qrt_requests_total Requests by how they ended.", "# TYPE qrt_requests_total counter"]
            lines += [f'qrt_requests_total{{status="{k}"}} {v}' for k, v in sorted(self.requests.items())]
            lines += ["# HELP qrt_http_responses_total HTTP responses by status class.",
                      "# TYPE qrt_http_responses_total counter"]
            lines += [f'qrt_http_responses_total{{code="{k}"}} {v}' for k, v in sorted(self.responses.items())]
            lines += ["# HELP qrt_prompt_tokens_total Prompt tokens of admitted requests.",
                      "# TYPE qrt_prompt_tokens_total counter", f"qrt_prompt_tokens_total {self.prompt_tokens}",
                      "# HELP qrt_generation_tokens_total Generated tokens.",
                      "# TYPE qrt_generation_tokens_total counter",
                      f"qrt_generation_tokens_total {self.generation_tokens}"]
            for h in (self.ttft, self.tpot, self.e2e):
                lines += h.render()
        for name, (help_text, read) in self.gauges.items():
            value = read()
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name} {float(value or 0)}"]
        return "\n".join(lines) + "\n"
