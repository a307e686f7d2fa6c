"""Load generator for an OpenAI-compatible server, in the style of vLLM's benchmark_serving.

Requests arrive as a Poisson process (burstiness 1), a gamma process (other burstiness), or
all at once (rate inf), optionally capped at max_concurrency in flight. Every request
streams, so each one yields its time to first token (TTFT), the gaps between later chunks
(ITL), time per output token after the first (TPOT) and end-to-end latency (E2EL);
`qrt.serve.bench_report` turns them into the summary. Only loopback servers are accepted,
and counts and time are bounded.
"""
from __future__ import annotations

import asyncio
import ipaddress
import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

MAX_PROMPTS = 10_000
MAX_CONCURRENCY = 1024
WORDS = ("time year people way day man thing woman life child world school state family student group "
         "country problem hand part place case week company system program question work government number "
         "night point home water room mother area money story fact month lot right study book eye job word "
         "business issue side kind head house service friend father power hour game line end member law car "
         "city community name president team minute idea kid body information back parent face others level "
         "office door health person art war history party result change morning reason research girl guy "
         "moment air teacher force education").split()


@dataclass(frozen=True)
class LoadSpec:
    """base_url: the server root (http://127.0.0.1:PORT). endpoint: "completions" or "chat".
    request_rate: requests/s (math.inf: all at t=0). burstiness: gamma shape of the gaps
    (1 = Poisson; lower = burstier). input_len/output_len: random prompts' words and
    max_tokens. max_duration_s: requests still running then are cancelled (and fail)."""

    base_url: str
    num_prompts: int = 100
    request_rate: float = math.inf
    burstiness: float = 1.0
    max_concurrency: int | None = None
    endpoint: str = "completions"
    input_len: int = 32
    output_len: int = 16
    dataset_path: str | None = None
    model: str | None = None
    seed: int = 0
    ignore_eos: bool = True
    max_duration_s: float = 600.0

    def __post_init__(self):
        check_loopback(self.base_url)
        _require(1 <= self.num_prompts <= MAX_PROMPTS, "num_prompts", f"1..{MAX_PROMPTS}", self.num_prompts)
        _require(self.request_rate > 0, "request_rate", "> 0 (inf for a burst)", self.request_rate)
        _require(self.burstiness > 0, "burstiness", "> 0", self.burstiness)
        _require(self.max_concurrency is None or 1 <= self.max_concurrency <= MAX_CONCURRENCY, "max_concurrency",
                 f"None or 1..{MAX_CONCURRENCY}", self.max_concurrency)
        _require(self.endpoint in ("completions", "chat"), "endpoint", "'completions' or 'chat'", self.endpoint)
        _require(self.input_len >= 1 and self.output_len >= 1, "input_len/output_len", ">= 1",
                 (self.input_len, self.output_len))
        _require(0 < self.max_duration_s <= 24 * 3600, "max_duration_s", "in (0, 86400]", self.max_duration_s)


@dataclass
class RequestResult:
    success: bool = False
    prompt_tokens: int = 0
    output_tokens: int = 0
    ttft: float = 0.0
    latency: float = 0.0
    itl: list[float] = field(default_factory=list)
    text: str = ""
    error: str = ""


def _require(cond: bool, name: str, expected: str, found) -> None:
    if not cond:
        raise ValueError(f"invalid load setting '{name}': expected {expected}, found {found!r}")


def check_loopback(url: str) -> None:
    """ValueError unless url is http(s) on a loopback address (127.0.0.0/8, ::1, localhost)."""
    u = urlparse(url)
    host = u.hostname or ""
    try:
        ok = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        ok = False
    if u.scheme not in ("http", "https") or not ok:
        raise ValueError(f"base_url: expected http://127.0.0.1:PORT or another loopback address, found {url!r}")


def make_prompts(spec: LoadSpec) -> list[str]:
    """num_prompts prompts: lines (or jsonl "prompt" fields) of dataset_path, cycled; or
    random sentences of input_len common words (about one token each)."""
    rng = random.Random(spec.seed)
    if spec.dataset_path:
        lines = [ln for ln in Path(spec.dataset_path).read_text().splitlines() if ln.strip()]
        texts = [json.loads(ln)["prompt"] if ln.lstrip().startswith("{") else ln for ln in lines]
        if not texts:
            raise ValueError(f"dataset_path: expected non-empty lines in {spec.dataset_path}, found none")
        return [texts[i % len(texts)] for i in range(spec.num_prompts)]
    return [" ".join(rng.choice(WORDS) for _ in range(spec.input_len)) for _ in range(spec.num_prompts)]


def arrival_times(spec: LoadSpec) -> list[float]:
    """Send offsets in seconds from the start, non-decreasing."""
    if math.isinf(spec.request_rate):
        return [0.0] * spec.num_prompts
    rng = random.Random(spec.seed + 1)
    theta = 1.0 / (spec.request_rate * spec.burstiness)  # gamma scale: mean gap = 1 / rate
    t, out = 0.0, []
    for _ in range(spec.num_prompts):
        out.append(t)
        t += rng.gammavariate(spec.burstiness, theta)
    return out


def request_body(spec: LoadSpec, model: str, prompt: str) -> tuple[str, dict]:
    common = {"model": model, "max_tokens": spec.output_len, "temperature": 0.0, "stream": True,
              "stream_options": {"include_usage": True}, "ignore_eos": spec.ignore_eos}
    if spec.endpoint == "chat":
        return "/v1/chat/completions", {**common, "messages": [{"role": "user", "content": prompt}]}
    return "/v1/completions", {**common, "prompt": prompt}


async def send_one(client, spec: LoadSpec, model: str, prompt: str) -> RequestResult:
    """Stream one request and time its chunks."""
    path, body = request_body(spec, model, prompt)
    res, start = RequestResult(), time.perf_counter()
    last = start
    try:
        async with client.stream("POST", spec.base_url.rstrip("/") + path, json=body) as r:
            if r.status_code != 200:
                res.error = f"HTTP {r.status_code}: {(await r.aread()).decode(errors='replace')[:200]}"
                return res
            async for line in r.aiter_lines():
                if not line.startswith("data: "):
                    continue
                data = line[6:]
                if data == "[DONE]":
                    res.success = True
                    break
                chunk = json.loads(data)
                if "error" in chunk:
                    res.error = chunk["error"].get("message", "error")
                    break
                if chunk.get("usage"):
                    res.prompt_tokens = chunk["usage"]["prompt_tokens"]
                    res.output_tokens = chunk["usage"]["completion_tokens"]
                for ch in chunk.get("choices", []):
                    piece = ch.get("text") or (ch.get("delta") or {}).get("content") or ""
                    if piece:
                        now = time.perf_counter()
                        if not res.text:
                            res.ttft = now - start
                        else:
                            res.itl.append(now - last)
                        last, res.text = now, res.text + piece
    except Exception as e:  # network errors count as failed requests, the run goes on
        res.error = f"{type(e).__name__}: {e}"
    res.latency = time.perf_counter() - start
    res.success = res.success and not res.error
    return res


async def run_load(spec: LoadSpec, progress: bool = True) -> tuple[list[RequestResult], float]:
    """Send every request of `spec`; returns (per-request results in send order, duration s)."""
    import httpx
    from tqdm.auto import tqdm
    prompts, offsets = make_prompts(spec), arrival_times(spec)
    limit = spec.max_concurrency or spec.num_prompts
    async with httpx.AsyncClient(timeout=httpx.Timeout(spec.max_duration_s),
                                 limits=httpx.Limits(max_connections=limit, max_keepalive_connections=limit)) as client:
        model = spec.model or await _served_model(client, spec.base_url)
        gate, bar = asyncio.Semaphore(limit), tqdm(total=spec.num_prompts, disable=not progress, unit="req")
        start = time.perf_counter()

        async def one(i: int) -> RequestResult:
            await asyncio.sleep(max(0.0, start + offsets[i] - time.perf_counter()))
            async with gate:
                r = await send_one(client, spec, model, prompts[i])
            bar.update(1)
            return r

        tasks = [asyncio.create_task(one(i)) for i in range(spec.num_prompts)]
        done, pending = await asyncio.wait(tasks, timeout=spec.max_duration_s)
        for t in pending:
            t.cancel()
        duration = time.perf_counter() - start
        bar.close()
    return [t.result() if t in done else RequestResult(error="cancelled: max_duration_s reached")
            for t in tasks], duration


async def _served_model(client, base_url: str) -> str:
    r = await client.get(base_url.rstrip("/") + "/v1/models")
    r.raise_for_status()
    return r.json()["data"][0]["id"]
