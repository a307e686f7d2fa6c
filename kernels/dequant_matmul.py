"""Fused dequant-matmul for packed 2/4/8-bit weights: y = x @ dequant(W).T (+ bias).

Weights stay in the compressed-tensors layout: int32 [N, ceil(K*bits/32)], packed along K,
least-significant bits first, stored value u = q + 2^(bits-1); dequant(W) = (q - z) * s
with per-group scales/zeros [N, ceil(K/GROUP_SIZE)] (per-channel: GROUP_SIZE >= K).

Two kernels, picked by M in dispatch.py:
  dequant_matmul_decode_kernel  small M: BLOCK_M (1..8) rows on CUDA cores, split-K, so
                                M=1 reads every weight once and wastes no 16-row MMA tile.
  dequant_matmul_tile_kernel    larger M: tensor-core tl.dot tiles, optional split-K.
Both accumulate in fp32 and write x.dtype (split-K: fp32 atomics, cast by the launcher).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .a16_configs import A16Config
from .arg_checks import check_dequant_matmul_args
from .launch import launch


@triton.jit
def _load_q_tile(w_ptr, k0, offs_n, K, N, stride_wn, stride_wk,
                 BITS: tl.constexpr, BLOCK_K: tl.constexpr):
    """-> int32 [BLOCK_K, BLOCK_N] of the signed values q for columns k0 .. k0+BLOCK_K-1
    (k0 a multiple of BLOCK_K; values past K are junk and must meet x = 0 there)."""
    PER_WORD: tl.constexpr = 32 // BITS
    # load each packed word once: [BLOCK_K / PER_WORD, BLOCK_N] words hold the whole tile
    offs_kw = k0 // PER_WORD + tl.arange(0, BLOCK_K // PER_WORD)
    words = tl.load(w_ptr + offs_n[None, :] * stride_wn + offs_kw[:, None] * stride_wk,
                    mask=(offs_kw[:, None] < tl.cdiv(K, PER_WORD)) & (offs_n[None, :] < N), other=0)
    # value j of a word sits at bits [j*BITS, (j+1)*BITS), LSB first: shift out every j,
    # then flatten (word, j) -> k = word * PER_WORD + j
    shifts = tl.arange(0, PER_WORD) * BITS
    u = (words[:, None, :] >> shifts[None, :, None]) & ((1 << BITS) - 1)
    return tl.reshape(u, (BLOCK_K, words.shape[1])) - (1 << (BITS - 1))


@triton.jit
def _dequant_tile(w_ptr, scales_ptr, zeros_ptr, k0, offs_n, K, N,
                  stride_wn, stride_wk, stride_sn, stride_sg,
                  BITS: tl.constexpr, GROUP_SIZE: tl.constexpr, HAS_ZEROS: tl.constexpr,
                  BLOCK_K: tl.constexpr):
    """-> fp32 [BLOCK_K, BLOCK_N] of (q - z) * s, exact for fp16/bf16 scales; 0 past K."""
    q = _load_q_tile(w_ptr, k0, offs_n, K, N, stride_wn, stride_wk, BITS, BLOCK_K)
    # every element looks up its own group: right for any GROUP_SIZE and a ragged last group
    offs_k = k0 + tl.arange(0, BLOCK_K)
    g = offs_k[:, None] // GROUP_SIZE
    mask = (offs_k[:, None] < K) & (offs_n[None, :] < N)
    qparam_offs = offs_n[None, :] * stride_sn + g * stride_sg
    # zeros has the scales' shape and (checked) contiguity, so it shares the scales' strides
    if HAS_ZEROS:
        q -= tl.load(zeros_ptr + qparam_offs, mask=mask, other=0).to(tl.int32)
    s = tl.load(scales_ptr + qparam_offs, mask=mask, other=0.0)
    return q.to(tl.float32) * s.to(tl.float32)


@triton.jit
def _store_output(acc, y_ptr, bias_ptr, offs_m, offs_n, M, N, stride_ym, stride_yn, pid_k,
                  HAS_BIAS: tl.constexpr, SPLIT_K: tl.constexpr):
    # the bias is added once, by the first K slice
    if HAS_BIAS:
        if pid_k == 0:
            acc += tl.load(bias_ptr + offs_n, mask=offs_n < N, other=0.0).to(tl.float32)[None, :]
    ptrs = y_ptr + offs_m[:, None] * stride_ym + offs_n[None, :] * stride_yn
    mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    # one slice stores in x.dtype; several add their fp32 partial sums into a zeroed buffer
    if SPLIT_K == 1:
        tl.store(ptrs, acc.to(y_ptr.dtype.element_ty), mask=mask)
    else:
        tl.atomic_add(ptrs, acc, mask=mask)


@triton.jit
def _unpack_pairs(words, zsub, pair_mask, BITS: tl.constexpr, MAGIC: tl.constexpr, MAGIC_BASE: tl.constexpr,
                  DTYPE: tl.constexpr, SUBTRACT: tl.constexpr):
    """words int32 [R, W] (W a multiple of 4) -> DTYPE [R, W * 32 / BITS] of q - z, in
    "MMA order" (below). Values i and i + HALF of a word sit 16 bits apart, so one shift
    and one mask give both, as one (lo, hi) pair of 16-bit halves.

    MAGIC (Marlin's trick): OR-ing the bits of the float MAGIC_BASE (128 in bf16, 1024 in
    fp16) above a value u makes the 16-bit half exactly MAGIC_BASE + u, so no int-to-float
    conversion runs; subtracting zsub = MAGIC_BASE + 2^(BITS-1) (+ zero point) leaves q - z,
    an integer and exact. Without MAGIC (8-bit values in bf16) the halves convert in fp32.

    MMA order: word w = 4b + c, pair i, half h goes to column 4*PER_WORD*b + 8i + 2c + h.
    A 16x16 MMA fragment gives each thread columns 2c, 2c+1, 2c+8, 2c+9 of a row, so each
    thread unpacks whole words it owns (no word is loaded or shifted twice); the dot's K
    order is free as long as x follows it (_x_in_mma_order)."""
    PER_WORD: tl.constexpr = 32 // BITS
    HALF: tl.constexpr = PER_WORD // 2
    shifts = tl.arange(0, HALF) * BITS
    pair = (words.to(tl.uint32, bitcast=True)[:, :, None] >> shifts[None, None, :]) & pair_mask
    if MAGIC:
        pair = pair | (MAGIC * 0x00010001)
        lo = pair.to(tl.int16).to(DTYPE, bitcast=True)
        hi = (pair >> 16).to(tl.int16).to(DTYPE, bitcast=True)
    else:
        lo = ((pair & 0xFFFF).to(tl.float32) + MAGIC_BASE).to(DTYPE)
        hi = ((pair >> 16).to(tl.float32) + MAGIC_BASE).to(DTYPE)
    rows: tl.constexpr = words.shape[0]
    chunks: tl.constexpr = words.shape[1] // 4
    if SUBTRACT:
        lo -= zsub
        hi -= zsub
    q = tl.reshape(tl.join(lo, hi), (rows, chunks, 4, HALF, 2))                 # [R, b, c, i, h]
    q = tl.permute(q, (0, 1, 3, 2, 4))                                          # [R, b, i, c, h]
    return tl.reshape(q, (rows, words.shape[1] * PER_WORD))


@triton.jit
def _x_in_mma_order(x, BITS: tl.constexpr):
    """x [M, BLOCK_K] in K order -> [BLOCK_K, M] in the MMA order of _unpack_pairs: natural
    k = PER_WORD*(4b + c) + HALF*h + i goes to column 4*PER_WORD*b + 8i + 2c + h."""
    PER_WORD: tl.constexpr = 32 // BITS
    HALF: tl.constexpr = PER_WORD // 2
    rows: tl.constexpr = x.shape[0]
    cols: tl.constexpr = x.shape[1]
    x = tl.reshape(x, (rows, cols // (4 * PER_WORD), 4, 2, HALF))   # [M, b, c, h, i]
    x = tl.permute(x, (0, 1, 4, 2, 3))                               # [M, b, i, c, h]
    return tl.trans(tl.reshape(x, (rows, cols)))


@triton.jit
def gemv_a16_kernel(
    # pointers
    x_ptr, w_ptr, scales_ptr, zeros_ptr, bias_ptr, y_ptr,
    # sizes
    M, N, K, K_WORDS, pair_mask,
    # strides
    stride_xm, stride_wn, stride_sn, stride_ym,
    # quantization parameters
    BITS: tl.constexpr, GROUP_SIZE: tl.constexpr, HAS_ZEROS: tl.constexpr, HAS_BIAS: tl.constexpr,
    MAGIC: tl.constexpr, MAGIC_HI: tl.constexpr, MAGIC_BASE: tl.constexpr,
    # meta-parameters
    BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, SUB_K: tl.constexpr,
    EVEN_K: tl.constexpr, OFFSET_AFTER_DOT: tl.constexpr,
):
    """y [M, N] for M <= BLOCK_M (16) tokens: BLOCK_N weight rows per program, whole K,
    one launch (no split-K). The weight tile is the MMA's A operand and x (padded to 16
    columns) its B operand: y.T [BLOCK_N, BLOCK_M] = W [BLOCK_N, K] @ x.T [K, BLOCK_M]."""
    PER_WORD: tl.constexpr = 32 // BITS
    WORDS: tl.constexpr = SUB_K // PER_WORD
    pid_n = tl.program_id(0)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_w = tl.arange(0, WORDS)
    mask_n = offs_n < N
    offs_k = tl.arange(0, SUB_K)
    x_rows = x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :]
    w_rows = w_ptr + offs_n[:, None] * stride_wn + offs_w[None, :]
    dtype = x_ptr.dtype.element_ty
    # what q holds above q - z: MAGIC_BASE + 2^(BITS-1) (+ the zero point, per group)
    zoff = tl.full((BLOCK_N,), MAGIC_BASE + (1 << (BITS - 1)), tl.float32)
    acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        # BLOCK_K / SUB_K sub-blocks per trip, each inside one group (SUB_K divides the group)
        for j in tl.static_range(BLOCK_K // SUB_K):
            kj = k0 + j * SUB_K
            g = kj // GROUP_SIZE
            # packed words, read once, 16 bytes per load, streamed past L1 (used once)
            if EVEN_K:
                words = tl.load(w_rows + kj // PER_WORD, mask=mask_n[:, None], other=0,
                                eviction_policy="evict_first")
                xk = tl.load(x_rows + kj, mask=offs_m[:, None] < M, other=0.0)
                mask_g = mask_n
            else:
                words = tl.load(w_rows + kj // PER_WORD, other=0, eviction_policy="evict_first",
                                mask=mask_n[:, None] & (kj // PER_WORD + offs_w[None, :] < K_WORDS))
                xk = tl.load(x_rows + kj, mask=(offs_m[:, None] < M) & (kj + offs_k[None, :] < K), other=0.0)
                mask_g = mask_n & (kj + 0 * offs_n < K)   # a sub-block past K: no group (its x is 0)
            if HAS_ZEROS:
                z = tl.load(zeros_ptr + offs_n * stride_sn + g, mask=mask_g, other=0).to(tl.float32)
                zoff = MAGIC_BASE + (1 << (BITS - 1)) + z
            xt = _x_in_mma_order(xk, BITS)
            if OFFSET_AFTER_DOT:
                # q holds MAGIC_BASE + u: zoff * sum(x) comes off the fp32 sum instead of zoff
                # off every weight; one 16-row MMA of ones gives the sums of x
                q = _unpack_pairs(words, words, pair_mask, BITS, MAGIC, MAGIC_BASE, dtype, False)
                d = tl.dot(q, xt)
                if MAGIC_HI:
                    # 8-bit values in bf16: the high nibbles as a second MMA operand, each
                    # 16-bit half 2048 + 16 * u_hi (exact), on the same x
                    qh = _unpack_pairs(words >> 4, words, pair_mask, BITS, MAGIC_HI, MAGIC_BASE, dtype, False)
                    d = tl.dot(qh, xt, d)
                sx = tl.max(tl.dot(tl.full((16, SUB_K), 1.0, dtype), xt), axis=0)
                d -= zoff[:, None] * sx[None, :]
            else:
                q = _unpack_pairs(words, zoff.to(dtype)[:, None, None], pair_mask, BITS, MAGIC, MAGIC_BASE, dtype, True)
                d = tl.dot(q, xt)
            # the group's scale on the fp32 sum (q - z is exact in fp16/bf16)
            s = tl.load(scales_ptr + offs_n * stride_sn + g, mask=mask_g, other=0.0).to(tl.float32)
            acc += d * s[:, None]
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)[:, None]
    y_ptrs = y_ptr + offs_m[None, :] * stride_ym + offs_n[:, None]
    tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=(offs_m[None, :] < M) & mask_n[:, None])


@triton.jit
def dequant_matmul_tile_kernel(
    # pointers
    x_ptr, w_ptr, scales_ptr, zeros_ptr, bias_ptr, y_ptr,
    # sizes
    M, N, K,
    # strides
    stride_xm, stride_xk, stride_wn, stride_wk, stride_sn, stride_sg, stride_ym, stride_yn,
    # quantization parameters
    BITS: tl.constexpr, GROUP_SIZE: tl.constexpr, HAS_ZEROS: tl.constexpr, HAS_BIAS: tl.constexpr,
    SCALE_AFTER_DOT: tl.constexpr,
    # meta-parameters
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
    SPLIT_K: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    # program -> (pid_m, pid_n) tile, grouped GROUP_M tiles along M so that programs running
    # together reuse the same weight tiles from L2 (the Triton tutorial's swizzle)
    pid = tl.program_id(0)
    pid_k = tl.program_id(1)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    num_pid_in_group = GROUP_M * num_pid_n
    first_pid_m = (pid // num_pid_in_group) * GROUP_M
    group_rows = min(num_pid_m - first_pid_m, GROUP_M)
    pid_m = first_pid_m + ((pid % num_pid_in_group) % group_rows)
    pid_n = (pid % num_pid_in_group) // group_rows
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(pid_k * BLOCK_K, K, SPLIT_K * BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        a = tl.load(x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :] * stride_xk,
                    mask=(offs_m[:, None] < M) & (offs_k[None, :] < K), other=0.0)
        if SCALE_AFTER_DOT:
            # the block lies inside one group: the integers q - z (|q - z| <= 255, exact in
            # fp16/bf16) go through the MMA, and the group's scale multiplies the fp32 sum,
            # so the only rounding is fp32 accumulation
            qparam_offs = offs_n * stride_sn + (k0 // GROUP_SIZE) * stride_sg
            q = _load_q_tile(w_ptr, k0, offs_n, K, N, stride_wn, stride_wk, BITS, BLOCK_K)
            if HAS_ZEROS:
                q -= tl.load(zeros_ptr + qparam_offs, mask=offs_n < N, other=0).to(tl.int32)[None, :]
            s = tl.load(scales_ptr + qparam_offs, mask=offs_n < N, other=0.0)
            acc += tl.dot(a, q.to(a.dtype), input_precision=DOT_PRECISION) * s.to(tl.float32)[None, :]
        else:
            # groups narrower than BLOCK_K (or not a multiple of it): scale each element,
            # then round the weight to x.dtype for the MMA
            w = _dequant_tile(w_ptr, scales_ptr, zeros_ptr, k0, offs_n, K, N, stride_wn,
                              stride_wk, stride_sn, stride_sg, BITS, GROUP_SIZE, HAS_ZEROS, BLOCK_K)
            acc += tl.dot(a, w.to(a.dtype), input_precision=DOT_PRECISION)
    _store_output(acc, y_ptr, bias_ptr, offs_m, offs_n, M, N, stride_ym, stride_yn, pid_k,
                  HAS_BIAS, SPLIT_K)


def _output(m: int, n: int, x: torch.Tensor, split_k: int) -> torch.Tensor:
    """y in x.dtype, or a zeroed fp32 buffer that the split-K slices add into."""
    if split_k == 1:
        return torch.empty(m, n, device=x.device, dtype=x.dtype)
    return torch.zeros(m, n, device=x.device, dtype=torch.float32)


def _common_args(x, w_packed, scales, zeros, bias, y, m, n, k):
    return (x, w_packed, scales, zeros, bias, y, m, n, k,
            x.stride(0), x.stride(1), w_packed.stride(0), w_packed.stride(1),
            scales.stride(0), scales.stride(1), y.stride(0), y.stride(1))


def _check_split_k(cfg: A16Config, kernel: str) -> int:
    if cfg.kernel != kernel or cfg.split_k is None:
        raise ValueError(f"config: expected kernel {kernel!r} with a resolved split_k, "
                         f"found kernel {cfg.kernel!r}, split_k {cfg.split_k!r}")
    return cfg.split_k


# magic floats per activation dtype: the 16-bit pattern of B, B, the widest value (bits) B + u
# holds exactly, and the pattern of B_HI and B_HI, where OR-ing a 4-bit u into the top of
# B_HI's mantissa gives B_HI + 16u exactly (the high nibble of a split 8-bit value)
_MAGIC = {torch.float16: (0x6400, 1024.0, 10, 0x7400, 16384.0),
          torch.bfloat16: (0x4300, 128.0, 7, 0x4500, 2048.0)}


def _magic_args(dtype: torch.dtype, bits: int, gemv: bool, split_nibbles: bool | None) -> tuple[int, dict]:
    """(pair mask, magic constexprs) of the GEMV kernel. gemv (tokens padded to one MMA
    tile): q keeps its magic offset and zoff * sum(x) comes off the fp32 sum. 8-bit values
    wider than the magic's mantissa (bf16) are split into two 4-bit halves there (also
    when split_nibbles=True: lets the fp16 interpreter tests run that path); else they
    convert through fp32 (token tiles)."""
    pattern, base, widest, pattern_hi, base_hi = _MAGIC[dtype]
    split = gemv and bits > widest if split_nibbles is None else split_nibbles
    if split:
        if bits != 8 or not gemv:
            raise ValueError(f"split_nibbles: expected 8-bit weights and block_m <= 16, found {bits} bits, gemv={gemv}")
        return 0x000F000F, dict(MAGIC=pattern, MAGIC_HI=pattern_hi, MAGIC_BASE=base + base_hi, OFFSET_AFTER_DOT=True)
    mask = ((1 << bits) - 1) * 0x00010001
    if bits <= widest:
        return mask, dict(MAGIC=pattern, MAGIC_HI=0, MAGIC_BASE=base, OFFSET_AFTER_DOT=gemv)
    return mask, dict(MAGIC=0, MAGIC_HI=0, MAGIC_BASE=0.0, OFFSET_AFTER_DOT=False)


def dequant_matmul_decode(x, w_packed, scales, zeros, bits, group_size, bias=None, *, cfg: A16Config,
                          split_nibbles: bool | None = None):
    """y [M, N] = x [M, K] @ dequant(W).T (+ bias) with the GEMV kernel: one launch, no
    split-K, x.dtype fp16 or bf16, cfg.block_k dividing the group or a multiple of it."""
    m, n, k = check_dequant_matmul_args(x, w_packed, scales, zeros, bits, group_size, bias)
    # the dot (and the scale) runs per SUB_K columns, inside one group: a divisor of the
    # group, or of BLOCK_K when several whole groups make one K block
    sub_k = min(cfg.block_k, group_size) if group_size < k else cfg.block_k
    if cfg.kernel != "decode" or x.dtype not in _MAGIC or sub_k & (sub_k - 1) or (
            group_size < k and (group_size % sub_k or cfg.block_k % sub_k)) or sub_k * bits < 4 * 32:
        raise ValueError(f"decode kernel: expected fp16/bf16 x, block_k dividing group_size or a multiple of it "
                         f"(a power of two holding >= 4 words per row); found {x.dtype}, block_k {cfg.block_k}, "
                         f"group_size {group_size}, kernel {cfg.kernel!r}")
    pair_mask, magic = _magic_args(x.dtype, bits, cfg.block_m <= 16, split_nibbles)
    y = torch.empty(m, n, device=x.device, dtype=x.dtype)
    launch(gemv_a16_kernel, (triton.cdiv(n, cfg.block_n), triton.cdiv(m, cfg.block_m)),
           (x, w_packed, scales, zeros, bias, y, m, n, k, w_packed.shape[1], pair_mask,
            x.stride(0), w_packed.stride(0), scales.stride(0), y.stride(0)),
           BITS=bits, GROUP_SIZE=min(group_size, k), HAS_ZEROS=zeros is not None, HAS_BIAS=bias is not None,
           **magic, BLOCK_N=cfg.block_n, BLOCK_M=cfg.block_m, BLOCK_K=cfg.block_k, SUB_K=sub_k,
           EVEN_K=k % cfg.block_k == 0, num_warps=cfg.num_warps, num_stages=cfg.num_stages)
    return y


def dequant_matmul_tile(x, w_packed, scales, zeros, bits, group_size, bias=None, *, cfg: A16Config):
    """y [M, N] = x [M, K] @ dequant(W).T (+ bias) with the tensor-core tile kernel."""
    m, n, k = check_dequant_matmul_args(x, w_packed, scales, zeros, bits, group_size, bias)
    split_k = _check_split_k(cfg, "tile")
    y = _output(m, n, x, split_k)
    grid = (triton.cdiv(m, cfg.block_m) * triton.cdiv(n, cfg.block_n), split_k)
    launch(dequant_matmul_tile_kernel, grid, _common_args(x, w_packed, scales, zeros, bias, y, m, n, k),
        BITS=bits, GROUP_SIZE=group_size, HAS_ZEROS=zeros is not None, HAS_BIAS=bias is not None,
        SCALE_AFTER_DOT=group_size >= k or group_size % cfg.block_k == 0,
        BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k, GROUP_M=cfg.group_m,
        SPLIT_K=split_k, DOT_PRECISION="ieee" if x.dtype == torch.float32 else "tf32",
        num_warps=cfg.num_warps, num_stages=cfg.num_stages)
    return y if split_k == 1 else y.to(x.dtype)
