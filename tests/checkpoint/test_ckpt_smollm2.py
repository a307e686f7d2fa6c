"""The real embedded model: SmolLM2-135M-Instruct (hidden 576, tied embeddings) through
quantize -> save -> load_quantized, with the size targets of the checkpoint issue."""
import pytest
import torch

from qrt import load_quantized, quantize_model, save_quantized
from qrt.checkpoint.info import checkpoint_info
from qrt.hub.embedded import smollm2_dir
from qrt.hub.resolve import load_fp_model
from qrt.runtime.linear import QuantLinear


@pytest.mark.slow
def test_smollm2_w4a16_roundtrip_and_sizes(tmp_path):
    model, tok = load_fp_model(smollm2_dir())
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    quantize_model(model, "w4a16", progress=False)
    rec = model.qrt_quantization
    # 576-wide inputs (q/k/v/o/gate/up: 6 x 30 layers) get g64; down_proj (1536) keeps g128
    assert len(rec.adjusted) == 180 and set(rec.adjusted.values()) == {(128, 64)}
    info = save_quantized(model, tmp_path / "w4", tokenizer=tok)
    fp16_bytes = checkpoint_info(smollm2_dir()).fp16_bytes
    assert info.total_bytes <= 0.45 * fp16_bytes, info.total_bytes / fp16_bytes

    loaded = load_quantized(tmp_path / "w4", device="cpu", progress=False)
    assert sum(isinstance(m, QuantLinear) for m in loaded.modules()) == 210
    assert loaded.lm_head.weight is loaded.model.embed_tokens.weight  # re-tied, fp16 on disk
    with torch.no_grad():
        for p in model.parameters():  # what the fp16 checkpoint holds for unquantized tensors
            p.copy_(p.half().float())
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits, rtol=0, atol=0)
        top = loaded(ids).logits[0, -1].argmax()
    assert tok.decode(top).strip() == "Paris"

    quantize_model(model, "w4a16", progress=False, quantize_embedding=True)  # only the embedding is left
    small = save_quantized(model, tmp_path / "w4e", tokenizer=tok)
    assert small.total_bytes <= 0.33 * fp16_bytes, small.total_bytes / fp16_bytes
