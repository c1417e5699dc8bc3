"""Gaussian processes of posteriordb: a GP regression (hyper-parameters only, the latent
function integrated out) and a GP Poisson regression (whitened latent function)."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch import Tensor


def _exp_quad(x: Tensor, alpha: Tensor, rho: Tensor) -> Tensor:
    """Stan's ``gp_exp_quad_cov``: ``alpha^2 exp(-(x_i - x_j)^2 / (2 rho^2))``, batched."""
    sq = (x[:, None] - x[None, :]).square()
    return alpha[..., None, None].square() * torch.exp(-sq / (2 * rho[..., None, None].square()))


def _hyper() -> tuple[Tensor, Tensor]:
    rho = pyro.sample("rho", dist.Gamma(25.0, 4.0))
    alpha = pyro.sample("alpha", dist.HalfNormal(2.0))
    return rho, alpha


def gp_regr(x: Tensor, y: Tensor) -> None:
    """posteriordb ``gp_regr``: ``rho ~ Gamma(25, 4)``, ``alpha ~ HalfNormal(2)``,
    ``sigma ~ HalfNormal(1)``, ``y ~ MVN(0, K(alpha, rho) + sigma I)`` (Stan adds ``sigma``, not
    ``sigma^2``, to the diagonal; the port does the same)."""
    rho, alpha = _hyper()
    sigma = pyro.sample("sigma", dist.HalfNormal(1.0))
    eye = torch.eye(len(x), dtype=x.dtype)
    cov = _exp_quad(x, alpha, rho) + sigma[..., None, None] * eye
    scale_tril = torch.linalg.cholesky(cov)
    pyro.sample("y", dist.MultivariateNormal(torch.zeros_like(y), scale_tril=scale_tril), obs=y)


def gp_pois_regr(x: Tensor, k: Tensor) -> None:
    """posteriordb ``gp_pois_regr``: ``rho ~ Gamma(25, 4)``, ``alpha ~ HalfNormal(2)``,
    ``f_tilde ~ N(0, I)``, ``f = chol(K(alpha, rho) + 1e-10 I) f_tilde``,
    ``k ~ Poisson(exp(f))``.

    The Cholesky factor is computed in float64, as Stan does: in float32 the kernel plus
    ``1e-10 I`` is not numerically positive definite for length scales ``rho`` above about 8
    (on posteriordb's 11 inputs), which the posterior reaches."""
    rho, alpha = _hyper()
    f_tilde = pyro.sample("f_tilde", dist.Normal(torch.zeros_like(x), 1.0).to_event(1))
    eye = torch.eye(len(x), dtype=torch.float64)
    cov = _exp_quad(x.double(), alpha.double(), rho.double()) + 1e-10 * eye
    chol = torch.linalg.cholesky(cov).to(x.dtype)
    f = (chol @ f_tilde[..., None])[..., 0]
    pyro.sample("k", dist.Poisson(f.exp()).to_event(1), obs=k)
