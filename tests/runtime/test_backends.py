"""The one backend registry: what it offers per layer kind and device, what None picks,
and use_backend reaching every QuantLinear (int8-activation layers included)."""
import os

import pytest
import torch

from qrt.runtime.backends import choose_backend, usable_backends
from qrt.runtime.linear import QuantLinear, use_backend
from qrt.schemes import resolve_scheme
from qrt_kernels.reference import quant_rows_ref

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
TRITON_ON_CPU = ("triton",) if INTERPRETED else ()
W8A16_G32 = resolve_scheme("w8a16").replace(strategy="group", group_size=32)


def _layer(scheme, device=None, in_features=256):
    if device == "meta":
        return QuantLinear(in_features, 64, scheme=scheme, dtype=torch.float32, device="meta")
    return QuantLinear.from_linear(torch.nn.Linear(in_features, 64), resolve_scheme(scheme))


@pytest.mark.parametrize("scheme, device, usable, default", [
    ("w4a16", None, TRITON_ON_CPU + ("int4pack", "dense"), "int4pack"),
    ("w8a16", None, TRITON_ON_CPU + ("int8pack", "dense"), "int8pack"),
    (W8A16_G32, None, TRITON_ON_CPU + ("dense",), "dense"),  # int8pack is per-channel only
    # per-channel W8A8 on the CPU: torch's int8 W8A16 kernel on the int8 tokens (test_int8_pack_a8.py)
    ("w8a8", None, TRITON_ON_CPU + ("int8pack_a8", "int_mm", "dense"), "int8pack_a8"),
    ("w4a8-g32", None, TRITON_ON_CPU + ("int_mm", "dense"), "int_mm"),
    ("w4a16", "meta", ("triton", "dense"), "triton"),  # shapes only, through the op's fake
    ("w8a8", "meta", ("int_mm", "dense"), "int_mm"),
])
def test_registry_offers_and_picks(scheme, device, usable, default):
    layer = _layer(scheme, device)
    assert usable_backends(layer) == usable
    assert choose_backend(layer).name == default  # the interpreted Triton is never the default
    layer.finalize()
    assert layer._runtime.backend == default


def test_use_backend_does_not_skip_int8_activation_layers(rng_seed):
    model = torch.nn.Sequential(_layer("w8a8"), _layer("w4a8-g32", in_features=64), _layer("w4a16", in_features=64))
    x = torch.randn(3, 256)
    use_backend(model, "dense")  # every layer, the int8-activation ones included
    assert [m._runtime.backend for m in model] == ["dense"] * 3
    h = x
    for m in model:  # each layer against float64 math of its own integers, on its own input
        y = m(h)
        tokens = h if m.scheme.activations is None else _dequantized_tokens(h)
        ref = tokens.double() @ m.dequantize_weight(torch.float64).t() + m.bias.double()
        # fp32 inputs and products, 64-256 term fp32 sums: ~1e-6 relative to the output scale
        assert (y.double() - ref).abs().max() <= 1e-5 * ref.abs().max(), m.extra_repr()
        h = y
    with pytest.raises(ValueError, match=r"layer '0': backend: expected one of .*'int_mm'.*found 'int4pack'"):
        use_backend(model, "int4pack")  # said, not skipped
    a8 = torch.nn.Sequential(model[0], model[1])
    use_backend(a8, "int_mm")
    assert [m._runtime.backend for m in a8] == ["int_mm", "int_mm"]
    if INTERPRETED:
        use_backend(a8, "triton")
        assert [m._runtime.backend for m in a8] == ["triton", "triton"]  # numbers: test_int8_act.py
    use_backend(model, None)
    assert [m._runtime.backend for m in model] == ["int8pack_a8", "int_mm", "int4pack"]


def _dequantized_tokens(x: torch.Tensor) -> torch.Tensor:
    """x [M, K] through symmetric per-token int8 (the quantizer's twin, checked against
    float64 in tests/kernels), dequantized in float64."""
    q, s, _ = quant_rows_ref(x)
    return q.double() * s.double()[:, None]


def test_weight_only_backend_on_an_int8_activation_layer_names_the_usable_ones():
    layer = _layer("w8a8")
    with pytest.raises(ValueError, match=r"backend: expected one of \((?:'triton', )?'int8pack_a8', 'int_mm', 'dense'\) for this "
                                         r"layer \(.*w8a8-dyn.*device cpu\), found 'int8pack'"):
        layer.finalize(backend="int8pack")
