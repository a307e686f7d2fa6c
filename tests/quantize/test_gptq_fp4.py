"""GPTQ with an FP4 (e2m1) quantizer, NVFP4 and MXFP4: RTN's scales bit for bit, a smaller
output error than FP4 RTN on held-out inputs, a float64 textbook reference, and the
sequential driver writing an ordinary FP4 checkpoint (tests/quantize/test_gptq_fp8.py,
parametrized over the float schemes)."""

import pytest
import torch

from qrt.numerics.fp import dequantize_fp4
from qrt.quantize.gptq import GPTQFallbackWarning
from qrt.quantize.gptq_fp4 import gptq_quantize_fp4_weight
from qrt.runtime.fp_linear import quantize_float
from qrt.schemes import resolve_scheme
from qrt_kernels.reference import e2m1_to_float, unpack_fp4_codes
from test_gptq import hessian_of, make_mix  # the same correlated-input helpers as the integer GPTQ tests

SCHEMES = ["nvfp4a16", "mxfp4a16"]
E2M1 = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0], dtype=torch.float64)


def deq64(qw, scheme, in_f: int) -> torch.Tensor:
    return dequantize_fp4(qw, scheme.group_size, in_f, torch.float64)


def output_error(x: torch.Tensor, w: torch.Tensor, qw, scheme) -> float:
    x = x.double()
    return float((x @ w.double().T - x @ deq64(qw, scheme, w.shape[1]).T).norm())


def scales64(qw) -> torch.Tensor:
    """Group multipliers [out, in / group] in float64, from the checkpoint tensors alone."""
    if qw.global_scale is not None:
        return qw.scale.double() / qw.global_scale.double()
    return 2.0 ** (qw.scale.double() - 127)


def round_e2m1(x: torch.Tensor) -> torch.Tensor:
    """Nearest signed e2m1 value (float64), saturating at ±6; an exact tie (measure zero for
    random inputs) takes the smaller magnitude."""
    pick = (x.abs().clamp(max=6.0)[..., None] - E2M1).abs().argmin(dim=-1)
    return torch.sign(x) * E2M1[pick]


@pytest.mark.parametrize("name", SCHEMES)
@pytest.mark.parametrize("actorder", [None, "weight"])
def test_valid_fp4_weight_with_rtn_scales(rng_seed, name, actorder):
    scheme = resolve_scheme(name)
    w = torch.randn(48, 96) * torch.logspace(-2, 0, 48)[:, None]
    qw = gptq_quantize_fp4_weight(w, hessian_of(torch.randn(512, 96) @ make_mix(96)), scheme, actorder=actorder)
    rtn = quantize_float(w, scheme)
    assert qw.codes.dtype == torch.uint8 and qw.codes.shape == (48, 48)
    # the scales are RTN's, bit for bit: GPTQ only changes which code each weight gets
    assert qw.scale.dtype == rtn.scale.dtype and torch.equal(qw.scale.view(torch.uint8), rtn.scale.view(torch.uint8))
    assert (qw.global_scale is None) == (rtn.global_scale is None)
    if qw.global_scale is not None:
        assert torch.equal(qw.global_scale, rtn.global_scale)
    assert not torch.equal(qw.codes, rtn.codes)  # ... and it did change codes
    # each weight stays within a couple of e2m1 steps of its value (a runaway feedback would not)
    step = scales64(qw).repeat_interleave(scheme.group_size, dim=1)
    err = (deq64(qw, scheme, 96) - w.double()).abs() / step
    assert err.max() <= 4.0, f"seed {rng_seed}: a code is {err.max():.2f} group scales away"


@pytest.mark.parametrize("name", SCHEMES)
@pytest.mark.parametrize("actorder", [None, "weight"])
def test_gptq_fp4_beats_rtn_on_held_out_inputs(rng_seed, name, actorder):
    scheme = resolve_scheme(name)
    in_f, mix = 128, make_mix(128)
    w = torch.randn(64, in_f)
    h = hessian_of(torch.randn(2048, in_f) @ mix)
    held_out = torch.randn(1024, in_f) @ mix
    rtn = output_error(held_out, w, quantize_float(w, scheme), scheme)
    gptq = output_error(held_out, w, gptq_quantize_fp4_weight(w, h, scheme, actorder=actorder), scheme)
    # GPTQ minimizes this error on the calibration inputs; held-out inputs of the same
    # distribution see a clearly smaller one (as for FP8; 10% is the bar)
    assert gptq < 0.9 * rtn, f"seed {rng_seed}: GPTQ {gptq:.4f} vs RTN {rtn:.4f}"


def reference_gptq_fp4(w, h, s_cols, percdamp, perm=None):
    """Textbook GPTQ in float64 with e2m1 rounding on fixed per-column scales s_cols
    [out, in]: explicit H^-1, one column at a time, Schur-complement downdate. -> the
    e2m1 values (codes as numbers) [out, in] float64."""
    W, H, S = w.double().clone(), h.double().clone(), s_cols.double()
    if perm is not None:
        W, H, S = W[:, perm], H[perm][:, perm], S[:, perm]
    H += percdamp * H.diagonal().mean() * torch.eye(H.shape[0], dtype=H.dtype)
    Hinv = torch.linalg.inv(H)
    out = torch.empty_like(W)
    for j in range(W.shape[1]):
        out[:, j] = round_e2m1(W[:, j] / S[:, j])
        d = Hinv[j, j]
        W[:, j + 1:] -= ((W[:, j] - out[:, j] * S[:, j]) / d)[:, None] * Hinv[j, j + 1:][None, :]
        Hinv = Hinv - torch.outer(Hinv[:, j], Hinv[j, :]) / d
    return out if perm is None else out[:, torch.argsort(perm)]


@pytest.mark.parametrize("name", SCHEMES)
@pytest.mark.parametrize("actorder,block_size", [(None, 16), ("weight", 24)])
def test_matches_float64_textbook_gptq(rng_seed, name, actorder, block_size):
    scheme = resolve_scheme(name)
    w = torch.randn(32, 96)
    h = hessian_of(torch.randn(512, 96) @ make_mix(96))
    qw = gptq_quantize_fp4_weight(w, h, scheme, block_size=block_size, actorder=actorder)
    perm = None if actorder is None else torch.argsort(h.diagonal(), descending=True, stable=True)
    s_cols = scales64(qw).repeat_interleave(scheme.group_size, dim=1)
    ref = reference_gptq_fp4(w, h, s_cols, 0.01, perm)
    # float32 vs float64 near a rounding boundary, as in the FP8 and integer tests; e2m1's
    # coarse grid makes a flip rarer, not likelier. A wrong update moves most codes.
    got = e2m1_to_float(unpack_fp4_codes(qw.codes, 96)).double()
    mismatch = (got != ref).double().mean().item()
    assert mismatch <= 0.02, f"seed {rng_seed}: {mismatch:.2%} of the codes differ"


def test_cholesky_failure_warns_and_falls_back_to_rtn(rng_seed):
    w = torch.randn(8, 64)
    h = torch.eye(64)
    h[0, 1] = h[1, 0] = 3.0  # positive diagonal, indefinite
    scheme = resolve_scheme("nvfp4a16")
    with pytest.warns(GPTQFallbackWarning, match="round-to-nearest FP4"):
        qw = gptq_quantize_fp4_weight(w, h, scheme, name="blocks.0.q")
    rtn = quantize_float(w, scheme)
    assert torch.equal(qw.codes, rtn.codes) and torch.equal(qw.scale.view(torch.uint8), rtn.scale.view(torch.uint8))


@pytest.mark.parametrize("scheme,kwargs,match", [
    ("w4a16", {}, "needs an FP4 scheme"),
    ("fp8", {}, "needs an FP4 scheme"),
    ("nvfp4a16", dict(actorder="group"), "actorder None or 'weight'"),
    ("mxfp4a16", dict(block_size=0), "block_size"),
])
def test_bad_arguments_raise(scheme, kwargs, match):
    with pytest.raises(ValueError, match=match):
        gptq_quantize_fp4_weight(torch.randn(8, 32), torch.eye(32), resolve_scheme(scheme), **kwargs)
