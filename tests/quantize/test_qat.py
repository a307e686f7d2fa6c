"""QAT: prepare -> train -> convert on a tiny Llama; converted QuantLinears reproduce the
fake-quantized model."""
import pytest
import torch
from transformers import AutoModelForCausalLM

from qrt.numerics.quant import compute_qparams, expand_groups
from qrt.quantize import qat
from qrt.runtime.linear import QuantLinear, use_backend
from qrt.schemes import resolve_scheme


@pytest.mark.parametrize("scheme", ["w4a16-g32", "w4a8-g32", "w8a8"])
def test_train_then_convert_keeps_the_fake_quantized_numerics(tiny_lm_dir, rng_seed, scheme):
    model = AutoModelForCausalLM.from_pretrained(tiny_lm_dir, dtype=torch.float32)
    qat.prepare(model, scheme)
    fakes = [m for m in model.modules() if isinstance(m, qat.FakeQuantLinear)]
    assert len(fakes) == 14  # every block Linear; the tied lm_head stays with the embedding
    ids = torch.randint(0, 256, (4, 32))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        loss = model(ids, labels=ids).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    # memorizing one batch: 8 Adam steps cut the loss by far more than noise (measured ~30%)
    assert losses[-1] < 0.9 * losses[0], f"seed {rng_seed}: losses {losses}"
    model.eval()
    captured = {}  # each fake-quantized layer's input and output on the same forward
    hooks = [m.register_forward_hook(lambda mod, a, out, n=n: captured.__setitem__(n, (a[0], out)))
             for n, m in model.named_modules() if isinstance(m, qat.FakeQuantLinear)]
    with torch.no_grad():
        fake_w = {n: qat.fake_quantize_weight(m.weight, m.scheme) for n, m in model.named_modules()
                  if isinstance(m, qat.FakeQuantLinear)}
        ref = model(ids).logits
        for h in hooks:
            h.remove()
        qat.convert(model)
        # the dense backend computes in fp32 like the fake-quantized model (the default CPU
        # packed kernels round to bf16: that path is checked against its twin elsewhere)
        out = use_backend(model, "dense")(ids).logits
        for n, w in fake_w.items():
            layer = model.get_submodule(n)
            assert isinstance(layer, QuantLinear)
            assert torch.equal(layer.dequantize_weight(torch.float32), w), n  # identical integers and qparams
            # per layer, on the very same input: same weights, same activation integers (both
            # use the per-token quantizer's twin); the only freedom left is the fp32
            # accumulation order of 64-160 term dot products (~1e-6 relative), far below 1e-4
            x, y_fake = captured[n]
            torch.testing.assert_close(layer(x), y_fake, rtol=1e-4, atol=1e-4, msg=n)
    if resolve_scheme(scheme).activations is None:
        # weight-only: nothing rounds activations, so the whole model agrees just as tightly
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    else:
        # int8 activations: a ~1e-6 difference in a later layer's input can flip a value on
        # a rounding tie by one int8 step, and the flip propagates; end to end we only ask
        # that such flips stay rare: measured <= 1.5% of the logit range over repeated seeds
        err = (out - ref).abs().max() / ref.abs().max()
        assert err < 0.05, f"end-to-end difference {err:.4f} of the logit range"
    assert model.qrt_quantization.method == "qat"


def test_straight_through_estimator_masks_clamped_values():
    scheme = resolve_scheme("w4a16-g32")
    w = torch.randn(4, 32, requires_grad=True)
    qat.fake_quantize_weight(w, scheme).sum().backward()
    # gradient 1 where round(w / scale) is representable; 0 where clamped (symmetric
    # absmax / 7.5 scales put a group's largest positive weight at 7.5 -> 8 -> clamped to 7)
    scale, _ = compute_qparams(w.detach(), scheme)
    t = torch.round(w.detach() / expand_groups(scale, 32, 32))
    assert torch.equal(w.grad, ((t >= -8) & (t <= 7)).float())
    assert w.grad.mean() > 0.9
    x = torch.tensor([[1.0, -1.0, 300.0]], requires_grad=True)
    y = qat._FakeQuantizeSTE.apply(x, torch.tensor(1.0), torch.tensor(0.0), -128, 127, torch.float32)
    y.sum().backward()
    assert y.tolist() == [[1.0, -1.0, 127.0]] and x.grad.tolist() == [[1.0, 1.0, 0.0]]


def test_token_fake_quant_matches_a8_reference():
    x = torch.randn(3, 5, 64) * torch.logspace(-2, 1, 64)
    sx = x.abs().amax(-1, keepdim=True) / 127
    expected = torch.round(x / sx).clamp(-128, 127) * sx
    assert torch.equal(qat.fake_quantize_tokens(x), expected)
    assert torch.equal(qat.fake_quantize_tokens(torch.zeros(2, 8)), torch.zeros(2, 8))


def test_bad_uses_raise(tiny_lm_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_lm_dir, dtype=torch.float32)
    with pytest.raises(ValueError, match="no FakeQuantLinear"):
        qat.convert(model)
    with pytest.raises(ValueError, match="dynamic"):
        qat.prepare(model, "w8a8-static")
