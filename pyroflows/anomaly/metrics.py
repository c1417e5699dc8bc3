"""Evaluation of anomaly scores: non-finite counts, ROC and SIC curves, max SIC with a
statistical cut, significance after a cut and median / 68 % bands (the sculpting check is in
:mod:`pyroflows.anomaly.sculpting`).

SIC (significance improvement characteristic) is ``TPR / sqrt(FPR)``: the factor by which a cut
on the score multiplies ``S / sqrt(B)``. Its maximum is dominated by the few most anomalous
background events, so :func:`max_sic` only considers cuts that keep at least
``min_background`` background test events (its statistical cut).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "SICCurve",
    "band",
    "count_nonfinite",
    "max_sic",
    "sic_curve",
    "significance",
    "significance_after_cut",
]


def count_nonfinite(scores) -> dict[str, int]:
    """How many scores are NaN, +inf and -inf.

    Example:
        >>> count_nonfinite([0.1, np.nan, np.inf, -np.inf, np.nan])
        {'nan': 2, 'posinf': 1, 'neginf': 1}
    """
    s = np.asarray(scores, float)
    return {
        "nan": int(np.isnan(s).sum()),
        "posinf": int(np.isposinf(s).sum()),
        "neginf": int(np.isneginf(s).sum()),
    }


def _rankable(scores, nonfinite: str) -> tuple[np.ndarray, dict[str, int]]:
    """Scores ready to rank, with the counts of non-finite ones. ``nonfinite="raise"`` refuses
    them; ``"lowest"`` ranks NaN below every other score (the event is never selected) and
    keeps +inf / -inf at the extremes. Nothing is dropped."""
    s = np.asarray(scores, float).reshape(-1)
    counts = count_nonfinite(s)
    if sum(counts.values()):
        if nonfinite == "raise":
            raise ValueError(
                f"{sum(counts.values())} non-finite score(s) {counts}: fix the model, or pass "
                "nonfinite='lowest' to rank them (NaN as least anomalous), counted"
            )
        if nonfinite != "lowest":
            raise ValueError(f"nonfinite must be 'raise' or 'lowest', got {nonfinite!r}")
        s = np.where(np.isnan(s), -np.inf, s)
    return s, counts


@dataclass
class SICCurve:
    """ROC and SIC along the cuts on the score, from the tightest to the loosest.

    Attributes:
        tpr, fpr: signal and background efficiencies of each cut.
        thresholds: the cut (select ``score >= threshold``).
        n_signal, n_background: test events of each class.
        nonfinite: counts of NaN / +inf / -inf scores (all kept, see :func:`sic_curve`).
    """

    tpr: np.ndarray
    fpr: np.ndarray
    thresholds: np.ndarray
    n_signal: int
    n_background: int
    nonfinite: dict[str, int]

    @property
    def sic(self) -> np.ndarray:
        """``TPR / sqrt(FPR)`` (NaN where no background is selected)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(self.fpr > 0, self.tpr / np.sqrt(self.fpr), np.nan)

    @property
    def auc(self) -> float:
        """Area under the ROC curve."""
        return float(np.trapezoid(self.tpr, self.fpr))

    def selected_background(self) -> np.ndarray:
        """The number of background test events each cut keeps."""
        return np.rint(self.fpr * self.n_background).astype(int)


def sic_curve(labels, scores, nonfinite: str = "raise") -> SICCurve:
    """ROC / SIC curve of ``scores`` (higher = more signal-like) against truth ``labels`` (0/1).

    Args:
        labels: 1 for signal, 0 for background.
        scores: one per event.
        nonfinite: ``"raise"`` (default) on any NaN / inf score, or ``"lowest"`` to rank NaN
            as the least anomalous; the counts are in ``.nonfinite`` either way.

    Example:
        >>> curve = sic_curve([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9])
        >>> curve.auc
        1.0
    """
    from sklearn.metrics import roc_curve

    y = np.asarray(labels).reshape(-1)
    s, counts = _rankable(scores, nonfinite)
    if y.shape != s.shape or not np.isin(y, (0, 1)).all() or len(np.unique(y)) < 2:
        raise ValueError("labels must be 0/1, one per score, with both classes present")
    # roc_curve cannot rank infinities: map them to just beyond the finite range, same order
    finite = s[np.isfinite(s)]
    lo, hi = (finite.min(), finite.max()) if len(finite) else (0.0, 0.0)
    span = max(hi - lo, 1.0)
    s = np.clip(s, lo - span, hi + span)
    fpr, tpr, thresholds = roc_curve(y, s, drop_intermediate=False)
    return SICCurve(tpr, fpr, thresholds, int(y.sum()), int((y == 0).sum()), counts)


def max_sic(labels, scores, min_background: int = 50, nonfinite: str = "raise") -> dict:
    """The largest SIC over the cuts that keep at least ``min_background`` background test
    events (the statistical cut: without it the maximum is set by one or two events).

    Returns:
        ``{"max_sic", "tpr", "fpr", "threshold", "selected_background", "nonfinite"}``.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> y = np.repeat([0, 1], [10_000, 1_000])
        >>> perfect = max_sic(y, y + 0.0, min_background=100)
        >>> round(perfect["max_sic"], 2)  # TPR 1 at FPR 100 / 10 000: 1 / sqrt(0.01)
        10.0
    """
    curve = sic_curve(labels, scores, nonfinite)
    return _max_of(curve, min_background)


def _max_of(curve: SICCurve, min_background: int) -> dict:
    if min_background > curve.n_background:
        raise ValueError(
            f"min_background={min_background} exceeds the {curve.n_background} background "
            "test events"
        )
    # a cut can keep any number of events between two thresholds' counts when scores tie:
    # interpolate the ROC at exactly min_background if the first allowed point lies beyond it.
    fpr_min = max(min_background, 1) / curve.n_background
    tpr_at = float(np.interp(fpr_min, curve.fpr, curve.tpr))
    ok = curve.fpr >= fpr_min
    sic = curve.sic[ok]
    candidates = [(tpr_at / np.sqrt(fpr_min), tpr_at, fpr_min, np.nan)]
    if ok.any():
        i = int(np.nanargmax(sic))
        candidates.append((sic[i], curve.tpr[ok][i], curve.fpr[ok][i], curve.thresholds[ok][i]))
    best = max(candidates, key=lambda c: c[0])
    return {
        "max_sic": float(best[0]),
        "tpr": float(best[1]),
        "fpr": float(best[2]),
        "threshold": float(best[3]),
        "selected_background": int(round(best[2] * curve.n_background)),
        "nonfinite": curve.nonfinite,
    }


def significance(s, b) -> float:
    """Asimov discovery significance ``sqrt(2 ((s + b) ln(1 + s / b) - s))`` of ``s`` signal
    over ``b`` expected background events (``s / sqrt(b)`` when ``s << b``).

    Example:
        >>> round(significance(10, 10_000), 3), round(significance(0, 100), 3)
        (0.1, 0.0)
    """
    s, b = float(s), float(b)
    if not (np.isfinite(b) and b > 0):
        raise ValueError(f"the background count must be finite and positive, got {b}")
    if not (np.isfinite(s) and s >= 0):
        raise ValueError(f"the signal count must be finite and >= 0, got {s}")
    return float(np.sqrt(2.0 * ((s + b) * np.log1p(s / b) - s)))


def significance_after_cut(
    labels, scores, n_signal: float, n_background: float, fpr: float, nonfinite: str = "raise"
) -> dict:
    """Expected significance in the SR before and after the cut that keeps a fraction ``fpr``
    of the background, given ``n_signal`` and ``n_background`` SR events before it (the
    efficiencies are measured on the labelled test events).

    Returns:
        ``{"before", "after", "tpr", "fpr", "improvement"}`` (Asimov significances).
    """
    if not 0 < fpr <= 1:
        raise ValueError(f"fpr (the share of background kept) must lie in (0, 1], got {fpr}")
    curve = sic_curve(labels, scores, nonfinite)
    tpr = float(np.interp(fpr, curve.fpr, curve.tpr))
    before = significance(n_signal, n_background)
    after = significance(n_signal * tpr, n_background * fpr)
    return {
        "before": before,
        "after": after,
        "tpr": tpr,
        "fpr": fpr,
        "improvement": after / before if before > 0 else float("nan"),
    }


def band(values) -> dict[str, float]:
    """Median and central 68 % band (16th and 84th percentiles) of ``values`` over seeds.

    Example:
        >>> {k: round(v, 2) for k, v in band([1.0, 2.0, 3.0]).items()}
        {'median': 2.0, 'low': 1.32, 'high': 2.68, 'n': 3}
    """
    v = np.asarray(values, float)
    if v.size == 0:
        raise ValueError("band needs at least one value")
    low, median, high = np.percentile(v, [16, 50, 84])
    return {"median": float(median), "low": float(low), "high": float(high), "n": int(v.size)}
