"""The implementations one kernel-benchmark shape is timed with ("candidates").

Every candidate computes y [M, N] = x [M, K] @ W.T for the same random nn.Linear(K, N)
(bias=False: Llama has none) and carries enough copies of its weight that one timed pass
rotates through several times the last-level cache (bench/timing.py).

Names: torch_fp16 / torch_bf16 / torch_fp32 (F.linear, the baselines), torch_int4
(torch's int4 weight-only kernel), torch_int8 (torch's int8 weight-only kernel, CPU),
qrt_<scheme> (QuantLinear.forward, what a user runs), qrt_<scheme>_dispatch (the bare
qrt_kernels.dispatch entry point), act_quant_per_token (the W8A8/W4A8 activation quant).
"""
from __future__ import annotations

import copy
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from timing import rotation_count
from torch import nn
from torch_peers import TorchInt4Linear, TorchInt8Linear

from qrt.runtime.linear import QuantLinear
from qrt.schemes import resolve_scheme

DTYPE_NAMES = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}
# Relative-error bounds for the correctness check done before timing (output vs x @ W_deq.T
# in float32 on the same dequantized weight): half-precision outputs round at 2^-11 (fp16)
# to 2^-8 (bf16) per element; int8 per-token activations add ~0.5% (absmax/127 steps).
# A wrong layout or nibble order gives errors near 1, far above either bound.
TOL_A16, TOL_A8 = 1e-2, 5e-2


@dataclass
class Candidate:
    name: str
    kind: str                      # baseline | qrt | qrt_dispatch | peer | act_quant
    x_dtype: torch.dtype
    weight_bytes: int              # one copy: packed ints + scales + zero points
    calls: list[Callable]          # one per rotation copy: x [M, K] -> y
    reference: Callable | None     # x [m, K] -> fp32 reference of calls[0](x)
    scheme: str | None = None
    tol: float = TOL_A16
    flops_per_row: int = 0         # 2*N*K for a matmul
    out_bytes_per_row: int = 0
    notes: dict = field(default_factory=dict)


def _nbytes(*ts) -> int:
    return sum(t.numel() * t.element_size() for t in ts if t is not None)


def _layer_bytes(layer: QuantLinear) -> int:
    return _nbytes(layer.weight_packed, layer.weight_scale, layer.weight_zero_point, layer.weight_g_idx)


def _copies(obj, nbytes: int, device, clone: Callable) -> list:
    return [obj] + [clone(obj) for _ in range(rotation_count(nbytes, device) - 1)]


def _matmul_candidate(name, w, device, n, k) -> Candidate:
    ws = _copies(w, _nbytes(w), device, lambda t: t.clone())
    ref_w = w.float()
    return Candidate(name, "baseline", w.dtype, _nbytes(w), [lambda x, w=w: F.linear(x, w) for w in ws],
                     lambda x: x.float() @ ref_w.t(), flops_per_row=2 * n * k,
                     out_bytes_per_row=n * w.element_size())


def _qrt_candidates(lin: nn.Linear, scheme: str, device, dispatch) -> tuple[list[Candidate], QuantLinear]:
    """QuantLinear.forward, plus the bare dispatch entry point when the kernels exist;
    also returns the first layer (the peers reuse its integers)."""
    s = resolve_scheme(scheme)
    layer = QuantLinear.from_linear(lin, s)
    layer.finalize()
    layers = _copies(layer, _layer_bytes(layer), device, copy.deepcopy)
    for extra in layers[1:]:
        extra.finalize()
    n, k = lin.out_features, lin.in_features
    w_deq = layer.dequantize_weight(torch.float32)
    ref = lambda x: x.float() @ w_deq.t()  # noqa: E731
    tol = TOL_A16 if s.activations is None else TOL_A8
    common = dict(scheme=scheme, tol=tol, flops_per_row=2 * n * k, out_bytes_per_row=n * lin.weight.element_size())
    out = [Candidate(f"qrt_{scheme}", "qrt", lin.weight.dtype, _layer_bytes(layer), list(layers), ref, **common)]
    # the bare entry point only on CUDA: on the CPU it is the plain-torch twin, not a kernel
    if s.activations is None and hasattr(dispatch, "dequant_matmul") and s.actorder != "group" \
            and device.type == "cuda":
        calls = [_dispatch_a16(dispatch, l) for l in layers]
        out.append(Candidate(f"qrt_{scheme}_dispatch", "qrt_dispatch", lin.weight.dtype, _layer_bytes(layer),
                             calls, ref, **common))
    return out, layer


def _dispatch_a16(dispatch, layer: QuantLinear) -> Callable:
    """x -> dispatch.dequant_matmul on the layer's checkpoint-layout buffers (zero points
    unpacked to int8 [N, groups], as the entry point takes them)."""
    scale, zero = layer.qparams() if hasattr(layer, "qparams") else (layer.weight_scale, None)
    zero = None if zero is None else zero.to(torch.int8).contiguous()
    w, scale, bits, g = layer.weight_packed, scale.contiguous(), layer.scheme.bits, layer.group_size
    return lambda x: dispatch.dequant_matmul(x, w, scale, zero, bits, g)


def _peer_candidates(lin, layers_by_scheme, device) -> list[Candidate]:
    """torch's int4 (tinygemm / CPU) and int8 (CPU) weight-only kernels on qrt's integers."""
    out, n, k = [], lin.out_features, lin.in_features
    # bfloat16 activations: tinygemm takes only those, and torch's CPU packed kernels are
    # ~20x faster with them than with float32 (qrt/runtime/cpu_packed.py measured it)
    dtype = torch.bfloat16
    w4 = layers_by_scheme.get("w4a16")
    if w4 is not None:
        mod = TorchInt4Linear(w4.qweight(), w4.group_size, dtype)
        mods = _copies(mod, _nbytes(mod.packed, mod.scales_and_zeros), device, copy.deepcopy)
        w_deq = w4.dequantize_weight(torch.float32)
        out.append(Candidate("torch_int4", "peer", dtype, _nbytes(mod.packed, mod.scales_and_zeros), mods,
                             lambda x: x.float() @ w_deq.t(), scheme="w4a16", flops_per_row=2 * n * k,
                             out_bytes_per_row=n * dtype.itemsize,
                             notes={"nibble_order": getattr(mod, "nibble_order", None)}))
    w8 = layers_by_scheme.get("w8a16")
    if w8 is not None and device.type == "cpu":
        mod = TorchInt8Linear(w8.qweight(), dtype)
        mods = _copies(mod, _nbytes(mod.q, mod.scale), device, copy.deepcopy)
        w_deq8 = w8.dequantize_weight(torch.float32)
        out.append(Candidate("torch_int8", "peer", dtype, _nbytes(mod.q, mod.scale), mods,
                             lambda x: x.float() @ w_deq8.t(), scheme="w8a16", flops_per_row=2 * n * k,
                             out_bytes_per_row=n * dtype.itemsize))
    return out


def _act_quant_candidate(k, dtype, dispatch) -> Candidate:
    """quant_per_token(x [M, K]) -> int8 [M, K] + scales: bytes only, no FLOPs."""
    ref = lambda x: x.float()  # noqa: E731  checked through its dequantization in bench_kernels
    return Candidate("act_quant_per_token", "act_quant", dtype, 0, [dispatch.quant_per_token], ref,
                     tol=TOL_A8, out_bytes_per_row=k + 4)


def build_candidates(n: int, k: int, schemes: list[str], device: torch.device,
                     dtype: torch.dtype, errors: list) -> list[Candidate]:
    """All candidates for one [N, K] shape. Failures (a kernel missing or raising) go to
    `errors` as {"shape", "candidate", "error"} and the candidate is left out."""
    try:
        dispatch = importlib.import_module("qrt_kernels.dispatch")
    except ImportError:
        dispatch = None
    lin = nn.Linear(k, n, bias=False, device=device, dtype=dtype)  # kaiming-uniform: random, not zeros
    cands = [_matmul_candidate(f"torch_{DTYPE_NAMES[dtype]}", lin.weight.detach(), device, n, k)]
    if device.type == "cuda" and dtype != torch.bfloat16:  # cuBLAS bf16 always sits beside the kernels
        cands.append(_matmul_candidate("torch_bf16", lin.weight.detach().bfloat16(), device, n, k))
    layers = {}
    for scheme in schemes:
        try:
            new, layers[scheme] = _qrt_candidates(lin, scheme, device, dispatch)
            cands += new
        except Exception as e:  # recorded in the JSON; the sweep goes on
            errors.append({"shape": [n, k], "candidate": f"qrt_{scheme}", "error": f"{type(e).__name__}: {e}"[:400]})
    try:
        cands += _peer_candidates(lin, layers, device)
    except Exception as e:
        errors.append({"shape": [n, k], "candidate": "torch_peers", "error": f"{type(e).__name__}: {e}"[:400]})
    # a Triton kernel: on the CPU (no interpreter) it has no driver to run on
    if any(resolve_scheme(s).activations is not None for s in schemes) and hasattr(dispatch, "quant_per_token") \
            and device.type == "cuda":
        cands.append(_act_quant_candidate(k, dtype, dispatch))
    return cands
