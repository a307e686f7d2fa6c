"""W8A8 through torch._weight_int8pack_mm on the int8 token values (qrt.runtime.int8_pack_a8)
against torch._int_mm's exact int32 dots and float64 math; the fast token quantizer against
its twin, bit for bit."""
import pytest
import torch

from qrt.runtime.int8_act import quant_rows
from qrt.runtime.int8_pack_a8 import Int8PackA8
from qrt.runtime.linear import QuantLinear
from qrt_kernels.reference import quant_rows_ref

U = 2.0 ** -8  # bf16 unit roundoff: the kernel's output rounding


@pytest.mark.parametrize("m,k,n", [(1, 576, 192), (5, 1536, 64), (2, 40, 33)])  # 40: padded K
def test_dots_against_int_mm(m, k, n):
    g = torch.Generator().manual_seed(k)
    xq = torch.randint(-128, 128, (m, k), generator=g, dtype=torch.int8)
    w = torch.randint(-127, 128, (n, k), generator=g, dtype=torch.int8)
    exact = torch._int_mm(xq, w.t().contiguous()).double()
    assert torch.equal(exact, xq.double() @ w.double().t())  # the int32 oracle itself
    got = Int8PackA8.build(w, torch.ones(n, 1)).dots(xq).double()
    # products are exact in bf16 x bf16 -> fp32; fp32 sums round only past 2^24 (K 2^-24 of
    # the magnitude); the bf16 output rounds by u: nothing else may differ
    mag = xq.double().abs() @ w.double().abs().t()
    assert ((got - exact).abs() <= U * exact.abs() + k * 2.0 ** -24 * mag).all()


@pytest.mark.parametrize("m", [1, 4])
def test_linear_against_float64_and_int_mm(m):
    torch.manual_seed(0)
    lin = torch.nn.Linear(576, 300)
    a = QuantLinear.from_linear(lin, "w8a8")
    a.finalize("int8pack_a8")
    b = QuantLinear.from_linear(lin, "w8a8")
    b.finalize("int_mm")
    x = torch.randn(m, 576)
    xq, sx, _ = quant_rows_ref(x)
    qw = a.qweight()
    dot = xq.double() @ qw.q.double().t()
    sw = qw.scale.double().reshape(-1)
    y64 = dot * sw * sx.double()[:, None] + lin.bias.double()
    # the dot's bf16 rounding (u), then 3 fp32 ops on the way to y (scale, scale, bias)
    scale = sw * sx.double().abs()[:, None]
    bound = (U + 4 * 2.0 ** -24) * dot.abs() * scale + 2 * 2.0 ** -24 * (lin.bias.double().abs())
    assert ((a(x).double() - y64).abs() <= bound).all()
    assert ((a(x).double() - b(x).double()).abs() <= bound + 4 * 2.0 ** -24 * (dot.abs() * scale)).all()


def test_int8pack_is_the_cpu_default_for_per_channel_w8a8_only():
    lin = torch.nn.Linear(64, 32)
    w8 = QuantLinear.from_linear(lin, "w8a8")
    w8.finalize()
    assert w8._runtime.backend == "int8pack_a8"
    w4 = QuantLinear.from_linear(lin, "w4a8-g32")
    w4.finalize()
    assert w4._runtime.backend == "int_mm"  # groups: the int8pack kernel has one scale per row


def test_fast_quantizer_is_bit_equal_to_its_twin():
    torch.manual_seed(1)
    x = torch.randn(6, 100) * torch.logspace(-3, 3, 6)[:, None]
    x[2] = 0  # a zero row: scale 0, q 0
    for rows in (x, x[:1]):
        got, ref = quant_rows(rows, True, None), quant_rows_ref(rows, True, None)
        for a, b in zip(got, ref):
            assert torch.equal(a, b)
    bad = x.clone()
    bad[3, 7] = float("nan")
    bad[4, 1] = float("inf")  # falls back to the twin: those rows NaN-scaled, others exact
    for a, b in zip(quant_rows(bad, True, None), quant_rows_ref(bad, True, None)):
        assert torch.equal(a, b) or torch.equal(a.isnan(), b.isnan()) and torch.equal(a.nan_to_num(), b.nan_to_num())
    static = torch.tensor([0.02])
    for sym, sc in ((True, static), (False, None)):
        for a, b in zip(quant_rows(x, sym, sc), quant_rows_ref(x, sym, sc)):
            assert torch.equal(a, b)
