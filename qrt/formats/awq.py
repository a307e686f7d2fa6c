"""Reading AWQ GEMM checkpoints (AutoAWQ, transformers' AwqConfig) into QuantLinear buffers.

An AWQ GEMM layer `prefix` stores (K = in_features, N = out_features, G = K / group_size,
4-bit only):
  qweight  int32 [K, N/8]   unsigned q_u packed along N (dim 1): the 8 nibbles of a word,
                            from the least significant up, hold columns [0, 2, 4, 6, 1, 3, 5, 7]
                            of its block of 8 (AutoAWQ's order, made for its dequant shuffle)
  qzeros   int32 [G, N/8]   unsigned zero points, same packing and order, no offset
  scales   float16 [G, N]
  bias     float16 [N]      optional; an ordinary parameter the loader reads itself
and dequantizes w[n, k] = (q_u[k, n] - z_u[k // group_size, n]) * scales[k // group_size, n].
"""
from __future__ import annotations

import torch

from qrt.formats.unsigned import GetTensor, expect_tensor, unsigned_layer_to_buffers
from qrt.numerics.packing import pack_int32
from qrt.schemes import QuantScheme

# nibble i of a word holds column AWQ_ORDER[i] of the word's block of 8
AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)
_FLOATS = (torch.float16, torch.bfloat16, torch.float32)


def awq_settings(quant_config: dict) -> tuple[int, int]:
    """(bits, group_size) from a transformers AwqConfig dict or AutoAWQ quant_config.json.
    Raises ValueError for anything but 4-bit GEMM with zero points."""
    method = quant_config.get("quant_method", "awq")
    if str(method).lower() != "awq":
        raise ValueError(f"expected quant_method 'awq', found {method!r}")
    version = str(quant_config.get("version", "gemm")).lower()
    if version != "gemm":
        raise ValueError(f"AWQ 'version': only the GEMM layout is read, found {version!r}")
    bits = quant_config.get("bits", quant_config.get("w_bit"))
    if bits != 4:
        raise ValueError(f"AWQ 'bits': the GEMM layout is 4-bit, found {bits!r}")
    group_size = quant_config.get("group_size", quant_config.get("q_group_size"))
    if not isinstance(group_size, int) or group_size <= 0:
        raise ValueError(f"AWQ 'group_size': expected a positive int, found {group_size!r}")
    if quant_config.get("zero_point", True) is not True:
        raise ValueError("AWQ 'zero_point': only zero_point=true (AWQ's default) is read, found "
                         f"{quant_config.get('zero_point')!r}")
    return bits, group_size


def unpack_awq(packed: torch.Tensor) -> torch.Tensor:
    """int32 [rows, C/8] in AWQ order -> int64 unsigned nibbles [rows, C] in column order."""
    rows, words = packed.shape
    shifts = 4 * torch.arange(8, device=packed.device)
    nibbles = (packed.to(torch.int64).unsqueeze(-1) >> shifts) & 0xF  # [rows, words, nibble]
    columns = torch.empty_like(nibbles)
    columns[:, :, list(AWQ_ORDER)] = nibbles  # nibble i -> column AWQ_ORDER[i]
    return columns.reshape(rows, words * 8)


def is_quantized_layer(prefix: str, tensor_names: set[str]) -> bool:
    """True if `prefix` names an AWQ-quantized Linear in a checkpoint with these tensors."""
    return all(f"{prefix}.{t}" in tensor_names for t in ("qweight", "qzeros", "scales"))


def read_layer(get_tensor: GetTensor, prefix: str, quant_config: dict, in_features: int,
               out_features: int, tensor_names: set[str] | None = None
               ) -> tuple[QuantScheme, dict[str, torch.Tensor]]:
    """One AWQ GEMM Linear -> (QuantScheme, QuantLinear buffers).

    Buffers: weight_packed int32 [N, K/8], weight_scale [N, G], weight_zero_point int32
    [N/8, G] (unless every zero is the midpoint 8: then the scheme is symmetric). Like
    qrt.formats.gptq.read_layer, `{prefix}.bias` is left to the loader; `tensor_names` is
    accepted for the same signature (AWQ has no optional quantization tensor).
    """
    bits, group_size = awq_settings(quant_config)
    k, n = in_features, out_features
    if n % 8 or k % 8:
        raise ValueError(f"{prefix}: AWQ GEMM needs in/out features divisible by 8, found "
                         f"in_features={k}, out_features={n}")
    n_groups = -(-k // group_size)
    qweight = expect_tensor(get_tensor(f"{prefix}.qweight"), f"{prefix}.qweight", (k, n // 8), (torch.int32,))
    qzeros = expect_tensor(get_tensor(f"{prefix}.qzeros"), f"{prefix}.qzeros",
                           (n_groups, n // 8), (torch.int32,))
    scales = expect_tensor(get_tensor(f"{prefix}.scales"), f"{prefix}.scales", (n_groups, n), _FLOATS)

    q_signed = (unpack_awq(qweight) - (1 << (bits - 1))).to(torch.int8)  # [K, N]
    weight_packed = pack_int32(q_signed.t().contiguous(), bits)  # [N, K/8]
    zeros_u = unpack_awq(qzeros)  # [G, N], raw zero points
    return unsigned_layer_to_buffers(weight_packed, scales.t(), zeros_u.t(), bits, group_size,
                                     None, prefix)
