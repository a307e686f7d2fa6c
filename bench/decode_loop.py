"""Quantize a decoder for one scheme, then time greedy decode steps (CUDA graph or eager)
and check that torch.compile(fullgraph=True) traces a decode step without graph breaks."""
from __future__ import annotations

import time

import torch
from torch import nn
from torch_peers import TorchInt4Linear


def quantize_for(model: nn.Module, scheme: str) -> dict:
    """Swap the model's Linear layers (lm_head kept dense) for `scheme`, in place:
    'dense' (nothing), 'torch_int4' (torch's int4 weight-only kernel), or a qrt scheme
    (qrt.quantize_model when the loader exists, else iter_targets + QuantLinear.from_linear)."""
    from qrt.formats.targets import iter_targets, set_submodule
    if scheme == "dense":
        return {"path": "dense", "quantized_layers": 0}
    names = [n for n, _ in iter_targets(model, ("Linear",), ("lm_head",))]
    if scheme == "torch_int4":  # bfloat16 inside, whatever the model's dtype (see TorchInt4Linear)
        for name in names:  # one layer at a time: its dense weight is freed before the next
            set_submodule(model, name, TorchInt4Linear.from_linear(model.get_submodule(name), 128,
                                                                   torch.bfloat16))
        return {"path": "torch._weight_int4pack_mm", "quantized_layers": len(names)}
    from qrt.runtime.linear import QuantLinear
    try:
        from qrt import quantize_model
    except ImportError:  # the loader (ckpt branch) is not merged yet
        quantize_model = None
    if quantize_model is not None:
        try:
            quantize_model(model, scheme, progress=False)
        except TypeError:  # a loader without the progress switch
            quantize_model(model, scheme)
        path = "qrt.quantize_model"
    else:
        for name in names:
            set_submodule(model, name, QuantLinear.from_linear(model.get_submodule(name), scheme))
        path = "iter_targets+QuantLinear.from_linear"
    qlayers = [m for m in model.modules() if isinstance(m, QuantLinear)]
    for m in qlayers:
        m.finalize()  # one-time backend repack, before any graph capture
    return {"path": path, "quantized_layers": len(qlayers),
            "lm_head_quantized": isinstance(model.lm_head, QuantLinear)}


class DecodeState:
    """Static buffers for one batch size: next token ids [B, 1] and position [1]."""

    def __init__(self, model, batch: int, prompt_len: int, max_len: int, device):
        self.model, self.batch, self.prompt_len = model, batch, prompt_len
        model.setup_cache(batch, max_len)
        vocab = model.config.vocab_size
        self.prompt = torch.randint(0, vocab, (batch, prompt_len), device=device)
        self.ids = torch.empty(batch, 1, dtype=torch.long, device=device)
        self.pos = torch.empty(1, dtype=torch.long, device=device)

    @torch.no_grad()
    def prefill(self) -> None:
        """Fill the cache with the prompt; ids <- first generated token, pos <- prompt_len."""
        logits = self.model(self.prompt, torch.arange(self.prompt_len, device=self.prompt.device))
        self.ids.copy_(logits[:, -1:].argmax(-1))
        self.pos.fill_(self.prompt_len)

    @torch.no_grad()
    def step(self) -> None:
        """One greedy decode step, entirely on device (graph-capturable): advances ids, pos."""
        logits = self.model(self.ids, self.pos)
        self.ids.copy_(logits[:, -1:].argmax(-1))
        self.pos.add_(1)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def capture_graph(state: DecodeState):
    """A CUDA graph of state.step (warm-up on a side stream first); (graph, error)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            state.step()
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    try:
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            state.step()
        return g, None
    except Exception as e:  # a host sync in some layer: recorded, decode is timed eagerly
        torch.cuda.synchronize()
        return None, f"{type(e).__name__}: {e}"[:400]


def time_decode(state: DecodeState, steps: int, warmup: int, use_graph: bool) -> dict:
    """Prefill, then `warmup` + `steps` greedy steps; tokens/s = batch * steps / seconds.
    With a graph, also replays `warmup` steps from the same cache state eagerly and
    records the fraction of tokens the graph and eager runs agree on."""
    device = state.ids.device
    state.prefill()
    graph, error = capture_graph(state) if use_graph else (None, None)
    run = graph.replay if graph is not None else state.step
    agree = None
    if graph is not None:  # same start state twice: eager steps, then graph replays
        state.prefill()
        eager_ids = []
        for _ in range(warmup):
            state.step()
            eager_ids.append(state.ids.clone())
        state.prefill()
        graph_ids = []
        for _ in range(warmup):
            run()
            graph_ids.append(state.ids.clone())
        agree = float((torch.cat(eager_ids, 1) == torch.cat(graph_ids, 1)).float().mean())
    else:
        for _ in range(warmup):
            run()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        run()
    _sync(device)
    dt = time.perf_counter() - t0
    return {"tokens_per_s": state.batch * steps / dt, "ms_per_step": dt / steps * 1e3,
            "mode": "cuda_graph" if graph is not None else "eager", "graph_error": error,
            "graph_agrees_with_eager": agree, "steps": steps}


def fullgraph_check(model, device, backend: str) -> dict:
    """torch.compile(fullgraph=True) of one decode step (B=1, T=1): raises on any graph
    break; the compiled logits are compared with eager ones."""
    import torch._dynamo
    torch._dynamo.reset()
    model.setup_cache(1, 8)
    ids = torch.randint(0, model.config.vocab_size, (1, 1), device=device)
    pos = torch.zeros(1, dtype=torch.long, device=device)
    t0 = time.perf_counter()
    try:
        compiled = torch.compile(model, fullgraph=True, backend=backend)
        with torch.no_grad():
            got = compiled(ids, pos).float()
            want = model(ids, pos).float()
        diff = float((got - want).norm() / want.norm().clamp_min(1e-30))
        return {"fullgraph_ok": True, "backend": backend, "rel_diff_vs_eager": diff,
                "seconds": round(time.perf_counter() - t0, 1)}
    except Exception as e:
        return {"fullgraph_ok": False, "backend": backend, "error": f"{type(e).__name__}: {e}"[:600],
                "seconds": round(time.perf_counter() - t0, 1)}
    finally:
        torch._dynamo.reset()
