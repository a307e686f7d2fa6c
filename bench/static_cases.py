"""What qrt hands the dispatcher for one linear, as meta tensors, and what it launches.

`capture_linear(scheme, dtype, N, K, M)` builds the runtime tensors a QuantLinear of that
scheme passes to qrt_kernels (shapes and dtypes as qrt.runtime.weight_only / int8_act build
them), calls the real dispatch entry point under capture_launches, and returns the Triton
launches it made, the torch ops around them (each one a kernel of its own on a GPU) and
the bytes the linear must move at least (weights, x, y once each).
"""
from __future__ import annotations

import torch
from torch.overrides import TorchFunctionMode

from qrt_kernels import dispatch
from qrt_kernels.launch import TargetDevice, capture_launches

H200 = TargetDevice("NVIDIA H200", 132)
META = torch.device("meta")

# scheme -> (weight bits as the kernels take them, group size (0: per channel), asymmetric
# weights, activations: None | "dynamic" | "static")
SCHEMES = {
    "w4a16": (4, 128, False, None),
    "w4a16-asym": (4, 128, True, None),
    "w8a16": (8, 0, False, None),
    "w3a16": (4, 64, True, None),     # 3-bit q widened to the 4-bit kernel at load
    "w2a16": (2, 64, True, None),
    "w8a8": (8, 0, False, "dynamic"),
    "w4a8": (4, 128, False, "dynamic"),
    "w8a8-static": (8, 0, False, "static"),
    # float weights: (format, group size, -, activations)
    "fp8": ("fp8", 0, False, "fp8"),
    "fp8-w": ("fp8", 0, False, None),
    "nvfp4a16": ("nvfp4", 16, False, None),
    "mxfp4a16": ("mxfp4", 32, False, None),
}

# torch calls that only allocate, reshape or read metadata: no GPU kernel of their own
_FREE = {"empty", "empty_like", "new_empty", "stride", "size", "dim", "reshape", "view", "t",
         "is_contiguous", "contiguous", "__get__", "numel", "element_size", "data_ptr", "__getitem__",
         "__len__", "__eq__", "__format__", "__hash__", "__bool__", "float", "dtype", "device"}


class _TorchOps(TorchFunctionMode):
    """Names of the torch functions called that launch work (a cast, a fill, a matmul)."""

    def __init__(self):
        super().__init__()
        self.ops: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", str(func))
        out = func(*args, **(kwargs or {}))
        if name not in _FREE and isinstance(out, torch.Tensor):
            if name == "to" and isinstance(args[0], torch.Tensor) and out.dtype == args[0].dtype:
                return out  # a no-op .to
            self.ops.append(name)
        return out


def _a16_call(bits: int, group: int, asym: bool, dtype, n: int, k: int):
    g = group or k
    n_groups = -(-k // g)
    w = torch.empty(n, -(-k * bits // 32), dtype=torch.int32, device=META)
    scales = torch.empty(n, n_groups, dtype=dtype, device=META)
    zeros = torch.empty(n, n_groups, dtype=torch.int8, device=META) if asym else None
    nbytes = w.numel() * 4 + scales.numel() * scales.element_size() + (zeros.numel() if asym else 0)
    return (lambda x: dispatch.dequant_matmul(x, w, scales, zeros, bits, g)), nbytes


def _a8_call(bits: int, group: int, acts: str, n: int, k: int):
    w = (torch.empty(n, k, dtype=torch.int8, device=META) if bits == 8 else
         torch.empty(n, -(-k // 8), dtype=torch.int32, device=META))
    w_scales = torch.empty(n, -(-k // group) if group else 1, dtype=torch.float32, device=META)
    input_scale = torch.empty(1, dtype=torch.float32, device=META) if acts == "static" else None
    nbytes = w.numel() * w.element_size() + w_scales.numel() * 4
    return (lambda x: dispatch.a8_linear(x, w, w_scales, w_bits=bits, group_size=group,
                                         input_scale=input_scale)), nbytes


def _float_call(kind: str, group: int, acts: str | None, n: int, k: int):
    """The tensors qrt.runtime.fp_linear hands the float ops (checkpoint layout as is)."""
    if kind == "fp8":
        w = torch.empty(n, k, dtype=torch.float8_e4m3fn, device=META)
        sw = torch.empty(n, dtype=torch.float32, device=META)
        return (lambda x: dispatch.fp8_linear(x, w, sw, None, acts == "fp8")), n * k + 4 * n
    w = torch.empty(n, k // 2, dtype=torch.uint8, device=META)
    nv = kind == "nvfp4"
    scales = torch.empty(n, k // group, dtype=torch.float8_e4m3fn if nv else torch.uint8, device=META)
    gs = torch.empty(1, dtype=torch.float32, device=META) if nv else None
    return (lambda x: dispatch.fp4_matmul(x, w, scales, gs, group)), n * k // 2 + n * k // group


def capture_linear(scheme: str, dtype: torch.dtype, n: int, k: int, m: int):
    """-> (launches, torch op names, minimum bytes moved) for y = x [M, K] @ W.T."""
    bits, group, asym, acts = SCHEMES[scheme]
    if isinstance(bits, str):
        call, wbytes = _float_call(bits, group, acts, n, k)
    elif acts is None:
        call, wbytes = _a16_call(bits, group, asym, dtype, n, k)
    else:
        call, wbytes = _a8_call(bits, group, acts, n, k)
    x = torch.empty(m, k, dtype=dtype, device=META)
    with capture_launches(H200) as launches, _TorchOps() as ops:
        call(x)
    return launches, ops.ops, wbytes + m * k * x.element_size() + m * n * x.element_size()
