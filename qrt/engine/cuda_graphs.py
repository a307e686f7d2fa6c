"""CUDA graphs for decode steps: one graph per batch-size bucket, captured once, replayed.

A decode step (every sequence brings one token) launches hundreds of small kernels; on a GPU
their launch overhead exceeds the work at small batch. Each bucket B (1, 2, 4, 8, ... up to
max_num_seqs) gets static input tensors and a graph of the decoder's forward over them; a
step with n <= B sequences copies its inputs into the first n rows and replays. Padding rows
write their K/V into a scratch block that the block manager never hands out (the runner
allocates num_blocks + 1 blocks) and read block 0 at position 0; their outputs are dropped.
Only the Triton attention is captured (it reads tensors only, never host-side lengths).
"""
from __future__ import annotations

import torch

from qrt.engine.attention import AttentionMetadata, triton_paged_attention


def buckets(max_num_seqs: int) -> tuple[int, ...]:
    """1, 2, 4, 8, then multiples of 8 up to max_num_seqs (vLLM's capture sizes, shortened)."""
    sizes = [b for b in (1, 2, 4) if b < max_num_seqs] + list(range(8, max_num_seqs + 8, 8))
    return tuple(sorted({min(b, max_num_seqs) for b in sizes}))


class CUDAGraphRunner:
    """model: LlamaForCausalLM on CUDA; kv_caches with a scratch block at index scratch_block."""

    def __init__(self, model, kv_caches, max_num_seqs: int, max_blocks: int, scratch_block: int):
        self.model, self.kv_caches = model, kv_caches
        self.page_size = kv_caches[0][0].shape[1]
        self.scratch_slot = scratch_block * self.page_size
        self.sizes = buckets(max_num_seqs)
        dev, n = model.device, self.sizes[-1]
        self.ids = torch.zeros(n, dtype=torch.long, device=dev)
        self.positions = torch.zeros(n, dtype=torch.long, device=dev)
        self.slots = torch.full((n,), self.scratch_slot, dtype=torch.long, device=dev)
        self.tables = torch.zeros(n, max_blocks, dtype=torch.long, device=dev)
        self.token_pos = torch.zeros(n, dtype=torch.int32, device=dev)
        self.token_seq = torch.arange(n, dtype=torch.int32, device=dev)
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.outputs: dict[int, torch.Tensor] = {}
        self.pool = None

    def _meta(self, b: int) -> AttentionMetadata:
        return AttentionMetadata(self.slots[:b], tuple(range(b + 1)), (1,) * b, self.tables[:b],
                                 self.token_seq[:b], self.token_pos[:b])

    def _forward(self, b: int) -> torch.Tensor:
        return self.model(self.ids[:b], self.positions[:b], self._meta(b), self.kv_caches, triton_paged_attention)

    @torch.inference_mode()
    def capture(self) -> None:
        """Capture every bucket, largest first (smaller graphs reuse its memory pool)."""
        for b in reversed(self.sizes):
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):  # warm-up outside the graph: Triton compiles, allocators settle
                for _ in range(2):
                    self._forward(b)
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self.pool):
                self.outputs[b] = self._forward(b)
            self.pool = graph.pool()
            self.graphs[b] = graph
        torch.cuda.synchronize()

    def fits(self, n: int) -> bool:
        return n <= self.sizes[-1]

    @torch.inference_mode()
    def run(self, ids: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata) -> torch.Tensor:
        """One decode step of n sequences -> hidden [n, D] (a view into the graph's output)."""
        n = ids.shape[0]
        b = next(s for s in self.sizes if s >= n)
        if not self.graphs:
            self.capture()
        width = meta.block_tables.shape[1]
        if width > self.tables.shape[1]:
            raise ValueError(f"block table of {width} blocks exceeds the captured {self.tables.shape[1]}")
        self.ids[:n].copy_(ids)
        self.positions[:n].copy_(positions)
        self.slots[:n].copy_(meta.slot_mapping)
        self.slots[n:b].fill_(self.scratch_slot)
        self.tables[:n, :width].copy_(meta.block_tables)
        self.tables[:n, width:].zero_()
        self.tables[n:b].zero_()
        self.token_pos[:n].copy_(meta.token_pos)
        self.token_pos[n:b].zero_()
        self.graphs[b].replay()
        return self.outputs[b][:n]
