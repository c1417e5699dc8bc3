"""The misspecification check: summary-space p-values, calibrated on held-out simulations."""

from __future__ import annotations

import warnings

import pyro.distributions as dist
import pytest
import torch

import pyroflows as pf
from pyroflows.amortized.misspecification import SummaryReference

torch.set_num_threads(1)


def _noisy(theta, sd=0.5):
    """20 replicates of a scalar parameter: x_i = theta + N(0, sd^2)."""
    return theta + sd * torch.randn(len(theta), 20)


@pytest.fixture(scope="module")
def post():
    prior = dist.Normal(torch.zeros(1), 1.0).to_event(1)
    post = pf.AmortizedPosterior(prior=prior, simulator=_noisy, flow="maf",
                                 flow_kwargs=dict(layers=1, hidden=(8,)))  # fmt: skip
    post.fit(num_simulations=500, max_epochs=1, recipe="one_phase", seed=0, progress=False)
    return post.calibrate_check(2000, seed=1)


def test_reference_p_values_against_a_gaussian_cloud():
    g = torch.Generator().manual_seed(0)
    ref = SummaryReference(torch.randn(999, 3, generator=g))
    p = ref.p_values(torch.tensor([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0]]))
    assert p[0] == 1.0 and p[1] == pytest.approx(1 / 1000)
    fresh = ref.p_values(torch.randn(4000, 3, generator=g))
    assert abs(float((fresh < 0.1).double().mean()) - 0.1) < 0.02  # uniform p-values


def test_far_and_wrongly_noisy_observations_fire(post):
    theta = torch.tensor([[0.3]])
    far = _noisy(theta) + 10.0 * (1 + 0.5**2) ** 0.5  # 10 prior-predictive sds outside
    noisy = _noisy(theta, sd=1.5)  # the right location, three times the noise
    result = post.check_observation(torch.cat([far, noisy]), alpha=0.01)
    assert result.misspecified.tolist() == [True, True], result.p_value
    assert (result.p_value < 2e-3).all()
    with pytest.warns(RuntimeWarning, match="outside what the simulator produces"):
        post.sample(far[0], 10)
    with pytest.warns(RuntimeWarning, match="index 1"):
        post.log_prob(torch.zeros(2, 1), torch.cat([_noisy(theta), far]))
    post.warn_misspecified = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            post.sample(far[0], 10)
    finally:
        post.warn_misspecified = True


def test_false_alarm_rate_is_near_the_level(post):
    g = torch.Generator().manual_seed(7)
    theta = torch.randn(200, 1, generator=g)
    x = theta + 0.5 * torch.randn(200, 20, generator=g)
    result = post.check_observation(x, alpha=0.05)
    rate = float(result.misspecified.double().mean())
    assert 0.015 <= rate <= 0.095, rate  # binomial(200, 0.05): 2.5 sd either side
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # none of them below WARN_ALPHA = 0.001
        post.sample(x[:20], 5)


def test_a_new_fit_drops_the_reference(post):
    post2 = pf.AmortizedPosterior(prior=post.sim.prior, simulator=_noisy, flow="maf",
                                  flow_kwargs=dict(layers=1, hidden=(8,)))  # fmt: skip
    post2.fit(num_simulations=100, max_epochs=1, recipe="one_phase", seed=0, progress=False)
    post2.calibrate_check(100)
    assert post2.reference is not None
    post2.fit(num_simulations=100, max_epochs=1, recipe="one_phase", seed=1, progress=False)
    assert post2.reference is None
    with pytest.raises(ValueError, match="alpha"):
        post.check_observation(torch.zeros(20), alpha=1.5)


def test_the_reference_is_built_on_the_embeddings_device_and_dtype():
    """Embeddings on another device (``meta`` stands in for a GPU on a CPU test): the ridge is
    added there, not on the CPU, and the embeddings of observations are moved there."""
    ref = SummaryReference(torch.empty(50, 3, dtype=torch.float64, device="meta"))
    assert ref.mean.device.type == "meta" and ref.distances.device.type == "meta"
    assert ref.distance(torch.zeros(4, 3)).device.type == "meta"  # observations moved there


@pytest.mark.parametrize("k", [2, 16, 60])
def test_the_reference_distances_are_out_of_sample_so_the_level_holds(k):
    """In-sample reference distances are smaller than a new observation's (by about k / n),
    so ordinary observations fired the check above its level: with these seeds and in-sample
    distances, 0.057 at 0.05 for k = 16 and 0.146 for k = 60 (now 0.047 and 0.059)."""
    g = torch.Generator().manual_seed(k)
    ref = SummaryReference(torch.randn(1000, k, generator=g))
    p = ref.p_values(torch.randn(20_000, k, generator=g))
    rate = float((p < 0.05).double().mean())
    assert 0.038 < rate < 0.062, rate
    assert ref.p_values(torch.full((1, k), 10.0)).item() == pytest.approx(1 / 1001)


def test_nan_padded_sets_stay_in_the_reference():
    """Sets of several sizes padded with NaN rows are data for a summary with nan_padding:
    the reference keeps them all (it kept only the full-size sets, so its smallest p-value was
    large and the check could not fire)."""
    import pyro

    from pyroflows.nn import DeepSet

    def model(n=6, x=None):
        mu = pyro.sample("mu", dist.Normal(0.0, 3.0))
        with pyro.plate("data", n):
            return pyro.sample("x", dist.Normal(mu, 1.0), obs=x)

    post = pf.AmortizedPosterior(
        model, "x", summary=DeepSet(1, 4, hidden=8), sizes=range(2, 7), size_arg="n",
        flow="maf", flow_kwargs=dict(layers=1, hidden=(8,)),
    )  # fmt: skip
    post.fit(num_simulations=200, max_epochs=1, progress=False, seed=0, recipe="one_phase")
    post.calibrate_check(300, seed=1)
    assert len(post.reference.distances) == 300
    far = torch.full((3,), 500.0)
    assert post.check_observation(far, alpha=0.01).p_value.item() == pytest.approx(1 / 301)
