"""Hierarchical models: the surgical mortality model (centred and non-centred) and eight schools.

Every model broadcasts over leading batch dimensions of its latent values (vectorised particles,
many reference draws at once): vector-valued sites are events, the observations one event.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch import Tensor

SURGICAL_MU = (-2.5, 1.5)  # N(mean, sd) prior of the population log-odds
SURGICAL_SIGMA = 1.0  # HalfNormal scale of the between-hospital sd


def _surgical_hyper() -> tuple[Tensor, Tensor]:
    mu = pyro.sample("mu", dist.Normal(*SURGICAL_MU))
    sigma = pyro.sample("sigma", dist.HalfNormal(SURGICAL_SIGMA))
    return mu, sigma


def surgical_noncentered(n: Tensor, r: Tensor) -> None:
    """Deaths ``r_j`` of ``n_j`` operations in hospital ``j``, non-centred log-odds.

    ``mu ~ N(-2.5, 1.5)``, ``sigma ~ HalfNormal(1)``, ``eta_j ~ N(0, 1)``,
    ``r_j ~ Binomial(n_j, logit^-1(mu + sigma eta_j))``.
    """
    mu, sigma = _surgical_hyper()
    eta = pyro.sample("eta", dist.Normal(torch.zeros_like(n), 1.0).to_event(1))
    logits = mu[..., None] + sigma[..., None] * eta
    pyro.sample("r", dist.Binomial(n, logits=logits).to_event(1), obs=r)


def surgical_centered(n: Tensor, r: Tensor) -> None:
    """The same posterior as :func:`surgical_noncentered`, centred: ``b_j ~ N(mu, sigma)``,
    ``r_j ~ Binomial(n_j, logit^-1(b_j))`` (a funnel between ``sigma`` and ``b``)."""
    mu, sigma = _surgical_hyper()
    loc = mu[..., None].expand(mu.shape + n.shape)
    b = pyro.sample("b", dist.Normal(loc, sigma[..., None]).to_event(1))
    pyro.sample("r", dist.Binomial(n, logits=b).to_event(1), obs=r)


def eight_schools_noncentered(y: Tensor, sigma: Tensor) -> None:
    """posteriordb ``eight_schools_noncentered``: ``mu ~ N(0, 5)``, ``tau ~ HalfCauchy(5)``,
    ``theta_trans_j ~ N(0, 1)``, ``y_j ~ N(mu + tau theta_trans_j, sigma_j)``."""
    theta_trans = pyro.sample("theta_trans", dist.Normal(torch.zeros_like(y), 1.0).to_event(1))
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    theta = mu[..., None] + tau[..., None] * theta_trans
    pyro.sample("y", dist.Normal(theta, sigma).to_event(1), obs=y)
