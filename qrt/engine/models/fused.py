"""Projections the decoder calls per layer, built once at engine build: q/k/v as one linear,
gate/up as one linear, and direct calls of o_proj / down_proj (no nn.Module __call__).

At M = 1 (single-stream decode on the CPU) each linear call costs Python and dispatch time
on top of its weight bytes; fusing q/k/v and gate/up turns 7 linears a layer into 4.

  nn.Linear parts   their weights are concatenated along out_features once and each part's
                    Parameter is re-bound to its row slice of the fused tensor, so the model
                    keeps one copy (transformers' own forward reads the same storage).
  QuantLinear parts same scheme, group size, g_idx, dynamic activations and backend: a
                    QuantLinear over the concatenated checkpoint buffers is finalized with
                    the parts' backend and its runtime kernel is called directly. That
                    runtime is an extra copy of the parts' kernel tensors (the parts keep
                    theirs for transformers' forward).
  anything else     each part is called on its own and the outputs concatenated.

Numerics: a fused linear computes each output row with the same dot products as the part
it comes from (concatenation along N does not change any reduction), up to the GEMM
library's choice of blocking, which depends on N.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from qrt.numerics.packing import pack_int32, unpack_int32
from qrt.runtime.int8_act import linear_a8
from qrt.runtime.linear import QuantLinear
from qrt.runtime.weight_only import linear_a16

Linear = Callable[[torch.Tensor], torch.Tensor]


def direct(module: nn.Module) -> Linear:
    """x [T, in] -> [T, out] without nn.Module.__call__ (no hooks) where that is safe."""
    if type(module) is nn.Linear:
        w, b = module.weight, module.bias
        return lambda x: F.linear(x, w, b)
    if isinstance(module, QuantLinear) and not module.scheme.is_float:
        if getattr(module, "_runtime_device", None) != module.weight_packed.device:
            module.finalize(getattr(module, "_backend_choice", None))
        run = linear_a16 if module.scheme.activations is None else linear_a8
        return lambda x: run(module, x)
    return module


def _same_quant(parts: Sequence[QuantLinear]) -> bool:
    first = parts[0]
    if first.scheme.is_float or any(p.input_scale is not None for p in parts):
        return False
    for p in parts:
        if getattr(p, "_runtime_device", None) != p.weight_packed.device:
            p.finalize(getattr(p, "_backend_choice", None))
    g = first.weight_g_idx
    return all(p.scheme == first.scheme and p.in_features == first.in_features and p.dtype == first.dtype
               and p._runtime.backend == first._runtime.backend
               and (p.bias is None) == (first.bias is None)
               and (g is None and p.weight_g_idx is None or
                    g is not None and p.weight_g_idx is not None and torch.equal(g, p.weight_g_idx))
               for p in parts)


def _fused_quant(parts: Sequence[QuantLinear]) -> QuantLinear:
    """One QuantLinear over the parts' concatenated checkpoint buffers (rows = out_features)."""
    first, s = parts[0], parts[0].scheme
    out_f = sum(p.out_features for p in parts)
    dev = first.weight_packed.device
    fused = QuantLinear(first.in_features, out_f, bias=first.bias is not None, scheme=s, dtype=first.dtype,
                        device=dev)
    with torch.no_grad():
        fused.weight_packed.copy_(torch.cat([p.weight_packed for p in parts]))
        if s.strategy == "tensor":
            if not all(torch.equal(p.weight_scale, first.weight_scale) for p in parts):
                raise ValueError("per-tensor scales differ")
            fused.weight_scale.copy_(first.weight_scale)
        else:
            fused.weight_scale.copy_(torch.cat([p.weight_scale for p in parts]))
        if first.weight_zero_point is not None:  # packed along out: unpack, concatenate, repack
            zs = [unpack_int32(p.weight_zero_point, s.bits, p.out_features if s.strategy != "tensor" else 1, dim=0)
                  for p in parts]
            if s.strategy == "tensor":
                if not all(torch.equal(z, zs[0]) for z in zs):
                    raise ValueError("per-tensor zero points differ")
                zs = zs[:1]
            fused.weight_zero_point.copy_(pack_int32(torch.cat(zs).to(torch.int8), s.bits, dim=0))
        if first.weight_g_idx is not None:
            fused.weight_g_idx.copy_(first.weight_g_idx)
        if first.bias is not None:
            fused.bias.copy_(torch.cat([p.bias for p in parts]))
    fused.finalize(first._runtime.backend)
    return fused


def _rebind_fp(parts: Sequence[nn.Linear]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Concatenate the parts' weights (and biases) and re-bind each part to its slice."""
    with torch.no_grad():
        w = torch.cat([p.weight for p in parts])
        has_bias = [p.bias is not None for p in parts]
        b = None
        if any(has_bias):
            b = torch.cat([p.bias if p.bias is not None else p.weight.new_zeros(p.out_features) for p in parts])
    row = 0
    for p in parts:
        n = p.out_features
        p.weight = nn.Parameter(w[row:row + n], requires_grad=p.weight.requires_grad)
        if p.bias is not None:
            p.bias = nn.Parameter(b[row:row + n], requires_grad=p.bias.requires_grad)
        row += n
    return w, b


def fuse(parts: Sequence[nn.Module]) -> tuple[Linear, bool]:
    """x [T, in] -> [T, sum(out)] computing every part; -> (fn, fused?)."""
    types = {type(p) for p in parts}
    if types == {nn.Linear} and len({(p.in_features, p.weight.dtype, p.weight.device) for p in parts}) == 1:
        w, b = _rebind_fp(parts)
        return (lambda x: F.linear(x, w, b)), True
    if types == {QuantLinear} and _same_quant(parts):
        fused = _fused_quant(parts)
        run = linear_a16 if fused.scheme.activations is None else linear_a8
        return (lambda x: run(fused, x)), True
    calls = [direct(p) for p in parts]
    return (lambda x: torch.cat([c(x) for c in calls], dim=-1)), False


class LayerProjections:
    """The linears of one decoder layer, ready to call: qkv(x) -> [T, (H + 2 KVH) * hd],
    o(x), gate_up(x) -> [T, 2 * I], down(x)."""

    def __init__(self, layer: nn.Module):
        attn, mlp = layer.self_attn, layer.mlp
        self.qkv, self.qkv_fused = fuse([attn.q_proj, attn.k_proj, attn.v_proj])
        self.gate_up, self.gate_up_fused = fuse([mlp.gate_proj, mlp.up_proj])
        self.o = direct(attn.o_proj)
        self.down = direct(mlp.down_proj)
        self.intermediate = mlp.gate_proj.out_features
