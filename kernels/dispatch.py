"""The one place that picks a kernel and its block config by M, shape and device.

Sections are per kernel family; each keeps its selection and entry point together.
"""
from __future__ import annotations

import functools
import os

import torch
import torch.nn.functional as F

from .a16_configs import A16Config, a16_table_for
from .arg_checks import check_dequant_matmul_args
from .reference import dequant_matmul_ref

# Programs per SM the grid should reach before split-K stops adding K slices.
_PROGRAMS_PER_SM = 2
# Interpreter runs have no SMs; a small stand-in keeps split-K exercised on tiny test shapes.
_INTERPRETER_SMS = 4


def triton_runs_on(device: torch.device) -> bool:
    """Triton kernels run on CUDA, and on the CPU only under TRITON_INTERPRET=1 (tests)."""
    return device.type == "cuda" or (device.type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1")


@functools.lru_cache(maxsize=None)
def _device_info(device: torch.device) -> tuple[str | None, int]:
    """(name, SM count) of a CUDA device; (None, stand-in) elsewhere."""
    if device.type != "cuda":
        return None, _INTERPRETER_SMS
    props = torch.cuda.get_device_properties(device)
    return props.name, props.multi_processor_count


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


# ---- WxA16: fused dequant-matmul -----------------------------------------------------------

def _auto_split_k(m: int, n: int, k: int, cfg: A16Config, n_sm: int) -> int:
    """Double the K slices while the grid under-fills the GPU and each slice keeps >= 4
    K-blocks of work (fewer would spend more on the fp32 atomics than they save)."""
    tiles = _cdiv(m, cfg.block_m) * _cdiv(n, cfg.block_n)
    k_blocks = _cdiv(k, cfg.block_k)
    split = 1
    while tiles * split < _PROGRAMS_PER_SM * n_sm and k_blocks >= 8 * split and split < 16:
        split *= 2
    return split


def _fit_block_k(cfg: A16Config, group_size: int, k: int) -> A16Config:
    """Tile kernel: shrink BLOCK_K (not below 16) until it divides the group size, so each
    K block lies in one group and the scale can multiply the fp32 dot result. When no such
    block exists (group size not a multiple of 16) the kernel scales each element instead."""
    if cfg.kernel != "tile" or group_size >= k:
        return cfg
    bk = cfg.block_k
    while bk > 16 and group_size % bk:
        bk //= 2
    return cfg.replace(block_k=bk) if group_size % bk == 0 else cfg


def select_a16_config(m: int, n: int, k: int, group_size: int, table: tuple[A16Config, ...],
                      n_sm: int) -> A16Config:
    """The table row for M, with split_k resolved and BLOCK_K fitted to the group size."""
    cfg = next(row for row in table if row.max_m is None or m <= row.max_m)
    cfg = _fit_block_k(cfg, group_size, k)
    if cfg.kernel != "dequant_torch" and cfg.split_k is None:
        cfg = cfg.replace(split_k=_auto_split_k(m, n, k, cfg, n_sm))
    return cfg


def a16_config_for(x: torch.Tensor, n: int, group_size: int) -> A16Config:
    """The config dequant_matmul uses for x [M, K] against an N-row weight on x's device."""
    name, n_sm = _device_info(x.device)
    return select_a16_config(x.shape[0], n, x.shape[1], group_size, a16_table_for(name), n_sm)


def dequant_matmul(x: torch.Tensor, w_packed: torch.Tensor, scales: torch.Tensor,
                   zeros: torch.Tensor | None, bits: int, group_size: int,
                   bias: torch.Tensor | None = None) -> torch.Tensor:
    """y [M, N] = x [M, K] @ dequant(W).T (+ bias), fp32 accumulation, y in x.dtype.

    w_packed int32 [N, ceil(K*bits/32)] (compressed-tensors layout, bits 2/4/8); scales
    [N, ceil(K/group_size)] (per-channel: [N, 1] with group_size >= K); zeros int [N, groups]
    or None (dequant = (q - zeros) * scales); bias [N] or None.
    Small M: decode kernel; larger M: tile kernel; past the crossover: dequantize + torch
    matmul. Without Triton (CPU, no interpreter): the plain-torch twin.
    """
    m, n, k = check_dequant_matmul_args(x, w_packed, scales, zeros, bits, group_size, bias)
    if not triton_runs_on(x.device):
        return dequant_matmul_ref(x, w_packed, scales, zeros, bits, group_size, bias)
    # imported here: triton exists only on Linux x86_64, and the CPU path above needs none
    from .dequant import dequant_weight
    from .dequant_matmul import dequant_matmul_decode, dequant_matmul_tile
    cfg = a16_config_for(x, n, group_size)
    if cfg.kernel == "decode":
        return dequant_matmul_decode(x, w_packed, scales, zeros, bits, group_size, bias, cfg=cfg)
    if cfg.kernel == "tile":
        return dequant_matmul_tile(x, w_packed, scales, zeros, bits, group_size, bias, cfg=cfg)
    w = dequant_weight(w_packed, scales, zeros, bits, group_size, k, dtype=x.dtype)
    return F.linear(x, w, None if bias is None else bias.to(x.dtype))
