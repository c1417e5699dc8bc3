"""Linear regressions of posteriordb (earnings, kidiq, mesquite, nes, kilpisjarvi, sblr,
diamonds) as one Pyro model with the priors of each Stan program.

Stan leaves a parameter without a prior statement flat (on its constrained support); the port
uses :func:`~pyroflows.datasets.posteriors.flat.flat` (log-density 0) there, so the posterior
is the same. The design
matrix ``X`` holds the predictors of the Stan program's linear predictor in its order (a column
of ones for an intercept), so ``beta`` keeps the Stan coefficients' order.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from torch import Tensor

from pyroflows.datasets.posteriors.flat import flat


def _beta_prior(X: Tensor, beta_loc, beta_scale):
    k = X.shape[-1]
    if beta_scale is None:
        return flat(constraints.real, (k,))
    loc = torch.as_tensor(0.0 if beta_loc is None else beta_loc, dtype=X.dtype).expand(k)
    return dist.Normal(loc, torch.as_tensor(beta_scale, dtype=X.dtype).expand(k)).to_event(1)


def _sigma_prior(kind: str, scale: float):
    if kind == "flat":
        return flat(constraints.positive)
    if kind == "half_cauchy":
        return dist.HalfCauchy(scale)
    if kind == "half_normal":
        return dist.HalfNormal(scale)
    raise ValueError(f"unknown sigma prior {kind!r}")


def linear_regression(
    X: Tensor,
    y: Tensor,
    beta_loc: Tensor | float | None = None,
    beta_scale: Tensor | float | None = None,
    sigma_prior: str = "flat",
    sigma_scale: float = 1.0,
) -> None:
    """``y ~ N(X beta, sigma)``; ``beta`` flat (``beta_scale=None``) or
    ``N(beta_loc, beta_scale)``; ``sigma`` flat on ``(0, inf)``, half-Cauchy or half-normal.

    Latent sites: ``beta`` (shape ``(K,)``), ``sigma``.
    """
    beta = pyro.sample("beta", _beta_prior(X, beta_loc, beta_scale))
    sigma = pyro.sample("sigma", _sigma_prior(sigma_prior, sigma_scale))
    mean = beta @ X.T
    pyro.sample("y", dist.Normal(mean, sigma[..., None]).to_event(1), obs=y)


def diamonds(Xc: Tensor, y: Tensor) -> None:
    """posteriordb ``diamonds`` (brms): ``b ~ N(0, 1)`` (24 centred predictors),
    ``Intercept ~ t_3(8, 10)``, ``sigma ~ half-t_3(0, 10)``, ``y ~ N(Intercept + Xc b, sigma)``.
    """
    b = pyro.sample("b", dist.Normal(torch.zeros(Xc.shape[-1], dtype=Xc.dtype), 1.0).to_event(1))
    intercept = pyro.sample("Intercept", dist.StudentT(3.0, 8.0, 10.0))
    sigma = pyro.sample("sigma", dist.FoldedDistribution(dist.StudentT(3.0, 0.0, 10.0)))
    mean = intercept[..., None] + b @ Xc.T
    pyro.sample("y", dist.Normal(mean, sigma[..., None]).to_event(1), obs=y)
