"""Reading GPTQ checkpoints (AutoGPTQ, GPTQModel, transformers/optimum) into QuantLinear
buffers.

A GPTQ layer `prefix` stores (K = in_features, N = out_features, G = groups, b = bits):
  qweight  int32 [K*b/32, N]      unsigned q_u packed along K (dim 0), LSB first; for b=3
                                  32 values fill 3 words as one dense bit stream
  qzeros   int32 [G, ceil(N*b/32)] unsigned zero points packed along N (dim 1), LSB first
  scales   float [G, N]
  g_idx    int32 [K]              group of each input column (non-monotonic with desc_act)
  bias     float [N]              optional; an ordinary parameter the loader reads itself
and dequantizes w[n, k] = (q_u[k, n] - z_u[g_idx[k], n]) * scales[g_idx[k], n].

The two zero-point conventions (`checkpoint_format`): "gptq" (v1, AutoGPTQ and what
GPTQModel exports by default) stores z_u - 1, the famous off-by-one; "gptq_v2" stores
z_u itself. See `detect_zero_convention` for how the data overrides the config.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from qrt.formats.unsigned import GetTensor, expect_tensor, optional_tensor, unsigned_layer_to_buffers
from qrt.numerics.packing import packed_words, unpack_int32
from qrt.schemes import QuantScheme

logger = logging.getLogger(__name__)

V1, V2 = "gptq", "gptq_v2"
_FLOATS = (torch.float16, torch.bfloat16, torch.float32)


@dataclass(frozen=True)
class GPTQConfig:
    """The fields of a GPTQ `quantization_config` / quantize_config.json that reading needs.
    group_size -1 means one group per row (per-channel)."""

    bits: int
    group_size: int
    checkpoint_format: str = V1


def gptq_config(quant_config: dict) -> GPTQConfig:
    """Validate a GPTQ quantization config (HF `quantization_config` or AutoGPTQ/GPTQModel
    quantize_config.json) -> GPTQConfig. Raises ValueError naming the bad field."""
    method = quant_config.get("quant_method", "gptq")
    if str(method).lower() != "gptq":
        raise ValueError(f"expected quant_method 'gptq', found {method!r}")
    bits = quant_config.get("bits")
    if bits not in (2, 3, 4, 8):
        raise ValueError(f"GPTQ 'bits': expected 2, 3, 4 or 8, found {bits!r}")
    group_size = quant_config.get("group_size", 128)
    if not isinstance(group_size, int) or (group_size <= 0 and group_size != -1):
        raise ValueError(f"GPTQ 'group_size': expected a positive int or -1, found {group_size!r}")
    fmt = quant_config.get("checkpoint_format") or quant_config.get("format") or V1
    if str(fmt).lower() not in (V1, V2):
        raise ValueError(f"GPTQ 'checkpoint_format': expected {V1!r} or {V2!r} (marlin, bitblas and "
                         f"other repacked formats are not read), found {fmt!r}")
    pack_dtype = quant_config.get("pack_dtype", "int32")
    if str(pack_dtype).replace("torch.", "") != "int32":
        raise ValueError(f"GPTQ 'pack_dtype': only int32 words are read, found {pack_dtype!r}")
    return GPTQConfig(bits, group_size, str(fmt).lower())


def detect_zero_convention(stored: torch.Tensor, bits: int, declared: str) -> str:
    """The zero-point convention of one layer, "gptq" (v1) or "gptq_v2".

    stored: int64 [G, N], the unsigned fields of qzeros as written.

    Rule: symmetric GPTQ puts every zero point at the midpoint 2^(b-1) (8 for 4-bit), so
    a symmetric v1 file stores 2^(b-1) - 1 in every field (7 for 4-bit, 127 for 8-bit)
    and a v2 file stores 2^(b-1). When all fields of the layer hold one of those two
    values the data decides, whatever the config says: files labelled "gptq" that hold
    v2 zeros (and the reverse) exist because some exporters convert the data and not the
    label. Otherwise (asymmetric: zeros vary) the data cannot tell the conventions apart
    and the declared `checkpoint_format` decides (default v1, AutoGPTQ's). The one data
    check left there: in v1 a field 2^b - 1 would mean a true zero of 2^b, which no b-bit
    scheme has; it is what a true zero of 0 becomes after v1's `zeros - 1` underflows
    (that also corrupts the higher fields of its word), so it is refused by the caller.
    """
    midpoint = 1 << (bits - 1)
    if stored.numel() and bool((stored == midpoint - 1).all()):
        found = V1
    elif stored.numel() and bool((stored == midpoint).all()):
        found = V2
    else:
        return declared
    if found != declared:
        logger.warning("GPTQ zero points are all %d: reading the layer as %s although the config "
                       "declares %s", int(stored.flatten()[0]), found, declared)
    return found


def is_quantized_layer(prefix: str, tensor_names: set[str]) -> bool:
    """True if `prefix` names a GPTQ-quantized Linear in a checkpoint with these tensors."""
    return all(f"{prefix}.{t}" in tensor_names for t in ("qweight", "qzeros", "scales"))


def read_layer(get_tensor: GetTensor, prefix: str, quant_config: dict, in_features: int,
               out_features: int, tensor_names: set[str] | None = None
               ) -> tuple[QuantScheme, dict[str, torch.Tensor]]:
    """One GPTQ Linear -> (QuantScheme, QuantLinear buffers).

    get_tensor(name) returns a checkpoint tensor; the optional g_idx is found through
    `tensor_names` when given, else by get_tensor raising KeyError (or safetensors'
    missing-tensor error). Buffers: weight_packed int32 [N, K*b/32], weight_scale [N, G],
    weight_zero_point int32 [ceil(N*b/32), G] (asymmetric only), weight_g_idx int32 [K]
    (act-order only; a trivial j // group_size g_idx is dropped). `{prefix}.bias` has the
    name a float model gives it, so the loader reads it like any other parameter.
    """
    cfg = gptq_config(quant_config)
    b, k, n = cfg.bits, in_features, out_features
    if (k * b) % 32:
        raise ValueError(f"{prefix}: GPTQ packs in_features*bits into whole int32 words; "
                         f"in_features={k} with {b} bits leaves {(k * b) % 32} bits over")
    group_size = k if cfg.group_size == -1 else cfg.group_size
    n_groups = -(-k // group_size)
    qweight = expect_tensor(get_tensor(f"{prefix}.qweight"), f"{prefix}.qweight",
                            (k * b // 32, n), (torch.int32,))
    qzeros = expect_tensor(get_tensor(f"{prefix}.qzeros"), f"{prefix}.qzeros",
                           (n_groups, packed_words(n, b)), (torch.int32,))
    scales = expect_tensor(get_tensor(f"{prefix}.scales"), f"{prefix}.scales", (n_groups, n), _FLOATS)
    g_idx = optional_tensor(get_tensor, f"{prefix}.g_idx", tensor_names)
    if g_idx is not None:
        expect_tensor(g_idx, f"{prefix}.g_idx", (k,), (torch.int32, torch.int64))

    stored = unpack_int32(qzeros, b, n).to(torch.int64) + (1 << (b - 1))  # [G, N] unsigned fields
    if detect_zero_convention(stored, b, cfg.checkpoint_format) == V1:
        if bool((stored == (1 << b) - 1).any()):
            g, col = (stored == (1 << b) - 1).nonzero()[0].tolist()
            raise ValueError(
                f"tensor {prefix + '.qzeros'!r}: v1 (checkpoint_format 'gptq') zero field "
                f"{(1 << b) - 1} at group {g}, column {col} means a true zero point of {1 << b}, "
                f"outside the {b}-bit range: a zero of 0 that underflowed when written (v1 cannot "
                "store it). Re-export the model in the gptq_v2 format.")
        stored = stored + 1
    # GPTQ's words along K are compressed-tensors' words along K: q_u == q + 2^(b-1)
    weight_packed = qweight.t().contiguous()
    return unsigned_layer_to_buffers(weight_packed, scales.t(), stored.t(), b, group_size,
                                     g_idx, prefix)
