"""The WxA16 dispatcher: which kernel and blocks it picks by M and shape, the tuned-config
JSON hook, the CPU fallback to the twin, and the ValueErrors for bad arguments."""
import json

import pytest
import torch

from packed_cases import FP32_UNIT, UNIT_ROUNDOFF, assert_within, gemv_offset_tol, make_case, reference64
from qrt_kernels import a16_configs, dispatch
from qrt_kernels.a16_configs import DEFAULT_A16_TABLE, A16Config, load_a16_table
from qrt_kernels.reference import dequant_matmul_ref

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.mark.parametrize("m, kernel", [(1, "decode"), (3, "decode"), (8, "decode"), (16, "decode"),
                                       (17, "decode"), (33, "decode"), (64, "decode"), (1024, "decode"),
                                       (1025, "dequant_torch"), (8192, "dequant_torch")])
def test_default_table_kernel_by_m(m, kernel):
    cfg = dispatch.select_a16_config(m, 4096, 4096, 128, DEFAULT_A16_TABLE, n_sm=132)
    assert cfg.kernel == kernel
    if kernel == "decode":
        # one launch per linear, K never split; up to M=16 one token tile (padded to 8 or 16)
        assert cfg.split_k == 1 and (m > 16 or cfg.block_m in (8, 16) and cfg.block_m >= m)


def test_split_k_fills_the_gpu_only_when_needed():
    table = (A16Config("decode", max_m=16, block_m=16, block_n=32), A16Config("tile", max_m=None, block_m=32))
    # tile kernel, M=32 on 8192x8192: 128 tiles cannot fill 132 SMs twice, K has 128 blocks to share
    assert dispatch.select_a16_config(32, 8192, 8192, 128, table, n_sm=132).split_k > 1
    # a short K leaves nothing to split; a wide grid needs no split; decode never splits
    assert dispatch.select_a16_config(32, 8192, 256, 128, table, n_sm=132).split_k == 1
    assert dispatch.select_a16_config(1, 8192, 8192, 128, table, n_sm=132).split_k == 1
    assert dispatch.select_a16_config(8192, 8192, 8192, 128, table, n_sm=132).split_k == 1  # 8192 tiles


@pytest.mark.parametrize("group_size, kernel, block_k", [(128, "decode", 64), (32, "decode", 64),
                                                         (16, "tile", 16), (40, "tile", 64), (4096, "decode", 64)])
def test_block_k_fitted_to_group(group_size, kernel, block_k):
    # M=64 row: BLOCK_K 64; it shrinks to divide the group (scale after the dot) or holds whole
    # groups (g32: two, one dot and scale each); decode needs >= 4
    # words (32 values at 4 bits), so g16 goes to the tile kernel; 40 has no block >= 16
    # (tile kernel, per-element scales); per-channel (G >= K) needs none
    cfg = dispatch.select_a16_config(64, 4096, 4096, group_size, DEFAULT_A16_TABLE, n_sm=132)
    assert cfg.kernel == kernel and cfg.block_k == block_k


def _case_args(m, dtype=torch.float16, n=48, k=200, bits=4, group_size=64):
    case = make_case(n, k, bits, group_size, asym=True)
    x = torch.randn(m, k).to(dtype)
    bias = torch.randn(n).to(dtype)
    return case, x, bias


@pytest.mark.parametrize("m, launcher, group_size", [(1, "dequant_matmul_decode", 64), (3, "dequant_matmul_decode", 64),
                                                     (17, "dequant_matmul_decode", 64), (17, "dequant_matmul_tile", 40)])
def test_dispatch_runs_the_chosen_kernel(m, launcher, group_size, monkeypatch, rng_seed):
    import qrt_kernels.dequant_matmul
    import qrt_kernels.gemv_a16
    dm = qrt_kernels.gemv_a16 if launcher == "dequant_matmul_decode" else qrt_kernels.dequant_matmul
    calls = []
    real = getattr(dm, launcher)
    monkeypatch.setattr(dm, launcher, lambda *a, **kw: calls.append(kw["cfg"]) or real(*a, **kw))
    case, x, bias = _case_args(m, group_size=group_size)
    args = [case.w_packed, case.scales, case.zeros]
    y = dispatch.dequant_matmul(x.to(DEVICE), *[t.to(DEVICE) for t in args], 4, group_size, bias.to(DEVICE)).cpu()
    assert len(calls) == 1
    twin = dequant_matmul_ref(x, *args, 4, group_size, bias)
    _, s = reference64(x, case, bias)
    # both accumulate in fp32 from exact weights, then round to fp16 (module docstring of
    # test_dequant_matmul.py: 2 gamma_K S + 2 u |y|); g40: the tile kernel scales each
    # element and rounds the weight to fp16 before the MMA (+ u S); M <= 16: the GEMV's
    # offset form (its bound in test_dequant_matmul.py)
    u = UNIT_ROUNDOFF[torch.float16]
    tol = (2 * 200 * FP32_UNIT * s + 2 * u * twin.double().abs() + (u * s if group_size % 16 else 0)
           + (gemv_offset_tol(case, x) if m <= 16 else 0))
    assert_within(y, twin, tol, f"dispatch M={m}")


def test_dispatch_past_crossover_dequantizes_then_matmuls(rng_seed):
    # M=1100 > 1024: the weight is dequantized to fp32 once and torch does the matmul
    case, x, bias = _case_args(1100, dtype=torch.float32, n=24, k=96, group_size=32)
    args = [case.w_packed, case.scales, case.zeros]
    y = dispatch.dequant_matmul(x.to(DEVICE), *[t.to(DEVICE) for t in args], 4, 32, bias.to(DEVICE)).cpu()
    y64, s = reference64(x, case, bias)
    # exact fp32 weight; torch's fp32 matmul accumulates K products; the bias add rounds once
    assert_within(y, y64, 96 * FP32_UNIT * s + 2 * FP32_UNIT * y64.abs(), "dequant + torch matmul")


def test_cpu_without_triton_uses_the_twin(monkeypatch, rng_seed):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    case, x, bias = _case_args(3)
    args = (x, case.w_packed, case.scales, case.zeros, 4, 64, bias)
    assert torch.equal(dispatch.dequant_matmul(*args), dequant_matmul_ref(*args))


def test_tuned_json_overrides_the_default(tmp_path, monkeypatch):
    rows = [{"kernel": "decode", "max_m": 4, "block_m": 8, "block_n": 128, "block_k": 64},
            {"kernel": "tile", "max_m": None, "block_m": 32, "block_n": 32, "block_k": 32, "split_k": 2}]
    (tmp_path / "tuned-nvidia-test-gpu-80gb.json").write_text(json.dumps({"a16": rows, "a8": []}))
    monkeypatch.setattr(a16_configs, "_TUNED_DIR", tmp_path)
    a16_configs.a16_table_for.cache_clear()
    try:
        table = a16_configs.a16_table_for("NVIDIA Test-GPU 80GB")
        assert table == (A16Config(**rows[0]), A16Config(**rows[1]))
        assert a16_configs.a16_table_for("Other GPU") == DEFAULT_A16_TABLE
        assert dispatch.select_a16_config(3, 64, 64, 64, table, n_sm=1).block_n == 128
        assert dispatch.select_a16_config(5, 64, 64, 64, table, n_sm=1).split_k == 2
    finally:
        a16_configs.a16_table_for.cache_clear()


@pytest.mark.parametrize("rows, match", [
    ([{"kernel": "gemv", "max_m": None}], "A16Config.kernel: expected one of"),
    ([{"kernel": "tile", "max_m": None, "block_m": 8}], "blocks >= 16"),
    ([{"kernel": "decode", "max_m": None, "block_n": 48}], "block_n: expected a power of two, found 48"),
    ([{"kernel": "decode", "max_m": None, "split_k": 2}], "split_k: expected 1 or None"),
    ([{"kernel": "decode", "max_m": 8}], "last row to have max_m None"),
    ([{"kernel": "decode", "max_m": 8}, {"kernel": "tile", "max_m": 4},
      {"kernel": "dequant_torch", "max_m": None}], r"strictly increasing max_m, found \[8, 4\]"),
])
def test_bad_tuned_json(tmp_path, rows, match):
    path = tmp_path / "tuned.json"
    path.write_text(json.dumps({"a16": rows}))
    with pytest.raises(ValueError, match=match):
        load_a16_table(path)


def _good_args(m=2, n=16, k=64, bits=4, group_size=32):
    x = torch.randn(m, k, dtype=torch.float16)
    w = torch.zeros(n, k * bits // 32, dtype=torch.int32)
    s = torch.ones(n, k // group_size, dtype=torch.float16)
    z = torch.zeros(n, k // group_size, dtype=torch.int8)
    return dict(x=x, w_packed=w, scales=s, zeros=z, bits=bits, group_size=group_size,
                bias=torch.zeros(n, dtype=torch.float16))


@pytest.mark.parametrize("change, match", [
    (dict(x=torch.zeros(2, 64, dtype=torch.int32)), r"x: expected dtype in \(float16, bfloat16, float32\), found int32"),
    (dict(x=torch.zeros(2, 3, 64, dtype=torch.float16)), r"x: expected 2 dims \[M, K\], found shape \(2, 3, 64\)"),
    (dict(w_packed=torch.zeros(16, 8, dtype=torch.int64)), "w_packed: expected dtype in .int32., found int64"),
    (dict(w_packed=torch.zeros(16, 7, dtype=torch.int32)), r"w_packed: expected shape \(16, 8\), found \(16, 7\)"),
    (dict(scales=torch.ones(16, 3, dtype=torch.float16)), r"scales: expected shape \(16, 2\), found \(16, 3\)"),
    (dict(scales=torch.ones(16, 2, dtype=torch.float64)), "scales: expected dtype in .* found float64"),
    (dict(zeros=torch.zeros(15, 2, dtype=torch.int8)), r"zeros: expected shape \(16, 2\), found \(15, 2\)"),
    (dict(zeros=torch.zeros(16, 2, dtype=torch.uint8)), "zeros: expected dtype in .* found uint8"),
    (dict(bias=torch.zeros(17, dtype=torch.float16)), r"bias: expected shape \(16,\), found \(17,\)"),
    (dict(bits=3), r"bits: expected one of \(2, 4, 8\), found 3"),
    (dict(group_size=0), "group_size: expected a positive int, found 0"),
    (dict(x=torch.zeros(64, 2, dtype=torch.float16).t()), r"x: expected a contiguous tensor, found strides \(1, 2\)"),
    (dict(scales=torch.ones(16, 2, dtype=torch.float16, device="meta")), "scales: expected device cpu, found meta"),
])
def test_bad_input_raises_value_error(change, match):
    args = {**_good_args(), **change}
    with pytest.raises(ValueError, match=match):
        dispatch.dequant_matmul(**args)
