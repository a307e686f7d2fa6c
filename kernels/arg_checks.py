"""Argument checks shared by the WxA16 launchers, the dispatcher and the custom ops' fakes.

Every failure is a ValueError that names what was expected and what was found, so a
caller with a wrong checkpoint tensor learns which one and why. The checks read only
shapes, dtypes, strides and devices (never data), so they also run on meta tensors.
"""
from __future__ import annotations

import torch

ACT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
SCALE_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
ZERO_DTYPES = (torch.int8, torch.int16, torch.int32)
KERNEL_BITS = (2, 4, 8)  # bit widths that divide 32: no value straddles an int32 word


def _dtype_name(d: torch.dtype) -> str:
    return str(d).replace("torch.", "")


def expect_dtype(name: str, t: torch.Tensor, allowed: tuple) -> None:
    if t.dtype not in allowed:
        names = ", ".join(_dtype_name(d) for d in allowed)
        raise ValueError(f"{name}: expected dtype in ({names}), found {_dtype_name(t.dtype)}")


def expect_shape(name: str, t: torch.Tensor, shape: tuple) -> None:
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)}, found {tuple(t.shape)}")


def expect_same_device_contiguous(named: list[tuple[str, torch.Tensor]], device: torch.device) -> None:
    for name, t in named:
        if t.device != device:
            raise ValueError(f"{name}: expected device {device}, found {t.device}")
        if not t.is_contiguous():
            raise ValueError(f"{name}: expected a contiguous tensor, found strides {t.stride()} "
                             f"for shape {tuple(t.shape)}")


def check_packed_weight_args(w_packed: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor | None,
                             bits: int, group_size: int, k: int) -> int:
    """Validate a packed weight of K = k input columns -> N (rows).

    w_packed int32 [N, ceil(K*bits/32)]; scales fp16/bf16/fp32 [N, ceil(K/group_size)];
    zeros int8/16/32 with the scales' shape, or None. Devices are checked by the caller.
    """
    if bits not in KERNEL_BITS:
        raise ValueError(f"bits: expected one of {KERNEL_BITS}, found {bits!r}")
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size <= 0:
        raise ValueError(f"group_size: expected a positive int, found {group_size!r}")
    expect_dtype("w_packed", w_packed, (torch.int32,))
    if w_packed.ndim != 2:
        raise ValueError(f"w_packed: expected 2 dims [N, ceil(K*bits/32)], found shape {tuple(w_packed.shape)}")
    n = w_packed.shape[0]
    expect_shape("w_packed", w_packed, (n, -(-k * bits // 32)))
    expect_dtype("scales", scales, SCALE_DTYPES)
    n_groups = -(-k // group_size)
    expect_shape("scales", scales, (n, n_groups))
    if zeros is not None:
        expect_dtype("zeros", zeros, ZERO_DTYPES)
        expect_shape("zeros", zeros, (n, n_groups))
    return n


def check_dequant_matmul_args(x: torch.Tensor, w_packed: torch.Tensor, scales: torch.Tensor,
                              zeros: torch.Tensor | None, bits: int, group_size: int,
                              bias: torch.Tensor | None) -> tuple[int, int, int]:
    """Validate the arguments of y = x @ dequant(W).T (+ bias) -> (M, N, K).

    x [M, K] fp16/bf16/fp32; packed weight as in check_packed_weight_args; bias [N] float
    or None. All on x's device, all contiguous.
    """
    if x.ndim != 2:
        raise ValueError(f"x: expected 2 dims [M, K], found shape {tuple(x.shape)}")
    expect_dtype("x", x, ACT_DTYPES)
    m, k = x.shape
    n = check_packed_weight_args(w_packed, scales, zeros, bits, group_size, k)
    named = [("x", x), ("w_packed", w_packed), ("scales", scales)]
    if zeros is not None:
        named.append(("zeros", zeros))
    if bias is not None:
        expect_dtype("bias", bias, SCALE_DTYPES)
        expect_shape("bias", bias, (n,))
        named.append(("bias", bias))
    expect_same_device_contiguous(named, x.device)
    return m, n, k


# ---- int8 activations ----
def check_act_input(x: torch.Tensor) -> tuple[int, int]:
    """x [M, K] fp16/bf16/fp32, contiguous along K -> (M, K)."""
    if x.ndim != 2 or x.dtype not in ACT_DTYPES:
        raise ValueError(f"expected activations x [M, K] in fp16/bf16/fp32, found shape "
                         f"{tuple(x.shape)} {x.dtype}")
    if x.stride(-1) != 1:
        raise ValueError(f"expected x contiguous along K (stride 1), found stride {x.stride(-1)}")
    return x.shape[0], x.shape[1]


def check_a8_weights(w: torch.Tensor, w_scales: torch.Tensor, w_bits: int, group_size: int,
                     k: int) -> int:
    """Validate the weight operand for K = k; returns N. Raises ValueError naming the mismatch."""
    if w_bits == 8 and (w.dtype != torch.int8 or w.ndim != 2 or w.shape[1] != k):
        raise ValueError(f"8-bit weights must be int8 [N, {k}], found {w.dtype} {tuple(w.shape)}")
    if w_bits == 4 and (w.dtype != torch.int32 or w.ndim != 2 or w.shape[1] != -(-k // 8)):
        raise ValueError(f"4-bit weights must be packed int32 [N, {-(-k // 8)}], found "
                         f"{w.dtype} {tuple(w.shape)}")
    if w_bits not in (4, 8):
        raise ValueError(f"w_bits must be 4 or 8, found {w_bits}")
    if group_size and group_size % 16:
        raise ValueError(f"group_size must be 0 (per channel) or a multiple of 16, found {group_size}")
    n_groups = -(-k // group_size) if group_size else 1
    n = w.shape[0]
    if w_scales.dtype != torch.float32 or tuple(w_scales.shape) != (n, n_groups) or not w_scales.is_contiguous():
        raise ValueError(f"w_scales must be contiguous fp32 [{n}, {n_groups}], found "
                         f"{w_scales.dtype} {tuple(w_scales.shape)}")
    if w.stride(1) != 1:
        raise ValueError("weights must be contiguous along K")
    return n


def check_a8_linear_args(x, w, w_scales, w_bits, group_size, bias, symmetric, input_scale, w_sums
                         ) -> tuple[int, int]:
    """Validate the arguments of the int8-activation linear -> (M, N)."""
    m, k = check_act_input(x)
    n = check_a8_weights(w, w_scales, w_bits, group_size, k)
    if input_scale is not None and (input_scale.numel() != 1 or not symmetric):
        raise ValueError(f"static quantization takes one symmetric scale, found "
                         f"{input_scale.numel()} values, symmetric={symmetric}")
    if bias is not None:
        expect_shape("bias", bias, (n,))
    return m, n


def _check_bias(bias, n: int, device) -> None:
    if bias is not None:
        expect_shape("bias", bias, (n,))
        expect_dtype("bias", bias, ACT_DTYPES)
        expect_same_device_contiguous([("bias", bias)], device)


def check_fp8_linear_args(x, w, w_scale, bias) -> tuple[int, int]:
    """x [M, K] float; w float8_e4m3fn [N, K]; w_scale fp32 [N]; bias [N] or None -> (M, N)."""
    if x.ndim != 2 or w.ndim != 2:
        raise ValueError(f"x and w: expected 2-D, found x {tuple(x.shape)}, w {tuple(w.shape)}")
    expect_dtype("x", x, ACT_DTYPES)
    expect_dtype("w", w, (torch.float8_e4m3fn,))
    n, k = w.shape
    if x.shape[1] != k:
        raise ValueError(f"x: expected shape (M, {k}) to match w [N, K] = {tuple(w.shape)}, found {tuple(x.shape)}")
    expect_shape("w_scale", w_scale, (n,))
    expect_dtype("w_scale", w_scale, (torch.float32,))
    expect_same_device_contiguous([("w", w), ("w_scale", w_scale)], x.device)
    _check_bias(bias, n, x.device)
    return x.shape[0], n


def check_fp4_matmul_args(x, w_packed, scales, global_scale, group_size: int, bias) -> tuple[int, int]:
    """x [M, K] float; w_packed uint8 [N, K/2]; scales [N, K/group_size]: float8_e4m3fn
    with global_scale fp32 [1] (NVFP4) or uint8 with global_scale None (MXFP4) -> (M, N)."""
    if x.ndim != 2 or w_packed.ndim != 2:
        raise ValueError(f"x and w_packed: expected 2-D, found x {tuple(x.shape)}, w_packed {tuple(w_packed.shape)}")
    expect_dtype("x", x, ACT_DTYPES)
    expect_dtype("w_packed", w_packed, (torch.uint8,))
    m, k = x.shape
    n = w_packed.shape[0]
    if group_size <= 0 or k % group_size or k % 2:
        raise ValueError(f"group_size: expected a positive divisor of K = {k} (K even), found {group_size}")
    expect_shape("w_packed", w_packed, (n, k // 2))
    expect_shape("scales", scales, (n, k // group_size))
    expect_dtype("scales", scales, (torch.float8_e4m3fn,) if global_scale is not None else (torch.uint8,))
    named = [("w_packed", w_packed), ("scales", scales)]
    if global_scale is not None:
        expect_shape("global_scale", global_scale, (1,))
        expect_dtype("global_scale", global_scale, (torch.float32,))
        named.append(("global_scale", global_scale))
    expect_same_device_contiguous(named, x.device)
    _check_bias(bias, n, x.device)
    return m, n
