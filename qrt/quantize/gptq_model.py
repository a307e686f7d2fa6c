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
from qrt.quantize.block_pass import (BlockHessians, StopAfterLastInput, capture_block_inputs, decoder_blocks, run_block,
                                    to_device)
from qrt.quantize.gptq import gptq_quantize_weight
from qrt.quantize.gptq_fp4 import gptq_quantize_fp4_weight
from qrt.quantize.gptq_fp8 import gptq_quantize_fp8_weight
from qrt.quantize.plan import plan_layers, record_quantization
from qrt.runtime.fp_linear import fill_float_buffers
from qrt.runtime.linear import QuantLinear
from qrt.schemes import QuantScheme, resolve_scheme


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
    inputs = to_device(capture_block_inputs(model, blocks[0], windows, batch_size), device)
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
