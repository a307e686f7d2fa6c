"""Where models come from: a local dir, or a repo id found in the local Hugging Face cache
(no network; qrt never downloads)."""
import shutil

import huggingface_hub.constants
import pytest
import torch

from qrt import load_quantized, quantize_model, save_quantized
from qrt.hub.resolve import resolve_model_dir


def test_repo_id_from_local_hf_cache(make_model, ids_for, run_logits, tmp_path, monkeypatch):
    model = make_model("llama")
    quantize_model(model, "w4a16", progress=False)
    save_quantized(model, tmp_path / "q", dtype=torch.float32)
    # the hub cache layout: models--{org}--{name}/refs/main -> snapshots/{commit}/...
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--someorg--tiny-w4a16"
    shutil.copytree(tmp_path / "q", repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # and prove no network is needed
    assert resolve_model_dir("someorg/tiny-w4a16") == repo / "snapshots" / commit
    loaded = load_quantized("someorg/tiny-w4a16", device="cpu", progress=False)
    ids = ids_for(model)
    torch.testing.assert_close(run_logits(loaded, ids), run_logits(model, ids), rtol=0, atol=0)
    with pytest.raises(FileNotFoundError, match="'someorg/absent' is neither a local directory nor a repo id "
                                                "in the local Hugging Face cache"):
        resolve_model_dir("someorg/absent")


def test_dir_without_config(tmp_path):
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        resolve_model_dir(tmp_path)
