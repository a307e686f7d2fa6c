"""Static calibration fills input_scale like llmcompressor (hooks see the quantized
outputs of earlier layers), removes its hooks, and the layer then matches float64 math."""
import pytest
import torch
from torch import nn

from qrt.quantize.calibrate_static import calibrate_input_scales
from qrt.runtime.linear import QuantLinear
from qrt_kernels.reference import quant_rows_ref


def _model(scheme="w8a8-static"):
    lin1, lin2 = nn.Linear(48, 32), nn.Linear(32, 16)
    return nn.Sequential(QuantLinear.from_linear(lin1, scheme), nn.ReLU(),
                         QuantLinear.from_linear(lin2, scheme))


def _static_forward64(layer, x, scale):
    """float64 y of a static layer: per-tensor int8 x, per-channel int8 weights."""
    xq, _, _ = quant_rows_ref(x, True, torch.tensor([scale], dtype=torch.float32))
    qw = layer.qweight()
    y = (xq.double() @ qw.q.double().t()) * qw.scale.double()[:, 0] * scale
    return y + layer.bias.double()


def test_minmax_calibration_matches_direct(rng_seed):
    model = _model()
    batches = [torch.randn(5, 48) * (i + 1) for i in range(3)]
    scales = calibrate_input_scales(model, batches, progress=False)
    l1, l2 = model[0], model[2]
    # layer 1 sees the raw batches: the global absmax / 127
    absmax1 = max(b.abs().max().item() for b in batches)
    assert scales["0"] == pytest.approx(absmax1 / 127, rel=1e-6)
    # layer 2 saw layer 1's output computed with the scale observed so far (running max)
    run, absmax2 = 0.0, 0.0
    for b in batches:
        run = max(run, b.abs().max().item())
        h = torch.relu(_static_forward64(l1, b, torch.tensor(run / 127).float().item()))
        absmax2 = max(absmax2, h.abs().max().item())
    assert scales["2"] == pytest.approx(absmax2 / 127, rel=1e-5)  # fp32 vs float64 layer-1 output: ~1e-6
    assert l1.input_scale.item() == scales["0"] and l2.input_scale.item() == scales["2"]
    # hooks are gone: a new forward leaves the frozen scales alone
    assert not l1._forward_pre_hooks and not l2._forward_pre_hooks
    model(torch.randn(5, 48) * 100)
    assert l1.input_scale.item() == scales["0"]
    # the calibrated layer matches float64 math of its static numerics
    x = torch.randn(7, 48)
    y64 = _static_forward64(l1, x, l1.input_scale.item())
    bound = 8 * torch.finfo(torch.float32).eps * y64.abs().max()
    l1.finalize(backend="int_mm")  # the exact int32 path
    assert ((l1(x).double() - y64).abs() <= bound).all()
    # the CPU default (int8pack_a8) rounds the integer dot to bf16 before scales and bias:
    # 2^-8 of |dot term| = |y - bias| more
    l1.finalize(backend=None)
    assert ((l1(x).double() - y64).abs() <= bound + 2.0 ** -8 * (y64 - l1.bias.double()).abs()).all()


@pytest.mark.parametrize("observer", ["moving_minmax", "mse"])
def test_other_observers_fill_finite_scales(observer, rng_seed):
    model = _model()
    scales = calibrate_input_scales(model, [(torch.randn(4, 48),), {"input": torch.randn(4, 48)}],
                                    observer=observer, progress=False)
    assert set(scales) == {"0", "2"} and all(0 < s < float("inf") for s in scales.values())


def test_calibration_errors(rng_seed):
    with pytest.raises(ValueError, match="no QuantLinear with a static"):
        calibrate_input_scales(_model("w8a8"), [torch.randn(2, 48)], progress=False)
    model = _model()
    with pytest.raises(ValueError, match="never ran"):
        calibrate_input_scales(model, [], progress=False)
    bad = torch.randn(2, 48)
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        calibrate_input_scales(model, [bad], progress=False)
    assert not model[0]._forward_pre_hooks  # removed on error too
