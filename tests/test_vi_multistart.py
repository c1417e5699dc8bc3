"""The multi-start start of FlowGuide (``affine_init="multistart"``): exact two-mode targets with
known weights, unimodal targets where it must equal the default start, and its refusals."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.distributions import constraints
from pyro.infer import config_enumerate

from pyroflows.bases import FixedWeightGaussianMixture
from pyroflows.datasets.posteriors.flat import flat
from pyroflows.validation import InvalidOption
from pyroflows.vi import FlowGuide

WEIGHT, SHIFT, SD = 0.3, 2.0, 1.2  # the lighter mode: weight, -SHIFT * 1, sd; the other: +SHIFT, 1


def _two_modes():
    """``0.3 N(-2 * 1, 1.2^2 I) + 0.7 N(2 * 1, I)`` in 2-D, normalised (log Z = 0)."""
    x = pyro.sample("x", flat(constraints.real_vector, (2,)))
    light = dist.Normal(-SHIFT, SD).log_prob(x).sum(-1) + math.log(WEIGHT)
    heavy = dist.Normal(SHIFT, 1.0).log_prob(x).sum(-1) + math.log(1 - WEIGHT)
    pyro.factor("density", torch.logaddexp(light, heavy))


def _light_fraction(guide: FlowGuide, n: int = 4000) -> float:
    x = guide.get_posterior().sample((n,))
    return float((x.sum(-1) < 0).double().mean())


def _set_up(model, affine_init: str, *args, **options) -> FlowGuide:
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    guide = FlowGuide(model, layers=1, hidden=(8,), affine_init=affine_init, **options)
    guide(*args)
    return guide


def test_multistart_covers_both_modes_with_their_weights():
    guide = _set_up(_two_modes, "multistart")
    assert guide.start_["start"] == "mixture"
    assert guide.start_["modes"] == pytest.approx([1 - WEIGHT, WEIGHT], abs=5e-3)
    assert guide.start_["elbo"]["mixture"] == pytest.approx(0.0, abs=0.02)  # exact: log Z = 0
    assert _light_fraction(guide) == pytest.approx(WEIGHT, abs=0.03)  # sd of the estimate 0.007


def test_default_start_misses_the_lighter_mode():
    """What the multi-start fixes: the default start sits at the heavier mode only."""
    guide = _set_up(_two_modes, "auto")
    assert guide.start_["start"] == "laplace"
    assert _light_fraction(guide) < 0.01


def test_multistart_guide_keeps_both_modes_through_a_fit():
    pyro.clear_param_store()
    guide = FlowGuide(_two_modes, layers=1, hidden=(8,), affine_init="multistart")
    guide.fit(steps=150, seed=0, check_convergence=False)
    assert _light_fraction(guide) == pytest.approx(WEIGHT, abs=0.03)
    means = guide.get_posterior().sample((4000,))
    light = means[means.sum(-1) < 0]
    assert light.mean(0).tolist() == pytest.approx([-SHIFT, -SHIFT], abs=0.2)  # sd 1.2
    assert light.std(0).tolist() == pytest.approx([SD, SD], abs=0.3)  # a short, noisy fit


def _regression(x, y):
    """A linear regression with predictors far from 0 (an ill-conditioned, unimodal
    posterior where an unfinished L-BFGS search stops away from the mode)."""
    beta = pyro.sample("beta", dist.Normal(torch.zeros(2), 100.0).to_event(1))
    sigma = pyro.sample("sigma", dist.HalfNormal(5.0))
    mean = beta[..., :1] + beta[..., 1:] * x
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Normal(mean, sigma[..., None]), obs=y)


def _correlated():
    cov = torch.tensor([[1.0, 0.9], [0.9, 1.0]])
    pyro.sample("z", dist.MultivariateNormal(torch.tensor([1.0, -2.0]), cov))
    pyro.sample("s", dist.LogNormal(0.0, 0.5))


@pytest.mark.parametrize(
    "model, args",
    [
        pytest.param(_correlated, (), id="correlated-gaussian"),
        pytest.param(
            _regression,
            (torch.linspace(1950.0, 2020.0, 40), 3.0 + 0.01 * torch.linspace(0.0, 70.0, 40)),
            id="regression-years",
        ),
    ],
)
def test_one_mode_gives_exactly_the_default_start(model, args):
    auto = _set_up(model, "auto", *args)
    state_auto, rng_auto = auto.state_dict(), torch.get_rng_state()
    multi = _set_up(model, "multistart", *args)
    state_multi = multi.state_dict()
    assert multi.start_["modes"] == [1.0]
    assert multi.start_["start"] == auto.start_["start"]
    assert state_multi.keys() == state_auto.keys()
    assert all(torch.equal(state_multi[k], state_auto[k]) for k in state_auto)
    assert torch.equal(torch.get_rng_state(), rng_auto)  # the fit that follows is identical


def _enumerated(data):
    p = pyro.sample("p", dist.Beta(2.0, 2.0))
    with pyro.plate("data", len(data)):
        z = pyro.sample("z", dist.Bernoulli(p))
        pyro.sample("obs", dist.Normal(z * 2.0, 1.0), obs=data)


def _subsampled(data):
    loc = pyro.sample("loc", dist.Normal(0.0, 1.0))
    with pyro.plate("data", len(data), subsample_size=2) as idx:
        local = pyro.sample("local", dist.Normal(loc, 1.0))
        pyro.sample("obs", dist.Normal(local, 1.0), obs=data[idx])


@pytest.mark.parametrize(
    "model, match",
    [
        pytest.param(config_enumerate(_enumerated), "enumerated", id="enumerated"),
        pytest.param(_subsampled, "subsamples", id="subsampled"),
    ],
)
def test_multistart_refuses_models_without_a_map(model, match):
    guide = FlowGuide(model, layers=1, hidden=(8,), affine_init="multistart")
    with pytest.raises(NotImplementedError, match=f"multistart.*{match}|{match}.*multistart"):
        guide(torch.randn(6))


def test_map_starts_is_refused_without_multistart():
    with pytest.raises(ValueError, match="map_starts is the number of extra MAP searches"):
        FlowGuide(_two_modes, map_starts=4)
    with pytest.raises(InvalidOption, match="map_starts must be a positive integer"):
        FlowGuide(_two_modes, affine_init="multistart", map_starts=0)


def test_fixed_weight_mixture_density_draws_and_gradients():
    weights = torch.tensor([0.2, 0.8])
    means = torch.tensor([[-6.0, 0.0], [8.0, 1.0]])
    trils = torch.tensor([[[1.0, 0.0], [0.5, 0.5]], [[2.0, 0.0], [-1.0, 1.0]]])
    base = FixedWeightGaussianMixture(weights, means, trils)
    x = torch.randn(7, 2) * 3
    expected = dist.MixtureSameFamily(
        dist.Categorical(weights), dist.MultivariateNormal(means, scale_tril=trils)
    ).log_prob(x)
    assert torch.allclose(base.log_prob(x), expected, atol=1e-5)
    assert torch.allclose(base.distribution().log_prob(x), expected, atol=1e-5)
    torch.manual_seed(0)
    draws = base.rsample((20000,))
    first = draws[:, 0] < 0
    assert float(first.double().mean()) == pytest.approx(0.2, abs=0.01)
    cov = torch.cov(draws[~first].T)
    assert torch.allclose(cov, trils[1] @ trils[1].T, atol=0.1)
    draws[:100].sum().backward()
    assert base.loc.grad is not None and base.off_diag.grad is not None
    assert "log_weights" in dict(base.named_buffers())  # fixed, not learnt
    with pytest.raises(ValueError, match="positive"):
        FixedWeightGaussianMixture(torch.tensor([0.0, 1.0]), means, trils)


def test_mixture_start_state_round_trips_into_a_fresh_guide():
    """A saved multi-start guide loads into a new one set up from the same seed (same modes,
    so the same mixture base), and both then give the same density."""
    first = _set_up(_two_modes, "multistart")
    with torch.no_grad():
        first.flow.base.loc.add_(0.1)  # a state that differs from the start
    second = _set_up(_two_modes, "multistart")
    second.load_state_dict(first.state_dict())
    x = torch.randn(5, 2) * 3
    assert torch.allclose(first.get_posterior().log_prob(x), second.get_posterior().log_prob(x))
