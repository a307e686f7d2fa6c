"""The lm_head copies quantized models decode from (qrt.runtime.lm_head): every logit within
the float64 error bound of its rounding steps, and the same greedy token as the fp32 head on
the real SmolLM2."""
import pytest
import torch
from torch import nn

from qrt.runtime.lm_head import auto_head_mode, build_head

U = 2.0 ** -8  # unit roundoff of bfloat16 (8-bit significand)


def _head(vocab=700, hidden=96, seed=0):
    torch.manual_seed(seed)
    lin = nn.Linear(hidden, vocab, bias=False)
    with torch.no_grad():
        lin.weight.mul_(torch.rand(vocab, 1) * 4)  # rows of different magnitude: per-row scales matter
    return lin


def int8_bound(lin, x):
    """float64 bound of qrt.runtime.lm_head's int8 mode (see its docstring): the grid rounding
    plus, for each nibble half, x, the scale, the dequantized weight and the output rounded
    to bf16, and the fp32 sums."""
    w = lin.weight.double()
    s = w.abs().amax(dim=1) / 127
    q = torch.round(w / s[:, None])
    u8 = q + 128
    h, lo = torch.floor(u8 / 16), torch.remainder(u8, 16)
    x64 = x.double().abs()
    k = w.shape[1]
    halves = s * (x64 @ (16 * (h - 8)).abs().t() + x64 @ lo.t())
    return s / 2 * x64.sum(1, keepdim=True) + (4 * U + 8 * U * U + k * 2.0 ** -24) * halves


@pytest.mark.parametrize("m", [1, 3])
def test_int8_head_within_bound(m):
    lin = _head()
    x = torch.randn(m, lin.in_features) * 3
    got = build_head(lin, "int8")[0](x)
    ref = x.double() @ lin.weight.double().t()
    err = (got.double() - ref).abs()
    bound = int8_bound(lin, x)
    assert got.dtype == torch.float32 and got.shape == (m, lin.out_features)
    assert (err <= bound).all(), float((err / bound).max())
    assert (err > 0).any()  # it really is a different computation (the bound is what is checked)


def test_bf16_head_within_bound():
    lin = _head(seed=1)
    x = torch.randn(2, lin.in_features)
    got = build_head(lin, "bf16")[0](x)
    ref = x.double() @ lin.weight.double().t()
    bound = (3 * U + lin.in_features * 2.0 ** -24) * (x.double().abs() @ lin.weight.double().abs().t())
    assert ((got.double() - ref).abs() <= bound).all()


def test_modes_and_errors():
    lin = _head()
    assert build_head(lin, "model") == (lin, "model")
    with pytest.raises(ValueError, match="lm_head mode: expected one of"):
        build_head(lin, "int4")
    assert auto_head_mode(nn.Sequential(lin), lin) == "model"  # nothing quantized
    assert build_head(lin, "auto", nn.Sequential(lin))[1] == "model"


@pytest.mark.slow
def test_int8_head_same_greedy_tokens_on_smollm2():
    """The real SmolLM2 (tied 49152 x 576 head): W4A16 engine with the int8 head against the
    same engine with the fp32 head: logits within the bound, same argmax at every step."""
    import qrt
    from qrt import SamplingParams
    from qrt.engine.llm_engine import LLMEngine
    from qrt.engine.scheduler import SchedulerConfig
    from qrt.hub import load_fp_model
    from qrt.hub.embedded import smollm2_dir
    model, tok = load_fp_model(smollm2_dir(), dtype=torch.float32)
    qrt.quantize_model(model, "w4a16", progress=False)
    assert auto_head_mode(model, model.lm_head) == "int8"
    ids = tok("The capital of France is Paris. The capital of Germany is", return_tensors="pt").input_ids[0].tolist()
    cfg = SchedulerConfig(num_blocks=16, page_size=16, max_model_len=128)
    outs = [LLMEngine(model, cfg, lm_head=mode).generate([ids], SamplingParams(temperature=0, max_tokens=12,
                                                                                ignore_eos=True))[0]
            for mode in ("int8", "model")]
    assert outs[0] == outs[1]
    h = torch.randn(4, 576) * 2  # hidden rows of the final norm's magnitude
    lin = model.lm_head
    got, ref = build_head(lin, "int8")[0](h), h.double() @ lin.weight.double().t()
    assert ((got.double() - ref).abs() <= int8_bound(lin, h)).all()
