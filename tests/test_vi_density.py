"""fit_to_density: reverse KL, weighted forward KL and chi-square losses, on R^D and on the
unit cube, against targets with known moments."""

from __future__ import annotations

import math

import pytest
import torch

from pyroflows.vi import fit_to_density
from pyroflows.vi.density_fit import WeightedKL, make_flow

torch.set_num_threads(1)

MEAN = torch.tensor([1.0, -2.0])
COV = torch.tensor([[1.0, 0.8], [0.8, 1.0]])
GAUSS = torch.distributions.MultivariateNormal(MEAN, COV)


def log_gauss(z):
    return GAUSS.log_prob(z) + 3.0  # unnormalised: Z = e^3


@pytest.mark.parametrize("loss", ["reverse_kl", "forward_kl", "chi2"])
def test_correlated_gaussian_moments(loss):
    q = fit_to_density(log_gauss, 2, loss=loss, steps=300, layers=2, hidden=(32,), lr=1e-2,
                       num_samples=256, progress=False, seed=0)  # fmt: skip
    x = q.sample((20000,))
    assert torch.allclose(x.mean(0), MEAN, atol=0.1), (loss, x.mean(0))
    assert torch.allclose(torch.cov(x.T), COV, atol=0.12), (loss, torch.cov(x.T))
    assert len(q.history.train_loss) == 3


def _two_modes(z):
    a = torch.distributions.Normal(-3.0, 0.5).log_prob(z).sum(-1)
    b = torch.distributions.Normal(3.0, 0.5).log_prob(z).sum(-1)
    return torch.logaddexp(a, b)


def test_forward_kl_covers_both_modes():
    q = fit_to_density(_two_modes, 2, loss="forward_kl", steps=400, layers=3, hidden=(32,),
                       lr=5e-3, progress=False, seed=0)  # fmt: skip
    x = q.sample((10000,))
    share = (x[:, 0] > 0).double().mean().item()
    assert 0.35 < share < 0.65, share


def test_unit_domain_flows_stay_in_the_cube():
    for flow in ("nsf", "piecewise_linear"):
        q = make_flow(3, "unit", flow, layers=2, hidden=(8,))
        x, log_q = q.rsample_and_log_prob((500,))
        assert bool(((x >= 0) & (x <= 1)).all()) and bool(torch.isfinite(log_q).all())
        # the density direction agrees with the sampling direction inside the cube
        inside = ((x > 1e-4) & (x < 1 - 1e-4)).all(-1)
        assert torch.allclose(q.log_prob(x[inside]), log_q[inside], atol=1e-3)


def test_weighted_loss_ignores_points_with_zero_target():
    def log_f(z):  # zero density on half the plane
        return torch.where(z[:, 0] > 0, -0.5 * (z**2).sum(-1), torch.full_like(z[:, 0], -math.inf))

    loss = WeightedKL(log_f, 128, power=2.0)
    value = loss(make_flow(2, layers=1, hidden=(8,)), ())
    assert torch.isfinite(value)
    value.backward()


def test_bad_arguments():
    with pytest.raises(ValueError, match="loss"):
        fit_to_density(log_gauss, 2, loss="kl")
    with pytest.raises(ValueError, match="domain"):
        make_flow(2, "sphere")


def test_mass_beyond_the_spline_bound_is_reached():
    """A target whose mass lies at |x| ~ 8, beyond the splines' [-5, 5]: the proposal's
    learnable affine last layer moves there, and importance sampling recovers log Z."""
    from pyroflows.vi import importance_sample

    loc = torch.tensor([8.0, -6.0])

    def log_f(z):
        return torch.distributions.Normal(loc, 0.7).log_prob(z).sum(-1) + math.log(3.0)

    q = fit_to_density(log_f, 2, steps=500, lr=1e-2, layers=2, hidden=(16,), seed=0, progress=False)
    r = importance_sample(log_f, q, n=20_000)
    assert abs(r.log_z - math.log(3.0)) < 0.05, (r.log_z, r.pareto_k)
