"""llmcompressor-made checkpoints, built once per test session in a subprocess.

llmcompressor pins its own transformers and compressed-tensors, so it lives in a separate
environment: set QRT_LLMCOMPRESSOR_PYTHON to that environment's python (`bash scripts/setup.sh
--llmcompressor` creates .venv-llmc through constraints-llmc.txt; scripts/test.sh sets the variable).
Without it the current interpreter is used if it can import llmcompressor; otherwise the
tests that need the checkpoints fail, saying so.
"""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

# tests/formats/peer_checkpoints.py: GPTQ/AWQ checkpoint writers, dequantize_in_place
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "formats"))

SCRIPT = Path(__file__).with_name("make_llmcompressor_ckpt.py")
ENV_VAR = "QRT_LLMCOMPRESSOR_PYTHON"


def llmcompressor_python() -> str:
    configured = os.environ.get(ENV_VAR)
    if configured:
        if not Path(configured).exists():
            pytest.fail(f"{ENV_VAR}={configured!r} does not exist")
        return configured
    if importlib.util.find_spec("llmcompressor") is not None:
        return sys.executable
    pytest.fail(f"llmcompressor is not installed: these interop tests need it in a separate environment "
                f"(python -m venv --system-site-packages V; V/bin/pip install llmcompressor==0.14.0.1) "
                f"named by {ENV_VAR}=V/bin/python")


@pytest.fixture(scope="session")
def llmcompressor_ckpts(tmp_path_factory) -> Path:
    """Directory written by make_llmcompressor_ckpt.py (all schemes)."""
    python = llmcompressor_python()
    out = tmp_path_factory.mktemp("llmcompressor")
    seed = int.from_bytes(os.urandom(4), "little") >> 1  # fresh model and inputs each session
    env = dict(os.environ, PYTHONPATH="", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run([python, str(SCRIPT), str(out), "--seed", str(seed)], capture_output=True, text=True, env=env,
                          timeout=900)
    if proc.returncode != 0:
        pytest.fail(f"{SCRIPT.name} --seed {seed} failed ({proc.returncode}) under {python}:\n{proc.stderr[-4000:]}")
    print(f"llmcompressor checkpoints: {out} (seed {seed})")
    return out
