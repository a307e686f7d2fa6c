"""The one place that picks a kernel and its block config by M, shape and device.

Sections are per kernel family; each keeps its selection and entry point together.
"""
from __future__ import annotations

import functools
import math
import os

import torch
import torch.nn.functional as F

from .a16_configs import A16Config, a16_table_for
from .arg_checks import check_dequant_matmul_args
from .launch import capture_target
from .reference import dequant_matmul_ref

# Programs per SM the grid should reach before split-K stops adding K slices.
_PROGRAMS_PER_SM = 2
# Interpreter runs have no SMs; a small stand-in keeps split-K exercised on tiny test shapes.
_INTERPRETER_SMS = 4


def triton_runs_on(device: torch.device) -> bool:
    """Triton kernels run on CUDA, and on the CPU only under TRITON_INTERPRET=1 (tests);
    while launches are captured (launch.capture_launches), meta tensors stand for CUDA."""
    if device.type == "meta" and capture_target() is not None:
        return True
    return device.type == "cuda" or (device.type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1")


def _device_info(device: torch.device) -> tuple[str | None, int]:
    """(name, SM count) of a CUDA device or of the capture target; (None, stand-in) elsewhere."""
    target = capture_target()
    if target is not None:
        return target.name, target.n_sm
    return _cuda_device_info(device) if device.type == "cuda" else (None, _INTERPRETER_SMS)


@functools.lru_cache(maxsize=None)
def _cuda_device_info(device: torch.device) -> tuple[str, int]:
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


def _fit_block_k(cfg: A16Config, group_size: int, k: int, bits: int) -> A16Config:
    """Shrink BLOCK_K (not below 16) until it divides the group size, so each K block lies
    in one group and the scale can multiply the fp32 dot result (the decode kernel also
    takes a BLOCK_K holding several whole groups, one dot per group). Tile kernel: when no such
    block exists (group size not a multiple of 16) it scales each element instead; decode
    kernel: the tile kernel takes over when no BLOCK_K of >= 4 words divides the group."""
    if cfg.kernel == "dequant_torch" or group_size >= k:
        return cfg
    if (cfg.kernel == "decode" and cfg.block_k % group_size == 0 and group_size & (group_size - 1) == 0
            and group_size * bits >= 128):
        return cfg  # whole groups per K block: the decode kernel scales each group's dot
    bk = cfg.block_k
    while bk > 16 and group_size % bk:
        bk //= 2
    if group_size % bk == 0 and (cfg.kernel == "tile" or bk >= 128 // bits):
        return cfg.replace(block_k=bk)
    if cfg.kernel == "decode":  # it needs >= 4 words per row and block: the tile kernel takes over
        tile = A16Config("tile", cfg.max_m, block_m=min(64, max(16, cfg.block_m)), block_n=64, block_k=64,
                         num_stages=3)
        return _fit_block_k(tile, group_size, k, bits)
    return cfg


def select_a16_config(m: int, n: int, k: int, group_size: int, table: tuple[A16Config, ...],
                      n_sm: int, bits: int = 4) -> A16Config:
    """The table row for M, with split_k resolved and BLOCK_K fitted to the group size.
    The decode kernel never splits K (one launch per linear, no atomics)."""
    cfg = next(row for row in table if row.max_m is None or m <= row.max_m)
    cfg = _fit_block_k(cfg, group_size, k, bits)
    if cfg.kernel == "decode":
        return cfg.replace(split_k=1)
    if cfg.kernel == "tile" and cfg.split_k is None:
        cfg = cfg.replace(split_k=_auto_split_k(m, n, k, cfg, n_sm))
    return cfg


def a16_config_for(x: torch.Tensor, n: int, group_size: int, bits: int) -> A16Config:
    """The config dequant_matmul uses for x [M, K] against an N-row weight on x's device."""
    name, n_sm = _device_info(x.device)
    return select_a16_config(x.shape[0], n, x.shape[1], group_size, a16_table_for(name), n_sm, bits)


def dequant_matmul(x: torch.Tensor, w_packed: torch.Tensor, scales: torch.Tensor,
                   zeros: torch.Tensor | None, bits: int, group_size: int,
                   bias: torch.Tensor | None = None) -> torch.Tensor:
    """y [M, N] = x [M, K] @ dequant(W).T (+ bias), fp32 accumulation, y in x.dtype.

    w_packed int32 [N, ceil(K*bits/32)] (compressed-tensors layout, bits 2/4/8); scales
    [N, ceil(K/group_size)] (per-channel: [N, 1] with group_size >= K); zeros int [N, groups]
    or None (dequant = (q - zeros) * scales); bias [N] or None.
    M <= 16: GEMV kernel; larger M: tile kernel; past the crossover, and for fp32 x:
    dequantize + torch matmul. Without Triton (CPU, no interpreter): the plain-torch twin.
    """
    m, n, k = check_dequant_matmul_args(x, w_packed, scales, zeros, bits, group_size, bias)
    if not triton_runs_on(x.device):
        return dequant_matmul_ref(x, w_packed, scales, zeros, bits, group_size, bias)
    # imported here: triton exists only on Linux x86_64, and the CPU path above needs none
    from .dequant import dequant_weight
    from .dequant_matmul import dequant_matmul_tile
    from .gemv_a16 import dequant_matmul_decode
    cfg = a16_config_for(x, n, group_size, bits)
    # fp32 activations: no fp32 tensor-core path worth having (an FMA dot spills); the
    # dequantized weight and torch's matmul (TF32 if the user allows it) are the fast route
    if cfg.kernel == "decode" and x.dtype != torch.float32:
        return dequant_matmul_decode(x, w_packed, scales, zeros, bits, group_size, bias, cfg=cfg)
    if cfg.kernel == "tile" and x.dtype != torch.float32:
        return dequant_matmul_tile(x, w_packed, scales, zeros, bits, group_size, bias, cfg=cfg)
    w = dequant_weight(w_packed, scales, zeros, bits, group_size, k, dtype=x.dtype)
    return F.linear(x, w, None if bias is None else bias.to(x.dtype))


# ---- int8-activation GEMMs ----
# W8A8 / W4A8 / W8A8-static. Ops (namespace qrt): quant_per_token, quant_static,
# a8_matmul, a8_gemv; Python entry points: quant_per_token, quant_static, int8_matmul,
# w4a8_matmul, a8_gemv, a8_linear (picks fused GEMV or quantize + tensor-core GEMM by M).
# Block configs below are UNTUNED: no GPU was available when they were written; they
# follow the Triton tutorial's shapes (int8 tiles 128 bytes deep along K), checked on the
# static sm_90 report (bench/gpu_static.py: smem, spills, waves on 132 SMs).

A8_GEMV_MAX_M = 4  # tokens up to which the fused quantize+GEMV kernel beats quantize+GEMM


def _quant_warps(k: int) -> int:
    """Warps for one row per program: about 32 fp32 values per thread when the row fits
    in registers, so long rows do not spill."""
    return min(16, max(4, (1 << max(0, k - 1).bit_length()) // 1024))


def quant_per_token(x: torch.Tensor, symmetric: bool = True
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Dynamic per-token int8: x [M, K] -> (q int8 [M, K], scale fp32 [M], zp int32 [M] or
    None when symmetric). Zero rows: scale 0, q 0. Rows with inf/NaN: scale NaN, q 0."""
    from .act_quant import quant_rows  # triton only when a kernel runs
    q, scale, zp = quant_rows(x, symmetric, num_warps=_quant_warps(x.shape[1]))
    return q, scale, None if symmetric else zp


def quant_static(x: torch.Tensor, input_scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Static per-tensor int8: x [M, K], input_scale fp32 [1] -> (q int8 [M, K], per-row
    scale fp32 [M]: input_scale, or NaN for rows holding inf/NaN)."""
    from .act_quant import quant_rows
    q, scale, _ = quant_rows(x, True, input_scale, num_warps=_quant_warps(x.shape[1]))
    return q, scale


def _a8_gemm_config(m: int, group_size: int) -> dict:
    """Tile shape by M; BLOCK_K must divide the group so each group's int32 sum is whole."""
    if m <= 16:  # block_n 16: N=4096 gives 256 programs, >= 1 wave on 132 SMs
        cfg = dict(block_m=16, block_n=16, block_k=128, num_warps=4, num_stages=4)
    elif m <= 64:
        cfg = dict(block_m=32, block_n=64, block_k=128, num_warps=4, num_stages=4)
    elif m <= 256:
        cfg = dict(block_m=64, block_n=128, block_k=128, num_warps=4, num_stages=3)
    else:
        cfg = dict(block_m=128, block_n=128, block_k=128, num_warps=8, num_stages=3)
    if group_size:
        cfg["block_k"] = math.gcd(cfg["block_k"], group_size)
    return cfg


def _a8_matmul(xq, sx, x_zp, w, w_scales, w_sums, bias, w_bits: int, group_size: int,
               out_dtype: torch.dtype) -> torch.Tensor:
    from .int8_matmul import a8_matmul
    return a8_matmul(xq, sx, w, w_scales, w_bits=w_bits, group_size=group_size, bias=bias,
                     out_dtype=out_dtype, x_zp=x_zp, w_sums=w_sums,
                     **_a8_gemm_config(xq.shape[0], group_size))


def _group_or_channel(group_size: int, k: int) -> int:
    """0 (per channel) when one group spans all of K."""
    return 0 if group_size <= 0 or group_size >= k else group_size


def int8_matmul(xq: torch.Tensor, sx: torch.Tensor, wq: torch.Tensor, sw: torch.Tensor,
                bias: torch.Tensor | None = None, out_dtype: torch.dtype = torch.float16,
                x_zp: torch.Tensor | None = None, w_sums: torch.Tensor | None = None) -> torch.Tensor:
    """W8A8: xq int8 [M, K] (per-token scale sx fp32 [M]) @ wq int8 [N, K] (per-channel
    scale sw fp32 [N] or [N, 1]) -> y [M, N] out_dtype, + bias [N]. Asymmetric tokens:
    x_zp int32 [M] with w_sums int32 [N, 1] = wq.sum(1)."""
    sw = sw.reshape(-1, 1).float().contiguous()
    return _a8_matmul(xq, sx, x_zp, wq, sw, w_sums, bias, 8, 0, out_dtype)


def w4a8_matmul(xq: torch.Tensor, sx: torch.Tensor, w_packed: torch.Tensor, w_scales: torch.Tensor,
                group_size: int, bias: torch.Tensor | None = None, out_dtype: torch.dtype = torch.float16,
                x_zp: torch.Tensor | None = None, w_sums: torch.Tensor | None = None) -> torch.Tensor:
    """W4A8 (8da4w): xq int8 [M, K], sx fp32 [M]; w_packed int32 [N, ceil(K/8)] in the
    compressed-tensors layout (LSB first, stored q + 8); w_scales fp32 [N, ceil(K/group_size)]
    (group_size a multiple of 16; >= K or 0 means per channel) -> y [M, N] out_dtype."""
    gs = _group_or_channel(group_size, xq.shape[1])
    return _a8_matmul(xq, sx, x_zp, w_packed, w_scales.float().contiguous(), w_sums, bias, 4, gs,
                         out_dtype)


def _a8_gemv(x, input_scale, w, w_scales, bias, w_bits: int, group_size: int, symmetric: bool):
    block_k = math.gcd(128, group_size) if group_size else 256
    from .int8_gemv import a8_gemv as _launch
    return _launch(x, w, w_scales, w_bits=w_bits, group_size=group_size, bias=bias,
                   symmetric=symmetric, input_scale=input_scale, block_n=16, block_k=block_k, num_warps=4)


def a8_gemv(x: torch.Tensor, w: torch.Tensor, w_scales: torch.Tensor, *, w_bits: int, group_size: int,
            bias: torch.Tensor | None = None, symmetric: bool = True,
            input_scale: torch.Tensor | None = None) -> torch.Tensor:
    """Small-M fused path: quantize x [M, K] per token (or with input_scale fp32 [1]) and
    multiply by int8 [N, K] / packed int4 [N, ceil(K/8)] weights in one launch -> [M, N]."""
    gs = _group_or_channel(group_size, x.shape[1])
    return _a8_gemv(x, input_scale, w, w_scales, bias, w_bits, gs, symmetric)


def a8_linear(x: torch.Tensor, w: torch.Tensor, w_scales: torch.Tensor, *, w_bits: int,
              group_size: int, bias: torch.Tensor | None = None, symmetric: bool = True,
              input_scale: torch.Tensor | None = None, w_sums: torch.Tensor | None = None) -> torch.Tensor:
    """y [M, N] = int8-quantized x [M, K] @ W^T (+ bias), output in x.dtype; the kernel is
    chosen by M. w_sums int32 [N, G] is needed for asymmetric tokens on the GEMM path."""
    x = x if x.stride(-1) == 1 else x.contiguous()
    gs = _group_or_channel(group_size, x.shape[1])
    if x.shape[0] <= A8_GEMV_MAX_M:
        return _a8_gemv(x, input_scale, w, w_scales, bias, w_bits, gs, symmetric)
    if input_scale is not None:
        xq, sx = quant_static(x, input_scale)
        x_zp = None
    else:
        xq, sx, x_zp = quant_per_token(x, symmetric)
    return _a8_matmul(xq, sx, x_zp, w, w_scales, w_sums if x_zp is not None else None, bias,
                         w_bits, gs, x.dtype)


# ---- FP8 / FP4 weights (fp8_matmul.py, fp4_matmul.py) ----
# Block configs are UNTUNED (no GPU when written): Triton-tutorial tile shapes by M.

def _float_tile_config(m: int) -> dict:
    if m <= 16:
        return dict(block_m=16, block_n=64, block_k=64, num_warps=4, num_stages=4)
    if m <= 64:
        return dict(block_m=32, block_n=64, block_k=64, num_warps=4, num_stages=4)
    return dict(block_m=64, block_n=128, block_k=64, num_warps=4, num_stages=3)


def native_fp8(device: torch.device) -> bool:
    """Triton's e4m3 type and FP8 tl.dot: sm_89 (Ada) and sm_90+ (Hopper); below that the
    kernels decode FP8 bytes to fp16. Captures plan for sm_90; the interpreter emulates e4m3
    (tests run the decode path through the launchers' native_fp8=False)."""
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device) >= (8, 9)
    return True


def fp8_linear(x: torch.Tensor, w: torch.Tensor, w_scale: torch.Tensor, bias: torch.Tensor | None,
               act_fp8: bool) -> torch.Tensor:
    """y [M, N] in x.dtype = x [M, K] @ (W_fp8 [N, K] * w_scale [N]).T (+ bias). act_fp8:
    quantize x per token to FP8 first (W8A8-FP8). Triton where it runs, else the twin."""
    from .arg_checks import check_fp8_linear_args
    check_fp8_linear_args(x, w, w_scale, bias)
    if not triton_runs_on(x.device):
        from .reference import fp8_linear_ref
        return fp8_linear_ref(x, w, w_scale, bias, act_fp8)
    from .fp8_matmul import fp8_matmul, fp8_quant_rows
    x = x if x.stride(-1) == 1 else x.contiguous()
    out_dtype, a, sx, native = x.dtype, x, None, native_fp8(x.device)
    if act_fp8:
        a, sx = fp8_quant_rows(x, native, num_warps=_quant_warps(x.shape[1]))
    return fp8_matmul(a, w, sx, w_scale, bias, out_dtype, native, **_float_tile_config(x.shape[0]))


def fp4_matmul(x: torch.Tensor, w_packed: torch.Tensor, scales: torch.Tensor,
               global_scale: torch.Tensor | None, group_size: int,
               bias: torch.Tensor | None = None) -> torch.Tensor:
    """y [M, N] in x.dtype = x [M, K] @ dequant(FP4 W).T (+ bias); NVFP4 when global_scale
    is given, else MXFP4. Triton where it runs, else the twin."""
    from .arg_checks import check_fp4_matmul_args
    check_fp4_matmul_args(x, w_packed, scales, global_scale, group_size, bias)
    if not triton_runs_on(x.device):
        from .reference import fp4_matmul_ref
        return fp4_matmul_ref(x, w_packed, scales, global_scale, group_size, bias)
    from .fp4_matmul import fp4_matmul as _launch
    x = x if x.stride(-1) == 1 else x.contiguous()
    cfg = _float_tile_config(x.shape[0])
    if x.shape[0] > 64:  # 4 warps spill (sm_90 compile: 255 regs + 536 B stack); 8 do not (224)
        cfg.update(num_warps=8)
    return _launch(x, w_packed, scales, global_scale, group_size, bias, **cfg)
