"""Paged attention on the CPU (torch) and its float64 reference twin.

The KV cache of one layer is two tensors [num_blocks, page_size, num_kv_heads, head_dim];
token t of a sequence lives in block block_table[t // page_size], row t % page_size.
`store_kv` writes the new tokens' keys/values at their flat slots (block * page_size + row);
`paged_attention` lets each sequence's new queries attend to its own cached keys only
(causal, optionally a sliding window), so a row's result never depends on what else is in
the batch. The Triton kernel for CUDA (qrt.engine.triton_attention) has the same signature.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AttentionMetadata:
    """What one forward's attention needs, for B sequences and T = sum(query_lens) new tokens.

    slot_mapping   int64 [T]: flat cache slot of each new token's K/V.
    query_starts   B+1 ints: sequence i's new tokens are rows query_starts[i]:query_starts[i+1].
    context_lens   B ints: tokens in the cache after this step (cached + new).
    block_tables   int64 [B, max_blocks] (rows padded with 0 beyond a sequence's blocks).
    token_seq      int32 [T]: the sequence (row of block_tables) of each new token.
    token_pos      int32 [T]: the position of each new token (it sees keys 0..pos).
    """

    slot_mapping: torch.Tensor
    query_starts: tuple[int, ...]
    context_lens: tuple[int, ...]
    block_tables: torch.Tensor
    token_seq: torch.Tensor
    token_pos: torch.Tensor

    def __post_init__(self):
        b = len(self.context_lens)
        if len(self.query_starts) != b + 1 or self.block_tables.shape[0] != b:
            raise ValueError(f"attention metadata: expected {b + 1} query_starts and {b} block-table rows, "
                             f"found {len(self.query_starts)} and {self.block_tables.shape[0]}")
        if self.slot_mapping.numel() != self.query_starts[-1]:
            raise ValueError(f"slot_mapping: expected {self.query_starts[-1]} slots, found {self.slot_mapping.numel()}")
        for i in range(b):
            if self.query_starts[i + 1] - self.query_starts[i] > self.context_lens[i]:
                raise ValueError(f"sequence {i}: more new tokens than context ({self.context_lens[i]})")

    @property
    def all_decode(self) -> bool:
        """Every sequence brings exactly one new token."""
        return self.query_starts[-1] == len(self.context_lens)


def build_metadata(slots: list[int], query_starts: list[int], context_lens: list[int],
                   block_tables: list[list[int]], device) -> AttentionMetadata:
    """AttentionMetadata from host lists (one tensor copy each)."""
    b = len(context_lens)
    width = max((len(t) for t in block_tables), default=0)
    tables = torch.tensor([t + [0] * (width - len(t)) for t in block_tables], dtype=torch.long)
    seq, pos = [], []
    for i in range(b):
        n = query_starts[i + 1] - query_starts[i]
        seq.extend([i] * n)
        pos.extend(range(context_lens[i] - n, context_lens[i]))
    as_t = lambda x, dt: torch.tensor(x, dtype=dt).to(device)  # noqa: E731
    return AttentionMetadata(as_t(slots, torch.long), tuple(query_starts), tuple(context_lens),
                             tables.to(device), as_t(seq, torch.int32), as_t(pos, torch.int32))


def store_kv(k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
             slot_mapping: torch.Tensor) -> None:
    """k, v [T, num_kv_heads, head_dim] -> cache rows slot_mapping [T] (in place)."""
    k_cache.view(-1, *k_cache.shape[2:]).index_copy_(0, slot_mapping, k.to(k_cache.dtype))
    v_cache.view(-1, *v_cache.shape[2:]).index_copy_(0, slot_mapping, v.to(v_cache.dtype))


def gather_context(cache: torch.Tensor, block_table: torch.Tensor, ctx: int) -> torch.Tensor:
    """The first ctx cached rows of one sequence: [ctx, num_kv_heads, head_dim]."""
    page = cache.shape[1]
    n_blocks = -(-ctx // page)
    return cache[block_table[:n_blocks]].flatten(0, 1)[:ctx]


def visible(q_len: int, ctx: int, window: int | None, device) -> torch.Tensor | None:
    """bool [q_len, ctx]: key s visible to new query j (position ctx - q_len + j) when s <= pos
    and pos - s < window. None when everything is visible (one query, no window)."""
    if q_len == 1 and (window is None or window >= ctx):
        return None
    pos = torch.arange(ctx - q_len, ctx, device=device)[:, None]
    s = torch.arange(ctx, device=device)[None, :]
    mask = s <= pos
    if window is not None:
        mask &= pos - s < window
    return mask


def paged_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                    meta: AttentionMetadata, scale: float, window: int | None = None) -> torch.Tensor:
    """q [T, num_heads, head_dim] (new tokens of B sequences, packed) -> [T, num_heads, head_dim].
    Keys/values come from the cache (store_kv first). torch's SDPA per sequence (GQA)."""
    out = torch.empty_like(q)
    for i, ctx in enumerate(meta.context_lens):
        a, b = meta.query_starts[i], meta.query_starts[i + 1]
        k = gather_context(k_cache, meta.block_tables[i], ctx).transpose(0, 1)
        v = gather_context(v_cache, meta.block_tables[i], ctx).transpose(0, 1)
        mask = visible(b - a, ctx, window, q.device)
        if b - a == 1 and mask is None:
            out[a] = _decode_one(q[a], k.to(q.dtype), v.to(q.dtype), scale)
            continue
        o = F.scaled_dot_product_attention(q[a:b].transpose(0, 1), k.to(q.dtype), v.to(q.dtype),
                                           attn_mask=mask, scale=scale, enable_gqa=True)
        out[a:b] = o.transpose(0, 1)
    return out


def _decode_one(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """One query [H, D] over k/v [KVH, S, D]: two batched matmuls per kv head group (on the
    CPU ~3x faster than SDPA's kernel for a single query row)."""
    kvh, d = k.shape[0], q.shape[-1]
    qg = q.view(kvh, -1, d)                                   # [KVH, G, D]
    p = torch.softmax(torch.bmm(qg, k.transpose(1, 2)) * scale, dim=-1)  # [KVH, G, S]
    return torch.bmm(p, v).view(-1, d)


def paged_attention_reference(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                              meta: AttentionMetadata, scale: float, window: int | None = None) -> torch.Tensor:
    """Twin of paged_attention in float64 with an explicit softmax (test oracle); returns q.dtype."""
    out = torch.empty(q.shape, dtype=torch.float64, device=q.device)
    group = q.shape[1] // k_cache.shape[2]
    for i, ctx in enumerate(meta.context_lens):
        a, b = meta.query_starts[i], meta.query_starts[i + 1]
        k = gather_context(k_cache, meta.block_tables[i], ctx).double().repeat_interleave(group, dim=1)
        v = gather_context(v_cache, meta.block_tables[i], ctx).double().repeat_interleave(group, dim=1)
        scores = torch.einsum("thd,shd->hts", q[a:b].double(), k) * scale
        mask = visible(b - a, ctx, window, q.device)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        out[a:b] = torch.einsum("hts,shd->thd", scores.softmax(-1), v)
    return out.to(q.dtype)


def triton_paged_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                           meta: AttentionMetadata, scale: float, window: int | None = None) -> torch.Tensor:
    """paged_attention through the Triton kernel (CUDA; the CPU under TRITON_INTERPRET=1)."""
    from qrt_kernels.paged_attention import paged_attention as kernel  # imports triton
    return kernel(q, k_cache, v_cache, meta.block_tables, meta.token_seq, meta.token_pos, scale, window)


def select_attention(device: torch.device):
    """The attention implementation for a device: the Triton kernel on CUDA, torch elsewhere."""
    return triton_paged_attention if torch.device(device).type == "cuda" else paged_attention
