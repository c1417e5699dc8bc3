"""Is an observation one the simulator produces? A test in the summary network's space.

The summary network maps data to the flow's context. :class:`SummaryReference` holds the
embeddings of held-out simulations (not used in training): their mean, their covariance (with
a small ridge) and their own squared Mahalanobis distances, each measured out of fold (from
the mean and covariance of the other folds, as a new observation's is from all of them:
in-sample distances would be too small). An observation's distance is
compared with those: the p-value is ``(1 + #{reference distances >= its distance}) /
(n + 1)``, so for an observation the simulator produced the p-value is uniform (up to the
reference's finite size) and ``p < alpha`` fires at rate ``alpha``. An observation far outside
the simulations, or with another noise level, lands far from the embeddings' cloud and gets
a p-value near ``1 / (n + 1)``.

A small p-value says the posterior is an extrapolation of the networks: its draws are then not
to be trusted, however narrow they look.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from pyroflows.amortized.ensemble import not_for_ensembles
from pyroflows.amortized.observations import valid_rows
from pyroflows.amortized.one_observation import refuse_for_one_observation
from pyroflows.train.seeding import seeded
from pyroflows.validation import positive_int

if TYPE_CHECKING:  # the class these methods are part of (no import at run time)
    from pyroflows.amortized.posterior import AmortizedPosterior

#: the posterior (:class:`~pyroflows.amortized.posterior.AmortizedPosterior`), not imported
Posterior = Any

__all__ = [
    "MisspecificationCheck",
    "WARN_ALPHA",
    "CheckResult",
    "SummaryReference",
    "calibrate",
    "check_observation",
    "warn_if_outside",
]

#: :meth:`~pyroflows.AmortizedPosterior.sample` and ``log_prob`` warn for an observation with
#: a p-value below this (once a reference exists): about one false alarm in a thousand
#: observations from the model
WARN_ALPHA = 1e-3
#: the reference's distances are measured out of fold, in this many folds
FOLDS = 20
#: added to the seed of :func:`calibrate`'s simulations, so that they are not a fit's
#: simulations drawn with the same seed
CHECK_SEED_OFFSET = 0xC4EC


@dataclass(frozen=True)
class CheckResult:
    """The check of a batch of observations.

    Attributes:
        distance: squared Mahalanobis distance of each observation's summary, ``(B,)``.
        p_value: share of held-out simulations at least as far (with the ``+1`` of a
            rank test), ``(B,)``.
        alpha: the level used for ``misspecified``.
        misspecified: ``p_value < alpha``, ``(B,)``.
    """

    distance: Tensor
    p_value: Tensor
    alpha: float
    misspecified: Tensor


class SummaryReference:
    """Mean, covariance and squared Mahalanobis distances of reference embeddings ``(n, k)``.

    Example:
        >>> ref = SummaryReference(torch.randn(999, 3, generator=torch.Generator().manual_seed(0)))
        >>> ref.p_values(torch.tensor([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0]]))
        tensor([1.0000, 0.0010], dtype=torch.float64)
    """

    def __init__(self, embeddings: Tensor, ridge: float = 1e-6, folds: int = FOLDS):
        e = embeddings.detach().to(torch.float64)
        if e.dim() != 2 or len(e) < 10:
            raise ValueError(
                f"the reference needs at least 10 embeddings (n, k), got {tuple(e.shape)}"
            )
        self.mean, self._chol = _gaussian(e, ridge)
        # each reference distance is measured from a mean and covariance fitted without it, as
        # an observation's is: in-sample distances are too small (by about k / n on average),
        # so ordinary observations would fire the check more often than its level
        size = -(-len(e) // min(folds, len(e)))  # contiguous folds (slices work on any device)
        out = [
            _distance(e[i : i + size], *_gaussian(torch.cat([e[:i], e[i + size :]]), ridge))
            for i in range(0, len(e), size)
        ]
        self.distances = torch.cat(out).sort().values

    def distance(self, embeddings: Tensor) -> Tensor:
        """Squared Mahalanobis distances ``(B,)`` of embeddings ``(B, k)``."""
        return _distance(embeddings.detach().to(self.mean.device, torch.float64), self.mean,
                         self._chol)  # fmt: skip

    def p_values(self, embeddings: Tensor) -> Tensor:
        """``(1 + #{reference distances >= d}) / (n + 1)`` for each embedding's distance."""
        d = self.distance(embeddings)
        n = len(self.distances)
        at_least = n - torch.searchsorted(self.distances, d, right=False)
        return (1 + at_least).to(torch.float64) / (n + 1)

    def check(self, embeddings: Tensor, alpha: float) -> CheckResult:
        if not 0 < alpha < 1:
            raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
        d, p = self.distance(embeddings), self.p_values(embeddings)
        return CheckResult(d, p, float(alpha), p < alpha)


def _gaussian(e: Tensor, ridge: float) -> tuple[Tensor, Tensor]:
    """The mean and the Cholesky factor of the covariance of embeddings ``e``, with ``ridge``
    times its mean variance added to the diagonal."""
    mean = e.mean(0)
    centred = e - mean
    cov = centred.T @ centred / (len(e) - 1)
    scale = cov.diagonal().mean().clamp_min(1e-12)
    ridge_eye = ridge * scale * torch.eye(len(cov), dtype=cov.dtype, device=cov.device)
    return mean, torch.linalg.cholesky(cov + ridge_eye)


def _distance(e: Tensor, mean: Tensor, chol: Tensor) -> Tensor:
    """Squared Mahalanobis distances of rows ``e`` for ``mean`` and a Cholesky factor."""
    white = torch.linalg.solve_triangular(chol, (e - mean).T, upper=False)
    return (white**2).sum(0)


def warn_if_outside(reference: SummaryReference | None, embeddings: Tensor) -> None:
    """A ``RuntimeWarning`` naming the observations whose p-value is below
    :data:`WARN_ALPHA` (nothing without a reference)."""
    if reference is None:
        return
    p = reference.p_values(embeddings)
    bad = torch.nonzero(p < WARN_ALPHA).flatten().tolist()
    if bad:
        shown = ", ".join(str(i) for i in bad[:10]) + (" ..." if len(bad) > 10 else "")
        warnings.warn(
            f"{len(bad)} observation(s) (index {shown}) lie outside what the simulator "
            f"produces (summary-space p-value < {WARN_ALPHA}; check_observation gives the "
            "p-values): their posterior is an extrapolation. Turn this off with "
            "posterior.warn_misspecified = False",
            RuntimeWarning,
            stacklevel=3,
        )


def _embeddings(post: Posterior, batch: Tensor) -> Tensor:
    """The summaries of a checked batch of observations, on the CPU, without graph."""
    with torch.inference_mode():
        return post._context(batch).cpu()


def calibrate(
    post: Posterior, num_simulations: int = 1000, x: Tensor | None = None, seed: int = 0
) -> SummaryReference:
    """The reference of a fitted posterior: the summaries of held-out simulations (``x``
    given, or ``num_simulations`` simulated from a stream of ``seed + CHECK_SEED_OFFSET``,
    the global random state left as it was); simulations with non-finite values are left
    out. Changes nothing in ``post``."""
    post._check_fitted()
    if x is None:
        with seeded(seed, CHECK_SEED_OFFSET):
            _, x = post._simulate_many(positive_int("num_simulations", num_simulations))
    batch, _ = post.observations.check(x)
    # NaN rows that pad a set to a common size are data the summary reads, not bad values
    batch = batch[valid_rows(batch, post.observations.nan_padding)]
    return SummaryReference(_embeddings(post, batch))


def check_observation(post: Posterior, x: Any, alpha: float = 0.05) -> CheckResult:
    """The test of observations ``x`` against ``post.reference`` (set by :func:`calibrate`
    with its defaults first when there is none)."""
    post._check_fitted()
    if post.reference is None:
        post.reference = calibrate(post)
    batch, _ = post.observations.check(x)
    return post.reference.check(_embeddings(post, batch), alpha)


class MisspecificationCheck:
    """The misspecification check's methods of
    :class:`~pyroflows.amortized.posterior.AmortizedPosterior` (on its ``reference``)."""

    def calibrate_check(
        self,
        num_simulations: int = 1000,
        *,
        x: Tensor | None = None,
        seed: int = 0,
    ) -> AmortizedPosterior:
        """Set the misspecification check's reference
        (:mod:`~pyroflows.amortized.misspecification`): the summaries of held-out simulations
        (``x`` given, or ``num_simulations`` simulated here from a stream of ``seed`` that a
        ``fit(..., seed=seed)`` does not draw; the global random state is left as it was). Then
        :meth:`sample` and :meth:`log_prob` warn for observations outside them."""
        not_for_ensembles(self, "calibrate_check")
        refuse_for_one_observation(self, "calibrate_check")
        self.reference = calibrate(self, num_simulations, x, seed)
        return self

    def check_observation(self, x: Any, alpha: float = 0.05) -> CheckResult:
        """Is ``x`` (one observation or a batch) like the simulations? A test of its summary
        against held-out simulations' (:meth:`calibrate_check`, run here with its defaults
        when there is no reference yet): squared Mahalanobis distances, p-values and
        ``misspecified = p < alpha``; for data the model produces, ``p < alpha`` happens
        at rate ``alpha``.

        Example:
            >>> import pyro.distributions as dist
            >>> from pyroflows.amortized import AmortizedPosterior
            >>> prior = dist.Normal(torch.zeros(2), 1.0).to_event(1)
            >>> post = AmortizedPosterior(prior=prior, simulator=lambda t: t + torch.randn_like(t),
            ...                           flow_kwargs=dict(layers=1, hidden=(8,)))
            >>> post = post.fit(num_simulations=200, max_epochs=1, progress=False, seed=0,
            ...                 recipe="one_phase")
            >>> post.check_observation(torch.tensor([[0.5, -1.0], [40.0, 0.0]])).misspecified
            tensor([False,  True])
        """
        not_for_ensembles(self, "check_observation")
        return check_observation(self, x, alpha)
