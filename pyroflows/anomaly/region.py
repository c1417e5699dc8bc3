"""The one signal-region / sideband definition every method shares."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["SignalRegion"]


@dataclass(frozen=True)
class SignalRegion:
    """A window ``low < m < high`` in the resonant feature; the sidebands are the rest.

    Args:
        low, high: the signal region's edges.
        sideband_width: the width of the "nearby" sidebands ``[low - w, low]`` and
            ``[high, high + w]`` that CWoLa compares with the SR (None: all of the sidebands).

    Example:
        >>> sr = SignalRegion(3.3, 3.7, sideband_width=0.2)
        >>> m = np.array([3.0, 3.2, 3.5, 3.8, 4.5])
        >>> [mask.astype(int).tolist() for mask in (sr.inside(m), sr.sidebands(m))]
        [[0, 0, 1, 0, 0], [1, 1, 0, 1, 1]]
        >>> sr.near_sidebands(m).astype(int).tolist()
        [0, 1, 0, 1, 0]
    """

    low: float
    high: float
    sideband_width: float | None = 0.2

    def __post_init__(self):
        if not self.low < self.high:
            raise ValueError(f"the signal region needs low < high, got ({self.low}, {self.high})")
        if self.sideband_width is not None and not self.sideband_width > 0:  # NaN too
            raise ValueError(f"sideband_width must be positive, got {self.sideband_width}")

    def inside(self, m) -> np.ndarray:
        """Events in the signal region."""
        m = np.asarray(m, float).reshape(-1)
        return (m > self.low) & (m < self.high)

    def sidebands(self, m) -> np.ndarray:
        """Events outside the signal region."""
        m = np.asarray(m, float).reshape(-1)
        return (m <= self.low) | (m >= self.high)

    def near_sidebands(self, m) -> np.ndarray:
        """Sideband events within ``sideband_width`` of the signal region."""
        if self.sideband_width is None:
            return self.sidebands(m)
        m = np.asarray(m, float).reshape(-1)
        w = self.sideband_width
        return ((m > self.low - w) & (m <= self.low)) | ((m >= self.high) & (m < self.high + w))

    @property
    def center(self) -> float:
        return 0.5 * (self.low + self.high)
