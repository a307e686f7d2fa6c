"""Where a per-channel scale can be moved between layers without changing the fp model.

A mapping pairs a `smooth` module (a norm or a Linear) with the `balance` Linears that read
its output. Dividing the smooth module's output channel j by s_j and multiplying column j of
every balance weight by s_j leaves the model's function unchanged:
  (x / s) (W diag(s))^T = x W^T
SmoothQuant and AWQ choose s; `divide_output` and `multiply_input` fold it into the weights,
so the checkpoint stays a plain compressed-tensors file. Names are relative to one decoder
block; the mappings follow llmcompressor's for the same architectures:

  input_layernorm          -> self_attn.q/k/v_proj    (loss parent: self_attn)
  self_attn.v_proj         -> self_attn.o_proj        (only when v's outputs are o's inputs: no GQA)
  post_attention_layernorm -> mlp.gate/up_proj        (Gemma 3: pre_feedforward_layernorm)
  mlp.up_proj              -> mlp.down_proj
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

log = logging.getLogger("qrt")


@dataclass(frozen=True)
class ScaleMapping:
    """smooth: module whose output channels are divided by s; balance: Linears reading that
    output (input columns multiplied by s); parent: the module whose output AWQ compares
    (the balance layers' lowest common ancestor); token_wise: the parent maps each token on
    its own (an MLP), so a loss on it may use any sample of tokens. Names are relative to a
    decoder block."""

    smooth: str
    balance: tuple[str, ...]
    parent: str
    token_wise: bool = False

    @property
    def from_norm(self) -> bool:
        return "norm" in self.smooth.rsplit(".", 1)[-1]


_QKV = ScaleMapping("input_layernorm", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), "self_attn")
_VO = ScaleMapping("self_attn.v_proj", ("self_attn.o_proj",), "self_attn.o_proj")
_GATE_UP = ScaleMapping("post_attention_layernorm", ("mlp.gate_proj", "mlp.up_proj"), "mlp", token_wise=True)
_UP_DOWN = ScaleMapping("mlp.up_proj", ("mlp.down_proj",), "mlp.down_proj")
_GEMMA3_GATE_UP = ScaleMapping("pre_feedforward_layernorm", ("mlp.gate_proj", "mlp.up_proj"), "mlp",
                               token_wise=True)


@dataclass(frozen=True)
class Architecture:
    """mappings: every mapping of one block, in the order AWQ applies them. norm_offset: the
    norm multiplies by (offset + weight) (Gemma: 1) instead of weight. skip_awq: mappings
    llmcompressor leaves out of AWQ (Gemma 3's q/k norms make q/k/v smoothing hurt)."""

    mappings: tuple[ScaleMapping, ...]
    norm_offset: float = 0.0
    skip_awq: tuple[ScaleMapping, ...] = ()


_LLAMA = Architecture((_QKV, _VO, _GATE_UP, _UP_DOWN))
ARCHITECTURES = {
    "llama": _LLAMA, "mistral": _LLAMA, "qwen2": _LLAMA, "qwen3": _LLAMA,
    "gemma": Architecture((_QKV, _VO, _GATE_UP, _UP_DOWN), norm_offset=1.0),
    "gemma3_text": Architecture((_QKV, _VO, _GEMMA3_GATE_UP, _UP_DOWN), norm_offset=1.0, skip_awq=(_QKV,)),
}


def architecture(model: nn.Module, method: str) -> Architecture:
    """The mapping table of `model` (by config.model_type); ValueError for any other model."""
    mt = getattr(getattr(model, "config", None), "model_type", None)
    if mt not in ARCHITECTURES:
        raise ValueError(f"{method}: no smoothing mappings for model type {mt!r} ({type(model).__name__}); "
                         f"supported model types: {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[mt]


def block_mappings(model: nn.Module, block: nn.Module, method: str, linears_only: bool = False,
                   norms_only: bool = False) -> list[ScaleMapping]:
    """The mappings of one decoder block that apply to it: v->o is dropped when v_proj's
    outputs are not o_proj's inputs (grouped-query attention), as AutoAWQ and llmcompressor
    do. method "awq" drops the architecture's skip_awq mappings."""
    arch = architecture(model, method)
    out = []
    for m in arch.mappings:
        if (method == "awq" and m in arch.skip_awq) or (norms_only and not m.from_norm) \
                or (linears_only and m.from_norm):
            continue
        smooth = block.get_submodule(m.smooth)
        balance = [block.get_submodule(b) for b in m.balance]
        width = smooth.out_features if isinstance(smooth, nn.Linear) else smooth.weight.shape[0]
        if any(not isinstance(b, nn.Linear) or b.in_features != width for b in balance):
            log.info("%s: skipping %s -> %s (%d outputs feed %s inputs)", method, m.smooth, m.balance, width,
                     [getattr(b, "in_features", None) for b in balance])
            continue
        out.append(m)
    return out


@torch.no_grad()
def divide_output(module: nn.Module, s: torch.Tensor, norm_offset: float = 0.0) -> None:
    """Divide output channel j of a Linear or a norm by s[j] in place. s [out] float32.
    A norm computing x_hat * (norm_offset + w) gets w' = (norm_offset + w) / s - norm_offset."""
    s = s.to(module.weight.device, torch.float32)
    w = module.weight
    if isinstance(module, nn.Linear):
        w.copy_((w.float() / s[:, None]).to(w.dtype))
    elif w.ndim == 1:
        w.copy_(((norm_offset + w.float()) / s - norm_offset).to(w.dtype))
    else:
        raise ValueError(f"cannot fold a scale into {type(module).__name__} with weight {tuple(w.shape)}; "
                         "expected an nn.Linear or a norm with a 1-D weight")
    bias = getattr(module, "bias", None)
    if bias is not None:
        bias.copy_((bias.float() / s).to(bias.dtype))


@torch.no_grad()
def multiply_input(linear: nn.Linear, s: torch.Tensor) -> None:
    """Multiply input column j of a Linear's weight by s[j] in place. s [in] float32."""
    w = linear.weight
    w.copy_((w.float() * s.to(w.device, torch.float32)[None, :]).to(w.dtype))


def fold_scales(block: nn.Module, mapping: ScaleMapping, s: torch.Tensor, norm_offset: float) -> None:
    """Apply s [channels] to one mapping: smooth output / s, balance inputs * s."""
    for b in mapping.balance:
        multiply_input(block.get_submodule(b), s)
    divide_output(block.get_submodule(mapping.smooth), s, norm_offset)


class BlockTransform:
    """Base of SmoothQuant and AWQ as the sequential driver calls them: `start(block, grams)`
    hooks a block before its calibration pass, `stop()` removes the hooks, `fold(block, schemes)`
    folds the scales and returns {balance name: s}. Subclasses set `name`."""

    name = ""

    def __init__(self, model: nn.Module, config):
        self.config = config
        self.norm_offset = architecture(model, self.name).norm_offset
        self.model = model
        self._handles = []

    def stop(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


def call_windows(args, kwargs) -> int:
    """Calibration windows in one module call: the batch of its hidden states [b, seq, d]."""
    x = args[0] if args else next(iter(kwargs.values()))
    return x.shape[0] if x.ndim == 3 else 1


def cache_call(calls: list, args, kwargs, limit: int | None) -> None:
    """Append one (args, kwargs) module call to calls until they hold `limit` windows (None:
    every call). The call that crosses the limit is cut to the windows still missing: its
    hidden states and every tensor of 2+ dims whose first dim is that batch (masks, per-window
    position tables) keep their first rows; a position table of batch 1 is shared as is."""
    held = sum(call_windows(a, k) for a, k in calls)
    if limit is not None and held >= limit:
        return
    b = call_windows(args, kwargs)
    if limit is not None and held + b > limit:
        keep = limit - held

        def cut(t):
            if isinstance(t, torch.Tensor):
                return t[:keep] if t.ndim >= 2 and t.shape[0] == b else t
            return type(t)(cut(u) for u in t) if isinstance(t, (tuple, list)) else t
        args, kwargs = cut(tuple(args)), {k: cut(v) for k, v in kwargs.items()}
    calls.append((args, dict(kwargs)))


def run_calls(module: nn.Module, calls) -> list[torch.Tensor]:
    """module(*args, **kwargs) for each cached (args, kwargs) call -> its (first) outputs."""
    outs = []
    for args, kwargs in calls:
        out = module(*args, **kwargs)
        outs.append(out[0] if isinstance(out, (tuple, list)) else out)
    return outs


def output_mse(ref: list[torch.Tensor], got: list[torch.Tensor]) -> float:
    """Mean squared difference over every element of two lists of outputs."""
    num = sum(((a.float() - b.float()) ** 2).sum() for a, b in zip(ref, got))
    return (num / sum(a.numel() for a in ref)).item()
