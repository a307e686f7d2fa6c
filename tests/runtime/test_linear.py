import pytest
import torch

from qrt.numerics.quant import fake_quantize
from qrt.runtime.linear import QuantLinear
from qrt.schemes import resolve_scheme


@pytest.mark.parametrize("scheme", ["w8a16", "w4a16", "w4a16-asym", "w3a16", "w2a16", "w8a8", "w4a8"])
def test_from_linear_matches_fake_quant(scheme, rng_seed):
    lin = torch.nn.Linear(200, 48)  # 200: ragged last group
    ql = QuantLinear.from_linear(lin, scheme)
    w_hat = fake_quantize(lin.weight.detach(), resolve_scheme(scheme))
    torch.testing.assert_close(ql.dequantize_weight(torch.float32), w_hat, rtol=0, atol=0)


@pytest.mark.parametrize("scheme", ["w8a16", "w4a16", "w4a16-asym", "w2a16"])
def test_meta_skeleton_shapes_match_real(scheme):
    real = QuantLinear.from_linear(torch.nn.Linear(200, 48).half(), scheme)
    meta = QuantLinear(200, 48, bias=True, scheme=scheme, dtype=torch.float16, device="meta")
    rs, ms = real.state_dict(), meta.state_dict()
    assert rs.keys() == ms.keys()
    for k in rs:
        assert (rs[k].shape, rs[k].dtype) == (ms[k].shape, ms[k].dtype), k


def test_use_backend_dense_is_exact_and_default_is_close(rng_seed):
    from qrt.runtime.linear import use_backend
    lin = torch.nn.Linear(256, 64)
    model = torch.nn.Sequential(QuantLinear.from_linear(lin, "w4a16"))
    x = torch.randn(3, 256)
    ql = model[0]
    ref = x.double() @ ql.dequantize_weight(torch.float64).t() + lin.bias.double()
    y_default = model(x)
    y_dense = use_backend(model, "dense")(x)
    # dense: fp32 math, K=256 -> relative error ~1e-6
    torch.testing.assert_close(y_dense.double(), ref, rtol=0, atol=1e-5 * ref.abs().max().item())
    # default CPU backend rounds x and scales to bf16 (2^-8 relative each): stays within 2%
    assert (y_default.double() - ref).abs().max() <= 2e-2 * ref.abs().max()
    assert ql._runtime.backend == "dense"
    with pytest.raises(ValueError, match="backend"):
        use_backend(model, "int8pack")  # 4-bit layer: not servable by the int8 kernel
