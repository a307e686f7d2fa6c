"""Paged attention: the torch path and the Triton kernel (interpreted on the CPU) against
their twins and against float64 math, over a batch mixing a prefill chunk and decodes,
with GQA, a sliding window, non-power-of-two head_dim and scattered blocks."""
import os

import pytest
import torch

from qrt.engine.attention import build_metadata, paged_attention, paged_attention_reference, store_kv
from qrt_kernels.reference import paged_attention_ref

PAGE = 4


def make_case(dtype, head_dim=48, heads=4, kv_heads=2, seed=0):
    """Three sequences: a 7-token prefill chunk after 3 cached tokens, two decodes (ctx 9, 13),
    their blocks scattered over a 16-block cache. -> q, k_cache, v_cache, metadata."""
    g = torch.Generator().manual_seed(seed)
    ctx, new = [10, 9, 13], [7, 1, 1]
    perm = torch.randperm(16, generator=g).tolist()
    tables, used = [], 0
    for c in ctx:
        n = -(-c // PAGE)
        tables.append(perm[used:used + n])
        used += n
    k_cache = torch.randn(16, PAGE, kv_heads, head_dim, generator=g).to(dtype)
    v_cache = torch.randn(16, PAGE, kv_heads, head_dim, generator=g).to(dtype)
    starts, slots = [0], []
    for c, n, t in zip(ctx, new, tables):
        starts.append(starts[-1] + n)
        slots.extend(t[p // PAGE] * PAGE + p % PAGE for p in range(c - n, c))
    meta = build_metadata(slots, starts, ctx, tables, "cpu")
    q = torch.randn(starts[-1], heads, head_dim, generator=g).to(dtype)
    k_new = torch.randn(starts[-1], kv_heads, head_dim, generator=g).to(dtype)
    store_kv(k_new, k_new * 0.5, k_cache, v_cache, meta.slot_mapping)
    return q, k_cache, v_cache, meta


def kernel_args(meta):
    return meta.block_tables, meta.token_seq, meta.token_pos


@pytest.mark.parametrize("window", [None, 5])
def test_torch_path_matches_float64(window):
    q, k, v, meta = make_case(torch.float32)
    got = paged_attention(q, k, v, meta, 0.3, window)
    # float32 softmax over <= 13 keys of unit-scale scores: ~1e-6 relative rounding
    torch.testing.assert_close(got, paged_attention_reference(q, k, v, meta, 0.3, window), rtol=0, atol=2e-6)


@pytest.mark.parametrize("window", [None, 5])
def test_kernel_twin_matches_float64(window):
    q, k, v, meta = make_case(torch.float32)
    got = paged_attention_ref(q, k, v, *kernel_args(meta), 0.3, window)
    torch.testing.assert_close(got, paged_attention_reference(q, k, v, meta, 0.3, window), rtol=0, atol=2e-6)


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1" and not torch.cuda.is_available(),
                    reason="Triton runs on CUDA, or on the CPU under TRITON_INTERPRET=1")
@pytest.mark.parametrize("dtype,atol", [(torch.float32, 2e-6), (torch.float16, 1e-3)])
@pytest.mark.parametrize("window", [None, 5])
@pytest.mark.parametrize("head_dim", [48, 64])
def test_triton_kernel_matches_twin(dtype, atol, window, head_dim):
    from qrt_kernels.paged_attention import paged_attention as kernel
    device = "cuda" if torch.cuda.is_available() else "cpu"
    q, k, v, meta = make_case(dtype, head_dim=head_dim)
    args = [t.to(device) for t in (q, k, v, *kernel_args(meta))]
    got = kernel(*args, 0.3, window).cpu()
    # both accumulate in fp32 (online vs two-pass softmax differ by ~1e-7 relative); fp16
    # outputs of magnitude ~1 round at 2^-11 ~ 5e-4, so 1e-3 is one ulp plus margin
    torch.testing.assert_close(got, paged_attention_ref(q, k, v, *kernel_args(meta), 0.3, window),
                               rtol=0, atol=atol)


def test_kernel_rejects_bad_shapes():
    from qrt_kernels.paged_attention import check_paged_attention_args
    q, k, v, meta = make_case(torch.float32)
    with pytest.raises(ValueError, match="head_dim"):
        check_paged_attention_args(q[..., :32], k, v, *kernel_args(meta))
    with pytest.raises(ValueError, match="token_seq"):
        check_paged_attention_args(q, k, v, meta.block_tables, meta.token_seq[:2], meta.token_pos)


_COMPILE_SM90 = """
import sys
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from qrt_kernels.paged_attention import _paged_attention_kernel
dtype = sys.argv[1]
ints = ["HEAD_DIM", "WINDOW", "stride_qt", "stride_qh", "stride_kb", "stride_kp", "stride_kh",
        "stride_bt", "stride_ot", "stride_oh"]
sig = {"q_ptr": f"*{dtype}", "k_cache_ptr": f"*{dtype}", "v_cache_ptr": f"*{dtype}", "block_tables_ptr": "*i64",
       "token_seq_ptr": "*i32", "token_pos_ptr": "*i32", "out_ptr": f"*{dtype}", **dict.fromkeys(ints, "i32"),
       "scale": "fp32", **dict.fromkeys(["GROUP", "PAGE_SIZE", "HAS_WINDOW", "BLOCK_N", "BLOCK_D"], "constexpr")}
src = ASTSource(fn=_paged_attention_kernel, signature=sig,
                constexprs={"GROUP": 3, "PAGE_SIZE": 16, "HAS_WINDOW": True, "BLOCK_N": 32, "BLOCK_D": 64})
print(len(triton.compile(src, target=GPUTarget("cuda", 90, 32)).asm["cubin"]))
"""


@pytest.mark.parametrize("dtype", ["fp16", "bf16", "fp32"])
def test_kernel_compiles_for_sm90(dtype):
    """No GPU here: compile to a cubin for sm_90 with the wheel's ptxas (in a fresh process,
    not interpreted), so a kernel that only the interpreter accepts fails on the CPU already."""
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, "-c", _COMPILE_SM90, dtype], env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert int(r.stdout.split()[-1]) > 0
