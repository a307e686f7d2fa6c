"""tests/formats/peer_checkpoints.py: GPTQ/AWQ checkpoint writers (AutoGPTQ's own layout too)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "formats"))
