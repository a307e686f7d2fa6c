"""NVFP4 activation fake-quant (W4A4 checkpoints) against an independent float64 derivation
and against compressed-tensors' own forward_quantize (the peer that defines the format)."""
import pytest
import torch
from compressed_tensors.quantization import QuantizationStatus
from compressed_tensors.quantization.lifecycle.forward import forward_quantize
from compressed_tensors.quantization.quant_scheme import preset_name_to_scheme

from qrt.numerics.fp import fake_quant_nvfp4_act

E4M3 = torch.arange(256, dtype=torch.uint8).view(torch.float8_e4m3fn).double()
E4M3 = E4M3[torch.isfinite(E4M3) & (E4M3 >= 0)].unique()  # sorted: even index = even mantissa
E2M1 = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0], dtype=torch.float64)


def _nearest(x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """float64 |x| rounded to the nearest value of a sorted non-negative grid, ties to the
    even index (= even mantissa bit for e4m3 and e2m1), saturating at the top; sign kept."""
    a = x.abs().clamp(max=float(grid[-1]))
    d = (a[..., None] - grid).abs()
    tie = d == d.min(dim=-1, keepdim=True).values
    even = torch.arange(grid.numel()) % 2 == 0
    pick = torch.where(tie.sum(-1, keepdim=True) > 1, tie & even, tie)
    return grid[pick.double().argmax(-1)] * torch.where(x < 0, -1.0, 1.0).double()


def reference_f64(x: torch.Tensor, gs: float, group: int = 16) -> torch.Tensor:
    """The textbook definition in float64: per group, s = e4m3(amax / 6 * gs) (0 -> 2^-3),
    step = s / gs, x_hat = e2m1(x / step) * step."""
    g = x.double().unflatten(-1, (x.shape[-1] // group, group))
    s = _nearest(g.abs().amax(-1, keepdim=True) / 6.0 * gs, E4M3)
    step = torch.where(s == 0, 0.125, s) / gs
    return (_nearest(g / step, E2M1) * step).flatten(-2)


def test_fake_quant_matches_float64_definition():
    gen = torch.Generator().manual_seed(4)
    # tokens of very different magnitudes; one all-zero group; an outlier group
    x = torch.randn(6, 8, 64, generator=gen) * torch.logspace(-3, 1, 6)[:, None, None]
    x[0, 0, :16] = 0
    x[1, 2, 16] = 40.0
    # calibrated on max|x| = 4, so groups past 4 (the 10x tokens, the outlier) saturate at
    # scale 448. (Calibrating on 40 / 0.75 instead puts 40 / 6 * gs on an e4m3 tie, 336, that
    # float32 (qrt and compressed-tensors alike) misses by an ulp: exact ties are tested below.)
    gs = 448 * 6 / 4.0
    got = fake_quant_nvfp4_act(x, torch.tensor([gs]))
    want = reference_f64(x, torch.tensor(gs).float().item())
    assert got.dtype == x.dtype and got.shape == x.shape
    # fp32 result = the float64 one rounded once (e2m1 x 4-bit e4m3 x fp32 1/gs)
    torch.testing.assert_close(got.double(), want, rtol=2 ** -22, atol=0)
    assert torch.equal(got[0, 0, :16], torch.zeros(16))
    assert got[1, 2, 16] == 6 * 448 / gs  # saturated: e2m1 max times the e4m3 max step


def test_scale_and_value_ties_round_to_even():
    gs = 1.0
    # group max 6 * 2^-2: scale 2^-2 exactly; the others sit on every e2m1 tie (x / step)
    ties = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, -0.25, -0.75, -1.25, -1.75, -2.5, -3.5, -5.0, 6.0, 0.0])
    x = (ties * 0.25).reshape(1, 16)
    got = fake_quant_nvfp4_act(x, torch.tensor([gs]))
    even = torch.tensor([0.0, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0, -0.0, -1.0, -1.0, -2.0, -2.0, -4.0, -4.0, 6.0, 0.0]) * 0.25
    assert torch.equal(got, even.reshape(1, 16))
    assert torch.equal(got, reference_f64(x, gs).float())
    # e4m3 scale tie: amax / 6 * gs = 1.0625 lies between 1.0 and 1.125 -> 1.0 (even mantissa)
    y = torch.full((1, 16), 1.0625 * 6)
    assert torch.equal(fake_quant_nvfp4_act(y, torch.tensor([1.0])), torch.full((1, 16), 6.0))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fake_quant_matches_compressed_tensors_forward(dtype):
    """compressed-tensors' forward_quantize on a module whose scheme is the NVFP4 preset's
    input activations and whose input_global_scale is a calibrated 448 * 6 / amax."""
    args = preset_name_to_scheme("NVFP4", ["Linear"]).input_activations
    gen = torch.Generator().manual_seed(0)  # seed 0: 42 of 1920 bf16 values differed while qrt
    # divided max|x| / 6 in float32
    x = (torch.randn(3, 5, 128, generator=gen) * torch.logspace(-2, 1, 128)).to(dtype)
    module = torch.nn.Linear(128, 4)
    module.quantization_status = QuantizationStatus.FROZEN
    module.input_global_scale = torch.nn.Parameter(
        (448 * 6 / x.float().abs().amax()).reshape(1), requires_grad=False)
    want = forward_quantize(module, x.clone(), "input", args)
    got = fake_quant_nvfp4_act(x, module.input_global_scale.data)
    assert torch.equal(got, want)  # bf16: max|x| / 6 rounds to bf16 first in both


def test_refuses_ragged_groups():
    with pytest.raises(ValueError, match="not a multiple of the group size 16"):
        fake_quant_nvfp4_act(torch.randn(2, 40), torch.ones(1))
