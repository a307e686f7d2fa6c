"""What sequential calibration runs on one decoder block: the block list, the first block's
captured inputs, a pass over every captured batch, the Hessians its pre-hooks accumulate,
and the early stop once the block's last Linear has its input."""
from __future__ import annotations

import torch
from torch import nn

from qrt.quantize.gptq import HessianAccumulator
from qrt.quantize.mappings import run_calls


class _Captured(Exception):
    """Raised by the first block's pre-hook: its inputs are recorded, stop the forward."""


class _Calibrated(Exception):
    """Raised by StopAfterLastInput: every Linear of the block has seen its input."""


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
            outs += run_calls(block, [((hidden,), kwargs)])
        except _Calibrated:
            outs.append(None)
    return outs


def to_device(obj, device):
    """Move the tensors inside nested tuples/lists/dicts to device."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, (tuple, list)):
        return type(obj)(to_device(o, device) for o in obj)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    return obj
