#!/usr/bin/env python3
"""Last lines of bench/gpu_suite.sh: pytest counts, benchmark targets, decode tokens/s.

    python bench/suite_summary.py OUTDIR
"""
from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import verdict_line  # noqa: E402


def pytest_counts(path: Path) -> str:
    if not path.exists():
        return f"{path.name}: missing (stage killed or not run)"
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    tot = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    failed = [f"{c.get('classname')}::{c.get('name')}" for s in suites for c in s.iter("testcase")
              if c.find("failure") is not None or c.find("error") is not None]
    return f"{path.name}: {tot}" + "".join(f"\n  FAILED {f}" for f in failed[:30])


def main(outdir: str) -> None:
    out = Path(outdir)
    print("==== summary ====")
    for name in ("pytest-junit.xml", "pytest-slow-junit.xml"):
        print(pytest_counts(out / name))
    for path in sorted(out.glob("kernels_*.json")) + sorted(out.glob("decode_*.json")):
        rep = json.loads(path.read_text())
        m = rep["machine"]
        print(f"{path.name}: {m.get('device_name')} driver {m.get('driver')} torch {m['torch']} "
              f"triton {m.get('triton')} wall {rep.get('wall_s')}s interrupted={rep.get('interrupted')}")
        if "copy_bandwidth_GBps" in rep:
            print(f"  copy bandwidth {rep['copy_bandwidth_GBps']:.0f} GB/s; errors {len(rep['errors'])}; "
                  f"skipped {len(rep.get('skipped_NKM_budget', []))} (N,K,M) points")
            for e in rep["errors"][:8]:
                print(f"  error: {e}")
        for r in rep["results"] if "compile_checks" in rep else []:
            line = (f"{r['tokens_per_s']:.1f} tok/s x{r.get('speedup_vs_dense', float('nan')):.2f} {r['mode']}"
                    if "tokens_per_s" in r else r.get("error"))
            print(f"  {r['scheme']:<11} b={r.get('batch', '')}: {line}")
        for c in rep.get("compile_checks", []):
            print(f"  compile fullgraph {c['scheme']}: {'ok' if c['fullgraph_ok'] else c.get('error')}")
        for t in rep.get("targets", []):
            print(f"  target {verdict_line(t)}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".")
