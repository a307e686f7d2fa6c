"""Batch-invariant packed attention vs float64 math, and bitwise invariance to batching."""
import itertools

import torch

from qrt.serve.attention import attend_packed

H, HKV, D = 6, 2, 16


def packed(seqs):
    """seqs: list of (q [H, L, D], k [HKV, S, D], v) -> packed tensors and cumulative lengths."""
    q = torch.cat([s[0] for s in seqs], 1)[None]
    k = torch.cat([s[1] for s in seqs], 1)[None]
    v = torch.cat([s[2] for s in seqs], 1)[None]
    cu_q = [0, *itertools.accumulate(s[0].shape[1] for s in seqs)]
    cu_k = [0, *itertools.accumulate(s[1].shape[1] for s in seqs)]
    return q, k, v, cu_q, cu_k


def reference(q, k, v, scale):
    """Dense float64 causal attention of one sequence whose L queries are its last tokens."""
    q, k, v = q.double(), k.double().repeat_interleave(H // HKV, 0), v.double().repeat_interleave(H // HKV, 0)
    L, S = q.shape[1], k.shape[1]
    s = (q @ k.transpose(-1, -2)) * scale
    visible = torch.arange(S)[None, :] <= (S - L) + torch.arange(L)[:, None]
    return (s.masked_fill(~visible, float("-inf")).softmax(-1) @ v).transpose(0, 1)  # [L, H, D]


def random_seq(q_len, kv_len):
    return torch.randn(H, q_len, D), torch.randn(HKV, kv_len, D), torch.randn(HKV, kv_len, D)


def test_matches_float64_reference(rng_seed):
    seqs = [random_seq(1, 9), random_seq(5, 5), random_seq(3, 12), random_seq(1, 1)]  # decode, prefill, chunk
    q, k, v, cu_q, cu_k = packed(seqs)
    out = attend_packed(q, k, v, cu_q, cu_k, D ** -0.5)
    assert out.shape == (q.shape[2], H, D)
    ref = torch.cat([reference(*s, D ** -0.5) for s in seqs])
    # float64 math rounded once to float32: within 1 ulp-ish of the exact value
    torch.testing.assert_close(out.double(), ref, rtol=1e-6, atol=1e-7)


def test_bitwise_invariant_to_batch_and_padding(rng_seed):
    target = random_seq(4, 30)
    alone = attend_packed(*packed([target]), D ** -0.5)
    others = [random_seq(1, 70), random_seq(17, 17), random_seq(2, 5)]
    q, k, v, cu_q, cu_k = packed([others[0], target, others[1], others[2]])
    cu_q, cu_k = cu_q + [cu_q[-1]] * 3, cu_k + [cu_k[-1]] * 3  # zero-length padding sequences at the end
    batched = attend_packed(q, k, v, cu_q, cu_k, D ** -0.5)
    assert torch.equal(batched[1:5], alone)


def test_chunked_prefill_equals_whole_prefill(rng_seed):
    q, k, v = random_seq(12, 12)
    whole = attend_packed(*packed([(q, k, v)]), D ** -0.5)
    first = attend_packed(*packed([(q[:, :7], k[:, :7], v[:, :7])]), D ** -0.5)
    second = attend_packed(*packed([(q[:, 7:], k, v)]), D ** -0.5)
    assert torch.equal(torch.cat([first, second]), whole)
