"""LLMEngine: requests in, tokens out, one scheduled forward per step().

    engine = LLMEngine(hf_model, SchedulerConfig(num_blocks=...), eos_token_ids=[2])
    engine.add_request("a", prompt_ids, SamplingParams(max_tokens=8))
    while engine.has_unfinished():
        for out in engine.step(): ...

Not thread-safe: one thread drives step() (qrt.serve runs it on its generation thread).
A request finishes on EOS (unless params.ignore_eos), after max_tokens, or when aborted;
stop strings are text and belong to the caller, which aborts the request when one appears.
"""
from __future__ import annotations

import random
from collections.abc import Sequence as Seq
from dataclasses import dataclass

import torch
from torch import nn

from qrt.engine.model_runner import ModelRunner
from qrt.engine.sampler import RowParams, sample
from qrt.engine.scheduler import Scheduler, SchedulerConfig
from qrt.engine.sequence import Sequence


@dataclass(frozen=True)
class StepOutput:
    """One request's news from a step: the token it produced (None if it only prefilled a
    chunk or was preempted), and finish_reason ("stop" = EOS, "length") once finished."""

    request_id: str
    new_token: int | None
    finished: bool
    finish_reason: str | None
    sequence: Sequence


class LLMEngine:
    def __init__(self, model: nn.Module, config: SchedulerConfig, eos_token_ids: Seq[int] = (),
                 attention=None, use_cuda_graph: bool = True, lm_head: str = "model"):
        """attention: a paged-attention function (qrt.engine.attention); None picks by device.
        use_cuda_graph: replay decode steps as CUDA graphs on a GPU (ignored on the CPU).
        lm_head: how logits are computed (qrt.runtime.lm_head.HEAD_MODES; "auto": an int8
        copy of a quantized model's fp32 head on the CPU, opt-in)."""
        self.config = config
        self.runner = ModelRunner(model, config.num_blocks, config.page_size, config.max_model_len, attention,
                                  max_num_seqs=config.max_num_seqs, use_cuda_graph=use_cuda_graph,
                                  lm_head=lm_head)
        self.scheduler = Scheduler(config)
        self.eos_token_ids = frozenset(eos_token_ids)
        self.seqs: dict[str, Sequence] = {}
        self._seeds: dict[str, int] = {}

    def add_request(self, request_id: str, prompt_ids: Seq[int], params) -> Sequence:
        """params: a qrt.SamplingParams. Raises ValueError for a duplicate id or a request
        that cannot fit max_model_len."""
        if request_id in self.seqs:
            raise ValueError(f"request_id: {request_id!r} is already in flight")
        seq = Sequence(request_id, list(prompt_ids), params.max_tokens, params)
        self.scheduler.add(seq)
        self.seqs[request_id] = seq
        self._seeds[request_id] = params.seed if params.seed is not None else random.getrandbits(63)
        return seq

    def abort_request(self, request_id: str) -> bool:
        """Drop a request and free its blocks; False if it is unknown or already finished."""
        seq = self.seqs.pop(request_id, None)
        if seq is None:
            return False
        self._seeds.pop(request_id, None)
        self.scheduler.finish(seq)
        return True

    def has_unfinished(self) -> bool:
        return self.scheduler.has_unfinished()

    @property
    def num_free_blocks(self) -> int:
        return self.scheduler.block_manager.num_free_blocks

    def step(self) -> list[StepOutput]:
        batch = self.scheduler.schedule()
        if not batch:
            return []
        logits = self.runner.run(batch.seqs)
        self.scheduler.advance(batch)
        producing = [seq for seq, _ in batch.seqs if seq.num_computed_tokens == len(seq)]
        rows = [self._row_params(seq) for seq in producing]
        tokens = sample(logits, rows)
        outputs = []
        for seq, tok in zip(producing, tokens):
            seq.append_token(tok)
            reason = self._finish_reason(seq, tok)
            if reason is not None:
                self.seqs.pop(seq.seq_id, None)
                self._seeds.pop(seq.seq_id, None)
                self.scheduler.finish(seq)
            outputs.append(StepOutput(seq.seq_id, tok, reason is not None, reason, seq))
        return outputs

    def _row_params(self, seq: Sequence) -> RowParams:
        p = seq.params
        return RowParams(float(p.temperature), float(p.top_p), int(p.top_k), self._seeds[seq.seq_id],
                         seq.num_output_tokens)

    def _finish_reason(self, seq: Sequence, tok: int) -> str | None:
        if tok in self.eos_token_ids and not seq.params.ignore_eos:
            return "stop"
        if seq.num_output_tokens >= seq.max_tokens or len(seq) >= self.config.max_model_len:
            return "length"
        return None

    def generate(self, prompts: Seq[Seq[int]], params) -> list[list[int]]:
        """Offline helper: run token-id prompts to completion -> output ids per prompt.
        params: one SamplingParams for all, or one per prompt."""
        params = list(params) if isinstance(params, (list, tuple)) else [params] * len(prompts)
        ids = [f"gen-{i}-{random.getrandbits(32)}" for i in range(len(prompts))]
        for rid, p, sp in zip(ids, prompts, params):
            self.add_request(rid, p, sp)
        done: dict[str, list[int]] = {}
        with torch.inference_mode():
            while len(done) < len(ids):
                if not self.has_unfinished():
                    raise RuntimeError(f"engine idle with {len(ids) - len(done)} requests unfinished")
                for out in self.step():
                    if out.finished:
                        done[out.request_id] = out.sequence.output_ids
        return [done[rid] for rid in ids]
