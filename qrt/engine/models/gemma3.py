"""Gemma-3's text decoder over the paged KV cache (model_type "gemma3_text",
transformers' Gemma3ForCausalLM), on the Llama-family decoder:

- four norms per layer: the attention and the MLP outputs are normalized before they join
  the residual (post_attention_layernorm, post_feedforward_layernorm);
- Gemma's RMSNorm scales by (1 + weight) and the embedding by sqrt(hidden): both are the
  model's own modules, called as they are;
- a sliding-window / global layer mix with a rotary table per layer type (local and global
  rope bases), the window per layer read from the attention module;
- attention scaled by query_pre_attn_scalar^-0.5 (the module's `scaling`), q_norm/k_norm;
- the MLP's own activation (gelu, tanh approximation) and the final logit soft-capping.
Attention-logit soft-capping (Gemma-2) is not implemented and is refused.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from qrt.engine.attention import AttentionMetadata, paged_attention
from qrt.engine.models.llama import LlamaForCausalLM, UnsupportedModelError, _require_modules, rms_norm_fn


class Gemma3ForCausalLM(LlamaForCausalLM):
    MODEL_TYPES = ("gemma3_text",)

    @classmethod
    def check(cls, hf_model: nn.Module) -> None:
        cfg = getattr(hf_model, "config", None)
        mtype = getattr(cfg, "model_type", None)
        if mtype not in cls.MODEL_TYPES:
            raise UnsupportedModelError(f"model_type {mtype!r} is not Gemma-3's text decoder ({cls.MODEL_TYPES})")
        if getattr(cfg, "attn_logit_softcapping", None) is not None:
            raise UnsupportedModelError(f"{mtype}: attn_logit_softcapping={cfg.attn_logit_softcapping} found; "
                                        "the engine's attention has no logit soft-capping (expected None)")
        _require_modules(hf_model, "Gemma-3")
        for name in ("pre_feedforward_layernorm", "post_feedforward_layernorm"):
            if not hasattr(hf_model.model.layers[0], name):
                raise UnsupportedModelError(f"{type(hf_model).__name__}: decoder layers have no {name!r}")

    def __init__(self, hf_model: nn.Module, max_positions: int, lm_head: str = "model"):
        super().__init__(hf_model, max_positions, lm_head=lm_head)
        cfg = hf_model.config
        self.ff_norms = [(rms_norm_fn(layer.pre_feedforward_layernorm), rms_norm_fn(layer.post_feedforward_layernorm))
                         for layer in self.layers]
        self.act = [layer.mlp.act_fn for layer in self.layers]
        self.softcap = getattr(cfg, "final_logit_softcapping", None)

    def init_rotary(self, rotary_emb: nn.Module, max_positions: int) -> None:
        """One cos/sin table per layer type (local and global rope bases)."""
        self.layer_types = list(self.config.layer_types)
        self.cos_sin = {t: self.rotary_table(rotary_emb, max_positions, t) for t in sorted(set(self.layer_types))}

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata,
                kv_caches: list[tuple[torch.Tensor, torch.Tensor]],
                attention: Callable = paged_attention) -> torch.Tensor:
        h = self.embed_tokens(input_ids)
        rope = {t: (cos[positions], sin[positions]) for t, (cos, sin) in self.cos_sin.items()}
        for i, layer in enumerate(self._layers):
            cos, sin = rope[self.layer_types[i]]
            a = self._attention(layer, layer.input_norm(h), cos, sin, kv_caches[i], meta, self.windows[i], attention)
            h = h + layer.post_norm(a)
            pre, post = self.ff_norms[i]
            x = layer.proj.gate_up(pre(h))
            n = layer.proj.intermediate
            h = h + post(layer.proj.down(self.act[i](x[:, :n]) * x[:, n:]))
        return self.final_norm(h)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self._head(hidden)
        if self.softcap is not None:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits
