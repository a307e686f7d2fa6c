"""AWQ's cheaper paths give what the full ones give: the MLP's grid loss on sampled tokens
(AWQConfig.loss_tokens), the X^T X read from the driver's GPTQ Hessians, and the refined
grid search (AWQConfig.refine) on losses unimodal in the ratio."""
import math
import sys
from pathlib import Path

import pytest
import torch

from qrt.quantize.awq import AWQ, AWQConfig, search_grid
from qrt.quantize.block_pass import capture_block_inputs, decoder_blocks, run_block
from qrt.quantize.plan import plan_layers
from qrt.schemes import resolve_scheme

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tiny_models  # noqa: E402
from test_smoothing import outlier_inputs  # noqa: E402

SCHEME = "w4a16-g32"


def block0(seed: int = 0):
    torch.manual_seed(seed)
    model = tiny_models.make("llama")
    outlier_inputs(model)
    windows = tiny_models.sample_ids(model, batch=4, seq=24)
    plan, *_ = plan_layers(model, resolve_scheme(SCHEME))
    name, blocks = decoder_blocks(model)
    inputs = capture_block_inputs(model, blocks[0], windows, batch_size=2)
    schemes = {n[len(name) + 3:]: s for n, (_, s) in plan.items() if n.startswith(f"{name}.0.")}
    return model, blocks[0], inputs, schemes


@torch.no_grad()
def fold(model, block, inputs, schemes, config, grams=None):
    """One block's AWQ pass -> ({balance: s}, the folded weights)."""
    awq = AWQ(model, config)
    awq.start(block, **({"grams": grams} if grams is not None else {}))
    run_block(block, inputs)
    awq.stop()
    scaled = awq.fold(block, schemes)
    return scaled, {n: p.detach().clone() for n, p in block.named_parameters()}


def test_loss_tokens_covering_every_token_equals_the_full_loss():
    """4 windows x 24 tokens = 96: a 96-token sample is every token, so the MLP's loss is the
    all-windows loss summed in another order; the same grid point must win (a near-tie
    would need two losses equal to float32 rounding)."""
    runs = []
    for cfg in (AWQConfig(n_grid=8), AWQConfig(n_grid=8, loss_tokens=96)):
        model, block, inputs, schemes = block0()
        runs.append(fold(model, block, inputs, schemes, cfg))
    (s_full, w_full), (s_tok, w_tok) = runs
    assert s_full.keys() == s_tok.keys()
    for n in s_full:
        torch.testing.assert_close(s_tok[n], s_full[n], rtol=0, atol=0, msg=n)
    for n in w_full:
        torch.testing.assert_close(w_tok[n], w_full[n], rtol=0, atol=0, msg=n)


def test_loss_tokens_samples_rows_from_every_window():
    """A 30-token sample: the MLP sees exactly 30 distinct calibration rows, not all from the
    first window (what loss_windows=1 would give)."""
    model, block, inputs, schemes = block0()
    seen = []
    awq = AWQ(model, AWQConfig(n_grid=4, loss_tokens=30))
    with torch.no_grad():
        awq.start(block)
        x_norm = []
        h = block.post_attention_layernorm.register_forward_hook(
            lambda m, a, o: x_norm.append(o.reshape(-1, o.shape[-1])))
        run_block(block, inputs)
        h.remove()
        awq.stop()
        h = block.mlp.register_forward_pre_hook(lambda m, a: seen.append(a[0]))
        awq.fold(block, schemes)
        h.remove()
    norm_rows = torch.cat(x_norm)  # the MLP's inputs during calibration, in token order
    first = seen[0]
    assert first.shape == (1, 30, norm_rows.shape[1])
    assert norm_rows.shape[0] == 96
    match = (first[0][:, None, :] == norm_rows[None, :, :]).all(-1)  # [30, 96]
    assert (match.sum(1) >= 1).all()  # every sampled row is a calibration row
    idx = match.float().argmax(1)
    assert len(set(idx.tolist())) == 30 and idx.max() >= 24  # distinct, beyond the first window


def test_loss_tokens_refuses_a_parent_with_more_arguments():
    model, block, inputs, schemes = block0()
    awq = AWQ(model, AWQConfig(n_grid=4, loss_tokens=8))
    awq.start(block)
    stats = next(st for m, st in awq._stats.items() if m.token_wise)
    awq.stop()
    x = inputs[0][0]
    with pytest.raises(ValueError, match="mlp is called with 2 positional.*one hidden-states tensor"):
        stats.add_rows("mlp", (x, x), {})
    with pytest.raises(ValueError, match="loss_tokens must be None or an int >= 1, found 0"):
        AWQConfig(loss_tokens=0)


@pytest.mark.parametrize("clip", [False, True])
def test_grams_from_the_driver_give_the_same_scales_and_clips(clip):
    """grams= (the driver's Hessians) instead of AWQ's own X^T X: fed the float64 Gram of the
    very same inputs, AWQ must choose the same scales and clips as with its own float32 one
    (the two differ by float32 rounding; a near-tie would need equal losses to that)."""
    model, block, inputs, schemes = block0()
    own = fold(model, block, inputs, schemes, AWQConfig(n_grid=8, clip=clip))
    model, block, inputs, schemes = block0()
    feeds, handles = {}, []
    for n in ("self_attn.q_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.down_proj"):
        feeds[n] = []
        handles.append(block.get_submodule(n).register_forward_pre_hook(
            (lambda k: lambda m, a: feeds[k].append(a[0].reshape(-1, a[0].shape[-1])))(n)))
    with torch.no_grad():
        run_block(block, inputs)  # the inputs AWQ's own pass will see (the block is unchanged)
    for h in handles:
        h.remove()
    gram = {n: (torch.cat(x).double().T @ torch.cat(x).double()).float() for n, x in feeds.items()}
    alias = {"self_attn.k_proj": "self_attn.q_proj", "self_attn.v_proj": "self_attn.q_proj",
             "mlp.up_proj": "mlp.gate_proj"}

    def grams(name):
        return gram[alias.get(name, name)]
    shared = fold(model, block, inputs, schemes, AWQConfig(n_grid=8, clip=clip), grams=grams)
    for n in own[0]:
        torch.testing.assert_close(shared[0][n], own[0][n], rtol=0, atol=0, msg=n)
    for n in own[1]:
        torch.testing.assert_close(shared[1][n], own[1][n], rtol=0, atol=0, msg=n)
    # and they are read: a Gram that ignores the activations picks other scales or clips
    model, block, inputs, schemes = block0()
    blind = fold(model, block, inputs, schemes, AWQConfig(n_grid=8, clip=clip),
                 grams=lambda name: torch.eye(gram[alias.get(name, name)].shape[0]))
    assert any(not torch.equal(blind[1][n], own[1][n]) for n in own[1])


def test_driver_hands_awq_the_hessian_grams(tiny_lm_dir):
    """GPTQ rounding: quantize_block hands AWQ its Hessians' X^T X, which equals the Gram of
    the inputs the calibration pass fed (float64 reference)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from qrt.quantize.gptq_model import gptq_quantize_model
    got = []

    class Spy(AWQ):
        def start(self, block, grams=None):
            super().start(block, grams)
            self.rows, self.grams = [], grams
            self.hook = block.mlp.down_proj.register_forward_pre_hook(
                lambda m, a: self.rows.append(a[0].reshape(-1, a[0].shape[-1])))

        def fold(self, block, schemes):
            self.hook.remove()
            x = torch.cat(self.rows).double()
            got.append((self.grams("mlp.down_proj").clone(), x.T @ x))
            return super().fold(block, schemes)

    tok = AutoTokenizer.from_pretrained(tiny_lm_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_lm_dir, dtype=torch.float32)
    gptq_quantize_model(model, tok, SCHEME, nsamples=4, seqlen=32, progress=False,
                        transform=Spy(model, AWQConfig(n_grid=4, clip=True)))
    assert len(got) == model.config.num_hidden_layers
    for g, ref in got:  # float32 accumulation of 128 rows: ~1e-6 relative
        torch.testing.assert_close(g.double(), ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())


@pytest.mark.parametrize("duo", [True, False])
def test_refined_search_finds_the_full_grids_pick_on_unimodal_losses(duo):
    """Random losses that strictly fall then rise along the ratio, the identity's anywhere
    (ties with it included): refine=k picks the full grid's point with at most ceil(n/k) + 1 + 2(k-1)
    ratio evaluations (n ratios), and the full grid evaluates every point once."""
    gen = torch.Generator().manual_seed(0)
    for n_grid in (4, 8, 14, 20):
        points = AWQConfig(n_grid=n_grid, duo_scaling=duo).grid()
        ratios = [p for p in points if p[1] == duo]
        for trial in range(50):
            low = int(torch.randint(len(ratios), (1,), generator=gen))
            steps = torch.randint(1, 4, (len(ratios),), generator=gen).float()
            table = {p: float(steps[min(i, low) + 1:low + 1].sum() + steps[low + 1:i + 1].sum())
                     for i, p in enumerate(ratios)}
            table.update({p: float(torch.randint(4, (1,), generator=gen)) for p in points if p not in table})
            calls = []

            def loss(p):
                calls.append(p)
                return table[p]
            full = search_grid(points, loss, None)
            assert sorted(calls) == sorted(points)
            for k in (2, 3, 4, 5):
                calls.clear()
                assert search_grid(points, loss, k) == full, (n_grid, trial, k)
                assert len(calls) == len(set(calls)) <= math.ceil(len(ratios) / k) + 1 + 2 * (k - 1) + (duo and 1)


def test_search_skips_non_finite_losses():
    points = AWQConfig(n_grid=8).grid()
    bad = {points[3]: float("nan"), points[4]: float("inf")}
    for refine in (None, 2, 3):
        assert search_grid(points, lambda p: bad.get(p, 1.0 + p[0]), refine) == points[0]
        assert search_grid(points, lambda p: bad.get(p, 3.0 - p[0]), refine) == points[-1]
        assert search_grid(points, lambda p: float("nan"), refine) is None
    with pytest.raises(ValueError, match="refine must be None or an int >= 2, found 1"):
        AWQConfig(refine=1)


@pytest.mark.parametrize("refine, most", [(None, 20), (3, 12)])
def test_refined_awq_runs_the_mlp_fewer_times(refine, most):
    """The MLP's grid loss on a real block: the full grid runs it for its 20 points, refine=3
    for at most 7 coarse + 4 fine ratios + the identity; plus the reference, per cached call."""
    model, block, inputs, schemes = block0()
    calls = []
    with torch.no_grad():
        awq = AWQ(model, AWQConfig(n_grid=20, refine=refine))
        awq.start(block)
        run_block(block, inputs)
        awq.stop()
        h = block.mlp.register_forward_pre_hook(lambda m, a: calls.append(a[0].shape[0]))
        scaled = awq.fold(block, schemes)
        h.remove()
    per_point = len(inputs)  # 4 windows in batches of 2: every window enters the loss
    assert len(calls) % per_point == 0 and sum(calls) == 4 * len(calls) // per_point
    assert (len(calls) // per_point - 1 == most) if refine is None else (8 <= len(calls) // per_point - 1 <= most)
    assert set(scaled) == {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",  # no v -> o under GQA
                           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"}
