"""The WxA16 kernels (decode, tile, dequant) against their plain-torch twins, and the twins
against float64 math. On the CPU the kernels run under TRITON_INTERPRET=1, so shapes are
small; N=80 is not a multiple of any block, K=200 leaves a ragged last group (200 = 3*64 + 8).

Tolerances are rounding-error bounds, not fudge factors. With S = |x| @ |W|.T:
  fp32 accumulation of K products errs by at most K * 2^-24 * S (classic gamma_K bound);
  the final cast to x.dtype by at most u(x.dtype) * |y| (u: unit roundoff, 2^-11 for fp16);
  a weight rounded to x.dtype before the MMA (tile kernel, per-element scale mode) adds
  u(x.dtype) * S. Two results that each meet a bound differ by at most the sum.
The GEMV (decode kernel, block_m <= 16) sums B + u instead of q - z per group of n <= group
size columns (B: the magic float, 1024 in fp16; u = q + 2^(bits-1)) and subtracts
(B + 2^(bits-1) + z) * sum(x): its fp32 error is at most 3 n 2^-24 S_off with
S_off = |x| @ ((B + 2^bits + |z|) s).T (packed_cases.gemv_offset_tol).
"""
import pytest
import torch

from packed_cases import FP32_UNIT, UNIT_ROUNDOFF, assert_within, gemv_offset_tol, make_case, reference64
from qrt_kernels.a16_configs import A16Config
from qrt_kernels.reference import dequant_matmul_ref, dequant_weight as dequant_weight_ref

INTERPRETED = not torch.cuda.is_available()
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
N, K = 80, 200
DECODE = A16Config("decode", None, block_m=16, block_n=16, block_k=64, num_warps=1, split_k=1)
DECODE_8 = DECODE.replace(block_m=8, block_n=32)  # the default table's M <= 8 shape
TILE = A16Config("tile", None, block_m=16, block_n=64, block_k=64, split_k=1)


def _launch(kernel: str, *args, cfg: A16Config | None = None, **kw):
    from qrt_kernels.dequant_matmul import dequant_matmul_tile
    from qrt_kernels.gemv_a16 import dequant_matmul_decode
    fn = dequant_matmul_decode if kernel == "decode" else dequant_matmul_tile
    return fn(*args, cfg=cfg or (DECODE if kernel == "decode" else TILE), **kw)


def _inputs(m, bits, group_size, asym, dtype, with_bias=True, n=N, k=K):
    case = make_case(n, k, bits, group_size, asym)
    x = torch.randn(m, k).to(dtype)
    bias = torch.randn(n).to(dtype) if with_bias else None
    return case, x, bias


def _to(dev, *ts):
    return [None if t is None else t.to(dev) for t in ts]


def _kernel_vs_twin(kernel, case, x, bias, weight_rounded=False, cfg=None, **kw):
    args = (case.w_packed, case.scales, case.zeros, case.bits, case.group_size)
    y = _launch(kernel, *_to(DEVICE, x, *args[:3]), *args[3:], *_to(DEVICE, bias), cfg=cfg, **kw).cpu()
    twin = dequant_matmul_ref(x, *args, bias)
    assert y.dtype == x.dtype and y.shape == twin.shape
    _, s = reference64(x, case, bias)
    u = UNIT_ROUNDOFF[x.dtype]
    tol = (2 * x.shape[-1] * FP32_UNIT * s + 2 * u * twin.double().abs() + (u * s if weight_rounded else 0)
           + (gemv_offset_tol(case, x, kw.get("split_nibbles", False))
              if kernel == "decode" and (cfg or DECODE).block_m <= 16 else 0))
    assert_within(y, twin, tol, f"{kernel} kernel vs twin")


@pytest.mark.parametrize("kernel, m", [("decode", m) for m in (1, 3, 16, 33)] +
                         [("tile", m) for m in (1, 3, 16, 17, 33, 64)])  # decode 33: 3 token tiles
def test_kernels_match_twin_over_m(kernel, m, rng_seed):
    case, x, bias = _inputs(m, bits=4, group_size=64, asym=True, dtype=torch.float16)
    _kernel_vs_twin(kernel, case, x, bias)
    if kernel == "decode" and m <= 8:
        _kernel_vs_twin(kernel, case, x, bias, cfg=DECODE_8)


@pytest.mark.parametrize("kernel", ["decode", "tile"])
@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("asym", [False, True])
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_kernels_match_twin_bits_sym_dtype(kernel, bits, asym, dtype, rng_seed):
    m = 3 if kernel == "decode" else 17
    case, x, bias = _inputs(m, bits, 64, asym, dtype, with_bias=asym)
    if kernel == "decode" and dtype == torch.float32:
        # fp32 x takes dequantize + F.linear in the dispatcher; the GEMV kernel refuses it
        with pytest.raises(ValueError, match="fp16/bf16"):
            _kernel_vs_twin(kernel, case, x, bias)
        return
    _kernel_vs_twin(kernel, case, x, bias)


@pytest.mark.parametrize("kernel", ["decode", "tile"])
@pytest.mark.parametrize("group_size", [K, 256])  # per-channel: scales [N, 1]; G > K too
def test_kernels_per_channel(kernel, group_size, rng_seed):
    case, x, bias = _inputs(5, 8, group_size, asym=False, dtype=torch.float16)
    assert case.scales.shape == (N, 1)
    _kernel_vs_twin(kernel, case, x, bias)


@pytest.mark.parametrize("group_size", [40, 32])  # 40: no power-of-two BLOCK_K divides it
def test_tile_per_element_scale_mode(group_size, rng_seed):
    # BLOCK_K=64 straddles groups, so the kernel scales each element and rounds the weight
    # to fp16 before the MMA: the weight-rounding term of the bound applies
    case, x, bias = _inputs(17, 4, group_size, asym=True, dtype=torch.float16)
    _kernel_vs_twin("tile", case, x, bias, weight_rounded=True)


@pytest.mark.parametrize("kernel, block_k", [("decode", 64), ("tile", 16)])
def test_fewest_words_per_block_row(kernel, block_k, rng_seed):
    # 2 bits: the tile kernel's BLOCK_K=16 is a single int32 word per weight row; the decode
    # kernel's smallest block holds 4 words (one per thread of an MMA fragment row)
    base = DECODE if kernel == "decode" else TILE
    case, x, bias = _inputs(16 if kernel == "decode" else 17, 2, block_k, asym=True, dtype=torch.float16)
    _kernel_vs_twin(kernel, case, x, bias, cfg=base.replace(block_k=block_k))


@pytest.mark.parametrize("k", [K, 256])    # 200: the last K block ends past K (its sub-blocks too)
@pytest.mark.parametrize("group_size, m", [(32, 1), (64, 3), (64, 33)])   # 33: token tiles, q - z mode
def test_decode_several_groups_per_block(k, group_size, m, rng_seed):
    # BLOCK_K = 128 holds 2 or 4 whole groups: one dot and one scale per group
    case, x, bias = _inputs(m, 4, group_size, asym=True, dtype=torch.float16, k=k)
    cfg = DECODE.replace(block_k=128, block_m=32 if m > 16 else 16)
    _kernel_vs_twin("decode", case, x, bias, cfg=cfg)


@pytest.mark.parametrize("asym", [False, True])
@pytest.mark.parametrize("group_size, m", [(64, 1), (K, 5)])
def test_decode_split_nibbles(asym, group_size, m, rng_seed):
    # the path 8-bit weights take in bf16 (which the interpreter cannot run), forced in fp16:
    # low and high nibbles as two magic MMA operands on the same x
    case, x, bias = _inputs(m, 8, group_size, asym, dtype=torch.float16)
    _kernel_vs_twin("decode", case, x, bias, cfg=DECODE_8, split_nibbles=True)


def test_magic_constants_give_every_value_exactly():
    # plain torch, every stored value and zero point: the bit patterns the GEMV ORs values
    # into, read as fp16/bf16, minus zoff, give q - z exactly (bf16 too, which the
    # interpreter cannot run through the kernel)
    from qrt_kernels.gemv_a16 import _MAGIC
    for dtype, (pattern, base, widest, pattern_hi, base_hi) in _MAGIC.items():
        def as_float(bits16):
            return bits16.to(torch.int16).view(dtype).double()
        u = torch.arange(1 << min(widest, 8))    # bf16: values up to 7 bits (4-bit and 2-bit weights)
        assert torch.equal(as_float(pattern | u), base + u.double())
        u8 = torch.arange(256)
        split = as_float(pattern | (u8 & 15)) + as_float(pattern_hi | (u8 >> 4))
        assert torch.equal(split, base + base_hi + u8.double())


def test_decode_rejects_blocks_under_four_words(rng_seed):
    case, x, bias = _inputs(4, 2, 16, asym=True, dtype=torch.float16)
    with pytest.raises(ValueError, match="4 words"):
        _kernel_vs_twin("decode", case, x, bias, cfg=DECODE.replace(block_k=16))


def test_split_k_atomics(rng_seed):
    # tile kernel (decode never splits K): 3 K slices of 64 columns over K=200, fp32
    # partial sums added atomically, cast after
    case, x, bias = _inputs(17, 4, 64, asym=True, dtype=torch.float16)
    _kernel_vs_twin("tile", case, x, bias, cfg=TILE.replace(split_k=3))


@pytest.mark.skipif(INTERPRETED, reason="bf16 tl.dot / casts give garbage under TRITON_INTERPRET; runs on GPU")
@pytest.mark.parametrize("kernel", ["decode", "tile"])
@pytest.mark.parametrize("bits", [4, 8])   # decode, 8 bits: the two-nibble MMA path of bf16
def test_kernels_bf16(kernel, bits, rng_seed):
    case, x, bias = _inputs(16 if kernel == "decode" else 17, bits, 64, asym=True, dtype=torch.bfloat16)
    _kernel_vs_twin(kernel, case, x, bias)
    if kernel == "decode":   # M=1 on the default table's M <= 8 shape
        _kernel_vs_twin(kernel, case, x[:1], bias, cfg=DECODE_8)


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_dequant_kernel_matches_twin(bits, dtype, rng_seed):
    from qrt_kernels.dequant import dequant_weight
    case = make_case(N, K, bits, 64, asym=bits != 8)
    args = (case.w_packed, case.scales, case.zeros)
    w = dequant_weight(*_to(DEVICE, *args), bits, 64, K, dtype=dtype).cpu()
    # both compute (q - z) * s exactly in fp32 (|q - z| <= 255, fp16 scales), then round once
    assert torch.equal(w, dequant_weight_ref(*args, bits, 64, K, dtype=dtype))
    assert torch.equal(w, case.weight64().to(dtype))


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("asym", [False, True])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("m, group_size", [(1, 64), (3, 32), (17, K), (33, 48)])
def test_twin_matches_float64(bits, asym, dtype, m, group_size, rng_seed):
    case, x, bias = _inputs(m, bits, group_size, asym, dtype, with_bias=m != 3)
    y = dequant_matmul_ref(x, case.w_packed, case.scales, case.zeros, bits, group_size, bias)
    y64, s = reference64(x, case, bias)
    # the twin's fp32 weight is exact, so only accumulation, the bias add and the cast err
    tol = K * FP32_UNIT * s + (UNIT_ROUNDOFF[dtype] + 2 * FP32_UNIT) * y64.abs()
    assert_within(y, y64, tol, "twin vs float64")
