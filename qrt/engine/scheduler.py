"""Scheduler: which sequences run in the next forward, and how many tokens each brings.

Continuous batching with chunked prefill, in vLLM's manner: every step has a budget of
max_batch_tokens. Running sequences go first, in admission order (a decode brings one
token, an unfinished prefill a chunk up to the budget left); waiting sequences are then
admitted in arrival order while the batch has room (max_num_seqs) and the block manager
has blocks. When a running sequence needs a new block and none is free, the most recently
admitted running sequence is preempted: its blocks are freed and it goes back to the front
of the queue, to be recomputed (prompt + what it generated) when blocks free up.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from qrt.engine.block_manager import BlockManager
from qrt.engine.sequence import Sequence, SequenceStatus


def _require(cond: bool, name: str, expected: str, found) -> None:
    if not cond:
        raise ValueError(f"invalid scheduler setting '{name}': expected {expected}, found {found!r}")


@dataclass(frozen=True)
class SchedulerConfig:
    """max_num_seqs: sequences per forward. max_batch_tokens: tokens per forward (prefills are
    chunked to fit). max_model_len: prompt + output tokens of one sequence. num_blocks x
    page_size: the KV cache, in tokens; it must hold one max_model_len sequence."""

    num_blocks: int
    page_size: int = 16
    max_num_seqs: int = 32
    max_batch_tokens: int = 512
    max_model_len: int = 2048
    enable_prefix_caching: bool = False

    def __post_init__(self):
        for name in ("num_blocks", "page_size", "max_num_seqs", "max_batch_tokens", "max_model_len"):
            v = getattr(self, name)
            _require(isinstance(v, int) and not isinstance(v, bool) and v >= 1, name, "an int >= 1", v)
        need = -(-self.max_model_len // self.page_size)
        _require(self.num_blocks >= need, "num_blocks",
                 f">= {need} (one sequence of max_model_len {self.max_model_len} tokens)", self.num_blocks)


@dataclass(frozen=True)
class ScheduledBatch:
    """seqs: (sequence, new tokens) in forward order. preempted: sequences sent back to waiting."""

    seqs: tuple[tuple[Sequence, int], ...]
    preempted: tuple[Sequence, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.seqs)


class Scheduler:
    def __init__(self, config: SchedulerConfig):
        self.config = config
        self.block_manager = BlockManager(config.num_blocks, config.page_size, config.enable_prefix_caching)
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.num_preemptions = 0

    def add(self, seq: Sequence) -> None:
        if len(seq) + seq.max_tokens - seq.num_output_tokens > self.config.max_model_len:
            raise ValueError(f"sequence {seq.seq_id}: {len(seq)} tokens + max_tokens {seq.max_tokens} exceed "
                             f"max_model_len {self.config.max_model_len}")
        seq.status = SequenceStatus.WAITING
        self.waiting.append(seq)

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    def schedule(self) -> ScheduledBatch:
        budget, batch, preempted = self.config.max_batch_tokens, [], []
        bm = self.block_manager
        i = 0
        while i < len(self.running) and budget > 0:
            seq = self.running[i]
            while not bm.can_append(seq):  # free blocks by preempting from the back
                victim = self.running.pop()
                self._preempt(victim)
                preempted.append(victim)
                if victim is seq:
                    break
            if seq.status is not SequenceStatus.RUNNING:
                break
            bm.append_slots(seq)
            n = min(len(seq) - seq.num_computed_tokens, budget)
            batch.append((seq, n))
            budget -= n
            i += 1
        while not preempted and self.waiting and budget > 0 and len(self.running) < self.config.max_num_seqs:
            seq = self.waiting[0]
            if not bm.can_allocate(seq):
                break
            bm.allocate(seq)
            self.waiting.popleft()
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
            n = min(len(seq) - seq.num_computed_tokens, budget)
            batch.append((seq, n))
            budget -= n
        return ScheduledBatch(tuple(batch), tuple(preempted))

    def _preempt(self, seq: Sequence) -> None:
        self.num_preemptions += 1
        self.block_manager.free_sequence(seq)
        seq.status = SequenceStatus.WAITING
        self.waiting.appendleft(seq)

    def advance(self, batch: ScheduledBatch) -> None:
        """After the forward: the scheduled tokens now have K/V (and full blocks are cached)."""
        for seq, n in batch.seqs:
            seq.num_computed_tokens += n
            self.block_manager.commit(seq)

    def finish(self, seq: Sequence) -> None:
        """Finished or aborted: leave the queues and free the blocks."""
        if seq in self.running:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        self.block_manager.free_sequence(seq)
        seq.status = SequenceStatus.FINISHED
