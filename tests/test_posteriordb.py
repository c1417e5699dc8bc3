"""The posterior ports agree with their reference draws: two score identities.

For draws ``u`` from a density ``p`` on ``R^D`` (Pyro's unconstrained space),
``E[grad log p(u)] = 0`` and ``E[(u - E u) grad log p(u)^T] = -I``. Both are checked at the
reference draws, after whitening with the draws' mean and covariance (``z = A^-1 (u - m)``,
``grad_z = A^T grad_u``; the identities hold in ``z`` too) so that ill-conditioned posteriors
are checked as tightly as round ones. A wrong likelihood, prior or parameterisation moves the
model's density away from the draws' and breaks them (see the mutants below).
"""

from __future__ import annotations

import dataclasses

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyroflows.datasets import posteriors
from pyroflows.datasets.posteriors import gp, regression

N_DRAWS = 1000
Z_MAX = 5.0  # standard errors allowed (draws from MCMC are close to, not exactly, independent)
DIAG_SLACK = 0.08  # plus the bias of whitening with an estimated covariance


def identities(post: posteriors.Posterior) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """z-scores of ``E[grad] = 0``, and the diagonal of ``E[z grad^T]`` with its standard
    errors, at the first ``N_DRAWS`` reference draws (whitened)."""
    u = posteriors.unconstrain(post)[:N_DRAWS]
    u.requires_grad_(True)
    (grad,) = torch.autograd.grad(posteriors.log_density(post, u).sum(), u)
    u = u.detach()
    mean = u.mean(0)
    chol = torch.linalg.cholesky(torch.cov(u.T).reshape(u.shape[1], u.shape[1]))
    z = torch.linalg.solve_triangular(chol, (u - mean).T, upper=False).T
    gz = grad @ chol
    n = len(u)
    score_z = gz.mean(0) / (gz.std(0) / n**0.5)
    prod = z * gz
    return score_z, prod.mean(0), prod.std(0) / n**0.5


def _fails(post) -> bool:
    score_z, diag, se = identities(post)
    return bool((score_z.abs() > Z_MAX).any() or ((diag + 1).abs() > Z_MAX * se + DIAG_SLACK).any())


@pytest.mark.parametrize("name", posteriors.names("all"))
def test_port_matches_reference_draws(name):
    post = posteriors.load(name, dtype=torch.float64)
    score_z, diag, se = identities(post)
    assert score_z.abs().max() < Z_MAX, f"E[grad log p] != 0: z-scores {score_z}"
    assert ((diag + 1).abs() < Z_MAX * se + DIAG_SLACK).all(), f"diag {diag} (se {se})"


def _wrong_beta_prior(**kwargs):
    kwargs["beta_scale"] = 0.1  # the Stan program has normal(0, 10)
    return regression.linear_regression(**kwargs)


def _gp_variance_not_sd(x, y):
    rho, alpha = gp._hyper()
    sigma = pyro.sample("sigma", dist.HalfNormal(1.0))
    cov = gp._exp_quad(x, alpha, rho) + sigma[..., None, None].square() * torch.eye(len(x))
    pyro.sample("y", dist.MultivariateNormal(torch.zeros_like(y), cov), obs=y)


def _funnel_wrong_scale(dtype):
    v = pyro.sample("v", dist.Normal(torch.zeros((), dtype=dtype), 3.0))
    scale = torch.exp(v / 3)[..., None].expand(v.shape + (9,))  # exp(v / 2) in the target
    pyro.sample("x", dist.Normal(0.0, scale).to_event(1))


def _kidiq_flat_sigma(**kwargs):
    kwargs["sigma_prior"] = "half_normal"  # HalfCauchy(2.5) in the Stan program
    return regression.linear_regression(**kwargs)


MUTANTS = {
    "sblri-blr: prior sd 0.1 instead of 10": ("sblri-blr", _wrong_beta_prior),
    "gp_regr: sigma^2 on the diagonal": ("gp_pois_regr-gp_regr", _gp_variance_not_sd),
    "funnel10: exp(v/3) scale": ("funnel10", _funnel_wrong_scale),
    "kidiq: HalfNormal(2.5) sigma prior": ("kidiq-kidscore_momhsiq", _kidiq_flat_sigma),
}


@pytest.mark.parametrize("mutant", list(MUTANTS))
def test_broken_port_fails(mutant):
    name, model = MUTANTS[mutant]
    post = dataclasses.replace(posteriors.load(name, dtype=torch.float64), model=model)
    assert _fails(post)


def test_reserved_names_are_confirmation_only():
    dev, conf = posteriors.names("development"), posteriors.names("confirmation")
    assert set(conf) == set(posteriors.RESERVED)
    assert not set(dev) & set(posteriors.RESERVED)
    for name in posteriors.RESERVED:
        assert posteriors.load(name).split == "confirmation"
    assert len(dev) >= 12


def test_unknown_name_and_split_are_refused():
    with pytest.raises(KeyError, match="unknown posterior"):
        posteriors.load("eight_schools-eight_schools_centred")
    with pytest.raises(ValueError, match="split"):
        posteriors.names("test")


def test_constrain_inverts_unconstrain():
    post = posteriors.load("hmm_example-hmm_example", dtype=torch.float64)
    u = posteriors.unconstrain(post)[:50]
    values, _ = posteriors.constrain(post, u)
    for site, value in values.items():
        ref = torch.as_tensor(post.reference[site][:50]).double()
        assert torch.allclose(value, ref, atol=1e-5), site
