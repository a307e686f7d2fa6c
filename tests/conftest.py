"""Test setup. Without a GPU the Triton kernels run under the interpreter, which must be
switched on before triton is first imported."""
import os
import sys
from pathlib import Path

# The checkout root must not be on sys.path (`python -m pytest` puts it there): its
# kernels/ folder would shadow Hugging Face's `kernels` package. qrt and qrt_kernels are
# imported from the installed (editable) distribution instead.
_ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _ROOT]

import torch  # noqa: E402

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402


@pytest.fixture
def rng_seed():
    """Fresh random inputs each run (seed printed on failure), per the test standards."""
    seed = int.from_bytes(os.urandom(4), "little")
    torch.manual_seed(seed)
    return seed
