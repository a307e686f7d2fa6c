"""FP8 / FP4 round-to-nearest numerics against float64 math and compressed-tensors' own
quantizer functions (the peer that defines the formats)."""
import pytest
import torch
from compressed_tensors.quantization.quant_args import FP4_E2M1_DATA
from compressed_tensors.quantization.utils.helpers import generate_gparam
from compressed_tensors.quantization.utils.mxfp_utils import generate_mx_scales

from qrt.numerics.fp import (dequantize_fp4, dequantize_fp8, e2m1_codes, mx_exponent, pack_fp4, quantize_fp8,
                             quantize_mxfp4, quantize_nvfp4)
from qrt_kernels.reference import E2M1_VALUES, e2m1_to_float, unpack_fp4_codes

E4M3_GRID = torch.arange(256, dtype=torch.uint8).view(torch.float8_e4m3fn).double()
E4M3_GRID = E4M3_GRID[torch.isfinite(E4M3_GRID)].unique()


def nearest_on_grid(x: torch.Tensor, grid: torch.Tensor, even_index: torch.Tensor) -> torch.Tensor:
    """float64 round to nearest grid value, ties to the value whose `even_index` is True."""
    d = (x[..., None] - grid).abs()
    best = d.min(dim=-1, keepdim=True).values
    tie = (d == best)
    pick = torch.where(tie.sum(-1, keepdim=True) > 1, tie & even_index, tie)
    return grid[pick.float().argmax(-1)]


def test_fp8_rtn_is_nearest_e4m3_of_w_over_scale():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(32, 200, generator=g) * torch.logspace(-3, 0, 32)[:, None]
    qw = quantize_fp8(w, scale_dtype=torch.float32)
    s = w.double().abs().amax(dim=1, keepdim=True) / 448.0
    assert torch.equal(qw.scale.double(), s.float().double())
    mantissa_even = (torch.arange(E4M3_GRID.numel()) % 2 == 0)  # grid sorted: even index = even mantissa
    ref = nearest_on_grid((w.double() / qw.scale.double()).clamp(-448, 448), E4M3_GRID, mantissa_even)
    assert torch.equal(qw.codes.double(), ref)
    # fp32 dequantization = the float64 product rounded once (4-bit x 24-bit significands)
    assert torch.equal(dequantize_fp8(qw.codes, qw.scale, torch.float32), (qw.codes.double() * qw.scale.double()).float())


def test_e2m1_rounding_matches_float64_and_compressed_tensors():
    x = torch.cat([torch.linspace(-7, 7, 2801), torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, -0.0])])
    codes = e2m1_codes(x)
    grid = torch.tensor(E2M1_VALUES, dtype=torch.float64)
    even = torch.tensor([True, False, True, False, True, False, True, False])  # even mantissa bit
    mag = nearest_on_grid(x.double().abs().clamp(max=6), grid, even)
    assert torch.equal(e2m1_to_float(codes).double().abs(), mag)
    assert torch.equal(torch.signbit(e2m1_to_float(codes)), torch.signbit(x))
    assert torch.equal(e2m1_to_float(codes), FP4_E2M1_DATA.cast_to_fp4(x.clamp(-6, 6)))


def test_fp4_packing_low_nibble_first():
    codes = torch.tensor([[1, 2, 3, 4, 15, 0]], dtype=torch.uint8)
    packed = pack_fp4(codes)
    assert packed.tolist() == [[0x21, 0x43, 0x0F]]
    assert torch.equal(unpack_fp4_codes(packed, 6), codes)


def test_nvfp4_qparams_match_compressed_tensors():
    g = torch.Generator().manual_seed(2)
    w = torch.randn(16, 64, generator=g) * 0.02
    qw = quantize_nvfp4(w)
    gs = generate_gparam(w.min(), w.max())  # 448 * 6 / max|w|, fp32 [1]
    assert torch.equal(qw.global_scale, gs)
    amax = w.abs().reshape(16, 4, 16).amax(dim=2)
    assert torch.equal(qw.scale, (amax / 6.0 * gs).to(torch.float8_e4m3fn))
    # dequantized weight: every value within half an e2m1 step (of its group's scale) of w
    w_hat = dequantize_fp4(qw, 16, 64, torch.float64)
    step = (qw.scale.double() / gs.double()).repeat_interleave(16, dim=1)
    assert ((w_hat - w.double()).abs() <= step * 1.0 + 1e-12).all()  # largest e2m1 gap is 2 (4 -> 6)


def test_mxfp4_exponents_match_compressed_tensors():
    amax = torch.tensor([[1.0, 1.7, 1.76, 6.0, 0.01, 3.4e-3]])
    assert torch.equal(mx_exponent(amax).float(), generate_mx_scales(amax))
    w = torch.randn(8, 96, generator=torch.Generator().manual_seed(3))
    qw = quantize_mxfp4(w)
    assert qw.scale.dtype == torch.uint8 and qw.scale.shape == (8, 3) and qw.global_scale is None
    w_hat = dequantize_fp4(qw, 32, 96, torch.float64)
    scale = torch.exp2(qw.scale.double() - 127).repeat_interleave(32, dim=1)
    # inside the e2m1 range: within one step (<= 2 * scale); a group max past 6 * scale saturates
    inside = w.double().abs() <= 6 * scale
    assert ((w_hat - w.double()).abs()[inside] <= 1.0 * scale[inside] + 1e-12).all()


@pytest.mark.parametrize("fn", [quantize_nvfp4, quantize_mxfp4])
def test_fp4_refuses_indivisible_columns(fn):
    with pytest.raises(ValueError, match="divisible by its group size"):
        fn(torch.randn(4, 40))
