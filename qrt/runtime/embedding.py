"""QuantEmbedding: an int8-per-row embedding table, shared with a tied lm_head.

The table is stored as compressed-tensors pack-quantized 8-bit (channel strategy, one
scale per row), which is exactly the layout of a W8A16 per-channel QuantLinear weight:
  weight_packed  int32 [vocab, ceil(hidden/4)]  bytes = q + 128, little-endian
  weight_scale   [vocab, 1]
  weight_shape   int64 [2] = (vocab, hidden)
So the tied output projection is a plain QuantLinear whose buffers ARE these tensors (one
copy in memory and on disk): the lookup reads rows, the head runs the W8A16 matmul path.
"""
from __future__ import annotations

import torch
from torch import nn

from qrt.numerics.packing import int8_to_packed8, packed_words
from qrt.numerics.quant import check_finite, quantize_weight
from qrt.runtime.linear import QuantLinear
from qrt.schemes import QuantScheme

EMBEDDING_SCHEME = QuantScheme(bits=8, strategy="channel", group_size=None, symmetric=True)


class QuantEmbedding(nn.Module):
    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None,
                 dtype: torch.dtype = torch.float16, scale_dtype: torch.dtype | None = None,
                 embed_scale: torch.Tensor | None = None, device=None):
        super().__init__()
        self.num_embeddings, self.embedding_dim, self.padding_idx = num_embeddings, embedding_dim, padding_idx
        self.dtype = dtype
        self.scheme = EMBEDDING_SCHEME.replace(scale_dtype=_dtype_name(scale_dtype or dtype))
        self.register_buffer("weight_packed", torch.empty(
            num_embeddings, packed_words(embedding_dim, 8), dtype=torch.int32, device=device))
        self.register_buffer("weight_scale", torch.empty(
            num_embeddings, 1, dtype=scale_dtype or dtype, device=device))
        self.register_buffer("weight_shape", torch.tensor(
            [num_embeddings, embedding_dim], dtype=torch.int64, device=device))
        # Gemma3-style scaled embeddings multiply the looked-up rows inside the module
        self.embed_scale = embed_scale

    @classmethod
    def from_embedding(cls, emb: nn.Embedding, scale_dtype: torch.dtype | None = None) -> "QuantEmbedding":
        """Symmetric int8 per row of emb.weight [vocab, hidden]."""
        w = emb.weight.detach()
        check_finite(w, "embedding weight")
        scheme = EMBEDDING_SCHEME.replace(scale_dtype=_dtype_name(scale_dtype or w.dtype))
        qw = quantize_weight(w, scheme)
        m = cls(w.shape[0], w.shape[1], emb.padding_idx, dtype=w.dtype, scale_dtype=qw.scale.dtype,
                embed_scale=getattr(emb, "embed_scale", None), device=w.device)
        m.weight_packed.copy_(int8_to_packed8(qw.q))
        m.weight_scale.copy_(qw.scale)
        return m

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, int8 per row"

    def dequantize_weight(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """fp table [vocab, hidden]."""
        return self._rows(torch.arange(self.num_embeddings, device=self.weight_packed.device), dtype)

    def _rows(self, ids: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
        u8 = self.weight_packed.view(torch.uint8)[:, : self.embedding_dim]
        q = u8[ids].to(torch.float32) - 128.0
        return (q * self.weight_scale[ids].float()).to(dtype or self.dtype)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """input_ids [...] -> [..., hidden] in the module's compute dtype."""
        x = self._rows(input_ids, self.dtype)
        if self.embed_scale is not None:
            x = x * self.embed_scale.to(x.dtype)
        return x


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def tied_head(embedding: QuantEmbedding, bias: torch.Tensor | None = None) -> QuantLinear:
    """A W8A16 per-channel QuantLinear [hidden -> vocab] whose buffers are the embedding's
    own tensors (no copy): the output projection of a tied lm_head."""
    head = QuantLinear(embedding.embedding_dim, embedding.num_embeddings, bias=bias is not None,
                       scheme=embedding.scheme, dtype=embedding.dtype, device="meta")
    for name in ("weight_packed", "weight_scale", "weight_shape"):
        head._buffers[name] = getattr(embedding, name)
    if bias is not None:
        head.bias = nn.Parameter(bias, requires_grad=False)
    head.tied_to_embedding = True
    return head
