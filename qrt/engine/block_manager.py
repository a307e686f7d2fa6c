"""BlockManager: the free list of KV-cache blocks, reference counts and prefix caching.

A block holds page_size tokens of one layer stack's K/V. With prefix caching, a block that
is full and computed gets a hash chained over all tokens up to its end (so equal hashes
mean equal prefixes, checked against the stored tokens too); a new sequence whose leading
full blocks hash the same shares those blocks (ref_count > 1) and skips their prefill.
Freed blocks keep their hash until reused, so a later request can still hit them; they are
reused least-recently-freed first. The block holding a sequence's last prompt token is never
shared: its forward must produce logits, and it writes K/V there.
"""
from __future__ import annotations

from collections import OrderedDict

from qrt.engine.sequence import Sequence


def _chain_hash(prev: int | None, tokens: tuple[int, ...]) -> int:
    return hash((prev, tokens))


class Block:
    __slots__ = ("block_id", "ref_count", "hash", "tokens")

    def __init__(self, block_id: int):
        self.block_id, self.ref_count, self.hash, self.tokens = block_id, 0, None, ()


class BlockManager:
    def __init__(self, num_blocks: int, page_size: int, enable_prefix_caching: bool = True):
        if num_blocks < 1 or page_size < 1:
            raise ValueError(f"block manager: expected num_blocks >= 1 and page_size >= 1, "
                             f"found {num_blocks} and {page_size}")
        self.page_size, self.enable_prefix_caching = page_size, enable_prefix_caching
        self.blocks = [Block(i) for i in range(num_blocks)]
        self.free: OrderedDict[int, None] = OrderedDict((i, None) for i in range(num_blocks))
        self.cached: dict[int, int] = {}  # chain hash -> block id (full, computed blocks)

    @property
    def num_free_blocks(self) -> int:
        return len(self.free)

    def blocks_needed(self, num_tokens: int) -> int:
        return -(-num_tokens // self.page_size)

    # -- allocation ---------------------------------------------------------------------
    def _take_free(self) -> int:
        block_id, _ = self.free.popitem(last=False)
        b = self.blocks[block_id]
        if b.hash is not None and self.cached.get(b.hash) == block_id:
            del self.cached[b.hash]  # its old content is overwritten now
        b.hash, b.tokens, b.ref_count = None, (), 1
        return block_id

    def _prefix_hits(self, seq: Sequence) -> list[int]:
        """Block ids caching seq's leading full blocks (never the one with its last token)."""
        if not self.enable_prefix_caching:
            return []
        hits, h = [], None
        for i in range((len(seq) - 1) // self.page_size):
            tokens = tuple(seq.token_ids[i * self.page_size:(i + 1) * self.page_size])
            h = _chain_hash(h, tokens)
            bid = self.cached.get(h)
            if bid is None or self.blocks[bid].tokens != tokens:
                break
            hits.append(bid)
        return hits

    def can_allocate(self, seq: Sequence) -> bool:
        hits = self._prefix_hits(seq)
        reused_free = sum(1 for b in hits if self.blocks[b].ref_count == 0)
        return self.blocks_needed(len(seq)) - len(hits) + reused_free <= len(self.free)

    def allocate(self, seq: Sequence) -> None:
        """Give a waiting sequence blocks for all its tokens; shared prefix blocks are reused
        and counted as computed (seq.num_computed_tokens = seq.num_cached_tokens)."""
        if seq.block_table:
            raise RuntimeError(f"sequence {seq.seq_id} already holds blocks")
        if not self.can_allocate(seq):
            raise RuntimeError(f"sequence {seq.seq_id}: not enough free KV blocks")
        hits = self._prefix_hits(seq)
        for bid in hits:
            b = self.blocks[bid]
            if b.ref_count == 0:
                del self.free[bid]
            b.ref_count += 1
        seq.block_table = hits + [self._take_free() for _ in range(self.blocks_needed(len(seq)) - len(hits))]
        seq.num_cached_tokens = seq.num_computed_tokens = len(hits) * self.page_size

    def can_append(self, seq: Sequence) -> bool:
        """Room for the sequence's tokens (a decode step that starts a new block needs one)."""
        return self.blocks_needed(len(seq)) - len(seq.block_table) <= len(self.free)

    def append_slots(self, seq: Sequence) -> None:
        while len(seq.block_table) < self.blocks_needed(len(seq)):
            seq.block_table.append(self._take_free())

    def free_sequence(self, seq: Sequence) -> None:
        """Release the sequence's blocks (abort, finish, preemption)."""
        for bid in reversed(seq.block_table):  # tail blocks are reused first
            b = self.blocks[bid]
            b.ref_count -= 1
            if b.ref_count == 0:
                self.free[bid] = None
        seq.block_table = []
        seq.num_computed_tokens = seq.num_cached_tokens = 0

    # -- prefix caching -----------------------------------------------------------------
    def commit(self, seq: Sequence) -> None:
        """Register the sequence's full, computed blocks for prefix reuse (after a forward)."""
        if not self.enable_prefix_caching:
            return
        h = None
        for i in range(seq.num_computed_tokens // self.page_size):
            b = self.blocks[seq.block_table[i]]
            if b.hash is not None:  # registered earlier: its hash is the chain up to here
                h = b.hash
                continue
            tokens = tuple(seq.token_ids[i * self.page_size:(i + 1) * self.page_size])
            h = b.hash = _chain_hash(h, tokens)
            b.tokens = tokens
            self.cached.setdefault(h, b.block_id)
