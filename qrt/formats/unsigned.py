"""From unsigned-integer layers (GPTQ, AWQ) to QuantLinear buffers.

GPTQ and AWQ store unsigned integers q_u in [0, 2^b) and unsigned zero points z_u and
dequantize w = (q_u - z_u) * s. qrt (like compressed-tensors) stores signed values
q = q_u - 2^(b-1), z = z_u - 2^(b-1) and dequantizes (q - z) * s: the same number,
exactly, since only the common offset moves. A zero that sits at the midpoint 2^(b-1)
everywhere is the symmetric scheme (signed zero 0, no zero-point buffer).

The packed weight words themselves need no arithmetic when the peer packs along the input
dim LSB first (GPTQ): compressed-tensors' stored value q + 2^(b-1) *is* q_u.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from safetensors import SafetensorError

from qrt.numerics.packing import pack_int32, packed_words
from qrt.schemes import SCALE_DTYPES, QuantScheme

GetTensor = Callable[[str], torch.Tensor]


def expect_tensor(t: torch.Tensor, name: str, shape: tuple[int, ...],
                  dtypes: tuple[torch.dtype, ...]) -> torch.Tensor:
    """Raise ValueError naming `name` unless t has exactly `shape` and one of `dtypes`."""
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"tensor {name!r}: expected shape {tuple(shape)}, found {tuple(t.shape)}")
    if t.dtype not in dtypes:
        raise ValueError(f"tensor {name!r}: expected dtype {' or '.join(map(str, dtypes))}, "
                         f"found {t.dtype}")
    return t


def scale_dtype_name(scales: torch.Tensor, name: str) -> str:
    for key, dt in SCALE_DTYPES.items():
        if scales.dtype == dt:
            return key
    raise ValueError(f"tensor {name!r}: expected a float16/bfloat16/float32 scale, found {scales.dtype}")


def is_trivial_g_idx(g_idx: torch.Tensor, group_size: int) -> bool:
    """True when column j simply belongs to group j // group_size (no act-order)."""
    k = g_idx.numel()
    return bool(torch.equal(g_idx.to(torch.int64), torch.arange(k, device=g_idx.device) // group_size))


def unsigned_layer_to_buffers(weight_packed: torch.Tensor, scales: torch.Tensor, zeros_u: torch.Tensor,
                              bits: int, group_size: int, g_idx: torch.Tensor | None,
                              prefix: str) -> tuple[QuantScheme, dict]:
    """QuantScheme and QuantLinear buffers for one layer.

    weight_packed: int32 [N, ceil(K*b/32)], already in the compressed-tensors layout.
    scales: [N, G] float; zeros_u: int64 [N, G] true unsigned zero points in [0, 2^b).
    group_size: columns per group (K for one group per row); g_idx: int [K] or None.
    """
    n_out, n_groups = scales.shape
    k = g_idx.numel() if g_idx is not None else None
    if zeros_u.min() < 0 or zeros_u.max() >= (1 << bits):
        raise ValueError(f"{prefix}: zero points must lie in [0, {(1 << bits) - 1}] for {bits}-bit, "
                         f"found [{int(zeros_u.min())}, {int(zeros_u.max())}]")
    if g_idx is not None:
        if g_idx.min() < 0 or g_idx.max() >= n_groups:
            raise ValueError(f"tensor {prefix + '.g_idx'!r}: expected group indices in [0, {n_groups}), "
                             f"found [{int(g_idx.min())}, {int(g_idx.max())}]")
        if is_trivial_g_idx(g_idx, group_size):
            g_idx = None
    midpoint = 1 << (bits - 1)
    symmetric = bool((zeros_u == midpoint).all())
    per_channel = n_groups == 1 and g_idx is None
    scheme = QuantScheme(
        bits=bits, strategy="channel" if per_channel else "group",
        group_size=None if per_channel else group_size, symmetric=symmetric,
        scale_dtype=scale_dtype_name(scales, prefix + ".scales"),
        actorder="group" if g_idx is not None else None)
    buffers = {"weight_packed": weight_packed.contiguous(), "weight_scale": scales.contiguous()}
    if not symmetric:
        z = (zeros_u - midpoint).to(torch.int8)
        buffers["weight_zero_point"] = pack_int32(z, bits, dim=0)
        assert buffers["weight_zero_point"].shape == (packed_words(n_out, bits), n_groups)
    if g_idx is not None:
        buffers["weight_g_idx"] = g_idx.to(torch.int32).contiguous()
        assert k == g_idx.numel()
    return scheme, buffers


def optional_tensor(get_tensor: GetTensor, name: str, tensor_names: set[str] | None) -> torch.Tensor | None:
    """get_tensor(name), or None when the checkpoint lacks it: absent from `tensor_names`
    when the caller passes them, else get_tensor raising KeyError or safetensors' "does not
    contain tensor" error (safe_open.get_tensor raises SafetensorError, not KeyError)."""
    if tensor_names is not None:
        return get_tensor(name) if name in tensor_names else None
    try:
        return get_tensor(name)
    except KeyError:
        return None
    except SafetensorError as e:
        if "does not contain tensor" in str(e):
            return None
        raise
