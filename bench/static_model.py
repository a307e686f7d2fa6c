"""The static cost model of one linear y = x [M, K] @ W.T on an H200, from compiled SASS.

  t_issue = warp-instructions / (SMs x 4 schedulers x clock)   (one issue per scheduler-cycle)
  t_mem   = bytes / copy bandwidth                             (weights, x, y each moved once)

A kernel whose t_issue is not well under t_mem is instruction-bound on any memory system.
The hot loop's warp-instructions are multiplied by its trip count per program (the loop
structure of each kernel, below), plus the instructions outside the loop once per warp.
"""
from __future__ import annotations

import math

# H200 SXM, the device tool's machine (/work/.library/device/H200.md, KINDS.md)
H200_SMS = 132
H200_SCHEDULERS_PER_SM = 4
H200_SM_CLOCK_HZ = 1.98e9          # read by nvidia-smi just after a matmul burst (KINDS.md)
H200_COPY_BYTES_PER_S = 4.3e12      # measured device-to-device copy, bytes read + written
SMEM_LIMIT_SM90 = 227 * 1024        # max dynamic shared memory per block (opt-in), sm_90
SMEM_LIMIT_SM89 = 99 * 1024         # sm_89 (L4 / L40S)
WARP_ISSUE_PER_S = H200_SMS * H200_SCHEDULERS_PER_SM * H200_SM_CLOCK_HZ


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def named_args(launch) -> dict:
    """Kernel argument name -> value (positional args and constexpr meta together)."""
    return {**dict(zip(launch.kernel.arg_names, launch.args)), **launch.meta}


def loop_trips(kernel_name: str, a: dict) -> int:
    """How often one program runs its hot loop, from the kernel's loop structure."""
    if kernel_name in ("gemv_a16_kernel", "dequant_matmul_tile_kernel", "dequant_matmul_decode_kernel"):
        return _cdiv(a["K"], a["BLOCK_K"] * a.get("SPLIT_K", 1))
    if kernel_name == "a8_matmul_kernel" or kernel_name == "_a8_matmul_kernel":
        return _cdiv(a["K"], a["BLOCK_K"] * a.get("SPLIT_K", 1))
    if kernel_name == "_a8_gemv_kernel":   # per token: the K loop (the row-stats pass is extra)
        return a["M"] * _cdiv(a["K"], a["BLOCK_K"])
    if "BLOCK_K" in a and "K" in a:
        return _cdiv(a["K"], a["BLOCK_K"])
    return 0


def warp_instructions(launch, compiled, sass_stats: dict) -> tuple[int, int]:
    """(programs, total warp-instructions issued by the launch)."""
    programs = math.prod(launch.grid)
    loop = sass_stats["loop"]
    trips = loop_trips(compiled.name, named_args(launch)) if loop else 0
    per_warp = sass_stats["outside_loop_instructions"] + (loop.instructions * trips if loop else 0)
    return programs, programs * compiled.num_warps * per_warp


def waves(programs: int, blocks_per_sm: int = 1) -> float:
    """Grid size over the programs the GPU runs at once (one block per SM counted)."""
    return programs / (H200_SMS * blocks_per_sm)


def t_issue_s(warp_instr: int) -> float:
    return warp_instr / WARP_ISSUE_PER_S


def t_mem_s(nbytes: int) -> float:
    return nbytes / H200_COPY_BYTES_PER_S
