"""Input checking shared by the estimators: one function, clear messages, no side effects.

:func:`check_data` turns array-likes (NumPy arrays, lists, pandas frames, torch tensors) into a
float64 NumPy matrix, or raises a :class:`ValueError` that names the problem. Estimators call it
before touching any state, so a failing call leaves a fitted estimator as it was.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def to_numpy(x: Any) -> np.ndarray:
    """NumPy view of an array-like; torch tensors are detached and moved to the CPU.

    Example:
        >>> import torch
        >>> to_numpy(torch.ones(2, requires_grad=True))
        array([1., 1.], dtype=float32)
    """
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor, without importing torch
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def check_data(
    X: Any,
    n_features: int | None = None,
    name: str = "X",
    *,
    min_samples: int = 1,
    check_variance: bool = False,
) -> np.ndarray:
    """Validate a data matrix of shape ``(n_samples, n_features)`` and return it as float64.

    The checks run in this order: 2-D, numeric, non-empty, at least ``min_samples`` rows, the
    expected number of columns, finite values, and (with ``check_variance``) no constant column.

    Args:
        X: array-like of shape ``(n_samples, n_features)``; torch tensors are accepted.
        n_features: the number of columns required (e.g. the number seen at fit time).
        name: how the array is called in error messages.
        min_samples: the fewest rows allowed (use 2 when fitting).
        check_variance: also reject columns whose values are all equal.

    Returns:
        A C-contiguous float64 array (a copy only when a conversion was needed).

    Raises:
        ValueError: naming the problem, e.g. ``"X contains NaN or infinite values ..."``.

    Example:
        >>> check_data([[0.0, 1.0], [2.0, 3.0]]).shape
        (2, 2)
        >>> check_data([[0.0, 1.0], [0.0, 3.0]], check_variance=True)
        Traceback (most recent call last):
        ...
        ValueError: X column 0 is constant (zero variance); drop it or add noise before fitting
    """
    arr = to_numpy(X)
    if arr.ndim != 2:
        hint = " (use X.reshape(-1, 1) for a single feature)" if arr.ndim == 1 else ""
        raise ValueError(
            f"{name} must be a 2-D array of shape (n_samples, n_features); "
            f"got a {arr.ndim}-D array of shape {arr.shape}{hint}"
        )
    if arr.dtype.kind == "c":
        raise ValueError(f"{name} must be real-valued; got dtype {arr.dtype}")
    if arr.dtype.kind not in "biuf":
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be numeric; got dtype {arr.dtype}") from None
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape})")
    n, d = arr.shape
    if n < min_samples:
        raise ValueError(f"{name} has {n} row(s); at least {min_samples} are needed")
    if n_features is not None and d != n_features:
        raise ValueError(f"{name} has {d} features (columns), expected {n_features}")
    arr = np.ascontiguousarray(arr, dtype=np.float64)
    finite = np.isfinite(arr)
    if not finite.all():
        i, j = np.argwhere(~finite)[0]
        raise ValueError(
            f"{name} contains NaN or infinite values ({int((~finite).sum())} entries; "
            f"first at row {i}, column {j})"
        )
    if check_variance:
        constant = np.flatnonzero(np.all(arr == arr[:1], axis=0))
        if constant.size == 1:
            raise ValueError(
                f"{name} column {constant[0]} is constant (zero variance); "
                "drop it or add noise before fitting"
            )
        if constant.size > 1:
            raise ValueError(
                f"{name} columns {constant.tolist()} are constant (zero variance); "
                "drop them or add noise before fitting"
            )
    return arr
