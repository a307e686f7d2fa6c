"""A Llama decoder for the decode benchmark (gpt-fast style): static KV cache, positions
as a device tensor, no host syncs, so one decode step can be captured as a CUDA graph or
compiled with torch.compile(fullgraph=True).

Why not transformers' LlamaForCausalLM: its cache and mask plumbing changes between 5.x
releases (the GPU machine has 5.17, this one 5.23), and one untested graph-capture path on
a GPU we cannot debug from here is one too many. The shapes come from a transformers
LlamaConfig and the Linear names are Hugging Face's (self_attn.q_proj, mlp.down_proj,
lm_head), so qrt.quantize_model / iter_targets see the same layers they see in HF models.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# meta-llama/Meta-Llama-3-8B config.json (shapes only; no download)
LLAMA3_8B = dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                 num_attention_heads=32, num_key_value_heads=8, rms_norm_eps=1e-5, rope_theta=500000.0,
                 max_position_embeddings=8192, tie_word_embeddings=False)


def llama3_8b_config(**overrides):
    """transformers.LlamaConfig of Llama-3-8B, with overrides (e.g. num_hidden_layers=2)."""
    import inspect

    from transformers import LlamaConfig
    kw = {**LLAMA3_8B, **{k: v for k, v in overrides.items() if v is not None}}
    if "rope_parameters" in inspect.signature(LlamaConfig.__init__).parameters:  # transformers >= 5
        kw["rope_parameters"] = {"rope_type": "default", "rope_theta": kw.pop("rope_theta")}
    return LlamaConfig(**kw)


def rope_theta(cfg) -> float:
    """transformers 5 keeps it in rope_parameters; older releases as rope_theta."""
    params = getattr(cfg, "rope_parameters", None) or {}
    return float(params.get("rope_theta") or getattr(cfg, "rope_theta"))


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps, self.weight = eps, nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype) * self.weight


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.n_heads, self.n_kv = cfg.num_attention_heads, cfg.num_key_value_heads
        self.head_dim = cfg.hidden_size // cfg.num_attention_heads
        d, hd = cfg.hidden_size, self.head_dim
        self.q_proj = nn.Linear(d, self.n_heads * hd, bias=False)
        self.k_proj = nn.Linear(d, self.n_kv * hd, bias=False)
        self.v_proj = nn.Linear(d, self.n_kv * hd, bias=False)
        self.o_proj = nn.Linear(self.n_heads * hd, d, bias=False)
        self.k_cache = self.v_cache = None

    def forward(self, x, cos, sin, input_pos, mask):
        """x [B, T, D]; cos/sin [T, head_dim]; input_pos int64 [T]; mask bool [T, L]."""
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.n_kv, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.n_kv, self.head_dim).transpose(1, 2)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        self.k_cache.index_copy_(2, input_pos, k)  # static cache [B, n_kv, L, hd]: in place, graph-safe
        self.v_cache.index_copy_(2, input_pos, v)
        o = F.scaled_dot_product_attention(q, self.k_cache, self.v_cache, attn_mask=mask[None, None],
                                           enable_gqa=True)
        return self.o_proj(o.transpose(1, 2).reshape(b, t, -1))


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d, f = cfg.hidden_size, cfg.intermediate_size
        self.gate_proj = nn.Linear(d, f, bias=False)
        self.up_proj = nn.Linear(d, f, bias=False)
        self.down_proj = nn.Linear(f, d, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x, cos, sin, input_pos, mask):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, input_pos, mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaDecoder(nn.Module):
    """logits [B, T, vocab] = model(ids [B, T], input_pos [T]); call setup_cache first."""

    def __init__(self, cfg):
        super().__init__()
        self.config = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)

    def setup_cache(self, batch: int, max_len: int) -> None:
        """Allocate the KV cache, rotary tables and causal mask for `max_len` positions."""
        cfg, p = self.config, self.embed_tokens.weight
        hd = cfg.hidden_size // cfg.num_attention_heads
        for layer in self.layers:
            attn = layer.self_attn
            attn.k_cache = torch.zeros(batch, attn.n_kv, max_len, hd, device=p.device, dtype=p.dtype)
            attn.v_cache = torch.zeros_like(attn.k_cache)
        inv_freq = 1.0 / rope_theta(cfg) ** (torch.arange(0, hd, 2, device=p.device).float() / hd)
        freqs = torch.outer(torch.arange(max_len, device=p.device).float(), inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        self.cos, self.sin = emb.cos().to(p.dtype), emb.sin().to(p.dtype)
        self.causal = torch.tril(torch.ones(max_len, max_len, dtype=torch.bool, device=p.device))

    def forward(self, ids: torch.Tensor, input_pos: torch.Tensor) -> torch.Tensor:
        x = self.embed_tokens(ids)
        cos, sin, mask = self.cos[input_pos], self.sin[input_pos], self.causal[input_pos]
        for layer in self.layers:
            x = layer(x, cos, sin, input_pos, mask)
        return self.lm_head(self.norm(x))


def build_model(cfg, device: torch.device, dtype: torch.dtype, seed: int = 0) -> LlamaDecoder:
    """Random weights, created directly on `device` in `dtype` (materialized once)."""
    torch.manual_seed(seed)
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device), torch.no_grad():
            model = LlamaDecoder(cfg)
            model.embed_tokens.weight.normal_(0, 0.02)  # nn.Embedding's N(0, 1) would swamp the residual
    finally:
        torch.set_default_dtype(old)
    return model.eval().requires_grad_(False)
