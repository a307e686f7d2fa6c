"""Sequence: one request's tokens and where its KV cache lives (vLLM's vocabulary).

token_ids holds the prompt followed by the generated tokens. num_computed_tokens of them
have their K/V in the cache (the next forward starts there); block_table lists the cache
blocks holding tokens [i*page_size, (i+1)*page_size). After preemption (recompute) the
blocks are freed and num_computed_tokens drops to 0: prompt and generated tokens are
prefilled again, which yields exactly the next token the sequence would have produced.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class SequenceStatus(enum.Enum):
    WAITING = "waiting"    # no blocks: not admitted yet, or preempted
    RUNNING = "running"    # holds blocks; prefilling (maybe in chunks) or decoding
    FINISHED = "finished"  # done or aborted; blocks freed


@dataclass(eq=False)
class Sequence:
    seq_id: str
    token_ids: list[int]
    max_tokens: int
    params: Any = None  # the request's SamplingParams (the engine reads it, the scheduler does not)
    num_prompt_tokens: int = -1
    num_computed_tokens: int = 0
    num_cached_tokens: int = 0  # prefix-cache hits of the last admission
    block_table: list[int] = field(default_factory=list)
    status: SequenceStatus = SequenceStatus.WAITING

    def __post_init__(self):
        if not self.token_ids:
            raise ValueError(f"sequence {self.seq_id}: expected at least one prompt token, found none")
        if self.num_prompt_tokens < 0:
            self.num_prompt_tokens = len(self.token_ids)

    def __len__(self) -> int:
        return len(self.token_ids)

    @property
    def output_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens:]

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens

    @property
    def is_prefill(self) -> bool:
        """More than one token still lacks K/V (a prompt, or a preempted sequence's history)."""
        return len(self.token_ids) - self.num_computed_tokens > 1

    @property
    def is_finished(self) -> bool:
        return self.status is SequenceStatus.FINISHED

    def append_token(self, token_id: int) -> None:
        self.token_ids.append(int(token_id))
