"""The calibration check every amortized fit runs on its held-out simulations
(``pyroflows.amortized.heldout``)."""

import warnings

import pyro.distributions as dist
import pytest
import torch

from pyroflows.amortized import AmortizedPosterior, CalibrationWarning, heldout
from pyroflows.amortized.heldout import heldout_check

torch.set_num_threads(1)
SMALL = dict(layers=1, hidden=(8,))


class Gaussian:
    """x ~ N(theta, 1), theta ~ N(0, I): the exact posterior is N(x / 2, 1 / 2); ``scale`` and
    ``shift`` make it too narrow / wide or shifted."""

    def __init__(self, scale=1.0, shift=0.0):
        self.scale, self.shift = scale, shift

    def sample(self, x, n):
        sd = self.scale * 0.5**0.5
        return x / 2 + self.shift + sd * torch.randn(n, *x.shape)


def joint(n=1000, dim=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(n, dim, generator=g)
    return theta, theta + torch.randn(n, dim, generator=g)


def caught(fn):
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        result = fn()
    return result, [w for w in record if issubclass(w.category, CalibrationWarning)]


def test_the_exact_posterior_passes_without_a_warning():
    result, warned = caught(lambda: heldout_check(Gaussian(), *joint(), seed=0))
    assert not warned
    assert result.ranks.shape == (heldout.MAX_ROWS, 2)
    assert (result.pvalues > 0.001).all()


@pytest.mark.parametrize(
    "posterior, words",
    [(Gaussian(scale=0.6), "too narrow"), (Gaussian(scale=1.6), "too wide"),
     (Gaussian(shift=0.4), "shifted up"), (Gaussian(shift=-0.4), "shifted down")],
)  # fmt: skip
def test_a_miscalibrated_posterior_is_named_with_what_is_wrong(posterior, words):
    result, warned = caught(lambda: heldout_check(posterior, *joint(), seed=0))
    assert len(warned) == 1
    message = str(warned[0].message)
    assert "theta[0]" in message and "theta[1]" in message and words in message
    assert result is not None and (result.pvalues < heldout.ALPHA).all()


class Outlying(Gaussian):
    """The exact posterior, except that a fraction ``rate`` of the draws lands 30 posterior
    sds out on either side: the ranks barely move, the standard deviation is inflated."""

    def __init__(self, rate):
        super().__init__()
        self.rate = rate

    def sample(self, x, n):
        draws = super().sample(x, n)
        far = torch.rand(draws.shape) < self.rate
        sign = torch.where(torch.rand(draws.shape) < 0.5, -1.0, 1.0)
        return torch.where(far, draws + sign * 30 * 0.5**0.5, draws)


def test_rare_outlying_draws_are_caught_by_the_spread_check_not_the_ranks():
    """5 % of the draws far out: every KS test passes, the mean squared z-score (about 0.1:
    most sets of 50 draws hold an outlying one) names both parameters; the exact posterior's
    is about 1."""
    result, warned = caught(lambda: heldout_check(Outlying(0.05), *joint(), seed=0))
    assert (result.pvalues > heldout.ALPHA).all()
    assert (result.mean_z2 < 0.2).all()
    assert len(warned) == 1
    message = str(warned[0].message)
    assert "theta[0] (mean squared z-score" in message and "theta[1] (mean squared" in message
    exact = heldout_check(Gaussian(), *joint(), seed=0)
    assert (abs(exact.mean_z2 - 1) < 0.2).all()


def test_the_spread_check_needs_enough_pairs_and_spares_heavy_tails():
    """Below SPREAD_ROWS pairs the spread is not judged; a calibrated heavy-tailed posterior
    (Student t with 3 degrees of freedom) has a mean squared z-score above 1, not below."""
    theta, x = joint(heldout.SPREAD_ROWS - 1)
    _, warned = caught(lambda: heldout_check(Outlying(0.05), theta, x, seed=0))
    assert not warned

    class StudentT:
        def sample(self, x, n):
            return dist.StudentT(3.0).sample((n, *x.shape))

    theta_t = torch.distributions.StudentT(3.0).sample((1000, 2))
    result, warned = caught(lambda: heldout_check(StudentT(), theta_t, theta_t, seed=0))
    assert not warned and (result.mean_z2 > 0.9).all()


def test_too_few_held_out_pairs_are_not_checked():
    theta, x = joint(heldout.MIN_ROWS - 1)
    assert heldout_check(Gaussian(scale=0.1), theta, x, seed=0) is None


def linear_posterior(**kwargs):
    prior = dist.Normal(torch.zeros(2), 1.0).to_event(1)
    return AmortizedPosterior(prior=prior, simulator=lambda t: t + torch.randn_like(t),
                              flow="maf", flow_kwargs=SMALL, **kwargs)  # fmt: skip


FIT = dict(max_epochs=1, progress=False, seed=0, recipe="one_phase")


def test_a_fit_checks_its_held_out_simulations_and_leaves_the_stream_alone():
    post = linear_posterior()
    torch.manual_seed(5)
    post.fit(num_simulations=600, **FIT)
    after_fit = torch.get_rng_state()
    torch.manual_seed(5)
    with pytest.MonkeyPatch.context() as mp:  # the same fit without the check
        mp.setattr("pyroflows.amortized.recipe.heldout_check", lambda *a: None)
        linear_posterior().fit(num_simulations=600, **FIT)
    assert torch.equal(torch.get_rng_state(), after_fit)
    assert post.heldout_sbc_.ranks.shape == (60, 2)  # the validation tenth of 600
    assert post.heldout_sbc_.names == ["theta[0]", "theta[1]"]


def test_a_rejected_check_warns_from_fit(monkeypatch):
    monkeypatch.setattr(heldout, "ALPHA", 2.0)  # every p-value counts as a rejection
    _, warned = caught(lambda: linear_posterior().fit(num_simulations=600, **FIT))
    assert len(warned) == 1 and warned[0].filename == __file__
    assert "not calibrated on 60 held-out simulations" in str(warned[0].message)


def test_weighted_fits_and_ensemble_members_are_not_checked():
    theta = dist.Normal(torch.zeros(2), 1.0).to_event(1).sample((600,))
    x = theta + torch.randn_like(theta)
    post = linear_posterior()
    post.fit(theta, x, sample_weight=torch.ones(600), **FIT)
    assert post.heldout_sbc_ is None
    ensemble = linear_posterior(ensemble=2)
    ensemble.fit(theta, x, **FIT)
    assert all(member.heldout_sbc_ is None for member in ensemble.members)
