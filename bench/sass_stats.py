"""Read SASS text (cuobjdump -sass): instructions, the hot loop, barriers, load widths.

The hot loop is the innermost loop (a backward branch with no other backward branch
inside) holding the most instructions: in qrt's kernels, the K loop.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

_LINE = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;")


@dataclass
class LoopStats:
    """Counts for one pass through a loop body (warp-instructions: one per warp)."""

    instructions: int = 0
    barriers: int = 0                     # BAR.SYNC / BAR.RED / BAR.ARV
    global_loads: dict = field(default_factory=dict)   # opcode with width -> count
    shared_loads: int = 0
    local_accesses: int = 0               # LDL/STL: spills
    mma: int = 0                          # HMMA / HGMMA / IMMA / IGMMA
    wgmma_waits: int = 0                  # WARPGROUP.DEPBAR (wgmma.wait_group)
    top_opcodes: dict = field(default_factory=dict)


def instructions(sass: str) -> list[tuple[int, str]]:
    """[(address, instruction text without predicate guard)] in program order."""
    out = []
    for m in _LINE.finditer(sass):
        text = m.group(2).strip()
        if text.startswith("@"):
            text = text.split(None, 1)[1] if " " in text else text
        out.append((int(m.group(1), 16), text))
    return out


def opcode(text: str) -> str:
    return text.split()[0] if text else ""


def _loops(ins: list[tuple[int, str]]) -> list[tuple[int, int]]:
    """(start, end) address ranges closed by a backward branch."""
    loops = []
    for addr, text in ins:
        if opcode(text).startswith("BRA"):
            targets = re.findall(r"0x([0-9a-f]+)", text)
            if targets and int(targets[-1], 16) <= addr:
                loops.append((int(targets[-1], 16), addr))
    return loops


def hot_loop(ins: list[tuple[int, str]]) -> tuple[int, int] | None:
    loops = _loops(ins)
    innermost = [lp for lp in loops if not any(o != lp and lp[0] <= o[0] and o[1] <= lp[1] for o in loops)]
    if not innermost:
        return None
    return max(innermost, key=lambda lp: sum(1 for a, _ in ins if lp[0] <= a <= lp[1]))


def stats(body: list[str]) -> LoopStats:
    ops = [opcode(t) for t in body]
    return LoopStats(
        instructions=len(ops),
        barriers=sum(o.startswith("BAR") for o in ops),
        global_loads=dict(Counter(o for o in ops if o.startswith(("LDG", "LDGSTS", "UBLKCP", "UTMALDG")))),
        shared_loads=sum(o.startswith(("LDS", "LDSM")) for o in ops),
        local_accesses=sum(o.startswith(("LDL", "STL")) for o in ops),
        mma=sum(o.startswith(("HMMA", "HGMMA", "IMMA", "IGMMA")) for o in ops),
        wgmma_waits=sum(o.startswith("WARPGROUP.DEPBAR") for o in ops),
        top_opcodes=dict(Counter(o.split(".")[0] for o in ops).most_common(10)),
    )


def analyse(sass: str) -> dict:
    """{'total': LoopStats of the whole kernel, 'loop': LoopStats of the hot loop or None,
    'outside_loop_instructions': count outside the hot loop}."""
    ins = instructions(sass)
    lp = hot_loop(ins)
    loop_body = [t for a, t in ins if lp and lp[0] <= a <= lp[1]]
    return {"total": stats([t for _, t in ins]), "loop": stats(loop_body) if lp else None,
            "outside_loop_instructions": len(ins) - len(loop_body)}
