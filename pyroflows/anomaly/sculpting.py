"""Sculpting check: does a cut on the anomaly score bias the bump hunt's background estimate?

A bump hunt estimates the background in the signal region (SR) by fitting a smooth function to
the ``m`` spectrum in the sidebands and interpolating it into the SR. After a cut on the
anomaly score the same fit runs on the selected events. The cut *sculpts* when the selected
background in the SR no longer follows the interpolation: a score that learned the SR's ``m``
(CWoLa on features that depend on ``m``) selects SR-like background and carves a fake bump.

A mere change of the spectrum's slope is not sculpting: when the features depend on ``m``,
every selection on the features (the idealized detector's too) changes how many events pass at
each ``m``, smoothly, and the sideband fit follows that. Comparing the selected ``m``
histogram with the unselected one (a χ² test) flags every method alike for that reason, so
:func:`sculpting` instead measures what a bump hunt would see:

* ``pull``: (observed - predicted) / uncertainty of the selected background in the SR, where
  the prediction comes from a Poisson fit of ``exp(cubic in log m)`` to the selected
  sideband histogram within two SR widths of the SR (both adjustable), and the uncertainty
  combines the observed count's Poisson error and the fit's. A selection independent of ``m``
  (or smooth in ``m``) gives pulls of about N(0, 1); a fake bump gives a large positive pull;
* ``bias``: observed / predicted - 1, the fake excess as a fraction of the background;
* ``efficiency_ratio``: per ``m`` bin, the fraction of events kept divided by the fraction kept
  overall (1 everywhere for a score decorrelated from ``m``), to see the shape.

Pass *background* events (truth labels, or an independent background sample) that were not
used to train the detector, over the SR and its sidebands. The cut keeps the fraction
``efficiency`` of the background events inside the SR, as a cut chosen on the SR would.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["sculpting"]


def _poisson_fit(t: np.ndarray, counts: np.ndarray, degree: int) -> tuple[np.ndarray, np.ndarray]:
    """Poisson maximum likelihood of ``log mu = X c`` with ``X = [1, t, ..., t^degree]`` by
    Newton steps; returns the coefficients and their covariance (inverse Fisher matrix)."""
    X = np.vander(t, degree + 1, increasing=True)
    c = np.linalg.lstsq(X, np.log(counts + 0.5), rcond=None)[0]

    def loglik(c):
        eta = X @ c
        return float(counts @ eta - np.exp(eta).sum())

    for _ in range(100):
        mu = np.exp(X @ c)
        fisher = X.T @ (mu[:, None] * X)
        step = np.linalg.lstsq(fisher, X.T @ (counts - mu), rcond=None)[0]
        before, scale = loglik(c), 1.0
        while loglik(c + scale * step) < before and scale > 1e-6:
            scale /= 2  # damped Newton: never lower the likelihood
        c = c + scale * step
        if np.abs(scale * step).max() < 1e-10:
            break
    mu = np.exp(X @ c)
    return c, np.linalg.inv(X.T @ (mu[:, None] * X))


def sculpting(
    m,
    scores,
    region,
    efficiencies=(0.2, 0.05),
    *,
    window: float | None = None,
    bins_per_region: int = 4,
    degree: int = 3,
    nonfinite: str = "raise",
) -> list[dict]:
    """The bias that a cut on ``scores`` puts into the sideband-fit background estimate in the
    SR (see the module docstring).

    Args:
        m: resonant feature of *background* events not used in training, ``(n,)``.
        scores: their anomaly scores (higher = more anomalous), ``(n,)``.
        region: the :class:`~pyroflows.anomaly.SignalRegion`.
        efficiencies: fractions of the SR background each cut keeps.
        window: the fit uses sidebands ``[low - window, low]`` and ``[high, high + window]``
            (None: two SR widths).
        bins_per_region: bins across the SR (the sideband bins have the same width).
        degree: degree of the polynomial in ``log m`` for ``log`` of the expected counts.
        nonfinite: ``"raise"`` on NaN / inf scores, or ``"lowest"`` (NaN never selected).

    Returns:
        one dict per efficiency, plus the first entry for no cut (``efficiency`` 1.0, the fit's
        own baseline): ``efficiency``, ``observed``, ``predicted``, ``predicted_error``,
        ``bias``, ``pull``, ``fit_chi2_ndf`` (Pearson χ² per degree of freedom of the sideband
        fit), ``edges`` and ``efficiency_ratio`` (per bin).

    Example:
        >>> from pyroflows.anomaly import SignalRegion
        >>> rng = np.random.default_rng(0)
        >>> region = SignalRegion(3.3, 3.7)
        >>> m = 2.1 * (1 - rng.uniform(0.0, 0.97, 200_000)) ** (-1 / 3)  # falling spectrum
        >>> fake_bump = -np.abs(m - 3.5) + rng.normal(0, 0.3, m.size)  # selects the SR's m
        >>> smooth = m + rng.normal(0, 1.0, m.size)  # favours high m, smoothly
        >>> [round(sculpting(m, s, region, (0.2,))[1]["pull"], 1) for s in (smooth, fake_bump)]
        [-0.7, 7.1]
    """
    from pyroflows.anomaly.metrics import _rankable

    m = np.asarray(m, float).reshape(-1)
    s, _ = _rankable(scores, nonfinite)
    if m.shape != s.shape:
        raise ValueError(f"m {m.shape} and scores {s.shape} differ in length")
    if degree < 0 or bins_per_region < 1:
        raise ValueError(f"need degree >= 0 and bins_per_region >= 1, got {degree}, "
                         f"{bins_per_region}")  # fmt: skip
    effs = [float(e) for e in efficiencies]
    if not all(0 < e <= 1 for e in effs):
        raise ValueError(f"efficiencies must be in (0, 1], got {efficiencies}")
    edges, sr_bins, t = _binning(region, window, bins_per_region)
    if sum(~sr_bins) <= degree + 1:
        raise ValueError(f"{sum(~sr_bins)} sideband bins cannot constrain a degree-{degree} fit")
    in_sr = region.inside(m)
    if in_sr.sum() < 10:
        raise ValueError(f"only {int(in_sr.sum())} events in the signal region")
    full = np.histogram(m, edges)[0].astype(float)
    out = []
    for eff in [1.0, *effs]:
        if eff == 1.0:
            chosen = np.ones(len(m), bool)
        else:
            # keep the top `eff` of the SR background; events outside the SR pass the same cut
            k = max(1, int(round(eff * in_sr.sum())))
            threshold = np.sort(s[in_sr])[::-1][k - 1]
            chosen = s >= threshold
        counts = np.histogram(m[chosen], edges)[0].astype(float)
        side = ~sr_bins
        if (counts[side] == 0).all():
            raise ValueError(f"no selected sideband event at efficiency {eff}")
        c, cov = _poisson_fit(t[side], counts[side], degree)
        X = np.vander(t, degree + 1, increasing=True)
        mu = np.exp(X @ c)
        predicted = float(mu[sr_bins].sum())
        grad = (mu[sr_bins, None] * X[sr_bins]).sum(0)
        predicted_error = float(np.sqrt(grad @ cov @ grad))
        observed = float(counts[sr_bins].sum())
        ndf = max(int(side.sum()) - degree - 1, 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            fit_chi2 = float(np.sum((counts[side] - mu[side]) ** 2 / mu[side]) / ndf)
            ratio = np.where(full > 0, counts / full, np.nan) / (chosen.sum() / len(m))
        out.append({
            "efficiency": eff,
            "observed": observed,
            "predicted": predicted,
            "predicted_error": predicted_error,
            "bias": observed / predicted - 1.0,
            "pull": float((observed - predicted) / np.sqrt(predicted + predicted_error**2)),
            "fit_chi2_ndf": fit_chi2,
            "edges": edges,
            "efficiency_ratio": ratio,
        })  # fmt: skip
    return out


def _binning(region: Any, window: float | None, bins_per_region: int):
    """Edges, the SR bins' mask and the fit variable ``t`` of :func:`sculpting`'s binning
    (shared with :mod:`~pyroflows.anomaly.forecast`); ``region`` a ``SignalRegion``."""
    width = region.high - region.low
    window = 2 * width if window is None else float(window)
    step = width / bins_per_region
    n_side = int(round(window / step))
    if n_side < 1:
        raise ValueError(f"window {window} is narrower than one bin ({step})")
    edges = region.low + step * np.arange(-n_side, bins_per_region + n_side + 1)
    sr_bins = np.zeros(len(edges) - 1, bool)
    sr_bins[n_side : n_side + bins_per_region] = True
    centres = 0.5 * (edges[1:] + edges[:-1])
    t = np.log(centres / region.center) / np.log(edges[-1] / edges[0])
    return edges, sr_bins, t
