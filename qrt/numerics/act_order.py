"""Act-order (GPTQ desc_act / compressed-tensors actorder="group") as a one-time column sort.

A checkpoint with weight_g_idx keeps columns in their original order, with column j in group
g_idx[j] (non-monotonic). Sorting the columns by group (stably) puts group g at columns
[g*G, (g+1)*G) whenever every group holds exactly G columns (the last one K - (n-1)*G), which
is what GPTQ writes. Then the kernels see an ordinary group-wise weight, and at run time
y = x[:, perm] @ W[:, perm].T: a gather of x's columns per call, never inside a kernel loop.
"""
from __future__ import annotations

import torch


def expected_group_counts(in_features: int, group_size: int) -> torch.Tensor:
    """int64 [n_groups]: G columns per group, the ragged last group K - (n-1)*G."""
    n_groups = -(-in_features // group_size)
    counts = torch.full((n_groups,), group_size, dtype=torch.int64)
    counts[-1] = in_features - (n_groups - 1) * group_size
    return counts


def group_order(g_idx: torch.Tensor | None, in_features: int,
                group_size: int) -> tuple[torch.Tensor | None, bool]:
    """(col_perm int64 [K] or None, regular) for a layer's g_idx int [K] (K = in_features;
    group_size: columns per scale, K for per-channel).

    col_perm None: no g_idx, or g_idx already in order. regular False: some group does not
    hold its G columns, so no column order makes the groups contiguous (the caller falls
    back to a dense weight). On the meta device only shapes exist: (arange-like perm, True).
    """
    if g_idx is None:
        return None, True
    if g_idx.device.type == "meta":
        return torch.empty(in_features, dtype=torch.int64, device="meta"), True
    n_groups = -(-in_features // group_size)
    g = g_idx.long()
    if g.numel() and (g.min() < 0 or g.max() >= n_groups):
        raise ValueError(f"weight_g_idx: expected group indices in [0, {n_groups}), "
                         f"found [{int(g.min())}, {int(g.max())}]")
    counts = torch.bincount(g.cpu(), minlength=n_groups)
    if not torch.equal(counts, expected_group_counts(in_features, group_size)):
        return None, False
    perm = torch.argsort(g, stable=True)
    if torch.equal(perm, torch.arange(in_features, device=perm.device)):
        return None, True
    return perm, True
