"""Engine: the serving side of qrt's own continuous-batching engine (qrt.engine.LLMEngine).

LLMEngine owns the scheduler (continuous batching, chunked prefill, preemption), the paged
KV cache and the decoder; it is driven by one generation thread here. This class adds what
a server needs around it:
  - a thread-safe front: add_request / abort from any thread go through a queue that the
    generation thread drains before each step (LLMEngine itself is single-threaded);
  - detokenization and stop strings, finish reasons, per-token timestamps, `sink` callbacks;
  - admission control (a bounded number of requests in flight -> QueueFullError);
  - supervision: if a step raises, the generation thread records the cause and exits; a
    watchdog thread checks it every WATCHDOG_INTERVAL_S, fails every request in flight at once
    (finish_reason "error", naming the cause) and restarts the loop with a fresh KV cache;
    after MAX_RESTARTS restarts within RESTART_WINDOW_S the engine gives up (`health()` says
    why, new requests raise EngineDeadError, `on_fatal` is called).
Outputs reach each request's `sink` on the generation or the watchdog thread.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from itertools import count

import torch

from qrt.engine.llm_engine import LLMEngine
from qrt.engine.models import check_supported
from qrt.engine.scheduler import SchedulerConfig
from qrt.serve.config import EngineConfig
from qrt.serve.detok import TextTracker
from qrt.serve.outputs import RequestMetrics
from qrt.serve.request_state import ServeRequest, Sink, eos_ids, snapshot
from qrt.serve.sampling import SamplingParams

log = logging.getLogger("qrt.serve")
WATCHDOG_INTERVAL_S = 0.2  # how often the loop's liveness is checked: failures surface within ~0.5 s
MAX_RESTARTS, RESTART_WINDOW_S = 3, 60.0  # more restarts than this within the window: give up
IDLE_WAIT_S = 0.05  # an idle generation thread sleeps at most this long between checks


class QueueFullError(RuntimeError):
    """The engine already holds as many requests as it admits (running + waiting)."""


class EngineDeadError(RuntimeError):
    """The generation loop died and the engine gave up restarting it (or was stopped)."""


class Engine:
    def __init__(self, model: torch.nn.Module, tokenizer, config: EngineConfig | None = None):
        check_supported(model)  # UnsupportedModelError naming the supported architectures
        self.model, self.tokenizer = model.eval(), tokenizer
        self.config = config or EngineConfig()
        self.max_model_len = self.config.resolve_max_model_len(model.config)
        dtype_bytes = torch.finfo(model.dtype).bits // 8
        self.num_blocks = self.config.resolve_num_blocks(model.config, dtype_bytes, self.max_model_len)
        self.eos_token_ids = eos_ids(model, tokenizer)
        self._requests: dict[str, ServeRequest] = {}
        self._lock = threading.Lock()
        self._work = threading.Event()  # set when requests or aborts are queued for the loop
        self._adds: deque[ServeRequest] = deque()
        self._aborts: deque[str] = deque()
        self._ids = count()
        self._core: LLMEngine | None = None
        self._thread: threading.Thread | None = None
        self._loop_error: BaseException | None = None
        self._stopping = False
        self._restarts: list[float] = []  # start times of the loop's restarts (not the first start)
        self._watchdog: threading.Thread | None = None
        self._wake = threading.Event()  # set to stop the loop and the watchdog
        self.last_error: str | None = None  # why the loop last died
        self.failed: str | None = None  # set when the engine gave up: why
        self.on_fatal: Callable[[str], None] | None = None  # called once when the engine gives up

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> "Engine":
        """Start the generation loop and its watchdog. EngineDeadError if the engine gave up."""
        with self._lock:
            if self.failed is not None:
                raise EngineDeadError(f"the engine failed and stays down: {self.failed}")
            if self._thread is None:  # a loop that died is restarted by the watchdog, never twice
                self._start_locked()
            if self._watchdog is None or not self._watchdog.is_alive():
                self._watchdog = threading.Thread(target=self._watch, name="qrt-engine-watchdog", daemon=True)
                self._watchdog.start()
        return self

    def _start_locked(self) -> None:
        """A fresh LLMEngine (scheduler and KV cache) and generation thread; counts restarts."""
        if self._thread is not None:
            now = time.monotonic()
            self._restarts = [t for t in self._restarts if now - t < RESTART_WINDOW_S] + [now]
            if len(self._restarts) > MAX_RESTARTS:
                raise EngineDeadError(f"the generation loop died {len(self._restarts)} times within "
                                      f"{RESTART_WINDOW_S:.0f} s; last error: {self.last_error}")
        c = self.config
        sched = SchedulerConfig(num_blocks=self.num_blocks, page_size=c.page_size, max_num_seqs=c.max_num_seqs,
                                max_batch_tokens=c.max_batch_tokens, max_model_len=self.max_model_len,
                                enable_prefix_caching=c.prefix_caching)
        self._core = LLMEngine(self.model, sched, self.eos_token_ids, attention=_attention(c, self.model))
        self._adds.clear(), self._aborts.clear()
        self._loop_error = None
        self._thread = threading.Thread(target=self._loop, args=(self._core,), name="qrt-engine-loop", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Abort what is in flight and stop the generation thread and the watchdog."""
        self._stopping = True
        self._wake.set()
        self._work.set()
        for rid in list(self._requests):
            self.abort(rid)
        for t in (self._watchdog, self._thread):
            if t is not None and t is not threading.current_thread():
                t.join(timeout=10)
        self._core = None

    @property
    def is_running(self) -> bool:
        """The generation thread is alive (it exits when a step raises)."""
        t = self._thread
        return t is not None and t.is_alive() and not self._stopping

    def health(self) -> str | None:
        """None when the engine can serve; otherwise why not (for /health and callers that wait)."""
        if self._stopping:
            return "shutting down"
        if self.failed is not None:
            return f"engine failed: {self.failed}"
        if self._thread is not None and (self._watchdog is None or not self._watchdog.is_alive()):
            return "the engine's watchdog thread is not running"
        if self._thread is not None and not self.is_running:
            return f"generation loop down, restarting (last error: {self.last_error})"
        return None

    def is_dead(self) -> bool:
        """True when nothing will finish the requests in flight: the engine gave up, was stopped,
        or its watchdog is gone. Waiters use this as their liveness check."""
        watchdog_gone = self._thread is not None and (self._watchdog is None or not self._watchdog.is_alive())
        return self._stopping or self.failed is not None or watchdog_gone

    # -- generation thread ------------------------------------------------------------------
    def _loop(self, core: LLMEngine) -> None:
        if self.config.num_threads:  # OpenMP's thread count is per thread: set it where the work runs
            torch.set_num_threads(self.config.num_threads)
        try:
            while not self._wake.is_set():
                self._drain(core)
                if not core.has_unfinished():
                    self._work.wait(IDLE_WAIT_S)
                    self._work.clear()
                    continue
                for out in core.step():
                    self._deliver(core, out)
        except BaseException as e:  # recorded for the watchdog, which fails the requests and restarts
            self._loop_error = e
            log.exception("generation loop failed")
            if not isinstance(e, Exception):
                raise

    def _drain(self, core: LLMEngine) -> None:
        """Move queued adds and aborts into the LLMEngine (generation thread only)."""
        with self._lock:
            adds, aborts = list(self._adds), list(self._aborts)
            self._adds.clear(), self._aborts.clear()
        for rid in aborts:
            core.abort_request(rid)
        for req in adds:
            if not req.finished:
                core.add_request(req.request_id, req.prompt_ids, req.params)

    def _deliver(self, core: LLMEngine, out) -> None:
        with self._lock:
            req = self._requests.get(out.request_id)
        if req is None:  # aborted meanwhile
            core.abort_request(out.request_id)
            return
        try:
            self._update(core, req, out)
        except Exception as e:  # a broken sink or tokenizer fails this request only
            log.exception("request %s failed in output handling", req.request_id)
            core.abort_request(req.request_id)
            self._drop(req.request_id)
            self._finish(req, "error", error=f"{type(e).__name__}: {e}")

    def _update(self, core: LLMEngine, req: ServeRequest, out) -> None:
        if out.new_token is None:
            return
        now = time.perf_counter()
        req.metrics.token_times.append(now)
        if req.metrics.first_token_time is None:
            req.metrics.first_token_time = now
        req.token_ids.append(out.new_token)
        if req.text.update(req.token_ids):
            core.abort_request(req.request_id)
            self._drop(req.request_id)
            return self._finish(req, "stop")
        if out.finished:
            self._drop(req.request_id)
            return self._finish(req, out.finish_reason)
        req.sink(snapshot(req, None))

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
            if self._stopping or self.failed is not None or self._thread is None or self.is_running:
                return
            cause = self._loop_error
            self.last_error = f"{type(cause).__name__}: {cause}" if cause is not None else "the generation thread exited"
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
        req = ServeRequest(rid, prompt, list(prompt_ids), params, TextTracker(self.tokenizer, params.stop), sink,
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
            if self._thread is None:  # never started: start now (a dead loop is the watchdog's to restart)
                self._start_locked()
            self._requests[rid] = req
            self._adds.append(req)
        self._work.set()
        return rid

    def abort(self, request_id: str) -> None:
        """Cancel a request (its blocks are freed before the next engine step); its sink gets a
        final output with finish_reason "abort". Unknown or finished ids are ignored."""
        with self._lock:
            req = self._requests.pop(request_id, None)
            if req is not None:
                self._aborts.append(request_id)
        if req is None:
            return
        self._work.set()
        self._finish(req, "abort")

    # -- introspection ----------------------------------------------------------------------
    def num_requests(self) -> tuple[int, int]:
        """(waiting, running): admitted requests without / with a generated token."""
        with self._lock:
            reqs = list(self._requests.values())
        waiting = sum(1 for r in reqs if not r.token_ids)
        return waiting, len(reqs) - waiting

    def free_blocks(self) -> int | None:
        """Free KV-cache blocks (None before the first start). Blocks a finished request left
        cached for prefix reuse count as free: they are reused as soon as a request needs room."""
        core = self._core
        return None if core is None else core.num_free_blocks

    def _drop(self, request_id: str) -> None:
        with self._lock:
            self._requests.pop(request_id, None)

    def _finish(self, req: ServeRequest, reason: str, error: str | None = None) -> None:
        """The request's final output; only the first call for a request delivers one (the loop,
        an abort and the watchdog may race to finish the same request)."""
        with self._lock:
            if req.finished:
                return
            req.finished = True
        req.metrics.finished_time = time.perf_counter()
        req.sink(snapshot(req, reason, error))


def _attention(config: EngineConfig, model: torch.nn.Module):
    """batch_invariant on the CPU: attention in float64 (each sequence's rounding cannot depend
    on how its prompt was chunked); otherwise the device's default (torch on CPU, Triton on CUDA)."""
    if config.batch_invariant and next(model.parameters()).device.type == "cpu":
        from qrt.engine.attention import paged_attention_reference
        return paged_attention_reference
    return None
