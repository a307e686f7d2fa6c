"""Small pieces every benchmark CLI shares: thread setup, target verdicts, JSON out."""
from __future__ import annotations

import json
from pathlib import Path

import torch

VERDICTS = {True: "MET", False: "MISSED", None: "not measured"}


def setup_threads(quick: bool, threads: int | None) -> None:
    """--quick runs on busy shared CI cores: one thread avoids OpenMP stragglers (a
    descheduled worker stalls the whole op). --threads overrides."""
    if quick:
        torch.set_num_threads(1)
    if threads:
        torch.set_num_threads(threads)


def verdict_line(t: dict) -> str:
    """'name: value (threshold x) MET|MISSED|not measured' for one target dict."""
    return f"{t['name']}: {t['value']} (threshold {t['threshold']}) {VERDICTS[t['met']]}"


def write_report(path: Path, report: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1, default=str))
    return path
