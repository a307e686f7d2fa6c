import pytest
import torch

from qrt.modules import QuantLinear
from qrt.quantize.primitives import fake_quantize
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
