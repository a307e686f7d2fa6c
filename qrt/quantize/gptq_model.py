"""Sequential, memory-bounded GPTQ calibration of a decoder-only model.

  capture: run the model on the calibration windows until the first decoder block, which
           raises from a pre-hook after recording its inputs (hidden states + kwargs such as
           the attention mask and rotary position embeddings)
  per block: 1. run it on every batch with pre-hooks on its target Linears that add their
                inputs to Hessians (Linears fed the same tensor share one); from the second
                batch on, the pass stops once the block's last Linear has its input (what
                follows only makes fp outputs that nothing reads)
             2. GPTQ each Linear, swap in a QuantLinear
             3. run the quantized block again: its outputs are the next block's inputs
Only one block's inputs and outputs are held, and only the block being calibrated has to
sit on the calibration device (llmcompressor's sequential pipeline with error propagation).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from qrt.data.windows import calibration_windows, model_context
from qrt.formats.targets import set_submodule
from qrt.numerics.quant import quantize_weight
from qrt.quantize.gptq import HessianAccumulator, gptq_quantize_weight
from qrt.quantize.gptq_fp4 import gptq_quantize_fp4_weight
from qrt.quantize.gptq_fp8 import gptq_quantize_fp8_weight
from qrt.quantize.plan import plan_layers, record_quantization
from qrt.runtime.fp_linear import fill_float_buffers
from qrt.runtime.linear import QuantLinear
from qrt.schemes import QuantScheme, resolve_scheme


class _Captured(Exception):
    """Raised by the first block's pre-hook: its inputs are recorded, stop the forward."""


class _Calibrated(Exception):
    """Raised by StopAfterLastInput: every target Linear of the block has seen its input."""


def decoder_blocks(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """(name, ModuleList) of the model's decoder blocks: the longest ModuleList."""
    best = max(((n, m) for n, m in model.named_modules() if isinstance(m, nn.ModuleList)),
               key=lambda nm: len(nm[1]), default=None)
    if best is None or len(best[1]) == 0:
        raise ValueError(f"{type(model).__name__} has no nn.ModuleList of decoder blocks; "
                         "sequential calibration needs one")
    return best


@torch.no_grad()
def capture_block_inputs(model: nn.Module, first_block: nn.Module, windows: torch.Tensor,
                         batch_size: int) -> list[tuple[torch.Tensor, dict]]:
    """Inputs of `first_block` for each batch of windows [n, seqlen]: [(hidden [b, seqlen,
    hidden], kwargs)], the kwargs as the model passes them (mask, position embeddings, ...)."""
    captured = []

    def hook(module, args, kwargs):
        kwargs = dict(kwargs)
        hidden = args[0] if args else kwargs.pop("hidden_states")
        kwargs.update(past_key_values=None, use_cache=False)
        captured.append((hidden, kwargs))
        raise _Captured

    handle = first_block.register_forward_pre_hook(hook, with_kwargs=True)
    device = next(model.parameters()).device
    try:
        for b in range(0, windows.shape[0], batch_size):
            try:
                model(input_ids=windows[b: b + batch_size].to(device), use_cache=False)
            except _Captured:
                pass
    finally:
        handle.remove()
    return captured


class StopAfterLastInput:
    """Pre-hooks on every Linear of a block. The first block call records the order they run
    in; when each Linear ran exactly once, later calls raise _Calibrated when the last one is
    reached, after the hooks registered before this (Hessians, a transform's statistics)
    have read its input. The calibration pass then skips that Linear's GEMM and what follows
    (the down projection and residual of a Llama block): only fp outputs that nothing reads.
    A block whose Linears run in a data-dependent way (skipped or repeated) always runs whole.
    Create it after every other hook of the pass."""

    def __init__(self, block: nn.Module):
        self.linears = [m for m in block.modules() if isinstance(m, nn.Linear)]
        self.order, self.last = [], None  # last: None while learning, False when disabled
        self._handles = [m.register_forward_pre_hook(self._hook) for m in self.linears]

    def _hook(self, module, args):
        if self.last is None:
            self.order.append(module)
        elif module is self.last:
            raise _Calibrated

    def new_call(self) -> None:
        if self.last is None and self.order:
            once = len(self.order) == len(self.linears) == len({id(m) for m in self.order})
            self.last = self.order[-1] if once else False

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


class BlockHessians:
    """Pre-hooks accumulating each target Linear's input Hessian. Linears that receive the
    very same input tensor in a forward call (q/k/v, gate/up) share one accumulator."""

    def __init__(self, linears: dict[str, nn.Linear], device):
        self.linears, self.device = linears, device
        self.acc: dict[str, HessianAccumulator] = {}
        self.alias: dict[str, str] = {}
        self._seen: list[tuple[torch.Tensor, str]] = []  # this call's (input, owner name)
        self._handles = [m.register_forward_pre_hook(self._hook(n)) for n, m in linears.items()]

    def _hook(self, name: str):
        def hook(module, args):
            x = args[0]
            owner = next((o for t, o in self._seen if t is x), None)
            if owner is not None and owner != name:
                self.alias[name] = owner
                return
            if name in self.alias:
                raise RuntimeError(f"{name} shared its input with {self.alias[name]} in one call but not another")
            self._seen.append((x, name))
            self.acc.setdefault(name, HessianAccumulator(x.shape[-1], self.device)).add(x)
        return hook

    def new_call(self) -> None:
        self._seen.clear()

    def hessian(self, name: str) -> torch.Tensor:
        return self.acc[self.alias.get(name, name)].hessian()

    def gram(self, name: str) -> torch.Tensor:
        """X^T X of Linear `name`'s inputs (the accumulator itself: do not modify)."""
        acc = self.acc[self.alias.get(name, name)]
        if acc.rows == 0:
            raise ValueError(f"no calibration inputs reached {name}")
        return acc.xtx

    def rescale_inputs(self, scales: dict[str, torch.Tensor]) -> None:
        """The inputs of Linear `name` became x / s (a folded smoothing scale s [in]):
        H -> diag(1/s) H diag(1/s), once per shared accumulator."""
        done = {}
        for name, s in scales.items():
            owner = self.alias.get(name, name)
            if owner in done:
                if not torch.equal(done[owner], s):
                    raise RuntimeError(f"{name} shares its input with {owner} but got another scale")
                continue
            inv = 1.0 / s.to(self.acc[owner].xtx.device, torch.float32)
            self.acc[owner].xtx.mul_(inv[:, None] * inv[None, :])
            done[owner] = s

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._seen.clear()


def run_block(block: nn.Module, inputs: list[tuple[torch.Tensor, dict]], before_call=None) -> list[torch.Tensor]:
    """The block's output hidden states for each captured (hidden, kwargs) batch (None for a
    call that a StopAfterLastInput cut short)."""
    outs = []
    for hidden, kwargs in inputs:
        if before_call is not None:
            before_call()
        try:
            out = block(hidden, **kwargs)
        except _Calibrated:
            outs.append(None)
            continue
        outs.append(out[0] if isinstance(out, (tuple, list)) else out)
    return outs


def _to(obj, device):
    """Move the tensors inside nested tuples/lists/dicts to device."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, (tuple, list)):
        return type(obj)(_to(o, device) for o in obj)
    if isinstance(obj, dict):
        return {k: _to(v, device) for k, v in obj.items()}
    return obj


def _normalize_actorder(actorder: str | None) -> str | None:
    return None if actorder in (None, "none", "None") else actorder


@torch.no_grad()
def quantize_block(block: nn.Module, prefix: str, linears: dict[str, tuple[nn.Linear, QuantScheme]],
                   inputs: list[tuple[torch.Tensor, dict]], gptq_kwargs: dict | None,
                   need_outputs: bool = True, transform=None) -> list[torch.Tensor]:
    """Calibrate, quantize and swap the `linears` ({full name: (Linear, its scheme)} under
    `prefix`) of one block, then return the quantized block's outputs for `inputs`
    (none for the last block: nothing consumes them).

    gptq_kwargs None: round to nearest instead of GPTQ. transform (SmoothQuant, AWQ):
    `start(block, grams)` before the calibration pass (grams: name -> X^T X of a quantized
    Linear's inputs, from the Hessians, or None), `fold(block, schemes) -> {name: s}` after
    it, which folds per-channel scales into the fp weights; the Hessians follow (x -> x / s).
    """
    device = inputs[0][0].device
    rel = {name[len(prefix) + 1:]: name for name in linears}
    hessians = None
    if gptq_kwargs is not None:
        hessians = BlockHessians({n: lin for n, (lin, _) in linears.items()}, device)
    if hessians is not None or transform is not None:
        if transform is not None:  # AWQ reads X^T X from the Hessians instead of keeping a copy
            transform.start(block, grams=None if hessians is None else (lambda r: hessians.gram(rel[r])))
        stop = StopAfterLastInput(block)

        def new_call():
            stop.new_call()
            if hessians is not None:
                hessians.new_call()
        try:
            run_block(block, inputs, before_call=new_call)
        finally:
            stop.remove()
            if hessians is not None:
                hessians.remove()
            if transform is not None:
                transform.stop()
    if transform is not None:
        scaled = transform.fold(block, {r: linears[n][1] for r, n in rel.items()})
        if hessians is not None:
            hessians.rescale_inputs({rel[r]: s for r, s in scaled.items() if r in rel})
    for name, (_, scheme) in linears.items():
        linear = block.get_submodule(name[len(prefix) + 1:])
        if scheme.is_float and hessians is not None:  # FP8 / FP4 GPTQ
            w = linear.weight.detach()
            layer = QuantLinear(w.shape[1], w.shape[0], bias=linear.bias is not None, scheme=scheme,
                                dtype=w.dtype, device=w.device)
            float_gptq = gptq_quantize_fp8_weight if scheme.bits == 8 else gptq_quantize_fp4_weight
            fill_float_buffers(layer, float_gptq(w, hessians.hessian(name), scheme, name=name, **gptq_kwargs))
            if linear.bias is not None:
                layer.bias.data.copy_(linear.bias.detach())
        elif scheme.is_float:  # FP8 / FP4 round to nearest
            layer = QuantLinear.from_linear(linear, scheme)
        else:
            if hessians is not None:
                qw = gptq_quantize_weight(linear.weight, hessians.hessian(name), scheme, name=name, **gptq_kwargs)
            else:
                qw = quantize_weight(linear.weight.detach(), scheme)
            bias = None if linear.bias is None else linear.bias.detach()
            layer = QuantLinear.from_quantized(qw, scheme, bias=bias, dtype=linear.weight.dtype)
        if scheme.activations is None and not scheme.is_float:
            # the next block calibrates on these outputs: compute them in the model's own
            # dtype (the CPU packed kernels would round to bf16), as llmcompressor does
            layer.finalize(backend="dense")
        set_submodule(block, name[len(prefix) + 1:], layer)
    del hessians
    outputs = run_block(block, inputs) if need_outputs else []
    for name in linears:  # back to the fastest backend for inference
        layer = block.get_submodule(name[len(prefix) + 1:])
        if layer.scheme.activations is None:
            layer.finalize(backend=None)
    return outputs


@torch.no_grad()
def gptq_quantize_model(model: nn.Module, tokenizer, scheme: "str | QuantScheme",
                        calib: "str | Sequence[str] | None" = None, nsamples: int = 128,
                        seqlen: int = 512, actorder: str | None = "weight", percdamp: float = 0.01,
                        block_size: int = 128, ignore: Sequence[str] = ("lm_head",),
                        targets: Sequence[str] = ("Linear",), static_groups: bool | None = None,
                        seed: int = 0, batch_size: int = 8, device=None, ragged_groups: bool = False,
                        progress: bool = True, transform=None, rounding: str = "gptq",
                        clip: bool = False) -> nn.Module:
    """GPTQ every target Linear of a decoder-only model in place (block by block); returns
    it with QuantLinear layers and a `qrt_quantization` record, ready for save_quantized.

    calib: a text file path, a list of strings, or None (the packaged WikiText-2 validation
    split); nsamples windows of seqlen tokens drawn with `seed`, run batch_size at a time.
    device: where each block is calibrated (default: where the model is). Per-layer
    conventions follow qrt.quantize_model (16-bit scales; a group size that does not divide
    in_features is reduced unless ragged_groups). Targeted Linears outside the decoder blocks
    get round-to-nearest. rounding "rtn": round to nearest inside the blocks too (for a
    transform). transform: a per-block SmoothQuant or AWQ (qrt.quantize.smoothquant/awq)
    folded before the weights are rounded; see quantize_block. clip: GPTQ takes its static
    qparams from Hessian-aware clipped weights (qrt.quantize.gptq.gptq_quantize_weight).
    """
    if rounding not in ("gptq", "rtn"):
        raise ValueError(f"rounding must be 'gptq' or 'rtn', found {rounding!r}")
    is_float = resolve_scheme(scheme).is_float
    if clip and (rounding != "gptq" or is_float):
        raise ValueError(f"clip is GPTQ's clipping search for integer schemes; found rounding={rounding!r}, "
                         f"scheme {scheme!r} (for round to nearest use AWQ's clip: AWQConfig(clip=True))")
    actorder = _normalize_actorder(actorder) if rounding == "gptq" else None
    # FP8 / FP4 keep their scheme (and so their checkpoint) free of act-order: the order only steers the sweep
    scheme = resolve_scheme(scheme) if is_float else resolve_scheme(scheme).replace(actorder=actorder)
    ctx = model_context(model)
    if ctx is not None and seqlen > ctx:
        raise ValueError(f"seqlen {seqlen} exceeds the model context of {ctx} tokens")
    gptq_kwargs = dict(block_size=block_size, percdamp=percdamp, actorder=actorder,
                       static_groups=static_groups, **({"clip": True} if clip else {}))
    plan, adjusted, ignore, tied = plan_layers(model, scheme, targets, ignore, ragged_groups)
    blocks_name, blocks = decoder_blocks(model)
    home = next(model.parameters()).device
    device = torch.device(device) if device is not None else home
    windows = calibration_windows(tokenizer, calib, nsamples, seqlen, seed)
    was_training = model.training
    model.eval()
    inputs = _to(capture_block_inputs(model, blocks[0], windows, batch_size), device)
    method = "+".join(([transform.name] if transform is not None else []) + [rounding])
    for i, block in enumerate(tqdm(blocks, desc=f"{method} {nsamples}x{seqlen}", disable=not progress)):
        prefix = f"{blocks_name}.{i}"
        block.to(device)
        outputs = quantize_block(block, prefix, {n: v for n, v in plan.items() if n.startswith(prefix + ".")},
                                 inputs, gptq_kwargs if rounding == "gptq" else None,
                                 need_outputs=i + 1 < len(blocks), transform=transform)
        block.to(home)
        inputs = [(out, kwargs) for out, (_, kwargs) in zip(outputs, inputs)]
    for name, (module, layer_s) in plan.items():
        if not name.startswith(blocks_name + "."):
            set_submodule(model, name, QuantLinear.from_linear(module, layer_s.replace(actorder=None)))
    model.train(was_training)
    model.qrt_quantization = record_quantization(model, method, scheme, targets, ignore, adjusted,
                                                 tied[0] if tied else None)
    return model
