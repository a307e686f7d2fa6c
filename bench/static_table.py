"""Markdown tables of the static sm_90 report (bench/gpu_static.py)."""
from __future__ import annotations


def _loads(loop: dict | None) -> str:
    if not loop:
        return "-"
    return " ".join(f"{op}x{n}" for op, n in sorted(loop["global_loads"].items()))


def _main_launch(r: dict) -> dict:
    """The launch with the most issued instructions (the matmul, not the act quant)."""
    return max(r["launches"], key=lambda lp: lp.get("warp_instructions", 0))


def decode_table(report: dict, schemes=("w4a16", "w8a16"), m: int = 1) -> str:
    """The headline: W4A16 / W8A16 at M=1, per shape and dtype."""
    lines = ["| scheme | dtype | N x K | t_mem us | t_issue us | ratio | launches | loop instr | BAR | loads |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        if r["scheme"] in schemes and r["M"] == m and r.get("ratio") is not None:
            lp = _main_launch(r)
            loop = lp.get("loop") or {}
            lines.append(f"| {r['scheme']} | {r['dtype']} | {r['N']}x{r['K']} | {r['t_mem_us']:.2f} | "
                         f"{r['t_issue_us']:.2f} | {r['ratio']:.2f} | {r['kernel_launches']} | "
                         f"{loop.get('instructions', '-')} | {loop.get('barriers', '-')} | {_loads(loop)} |")
    return "\n".join(lines)


def full_table(report: dict) -> str:
    lines = ["| scheme | dtype | N x K | M | ok | launches | kernel | grid | waves | warps | smem KB "
             "| sm89 | regs | spill | loop instr | BAR | wgmma waits | loads | t_issue us | t_mem us | ratio |",
             "|" + "---|" * 21]
    for r in report["rows"]:
        if not r.get("launches"):
            lines.append(f"| {r['scheme']} | {r['dtype']} | {r['N']}x{r['K']} | {r['M']} | ERROR: "
                         f"{r.get('error', '')[:80]} |" + " |" * 16)
            continue
        lp = _main_launch(r)
        if not lp["compiled"]:
            lines.append(f"| {r['scheme']} | {r['dtype']} | {r['N']}x{r['K']} | {r['M']} | no | | {lp['kernel']} "
                         f"| ERROR: {lp['error'][:80].replace('|', '/')} |" + " |" * 13)
            continue
        loop = lp.get("loop") or {}
        lines.append(
            f"| {r['scheme']} | {r['dtype']} | {r['N']}x{r['K']} | {r['M']} | {'yes' if r['ok'] else 'no'} | "
            f"{r['kernel_launches']} | {lp['kernel']} | {'x'.join(map(str, lp['grid']))} | {lp['waves_132']:.2f} | "
            f"{lp['num_warps']} | {lp['shared_bytes'] / 1024:.1f} | {'ok' if lp['smem_ok_sm89'] else 'OVER'} | "
            f"{lp['regs']} | {'SPILL' if lp['spills'] else '-'} | {loop.get('instructions', '-')} | "
            f"{loop.get('barriers', '-')} | {loop.get('wgmma_waits', '-')} | {_loads(loop)} | "
            f"{r['t_issue_us']:.2f} | {r['t_mem_us']:.2f} | {r['ratio']:.2f} |")
    return "\n".join(lines)


def markdown(report: dict) -> str:
    c = report["constants"]
    return "\n\n".join([
        "# Static sm_90 report (no GPU)",
        f"{report['hardware']}. Triton {report['triton']}, torch {report['torch']}. "
        f"t_issue = warp-instructions / ({c['sms']} SMs x {c['schedulers_per_sm']} x {c['sm_clock_hz'] / 1e9:.2f} GHz); "
        f"t_mem = bytes / {c['copy_bytes_per_s'] / 1e12:.1f} TB/s; ratio = t_issue / t_mem "
        f"(target at M=1 for W4A16/W8A16: <= {report['decode_ratio_target']}). "
        f"{report['specializations_compiled']} specializations compiled in {report['wall_s']} s. "
        "launches = Triton launches + torch kernels around them (fills, casts, matmuls).",
        "## Decode (M=1)", decode_table(report),
        "## Every row (main launch of each linear)", full_table(report)])
