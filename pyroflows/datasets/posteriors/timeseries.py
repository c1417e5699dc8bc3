"""Time series of posteriordb: ARMA(1, 1), AR(K), GARCH(1, 1) and a two-state Gaussian HMM.

The recursions run over time in Python, each step on every leading batch index at once.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from torch import Tensor

from pyroflows.datasets.posteriors.flat import flat


def arma11(y: Tensor) -> None:
    """posteriordb ``arma11``: ``mu ~ N(0, 10)``, ``phi, theta ~ N(0, 2)``,
    ``sigma ~ HalfCauchy(2.5)``; ``err_t = y_t - mu - phi y_{t-1} - theta err_{t-1}``
    (``nu_1 = mu + phi mu``) and ``err ~ N(0, sigma)``."""
    mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
    phi = pyro.sample("phi", dist.Normal(0.0, 2.0))
    theta = pyro.sample("theta", dist.Normal(0.0, 2.0))
    sigma = pyro.sample("sigma", dist.HalfCauchy(2.5))
    err = [y[0] - (mu + phi * mu)]
    for t in range(1, len(y)):
        err.append(y[t] - (mu + phi * y[t - 1] + theta * err[-1]))
    errors = torch.stack(err, -1)
    pyro.factor("y", dist.Normal(0.0, sigma[..., None]).log_prob(errors).sum(-1))


def ar_k(y: Tensor, lags: Tensor) -> None:
    """posteriordb ``arK``: ``alpha ~ N(0, 10)``, ``beta_k ~ N(0, 10)``,
    ``sigma ~ HalfCauchy(2.5)``, ``y_t ~ N(alpha + sum_k beta_k y_{t-k}, sigma)`` for
    ``t > K``; ``lags[t, k] = y_{t-k}`` and ``y`` holds the observations from ``K + 1`` on."""
    alpha = pyro.sample("alpha", dist.Normal(0.0, 10.0))
    beta = pyro.sample(
        "beta", dist.Normal(torch.zeros(lags.shape[-1], dtype=lags.dtype), 10.0).to_event(1)
    )
    sigma = pyro.sample("sigma", dist.HalfCauchy(2.5))
    mean = alpha[..., None] + beta @ lags.T
    pyro.sample("y", dist.Normal(mean, sigma[..., None]).to_event(1), obs=y)


def garch11(y: Tensor, sigma1: Tensor) -> None:
    """posteriordb ``garch11``: flat ``mu``, flat ``alpha0 > 0``, flat ``alpha1`` in (0, 1),
    flat ``beta1`` in ``(0, 1 - alpha1)``; ``sigma_t^2 = alpha0 + alpha1 (y_{t-1} - mu)^2 +
    beta1 sigma_{t-1}^2``, ``y_t ~ N(mu, sigma_t)``.

    ``beta1``'s upper bound depends on ``alpha1``; the port samples ``beta1_frac =
    beta1 / (1 - alpha1)`` on (0, 1) with the factor ``log(1 - alpha1)`` (the Jacobian), so
    that every site has a fixed support (autoguides fix each support at their first trace).
    """
    mu = pyro.sample("mu", flat())
    alpha0 = pyro.sample("alpha0", flat(constraints.positive))
    alpha1 = pyro.sample("alpha1", dist.Uniform(0.0, 1.0))
    frac = pyro.sample("beta1_frac", dist.Uniform(0.0, 1.0))
    pyro.factor("beta1_jacobian", torch.log1p(-alpha1))
    beta1 = frac * (1 - alpha1)
    var = [sigma1.square().expand(mu.shape)]
    for t in range(1, len(y)):
        var.append(alpha0 + alpha1 * (y[t - 1] - mu).square() + beta1 * var[-1])
    scale = torch.stack(var, -1).sqrt()
    pyro.sample("y", dist.Normal(mu[..., None], scale).to_event(1), obs=y)


def hmm_example(y: Tensor) -> None:
    """posteriordb ``hmm_example``: two hidden states, transition rows ``theta1, theta2``
    (uniform on the simplex), ``mu`` positive and ordered with ``mu_1 ~ N(3, 1)``,
    ``mu_2 ~ N(10, 1)``, ``y_t ~ N(mu_{z_t}, 1)``; the states are summed out by the forward
    algorithm."""
    ones = torch.ones(2, dtype=y.dtype)
    theta1 = pyro.sample("theta1", dist.Dirichlet(ones))
    theta2 = pyro.sample("theta2", dist.Dirichlet(ones))
    mu = pyro.sample("mu", flat(constraints.positive_ordered_vector, (2,)))
    prior = dist.Normal(torch.tensor([3.0, 10.0], dtype=y.dtype), 1.0).log_prob(mu).sum(-1)
    pyro.factor("mu_prior", prior)
    log_trans = torch.stack([theta1, theta2], -2).log()  # [..., from, to]
    gamma = dist.Normal(mu, 1.0).log_prob(y[0])
    for t in range(1, len(y)):
        emit = dist.Normal(mu, 1.0).log_prob(y[t])
        gamma = torch.logsumexp(gamma[..., :, None] + log_trans, -2) + emit
    pyro.factor("y", torch.logsumexp(gamma, -1))
