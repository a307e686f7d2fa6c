"""Paged attention: each new query token attends to its sequence's cached keys, read through
the sequence's block table (prefill chunks and decode steps alike).

One program per (query token, query head): the token's query vector [HEAD_DIM] stays in
registers while the keys 0..pos of its sequence stream through in tiles of BLOCK_N tokens,
each tile gathered from the paged cache (block = block_table[s // PAGE_SIZE], row =
s % PAGE_SIZE), with an online softmax (running max and sum, fp32) so the context length is
unbounded. Causality and the sliding window are a per-key mask: key s is visible to a query
at position pos when s <= pos and pos - s < WINDOW. No tl.dot: a single query row is a
matvec, which keeps the kernel exact in the interpreter for fp32 and fp16 alike.

Twin: qrt_kernels.reference.paged_attention_ref (same signature).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _paged_attention_kernel(
    # pointers
    q_ptr, k_cache_ptr, v_cache_ptr, block_tables_ptr, token_seq_ptr, token_pos_ptr, out_ptr,
    # sizes
    HEAD_DIM, WINDOW,
    # strides
    stride_qt, stride_qh, stride_kb, stride_kp, stride_kh, stride_bt, stride_ot, stride_oh,
    # attention params
    scale, GROUP: tl.constexpr, PAGE_SIZE: tl.constexpr, HAS_WINDOW: tl.constexpr,
    # meta-parameters
    BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    t = tl.program_id(0)
    h = tl.program_id(1)
    kvh = h // GROUP
    seq = tl.load(token_seq_ptr + t)
    pos = tl.load(token_pos_ptr + t)
    offs_d = tl.arange(0, BLOCK_D)
    mask_d = offs_d < HEAD_DIM
    # the query row, pre-scaled so scores need no extra multiply per tile
    q = tl.load(q_ptr + t * stride_qt + h * stride_qh + offs_d, mask=mask_d, other=0.0).to(tl.float32) * scale
    m_i = tl.max(tl.full([BLOCK_N], float("-inf"), tl.float32), axis=0)  # fp32 scalars
    l_i = tl.sum(tl.zeros([BLOCK_N], tl.float32), axis=0)
    acc = tl.zeros([BLOCK_D], dtype=tl.float32)
    start = 0
    if HAS_WINDOW:
        start = tl.maximum(pos - WINDOW + 1, 0) // BLOCK_N * BLOCK_N
    # -- stream the visible keys in tiles, gathering each key's cache row via the block table
    for s0 in range(start, pos + 1, BLOCK_N):
        offs_s = s0 + tl.arange(0, BLOCK_N)
        vis = offs_s <= pos
        if HAS_WINDOW:
            vis = vis & (pos - offs_s < WINDOW)
        block = tl.load(block_tables_ptr + seq * stride_bt + offs_s // PAGE_SIZE, mask=vis, other=0)
        row = block.to(tl.int64) * stride_kb + (offs_s % PAGE_SIZE) * stride_kp + kvh * stride_kh
        kv_mask = vis[:, None] & mask_d[None, :]
        k = tl.load(k_cache_ptr + row[:, None] + offs_d[None, :], mask=kv_mask, other=0.0).to(tl.float32)
        scores = tl.sum(k * q[None, :], axis=1)
        scores = tl.where(vis, scores, float("-inf"))
        # -- online softmax: rescale what was accumulated to the new running max
        m_new = tl.maximum(m_i, tl.max(scores, axis=0))
        alpha = tl.exp(m_i - m_new)
        p = tl.exp(scores - m_new)
        v = tl.load(v_cache_ptr + row[:, None] + offs_d[None, :], mask=kv_mask, other=0.0).to(tl.float32)
        acc = acc * alpha + tl.sum(p[:, None] * v, axis=0)
        l_i = l_i * alpha + tl.sum(p, axis=0)
        m_i = m_new
    out = acc / l_i
    tl.store(out_ptr + t * stride_ot + h * stride_oh + offs_d, out.to(out_ptr.dtype.element_ty), mask=mask_d)


def check_paged_attention_args(q, k_cache, v_cache, block_tables, token_seq, token_pos) -> None:
    """ValueError naming the tensor whose shape/dtype/device does not fit."""
    if q.ndim != 3 or k_cache.ndim != 4 or k_cache.shape != v_cache.shape:
        raise ValueError(f"paged_attention: expected q [T, H, D] and k/v caches [blocks, page, KVH, D], "
                         f"found {tuple(q.shape)}, {tuple(k_cache.shape)}, {tuple(v_cache.shape)}")
    t, h, d = q.shape
    if k_cache.shape[3] != d or h % k_cache.shape[2]:
        raise ValueError(f"paged_attention: head_dim {d} vs cache {k_cache.shape[3]}; {h} query heads "
                         f"must be a multiple of {k_cache.shape[2]} kv heads")
    if token_seq.shape != (t,) or token_pos.shape != (t,) or block_tables.ndim != 2:
        raise ValueError(f"paged_attention: expected token_seq/token_pos [{t}] and block_tables [B, max_blocks], "
                         f"found {tuple(token_seq.shape)}, {tuple(token_pos.shape)}, {tuple(block_tables.shape)}")
    if len({x.device for x in (q, k_cache, v_cache, block_tables, token_seq, token_pos)}) != 1:
        raise ValueError("paged_attention: all tensors must be on one device")
    if k_cache.stride(3) != 1 or q.stride(2) != 1:
        raise ValueError("paged_attention: the head_dim of q and the caches must be contiguous")


def paged_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_tables: torch.Tensor,
                    token_seq: torch.Tensor, token_pos: torch.Tensor, scale: float,
                    window: int | None = None) -> torch.Tensor:
    """q [T, H, D]; k_cache/v_cache [num_blocks, page_size, KVH, D]; block_tables int [B, max_blocks];
    token_seq int [T] (row of block_tables), token_pos int [T] (position of the token; keys
    0..pos are in the cache). -> out [T, H, D] in q.dtype."""
    check_paged_attention_args(q, k_cache, v_cache, block_tables, token_seq, token_pos)
    t, h, d = q.shape
    out = torch.empty_like(q)
    if t == 0:
        return out
    grid = (t, h)
    _paged_attention_kernel[grid](
        q, k_cache, v_cache, block_tables, token_seq, token_pos, out,
        d, window or 0,
        q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        block_tables.stride(0), out.stride(0), out.stride(1),
        float(scale), GROUP=h // k_cache.shape[2], PAGE_SIZE=k_cache.shape[1], HAS_WINDOW=window is not None,
        BLOCK_N=32, BLOCK_D=triton.next_power_of_2(d))
    return out
