"""Plain-torch twins of every kernel: same signature, same math, fp32 accumulation.

They are the test oracle for the Triton kernels and the fallback where Triton cannot run.
Packed weights use the compressed-tensors layout: int32 [N, ceil(K*bits/32)], packed along
K, least-significant bits first, stored value = q + 2^(bits-1).
"""
from __future__ import annotations

import torch


def unpack_rows(w_packed: torch.Tensor, bits: int, k: int) -> torch.Tensor:
    """int32 [N, K*bits/32] -> int32 signed values [N, K], for bits in {2, 4, 8}
    (bits dividing 32: no value straddles a word)."""
    per_word = 32 // bits
    shifts = torch.arange(per_word, device=w_packed.device, dtype=torch.int32) * bits
    u = (w_packed.unsqueeze(-1) >> shifts) & ((1 << bits) - 1)  # arithmetic shift, then mask
    return u.reshape(w_packed.shape[0], -1)[:, :k] - (1 << (bits - 1))


def dequant_weight(w_packed: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor | None,
                   bits: int, group_size: int, k: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """-> W [N, K] = (q - zero) * scale, computed in float32, returned in dtype;
    scales/zeros [N, ceil(K/group_size)]. Twin of qrt_kernels.dequant.dequant_weight."""
    q = unpack_rows(w_packed, bits, k).float()
    if zeros is not None:
        q = q - zeros.float().repeat_interleave(group_size, dim=1)[:, :k]
    return (q * scales.float().repeat_interleave(group_size, dim=1)[:, :k]).to(dtype)


def dequant_matmul_ref(x: torch.Tensor, w_packed: torch.Tensor, scales: torch.Tensor,
                       zeros: torch.Tensor | None, bits: int, group_size: int,
                       bias: torch.Tensor | None = None) -> torch.Tensor:
    """y [M, N] = x [M, K] @ dequant(W).T (+ bias), fp32 accumulation, output in x.dtype.

    w_packed int32 [N, ceil(K*bits/32)]; scales [N, G]; zeros int [N, G] or None;
    G = ceil(K / group_size) (the last group may be ragged).
    """
    k = x.shape[-1]
    w = dequant_weight(w_packed, scales, zeros, bits, group_size, k)
    y = x.float() @ w.t()
    if bias is not None:
        y = y + bias.float()
    return y.to(x.dtype)
