"""The Llama-family decoder over a paged KV cache: Llama, Mistral, Qwen2 (qkv bias), Qwen3
(q_norm/k_norm on each head).

Weights are not loaded here: the decoder calls the modules of an already-built Hugging Face
model (embedding, every Linear, the RMSNorms, the MLP), so an fp model, one whose Linears
qrt swapped for QuantLinear (qrt.quantize_model / qrt.load_quantized) and a tied lm_head all
work unchanged. What we own is the forward itself: packed tokens of many sequences in one
[T, D] batch, rotary embeddings from a precomputed table, K/V written to the paged cache and
attention over it (qrt.engine.attention), logits only for the rows that need them.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from qrt.engine.attention import AttentionMetadata, paged_attention, store_kv
from qrt.engine.models.fused import LayerProjections
from qrt.runtime.lm_head import build_head

LLAMA_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3")


class UnsupportedModelError(ValueError):
    """The model runner has no decoder for this architecture."""


def _require_modules(hf_model: nn.Module, family: str) -> None:
    inner = getattr(hf_model, "model", None)
    for name in ("embed_tokens", "layers", "norm", "rotary_emb"):
        if not hasattr(inner, name):
            raise UnsupportedModelError(f"{type(hf_model).__name__}.model has no {name!r}; "
                                        f"expected a Hugging Face *ForCausalLM of the {family} family")


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [T, heads, head_dim]; cos/sin [T, head_dim] (Hugging Face's half-rotation layout)."""
    return x * cos[:, None] + rotate_half(x) * sin[:, None]


def rms_norm_fn(norm: nn.Module):
    """x -> norm(x) without nn.Module.__call__, Hugging Face's Llama-family RMSNorm
    weight * (x32 * rsqrt(mean(x32^2) + eps)).to(dtype) in 6-7 small ops (on the CPU at one
    row, torch's mean and F.rms_norm cost ~4x a sum). Unknown norms call the module."""
    w, eps = getattr(norm, "weight", None), getattr(norm, "variance_epsilon", None)
    if w is None or eps is None or type(norm).__name__ not in _HF_RMS_NORMS:
        return norm
    d = float(w.shape[-1])

    def rms(x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        r = x32.square().sum(-1, keepdim=True).div_(d).add_(eps).rsqrt_()
        return w * (x32 * r).to(x.dtype)
    return rms


_HF_RMS_NORMS = ("LlamaRMSNorm", "MistralRMSNorm", "Qwen2RMSNorm", "Qwen3RMSNorm")


class _Layer:
    """One decoder layer's callables, built once (see qrt.engine.models.fused)."""

    def __init__(self, layer: nn.Module):
        self.proj = LayerProjections(layer)
        self.input_norm = rms_norm_fn(layer.input_layernorm)
        self.post_norm = rms_norm_fn(layer.post_attention_layernorm)
        attn = layer.self_attn
        self.q_norm = rms_norm_fn(attn.q_norm) if hasattr(attn, "q_norm") else None
        self.k_norm = rms_norm_fn(attn.k_norm) if hasattr(attn, "k_norm") else None
        self.scaling = attn.scaling


class LlamaForCausalLM(nn.Module):
    """forward(input_ids [T], positions [T], meta, kv_caches) -> hidden [T, D];
    compute_logits(hidden [N, D]) -> [N, vocab]. kv_caches: one (k, v) pair per layer, each
    [num_blocks, page_size, num_kv_heads, head_dim]."""

    MODEL_TYPES = LLAMA_MODEL_TYPES

    @classmethod
    def check(cls, hf_model: nn.Module) -> None:
        """UnsupportedModelError unless this decoder implements hf_model exactly."""
        cfg = getattr(hf_model, "config", None)
        mtype = getattr(cfg, "model_type", None)
        if mtype not in cls.MODEL_TYPES:
            raise UnsupportedModelError(
                f"model_type {mtype!r} ({type(hf_model).__name__}) is not supported by qrt's engine; "
                f"supported: {', '.join(cls.MODEL_TYPES)}")
        act = getattr(cfg, "hidden_act", "silu")
        if act != "silu":
            raise UnsupportedModelError(f"{mtype}: hidden_act {act!r} found, the engine's decoder expects 'silu'")
        _require_modules(hf_model, "Llama")

    def __init__(self, hf_model: nn.Module, max_positions: int, lm_head: str = "model"):
        """lm_head: how logits are computed (qrt.runtime.lm_head.HEAD_MODES): "model" (the
        module itself, default), "int8" / "bf16" copies, "auto" (int8 for a quantized model
        with an fp32 head on the CPU)."""
        super().__init__()
        self.check(hf_model)
        cfg, inner = hf_model.config, hf_model.model
        self.config = cfg
        self.embed_tokens, self.layers, self.norm = inner.embed_tokens, inner.layers, inner.norm
        self.lm_head = hf_model.lm_head
        self._head, self.head_mode = build_head(hf_model.lm_head, lm_head, hf_model)
        self._layers = [_Layer(layer) for layer in self.layers]
        self.final_norm = rms_norm_fn(self.norm)
        first = self.layers[0].self_attn
        self.head_dim = first.head_dim
        self.num_heads = cfg.num_attention_heads
        self.num_kv_heads = cfg.num_key_value_heads
        self.windows = [self._window(layer.self_attn) for layer in self.layers]
        # the embedding's output dtype, read without calling it (a hook on it must see only
        # real forwards): QuantEmbedding says it, nn.Embedding returns its weight's dtype
        emb = self.embed_tokens
        dtype = emb.dtype if isinstance(getattr(emb, "dtype", None), torch.dtype) else emb.weight.dtype
        self.dtype = dtype
        self.init_rotary(inner.rotary_emb, max_positions)

    def init_rotary(self, rotary_emb: nn.Module, max_positions: int) -> None:
        """The cos/sin tables forward indexes by position (one table for the Llama family)."""
        cos, sin = self.rotary_table(rotary_emb, max_positions)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def rotary_table(self, rotary_emb: nn.Module, max_positions: int, *args) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin [max_positions, head_dim] from HF's own rotary module (every rope scaling it
        knows works here); args: what the module takes after (x, position_ids)."""
        with torch.no_grad():
            pos = torch.arange(max_positions, device=self.device)[None]
            probe = torch.zeros(1, dtype=self.dtype, device=self.device)
            cos, sin = rotary_emb(probe, pos, *args)
        return cos[0].to(self.dtype), sin[0].to(self.dtype)

    def _window(self, attn: nn.Module) -> int | None:
        """Sliding window of one layer: Qwen2/3 set it per layer; Mistral for the whole model."""
        if hasattr(attn, "sliding_window"):
            return attn.sliding_window
        return getattr(self.config, "sliding_window", None)

    @property
    def device(self) -> torch.device:
        return self.embed_tokens.weight.device

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata,
                kv_caches: list[tuple[torch.Tensor, torch.Tensor]],
                attention: Callable = paged_attention) -> torch.Tensor:
        h = self.embed_tokens(input_ids)
        cos, sin = self.cos[positions], self.sin[positions]
        for i, layer in enumerate(self._layers):
            x = layer.input_norm(h)
            h = h + self._attention(layer, x, cos, sin, kv_caches[i], meta, self.windows[i], attention)
            x = layer.proj.gate_up(layer.post_norm(h))
            n = layer.proj.intermediate
            h = h + layer.proj.down(F.silu(x[:, :n]) * x[:, n:])
        return self.final_norm(h)

    def _attention(self, layer: _Layer, x: torch.Tensor, cos, sin, kv_cache, meta, window, attention):
        t, hd = x.shape[0], self.head_dim
        nq, nkv = self.num_heads, self.num_kv_heads
        qkv = layer.proj.qkv(x).view(t, nq + 2 * nkv, hd)
        q, k, v = qkv[:, :nq], qkv[:, nq:nq + nkv], qkv[:, nq + nkv:]
        if layer.q_norm is not None:  # Qwen3: RMSNorm over each head before rotary
            q, k = layer.q_norm(q), layer.k_norm(k)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        else:  # q and k are adjacent heads of one tensor: one rotary over both
            qk = apply_rope(qkv[:, :nq + nkv], cos, sin)
            q, k = qk[:, :nq], qk[:, nq:]
        store_kv(k, v, kv_cache[0], kv_cache[1], meta.slot_mapping)
        o = attention(q, kv_cache[0], kv_cache[1], meta, layer.scaling, window)
        return layer.proj.o(o.reshape(t, nq * hd))

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self._head(hidden)
