"""A sculpting check that needs no truth labels: does a cut on the score distort the ``m``
spectrum of the sidebands?

:func:`~pyroflows.anomaly.sculpting` needs background events known to be background in the SR
(a simulation); on real data the SR may hold signal. :func:`sideband_check` runs the same
bump-hunt fit where the data are background as far as the search goes: in the sidebands. The
events outside the SR are cut on the score; then, for *validation windows* of the SR's width
in the sidebands, an ``exp(polynomial in log m)`` Poisson fit to the selected sideband
spectrum, with the SR and the window left out, predicts the window's count; the pull of the
observed count is what a bump hunt in that window would report. A score that selects events
by their ``m`` (directly, or through features correlated with ``m``) bends the selected
spectrum where the polynomial cannot follow and the pulls grow; a score independent of ``m``
gives pulls of about N(0, 1).

What it sees and what it does not: it tests the score's ``m`` dependence *in the sidebands*. A
score whose kept fraction bends mostly inside the SR can pass it and still sculpt there
(``benchmarks/results/anomaly_sculpting.md``: it missed one of CATHODE's fake bumps, pull +5.0,
on the development setting, and warns in 1-1.5 % of toy cases that do not sculpt). A score
made flat in ``m`` (:class:`~pyroflows.anomaly.FlatInM`) removes the cause rather than
detecting it; :func:`~pyroflows.anomaly.flow_sculpting_check` looks inside the SR with the
background flow's samples. Pass sideband events the detector was *not trained on* (for
CATHODE and LaCATHODE every sideband event: their classifier sees only the SR; for CWoLa hold
the nearby sidebands out).
"""

from __future__ import annotations

import warnings

import numpy as np

from pyroflows.anomaly.region import SignalRegion
from pyroflows.anomaly.sculpting import _poisson_fit

__all__ = ["SculptingWarning", "sideband_check"]


class SculptingWarning(UserWarning):
    """A cut on the anomaly score distorts the ``m`` spectrum (a bump hunt would be biased)."""


def _windows(edges: np.ndarray, sr_bins: np.ndarray, per: int) -> list[np.ndarray]:
    """Masks of the validation windows: ``per`` bins each, adjacent to the SR and further out
    by ``per`` bins, as long as at least ``per`` fit bins remain beyond them (interpolation,
    never extrapolation)."""
    n = len(edges) - 1
    first, last = int(np.argmax(sr_bins)), int(n - 1 - np.argmax(sr_bins[::-1]))
    out = []
    start = first - per
    while start - per >= 0:  # left of the SR
        mask = np.zeros(n, bool)
        mask[start : start + per] = True
        out.append(mask)
        start -= per
    start = last + 1
    while start + 2 * per <= n:  # right of the SR
        mask = np.zeros(n, bool)
        mask[start : start + per] = True
        out.append(mask)
        start += per
    return sorted(out, key=lambda w: int(np.argmax(w)))


def sideband_check(
    m,
    scores,
    region: SignalRegion,
    efficiencies=(0.2, 0.05),
    *,
    reference_scores=None,
    window: float | None = None,
    bins_per_region: int = 4,
    degree: int = 3,
    threshold: float = 3.0,
    nonfinite: str = "raise",
    warn: bool = True,
) -> dict:
    """Pulls of validation windows in the sidebands after cuts on ``scores`` (see the module
    docstring).

    Args:
        m: resonant feature of events *outside* the SR that the detector was not trained on,
            ``(n,)`` (events inside the SR are refused).
        scores: their anomaly scores (higher = more anomalous), ``(n,)``.
        region: the :class:`~pyroflows.anomaly.SignalRegion`.
        efficiencies: the cuts, each keeping this fraction of ``reference_scores``.
        reference_scores: the scores that set the cuts (the SR data's: the cut a search would
            apply); None: the sideband events' own scores within the fit range.
        window: the fit range is ``[low - window, high + window]`` (None: two SR widths).
        bins_per_region: bins across the SR; a validation window has as many.
        degree: degree of the polynomial in ``log m`` of ``log`` of the expected counts.
        threshold: flag sculpting when a cut's ``|pull|`` exceeds it in any window.
        nonfinite: ``"raise"`` on NaN / inf scores, or ``"lowest"`` (NaN never selected).
        warn: give a :class:`SculptingWarning` when sculpting is flagged or the fit does not
            describe the spectrum before any cut.

    Returns:
        ``efficiencies`` (1.0, the no-cut baseline, first), ``windows`` (``[low, high]`` of
        each), ``observed``, ``predicted``, ``predicted_error`` (the fit's) and ``pulls``
        (``(observed - predicted) / sqrt(predicted + predicted_error^2)``; arrays of cuts x
        windows),
        ``max_abs_pull`` (over the cuts), ``fit_ok`` (every no-cut ``|pull|`` within
        ``threshold``: else the fit family does not describe the spectrum and the check cannot
        judge the cuts) and ``sculpts`` (a cut's ``|pull|`` exceeds ``threshold``).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> region = SignalRegion(3.3, 3.7)
        >>> m = 2.1 * (1 - rng.uniform(0.0, 0.97, 400_000)) ** (-1 / 3)  # falling spectrum
        >>> m = m[region.sidebands(m)]
        >>> flat = rng.uniform(size=m.size)  # independent of m
        >>> peaked = -np.abs(m - 3.5) + rng.normal(0, 0.2, m.size)  # prefers m near the SR
        >>> [sideband_check(m, s, region, warn=False)["sculpts"] for s in (flat, peaked)]
        [False, True]
    """
    from pyroflows.anomaly.metrics import _rankable

    m = np.asarray(m, float).reshape(-1)
    s, _ = _rankable(scores, nonfinite)
    if m.shape != s.shape:
        raise ValueError(f"m {m.shape} and scores {s.shape} differ in length")
    if not np.isfinite(m).all():
        raise ValueError("m has NaN or infinite values")
    inside = int(region.inside(m).sum())
    if inside:
        raise ValueError(
            f"{inside} event(s) lie inside the signal region: the check uses sideband events "
            "only (the SR may hold signal); pass m and scores of the events outside it"
        )
    if degree < 0 or bins_per_region < 1 or not threshold > 0:
        raise ValueError(f"need degree >= 0, bins_per_region >= 1 and threshold > 0, got "
                         f"{degree}, {bins_per_region}, {threshold}")  # fmt: skip
    effs = [float(e) for e in efficiencies]
    if not effs or not all(0 < e < 1 for e in effs):
        raise ValueError(f"efficiencies must be in (0, 1), got {efficiencies}")
    width = region.high - region.low
    window = 2 * width if window is None else float(window)
    step = width / bins_per_region
    n_side = int(round(window / step))
    edges = region.low + step * np.arange(-n_side, bins_per_region + n_side + 1)
    sr_bins = np.zeros(len(edges) - 1, bool)
    sr_bins[n_side : n_side + bins_per_region] = True
    masks = _windows(edges, sr_bins, bins_per_region)
    if not masks:
        raise ValueError(
            f"a fit range of {window} each side of the SR leaves no validation window of the "
            f"SR's width with fit bins beyond it: pass window >= {2 * width}"
        )
    if (~sr_bins).sum() - bins_per_region <= degree + 1:
        raise ValueError(f"too few sideband bins for a degree-{degree} fit around a window")
    in_range = (m > edges[0]) & (m < edges[-1])
    if in_range.sum() < 10:
        raise ValueError(f"only {int(in_range.sum())} events within the fit range "
                         f"[{edges[0]:.6g}, {edges[-1]:.6g}]")  # fmt: skip
    if reference_scores is None:
        reference = s[in_range]
    else:
        reference, _ = _rankable(reference_scores, nonfinite)
        if len(reference) == 0:
            raise ValueError("reference_scores is empty")
    ranked = np.sort(reference)[::-1]
    centres = 0.5 * (edges[1:] + edges[:-1])
    t = np.log(centres / region.center) / np.log(edges[-1] / edges[0])
    X = np.vander(t, degree + 1, increasing=True)
    shape = (len(effs) + 1, len(masks))
    observed, predicted, pulls = np.zeros(shape), np.zeros(shape), np.zeros(shape)
    errors = np.zeros(shape)
    for i, eff in enumerate([1.0, *effs]):
        chosen = np.ones(len(m), bool)
        if eff < 1.0:
            chosen = s >= ranked[max(1, int(round(eff * len(ranked)))) - 1]
        counts = np.histogram(m[chosen], edges)[0].astype(float)
        for j, mask in enumerate(masks):
            fit_bins = ~sr_bins & ~mask
            if (counts[fit_bins] == 0).all():
                raise ValueError(f"no selected event in the fit bins at efficiency {eff}")
            c, cov = _poisson_fit(t[fit_bins], counts[fit_bins], degree)
            mu = np.exp(X @ c)
            pred = float(mu[mask].sum())
            grad = (mu[mask, None] * X[mask]).sum(0)
            error = float(np.sqrt(grad @ cov @ grad))
            observed[i, j], predicted[i, j], errors[i, j] = counts[mask].sum(), pred, error
            pulls[i, j] = (counts[mask].sum() - pred) / np.sqrt(pred + error**2)
    fit_ok = bool(np.all(np.abs(pulls[0]) <= threshold))
    max_abs = float(np.abs(pulls[1:]).max())
    out = {
        "efficiencies": [1.0, *effs],
        "windows": [[float(edges[np.argmax(w)]), float(edges[len(w) - np.argmax(w[::-1])])]
                    for w in masks],
        "observed": observed, "predicted": predicted, "predicted_error": errors, "pulls": pulls,
        "max_abs_pull": max_abs, "fit_ok": fit_ok, "sculpts": max_abs > threshold,
    }  # fmt: skip
    if warn and not fit_ok:
        warnings.warn(
            f"sideband_check: before any cut the fit misses a validation window by "
            f"{np.abs(pulls[0]).max():.1f} sigma: the fit family does not describe this "
            "spectrum, so the check cannot judge the cuts (change degree or window)",
            SculptingWarning, stacklevel=2,
        )  # fmt: skip
    elif warn and out["sculpts"]:
        warnings.warn(
            f"sideband_check: a cut on the score moves a sideband validation window by "
            f"{max_abs:.1f} sigma from the fit (threshold {threshold}): selecting on this "
            "score sculpts the m spectrum, and a bump hunt on the selected events would be "
            "biased", SculptingWarning, stacklevel=2,
        )  # fmt: skip
    return out
