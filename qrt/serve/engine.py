"""Engine: continuous batching with a paged KV cache, on transformers' own engine.

transformers' ContinuousBatchingManager owns the scheduler (FIFO, chunked prefill), the
paged KV cache (blocks of `page_size` tokens, a block table per request) and the
background generation thread. Measurement showed it serves qrt's QuantLinear models with
greedy outputs equal to one-at-a-time `generate` (bench/results/serve_engine_choice.json),
so we build on it and add what a server needs:
  - per-request sampling (temperature/top-p/top-k/seed) through `RequestSampler`;
  - detokenization and stop strings, finish reasons, per-token timestamps;
  - admission control (a bounded number of requests in flight -> QueueFullError);
  - abort (frees the request's cache blocks);
  - supervision: a watchdog thread checks the generation loop every WATCHDOG_INTERVAL_S. If
    the loop died (an exception, a killed thread, an incompatible transformers), every request
    in flight is failed at once (finish_reason "error", naming the cause) and the loop is
    restarted; after MAX_RESTARTS restarts within RESTART_WINDOW_S the engine gives up
    (`health()` says why, new requests raise EngineDeadError, `on_fatal` is called).
Outputs reach each request's `sink` callback on the generation or the watchdog thread.
All of transformers' unstable internals are reached through qrt.serve.cb_compat.
"""
from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import count

import torch
from transformers import GenerationConfig

from qrt.serve import attention, cb_compat
from qrt.serve.config import EngineConfig
from qrt.serve.detok import TextTracker
from qrt.serve.outputs import CompletionOutput, RequestMetrics, RequestOutput
from qrt.serve.sampler import RequestSampler
from qrt.serve.sampling import SamplingParams

log = logging.getLogger("qrt.serve")
Sink = Callable[[RequestOutput], None]
WATCHDOG_INTERVAL_S = 0.2  # how often the loop's liveness is checked: failures surface within ~0.5 s
MAX_RESTARTS, RESTART_WINDOW_S = 3, 60.0  # more restarts than this within the window: give up


class QueueFullError(RuntimeError):
    """The engine already holds as many requests as it admits (running + waiting)."""


class EngineDeadError(RuntimeError):
    """The generation loop died and the engine gave up restarting it (or was stopped)."""


@dataclass
class _Request:
    request_id: str
    prompt: str | None
    prompt_ids: list[int]
    params: SamplingParams
    text: TextTracker
    sink: Sink
    metrics: RequestMetrics
    token_ids: list[int] = field(default_factory=list)
    finished: bool = False  # set once, under the engine lock: a request gets one final output


class Engine:
    def __init__(self, model: torch.nn.Module, tokenizer, config: EngineConfig | None = None):
        self.model, self.tokenizer = model.eval(), tokenizer
        self.config = config or EngineConfig()
        self.max_model_len = self.config.resolve_max_model_len(model.config)
        dtype_bytes = torch.finfo(model.dtype).bits // 8
        self.num_blocks = self.config.resolve_num_blocks(model.config, dtype_bytes, self.max_model_len)
        self.eos_token_ids = _eos_ids(model, tokenizer)
        self._requests: dict[str, _Request] = {}
        self._lock = threading.Lock()
        self._ids = count()
        self._manager = None
        self._stopping = False
        self._orig_attn: str | None = None  # the model's attention before the engine switched it
        self._restarts: list[float] = []  # start times of the loop's restarts (not the first start)
        self._watchdog: threading.Thread | None = None
        self._wake = threading.Event()  # set to stop the watchdog
        self.last_error: str | None = None  # why the loop last died
        self.failed: str | None = None  # set when the engine gave up: why
        self.on_fatal: Callable[[str], None] | None = None  # called once when the engine gives up

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> "Engine":
        """Start the generation loop and its watchdog. EngineDeadError if the engine gave up."""
        with self._lock:
            if self.failed is not None:
                raise EngineDeadError(f"the engine failed and stays down: {self.failed}")
            if not self.is_running:
                self._start_locked()
            if self._watchdog is None or not self._watchdog.is_alive():
                self._wake.clear()
                self._watchdog = threading.Thread(target=self._watch, name="qrt-engine-watchdog", daemon=True)
                self._watchdog.start()
        return self

    def _start_locked(self) -> None:
        if self._manager is not None:  # a dead loop: count the restart, stop it (restores attention settings)
            now = time.monotonic()
            self._restarts = [t for t in self._restarts if now - t < RESTART_WINDOW_S] + [now]
            if len(self._restarts) > MAX_RESTARTS:
                raise EngineDeadError(f"the generation loop died {len(self._restarts)} times within "
                                      f"{RESTART_WINDOW_S:.0f} s; last error: {self.last_error}")
            self._manager.stop(block=True, timeout=5)
            self._manager = None
        if self._orig_attn is None:
            self._orig_attn = self.model.config._attn_implementation
        self.model.set_attn_implementation("sdpa")  # what transformers' CB accepts on a CPU
        gen = GenerationConfig(do_sample=False, max_new_tokens=16, eos_token_id=self.eos_token_ids or -1,
                               pad_token_id=self.tokenizer.pad_token_id or 0)
        cb = cb_compat.ContinuousBatchingConfig(
            page_size=self.config.page_size, num_blocks=self.num_blocks,
            max_batch_tokens=self.config.max_batch_tokens, max_requests_per_batch=self.config.max_num_seqs,
            allow_block_sharing=self.config.prefix_caching, use_async_batching=False, use_cuda_graph=False,
            auto_switch_to_flash=False, seed=0)
        manager = self.model.init_continuous_batching(generation_config=gen, continuous_batching_config=cb)
        if self.config.batch_invariant:  # set after CB's checks, read when its loop builds the batch processor
            self.model.set_attn_implementation(attention.register())
        cb_compat.add_logits_processor(manager, RequestSampler())
        cb_compat.route_outputs(manager, self._deliver)
        if self.config.num_threads:  # torch's intra-op thread count is process-wide (the loop's thread sees it)
            torch.set_num_threads(self.config.num_threads)
        manager.start()
        self._manager = manager

    def stop(self) -> None:
        """Abort what is in flight and stop the generation thread and the watchdog."""
        self._stopping = True
        self._wake.set()
        for rid in list(self._requests):
            self.abort(rid)
        if self._watchdog is not None:
            self._watchdog.join(timeout=5)
        if self._manager is not None:
            self._manager.stop(block=True, timeout=10)
            self._manager.destroy()
            self._manager = None
        if self._orig_attn is not None:
            self.model.set_attn_implementation(self._orig_attn)
            self._orig_attn = None

    @property
    def is_running(self) -> bool:
        """The generation loop is alive and accepts requests. A loop that hit a fatal error
        stays alive for a moment while it fails its requests; a request added then would be
        dropped or failed with the old error, so it counts as not running (-> restart)."""
        m = self._manager
        return m is not None and cb_compat.accepts_requests(m)

    def health(self) -> str | None:
        """None when the engine can serve; otherwise why not (for /health and callers that wait)."""
        if self._stopping:
            return "shutting down"
        if self.failed is not None:
            return f"engine failed: {self.failed}"
        if self._manager is not None and (self._watchdog is None or not self._watchdog.is_alive()):
            return "the engine's watchdog thread is not running"
        if self._manager is not None and not self.is_running:
            return f"generation loop down, restarting (last error: {self.last_error})"
        return None

    def is_dead(self) -> bool:
        """True when nothing will finish the requests in flight: the engine gave up, was stopped,
        or its watchdog is gone. Waiters use this as their liveness check."""
        watchdog_gone = self._manager is not None and (self._watchdog is None or not self._watchdog.is_alive())
        return self._stopping or self.failed is not None or watchdog_gone

    # -- supervision (watchdog thread) ------------------------------------------------------
    def _watch(self) -> None:
        try:
            while not self._wake.wait(WATCHDOG_INTERVAL_S):
                self._check_loop()
        except BaseException as e:  # the watchdog itself must not die silently
            log.exception("engine watchdog failed")
            self._give_up(f"watchdog failed: {type(e).__name__}: {e}")

    def _check_loop(self) -> None:
        """If the loop died: fail every request in flight, then restart it (or give up)."""
        with self._lock:
            if self._stopping or self.failed is not None or self._manager is None or self.is_running:
                return
            cause = cb_compat.fatal_error(self._manager)
            self.last_error = (f"{type(cause).__name__}: {cause}" if cause is not None
                               else "the generation thread exited")
        log.error("generation loop died (%s); failing the requests in flight and restarting", self.last_error)
        self._fail_in_flight(f"generation loop died: {self.last_error}")
        with self._lock:
            if self._stopping or self.failed is not None:
                return
            try:
                self._start_locked()
                return
            except Exception as e:
                reason = str(e) if isinstance(e, EngineDeadError) else f"restart failed: {type(e).__name__}: {e}"
        self._give_up(reason)

    def _give_up(self, reason: str) -> None:
        """Stay down for good: fail what is in flight, refuse new requests, tell `on_fatal` (once)."""
        with self._lock:
            first, self.failed = self.failed is None, self.failed or reason
        log.error("engine gave up: %s", reason)
        self._fail_in_flight(f"engine failed: {reason}")
        if first and self.on_fatal is not None:
            self.on_fatal(reason)

    def _fail_in_flight(self, error: str) -> None:
        with self._lock:
            reqs = list(self._requests.values())
            self._requests.clear()
        for req in reqs:
            self._finish(req, "error", error=error)

    # -- requests ---------------------------------------------------------------------------
    def check_prompt(self, prompt_ids: list[int], params: SamplingParams) -> None:
        """ValueError unless the prompt and max_tokens fit the context."""
        if not prompt_ids:
            raise ValueError("prompt: expected at least one token, found an empty prompt")
        if len(prompt_ids) + params.max_tokens > self.max_model_len:
            raise ValueError(f"prompt: {len(prompt_ids)} prompt tokens + max_tokens {params.max_tokens} exceed "
                             f"the context limit of {self.max_model_len} tokens")

    def add_request(self, prompt_ids: list[int], params: SamplingParams, sink: Sink,
                    prompt: str | None = None, request_id: str | None = None) -> str:
        """Queue a request; `sink` gets a RequestOutput after each new token and at the end.
        Raises ValueError (bad prompt), QueueFullError (at capacity), EngineDeadError (stopped or failed)."""
        self.check_prompt(prompt_ids, params)
        rid = request_id or f"req-{next(self._ids)}"
        req = _Request(rid, prompt, list(prompt_ids), params, TextTracker(self.tokenizer, params.stop), sink,
                       RequestMetrics(arrival_time=time.perf_counter()))
        with self._lock:
            if self._stopping:
                raise EngineDeadError("the engine is shutting down")
            if self.failed is not None:
                raise EngineDeadError(f"the engine failed and stays down: {self.failed}")
            if len(self._requests) >= self.config.max_num_seqs + self.config.max_waiting:
                raise QueueFullError(f"{len(self._requests)} requests in flight; the engine admits at most "
                                     f"{self.config.max_num_seqs + self.config.max_waiting}")
            if rid in self._requests:
                raise ValueError(f"request_id: {rid!r} is already in flight")
            restart_error = None
            if not self.is_running:
                try:
                    self._start_locked()
                except EngineDeadError as e:
                    restart_error = e
            if restart_error is None:
                self._requests[rid] = req
                self._manager.add_request(req.prompt_ids, request_id=rid, max_new_tokens=params.max_tokens,
                                          streaming=True, eos_token_id=[] if params.ignore_eos else self.eos_token_ids,
                                          **_sampler_kwargs(params))
        if restart_error is not None:
            self._give_up(str(restart_error))
            raise restart_error
        return rid

    def abort(self, request_id: str) -> None:
        """Cancel a request (its blocks are freed on the next engine step); its sink gets a
        final output with finish_reason "abort". Unknown or finished ids are ignored."""
        with self._lock:
            req = self._requests.pop(request_id, None)
        if req is None:
            return
        if self._manager is not None:
            self._manager.cancel_request(request_id)
        self._finish(req, "abort")

    # -- introspection ----------------------------------------------------------------------
    def num_requests(self) -> tuple[int, int]:
        """(waiting, running): admitted requests without / with a generated token."""
        with self._lock:
            reqs = list(self._requests.values())
        waiting = sum(1 for r in reqs if not r.token_ids)
        return waiting, len(reqs) - waiting

    def free_blocks(self) -> int | None:
        """Free KV-cache blocks (None before the first request built the cache). Blocks a
        finished request left cached for prefix reuse count as free: the cache evicts them
        as soon as a live request needs room."""
        m = self._manager
        return None if m is None else cb_compat.free_blocks(m)

    # -- generation-thread side -------------------------------------------------------------
    def _deliver(self, outputs) -> None:
        for out in outputs:
            with self._lock:
                req = self._requests.get(out.request_id)
            if req is None:  # aborted meanwhile
                continue
            try:
                self._update(req, out)
            except Exception as e:  # a broken sink or tokenizer fails this request only
                log.exception("request %s failed in output handling", req.request_id)
                self._drop(req.request_id)
                self._finish(req, "error", error=f"{type(e).__name__}: {e}")

    def _update(self, req: _Request, out) -> None:
        if out.error is not None:
            self._drop(req.request_id)
            return self._finish(req, "error", error=out.error)
        now = time.perf_counter()
        new = len(out.generated_tokens) - len(req.token_ids)
        req.metrics.token_times.extend([now] * new)
        if req.metrics.first_token_time is None and new > 0:
            req.metrics.first_token_time = now
        req.token_ids = list(out.generated_tokens)
        if req.text.update(req.token_ids):
            self._drop(req.request_id)
            self._manager.cancel_request(req.request_id)
            return self._finish(req, "stop")
        if out.is_finished():
            self._drop(req.request_id)
            hit_eos = req.token_ids and req.token_ids[-1] in self.eos_token_ids and not req.params.ignore_eos
            return self._finish(req, "stop" if hit_eos else "length")
        req.sink(_snapshot(req, None))

    def _drop(self, request_id: str) -> None:
        with self._lock:
            self._requests.pop(request_id, None)

    def _finish(self, req: _Request, reason: str, error: str | None = None) -> None:
        """The request's final output; only the first call for a request delivers one (the loop,
        an abort and the watchdog may race to finish the same request)."""
        with self._lock:
            if req.finished:
                return
            req.finished = True
        req.metrics.finished_time = time.perf_counter()
        req.sink(_snapshot(req, reason, error))


def _snapshot(req: _Request, finish_reason: str | None, error: str | None = None) -> RequestOutput:
    done = finish_reason is not None
    comp = CompletionOutput(0, req.text.visible(done), list(req.token_ids), finish_reason)
    return RequestOutput(req.request_id, req.prompt, req.prompt_ids, [comp], done, req.metrics, error)


def _sampler_kwargs(p: SamplingParams) -> dict:
    if p.greedy:
        return {"temperature": 0.0}
    seed = p.seed if p.seed is not None else random.getrandbits(63)
    return {"temperature": float(p.temperature), "top_p": float(p.top_p), "top_k": int(p.top_k), "seed": seed}


def _eos_ids(model, tokenizer) -> list[int]:
    ids = getattr(model.generation_config, "eos_token_id", None)
    if ids is None:
        ids = tokenizer.eos_token_id
    ids = [] if ids is None else [ids] if isinstance(ids, int) else list(ids)
    return [i for i in ids if i is not None and i >= 0]
