"""Batch-invariant paged attention for transformers' continuous batching.

transformers' SDPA path attends over all sequences of a batch at once: queries and keys of
every request are concatenated and a block-diagonal mask separates them. Each row's
softmax and P@V then reduce over the whole concatenation, so a request's float rounding
(and, after enough tokens, a greedy near-tie) depends on what else is in the batch or how
its prompt was chunked. With bf16 activations (torch's int4 CPU kernel) that flipped 3 of
16 greedy SmolLM2 W4A16 outputs after ~20 tokens (bench/results/serve_engine_choice.json).

Here every sequence attends only to its own keys, padded per sequence, and the attention
math runs in float64: products of float32 values are exact in float64 and the sums carry
~1e-16 relative error, so rounding back to float32 gives the same bits whatever the
padding, batch or chunking (up to a float32 rounding tie, ~1e-8 per value). Attention is
a small part of the FLOPs at these context lengths (<= a few thousand tokens).

Registered as the attention implementation "qrt_paged"; without a paged cache (a plain
forward or `generate`) it defers to transformers' SDPA.
"""
from __future__ import annotations

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from qrt.serve.cb_compat import PagedAttentionCache

NAME = "qrt_paged"


def _layout(cu_q: list[int], cu_k: list[int], device) -> tuple[torch.Tensor, ...]:
    """Index tensors for B sequences: q_idx [B, Lmax], k_idx [B, Smax] (positions into
    the packed rows, clamped), allowed [B, Lmax, Smax] (key s visible to query j: s <=
    past + j), q_valid [B, Lmax]. Padding rows may see key 0 (results are dropped)."""
    lens_q = torch.tensor([b - a for a, b in zip(cu_q, cu_q[1:])], device=device)
    lens_k = torch.tensor([b - a for a, b in zip(cu_k, cu_k[1:])], device=device)
    l_max, s_max = int(lens_q.max()), int(lens_k.max())
    j = torch.arange(l_max, device=device)
    s = torch.arange(s_max, device=device)
    q_idx = (torch.tensor(cu_q[:-1], device=device)[:, None] + j).clamp(max=cu_q[-1] - 1)
    k_idx = (torch.tensor(cu_k[:-1], device=device)[:, None] + s).clamp(max=max(cu_k[-1] - 1, 0))
    past = (lens_k - lens_q)[:, None, None]
    q_valid = j[None, :] < lens_q[:, None]
    allowed = (s[None, None, :] <= past + j[None, :, None]) & q_valid[:, :, None]
    allowed[:, :, 0] |= ~q_valid  # padding rows: one visible key keeps the softmax finite
    return q_idx, k_idx, allowed, q_valid


_LAST: dict = {}


def _cached_layout(cu_q: list[int], cu_k: list[int], device) -> tuple[torch.Tensor, ...]:
    """_layout, computed once per forward: every layer of a step sees the same lengths."""
    key = (tuple(cu_q), tuple(cu_k), str(device))
    if key not in _LAST:
        _LAST.clear()
        _LAST[key] = _layout(cu_q, cu_k, device)
    return _LAST[key]


def paged_attention_forward(module, query, key, value, attention_mask, dropout: float = 0.0,
                            scaling: float | None = None, cache=None, **kwargs):
    """query [1, H, Tq, D] (all sequences' new tokens, packed), key/value [1, Hkv, Tq, D].
    Returns attn_output [1, Tq, H, D] and None, like transformers' SDPA wrapper."""
    if not isinstance(cache, PagedAttentionCache):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)
    key, value = cache.update(key_states=key, value_states=value, layer_idx=module.layer_idx, kwargs=kwargs)
    out = attend_packed(query, key, value, kwargs["cu_seq_lens_q"].tolist(), kwargs["cu_seq_lens_k"].tolist(),
                        scaling if scaling is not None else query.shape[-1] ** -0.5)
    return out.unsqueeze(0), None


def attend_packed(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, cu_q: list[int], cu_k: list[int],
                  scale: float) -> torch.Tensor:
    """Causal attention of packed sequences, each over its own keys.
    query [1, H, Tq, D]; key/value [1, Hkv, Tk, D]; sequence i owns query rows
    cu_q[i]:cu_q[i+1] and keys cu_k[i]:cu_k[i+1], its queries being its last tokens.
    Zero-length trailing sequences (batch padding) are ignored. Returns [Tq, H, D]."""
    n_seq = next((i for i in range(1, len(cu_q)) if cu_q[i] == cu_q[-1]), len(cu_q) - 1)
    cu_q, cu_k = cu_q[:n_seq + 1], cu_k[:n_seq + 1]
    q_idx, k_idx, allowed, q_valid = _cached_layout(cu_q, cu_k, query.device)
    h, h_kv, d = query.shape[1], key.shape[1], query.shape[-1]
    rep = h // h_kv
    b, l_max, s_max = allowed.shape
    # layout [Hkv * B, rows, D]: batch dims stay contiguous, so bmm needs no copies
    q = query[0].index_select(1, q_idx.flatten()).view(h_kv, rep, b, l_max, d).transpose(1, 2)
    q = q.reshape(h_kv * b, rep * l_max, d).double()
    k = key[0].index_select(1, k_idx.flatten()).double().view(h_kv * b, s_max, d)
    v = value[0].index_select(1, k_idx.flatten()).double().view(h_kv * b, s_max, d)
    scores = torch.bmm(q, k.transpose(1, 2)).mul_(scale)  # [Hkv * B, rep * L, S]
    scores.view(h_kv, b, rep, l_max, s_max).masked_fill_(~allowed[None, :, None], float("-inf"))
    out = torch.bmm(scores.softmax(dim=-1), v).to(query.dtype)  # [Hkv * B, rep * L, D]
    out = out.view(h_kv, b, rep, l_max, d).permute(1, 3, 0, 2, 4).reshape(b, l_max, h, d)
    packed = out[q_valid]  # [Tq, H, D], rows in packed order
    if packed.shape[0] < query.shape[2]:  # trailing padding tokens, if the batch was padded
        packed = torch.cat([packed, packed.new_zeros(query.shape[2] - packed.shape[0], h, d)])
    return packed


def register() -> str:
    """Make "qrt_paged" known to transformers (idempotent); returns the name."""
    AttentionInterface.register(NAME, paged_attention_forward)
    return NAME
