"""posteriordb's ``low_dim_gauss_mix``: a two-component Gaussian mixture with ordered means."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from torch import Tensor

from pyroflows.datasets.posteriors.flat import flat


def low_dim_gauss_mix(y: Tensor) -> None:
    """``mu`` ordered with ``mu_i ~ N(0, 2)``, ``sigma_i ~ HalfNormal(2)``,
    ``theta ~ Beta(5, 5)``, ``y_n ~ theta N(mu_1, sigma_1) + (1 - theta) N(mu_2, sigma_2)``."""
    mu = pyro.sample("mu", flat(constraints.ordered_vector, (2,)))
    pyro.factor("mu_prior", dist.Normal(0.0, 2.0).log_prob(mu).sum(-1))
    sigma = pyro.sample("sigma", dist.HalfNormal(2.0 * torch.ones(2, dtype=y.dtype)).to_event(1))
    theta = pyro.sample("theta", dist.Beta(5.0, 5.0))
    comp = dist.Normal(mu[..., None, :], sigma[..., None, :]).log_prob(y[:, None])
    weights = torch.stack([theta, 1 - theta], -1).log()[..., None, :]
    pyro.factor("y", torch.logsumexp(comp + weights, -1).sum(-1))
