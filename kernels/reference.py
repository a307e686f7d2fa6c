"""Plain-torch twins of every kernel: same signature, same math, fp32 accumulation.

They are the test oracle for the Triton kernels and the fallback where Triton cannot run.
Packed weights use the compressed-tensors layout: int32 [N, ceil(K*bits/32)], packed along
K, least-significant bits first, stored value = q + 2^(bits-1).
"""
from __future__ import annotations

import torch


def unpack_rows(w_packed: torch.Tensor, bits: int, k: int) -> torch.Tensor:
    """int32 [N, K*bits/32] -> int32 signed values [N, K], for bits in {2, 4, 8}
    (bits dividing 32: no value straddles a word)."""
    per_word = 32 // bits
    shifts = torch.arange(per_word, device=w_packed.device, dtype=torch.int32) * bits
    u = (w_packed.unsqueeze(-1) >> shifts) & ((1 << bits) - 1)  # arithmetic shift, then mask
    return u.reshape(w_packed.shape[0], -1)[:, :k] - (1 << (bits - 1))


def dequant_weight(w_packed: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor | None,
                   bits: int, group_size: int, k: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """-> W [N, K] = (q - zero) * scale, computed in float32, returned in dtype;
    scales/zeros [N, ceil(K/group_size)]. Twin of qrt_kernels.dequant.dequant_weight."""
    q = unpack_rows(w_packed, bits, k).float()
    if zeros is not None:
        q = q - zeros.float().repeat_interleave(group_size, dim=1)[:, :k]
    return (q * scales.float().repeat_interleave(group_size, dim=1)[:, :k]).to(dtype)


def dequant_matmul_ref(x: torch.Tensor, w_packed: torch.Tensor, scales: torch.Tensor,
                       zeros: torch.Tensor | None, bits: int, group_size: int,
                       bias: torch.Tensor | None = None) -> torch.Tensor:
    """y [M, N] = x [M, K] @ dequant(W).T (+ bias), fp32 accumulation, output in x.dtype.

    w_packed int32 [N, ceil(K*bits/32)]; scales [N, G]; zeros int [N, G] or None;
    G = ceil(K / group_size) (the last group may be ragged).
    """
    k = x.shape[-1]
    w = dequant_weight(w_packed, scales, zeros, bits, group_size, k)
    y = x.float() @ w.t()
    if bias is not None:
        y = y + bias.float()
    return y.to(x.dtype)


# ---- int8 activations ----
def _quant_rows_from_inv(xf: torch.Tensor, inv: torch.Tensor, zp: torch.Tensor | None) -> torch.Tensor:
    """fp32 x [M, K] (inf/NaN already zeroed), per-row 1/scale [M] -> int8 q [M, K]."""
    v = xf * inv[:, None]  # a new tensor: the in-place steps below never touch x
    if zp is None:
        return v.clamp_(-128.0, 127.0).round_().to(torch.int8)
    v = v.clamp_(-256.0, 256.0).round_().add_(zp[:, None].float())
    return v.clamp_(-128.0, 127.0).to(torch.int8)


def _safe_inverse(scale: torch.Tensor) -> torch.Tensor:
    """1 / scale, with 0 where scale is 0 (a zero row quantizes to 0, not 0 * inf = NaN)."""
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    return torch.where(scale > 0, 1.0 / safe, torch.zeros_like(scale))


def quant_rows_ref(x: torch.Tensor, symmetric: bool = True,
                   static_scale: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Twin of act_quant.quant_rows: x [M, K] -> (q int8 [M, K], scale fp32 [M], zp int32 [M]).

    Same fp32 operations in the same order as the kernel. Rows holding inf/NaN get scale
    NaN and q = 0 (zp when asymmetric); zero rows get scale 0 and q = 0.
    """
    x = x.float()
    m, k = x.shape
    # rows holding inf/NaN (amax propagates NaN, |inf| = inf); the statistics use a copy with
    # inf/NaN counted as 0, as in the kernel. Masked unconditionally: a data-dependent
    # branch here would break torch.compile(fullgraph=True) of the CPU W8A8/W4A8 path
    finite = torch.isfinite(x)
    bad = ~finite.all(dim=1) if k else torch.zeros(m, dtype=torch.bool, device=x.device)
    xf = torch.where(finite, x, torch.zeros_like(x))
    absmax = xf.abs().amax(dim=1) if k else x.new_zeros(m)
    zp = None
    if static_scale is not None:
        scale = static_scale.float().reshape(1).expand(m).clone()
    elif symmetric:
        scale = absmax / 127.0  # the kernel's max(-min(x, 0), max(x, 0)) is exactly max |x|
    else:
        lo = xf.amin(dim=1).clamp(max=0.0) if k else x.new_zeros(m)
        hi = xf.amax(dim=1).clamp(min=0.0) if k else x.new_zeros(m)
        scale = (hi - lo) / 255.0
    inv = torch.where(bad, torch.zeros_like(scale), _safe_inverse(scale))
    if static_scale is None and not symmetric:
        zp = torch.round((-128.0 - lo * inv).clamp(-128.0, 127.0))
    q = _quant_rows_from_inv(xf, inv, zp)
    scale = torch.where(bad, torch.full_like(scale, float("nan")), scale)
    zp_out = torch.zeros_like(scale, dtype=torch.int32) if zp is None else zp.to(torch.int32)
    return q, scale, zp_out


def int_matmul_exact(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """int [M, K] @ int [K, N] -> int32 [M, N], exactly: float64 holds every partial sum of
    int8 products (|sum| <= K * 2^14 < 2^53), on any device and dtype backend."""
    return (a.double() @ b.double()).to(torch.int32)


def a8_matmul_ref(xq: torch.Tensor, sx: torch.Tensor, w: torch.Tensor, w_scales: torch.Tensor, *,
                  w_bits: int, group_size: int, bias: torch.Tensor | None, out_dtype: torch.dtype,
                  x_zp: torch.Tensor | None = None, w_sums: torch.Tensor | None = None) -> torch.Tensor:
    """Twin of int8_matmul.a8_matmul: y [M, N] = sx * sum_g sw[:, g] * int32 partial_g (+ bias).

    w: int8 [N, K] (w_bits 8) or packed int32 [N, ceil(K/8)] (w_bits 4); w_scales fp32
    [N, G]; group_size 0 = per channel. fp32 epilogue in the kernel's order (groups in
    ascending order, then the token scale, then bias).
    """
    k = xq.shape[1]
    wq = w.to(torch.int32) if w_bits == 8 else unpack_rows(w, 4, k)
    gs = group_size or k
    acc = None
    for g in range(w_scales.shape[1]):
        part = int_matmul_exact(xq[:, g * gs:(g + 1) * gs], wq[:, g * gs:(g + 1) * gs].t())
        if x_zp is not None:
            part = part - x_zp[:, None] * w_sums[:, g][None, :]
        term = part.float() * w_scales[:, g].float()[None, :]
        acc = term if acc is None else acc + term
    y = acc * sx.float()[:, None]
    if bias is not None:
        y = y + bias.float()[None, :]
    return y.to(out_dtype)


def a8_gemv_ref(x: torch.Tensor, w: torch.Tensor, w_scales: torch.Tensor, *, w_bits: int,
                group_size: int, bias: torch.Tensor | None, symmetric: bool = True,
                input_scale: torch.Tensor | None = None, w_sums: torch.Tensor | None = None) -> torch.Tensor:
    """Twin of int8_gemv.a8_gemv (quantize the tokens, then the int8 GEMM): x [M, K] float
    -> y [M, N] in x.dtype. w_sums int32 [N, G] is needed only when not symmetric."""
    xq, sx, zp = quant_rows_ref(x, symmetric, input_scale)
    x_zp = None if symmetric else zp
    if x_zp is not None and w_sums is None:
        wq = w.to(torch.int32) if w_bits == 8 else unpack_rows(w, 4, x.shape[1])
        w_sums = group_row_sums(wq, group_size)
    return a8_matmul_ref(xq, sx, w, w_scales, w_bits=w_bits, group_size=group_size, bias=bias,
                         out_dtype=x.dtype, x_zp=x_zp, w_sums=w_sums if x_zp is not None else None)


def group_row_sums(wq: torch.Tensor, group_size: int) -> torch.Tensor:
    """int [N, K] -> int32 [N, G]: per-group sums of each weight row (asymmetric-activation
    correction term)."""
    n, k = wq.shape
    gs = group_size or k
    pad = -k % gs
    w = torch.nn.functional.pad(wq.to(torch.int32), (0, pad))
    return w.reshape(n, -1, gs).sum(dim=2, dtype=torch.int32)


def paged_attention_ref(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_tables: torch.Tensor,
                        token_seq: torch.Tensor, token_pos: torch.Tensor, scale: float,
                        window: int | None = None) -> torch.Tensor:
    """Twin of qrt_kernels.paged_attention.paged_attention (fp32 math, q.dtype out): every
    token gathers keys 0..max(pos) of its sequence through the block table, masked per token."""
    page, group = k_cache.shape[1], q.shape[1] // k_cache.shape[2]
    s = torch.arange(int(token_pos.max()) + 1, device=q.device)
    blocks = block_tables.long()[token_seq.long()][:, s // page]          # [T, S]
    k = k_cache[blocks, s % page].float().repeat_interleave(group, dim=2)  # [T, S, H, D]
    v = v_cache[blocks, s % page].float().repeat_interleave(group, dim=2)
    pos = token_pos.long()[:, None]
    vis = s[None, :] <= pos
    if window is not None:
        vis &= pos - s[None, :] < window
    scores = torch.einsum("thd,tshd->ths", q.float() * scale, k).masked_fill(~vis[:, None, :], float("-inf"))
    return torch.einsum("ths,tshd->thd", scores.softmax(-1), v).to(q.dtype)


# ---- FP8 (e4m3) and FP4 (e2m1) weights ----
FP8_E4M3_MAX = 448.0
E2M1_VALUES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)  # magnitude of code & 7; bit 3 is the sign


def fp8_quant_rows_ref(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Dynamic per-token FP8: x [M, K] -> (q float8_e4m3fn [M, K], scale fp32 [M]) with
    scale = max|x_row| / 448 and q = fp8(clamp(x / scale, -448, 448)) (round to nearest even).
    A zero row gets scale 0 and q 0. Twin of fp8_matmul.fp8_quant_rows."""
    xf = x.float()
    scale = xf.abs().amax(dim=1) / FP8_E4M3_MAX if x.shape[1] else xf.new_zeros(x.shape[0])
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = (xf / safe[:, None]).clamp(-FP8_E4M3_MAX, FP8_E4M3_MAX).to(torch.float8_e4m3fn)
    return q, scale


def fp8_linear_ref(x: torch.Tensor, w: torch.Tensor, w_scale: torch.Tensor, bias: torch.Tensor | None,
                   act_fp8: bool) -> torch.Tensor:
    """Twin of fp8_matmul.fp8_linear: y [M, N] in x.dtype from x [M, K], w float8_e4m3fn
    [N, K], w_scale fp32 [N] (per output channel). act_fp8: x is first quantized per token to
    FP8 (W8A8-FP8); else x is used as is (weight-only; FP8 values are exact in fp16/bf16).
    fp32 accumulation; epilogue acc * sx[m] * sw[n] (+ bias) in fp32."""
    if act_fp8:
        xq, sx = fp8_quant_rows_ref(x)
        y = (xq.float() @ w.float().t()) * sx[:, None]
    else:
        y = x.float() @ w.float().t()
    y = y * w_scale.float()[None, :]
    if bias is not None:
        y = y + bias.float()
    return y.to(x.dtype)


def unpack_fp4_codes(w_packed: torch.Tensor, k: int) -> torch.Tensor:
    """uint8 [N, K/2] -> e2m1 codes uint8 [N, K]: column 2j is the low nibble of byte j
    (compressed-tensors' pack_fp4_to_uint8)."""
    lo, hi = w_packed & 0xF, w_packed >> 4
    return torch.stack([lo, hi], dim=-1).reshape(w_packed.shape[0], -1)[:, :k]


def e2m1_to_float(codes: torch.Tensor) -> torch.Tensor:
    """e2m1 codes (uint8, bit 3 sign, bits 0-2 index into E2M1_VALUES) -> float32."""
    lut = torch.tensor(E2M1_VALUES, dtype=torch.float32, device=codes.device)
    mag = lut[(codes & 7).long()]
    return torch.where((codes & 8) != 0, -mag, mag)


def fp4_group_scales(scales: torch.Tensor, global_scale: torch.Tensor | None) -> torch.Tensor:
    """Per-group fp32 scales [N, G]: NVFP4 (scales float8_e4m3fn, global_scale fp32 [1]):
    fp32(scale) / global_scale, as compressed-tensors dequantizes; MXFP4 (scales uint8 e8m0,
    global_scale None): 2^(e - 127), with e = 0 read as 0 like the kernel (it only ever
    scales all-zero groups; 2^-127 is below every activation dtype's precision anyway)."""
    if global_scale is not None:
        return scales.float() / global_scale.float().reshape(1)
    e = scales.to(torch.float32)
    return torch.where(e > 0, torch.exp2(e - 127.0), torch.zeros_like(e))


def fp4_dequant_weight(w_packed: torch.Tensor, scales: torch.Tensor, global_scale: torch.Tensor | None,
                       group_size: int, k: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """W [N, K] = e2m1(q) * group scale, in float32, returned in dtype."""
    q = e2m1_to_float(unpack_fp4_codes(w_packed, k))
    s = fp4_group_scales(scales, global_scale).repeat_interleave(group_size, dim=1)[:, :k]
    return (q * s).to(dtype)


def fp4_matmul_ref(x: torch.Tensor, w_packed: torch.Tensor, scales: torch.Tensor,
                   global_scale: torch.Tensor | None, group_size: int,
                   bias: torch.Tensor | None = None) -> torch.Tensor:
    """Twin of fp4_matmul.fp4_matmul: y [M, N] = x [M, K] @ W.T (+ bias), W dequantized in
    fp32 and rounded to x.dtype (as the kernel feeds tl.dot), fp32 accumulation."""
    w = fp4_dequant_weight(w_packed, scales, global_scale, group_size, x.shape[1], dtype=x.dtype)
    y = x.float() @ w.float().t()
    if bias is not None:
        y = y + bias.float()
    return y.to(x.dtype)
