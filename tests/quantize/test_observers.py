"""Observers vs direct computation of the statistic each one defines."""
import pytest
import torch

from qrt.quantize.observers import ObserverConfig, make_observer


def _batches(n=4):
    return [torch.randn(8, 32) * (1 + i) + 0.3 * i for i in range(n)]


def test_minmax_is_the_global_absmax(rng_seed):
    batches = _batches()
    obs = make_observer("minmax")
    for b in batches:
        obs.update(b)
    allx = torch.cat(batches).double()
    expected = max(-min(allx.min().item(), 0), max(allx.max().item(), 0)) / 127
    assert obs.scale().item() == pytest.approx(expected, rel=1e-6)  # fp32 storage of the scale
    assert obs.scale().dtype == torch.float32 and obs.scale().shape == (1,)


def test_moving_minmax_is_an_ema_of_batch_extremes(rng_seed):
    c = 0.25
    batches = _batches()
    obs = make_observer(ObserverConfig(name="moving_minmax", averaging_constant=c))
    lo, hi = None, None
    for b in batches:
        obs.update(b)
        blo, bhi = min(b.min().item(), 0.0), max(b.max().item(), 0.0)
        lo, hi = (blo, bhi) if lo is None else (lo + c * (blo - lo), hi + c * (bhi - hi))
    assert obs.scale().item() == pytest.approx(max(-lo, hi) / 127, rel=1e-6)


def _fq_error(x, absmax, norm):
    s = absmax / 127
    return ((torch.round(x / s).clamp(-128, 127) * s - x).abs() ** norm).sum()


def test_mse_picks_the_error_minimising_clip(rng_seed):
    x = torch.randn(64, 64).double()
    x[0, 0] = 40.0  # an outlier worth clipping
    cfg = ObserverConfig(name="mse", grid=50, maxshrink=0.5)
    obs = make_observer(cfg)
    obs.update(x.float())
    absmax = x.abs().max().item()
    # direct: evaluate every candidate in float64, take the best
    ps = [1 - i / cfg.grid for i in range(int(cfg.maxshrink * cfg.grid))]
    errs = torch.stack([_fq_error(x, p * absmax, cfg.norm) for p in ps])
    best = ps[int(errs.argmin())]
    assert obs.scale().item() == pytest.approx(best * absmax / 127, rel=1e-5)
    assert obs.scale().item() < absmax / 127  # the outlier got clipped
    assert _fq_error(x, obs.scale().item() * 127, cfg.norm) <= _fq_error(x, absmax, cfg.norm)


def test_observer_errors():
    with pytest.raises(ValueError, match="observer must be one of"):
        make_observer("histogram")
    obs = make_observer("minmax")
    with pytest.raises(ValueError, match="no activations"):
        obs.scale()
    with pytest.raises(ValueError, match="non-finite"):
        obs.update(torch.tensor([1.0, float("nan")]))
    with pytest.raises(ValueError, match="averaging_constant"):
        ObserverConfig(name="moving_minmax", averaging_constant=0.0)


def test_zero_activations_give_scale_zero():
    obs = make_observer("mse")
    obs.update(torch.zeros(4, 8))
    assert obs.scale().item() == 0.0
