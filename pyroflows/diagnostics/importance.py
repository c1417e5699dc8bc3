"""Reliability of importance weights: effective sample size and the Pareto k-hat of PSIS.

``k_hat < 0.5``: the proposal (a guide, a fitted flow) is good and importance-sampling
estimates converge at the usual rate; ``0.5 <= k_hat < 0.7``: usable with care; ``k_hat >= 0.7``:
the estimates are unreliable (Vehtari et al. 2015, "Pareto smoothed importance sampling";
Yao et al. 2018, "Yes, but did it work?").
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from pyro import poutine
from pyro.infer.importance import vectorized_importance_weights
from pyro.ops.stats import fit_generalized_pareto
from pyro.poutine.subsample_messenger import SubsampleMessenger, _Subsample
from torch import Tensor

from pyroflows.train.losses import log_mean_exp
from pyroflows.validation import positive_int

__all__ = ["PSISResult", "ess", "pareto_k", "psis"]


def ess(log_weights: Tensor) -> float:
    """Kish's effective sample size ``(sum w)^2 / sum w^2`` of unnormalised log-weights
    (``+inf`` log-weights: their count; NaN, or every weight zero: ``ValueError``).

    Example:
        >>> round(ess(torch.zeros(100)), 6)
        100.0
    """
    log_weights = _checked(log_weights, "ess")
    top = torch.isposinf(log_weights)
    if bool(top.any()):  # the infinite weights share all the mass equally
        return float(top.sum())
    return float(
        torch.exp(2 * torch.logsumexp(log_weights, 0) - torch.logsumexp(2 * log_weights, 0))
    )


def _checked(log_weights: Tensor, name: str) -> Tensor:
    """Flat float64 log-weights; NaN refused (a weight that is not a number cannot be left
    out without changing the answer), all ``-inf`` (every weight zero) refused."""
    lw = torch.as_tensor(log_weights).detach().double().flatten()
    nan = int(torch.isnan(lw).sum())
    if nan:
        raise ValueError(
            f"{name}: {nan} of {len(lw)} log-weights are NaN (a log density of the model or "
            "the proposal was NaN at those draws); they cannot be left out silently"
        )
    if len(lw) == 0 or bool(torch.isneginf(lw).all()):
        raise ValueError(f"{name}: every weight is zero (all log-weights are -inf) or none given")
    return lw


def pareto_k(log_weights: Tensor) -> float:
    """Pareto k-hat: shape of a generalised Pareto fitted to the largest weights (the tail of
    ``min(n / 5, 3 sqrt(n))`` weights, as in PSIS and Pyro's ``psis_diagnostic``). ``inf``
    when a few weights are over ``1e15`` times all the others (no tail left to fit) or a
    log-weight is ``+inf``, ``-inf`` when the largest weights are tied. Zero weights (``-inf``)
    are left out of the fit; NaN log-weights are refused (``ValueError``).

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> pareto_k(torch.randn(10000, generator=g) * 0.1) < 0.5  # nearly equal weights
        True
    """
    lw = _checked(log_weights, "pareto_k")
    if bool(torch.isposinf(lw).any()):  # an infinite weight: no tail is heavier
        return math.inf
    lw = lw[torch.isfinite(lw)]  # zero weights (-inf) add nothing to the tail
    n = len(lw)
    if n < 20:
        raise ValueError(f"pareto_k needs at least 20 finite weights, got {n}")
    lw = torch.sort(lw - lw.max()).values
    tail = int(math.ceil(min(0.2 * n, 3.0 * math.sqrt(n))))
    cutoff = max(math.log(1e-15), float(lw[-tail - 1]))
    lw_tail = lw[lw > cutoff]
    if len(lw_tail) < 5:
        # fewer than 5 weights within 1e-15 of the largest: one weight dominates (k = inf);
        # otherwise the largest weights are tied (k = -inf, perfectly balanced)
        return math.inf if float(lw[-tail - 1]) < math.log(1e-15) else -math.inf
    k, _ = fit_generalized_pareto(lw_tail.exp() - math.exp(cutoff))
    return float(k)


@contextmanager
def _full_plates() -> Iterator[None]:
    """Every ``pyro.plate(name, size, subsample_size=m)`` opened inside the block covers all
    ``size`` indices (scale 1), in model and guide alike. A plate given an explicit
    ``subsample`` is left as it is."""
    original = SubsampleMessenger._subsample

    def full(name, size=None, subsample_size=None, subsample=None, use_cuda=None, device=None):
        if size is not None and subsample is None and subsample_size is not None:
            subsample_size = size
        return original(name, size, subsample_size, subsample, use_cuda, device)

    SubsampleMessenger._subsample = staticmethod(full)
    try:
        yield
    finally:
        SubsampleMessenger._subsample = staticmethod(original)


@dataclass
class PSISResult:
    """Importance weights of a guide against its model.

    Attributes:
        k_hat: Pareto k-hat (reliability: < 0.5 good, > 0.7 unreliable).
        ess: effective sample size of the ``num_particles`` weights.
        log_evidence: importance-sampling estimate of ``log p(data)``.
        log_weights: the weights ``log p(x, z) - log q(z)``.
    """

    k_hat: float
    ess: float
    log_evidence: float
    log_weights: Tensor

    @property
    def num_particles(self) -> int:
        return len(self.log_weights)

    def __repr__(self) -> str:
        return (
            f"PSISResult(k_hat={self.k_hat:.3f}, ess={self.ess:.1f}, "
            f"log_evidence={self.log_evidence:.4f}, num_particles={self.num_particles})"
        )


def psis(
    model: Callable,
    guide: Callable,
    *args,
    num_particles: int = 1000,
    max_simultaneous: int | None = None,
    max_plate_nesting: int = 7,
    **kwargs,
) -> PSISResult:
    """Pareto k-hat, ESS and log-evidence of ``guide`` as an importance proposal for ``model``.

    Model and guide must be vectorisable (static structure, plates), as for
    :func:`pyro.infer.importance.psis_diagnostic`; draws are taken in chunks of
    ``max_simultaneous`` particles (default all at once). A plate with ``subsample_size`` is
    evaluated on its full size (model and guide see every index), so the weights are those of
    the whole data, not of one random minibatch.

    Raises:
        ValueError: ``num_particles`` or ``max_simultaneous`` not a positive integer, or fewer
            than 20 finite weights.
    """
    num_particles = positive_int("num_particles", num_particles)
    if max_simultaneous is not None:
        max_simultaneous = positive_int("max_simultaneous", max_simultaneous)
    with _full_plates(), torch.no_grad(), poutine.block():
        trace = poutine.trace(model).get_trace(*args, **kwargs)
    partial = [
        f"{name!r} ({len(site['value'])} of {site['fn'].size})"
        for name, site in trace.nodes.items()
        if site["type"] == "sample"
        and isinstance(site["fn"], _Subsample)
        and len(site["value"]) < site["fn"].size
    ]
    if partial:
        raise ValueError(
            f"psis: the model passes an explicit subsample to plate {', '.join(partial)}; the "
            "weights would be those of that subset, not of the data (log-evidence and k-hat "
            "of a minibatch). Call it with the full plate"
        )
    chunk = max_simultaneous or num_particles
    parts = []
    with torch.no_grad(), _full_plates():
        for start in range(0, num_particles, chunk):
            size = min(chunk, num_particles - start)
            lw, _, _ = vectorized_importance_weights(
                model, guide, *args, num_samples=size, max_plate_nesting=max_plate_nesting,
                **kwargs,
            )  # fmt: skip
            parts.append(lw.detach().reshape(-1))
    log_weights = torch.cat(parts)
    log_evidence = float(log_mean_exp(log_weights.double()))
    return PSISResult(pareto_k(log_weights), ess(log_weights), log_evidence, log_weights)
