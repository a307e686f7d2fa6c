"""Random packed weights for the WxA16 kernel tests, and the float64 math they are judged by.

The float64 reference is built from the integers directly (per-column group lookup by
index, packing by qrt.numerics.packing, checked bit-exact against compressed-tensors), so
it shares no code with the twin's unpack/repeat_interleave path.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from qrt.numerics.packing import pack_int32

FP32_UNIT = 2.0 ** -24
UNIT_ROUNDOFF = {torch.float16: 2.0 ** -11, torch.bfloat16: 2.0 ** -8, torch.float32: 2.0 ** -24}


@dataclass
class PackedCase:
    q: torch.Tensor            # int8 [N, K]
    w_packed: torch.Tensor     # int32 [N, ceil(K*bits/32)]
    scales: torch.Tensor       # [N, n_groups]
    zeros: torch.Tensor | None  # int8 [N, n_groups]
    bits: int
    group_size: int

    def weight64(self) -> torch.Tensor:
        """float64 W [N, K] = (q - z) * s, group of column j = j // group_size."""
        g = torch.arange(self.q.shape[1]) // self.group_size
        w = self.q.double()
        if self.zeros is not None:
            w = w - self.zeros.double()[:, g]
        return w * self.scales.double()[:, g]

    def abs_weight64(self) -> torch.Tensor:
        """(|q| + |z|) * s: the magnitude a rounded zero or scale errs relative to."""
        g = torch.arange(self.q.shape[1]) // self.group_size
        w = self.q.double().abs()
        if self.zeros is not None:
            w = w + self.zeros.double().abs()[:, g]
        return w * self.scales.double()[:, g]


def make_case(n: int, k: int, bits: int, group_size: int, asym: bool,
              scale_dtype: torch.dtype = torch.float16) -> PackedCase:
    lo, hi = -(1 << (bits - 1)), 1 << (bits - 1)
    n_groups = -(-k // group_size)
    q = torch.randint(lo, hi, (n, k), dtype=torch.int8)
    # scales ~ what RTN gives for unit-variance weights (absmax / 2^(bits-1)), never zero
    scales = ((torch.rand(n, n_groups) + 0.5) * 3.0 / hi).to(scale_dtype)
    zeros = torch.randint(lo, hi, (n, n_groups), dtype=torch.int8) if asym else None
    return PackedCase(q, pack_int32(q, bits), scales, zeros, bits, group_size)


def reference64(x: torch.Tensor, case: PackedCase, bias: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(y64 [M, N], S [M, N]) with S = |x| @ |W|.T, the scale of every rounding error."""
    w = case.weight64()
    y = x.double() @ w.t()
    if bias is not None:
        y = y + bias.double()
    return y, x.double().abs() @ w.abs().t()


def offset_scale(x: torch.Tensor, case: PackedCase, base: float) -> torch.Tensor:
    """|x| @ ((base + 2^bits + |z|) * s).T: the magnitude of the fp32 sums of the GEMV kernel,
    which feeds the MMA base + u (u = q + 2^(bits-1) the stored value, exact in fp16/bf16)
    and takes (base + 2^(bits-1) + z) * sum(x) off after the dot."""
    g = torch.arange(case.q.shape[1]) // case.group_size
    mag = torch.full(case.q.shape, base + 2.0 ** case.bits, dtype=torch.float64)
    if case.zeros is not None:
        mag = mag + case.zeros.double().abs()[:, g]
    return x.double().abs() @ (mag * case.scales.double()[:, g]).t()


# the GEMV's magic float B per activation dtype; 8-bit values split into two nibbles: B + B_HI
GEMV_BASE = {torch.float16: 1024.0, torch.bfloat16: 128.0}
SPLIT_BASE = {torch.float16: 1024.0 + 16384.0, torch.bfloat16: 128.0 + 2048.0}


def gemv_offset_tol(case: PackedCase, x: torch.Tensor, split: bool = False) -> torch.Tensor:
    """The fp32 error bound of the GEMV's offset form, 3 n 2^-24 S_off (n <= group size terms
    per dot); 8-bit weights in bf16 always take the split form."""
    split = split or (x.dtype == torch.bfloat16 and case.bits == 8)
    base = SPLIT_BASE[x.dtype] if split else GEMV_BASE[x.dtype]
    return 3 * min(case.group_size, x.shape[-1]) * FP32_UNIT * offset_scale(x, case, base)


def assert_within(y: torch.Tensor, ref: torch.Tensor, tol: torch.Tensor, what: str) -> None:
    err = (y.double() - ref.double()).abs()
    bad = err > tol
    assert not bad.any(), (f"{what}: {int(bad.sum())} of {err.numel()} outside tolerance; "
                           f"worst err {err.max().item():.3g}, tol there {tol.flatten()[err.argmax()].item():.3g}")
