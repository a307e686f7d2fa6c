"""Test oracles: GPTQ and AWQ tensors built the way AutoGPTQ / AutoAWQ write them, with
numpy uint32 bit twiddling transcribed from the format descriptions (AutoGPTQ's
QuantLinear.pack loops, including its special 3-bit word pattern, and AutoAWQ's
WQLinear_GEMM.from_linear order map). Deliberately shares no code with qrt's readers,
and dequantizes with float64 numpy math."""
from __future__ import annotations

import numpy as np
import torch

from qrt.runtime.linear import QuantLinear


def _pack_rows_autogptq(vals: np.ndarray, bits: int) -> np.ndarray:
    """uint32 [R, C] -> uint32 [R*bits/32, C]: AutoGPTQ's row packing (qweight along K).
    Negative inputs must already be wrapped to uint32 (v1's zero - 1 underflow)."""
    vals = vals.astype(np.uint32)
    out = np.zeros((vals.shape[0] // 32 * bits, vals.shape[1]), dtype=np.uint32)
    i = row = 0
    while row < out.shape[0]:
        if bits in (2, 4, 8):
            for j in range(i, i + 32 // bits):
                out[row] |= vals[j] << np.uint32(bits * (j - i))
            i += 32 // bits
            row += 1
        else:  # 3 bits: 32 values across 3 words, values 10 and 21 straddle words
            for j in range(i, i + 10):
                out[row] |= vals[j] << np.uint32(3 * (j - i))
            i += 10
            out[row] |= vals[i] << np.uint32(30)
            row += 1
            out[row] |= (vals[i] >> np.uint32(2)) & np.uint32(1)
            i += 1
            for j in range(i, i + 10):
                out[row] |= vals[j] << np.uint32(3 * (j - i) + 1)
            i += 10
            out[row] |= vals[i] << np.uint32(31)
            row += 1
            out[row] |= (vals[i] >> np.uint32(1)) & np.uint32(3)
            i += 1
            for j in range(i, i + 10):
                out[row] |= vals[j] << np.uint32(3 * (j - i) + 2)
            i += 10
            row += 1
    return out


def _as_int32(words: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(words.astype(np.uint32).view(np.int32).copy())


def make_gptq_layer(k: int, n: int, bits: int, group_size: int, sym: bool, desc_act: bool,
                    fmt: str, gen: torch.Generator) -> tuple[dict, np.ndarray]:
    """Random GPTQ tensors {qweight, qzeros, scales, g_idx} and the float64 weight
    [n, k] they mean. fmt "gptq" stores zero - 1 (v1), "gptq_v2" the zero itself."""
    maxq = (1 << bits) - 1
    gs = k if group_size == -1 else group_size
    n_groups = -(-k // gs)
    q = torch.randint(0, maxq + 1, (k, n), generator=gen).numpy().astype(np.int64)
    if sym:
        zeros = np.full((n_groups, n), (maxq + 1) // 2, dtype=np.int64)
    else:  # v1 cannot store a zero of 0 (it underflows), so start at 1 there
        zeros = torch.randint(1 if fmt == "gptq" else 0, maxq + 1, (n_groups, n), generator=gen).numpy()
    scales = (torch.rand(n_groups, n, generator=gen) * 0.02 + 1e-3).half()
    g_idx = np.arange(k) // gs
    if desc_act:  # GPTQ with act-order: columns quantized in a permuted order
        perm = torch.randperm(k, generator=gen).numpy()
        g_idx = (np.arange(k) // gs)[np.argsort(perm)]
    stored_zeros = zeros - 1 if fmt == "gptq" else zeros
    qzeros = _pack_rows_autogptq(stored_zeros.astype(np.int64).astype(np.uint32).T.copy(), bits).T
    tensors = {"qweight": _as_int32(_pack_rows_autogptq(q.astype(np.uint32), bits)),
               "qzeros": _as_int32(qzeros.copy()), "scales": scales,
               "g_idx": torch.from_numpy(g_idx.astype(np.int32))}
    s64 = scales.double().numpy()
    w = (q - zeros[g_idx, :]).astype(np.float64) * s64[g_idx, :]  # [k, n]
    return tensors, w.T.copy()


AWQ_ORDER_MAP = [0, 2, 4, 6, 1, 3, 5, 7]


def _pack_cols_autoawq(vals: np.ndarray) -> np.ndarray:
    """uint32 [R, C] (4-bit values) -> uint32 [R, C/8], AutoAWQ's GEMM order."""
    vals = vals.astype(np.uint32)
    out = np.zeros((vals.shape[0], vals.shape[1] // 8), dtype=np.uint32)
    for col in range(vals.shape[1] // 8):
        for i in range(8):
            out[:, col] |= vals[:, col * 8 + AWQ_ORDER_MAP[i]] << np.uint32(i * 4)
    return out


def make_awq_layer(k: int, n: int, group_size: int, gen: torch.Generator,
                   zeros_value: int | None = None) -> tuple[dict, np.ndarray]:
    """Random AWQ GEMM tensors {qweight, qzeros, scales} and their float64 weight
    [n, k]. zeros_value: every zero point this value (else random in [0, 15])."""
    n_groups = k // group_size
    q = torch.randint(0, 16, (k, n), generator=gen).numpy().astype(np.int64)
    zeros = (np.full((n_groups, n), zeros_value) if zeros_value is not None
             else torch.randint(0, 16, (n_groups, n), generator=gen).numpy()).astype(np.int64)
    scales = (torch.rand(n_groups, n, generator=gen) * 0.02 + 1e-3).half()
    tensors = {"qweight": _as_int32(_pack_cols_autoawq(q)), "qzeros": _as_int32(_pack_cols_autoawq(zeros)),
               "scales": scales}
    rows = np.arange(k) // group_size
    w = (q - zeros[rows, :]).astype(np.float64) * scales.double().numpy()[rows, :]
    return tensors, w.T.copy()


def quant_linear_from_buffers(scheme, buffers: dict, in_features: int, out_features: int,
                              dtype=torch.float16) -> QuantLinear:
    """A QuantLinear whose state is exactly `buffers` (strict: no missing/unexpected keys)."""
    m = QuantLinear(in_features, out_features, bias=False, scheme=scheme, dtype=dtype)
    state = dict(buffers, weight_shape=torch.tensor([out_features, in_features]))
    m.load_state_dict(state, strict=True)
    return m
