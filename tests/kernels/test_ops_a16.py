"""torch.ops.qrt.dequant_matmul / dequant_weight as custom ops: shapes on meta tensors from
the fake, torch.library.opcheck, and torch.compile(fullgraph=True) through them."""
import pytest
import torch

import qrt_kernels.ops  # noqa: F401  (registers torch.ops.qrt.*)
from packed_cases import make_case
from qrt_kernels.reference import dequant_matmul_ref, dequant_weight as dequant_weight_ref


def _meta_args(m=5, n=48, k=200, bits=4, group_size=64, dtype=torch.bfloat16):
    g = -(-k // group_size)
    return (torch.empty(m, k, dtype=dtype, device="meta"),
            torch.empty(n, -(-k * bits // 32), dtype=torch.int32, device="meta"),
            torch.empty(n, g, dtype=torch.float16, device="meta"),
            torch.empty(n, g, dtype=torch.int8, device="meta"), bits, group_size,
            torch.empty(n, dtype=dtype, device="meta"))


def test_fake_gives_shapes_on_meta():
    y = torch.ops.qrt.dequant_matmul(*_meta_args())
    assert (y.device.type, tuple(y.shape), y.dtype) == ("meta", (5, 48), torch.bfloat16)
    w = torch.ops.qrt.dequant_weight(*_meta_args()[1:6], 200, torch.float16)
    assert (w.device.type, tuple(w.shape), w.dtype) == ("meta", (48, 200), torch.float16)


def test_fake_checks_arguments_on_meta():
    x, w, s, z, bits, g, b = _meta_args()
    with pytest.raises(ValueError, match=r"scales: expected shape \(48, 4\), found \(48, 3\)"):
        torch.ops.qrt.dequant_matmul(x, w, s[:, :3], z, bits, g, b)
    with pytest.raises(ValueError, match=r"bits: expected one of \(2, 4, 8\), found 3"):
        torch.ops.qrt.dequant_weight(w, s, z, 3, g, 200, torch.float16)


def _cpu_args(rng_dtype=torch.float32):
    case = make_case(48, 200, 4, 64, asym=True)
    x = torch.randn(3, 200, dtype=rng_dtype)
    return (x, case.w_packed, case.scales, case.zeros, 4, 64, torch.randn(48, dtype=rng_dtype))


def test_opcheck(rng_seed):
    # schema, fake-vs-real, and AOT dispatch checks (runs the Triton kernel: interpreter on CPU)
    args = _cpu_args()
    torch.library.opcheck(torch.ops.qrt.dequant_matmul.default, args)
    torch.library.opcheck(torch.ops.qrt.dequant_weight.default, (*args[1:6], 200, torch.float32))


def test_compile_fullgraph_through_the_ops(rng_seed):
    # aot_eager: dynamo must trace without graph breaks and the fakes must propagate shapes;
    # it runs the real ops afterwards, so the result is checked against the twins too
    def f(x, w, s, z, bias):
        y = torch.ops.qrt.dequant_matmul(x, w, s, z, 4, 64, bias)
        return torch.relu(y) + torch.ops.qrt.dequant_weight(w, s, z, 4, 64, 200, torch.float32)[:, :1].t()

    x, w, s, z, _, _, bias = _cpu_args()
    torch._dynamo.reset()
    out = torch.compile(f, fullgraph=True, backend="aot_eager")(x, w, s, z, bias)
    expected = torch.relu(dequant_matmul_ref(x, w, s, z, 4, 64, bias)) \
        + dequant_weight_ref(w, s, z, 4, 64, 200)[:, :1].t()
    # fp32 accumulation orders differ (kernel vs torch): gamma_K bound is ~1e-5 relative here
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)
