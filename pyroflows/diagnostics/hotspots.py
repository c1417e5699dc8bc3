"""Hot-spot maps: :class:`Grid` (cells over a 2-D region), the cumulative accuracy profile of a
score map against events (:func:`cap_curve`, :func:`cap_auc`) and :func:`hit_rate`."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pyroflows.validation import check_data, to_numpy


@dataclass(frozen=True, eq=False)
class Grid:
    """A regular grid of rectangular cells over a 2-D region.

    Per-cell arrays have shape ``(nx, ny)`` and are indexed ``[i_x, i_y]``, the convention of
    ``numpy.histogram2d`` (for ``imshow`` pass the transpose with ``origin="lower"``, or
    ``pcolormesh(grid.x_edges, grid.y_edges, values.T)``).

    Attributes:
        x_edges: increasing cell boundaries along x, shape ``(nx + 1,)``.
        y_edges: increasing cell boundaries along y, shape ``(ny + 1,)``.

    Example:
        >>> grid = Grid.from_bounds(((0, 4), (0, 2)), resolution=(4, 2))
        >>> grid.shape, grid.centers()[:2].tolist()
        ((4, 2), [[0.5, 0.5], [0.5, 1.5]])
        >>> grid.evaluate(lambda xy: xy[:, 0]).tolist()[0]
        [0.5, 0.5]
        >>> grid.count([[0.2, 0.2], [3.9, 1.9], [3.5, 1.0]])[3].tolist()
        [0, 2]
    """

    x_edges: np.ndarray
    y_edges: np.ndarray

    def __post_init__(self) -> None:
        for name in ("x_edges", "y_edges"):
            edges = np.asarray(getattr(self, name), dtype=np.float64)
            if edges.ndim != 1 or edges.size < 2 or not np.all(np.diff(edges) > 0):
                raise ValueError(f"{name} must be at least 2 strictly increasing values")
            object.__setattr__(self, name, edges)

    @classmethod
    def from_bounds(
        cls,
        bounds: Sequence[Sequence[float]],
        resolution: int | Sequence[int] | None = None,
        cell_size: float | None = None,
    ) -> Grid:
        """Cells covering ``bounds = ((xmin, xmax), (ymin, ymax))``.

        Args:
            bounds: the region.
            resolution: number of cells per axis, an int or ``(nx, ny)``.
            cell_size: alternatively, the side of square cells; the upper bounds are extended
                to a whole number of cells.
        """
        (x0, x1), (y0, y1) = bounds
        if not (x1 > x0 and y1 > y0):
            raise ValueError(
                f"bounds must be ((xmin, xmax), (ymin, ymax)) with min < max; got {bounds}"
            )
        if (resolution is None) == (cell_size is None):
            raise ValueError("give exactly one of resolution and cell_size")
        if cell_size is not None:
            if not cell_size > 0:
                raise ValueError(f"cell_size must be positive; got {cell_size}")
            nx = max(1, math.ceil((x1 - x0) / cell_size - 1e-9))
            ny = max(1, math.ceil((y1 - y0) / cell_size - 1e-9))
            return cls(x0 + cell_size * np.arange(nx + 1), y0 + cell_size * np.arange(ny + 1))
        nx, ny = (resolution, resolution) if np.isscalar(resolution) else resolution
        if int(nx) < 1 or int(ny) < 1:
            raise ValueError(f"resolution must be positive; got {resolution}")
        return cls(np.linspace(x0, x1, int(nx) + 1), np.linspace(y0, y1, int(ny) + 1))

    @property
    def shape(self) -> tuple[int, int]:
        """``(nx, ny)``, the number of cells along each axis."""
        return self.x_edges.size - 1, self.y_edges.size - 1

    def centers(self) -> np.ndarray:
        """Cell centres, shape ``(nx * ny, 2)``, in the order of ``values.reshape(-1)``."""
        xc = 0.5 * (self.x_edges[1:] + self.x_edges[:-1])
        yc = 0.5 * (self.y_edges[1:] + self.y_edges[:-1])
        gx, gy = np.meshgrid(xc, yc, indexing="ij")
        return np.column_stack([gx.ravel(), gy.ravel()])

    def cell_areas(self) -> np.ndarray:
        """Area of each cell, shape ``(nx, ny)``."""
        return np.outer(np.diff(self.x_edges), np.diff(self.y_edges))

    def evaluate(
        self, score_fn: Callable[[np.ndarray], Any], batch_size: int = 65_536
    ) -> np.ndarray:
        """``score_fn`` (a function of an ``(N, 2)`` array, e.g. a log-density) at the cell
        centres, shape ``(nx, ny)``; evaluated in batches, torch outputs accepted."""
        centers = self.centers()
        out = [
            to_numpy(score_fn(centers[i : i + batch_size])).astype(np.float64).reshape(-1)
            for i in range(0, len(centers), batch_size)
        ]
        return np.concatenate(out).reshape(self.shape)

    def count(self, points: Any) -> np.ndarray:
        """Number of ``points`` (shape ``(n, 2)``) in each cell, shape ``(nx, ny)``.

        Cells include their lower edges, and the last cell its upper edge too. Points outside
        the grid are dropped with a warning.
        """
        pts = check_data(points, 2, name="points")
        counts, _, _ = np.histogram2d(pts[:, 0], pts[:, 1], bins=[self.x_edges, self.y_edges])
        outside = len(pts) - int(counts.sum())
        if outside:
            warnings.warn(f"{outside} of {len(pts)} points lie outside the grid", stacklevel=2)
        return counts.astype(np.int64)


def cap_curve(scores: Any, counts: Any, areas: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative accuracy profile of a score map against observed events.

    Cells are ranked by decreasing score; the curve gives, for each share of the area taken
    from the top, the share of events that fall in it. Cells with equal scores are taken
    together, and the curve is linear across them (the average over orders of tied cells), so
    a constant score gives the diagonal.

    Args:
        scores: a score (e.g. predicted density) per cell, any shape.
        counts: number of events per cell, same shape (e.g. from :meth:`Grid.count`).
        areas: area per cell, same shape; default equal areas.

    Returns:
        ``(area_fraction, event_fraction)``, increasing from ``(0, 0)`` to ``(1, 1)``, one point
        per distinct score plus the origin.

    Example:
        >>> a, e = cap_curve([3.0, 2.0, 1.0, 0.0], [2, 1, 1, 0])
        >>> a.tolist(), e.tolist()
        ([0.0, 0.25, 0.5, 0.75, 1.0], [0.0, 0.5, 0.75, 1.0, 1.0])
    """
    s = to_numpy(scores).astype(np.float64).ravel()
    c = to_numpy(counts).astype(np.float64).ravel()
    w = np.ones_like(s) if areas is None else to_numpy(areas).astype(np.float64).ravel()
    if not (s.shape == c.shape == w.shape):
        raise ValueError(
            f"scores, counts and areas must have the same size; got {s.size}, {c.size}, {w.size}"
        )
    if s.size == 0:
        raise ValueError("scores is empty")
    if np.isnan(s).any():
        raise ValueError("scores contains NaN")
    if not np.isfinite(c).all() or (c < 0).any() or c.sum() <= 0:
        raise ValueError("counts must be finite, non-negative and include at least one event")
    if not np.isfinite(w).all() or (w <= 0).any():
        raise ValueError("areas must be finite and positive")
    order = np.argsort(-s, kind="stable")
    s, c, w = s[order], c[order], w[order]
    last_of_tie = np.r_[s[1:] != s[:-1], True]  # -inf scores tie with each other, as wanted
    area = np.r_[0.0, np.cumsum(w)[last_of_tie] / w.sum()]
    events = np.r_[0.0, np.cumsum(c)[last_of_tie] / c.sum()]
    return area, events


def cap_auc(scores: Any, counts: Any, areas: Any = None) -> float:
    """Area under :func:`cap_curve`: 1 for a perfect map, 0.5 for an uninformative one.

    Even a perfect ranking falls short of 1, by at most half the share of area holding events
    (the curve cannot rise faster than the events in each cell allow); with many empty cells
    it is close to 1.

    Example:
        >>> cap_auc([3.0, 2.0, 1.0, 0.0], [2, 1, 1, 0])
        0.6875
        >>> cap_auc([1.0, 1.0, 1.0, 1.0], [2, 1, 1, 0])
        0.5
    """
    area, events = cap_curve(scores, counts, areas)
    return float(np.sum(np.diff(area) * (events[1:] + events[:-1]) / 2.0))


def hit_rate(
    scores: Any,
    counts: Any,
    top: Sequence[float] = (0.01, 0.05, 0.10, 0.15, 0.20),
    areas: Any = None,
) -> dict[float, float]:
    """Share of events in the top-scoring ``top`` share of the area, for each value in ``top``.

    Read from :func:`cap_curve` by linear interpolation, so a fraction that ends inside a cell
    (or inside a group of tied cells) counts that part of its events.

    Example:
        >>> scores = [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]
        >>> counts = [5, 0, 3, 0, 0, 0, 0, 0, 0, 2]
        >>> hit_rate(scores, counts, top=(0.1, 0.3, 0.15))
        {0.1: 0.5, 0.3: 0.8, 0.15: 0.5}
    """
    fractions = np.asarray(top, dtype=np.float64)
    if fractions.ndim != 1 or np.any((fractions < 0) | (fractions > 1)):
        raise ValueError(f"top must be a sequence of shares in [0, 1]; got {top!r}")
    area, events = cap_curve(scores, counts, areas)
    return {
        float(k): float(v)
        for k, v in zip(fractions, np.interp(fractions, area, events), strict=True)
    }
