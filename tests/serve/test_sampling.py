"""SamplingParams validation and the per-request sampler (checked against softmax math)."""
import math

import pytest
import torch

from qrt.engine.sampler import RowParams, apply_top_k_top_p, sample_row
from qrt.serve.sampling import SamplingParams


@pytest.mark.parametrize("kw,field", [({"temperature": -1}, "temperature"), ({"top_p": 0}, "top_p"),
                                      ({"top_p": 1.01}, "top_p"), ({"top_k": 0}, "top_k"), ({"top_k": -2}, "top_k"),
                                      ({"max_tokens": 0}, "max_tokens"), ({"max_tokens": 2.5}, "max_tokens"),
                                      ({"stop": [""]}, "stop"), ({"seed": -1}, "seed"), ({"ignore_eos": 1}, "ignore_eos"),
                                      ({"temperature": True}, "temperature"),
                                      ({"temperature": math.nan}, "temperature"),
                                      ({"temperature": math.inf}, "temperature")])
def test_invalid_params_name_the_field(kw, field):
    with pytest.raises(ValueError, match=f"'{field}'"):
        SamplingParams(**kw)


def test_params_are_frozen_and_normalized():
    p = SamplingParams(temperature=0, stop="###", max_tokens=3)
    assert p.stop == ("###",) and p.greedy
    assert SamplingParams(top_k=1).greedy and not SamplingParams(temperature=0.5).greedy
    with pytest.raises(AttributeError):
        p.max_tokens = 4


@pytest.mark.parametrize("t", [1e-40, 5e-324, 9.9e-6])
def test_temperatures_below_the_floor_are_greedy(t):
    """Issue 17 finding 3: logits / 1e-40 overflowed float32 to inf and sampled garbage."""
    from qrt.serve.sampling import TEMPERATURE_FLOOR
    p = SamplingParams(temperature=t, top_p=0.9, seed=1)
    assert t < TEMPERATURE_FLOOR and p.greedy and p.temperature == 0.0
    assert not SamplingParams(temperature=TEMPERATURE_FLOOR).greedy
    # the floor is safe: at 1e-5, float32 logits with gaps >= 1e-3 give a one-hot softmax, no nan
    logits = torch.tensor([3.0, 2.999, -1e4, 1e4 - 1e4 + 0.5])
    probs = (logits / TEMPERATURE_FLOOR).softmax(-1)
    assert torch.isfinite(probs).all() and probs[0] == 1.0


def test_top_k_top_p_keep_the_right_sets(rng_seed):
    logits = torch.randn(50, dtype=torch.float64)
    kept = torch.isfinite(apply_top_k_top_p(logits, 5, 1.0))
    assert set(kept.nonzero().flatten().tolist()) == set(logits.topk(5).indices.tolist())
    # top-p reference: smallest prefix of the sorted probabilities whose mass reaches p
    probs = logits.softmax(-1)
    order = probs.argsort(descending=True)
    need = int((probs[order].cumsum(-1) < 0.7).sum()) + 1
    kept = torch.isfinite(apply_top_k_top_p(logits, -1, 0.7))
    assert set(kept.nonzero().flatten().tolist()) == set(order[:need].tolist())


def test_gumbel_sampling_follows_the_softmax(rng_seed):
    """Empirical frequencies over many (seed, step) draws match softmax(logits / T)."""
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, -3.0])
    temp, n = 0.8, 6000
    counts = torch.zeros(6)
    for step in range(n):
        counts[int(sample_row(logits, RowParams(temp, 1.0, -1, rng_seed, step)).argmax())] += 1
    expected = (logits / temp).softmax(-1) * n
    # each count is Binomial(n, p): within 5 standard deviations (false alarm ~1e-6 per category)
    sd = (expected * (1 - expected / n)).sqrt()
    assert ((counts - expected).abs() <= 5 * sd + 1).all(), (counts, expected)


def test_sampling_is_a_function_of_seed_and_step():
    logits = torch.randn(1000)
    p = RowParams(1.0, 0.9, 50, seed=123, step=7)
    a = int(sample_row(logits, p).argmax())
    assert a == int(sample_row(logits.clone(), p).argmax())
    draws = {int(sample_row(logits, RowParams(1.0, 1.0, -1, 123, s)).argmax()) for s in range(30)}
    assert len(draws) > 1  # different steps draw differently
    assert torch.equal(sample_row(logits, RowParams(0.0, 1.0, -1, 1, 1)), logits)  # greedy: untouched
    assert not math.isnan(float(sample_row(logits, RowParams(0.01, 1.0, -1, 1, 1)).max()))
