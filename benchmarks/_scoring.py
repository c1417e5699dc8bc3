"""What the density benchmarks (``quality.py``, ``density_tables.py``) share: a method's
log-densities on the evaluation rows (:class:`Fit`), one fit run so that its failure becomes a
row of NaNs in the table rather than the end of the run (:func:`attempt`), and the wall time
at which a validation curve first reaches a loss (:func:`time_to`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Fit", "attempt", "time_to"]


@dataclass
class Fit:
    """Log-densities of one method on evaluation points, with what the fit cost."""

    log_prob: np.ndarray
    seconds: float
    info: dict[str, Any] = field(default_factory=dict)


def attempt(n_rows: int, fit: Callable[..., Fit], *args: Any, **kwargs: Any) -> Fit:
    """``fit(*args, **kwargs)``; an exception is recorded instead of raised: a :class:`Fit`
    with ``n_rows`` NaN log-densities (one per evaluation row), the seconds spent and
    ``info["error"]`` (the exception's type and message).

    Example:
        >>> def broken(x):
        ...     raise ValueError("no")
        >>> failed = attempt(3, broken, None)
        >>> failed.log_prob, failed.info
        (array([nan, nan, nan]), {'error': 'ValueError: no'})
    """
    start = time.perf_counter()
    try:
        return fit(*args, **kwargs)
    except Exception as err:  # noqa: BLE001 - reported in the table
        seconds = time.perf_counter() - start
        return Fit(np.full(n_rows, np.nan), seconds, {"error": f"{type(err).__name__}: {err}"})


def time_to(curve: dict[str, list[float]] | None, target: float) -> float | None:
    """The earliest wall time (``curve["time"]``) at which the validation loss
    (``curve["val_loss"]``) is at most ``target``; None when it never is or there is no
    curve. The times need not be sorted (curves of several members joined).

    Example:
        >>> time_to({"time": [3.0, 1.0, 2.0], "val_loss": [0.5, 0.9, 0.4]}, 0.6)
        2.0
    """
    if not curve:
        return None
    hits = [t for t, v in zip(curve["time"], curve["val_loss"], strict=True) if v <= target]
    return min(hits) if hits else None
