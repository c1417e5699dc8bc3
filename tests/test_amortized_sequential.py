"""Truncated-prior rounds for one observation (``pyroflows.amortized.sequential``)."""

import math
import warnings

import pyro.distributions as dist
import pytest
import torch

from pyroflows.amortized import (
    AmortizedPosterior,
    CalibrationWarning,
    OtherObservationWarning,
    TruncationWarning,
    fit_sequential,
)
from pyroflows.amortized.sequential import Region, _restricted_sbc

torch.set_num_threads(1)
NOISE = 0.05
#: x = theta + 0.05 noise, theta ~ N(0, 1): the exact posterior is N(x / (1 + s^2), s^2 / (1 +
#: s^2)); at x_o = 2.5 it is 0.05 wide, 2.5 prior sds out (one simulation in 60 within 0.5)
X_O = torch.tensor([2.5])
EXACT_MEAN = X_O / (1 + NOISE**2)
EXACT_SD = NOISE / math.sqrt(1 + NOISE**2)
TRAIN = dict(
    max_epochs=20, recipe="one_phase", lr=2e-3, patience=None, progress=False, batch_size=50
)  # fmt: skip


def gaussian(dim=1, **kwargs):
    prior = dist.Normal(torch.zeros(dim), 1.0).to_event(1)
    return AmortizedPosterior(
        prior=prior,
        simulator=lambda t: t + NOISE * torch.randn_like(t),
        flow="maf",
        flow_kwargs=dict(layers=1, hidden=(16, 16)),
        **kwargs,
    )


def fitted(rounds):
    post = gaussian()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        result = fit_sequential(
            post, X_O, rounds=rounds, simulations=1600, check_simulations=60, seed=1, **TRAIN
        )
    draws = post.sample(X_O, 4000, seed=1).double()
    error = ((draws.mean(0) - EXACT_MEAN) / EXACT_SD).abs()
    return result, draws.std(0) / EXACT_SD, error, [w.category for w in record]


def test_sequential_rounds_reach_the_exact_tail_posterior():
    result, ratio, error, caught = fitted(rounds=4)
    assert [r.simulations for r in result.rounds] == [400] * 4
    assert [r.trained_on for r in result.rounds] == [340, 740, 1140, 1540]
    assert result.simulations == 1600
    volumes = [r.prior_volume for r in result.rounds]
    assert volumes[0] == 1 and volumes[-1] < 0.01  # the rounds zoomed in
    assert all(0 < r.acceptance <= 1 for r in result.rounds)
    assert bool(((ratio > 0.8) & (ratio < 1.2)).all()), ratio
    assert bool((error < 0.5).all()), error
    assert TruncationWarning not in caught and result.outside <= 1e-3
    assert result.rounds[-1].sbc is not None and result.rounds[-1].sbc.pit.shape == (60, 1)
    # the last region holds the exact posterior's bulk
    exact = EXACT_MEAN + EXACT_SD * torch.randn(2000, 1, generator=torch.Generator().manual_seed(0))
    assert float(result.region.contains(exact).double().mean()) > 0.99


def test_one_amortized_round_misses_at_that_budget():
    _, ratio, error, _ = fitted(rounds=1)
    assert not bool(((ratio > 0.8) & (ratio < 1.2) & (error < 0.5)).all()), (ratio, error)


def test_a_threshold_too_tight_warns():
    post = gaussian()
    with pytest.warns(TruncationWarning, match="outside the region"):
        result = fit_sequential(
            post, X_O, rounds=2, simulations=800, quantile=0.4, check_simulations=0,
            **{**TRAIN, "max_epochs": 10},
        )  # fmt: skip
    assert result.rounds[1].outside > 1e-3


class ExactPosterior:
    """theta ~ N(0, 1), x ~ N(theta, 0.5^2): the posterior is N(0.8 x, 0.2); ``scale`` makes
    it too narrow."""

    space = None

    def __init__(self, scale=1.0):
        self.scale = scale

    def sample(self, x, n):
        return 0.8 * x + self.scale * math.sqrt(0.2) * torch.randn(n, *x.shape)


def truncated_joint(n, low, high, seed=0):
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(20 * n, 1, generator=g)
    theta = theta[(theta >= low) & (theta <= high)][:n, None]
    return theta, theta + 0.5 * torch.randn(len(theta), 1, generator=g)


def test_sbc_on_the_truncated_prior_ranks_among_the_restricted_draws():
    box = Region(torch.tensor([0.5], dtype=torch.float64), torch.tensor([2.0], dtype=torch.float64),
                 [], None)  # fmt: skip
    theta, x = truncated_joint(600, 0.5, 2.0)
    torch.manual_seed(0)
    exact = _restricted_sbc(ExactPosterior(), box, theta, x, seed=0, r=2)
    assert exact is not None and exact.pvalues[0] > 0.01
    # ranking among all draws (no restriction) is not calibrated for the truncated prior
    unrestricted = _restricted_sbc(ExactPosterior(), None, theta, x, seed=0, r=2)
    assert unrestricted.pvalues[0] < 1e-3
    narrow = _restricted_sbc(ExactPosterior(scale=0.5), box, theta, x, seed=0, r=2)
    assert narrow.pvalues[0] < 1e-3


def test_a_region_too_small_for_the_prior_draws_raises_and_leaves_the_posterior():
    post = gaussian()
    with pytest.raises(RuntimeError, match="max_prior_draws"):
        fit_sequential(post, X_O, rounds=2, simulations=400, check_simulations=0,
                       max_prior_draws=50, **{**TRAIN, "max_epochs": 2})  # fmt: skip
    assert post.estimator is None and post.history is None


def test_refusals():
    with pytest.raises(ValueError, match="ensemble"):
        fit_sequential(gaussian(ensemble=2), X_O)
    with pytest.raises(ValueError, match="simulator"):
        fit_sequential(AmortizedPosterior(prior=dist.Normal(torch.zeros(1), 1.0).to_event(1)), X_O)
    with pytest.raises(ValueError, match="quantile"):
        fit_sequential(gaussian(), X_O, quantile=0.0)
    with pytest.raises(ValueError, match="seed"):
        fit_sequential(gaussian(), X_O, seed=None, num_simulations=10)
    with pytest.raises(ValueError, match="too few"):
        fit_sequential(gaussian(), X_O, rounds=4, simulations=400, check_simulations=100)
    with pytest.raises(TypeError):  # a misspelt training option, before any simulation
        fit_sequential(gaussian(), X_O, max_epoch=3)
    post = gaussian()
    with pytest.raises(ValueError, match="one observation"):
        fit_sequential(post, torch.zeros(3, 1), rounds=1, simulations=100, check_simulations=0)
    with pytest.raises(ValueError):
        fit_sequential(post, torch.zeros(2, 2), rounds=1, simulations=100, check_simulations=0)
    assert post.estimator is None
    post.fit(num_simulations=50, max_epochs=1, recipe="one_phase", progress=False)
    with pytest.raises(ValueError, match="unfitted"):
        fit_sequential(post, X_O)


def test_the_last_rounds_sbc_rejection_warns(monkeypatch):
    import pyroflows.amortized.sequential as sequential

    def rejected(post, region, theta, x, seed, r):
        return _restricted_sbc(ExactPosterior(scale=0.5), None, *truncated_joint(300, -9, 9), 0, r)

    monkeypatch.setattr(sequential, "_restricted_sbc", rejected)
    with pytest.warns(CalibrationWarning, match="truncated prior"):
        fit_sequential(gaussian(), X_O, rounds=1, simulations=200, check_simulations=60,
                       **{**TRAIN, "max_epochs": 1})  # fmt: skip


def test_the_posterior_is_for_its_observation(tmp_path):
    """Draws for other data than x_o were given silently (the last rounds simulated only
    parameters near x_o's posterior), and the amortized tools ran on it; now other data warn,
    distil and calibrate_check refuse, a save keeps x_o and an ordinary fit clears it."""
    post = gaussian()
    quick = dict(TRAIN, max_epochs=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit_sequential(post, X_O, rounds=2, simulations=400, check_simulations=40, seed=0, **quick)
    with warnings.catch_warnings():
        warnings.simplefilter("error", OtherObservationWarning)
        post.sample(X_O, 10, seed=0)  # its own observation: no warning
        post.log_prob(torch.tensor([[2.5]]), X_O)
    for call in (lambda p: p.sample(torch.tensor([0.0]), 10), lambda p: p.sample(
        torch.stack([X_O, torch.tensor([0.0])]), 10), lambda p: p.log_prob(
        torch.tensor([[0.0]]), torch.tensor([0.0]))):  # fmt: skip
        with pytest.warns(OtherObservationWarning, match="not the one this posterior was"):
            call(post)
    for what in ("distil", "calibrate_check"):
        with pytest.raises(ValueError, match=f"{what} needs a posterior amortized"):
            getattr(post, what)()
    path = tmp_path / "seq.pt"
    post.save(path)
    loaded = AmortizedPosterior.load(path)
    assert torch.equal(loaded.sequential_x_o, X_O)
    with pytest.warns(OtherObservationWarning):
        loaded.sample(torch.tensor([0.0]), 10)
    post.fit(num_simulations=200, **quick)  # from the prior: amortized again
    assert post.sequential_x_o is None
