"""Plots for density estimation (matplotlib only).

Every function draws on ``ax`` (default: the current axes, ``plt.gca()``) and returns it, so
plots compose: a density map with samples on top, several CAP curves in one panel.

- :func:`plot_density_2d`: a 2-D density ``exp(log p)`` as an image over a rectangle.
- :func:`plot_samples`: a scatter plot of 2-D points.
- :func:`plot_cap`: cumulative accuracy profiles (from :func:`pyroflows.diagnostics.cap_curve`)
  with the diagonal of an uninformative map.
- :func:`plot_loss`: training and validation loss per epoch from a
  :class:`pyroflows.train.History`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes

from pyroflows.validation import to_numpy

__all__ = ["density_grid", "plot_cap", "plot_density_2d", "plot_loss", "plot_samples"]

Bounds = Sequence[Sequence[float]]


def _axes(ax: Axes | None) -> Axes:
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt  # only when needed: pyplot picks a backend on import

    return plt.gca()


def density_grid(
    log_prob_fn: Callable[[np.ndarray], Any],
    bounds: Bounds,
    resolution: int | tuple[int, int] = 200,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The density ``exp(log_prob_fn(x))`` at the pixel centres of a regular grid.

    Args:
        log_prob_fn: maps an ``(N, 2)`` float64 array to ``(N,)`` log-densities (NumPy or
            torch); ``-inf`` gives density 0.
        bounds: ``((xmin, xmax), (ymin, ymax))``.
        resolution: pixels per axis, an int or ``(nx, ny)``.

    Returns:
        ``(x, y, density)``: the pixel centres along each axis, shapes ``(nx,)`` and ``(ny,)``,
        and the density, shape ``(ny, nx)`` (rows follow ``y``, as :meth:`Axes.imshow` expects
        with ``origin="lower"``).

    Raises:
        ValueError: for empty bounds, a non-positive resolution, or log-densities of the wrong
            shape or containing NaN.

    Example:
        >>> x, y, p = density_grid(lambda X: -0.5 * (X**2).sum(1), ((-1, 1), (0, 2)), (4, 2))
        >>> x.tolist(), y.tolist(), p.shape
        ([-0.75, -0.25, 0.25, 0.75], [0.5, 1.5], (2, 4))
    """
    (x0, x1), (y0, y1) = bounds
    if not (x1 > x0 and y1 > y0):
        raise ValueError(
            f"bounds must be ((xmin, xmax), (ymin, ymax)) with min < max; got {bounds}"
        )
    nx, ny = (resolution, resolution) if np.isscalar(resolution) else resolution
    if int(nx) < 1 or int(ny) < 1:
        raise ValueError(f"resolution must be positive; got {resolution}")
    nx, ny = int(nx), int(ny)
    x = x0 + (np.arange(nx) + 0.5) * (x1 - x0) / nx
    y = y0 + (np.arange(ny) + 0.5) * (y1 - y0) / ny
    gx, gy = np.meshgrid(x, y)  # shape (ny, nx): row i has y[i]
    points = np.column_stack([gx.ravel(), gy.ravel()])
    log_p = to_numpy(log_prob_fn(points)).astype(np.float64)
    if log_p.shape != (len(points),):
        raise ValueError(
            f"log_prob_fn must return one value per row, shape ({len(points)},); got {log_p.shape}"
        )
    if np.isnan(log_p).any():
        raise ValueError("log_prob_fn returned NaN")
    return x, y, np.exp(log_p).reshape(ny, nx)


def plot_density_2d(
    log_prob_fn: Callable[[np.ndarray], Any],
    bounds: Bounds,
    resolution: int | tuple[int, int] = 200,
    ax: Axes | None = None,
    **imshow_kw: Any,
) -> Axes:
    """Show a 2-D density ``exp(log_prob_fn(x))`` as an image over ``bounds``.

    The density is evaluated at the pixel centres (:func:`density_grid`) and drawn with
    ``imshow(origin="lower", extent=bounds, aspect="auto")``; the image is ``ax.images[-1]``
    (e.g. for ``fig.colorbar``).

    Args:
        log_prob_fn: maps an ``(N, 2)`` float64 array to ``(N,)`` log-densities, e.g.
            ``estimator.score_samples`` (torch outputs are accepted).
        bounds: ``((xmin, xmax), (ymin, ymax))``.
        resolution: pixels per axis, an int or ``(nx, ny)``.
        ax: where to draw (default: the current axes).
        **imshow_kw: passed to :meth:`Axes.imshow` (e.g. ``cmap``, ``norm``), overriding the
            defaults ``cmap="viridis"``, ``origin``, ``extent``, ``aspect`` and
            ``interpolation="nearest"``.

    Returns:
        The axes.

    Example:
        >>> from matplotlib.figure import Figure
        >>> ax = Figure().subplots()
        >>> ax = plot_density_2d(lambda X: -0.5 * (X**2).sum(1), ((-3, 3), (-3, 3)), 50, ax=ax)
        >>> ax.images[0].get_array().shape, float(ax.images[0].get_array().max()) < 1.0
        ((50, 50), True)
    """
    ax = _axes(ax)
    _, _, density = density_grid(log_prob_fn, bounds, resolution)
    (x0, x1), (y0, y1) = bounds
    options = {
        "origin": "lower",
        "extent": (x0, x1, y0, y1),
        "aspect": "auto",
        "cmap": "viridis",
        "interpolation": "nearest",
    }
    options.update(imshow_kw)
    ax.imshow(density, **options)
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    return ax


def plot_samples(X: Any, ax: Axes | None = None, **kw: Any) -> Axes:
    """Scatter plot of 2-D points.

    Args:
        X: points, shape ``(N, 2)`` (NumPy, list or torch).
        ax: where to draw (default: the current axes).
        **kw: passed to :meth:`Axes.scatter`, overriding the defaults ``s=4``, ``alpha=0.5``
            and ``linewidths=0``.

    Returns:
        The axes; the points are ``ax.collections[-1]``.

    Example:
        >>> from matplotlib.figure import Figure
        >>> ax = plot_samples([[0.0, 1.0], [2.0, 3.0]], ax=Figure().subplots(), color="k")
        >>> ax.collections[0].get_offsets().tolist()
        [[0.0, 1.0], [2.0, 3.0]]
    """
    points = to_numpy(X).astype(np.float64)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"X must have shape (N, 2); got {points.shape}")
    ax = _axes(ax)
    options = {"s": 4, "alpha": 0.5, "linewidths": 0}
    options.update(kw)
    ax.scatter(points[:, 0], points[:, 1], **options)
    return ax


def plot_cap(
    curves: Mapping[str, tuple[Any, Any]],
    ax: Axes | None = None,
) -> Axes:
    """Cumulative accuracy profiles: share of events against share of area, one line each.

    Args:
        curves: ``{label: (area_fraction, event_fraction)}``, e.g. from
            :func:`pyroflows.diagnostics.cap_curve`; drawn in order, points joined by lines.
        ax: where to draw (default: the current axes).

    Returns:
        The axes. The curves are ``ax.lines[:len(curves)]``, followed by the dashed diagonal
        (labelled ``"random"``), the profile of an uninformative map.

    Example:
        >>> from matplotlib.figure import Figure
        >>> ax = plot_cap({"map": ([0, 0.5, 1], [0, 0.9, 1])}, ax=Figure().subplots())
        >>> [line.get_label() for line in ax.lines], ax.lines[0].get_ydata().tolist()
        (['map', 'random'], [0.0, 0.9, 1.0])
    """
    ax = _axes(ax)
    for label, (area, events) in curves.items():
        a = to_numpy(area).astype(np.float64).ravel()
        e = to_numpy(events).astype(np.float64).ravel()
        if a.shape != e.shape:
            raise ValueError(
                f"curve {label!r}: area and event fractions differ in length ({a.size} vs {e.size})"
            )
        ax.plot(a, e, lw=1.5, label=str(label))
    ax.plot([0.0, 1.0], [0.0, 1.0], color="grey", ls="--", lw=1, label="random")
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.0)
    ax.set_xlabel("share of area (highest scores first)")
    ax.set_ylabel("share of events")
    ax.legend(loc="lower right")
    return ax


def _losses(history: Any, name: str) -> np.ndarray:
    if isinstance(history, Mapping):
        values = history.get(name)
    else:
        values = getattr(history, name, None)
    return np.asarray([] if values is None else values, dtype=np.float64).ravel()


def plot_loss(history: Any, ax: Axes | None = None) -> Axes:
    """Training and validation loss per epoch.

    Args:
        history: a :class:`pyroflows.train.History` (e.g. ``estimator.history_``) or a mapping
            with ``"train_loss"`` and optionally ``"val_loss"`` and ``"best_epoch"``
            (0-based, as in :class:`~pyroflows.train.History`).
        ax: where to draw (default: the current axes).

    Returns:
        The axes: ``ax.lines[0]`` is the training loss at epochs ``1, 2, ...``, then the
        validation loss when it has a finite value, then a dotted vertical line at the best
        epoch when one is recorded.

    Example:
        >>> from matplotlib.figure import Figure
        >>> from pyroflows.train import History
        >>> h = History(train_loss=[3.0, 2.0, 1.5], val_loss=[3.1, 2.4, 2.6], best_epoch=1)
        >>> ax = plot_loss(h, ax=Figure().subplots())
        >>> [line.get_label() for line in ax.lines]
        ['train', 'validation', 'best epoch (2)']
    """
    train = _losses(history, "train_loss")
    if train.size == 0:
        raise ValueError("history has no training loss to plot")
    val = _losses(history, "val_loss")
    if isinstance(history, Mapping):
        best = history.get("best_epoch", -1)
    else:
        best = getattr(history, "best_epoch", -1)
    ax = _axes(ax)
    ax.plot(np.arange(1, train.size + 1), train, label="train")
    if val.size and np.isfinite(val).any():
        ax.plot(np.arange(1, val.size + 1), val, label="validation")
    if best is not None and best >= 0:
        ax.axvline(best + 1, color="grey", ls=":", lw=1, label=f"best epoch ({best + 1})")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.legend()
    return ax
