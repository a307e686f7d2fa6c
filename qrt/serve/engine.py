"""Engine: continuous batching with a paged KV cache, on transformers' own engine.

transformers' ContinuousBatchingManager owns the scheduler (FIFO, chunked prefill), the
paged KV cache (blocks of `page_size` tokens, a block table per request) and the
background generation thread. Measurement showed it serves qrt's QuantLinear models with
greedy outputs equal to one-at-a-time `generate` (bench/results/serve_engine_choice.json),
so we build on it and add what a server needs:
  - per-request sampling (temperature/top-p/top-k/seed) through `RequestSampler`;
  - detokenization and stop strings, finish reasons, per-token timestamps;
  - admission control (a bounded number of requests in flight -> QueueFullError);
  - abort (frees the request's cache blocks), and a restart if the loop ever dies.
Outputs reach each request's `sink` callback on the generation thread.
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
from transformers.generation.configuration_utils import ContinuousBatchingConfig

from qrt.serve import attention
from qrt.serve.config import EngineConfig
from qrt.serve.detok import TextTracker
from qrt.serve.outputs import CompletionOutput, RequestMetrics, RequestOutput
from qrt.serve.sampler import RequestSampler
from qrt.serve.sampling import SamplingParams

log = logging.getLogger("qrt.serve")
Sink = Callable[[RequestOutput], None]


class QueueFullError(RuntimeError):
    """The engine already holds as many requests as it admits (running + waiting)."""


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


class _Router:
    """Stands in for transformers' OutputRouter: every output goes to the engine."""

    def __init__(self, deliver: Callable):
        self._deliver = deliver

    def deliver(self, output) -> None:
        self._deliver([output])

    def deliver_batch(self, outputs) -> None:
        self._deliver(outputs)

    def fail_and_deliver(self, state, error: Exception) -> None:
        from transformers.generation.continuous_batching.requests import RequestStatus
        state.status, state.error = RequestStatus.FAILED, str(error)
        self._deliver([state.to_generation_output()])


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

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> "Engine":
        with self._lock:
            self._start_locked()
        return self

    def _start_locked(self) -> None:
        if self._manager is not None:
            self._manager.stop(block=True, timeout=5)  # a dead loop: restores attention settings
        if self._orig_attn is None:
            self._orig_attn = self.model.config._attn_implementation
        self.model.set_attn_implementation("sdpa")  # what transformers' CB accepts on a CPU
        gen = GenerationConfig(do_sample=False, max_new_tokens=16, eos_token_id=self.eos_token_ids or -1,
                               pad_token_id=self.tokenizer.pad_token_id or 0)
        cb = ContinuousBatchingConfig(
            page_size=self.config.page_size, num_blocks=self.num_blocks,
            max_batch_tokens=self.config.max_batch_tokens, max_requests_per_batch=self.config.max_num_seqs,
            allow_block_sharing=self.config.prefix_caching, use_async_batching=False, use_cuda_graph=False,
            auto_switch_to_flash=False, seed=0)
        manager = self.model.init_continuous_batching(generation_config=gen, continuous_batching_config=cb)
        if self.config.batch_invariant:  # set after CB's checks, read when its loop builds the batch processor
            self.model.set_attn_implementation(attention.register())
        _add_processor(manager.logit_processor, RequestSampler())
        manager.output_router = _Router(self._deliver)
        _pin_threads(manager, self.config.num_threads or torch.get_num_threads())
        manager.start()
        self._manager = manager

    def stop(self) -> None:
        """Abort what is in flight and stop the generation thread."""
        self._stopping = True
        for rid in list(self._requests):
            self.abort(rid)
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
        return m is not None and m.is_running() and m.background_thread_status.can_accept_new_requests() is None

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
        Raises ValueError (bad prompt), QueueFullError (at capacity), RuntimeError (stopped)."""
        self.check_prompt(prompt_ids, params)
        rid = request_id or f"req-{next(self._ids)}"
        req = _Request(rid, prompt, list(prompt_ids), params, TextTracker(self.tokenizer, params.stop), sink,
                       RequestMetrics(arrival_time=time.perf_counter()))
        with self._lock:
            if self._stopping:
                raise RuntimeError("the engine is shutting down")
            if len(self._requests) >= self.config.max_num_seqs + self.config.max_waiting:
                raise QueueFullError(f"{len(self._requests)} requests in flight; the engine admits at most "
                                     f"{self.config.max_num_seqs + self.config.max_waiting}")
            if rid in self._requests:
                raise ValueError(f"request_id: {rid!r} is already in flight")
            if not self.is_running:
                self._start_locked()
            self._requests[rid] = req
            self._manager.add_request(req.prompt_ids, request_id=rid, max_new_tokens=params.max_tokens,
                                      streaming=True, eos_token_id=[] if params.ignore_eos else self.eos_token_ids,
                                      **_sampler_kwargs(params))
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
        bp = None if self._manager is None else self._manager.batch_processor
        if bp is None:
            return None
        cache = bp.cache
        free = cache.compute_free_capacity(relative=False)
        free += sum(len(a.ledger.cached_blocks) * a.bytes_per_block for a in cache.cache_allocators.values())
        return round(free / (cache.num_sectors * cache.bytes_per_sector) * cache.num_blocks)

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


def _add_processor(plist, processor) -> None:
    """Append a per-request processor to transformers' CB processor list (before the
    batch processor sizes its argument tensors, i.e. before `start`)."""
    plist.logits_processor.append(processor)
    plist.tensors_required += 1
    plist._retrieve_processors_kwargs()
    plist.do_processing = True


def _pin_threads(manager, n: int) -> None:
    """Run the generation thread with n intra-op threads. OpenMP's thread count is per
    thread: without this the loop would use the default (all cores), not what the caller
    set, and on a shared CPU an oversubscribed OpenMP team can be 10x slower."""
    loop = manager._run_generation_loop

    def pinned_loop():
        torch.set_num_threads(n)
        loop()
    manager._run_generation_loop = pinned_loop


def _eos_ids(model, tokenizer) -> list[int]:
    ids = getattr(model.generation_config, "eos_token_id", None)
    if ids is None:
        ids = tokenizer.eos_token_id
    ids = [] if ids is None else [ids] if isinstance(ids, int) else list(ids)
    return [i for i in ids if i is not None and i >= 0]
