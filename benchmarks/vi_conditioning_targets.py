"""Development targets of ``benchmarks/vi_conditioning.py``, each with reference draws.

- ``linreg_*``: Bayesian linear regressions with known noise whose predictors are strongly
  correlated and whose coefficient scales differ by orders of magnitude; the posterior is
  Gaussian in closed form, so the reference draws are exact.
- ``logistic``: a logistic regression with correlated predictors of different scales; reference
  draws from a long Pyro NUTS run, cached under ``results/``.
- ``funnel``: Neal's 10-D funnel (exact draws; its log density is unbounded, no MAP).
- ``hierarchical``: a centred normal hierarchical model with known group sds (synthetic data,
  10 groups); exact draws: ``(mu, log tau)`` from a fine grid of their marginal posterior,
  the group means from their Gaussian conditional.

Every target is ``(model, args, names, reference)``: the reference is an ``(n, D)`` array in
the guide's unconstrained coordinates (``log tau`` for the scale), columns in site order.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import torch

RESULTS = Path(__file__).parent / "results"


def _design(n, d, rho, log10_scales, seed):
    """``n x d`` predictors, equicorrelated at ``rho``, column ``j`` scaled by ``10^s_j``."""
    g = np.random.default_rng(seed)
    cov = rho * np.ones((d, d)) + (1 - rho) * np.eye(d)
    x = g.standard_normal((n, d)) @ np.linalg.cholesky(cov).T
    return x * 10.0 ** np.asarray(log10_scales)


def linreg(d, rho, spread, n=100, prior_sd=1e3, noise=1.0, seed=0):
    """A regression posterior with exact draws; also returns its condition number."""
    scales = np.linspace(-spread, spread, d)
    x = _design(n, d, rho, scales, seed)
    g = np.random.default_rng(seed + 1)
    beta = g.standard_normal(d) / 10.0**scales
    y = x @ beta + noise * g.standard_normal(n)
    precision = x.T @ x / noise**2 + np.eye(d) / prior_sd**2
    cov = np.linalg.inv(precision)
    mean = cov @ x.T @ y / noise**2
    X, Y = torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)

    def model(X, Y):
        b = pyro.sample("beta", dist.Normal(torch.zeros(d), prior_sd).to_event(1))
        with pyro.plate("data", len(Y)):
            pyro.sample("y", dist.Normal((X * b).sum(-1), noise), obs=Y)

    ref = np.random.default_rng(seed + 2).multivariate_normal(mean, cov, 4000)
    return model, (X, Y), [f"beta[{j}]" for j in range(d)], ref, float(np.linalg.cond(cov))


def _logistic_data(d=5, n=400, seed=3):
    scales = np.linspace(-1, 1, d)
    x = _design(n, d, 0.95, scales, seed)
    g = np.random.default_rng(seed + 1)
    beta = g.uniform(0.5, 1.5, d) * np.sign(g.standard_normal(d)) / 10.0**scales / math.sqrt(d)
    y = (g.random(n) < 1 / (1 + np.exp(-(x @ beta + 0.3)))).astype(np.float32)
    return torch.tensor(x, dtype=torch.float32), torch.tensor(y)


def logistic_model(X, Y):
    d = X.shape[1]
    a = pyro.sample("alpha", dist.Normal(0.0, 10.0))
    b = pyro.sample("beta", dist.Normal(torch.zeros(d), 10.0).to_event(1))
    with pyro.plate("data", len(Y)):
        pyro.sample("y", dist.Bernoulli(logits=a + (X * b).sum(-1)), obs=Y)


def logistic(num_samples=4000, warmup=1000):
    """The logistic target; its NUTS reference is cached (regenerated when absent)."""
    X, Y = _logistic_data()
    path = RESULTS / "vi_conditioning_logistic_nuts.npy"
    if not path.exists():
        from pyro.infer import MCMC, NUTS

        pyro.set_rng_seed(0)
        mcmc = MCMC(NUTS(logistic_model), num_samples, warmup, disable_progbar=True)
        mcmc.run(X, Y)
        s = mcmc.get_samples()
        RESULTS.mkdir(exist_ok=True)
        np.save(path, torch.cat([s["alpha"][:, None], s["beta"]], -1).numpy())
    names = ["alpha"] + [f"beta[{j}]" for j in range(X.shape[1])]
    return logistic_model, (X, Y), names, np.load(path)


def funnel_model():
    v = pyro.sample("v", dist.Normal(0.0, 3.0))
    pyro.sample("x", dist.Normal(0.0, torch.exp(v / 2).unsqueeze(-1).expand(v.shape + (9,)))
                .to_event(1))  # fmt: skip


def funnel(n=4000, seed=1):
    g = torch.Generator().manual_seed(seed)
    v = 3.0 * torch.randn(n, 1, generator=g)
    ref = torch.cat([v, torch.exp(v / 2) * torch.randn(n, 9, generator=g)], -1).numpy()
    return funnel_model, (), ["v"] + [f"x[{j}]" for j in range(9)], ref


HIER_Y = torch.tensor([12.0, -3.0, 7.5, 1.0, 20.0, 4.0, -8.0, 10.0, 2.5, 6.0])
HIER_SIGMA = torch.tensor([10.0, 8.0, 12.0, 9.0, 15.0, 7.0, 11.0, 10.0, 6.0, 13.0])


def hierarchical_model(y, sigma):
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("groups", len(y)):
        theta = pyro.sample("theta", dist.Normal(mu, tau))
        pyro.sample("y", dist.Normal(theta, sigma), obs=y)


def hierarchical(n=4000, seed=2):
    y, s = HIER_Y.double().numpy(), HIER_SIGMA.double().numpy()
    mu = np.linspace(-20, 30, 600)
    log_tau = np.linspace(-9, 5, 700)
    M, L = np.meshgrid(mu, log_tau, indexing="ij")
    T = np.exp(L)
    var = s**2 + T[..., None] ** 2
    log_post = (-0.5 * M**2 / 25 + np.log(2 / (math.pi * 5 * (1 + T**2 / 25))) + L
                - 0.5 * (np.log(var) + (y - M[..., None]) ** 2 / var).sum(-1))  # fmt: skip
    w = np.exp(log_post - log_post.max()).ravel()
    g = np.random.default_rng(seed)
    idx = g.choice(w.size, n, p=w / w.sum())
    dm, dl = mu[1] - mu[0], log_tau[1] - log_tau[0]
    m = M.ravel()[idx] + dm * (g.random(n) - 0.5)
    lt = L.ravel()[idx] + dl * (g.random(n) - 0.5)
    t2 = np.exp(2 * lt)[:, None]
    post_var = 1 / (1 / t2 + 1 / s**2)
    post_mean = post_var * (m[:, None] / t2 + y / s**2)
    theta = post_mean + np.sqrt(post_var) * g.standard_normal((n, len(y)))
    ref = np.column_stack([m, lt, theta])
    names = ["mu", "log tau"] + [f"theta[{j}]" for j in range(len(y))]
    return hierarchical_model, (HIER_Y, HIER_SIGMA), names, ref


def development_targets(only=None) -> dict:
    """The targets by name (those in ``only``, all when None), each ``(model, args, names,
    reference, info)``."""
    out = {}
    for name, (d, rho, spread) in {
        "linreg_d5_cond1e3": (5, 0.9, 0.5),
        "linreg_d8_cond3e4": (8, 0.95, 0.75),
        "linreg_d10_cond1e6": (10, 0.99, 1.0),
    }.items():
        model, args, names, ref, cond = linreg(d, rho, spread)
        out[name] = (model, args, names, ref, {"condition_number": cond})
    for name, make in (("logistic", logistic), ("funnel", funnel), ("hierarchical", hierarchical)):
        if only is None or name in only:
            out[name] = (*make(), {})
    return {k: v for k, v in out.items() if only is None or k in only}
