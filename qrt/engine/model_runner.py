"""ModelRunner: owns the paged KV cache and runs one forward over a scheduled batch.

The batch is a list of (sequence, num_new_tokens): decoding sequences bring one token,
prefilling ones a chunk of their prompt. Their tokens are packed into one [T] row (no
padding), each with its position and cache slot; logits are computed only for sequences
whose chunk reaches their last token (those that produce a token this step).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence as Seq

import torch
from torch import nn

from qrt.engine.attention import AttentionMetadata, build_metadata, select_attention, triton_paged_attention
from qrt.engine.models import build_model
from qrt.engine.sequence import Sequence


class ModelRunner:
    """hf_model: a Llama-family *ForCausalLM (fp or with qrt QuantLinears), already on its
    device. KV cache: num_layers x (k, v), each [num_blocks, page_size, num_kv_heads, head_dim]
    in the model's dtype.

    use_cuda_graph: on CUDA with the Triton attention, decode steps of up to max_num_seqs
    sequences replay CUDA graphs (qrt.engine.cuda_graphs); the cache then has one extra
    scratch block for the padding rows (index num_blocks, never handed out).

    lm_head: "model" (default) | "int8" | "bf16" | "auto" (qrt.runtime.lm_head: "auto" is an
    int8 copy of an fp32 head for a quantized model on the CPU)."""

    def __init__(self, hf_model: nn.Module, num_blocks: int, page_size: int, max_model_len: int,
                 attention: Callable | None = None, max_num_seqs: int = 32, use_cuda_graph: bool = True,
                 lm_head: str = "model"):
        self.model = build_model(hf_model, max_model_len, lm_head=lm_head)
        self.page_size, self.max_model_len = page_size, max_model_len
        m = self.model
        self.attention = attention or select_attention(m.device)
        graphs = use_cuda_graph and m.device.type == "cuda" and self.attention is triton_paged_attention
        shape = (num_blocks + int(graphs), page_size, m.num_kv_heads, m.head_dim)
        self.kv_caches = [(torch.zeros(shape, dtype=m.dtype, device=m.device),
                           torch.zeros(shape, dtype=m.dtype, device=m.device)) for _ in range(m.num_layers)]
        self.graphs = None
        if graphs:
            from qrt.engine.cuda_graphs import CUDAGraphRunner
            self.graphs = CUDAGraphRunner(m, self.kv_caches, max_num_seqs, -(-max_model_len // page_size),
                                          scratch_block=num_blocks)

    @property
    def device(self) -> torch.device:
        return self.model.device

    def prepare(self, batch: Seq[tuple[Sequence, int]]) -> tuple[torch.Tensor, torch.Tensor, AttentionMetadata, list[int]]:
        """-> input_ids [T], positions [T], attention metadata, rows of T that need logits."""
        ids, pos, slots, starts, ctx_lens, logit_rows = [], [], [], [0], [], []
        for seq, n in batch:
            c = seq.num_computed_tokens
            if n < 1 or c + n > len(seq) or len(seq.block_table) * self.page_size < c + n:
                raise ValueError(f"sequence {seq.seq_id}: cannot run {n} new tokens from {c} "
                                 f"(length {len(seq)}, {len(seq.block_table)} blocks)")
            if c + n > self.max_model_len:
                raise ValueError(f"sequence {seq.seq_id}: {c + n} tokens exceed max_model_len {self.max_model_len}")
            ids.extend(seq.token_ids[c:c + n])
            pos.extend(range(c, c + n))
            slots.extend(seq.block_table[p // self.page_size] * self.page_size + p % self.page_size
                         for p in range(c, c + n))
            starts.append(starts[-1] + n)
            ctx_lens.append(c + n)
            if c + n == len(seq):
                logit_rows.append(starts[-1] - 1)
        dev = self.device
        meta = build_metadata(slots, starts, ctx_lens, [s.block_table for s, _ in batch], dev)
        return torch.tensor(ids, device=dev), torch.tensor(pos, device=dev), meta, logit_rows

    @torch.inference_mode()
    def run(self, batch: Seq[tuple[Sequence, int]]) -> torch.Tensor:
        """Forward the batch, writing its K/V; -> float32 logits [R, vocab] for the R sequences
        whose chunk ends at their last token, in batch order. Does not advance the sequences."""
        ids, pos, meta, rows = self.prepare(batch)
        if self.graphs is not None and meta.all_decode and self.graphs.fits(len(batch)):
            hidden = self.graphs.run(ids, pos, meta)
        else:
            hidden = self.model(ids, pos, meta, self.kv_caches, self.attention)
        if not rows:
            return torch.empty(0, self.model.config.vocab_size, device=self.device)
        return self.model.compute_logits(hidden[rows]).float()
