"""What a benchmark ran on: device, driver, library versions, CPU model, git commit.

Every result file carries this block, so a number is never separated from its hardware.
"""
from __future__ import annotations

import os
import platform
import re
import subprocess
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def _run(cmd: list[str]) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20, cwd=ROOT)
        return out.stdout.strip() if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def cpu_model() -> str:
    """`model name` from /proc/cpuinfo (what lscpu prints too), else platform.processor()."""
    try:
        text = Path("/proc/cpuinfo").read_text()
        m = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
        if m:
            return m.group(1).strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(mod: str) -> str | None:
    try:
        return __import__(mod).__version__
    except Exception:  # a missing optional library is recorded as None, not an error
        return None


def machine_info(device: torch.device) -> dict:
    """A JSON-ready description of the machine and software the benchmark ran on."""
    info = {
        "device_type": device.type,
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "triton": _version("triton"),
        "transformers": _version("transformers"),
        "git_commit": _run(["git", "rev-parse", "--short", "HEAD"]),
        "os_kernel": platform.release(),
        "load_average_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        info.update({
            "device_name": p.name,
            "sm_count": p.multi_processor_count,
            "memory_GiB": round(p.total_memory / 2**30, 1),
            "l2_cache_MB": round(getattr(p, "L2_cache_size", 0) / 1e6, 1),
            "compute_capability": f"{p.major}.{p.minor}",
            "cuda_runtime": torch.version.cuda,
            "driver": _run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]),
        })
    else:
        info["device_name"] = info["cpu_model"]
    return info


def device_tag(info: dict) -> str:
    """Short file-name tag: 'cpu', or the GPU name slugged ('nvidia-h100-80gb-hbm3')."""
    if info["device_type"] != "cuda":
        return "cpu"
    return re.sub(r"[^a-z0-9]+", "-", info["device_name"].lower()).strip("-")
