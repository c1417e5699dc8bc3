"""The default recipe sized by the simulation budget: a first offline fit on
``LARGE_BUDGET`` training simulations or more gives the spline flow ``LARGE_BUDGET_BINS``
bins (:func:`pyroflows.amortized.recipe.spline_bins`)."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyroflows.amortized import AmortizedPosterior
from pyroflows.amortized.recipe import LARGE_BUDGET, LARGE_BUDGET_BINS, spline_bins
from pyroflows.transforms.univariate import RQS

SMALL = dict(layers=1, hidden=(8,))
#: one epoch: the held-out calibration check warns, as it should
pytestmark = pytest.mark.filterwarnings("ignore::pyroflows.amortized.heldout.CalibrationWarning")


def _spline_bins(post: AmortizedPosterior) -> set[int]:
    """The bin counts of every spline in the posterior's networks."""
    return {
        value.bins
        for module in post.estimator.modules()
        for value in vars(module).values()
        if isinstance(value, RQS)
    }


def _simulations(n: int) -> tuple[torch.distributions.Distribution, torch.Tensor, torch.Tensor]:
    prior = dist.Normal(torch.zeros(2), 1.0).to_event(1)
    theta = prior.sample((n,))
    return prior, theta, theta + 0.1 * torch.randn_like(theta)


def _fit(n_train: int, **kwargs) -> AmortizedPosterior:
    """One epoch of a default-recipe fit with exactly ``n_train`` training simulations
    (``validation_fraction=0.5``: as many again for validation)."""
    pyro.set_rng_seed(0)
    prior, theta, x = _simulations(2 * n_train)
    flow_kwargs = {**SMALL, **kwargs.pop("flow_kwargs", {})}
    post = AmortizedPosterior(prior=prior, flow_kwargs=flow_kwargs, **kwargs)
    return post.fit(theta, x, progress=False, seed=0, max_epochs=1, validation_fraction=0.5)


@pytest.mark.parametrize(
    ("n_train", "bins"), [(LARGE_BUDGET - 1, 8), (LARGE_BUDGET, LARGE_BUDGET_BINS)],
    ids=["below-the-threshold-8", "at-the-threshold-16"],
)  # fmt: skip
def test_the_spline_flow_of_a_large_first_fit_gets_more_bins(n_train, bins):
    """The threshold counts the training simulations (after the split); the choice is in
    the built splines and in the kept flow's options."""
    post = _fit(n_train, flow="nsf")
    assert _spline_bins(post) == {bins}
    assert post.flow_kwargs.get("bins", 8) == bins


def test_given_bins_are_kept_at_any_budget_and_the_choice_is_saved(tmp_path):
    """``flow_kwargs=dict(bins=4)`` is honoured on a large budget; the default's 16 bins
    survive a save and load (the loaded posterior draws what the fitted one draws)."""
    assert _spline_bins(_fit(LARGE_BUDGET, flow="nsf", flow_kwargs=dict(bins=4))) == {4}
    post = _fit(LARGE_BUDGET, flow="nsf")
    post.save(tmp_path / "post.pt")
    loaded = AmortizedPosterior.load(tmp_path / "post.pt")
    assert _spline_bins(loaded) == {LARGE_BUDGET_BINS}
    x_obs = torch.tensor([0.3, -0.2])
    torch.manual_seed(1)
    expected = post.sample(x_obs, 50)
    torch.manual_seed(1)
    assert torch.equal(loaded.sample(x_obs, 50), expected)


def test_families_without_splines_and_online_fits_are_not_resized():
    """An affine coupling flow takes no ``bins`` (it would refuse the option); a second fit
    reuses the first fit's networks; the rule reads the first offline fit only."""
    assert _spline_bins(_fit(LARGE_BUDGET, flow="realnvp")) == set()
    assert spline_bins({}, ("realnvp",), 10**6) == {}
    assert spline_bins({}, ("nsf",), None) == {}  # online
    post = _fit(LARGE_BUDGET // 10, flow="nsf")
    prior, theta, x = _simulations(2 * LARGE_BUDGET)
    post.fit(theta, x, progress=False, seed=0, max_epochs=1)
    assert _spline_bins(post) == {8}
