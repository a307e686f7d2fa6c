"""Offline batched generation: `LLM(model_or_dir).generate(prompts, SamplingParams(...))`.

Every prompt becomes a request of the continuous-batching engine, so prompts of different
lengths and budgets share forward passes and the KV cache is paged; outputs come back in
prompt order.
"""
from __future__ import annotations

import threading
from collections.abc import Sequence

from tqdm.auto import tqdm

from qrt.serve.config import EngineConfig
from qrt.serve.engine import Engine, EngineDeadError
from qrt.serve.outputs import RequestOutput
from qrt.serve.sampling import SamplingParams

Prompt = "str | list[int]"
LIVENESS_POLL_S = 0.25  # how often a waiting generate() checks that the engine can still finish its requests


class GenerationError(RuntimeError):
    """A request failed inside the engine (its cause is in the message); the others were aborted."""


class LLM:
    """model: a name or directory (see qrt.serve.model_loading) or an already-built
    nn.Module (then pass `tokenizer`). quantize: an RTN scheme applied on load ("w4a16").
    device / dtype: where and in what precision a model loaded by name runs."""

    def __init__(self, model="smollm2", tokenizer=None, quantize: str | None = None,
                 config: EngineConfig | None = None, device: str = "cpu", dtype: str = "float32",
                 **config_kwargs):
        if config is not None and config_kwargs:
            raise ValueError(f"pass either config or engine settings, found both ({sorted(config_kwargs)})")
        if isinstance(model, str) or hasattr(model, "__fspath__"):
            from qrt.serve.model_loading import load_for_serving, torch_dtype
            model, loaded_tok = load_for_serving(str(model), quantize=quantize, dtype=torch_dtype(dtype),
                                                 device=device)
            tokenizer = tokenizer or loaded_tok
        elif tokenizer is None:
            raise ValueError("tokenizer: expected a tokenizer when model is an nn.Module, found None")
        elif quantize is not None:
            from qrt.quantize.rtn import quantize_model
            quantize_model(model, quantize, progress=False)
        self.tokenizer = tokenizer
        self.engine = Engine(model, tokenizer, config or EngineConfig(**config_kwargs))

    def generate(self, prompts: "Prompt | Sequence[Prompt]", sampling_params: "SamplingParams | Sequence[SamplingParams] | None" = None,
                 use_tqdm: bool = True) -> list[RequestOutput]:
        """prompts: a string, token ids, or a list of either. sampling_params: one for all
        prompts or one per prompt (default: SamplingParams()). Returns one finished
        RequestOutput per prompt, in order."""
        if isinstance(prompts, str) or (prompts and isinstance(prompts[0], int)):
            prompts = [prompts]
        params = sampling_params if sampling_params is not None else SamplingParams()
        params = list(params) if isinstance(params, (list, tuple)) else [params] * len(prompts)
        if len(params) != len(prompts):
            raise ValueError(f"sampling_params: expected 1 or {len(prompts)} (one per prompt), found {len(params)}")
        encoded = [self._encode(p) for p in prompts]
        for ids, sp in zip(encoded, params):
            self.engine.check_prompt(ids, sp)  # fail before anything is queued
        results: list[RequestOutput | None] = [None] * len(prompts)
        done, errors = threading.Semaphore(0), []
        self.engine.start()
        bar = tqdm(total=len(prompts), desc="Generating", unit="req", disable=not use_tqdm)
        pending = list(range(len(prompts)))[::-1]
        rids: list[str] = []
        in_flight = 0
        limit = self.engine.config.max_num_seqs + self.engine.config.max_waiting
        try:
            while pending or in_flight:
                while pending and in_flight < limit:  # stay under the engine's admission bound
                    i = pending.pop()
                    rids.append(self.engine.add_request(encoded[i], params[i], _collect(results, i, done, errors),
                                                        prompt=prompts[i] if isinstance(prompts[i], str) else None))
                    in_flight += 1
                self._wait_one(done)
                in_flight -= 1
                bar.update(1)
                if errors:  # a request failed, or was aborted under us (the engine stopped)
                    cause = errors[0].error or f"the request was aborted ({self.engine.health() or 'engine stopped'})"
                    raise GenerationError(f"generation failed: {cause}")
        finally:
            bar.close()
            if pending or in_flight:  # leaving early (an error, or KeyboardInterrupt): free the engine
                for rid in rids:
                    self.engine.abort(rid)
        return results

    def _wait_one(self, done: threading.Semaphore) -> None:
        """Block until one more request finishes; EngineDeadError as soon as the engine can no longer finish any."""
        while not done.acquire(timeout=LIVENESS_POLL_S):
            if self.engine.is_dead():
                raise EngineDeadError(f"the engine stopped before the requests finished: {self.engine.health()}")

    def _encode(self, prompt) -> list[int]:
        if isinstance(prompt, str):
            return self.tokenizer(prompt).input_ids
        if isinstance(prompt, (list, tuple)) and all(isinstance(t, int) for t in prompt):
            return list(prompt)
        raise ValueError(f"prompts: expected strings or lists of token ids, found {type(prompt).__name__}")

    def shutdown(self) -> None:
        self.engine.stop()


def _collect(results: list, i: int, done: threading.Semaphore, errors: list):
    def sink(out: RequestOutput) -> None:
        if out.finished:
            results[i] = out
            if out.outputs[0].finish_reason in ("error", "abort"):
                errors.append(out)
            done.release()
    return sink
