"""Weight-only QuantLinear forward: the CPU packed backends (torch int4pack / int8pack)
against the twin, every backend through QuantLinear against F.linear with the dequantized
weight, act-order, meta tensors and torch.compile.

The packed CPU kernels run in bfloat16 (unit roundoff u = 2^-8): x, the scales, the float
zero -z*s and the output are each rounded once, and the kernel may round the dequantized
weight too. With A = |x| @ ((|q| + |z|) * s).T, those roundings err by at most
4u * A + 2u * |y|, plus fp32 accumulation (K * 2^-24 * A, far smaller): the bound used here.
"""
import pytest
import torch
import torch.nn.functional as F
from packed_cases import FP32_UNIT, assert_within, make_case

from qrt.numerics.packing import pack_int32
from qrt.numerics.quant import QuantizedWeight, expand_groups
from qrt.runtime.backends import prepare_runtime
from qrt.runtime.cpu_packed import Int4PackCPU, Int8PackCPU
from qrt.runtime.linear import QuantLinear
from qrt.schemes import QuantScheme, resolve_scheme
from qrt_kernels.reference import dequant_matmul_ref

BF16_U = 2.0 ** -8
INTERPRETED = not torch.cuda.is_available()
K_IN, N_OUT = 200, 40  # K % 16, K % 32 != 0 and N % 16 != 0: every padding path runs


def _bf16_bound(x, abs_w, y_ref):
    a = x.double().abs() @ abs_w.t()
    return 4 * BF16_U * a + 2 * BF16_U * y_ref.double().abs() + x.shape[-1] * FP32_UNIT * a


@pytest.mark.parametrize("bits", [2, 3, 4])
@pytest.mark.parametrize("asym", [False, True])
@pytest.mark.parametrize("group_size", [32, 64, 128, K_IN])  # K_IN: per-channel
def test_int4pack_matches_twin(bits, asym, group_size, rng_seed):
    case = make_case(N_OUT, K_IN, bits, group_size, asym)
    x, bias = torch.randn(3, K_IN), torch.randn(N_OUT)
    y = Int4PackCPU.build(case.q, case.scales, case.zeros, bits, group_size).matmul(x, bias)
    kbits = 4 if bits == 3 else bits  # the twin takes 2/4/8: 3-bit integers packed as 4-bit
    twin = dequant_matmul_ref(x, pack_int32(case.q, kbits), case.scales, case.zeros, kbits, group_size, bias)
    assert y.dtype == x.dtype and y.shape == (3, N_OUT)
    assert_within(y, twin, _bf16_bound(x, case.abs_weight64(), twin), f"int4pack w{bits} g{group_size}")


@pytest.mark.parametrize("asym", [False, True])
@pytest.mark.parametrize("m", [1, 17])
def test_int8pack_matches_twin(asym, m, rng_seed):
    case = make_case(N_OUT, K_IN, 8, K_IN, asym)
    x, bias = torch.randn(m, K_IN), torch.randn(N_OUT)
    y = Int8PackCPU.build(case.q, case.scales, case.zeros).matmul(x, bias)
    twin = dequant_matmul_ref(x, case.w_packed, case.scales, case.zeros, 8, K_IN, bias)
    assert_within(y, twin, _bf16_bound(x, case.abs_weight64(), twin), "int8pack")


def _abs_weight(layer) -> torch.Tensor:
    """float64 (|q| + |z|) * s [out, in], groups by g_idx where the layer has one."""
    qw = layer.qweight()
    args = (layer.group_size, layer.in_features, qw.g_idx)
    w = qw.q.double().abs()
    if qw.zero is not None:
        w = w + expand_groups(qw.zero.double().abs(), *args)
    return w * expand_groups(qw.scale.double(), *args)


def _check_forward(layer, x, backend, what):
    """layer(x) vs F.linear with the layer's own dequantized weight, in float64."""
    ref = F.linear(x.double(), layer.dequantize_weight(torch.float64), layer.bias.double())
    y = layer(x)
    assert layer._runtime.backend == backend, what
    assert y.shape == (*x.shape[:-1], layer.out_features) and y.dtype == x.dtype
    abs_w = _abs_weight(layer)
    if backend in ("int4pack", "int8pack"):
        tol = _bf16_bound(x.reshape(-1, x.shape[-1]), abs_w, ref.reshape(-1, ref.shape[-1]))
    else:  # fp32 weights exact (fp32 scales: one rounding), fp32 accumulation, bias add
        a = x.reshape(-1, x.shape[-1]).double().abs() @ abs_w.t()
        tol = 2 * x.shape[-1] * FP32_UNIT * a + 2 * FP32_UNIT * ref.reshape(a.shape).abs()
    assert_within(y.reshape(-1, layer.out_features), ref.reshape(-1, layer.out_features), tol, what)


SCHEMES = [("w8a16", "int8pack"), ("w4a16", "int4pack"), ("w4a16-asym", "int4pack"),
           ("w3a16", "int4pack"), ("w2a16", "int4pack"), ("w4a16-g32", "int4pack"),
           (QuantScheme(bits=8, strategy="tensor", group_size=None), "int8pack"),
           (QuantScheme(bits=8, group_size=64), "dense"), ("w4a16-g48", "dense")]


@pytest.mark.parametrize("scheme, backend", SCHEMES, ids=[str(s)[:20] for s, _ in SCHEMES])
def test_quantlinear_cpu_forward_matches_dequantized_linear(scheme, backend, rng_seed):
    layer = QuantLinear.from_linear(torch.nn.Linear(K_IN, N_OUT), scheme)
    _check_forward(layer, torch.randn(2, 3, K_IN), backend, f"{scheme} on {backend}")


def test_bf16_activations_on_int4pack(rng_seed):
    layer = QuantLinear.from_linear(torch.nn.Linear(K_IN, N_OUT), "w4a16")
    x = torch.randn(5, K_IN).bfloat16()
    y, ref = layer(x), F.linear(x.double(), layer.dequantize_weight(torch.float64), layer.bias.double())
    # x is already bf16 (exact); the rest of the bf16 bound applies unchanged
    assert y.dtype == torch.bfloat16
    assert_within(y, ref, _bf16_bound(x, _abs_weight(layer), ref), "bf16 x on int4pack")


def _act_order_layer(scheme: str, regular: bool) -> QuantLinear:
    """A layer whose g_idx is a random permutation of the group pattern (GPTQ act-order);
    irregular: one column moved to another group, so the counts no longer match G."""
    s = resolve_scheme(scheme)
    gs, n_groups = s.group_size, s.num_groups(K_IN)
    g_idx = torch.arange(K_IN) // gs
    if not regular:
        g_idx[0] = 1
    g_idx = g_idx[torch.randperm(K_IN)].to(torch.int32)
    lo, hi = s.qmin, s.qmax + 1
    qw = QuantizedWeight(torch.randint(lo, hi, (N_OUT, K_IN), dtype=torch.int8),
                         torch.rand(N_OUT, n_groups) * 0.2 + 0.05,
                         None if s.symmetric else torch.randint(lo, hi, (N_OUT, n_groups), dtype=torch.int8),
                         g_idx)
    return QuantLinear.from_quantized(qw, s, bias=torch.randn(N_OUT), dtype=torch.float32)


@pytest.mark.parametrize("scheme", ["w4a16", "w4a16-asym", "w2a16"])
def test_act_order_regular_groups_use_the_packed_kernel(scheme, rng_seed):
    layer = _act_order_layer(scheme, regular=True)
    _check_forward(layer, torch.randn(3, K_IN), "int4pack", f"act-order {scheme}")
    perm = layer._runtime.col_perm
    # the permutation sorts the columns into contiguous groups
    assert torch.equal(layer.weight_g_idx.long()[perm], torch.arange(K_IN) // layer.group_size)


def test_act_order_irregular_groups_fall_back_to_dense(rng_seed):
    layer = _act_order_layer("w4a16-asym", regular=False)
    _check_forward(layer, torch.randn(3, K_IN), "dense", "irregular act-order")
    with pytest.raises(ValueError, match=r"backend: expected one of \('dense',\).*found 'int4pack'"):
        prepare_runtime(layer, backend="int4pack")


@pytest.mark.skipif(not INTERPRETED and not torch.cuda.is_available(), reason="needs Triton")
@pytest.mark.parametrize("scheme, act_order", [("w8a16", False), ("w4a16-asym", True),
                                               ("w3a16", False), ("w2a16", True)])
def test_triton_backend_through_quantlinear(scheme, act_order, rng_seed):
    # the CUDA path (custom op -> dispatch -> Triton), run by the interpreter on the CPU;
    # 3-bit is widened to 4-bit once, act-order permutes the packed columns once
    layer = _act_order_layer(scheme, True) if act_order else \
        QuantLinear.from_linear(torch.nn.Linear(K_IN, N_OUT), scheme)
    layer.finalize()
    layer._runtime = prepare_runtime(layer, backend="triton")
    _check_forward(layer, torch.randn(2, 2, K_IN), "triton", f"triton {scheme}")


@pytest.mark.parametrize("scheme", [resolve_scheme("w4a16-asym").replace(actorder="group"), "w8a16", "w3a16"],
                         ids=["w4a16-asym-actorder", "w8a16", "w3a16"])
def test_meta_forward_gives_shapes(scheme):
    # a meta skeleton (before loading) runs through the custom op's fake: shapes only
    layer = QuantLinear(K_IN, N_OUT, scheme=scheme, dtype=torch.float16, device="meta")
    y = layer(torch.empty(2, 7, K_IN, dtype=torch.float16, device="meta"))
    assert (y.device.type, tuple(y.shape), y.dtype) == ("meta", (2, 7, N_OUT), torch.float16)


@pytest.mark.parametrize("scheme, backend", [("w4a16-asym", "int4pack"), ("w8a16", "int8pack"),
                                             ("w4a16-asym", "triton")])
def test_compile_fullgraph_quantlinear_cpu(scheme, backend, rng_seed):
    if backend == "triton" and not INTERPRETED:
        pytest.skip("the Triton backend runs on the CPU only under TRITON_INTERPRET")
    layer = QuantLinear.from_linear(torch.nn.Linear(K_IN, N_OUT), scheme)
    layer.finalize()  # the compiled graph sees the built runtime
    layer._runtime = prepare_runtime(layer, backend=backend)
    x = torch.randn(3, K_IN)
    eager = layer(x)
    torch._dynamo.reset()
    # aot_eager, not inductor: inductor also works (checked by hand, identical output) but
    # its C++ compile took 70 s on the shared 2-core CI box; aot_eager still needs dynamo to
    # capture one graph (the custom op included) and fake tensors to run through every op
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    # the same kernels run on the same inputs: identical numbers
    torch.testing.assert_close(compiled(x), eager, rtol=0, atol=0)


def test_bad_input_shape():
    layer = QuantLinear.from_linear(torch.nn.Linear(K_IN, N_OUT), "w4a16")
    with pytest.raises(ValueError, match=r"x: expected last dim 200 \(in_features\), found shape \(3, 199\)"):
        layer(torch.randn(3, K_IN - 1))
    with pytest.raises(ValueError, match=r"backend: expected one of .*found 'int8pack'"):
        prepare_runtime(layer, backend="int8pack")
