"""Likelihood-based metrics: Monte-Carlo KL against a known density, Gaussian KL, test
log-likelihood with its standard error."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from pyroflows.validation import to_numpy


class Estimate(NamedTuple):
    """A Monte-Carlo estimate and its standard error; unpacks as ``value, stderr``."""

    value: float
    stderr: float

    def __str__(self) -> str:
        return f"{self.value:.4g} ± {self.stderr:.2g}"


def _vector(x: Any, name: str) -> np.ndarray:
    arr = to_numpy(x).astype(np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one value per sample); got shape {arr.shape}")
    if arr.size < 2:
        raise ValueError(f"{name} has {arr.size} value(s); at least 2 are needed")
    if np.isnan(arr).any():
        raise ValueError(f"{name} contains NaN")
    return arr


def _mean_and_stderr(values: np.ndarray) -> Estimate:
    mean = float(values.mean())
    if not np.isfinite(values).all():
        return Estimate(mean, math.inf)
    return Estimate(mean, float(values.std(ddof=1) / math.sqrt(values.size)))


def kl_monte_carlo(
    log_p: np.ndarray | Callable[[Any], Any],
    log_q: np.ndarray | Callable[[Any], Any],
    x: Any = None,
) -> Estimate:
    """Monte-Carlo estimate of ``KL(p || q) = E_p[log p(x) - log q(x)]`` from draws of ``p``.

    Args:
        log_p: ``log p`` at the draws, shape ``(n,)``, or a function that computes it from ``x``.
        log_q: ``log q`` at the same draws, or a function of ``x``.
        x: the draws from ``p`` (needed when ``log_p`` or ``log_q`` is a function).

    Returns:
        ``Estimate(value, stderr)``: the sample mean of ``log p - log q`` and its standard
        error ``std / sqrt(n)``. Both are infinite when ``q`` vanishes at a draw.

    Example:
        >>> import numpy as np
        >>> from scipy import stats
        >>> x = np.random.default_rng(0).normal(size=20_000)
        >>> kl, se = kl_monte_carlo(stats.norm(0, 1).logpdf, stats.norm(1, 1).logpdf, x)
        >>> abs(kl - 0.5) < 3 * se  # the exact value is 0.5
        True
    """
    if callable(log_p) or callable(log_q):
        if x is None:
            raise ValueError("x (draws from p) is needed when log_p or log_q is a function")
        log_p = log_p(x) if callable(log_p) else log_p
        log_q = log_q(x) if callable(log_q) else log_q
    lp, lq = _vector(log_p, "log_p"), _vector(log_q, "log_q")
    if lp.shape != lq.shape:
        raise ValueError(f"log_p and log_q differ in shape: {lp.shape} vs {lq.shape}")
    if np.isposinf(lp).any():
        raise ValueError("log_p contains +inf")
    diff = lp - lq
    if np.isnan(diff).any():
        raise ValueError("log_p - log_q is NaN at some draw (log_p = log_q = -inf)")
    return _mean_and_stderr(diff)


def gaussian_kl(mean_p: Any, cov_p: Any, mean_q: Any, cov_q: Any) -> float:
    """Closed-form ``KL(N(mean_p, cov_p) || N(mean_q, cov_q))`` in nats.

    Example:
        >>> gaussian_kl([0.0], [[1.0]], [1.0], [[1.0]])
        0.5
    """
    mp = to_numpy(mean_p).astype(np.float64).ravel()
    mq = to_numpy(mean_q).astype(np.float64).ravel()
    lp = np.linalg.cholesky(np.atleast_2d(to_numpy(cov_p)).astype(np.float64))
    lq = np.linalg.cholesky(np.atleast_2d(to_numpy(cov_q)).astype(np.float64))
    d = mp.size
    trace = float(np.sum(np.linalg.solve(lq, lp) ** 2))  # tr(cov_q^-1 cov_p)
    maha = float(np.sum(np.linalg.solve(lq, mq - mp) ** 2))
    logdet = 2.0 * float(np.log(np.diag(lq)).sum() - np.log(np.diag(lp)).sum())
    return 0.5 * (trace + maha - d + logdet)


def test_log_likelihood(log_probs: Any) -> Estimate:
    """Mean test log-likelihood and its standard error ``std(ddof=1) / sqrt(n)``.

    Args:
        log_probs: ``log p(x_i)`` of held-out rows, shape ``(n,)`` (NumPy or torch).

    Example:
        >>> test_log_likelihood([-1.0, -2.0, -3.0])
        Estimate(value=-2.0, stderr=0.5773502691896258)
    """
    return _mean_and_stderr(_vector(log_probs, "log_probs"))


test_log_likelihood.__test__ = False  # not a pytest test, even when imported into a test module
