"""The WxA16 GEMV: y = x @ dequant(W).T (+ bias) with the weights as the MMA's A operand,
for every M the dispatcher gives it (tokens padded to the MMA's 8 or 16 columns up to
M = 16, token tiles above). One launch per linear, no split-K, fp32 sums, x.dtype fp16/bf16.

Same weight layout as dequant_matmul.py (compressed-tensors, read as is). Where the
instructions per weight byte go, and why each trick is here: docs/kernels.md.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .a16_configs import A16Config
from .arg_checks import check_dequant_matmul_args
from .launch import launch


@triton.jit
def _unpack_pairs(words, zsub, pair_mask, BITS: tl.constexpr, MAGIC: tl.constexpr, MAGIC_BASE: tl.constexpr,
                  DTYPE: tl.constexpr, SUBTRACT: tl.constexpr):
    """words int32 [R, W] (W a multiple of 4) -> DTYPE [R, W * 32 / BITS] of q - z (SUBTRACT)
    or MAGIC_BASE + u, in "MMA order" (below). Values i and i + HALF of a word sit 16 bits apart, so one shift
    and one mask give both, as one (lo, hi) pair of 16-bit halves.

    MAGIC (Marlin's trick): OR-ing the bits of the float MAGIC_BASE (128 in bf16, 1024 in
    fp16) above a value u makes the 16-bit half exactly MAGIC_BASE + u, so no int-to-float
    conversion runs; SUBTRACT: minus zsub = MAGIC_BASE + 2^(BITS-1) (+ zero point) leaves
    q - z, an integer and exact (else the caller takes the offset off after the dot). Without
    MAGIC (8-bit values in bf16, token tiles) the halves convert in fp32. pair_mask: the
    value mask in both halves; the GEMV passes the kernel argument (as a constant, ptxas
    re-materializes it with an IMAD.MOV before nearly every LOP3: 46-100 extra instructions
    per loop trip), token tiles the constant.

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
    """y [M, N]: BLOCK_N weight rows x BLOCK_M tokens per program, whole K, one launch (no
    split-K). The weight tile is the MMA's A operand and x (padded to BLOCK_M >= 8 columns)
    its B operand: y.T [BLOCK_N, BLOCK_M] = W [BLOCK_N, K] @ x.T [K, BLOCK_M], one dot and
    one group scale per SUB_K columns (BLOCK_K / SUB_K per trip). OFFSET_AFTER_DOT (the
    GEMV, BLOCK_M <= 16): q keeps its magic offset, zoff * sum(x) comes off each group's sum.
    MAGIC_HI: 8-bit values as two nibble operands (bf16)."""
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
                    hi_nibbles = words.to(tl.uint32, bitcast=True) >> 4
                    qh = _unpack_pairs(hi_nibbles, words, pair_mask, BITS, MAGIC_HI, MAGIC_BASE, dtype, False)
                    d = tl.dot(qh, xt, d)
                # every row of the 16-row result holds the sums; repeated to BLOCK_N rows (a
                # multiple of 16) it has the MMA layout of d, so no data moves
                sx = tl.dot(tl.full((16, SUB_K), 1.0, dtype), xt)
                sx = tl.reshape(tl.broadcast_to(sx[None, :, :], (BLOCK_N // 16, 16, BLOCK_M)), (BLOCK_N, BLOCK_M))
                d -= zoff[:, None] * sx
            else:
                zsub = zoff.to(dtype)[:, None, None]
                # token tiles: the constant mask (ptxas keeps byte masks as byte selects, and
                # its re-materialized constants keep the 2-warp blocks free of spills)
                q = _unpack_pairs(words, zsub, ((1 << BITS) - 1) * 0x00010001, BITS, MAGIC, MAGIC_BASE, dtype, True)
                d = tl.dot(q, xt)
            # the group's scale on the fp32 sum (q - z is exact in fp16/bf16)
            s = tl.load(scales_ptr + offs_n * stride_sn + g, mask=mask_g, other=0.0).to(tl.float32)
            acc += d * s[:, None]
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)[:, None]
    y_ptrs = y_ptr + offs_m[None, :] * stride_ym + offs_n[:, None]
    tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=(offs_m[None, :] < M) & mask_n[:, None])



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
