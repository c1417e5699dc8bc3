"""Synthetic targets with exact samplers: a funnel, a banana, a bimodal mixture, a
heavy-tailed Student-t and an LKJ prior on a correlation matrix.

Each target is a Pyro model without observations (the joint density is the target) and a
sampler ``exact(n, seed) -> {site: array}`` that draws from it exactly; ``dtype`` sets the
dtype of the model's constants.
"""

from __future__ import annotations

import math

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints

from pyroflows.datasets.posteriors.flat import flat


def funnel10(dtype: torch.dtype = torch.float32) -> None:
    """Neal's funnel: ``v ~ N(0, 3)``, ``x_i | v ~ N(0, exp(v / 2))``, ``i = 1..9``."""
    v = pyro.sample("v", dist.Normal(torch.zeros((), dtype=dtype), 3.0))
    scale = torch.exp(v / 2)[..., None].expand(v.shape + (9,))
    pyro.sample("x", dist.Normal(0.0, scale).to_event(1))


def funnel10_exact(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    v = 3.0 * rng.standard_normal(n)
    return {"v": v, "x": np.exp(v / 2)[:, None] * rng.standard_normal((n, 9))}


def banana6(dtype: torch.dtype = torch.float32) -> None:
    """Three independent bananas: ``a_k ~ N(0, 2)``, ``b_k | a_k ~ N((a_k^2 - 4) / 2, 1)``."""
    a = pyro.sample("a", dist.Normal(torch.zeros(3, dtype=dtype), 2.0).to_event(1))
    pyro.sample("b", dist.Normal((a.square() - 4) / 2, 1.0).to_event(1))


def banana6_exact(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = 2.0 * rng.standard_normal((n, 3))
    return {"a": a, "b": (a**2 - 4) / 2 + rng.standard_normal((n, 3))}


MIX_WEIGHT, MIX_SHIFT, MIX_DIM = 0.3, 2.0, 4


def bimodal4(dtype: torch.dtype = torch.float32) -> None:
    """``x ~ 0.3 N(-2 * 1, I) + 0.7 N(2 * 1, I)`` in 4-D: two modes 8 units apart."""
    x = pyro.sample("x", flat(constraints.real_vector, (MIX_DIM,)))
    lp = dist.Normal(0.0, 1.0).log_prob
    log_a = math.log(MIX_WEIGHT) + lp(x + MIX_SHIFT).sum(-1)
    log_b = math.log(1 - MIX_WEIGHT) + lp(x - MIX_SHIFT).sum(-1)
    pyro.factor("density", torch.logaddexp(log_a, log_b))


def bimodal4_exact(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    sign = np.where(rng.random(n) < MIX_WEIGHT, -1.0, 1.0)
    return {"x": MIX_SHIFT * sign[:, None] + rng.standard_normal((n, MIX_DIM))}


def _t_scale_tril(dtype: torch.dtype = torch.float64) -> torch.Tensor:
    corr = 0.5 * torch.ones(5, 5, dtype=dtype) + 0.5 * torch.eye(5, dtype=dtype)
    return torch.linalg.cholesky(corr)


def student_t5(dtype: torch.dtype = torch.float32) -> None:
    """A 5-D Student-t with 3 degrees of freedom and correlation 0.5 (heavy tails)."""
    pyro.sample(
        "x", dist.MultivariateStudentT(3.0, torch.zeros(5, dtype=dtype), _t_scale_tril(dtype))
    )


def student_t5_exact(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, 5)) @ _t_scale_tril().numpy().T
    return {"x": z / np.sqrt(rng.chisquare(3.0, n) / 3.0)[:, None]}


def lkj4(dtype: torch.dtype = torch.float32) -> None:
    """The Cholesky factor of a 4 x 4 correlation matrix with an LKJ(2) prior (6 free
    parameters on the ``corr_cholesky`` support)."""
    pyro.sample("L", dist.LKJCholesky(4, torch.tensor(2.0, dtype=dtype)))


def lkj4_exact(n: int, seed: int, dim: int = 4, eta: float = 2.0) -> dict[str, np.ndarray]:
    """The onion method (Lewandowski, Kurowicka and Joe 2009, section 3.2), row by row of the
    Cholesky factor: row ``k`` is ``(sqrt(y) u, sqrt(1 - y))`` with ``u`` uniform on the unit
    sphere of ``R^k`` and ``y ~ Beta(k / 2, eta + (dim - 2) / 2 - (k - 1) / 2)``.

    (``torch.distributions.LKJCholesky.sample`` in torch 2.13 draws ``y`` from other Beta
    parameters: its correlations are not exchangeable for ``dim >= 3``, e.g. variances 0.143
    and 0.186 where LKJ(2) in 4-D gives 1/7 to all; the score-identity test catches it.)
    """
    rng = np.random.default_rng(seed)
    out = np.zeros((n, dim, dim))
    out[:, 0, 0] = 1.0
    for k in range(1, dim):
        y = rng.beta(k / 2, eta + (dim - 2) / 2 - (k - 1) / 2, n)
        u = rng.standard_normal((n, k))
        u /= np.linalg.norm(u, axis=-1, keepdims=True)
        out[:, k, :k] = np.sqrt(y)[:, None] * u
        out[:, k, k] = np.sqrt(1 - y)
    return {"L": out}
