"""Packing b-bit integers into int32 words, the compressed-tensors pack-quantized layout.

Dense and least-significant-bits first: element i of a packed row occupies bits
[i*b, i*b + b) of the row's bit stream, so for b=3 elements straddle word boundaries.
A row of n elements takes ceil(n*b/32) words. Stored values are offset to unsigned:
stored = q + 2^(b-1). `dim` is the packed dimension (1: along each row, as for
`weight_packed`; 0: along columns, as for `weight_zero_point`).
"""
from __future__ import annotations

import sys

import torch

_U32 = (1 << 32) - 1


def packed_words(n: int, bits: int) -> int:
    return -(-n * bits // 32)


def _bit_positions(n: int, bits: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    start = torch.arange(n, device=device, dtype=torch.int64) * bits
    return start // 32, start % 32


def pack_int32(q: torch.Tensor, bits: int, dim: int = 1) -> torch.Tensor:
    """int8 signed values [rows, n] -> int32 [rows, ceil(n*bits/32)] (dim=1)."""
    if q.dtype != torch.int8:
        raise ValueError(f"pack_int32 expects int8 values, found {q.dtype}")
    if q.ndim != 2 or dim not in (0, 1):
        raise ValueError(f"pack_int32 expects a 2-D tensor and dim 0 or 1, found shape "
                         f"{tuple(q.shape)}, dim={dim}")
    if not 1 <= bits <= 8:
        raise ValueError(f"bits must be in [1, 8], found {bits}")
    if dim == 0:
        return pack_int32(q.t().contiguous(), bits, 1).t().contiguous()
    qmin, qmax = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    if q.numel() and (q.min() < qmin or q.max() > qmax):
        raise ValueError(f"values outside the {bits}-bit range [{qmin}, {qmax}]: "
                         f"found [{int(q.min())}, {int(q.max())}]")
    rows, n = q.shape
    if 32 % bits == 0:
        return _pack_aligned(q, bits)
    u = q.to(torch.int64) + (1 << (bits - 1))
    word, off = _bit_positions(n, bits, q.device)
    out = torch.zeros(rows, packed_words(n, bits) + 1, dtype=torch.int64, device=q.device)
    # bits are disjoint, so adding places them; spilled high bits go to the next word
    out.scatter_add_(1, word.expand(rows, n), (u << off) & _U32)
    out.scatter_add_(1, (word + 1).expand(rows, n), u >> (32 - off))
    out = out[:, :-1]
    out = torch.where(out >= (1 << 31), out - (1 << 32), out)  # reinterpret as int32
    return out.to(torch.int32).contiguous()


def unpack_int32(packed: torch.Tensor, bits: int, n: int, dim: int = 1) -> torch.Tensor:
    """int32 [rows, words] -> int8 signed values [rows, n] (dim=1)."""
    if packed.dtype != torch.int32:
        raise ValueError(f"unpack_int32 expects int32 words, found {packed.dtype}")
    if dim == 0:
        return unpack_int32(packed.t().contiguous(), bits, n, 1).t().contiguous()
    rows, words = packed.shape
    if words != packed_words(n, bits):
        raise ValueError(f"{n} values of {bits} bits need {packed_words(n, bits)} int32 words "
                         f"per row, found {words}")
    if 32 % bits == 0:
        return _unpack_aligned(packed, bits, n)
    p = torch.cat([packed.to(torch.int64) & _U32,
                   torch.zeros(rows, 1, dtype=torch.int64, device=packed.device)], dim=1)
    word, off = _bit_positions(n, bits, packed.device)
    lo = p[:, word] >> off
    hi = p[:, word + 1] << (32 - off)
    u = (lo | hi) & ((1 << bits) - 1)
    return (u - (1 << (bits - 1))).to(torch.int8)


# -- bits dividing 32 (2, 4, 8): no value straddles a word, so each word is a fixed slice of
# 32/bits consecutive values and packing is a reshape plus shifts (~20x faster than the
# general bit-stream path above on the CPU; same words, checked in tests/quantize).
def _pack_aligned(q: torch.Tensor, bits: int) -> torch.Tensor:
    rows, n = q.shape
    per_word = 32 // bits
    u = (q.to(torch.int32) + (1 << (bits - 1)))
    pad = -n % per_word
    if pad:
        u = torch.cat([u, torch.zeros(rows, pad, dtype=torch.int32, device=q.device)], dim=1)
    u = u.reshape(rows, -1, per_word)
    shifts = torch.arange(0, 32, bits, dtype=torch.int32, device=q.device)
    # disjoint bit fields: summing places them (int32 wrap-around gives the sign bit)
    return (u << shifts).sum(dim=2, dtype=torch.int32).contiguous()


def _unpack_aligned(packed: torch.Tensor, bits: int, n: int) -> torch.Tensor:
    rows, words = packed.shape
    if sys.byteorder == "little":  # LSB-first words are LSB-first bytes: unpack bytes
        b = packed.contiguous().view(torch.uint8)
        if bits == 8:
            return (b ^ 0x80).view(torch.int8)[:, :n].contiguous()
        shifts = torch.arange(0, 8, bits, dtype=torch.uint8, device=packed.device)
        u = (b.unsqueeze(2) >> shifts) & ((1 << bits) - 1)  # uint8: 4x less traffic than int32
    else:
        shifts = torch.arange(0, 32, bits, dtype=torch.int32, device=packed.device)
        u = (packed.unsqueeze(2) >> shifts) & ((1 << bits) - 1)  # arithmetic shift, then mask
    return u.reshape(rows, -1)[:, :n].to(torch.int8) - (1 << (bits - 1))


# -- 8 bits: the packed words are the bytes of (q + 128), so a byte view and an XOR ------------
def packed8_to_int8(packed: torch.Tensor, n: int) -> torch.Tensor:
    """int32 [rows, ceil(n/4)] 8-bit packed words -> int8 q [rows, n]."""
    if sys.byteorder == "little" and n % 4 == 0:
        return (packed.contiguous().view(torch.uint8) ^ 0x80).view(torch.int8)
    return unpack_int32(packed, 8, n)


def int8_to_packed8(q: torch.Tensor) -> torch.Tensor:
    """int8 q [rows, n] -> int32 [rows, ceil(n/4)] in the pack-quantized layout."""
    if sys.byteorder == "little" and q.shape[-1] % 4 == 0:
        return (q.contiguous().view(torch.uint8) ^ 0x80).view(torch.int32)
    return pack_int32(q, 8)
