"""Block manager: allocation, freeing on abort, prefix caching by block hashes."""
import pytest

from qrt.engine.block_manager import BlockManager
from qrt.engine.sequence import Sequence


def seq(name, ids):
    return Sequence(name, list(ids), max_tokens=4)


def test_allocate_and_free_return_every_block():
    bm = BlockManager(8, 4)
    a = seq("a", range(10))  # 3 blocks
    bm.allocate(a)
    assert len(a.block_table) == 3 and bm.num_free_blocks == 5
    a.append_token(1), a.append_token(2), a.append_token(3)  # 13 tokens: a 4th block
    assert bm.can_append(a)
    bm.append_slots(a)
    assert len(a.block_table) == 4 and bm.num_free_blocks == 4
    bm.free_sequence(a)
    assert bm.num_free_blocks == 8 and a.block_table == [] and a.num_computed_tokens == 0


def test_too_few_blocks_is_refused():
    bm = BlockManager(2, 4)
    big = seq("big", range(9))
    assert not bm.can_allocate(big)
    with pytest.raises(RuntimeError, match="not enough free KV blocks"):
        bm.allocate(big)


def test_shared_prefix_reuses_computed_blocks():
    bm = BlockManager(16, 4)
    a = seq("a", range(14))
    bm.allocate(a)
    a.num_computed_tokens = 14
    bm.commit(a)  # blocks 0..2 full and computed -> cached
    b = seq("b", list(range(12)) + [99, 98, 97])  # shares 3 full blocks with a
    bm.allocate(b)
    assert b.block_table[:3] == a.block_table[:3] and b.block_table[3] != a.block_table[3]
    assert b.num_cached_tokens == b.num_computed_tokens == 12
    assert bm.blocks[a.block_table[0]].ref_count == 2
    c = seq("c", list(range(4)) + [7] * 8)  # diverges in block 1: only block 0 shared
    bm.allocate(c)
    assert c.num_cached_tokens == 4 and c.block_table[0] == a.block_table[0]


def test_last_prompt_block_is_never_shared():
    """A prompt that is entirely cached still computes its last token (it needs logits)."""
    bm = BlockManager(16, 4)
    a = seq("a", range(8))
    bm.allocate(a)
    a.num_computed_tokens = 8
    bm.commit(a)
    b = seq("b", range(8))
    bm.allocate(b)
    assert b.num_cached_tokens == 4 and b.block_table[1] != a.block_table[1]


def test_uncomputed_blocks_are_not_cached():
    bm = BlockManager(16, 4)
    a = seq("a", range(12))
    bm.allocate(a)
    a.num_computed_tokens = 5  # a chunked prefill half way: only block 0 is computed
    bm.commit(a)
    b = seq("b", range(12))
    bm.allocate(b)
    assert b.num_cached_tokens == 4


def test_freed_blocks_stay_cached_until_reused():
    bm = BlockManager(6, 4)
    a = seq("a", range(9))
    bm.allocate(a)
    a.num_computed_tokens = 9
    bm.commit(a)
    bm.free_sequence(a)
    assert bm.num_free_blocks == 6
    b = seq("b", range(9))
    assert bm.can_allocate(b)
    bm.allocate(b)  # revives the two cached blocks from the free list
    assert b.num_cached_tokens == 8 and bm.num_free_blocks == 3
    bm.free_sequence(b)
    filler = seq("f", [50] * 24)  # takes all 6 blocks: the cached content is overwritten
    bm.allocate(filler)
    bm.free_sequence(filler)
    c = seq("c", range(9))
    bm.allocate(c)
    assert c.num_cached_tokens == 0


def test_prefix_caching_off_shares_nothing():
    bm = BlockManager(16, 4, enable_prefix_caching=False)
    a = seq("a", range(12))
    bm.allocate(a)
    a.num_computed_tokens = 12
    bm.commit(a)
    b = seq("b", range(12))
    bm.allocate(b)
    assert b.num_cached_tokens == 0 and not set(a.block_table) & set(b.block_table)
