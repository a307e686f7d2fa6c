"""Int8-activation forward (WxA8): int8 tokens times int8 / int4 weights, int32 accumulation.

  y = sx[token] * sum_g sw[n, g] * sum_{k in g} xq[token, k] * wq[n, k]  (+ bias)

Activations: dynamic per-token int8 (scheme "w8a8", "w4a8") or one calibrated per-tensor
`input_scale` ("w8a8-static"; see qrt.quantize.calibrate_static). Weights: symmetric 8-bit
per channel (W8A8) or 4-bit per group (W4A8, torchao's 8da4w); act-order g_idx is
handled by permuting K once at load (groups become contiguous) and x at run time.

Backends (qrt.runtime.backends picks one per layer once, at QuantLinear.finalize):
  triton  CUDA (on the CPU only under TRITON_INTERPRET, when asked for):
          torch.ops.qrt.a8_linear (qrt_kernels.ops; the dispatcher picks a fused
          quantize+GEMV for small M, per-token quant + tensor-core int8 GEMM otherwise).
  int_mm  CPU: the same numerics in torch, int32 dots from torch._int_mm (exact; in torch
          2.13 on CPU it takes any M, K, N).
  int8pack_a8  CPU, 8-bit per-channel weights with symmetric tokens (the CPU default there):
          torch._weight_int8pack_mm on the int8 token values cast to bfloat16 (integers
          of magnitude <= 128 are exact in bf16, products exact, fp32 accumulation), its
          bf16 output (2^-8 relative) times the fp32 scales (qrt.runtime.int8_pack_a8).
  dense   any device, only when asked for: fp32 math on the dequantized weight and tokens.

inf/NaN in x: the output row of the token holding it is NaN, every other row is exact
(never silently clipped, never spread). A token of zeros gives exactly the bias.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

import qrt_kernels.ops  # noqa: F401  (registers torch.ops.qrt.a8_linear; imports no triton)
from qrt.numerics.packing import pack_int32
from qrt.runtime.weight_only import triton_interpreted
from qrt_kernels.reference import group_row_sums, int_matmul_exact, quant_rows_ref

A8_WEIGHT_BITS = (4, 8)


@dataclass(frozen=True)
class A8Weights:
    """The weight of an int8-activation layer, checked and in group order (built once).

    q: int8 [N, K]; scales: fp32 [N, G]; group_size: 0 = per channel; perm: int64 [K] or
    None (act order); w_sums: int32 [N, G] per-group row sums, for asymmetric tokens only.
    """

    q: torch.Tensor
    scales: torch.Tensor
    bits: int
    group_size: int
    symmetric: bool
    perm: torch.Tensor | None
    w_sums: torch.Tensor | None


def _act_order_perm(g_idx: torch.Tensor, group_size: int) -> torch.Tensor:
    """Column order that makes every group contiguous; GPTQ act-order g_idx gives each
    group exactly group_size columns (the last may be ragged)."""
    perm = torch.argsort(g_idx.long(), stable=True)
    expected = torch.arange(g_idx.numel(), device=g_idx.device) // group_size
    if not torch.equal(g_idx.long()[perm], expected):
        raise ValueError(f"g_idx does not split K into contiguous groups of {group_size} after "
                         "sorting; the int8-activation kernels need that")
    return perm


def a8_weights(layer) -> A8Weights:
    """Check the scheme and unpack / reorder the checkpoint buffers once."""
    s = layer.scheme
    if s.bits not in A8_WEIGHT_BITS or not s.symmetric:
        raise ValueError(f"int8-activation layers need symmetric {A8_WEIGHT_BITS}-bit weights, "
                         f"found {s.bits}-bit {'sym' if s.symmetric else 'asym'}")
    k = layer.in_features
    gs = s.group_size if s.strategy == "group" and s.group_size < k else 0
    if gs % 16:
        raise ValueError(f"int8-activation kernels need group_size a multiple of 16, found {gs}")
    if not s.activations.symmetric and not s.activations.dynamic:
        raise ValueError("static activation quantization must be symmetric, found asymmetric")
    qw = layer.qweight()
    q, perm = qw.q, None
    if qw.g_idx is not None and gs:
        perm = _act_order_perm(qw.g_idx, gs)
        q = q[:, perm]
    w_sums = None if s.activations.symmetric else group_row_sums(q, gs)
    return A8Weights(q, qw.scale.float().contiguous(), s.bits, gs, s.activations.symmetric, perm, w_sums)


@dataclass(frozen=True)
class TritonA8:
    """Arguments of qrt_kernels.dispatch.a8_linear: w int8 [N, K] (8-bit) or packed int32
    [N, ceil(K/8)] (4-bit, the checkpoint layout), w_scales fp32 [N, G]."""

    w: torch.Tensor
    w_scales: torch.Tensor
    w_bits: int
    group_size: int
    symmetric: bool
    w_sums: torch.Tensor | None

    def matmul(self, x: torch.Tensor, bias: torch.Tensor | None, input_scale) -> torch.Tensor:
        return torch.ops.qrt.a8_linear(x, self.w, self.w_scales, self.w_bits, self.group_size, bias,
                                       self.symmetric, input_scale, self.w_sums)


@dataclass(frozen=True)
class IntMMA8:
    """torch._int_mm per group: w int8 [K, N] (unpacked, transposed), w_scales fp32 [N, G]."""

    w: torch.Tensor
    w_scales: torch.Tensor
    group_size: int
    symmetric: bool
    w_sums: torch.Tensor | None

    def matmul(self, x: torch.Tensor, bias: torch.Tensor | None, input_scale) -> torch.Tensor:
        return _linear_a8_int_mm(self, x, input_scale, bias)


@dataclass(frozen=True)
class DenseA8:
    """The plain-torch reference on any device: tokens through the per-token quantizer's
    twin, dequantized, times the dequantized weight (fp32 [N, K], cached, original column
    order) in fp32, the math of QAT's fake-quantized layer; ~1e-6 relative from the exact
    int32 dots of the other backends (fp32 accumulation)."""

    weight: torch.Tensor
    symmetric: bool

    def matmul(self, x: torch.Tensor, bias: torch.Tensor | None, input_scale) -> torch.Tensor:
        xq, sx, zp = quant_rows_ref(x, self.symmetric, input_scale)
        xd = (xq.float() - zp.float()[:, None]) * sx[:, None]  # zp: 0 for symmetric tokens
        return F.linear(xd, self.weight, None if bias is None else bias.float()).to(x.dtype)


# -- the backends: usable(layer, device) and build(layer) -> (kernel, col_perm) ----------------
def triton_a8_usable(layer, device: torch.device) -> bool:
    return device.type == "cuda" or device.type == "cpu" and triton_interpreted()


def int_mm_usable(layer, device: torch.device) -> bool:
    return device.type != "cuda"


def build_triton_a8(layer) -> tuple[TritonA8, torch.Tensor | None]:
    a8 = a8_weights(layer)
    if a8.bits == 8:
        w = a8.q.contiguous()
    else:
        w = pack_int32(a8.q, 4) if a8.perm is not None else layer.weight_packed.contiguous()
    return TritonA8(w, a8.scales, a8.bits, a8.group_size, a8.symmetric, a8.w_sums), a8.perm


def dense_a8_usable(layer, device: torch.device) -> bool:
    return True


def build_dense_a8(layer) -> tuple[DenseA8, None]:
    a8_weights(layer)  # the same scheme checks as the kernels
    return DenseA8(layer.dequantize_weight(torch.float32), layer.scheme.activations.symmetric), None


def int8pack_a8_usable(layer, device: torch.device) -> bool:
    s = layer.scheme
    return device.type == "cpu" and s.bits == 8 and s.symmetric and s.activations.symmetric and \
        s.num_groups(layer.in_features) == 1


def build_int8pack_a8(layer):
    from qrt.runtime.int8_pack_a8 import Int8PackA8
    a8 = a8_weights(layer)
    return Int8PackA8.build(a8.q, a8.scales), a8.perm


def build_int_mm(layer) -> tuple[IntMMA8, torch.Tensor | None]:
    a8 = a8_weights(layer)
    return IntMMA8(a8.q.t().contiguous(), a8.scales, a8.group_size, a8.symmetric, a8.w_sums), a8.perm


def _checked_input_scale(layer) -> torch.Tensor | None:
    """The static scale, checked finite and >= 0 once per value (cached on its version)."""
    scale = layer.input_scale
    if scale is None:
        return None
    key = (id(scale), scale._version)
    if getattr(layer, "_input_scale_ok", None) != key:
        v = float(scale.reshape(-1)[0])
        if not v >= 0.0 or v == float("inf"):
            raise ValueError(f"input_scale of a static layer must be finite and >= 0, found {v}; "
                             "calibrate it with qrt.quantize.calibrate_static.calibrate_input_scales")
        layer._input_scale_ok = key
    return scale.float()


def _int_mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """int8 [M, K] @ int8 [K, N] -> exact int32 [M, N]. torch._int_mm where this torch
    build accepts the shape (CPU torch 2.13: any), else exact float64 matmul."""
    try:
        return torch._int_mm(a, b)
    except (RuntimeError, AttributeError):
        return int_matmul_exact(a, b)


BLOCK_DIAGONAL_MAX_ROWS = 256  # M * groups up to which one _int_mm beats one per group


def _group_partials(xq: torch.Tensor, w_kn: torch.Tensor, group_size: int, n_groups: int):
    """Yields each group's exact partial sums xq[:, g] @ w_kn[g] (int32 [M, N]), in order.

    Small M: one _int_mm over a block-diagonal A (row (g, m) keeps only group g's columns
    of token m), since oneDNN's int8 GEMM costs about the same from 1 to 32 rows; large M:
    one _int_mm per group, on a contiguous copy of the slice (strided A is far slower)."""
    m, k = xq.shape
    if n_groups > 1 and m * n_groups <= BLOCK_DIAGONAL_MAX_ROWS:
        in_group = (torch.arange(k, device=xq.device) // group_size)[None, :] == \
            torch.arange(n_groups, device=xq.device)[:, None]                       # [G, K]
        block_diag = torch.where(in_group[:, None, :], xq[None], torch.zeros_like(xq[None]))
        yield from _int_mm(block_diag.reshape(n_groups * m, k), w_kn).reshape(n_groups, m, -1)
        return
    for g in range(n_groups):
        cols = slice(g * group_size, (g + 1) * group_size)
        yield _int_mm(xq[:, cols].contiguous() if n_groups > 1 else xq, w_kn[cols])


def quant_rows(x: torch.Tensor, symmetric: bool, static_scale: torch.Tensor | None):
    """quant_rows_ref's result in fewer ops for the common case, dynamic symmetric tokens
    with every value finite (the same fp32 operations on the same values, so bit-equal:
    tests/runtime/test_int8_act.py); anything else goes through quant_rows_ref. At M = 1
    on the CPU the reference's ~25 small ops cost more than the int8 GEMM itself."""
    if not symmetric or static_scale is not None:
        return quant_rows_ref(x, symmetric, static_scale)
    xf = x.float()
    absmax = xf.abs().amax(dim=1) if xf.shape[1] else xf.new_zeros(xf.shape[0])
    if not bool(absmax.isfinite().all()):
        return quant_rows_ref(x, symmetric, static_scale)
    scale = absmax / 127.0
    inv = (1.0 / scale).nan_to_num_(posinf=0.0)  # a zero row: 1/0 = inf -> 0 (q = 0)
    q = (xf * inv[:, None]).clamp_(-128.0, 127.0).round_().to(torch.int8)
    return q, scale, torch.zeros_like(scale, dtype=torch.int32)


def _linear_a8_int_mm(rt: IntMMA8, x: torch.Tensor, input_scale, bias) -> torch.Tensor:
    """x [M, K] -> [M, N] in x.dtype; same numerics and fp32 epilogue order as the kernels
    (acc += float(partial_g) * sw[:, g] over groups, then * sx, then + bias)."""
    xq, sx, zp = quant_rows(x, rt.symmetric, input_scale)
    n_groups = rt.w_scales.shape[1]
    acc = None
    for g, part in enumerate(_group_partials(xq, rt.w, rt.group_size or x.shape[1], n_groups)):
        if rt.w_sums is not None:
            part = part - zp[:, None] * rt.w_sums[:, g][None, :]
        term = part.float().mul_(rt.w_scales[:, g])
        acc = term if acc is None else acc.add_(term)
    y = acc.mul_(sx[:, None])
    if bias is not None:
        y = y.add_(bias.float())
    return y.to(x.dtype)


def linear_a8(layer, x: torch.Tensor) -> torch.Tensor:
    """layer: QuantLinear with scheme.activations set; x [..., in] -> [..., out] in x.dtype."""
    if x.shape[-1] != layer.in_features:
        raise ValueError(f"expected x [..., {layer.in_features}], found {tuple(x.shape)}")
    rt = layer._runtime
    input_scale = _checked_input_scale(layer)
    x2 = x.reshape(-1, x.shape[-1])
    if rt.col_perm is not None:
        x2 = x2[:, rt.col_perm]
    y = rt.kernel.matmul(x2, layer.bias, input_scale)
    return y.reshape(*x.shape[:-1], layer.out_features)
