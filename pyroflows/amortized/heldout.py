"""The calibration check of every fit on its held-out simulations.

A fit keeps part of its simulations out of training (the validation split offline, the
validation simulations online). Those pairs ``(theta, x)`` come from the joint distribution the
posterior is meant to invert, so simulation-based calibration on them costs no simulation: the
rank of each true ``theta`` among ``DRAWS`` posterior draws for its ``x`` is uniform when the
posterior is calibrated (:func:`pyroflows.diagnostics.sbc`). :func:`heldout_check` runs it on up
to ``MAX_ROWS`` held-out pairs after the fit, keeps the result as ``posterior.heldout_sbc_`` and
warns (:class:`CalibrationWarning`) when a parameter's uniformity test rejects at ``ALPHA``
(Bonferroni over the parameters), saying whether that parameter's posterior is too narrow, too
wide or shifted. It also warns when, on at least ``SPREAD_ROWS`` pairs, a parameter's mean
squared z-score (:attr:`~pyroflows.diagnostics.SBCResult.mean_z2`; 1 for the exact posterior,
and above 1 rather than below for a heavy-tailed one) is below ``SPREAD_Z2``: the draws'
standard deviation is more than twice the error of their mean, which rare outlying draws
cause without moving the ranks much (e.g. a spline flow whose outer bins map the base's tail
far out when the posterior is much narrower than the prior).

The held-out pairs also chose the kept epoch and family, which makes the check slightly
favourable to the posterior: a warning is a strong signal, the absence of one is not proof of
calibration (run :func:`pyroflows.diagnostics.sbc` on fresh simulations for that). Weighted fits
(whose target is the posterior under the reweighted prior) and ensemble members (whose splits
differ) are not checked; ``heldout_sbc_`` is None for them.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from torch import Tensor

from pyroflows.diagnostics.calibration import SBCResult, sbc

__all__ = [
    "ALPHA",
    "DRAWS",
    "MAX_ROWS",
    "MIN_ROWS",
    "SPREAD_ROWS",
    "SPREAD_Z2",
    "CalibrationWarning",
    "heldout_check",
]

#: At most this many held-out pairs are checked (the first of a random split).
MAX_ROWS = 1000
#: Fewer held-out pairs than this: no check (the test would have little power).
MIN_ROWS = 50
#: Posterior draws per held-out pair.
DRAWS = 50
#: Family-wise level of the uniformity tests (Bonferroni over the parameters).
ALPHA = 1e-3
#: The spread check needs this many held-out pairs (its mean is noisy for a posterior with
#: a rare wide component).
SPREAD_ROWS = 200
#: A mean squared z-score below this (draws' sd over twice their mean's error) is an
#: inflated spread.
SPREAD_Z2 = 0.25


class CalibrationWarning(UserWarning):
    """A posterior's draws are not calibrated on the fit's held-out simulations."""


def describe(pit: np.ndarray) -> str:
    """What a parameter's PIT values ``(N,)`` say about its posterior: a spread of the PIT
    values above a uniform's (the true values in the draws' tails) means too narrow, below it
    too wide; a mean away from 1/2 means shifted (low mean: the draws lie above the truth).

    Example:
        >>> describe(np.r_[np.full(50, 0.01), np.full(50, 0.99)])
        'too narrow (overconfident)'
        >>> describe(np.full(100, 0.2))
        'too wide (underconfident), shifted up'
    """
    se = 1.0 / np.sqrt(12.0 * len(pit))
    words = []
    spread = float(np.var(pit)) * 12.0  # 1 for a uniform
    if spread > 1.0 + 4.0 * np.sqrt(0.8 / len(pit)):
        words.append("too narrow (overconfident)")
    elif spread < 1.0 - 4.0 * np.sqrt(0.8 / len(pit)):
        words.append("too wide (underconfident)")
    shift = float(np.mean(pit)) - 0.5
    if abs(shift) > 4.0 * se:
        words.append("shifted " + ("up" if shift < 0 else "down"))
    return ", ".join(words) or "not uniform"


def heldout_check(post: Any, theta: Tensor, x: Tensor, seed: int | None) -> SBCResult | None:
    """SBC of ``post`` on held-out simulations ``theta`` ``(N, dim)``, ``x``; warns
    :class:`CalibrationWarning` naming each rejected parameter (ranks not uniform, or an
    inflated spread on at least ``SPREAD_ROWS`` pairs). None (no check) for fewer than
    ``MIN_ROWS`` pairs. The draws are seeded with ``seed`` (0 when None) on forked random
    streams, so the caller's streams are left as they were.
    """
    n = min(len(theta), MAX_ROWS)
    if n < MIN_ROWS:
        return None
    result = sbc(post, theta=theta[:n], x=x[:n], num_posterior_samples=DRAWS, seed=seed or 0)
    dim = len(result.pvalues)
    parts = [
        f"{result.names[j]} (KS p = {result.pvalues[j]:.1g}: {describe(result.pit[:, j])})"
        for j in range(dim)
        if result.pvalues[j] < ALPHA / dim
    ]
    if n >= SPREAD_ROWS and result.mean_z2 is not None:
        parts += [
            f"{result.names[j]} (mean squared z-score {result.mean_z2[j]:.2g}: the draws' sd "
            f"is {1 / np.sqrt(result.mean_z2[j]):.1f} times the error of their mean, too wide "
            "or with outlying draws)"
            for j in range(dim)
            if result.mean_z2[j] < SPREAD_Z2
        ]
    if parts:
        warnings.warn(
            f"the posterior is not calibrated on {n} held-out simulations: "
            + "; ".join(parts)
            + ". More simulations or epochs, ensemble=k (more conservative) or another flow "
            "may help; the result is in heldout_sbc_ (its plot() shows the ranks)",
            CalibrationWarning,
            stacklevel=5,
        )
    return result
