"""A score whose cuts keep background at the same rate at every ``m``: the detector's score
replaced by its quantile among background-model samples at the event's ``m``.

A cut ``s(x) > t`` keeps background with an efficiency ``eps(m)`` that follows ``m`` whenever
the features do; where ``eps`` bends at the SR's scale, the sideband fit of a bump hunt
cannot follow and the cut sculpts (:func:`~pyroflows.anomaly.sculpting`,
:func:`~pyroflows.anomaly.sideband_check`). :class:`FlatInM` removes that dependence with
the background density a flow-based detector already has: at ``bins + 1`` equally spaced
nodes ``m_k`` across ``m_range`` it scores ``per_bin`` samples of ``p_bg(x | m_k)`` and maps
a score to the fraction of those samples scoring below it, interpolated linearly in ``m``
between the two nodes around the event's ``m``. For background that the density describes,
the new score is uniform on (0, 1) at every ``m`` (up to the interpolation's error, second
order in the node spacing), so a cut ``> 1 - eff`` keeps ``eff`` of the background at every
``m`` (up to the samples' binomial noise, ``sqrt(eff (1 - eff) / per_bin)`` per node, and the
density's error). At a fixed ``m`` the ranking is the detector's own.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pyroflows.anomaly.density import ConditionalDensity
from pyroflows.validation import positive_int

__all__ = ["FlatInM"]


class FlatInM:
    """A fitted detector's score, made flat in ``m`` for the background (module docstring).

    Args:
        detector: a fitted detector with ``score(x, m)`` (CATHODE, LaCATHODE, CWoLa, ...).
        background: the background density ``p_bg(x | m)`` to sample (None: the detector's
            ``background``, e.g. CATHODE's sideband flow); one trained on events inside the
            detector's signal region is refused.
        m_range: ``(low, high)`` of the ``m`` the scores will be asked for; events outside it
            are refused.
        bins: equal intervals across ``m_range``; their ``bins + 1`` edges are the nodes.
        per_bin: background samples per node.
        seed: seed of the samples.

    Example:
        >>> from pyroflows.datasets import bump_hunt
        >>> from pyroflows import anomaly as A
        >>> hunt = bump_hunt(20_000, 0.05, "strong", n_test_background=500, n_test_signal=50,
        ...                  n_extra_background=10, n_extra_signal=10, seed=0)
        >>> density = A.ConditionalDensity(layers=2, hidden=(16,), max_epochs=2)
        >>> cathode = A.CATHODE(A.SignalRegion(*hunt.sr), density, "hgb")
        >>> cathode = cathode.fit(hunt.data.x, hunt.data.m)
        >>> flat = FlatInM(cathode, m_range=(2.5, 4.5), bins=8, per_bin=500).fit()
        >>> s = flat.score(hunt.test.x, hunt.test.m)
        >>> s.shape, bool(s.min() >= 0 and s.max() <= 1)
        ((550,), True)
    """

    def __init__(
        self,
        detector: Any,
        background: ConditionalDensity | None = None,
        m_range: tuple[float, float] | None = None,
        bins: int = 40,
        per_bin: int = 20_000,
        seed: int = 0,
    ):
        self.detector = detector
        self.background = background if background is not None else getattr(
            detector, "background", None
        )  # fmt: skip
        if self.background is None or not hasattr(self.background, "sample"):
            raise ValueError(
                "FlatInM needs a background density with sample(m): pass background, or a "
                "detector that has one (CATHODE, LaCATHODE)"
            )
        region, m_train = (
            getattr(detector, "region", None),
            getattr(self.background, "m_train_", None),
        )
        if region is not None and m_train is not None and region.inside(m_train).any():
            raise ValueError(
                f"the background density was trained on {int(region.inside(m_train).sum())} "
                f"event(s) inside the detector's signal region ({region.low:.6g}, "
                f"{region.high:.6g}): it has learnt what the region holds (signal included), so "
                "its quantiles there are not the background's; pass a density trained on this "
                "region's sidebands (e.g. the detector's own background)"
            )
        if m_range is None:
            m_range = getattr(self.background, "m_range_", None)
        if m_range is None or not m_range[0] < m_range[1]:
            raise ValueError(f"m_range must be (low, high) with low < high, got {m_range}")
        self.m_range = (float(m_range[0]), float(m_range[1]))
        self.bins, self.per_bin = positive_int("bins", bins), positive_int("per_bin", per_bin)
        self.seed = seed

    def fit(self) -> FlatInM:
        """Score ``per_bin`` background samples at each node (sorted, kept per node)."""
        self.nodes_ = np.linspace(*self.m_range, self.bins + 1)
        m = np.repeat(self.nodes_, self.per_bin)
        x = self.background.sample(m, seed=self.seed)
        s = np.asarray(self.detector.score(x, m), float)
        if not np.isfinite(s).all():
            raise ValueError(f"{int((~np.isfinite(s)).sum())} background samples have a "
                             "non-finite score: the quantiles would be wrong")  # fmt: skip
        self.reference_ = np.sort(s.reshape(self.bins + 1, self.per_bin), axis=1)
        return self

    def _cdf(self, k: int, s: np.ndarray) -> np.ndarray:
        ref = self.reference_[k]
        below = np.searchsorted(ref, s, "left")
        return (below + 0.5 * (np.searchsorted(ref, s, "right") - below)) / self.per_bin

    def score(self, x: Any, m: Any) -> np.ndarray:
        """The fraction of the background samples that score below the event (ties count
        half) at the two nodes around its ``m``, interpolated linearly in ``m``, ``(n,)`` in
        [0, 1]; NaN where the detector's score is not finite (counted by the detector, never
        dropped)."""
        if not hasattr(self, "reference_"):
            raise RuntimeError("FlatInM is not fitted: call fit() first")
        m = np.asarray(m, float).reshape(-1)
        low, high = self.m_range
        outside = ~((m >= low) & (m <= high))
        if outside.any():
            raise ValueError(
                f"{int(outside.sum())} event(s) have m outside m_range [{low:.6g}, {high:.6g}] "
                "(or NaN): no background quantiles there"
            )
        s = np.asarray(self.detector.score(x, m), float)
        if len(s) != len(m):
            raise ValueError(f"x and m differ in length ({len(s)} scores, {len(m)} m)")
        b = np.clip(np.searchsorted(self.nodes_, m, side="right") - 1, 0, self.bins - 1)
        w = (m - self.nodes_[b]) / (self.nodes_[b + 1] - self.nodes_[b])
        out = np.full(len(s), np.nan)
        for k in np.unique(b):
            rows = (b == k) & ~np.isnan(s)
            lower, upper = self._cdf(k, s[rows]), self._cdf(k + 1, s[rows])
            out[rows] = (1 - w[rows]) * lower + w[rows] * upper
        return out
