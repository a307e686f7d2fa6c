"""Block configurations of the WxA16 dequant-matmul, as one table keyed by M.

`DEFAULT_A16_TABLE` holds the built-in choices. A GPU can override it with a tuned table in
a JSON file next to the kernels, `tuned-<device-slug>.json` (e.g. `tuned-nvidia-h100-80gb-hbm3.json`),
of the form {"a16": [{"kernel": "decode", "max_m": 1, "block_n": 64, ...}, ...]}; other
sections (e.g. "a8") are left to their own readers. `dispatch.py` picks the row.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path

A16_KERNELS = ("decode", "tile", "dequant_torch")
_TUNED_DIR = Path(__file__).resolve().parent


def _pow2(v: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0 and v & (v - 1) == 0


@dataclass(frozen=True)
class A16Config:
    """One row of the table: the kernel and blocks used for every M <= max_m.

    kernel: "decode" (weights as the MMA's A operand: BLOCK_N weight rows x BLOCK_M tokens
      per program over all of K, one launch, never split-K; at M <= 16 a GEMV with tokens
      padded to 8 or 16 MMA columns),
      "tile" (tensor-core tile GEMM, any group size) or "dequant_torch" (dequantize W once, then torch's
      matmul: cuBLAS past the crossover M). max_m None: every larger M (the last row).
    split_k: K slices reduced with fp32 atomics (tile kernel only; decode is one slice);
      None lets the dispatcher choose by shape.
    group_m: tile programs grouped along M so neighbours share weight tiles in L2.
    """

    kernel: str
    max_m: int | None
    block_m: int = 16
    block_n: int = 64
    block_k: int = 64
    split_k: int | None = None
    group_m: int = 8
    num_warps: int = 4
    num_stages: int = 2

    def __post_init__(self):
        def bad(field: str, expected: str):
            raise ValueError(f"A16Config.{field}: expected {expected}, found {getattr(self, field)!r}")
        if self.kernel not in A16_KERNELS:
            bad("kernel", f"one of {A16_KERNELS}")
        if self.max_m is not None and not (isinstance(self.max_m, int) and self.max_m >= 1):
            bad("max_m", "a positive int or None")
        for f in ("block_m", "block_n", "block_k", "num_warps"):
            if not _pow2(getattr(self, f)):
                bad(f, "a power of two")
        if self.kernel == "tile" and min(self.block_m, self.block_n, self.block_k) < 16:
            bad("block_m", "blocks >= 16 for the tile kernel (tl.dot's minimum)")
        if self.kernel == "decode" and (self.block_m < 8 or self.block_n < 16):
            bad("block_m", "block_m >= 8 (the MMA's 8 columns) and block_n >= 16 for the decode kernel")
        if self.block_k < 16:
            bad("block_k", ">= 16 (one int32 word holds up to 16 values)")
        if self.split_k is not None and not (isinstance(self.split_k, int) and self.split_k >= 1):
            bad("split_k", "a positive int or None")
        if self.kernel == "decode" and self.split_k not in (None, 1):
            bad("split_k", "1 or None for the decode kernel (one launch, no atomics)")
        if not (isinstance(self.group_m, int) and self.group_m >= 1):
            bad("group_m", "a positive int")
        if not (isinstance(self.num_stages, int) and self.num_stages >= 1):
            bad("num_stages", "a positive int")

    def replace(self, **changes) -> "A16Config":
        return dataclasses.replace(self, **changes)


# Untuned defaults (no GPU was available to tune them; chosen on the static sm_90 report,
# bench/gpu_static.py): the "decode" kernel (weights as the MMA's A operand) for every M up
# to 1024 -- tokens padded to the MMA's 8 or 16 columns up to M=16 (the padding costs no
# bytes; 32 weight rows per one-warp program gave the fewest instructions per weight byte;
# block_k 256 holds two g128 groups, one dot and scale each),
# token tiles above, blocks sized for >= ~1 wave on 132 SMs without split-K. It issues half
# the instructions of the tile kernel at every M (docs/kernels.md); the tile kernel stays
# for groups that no BLOCK_K >= 16 divides. Past M=1024: dequantize once + cuBLAS, where the
# GEMM is compute-bound and the one-off dequantization is amortized.
DEFAULT_A16_TABLE: tuple[A16Config, ...] = (
    A16Config("decode", max_m=8, block_m=8, block_n=32, block_k=256, num_warps=1, num_stages=2),
    A16Config("decode", max_m=16, block_m=16, block_n=32, block_k=256, num_warps=1, num_stages=2),
    A16Config("decode", max_m=32, block_m=32, block_n=32, block_k=128, num_warps=2, num_stages=3),
    A16Config("decode", max_m=64, block_m=64, block_n=32, block_k=64, num_warps=2, num_stages=3),
    A16Config("decode", max_m=256, block_m=64, block_n=64, block_k=128, num_warps=4, num_stages=3),
    A16Config("decode", max_m=1024, block_m=128, block_n=128, block_k=64, num_warps=8, num_stages=3),
    A16Config("dequant_torch", max_m=None),
)


def validate_table(rows: tuple[A16Config, ...]) -> tuple[A16Config, ...]:
    """Rows in increasing max_m, the last one unbounded (max_m None)."""
    if not rows or rows[-1].max_m is not None:
        raise ValueError("A16 table: expected the last row to have max_m None (every larger M), "
                         f"found {rows[-1].max_m if rows else 'no rows'}")
    bounds = [r.max_m for r in rows[:-1]]
    if any(b is None for b in bounds) or bounds != sorted(set(bounds)):
        raise ValueError(f"A16 table: expected strictly increasing max_m, found {bounds}")
    return rows


def load_a16_table(path: str | Path) -> tuple[A16Config, ...]:
    """Read the "a16" section of a tuned-config JSON file into a validated table."""
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict) or not isinstance(data.get("a16"), list):
        raise ValueError(f"{path}: expected an object with an 'a16' list of configs")
    return validate_table(tuple(A16Config(**row) for row in data["a16"]))


def device_slug(device_name: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3' (the tuned file's name part)."""
    return re.sub(r"[^a-z0-9]+", "-", device_name.lower()).strip("-")


@functools.lru_cache(maxsize=None)
def a16_table_for(device_name: str | None) -> tuple[A16Config, ...]:
    """The tuned table of this GPU if its JSON exists next to the kernels, else the default."""
    if device_name:
        path = _TUNED_DIR / f"tuned-{device_slug(device_name)}.json"
        if path.is_file():
            return load_a16_table(path)
    return validate_table(DEFAULT_A16_TABLE)
