"""Input checking shared by the estimators: one function, clear messages, no side effects.

:func:`check_data` turns array-likes (NumPy arrays, lists, pandas frames, torch tensors) into a
float64 NumPy matrix, or raises a :class:`ValueError` that names the problem. Estimators call it
before touching any state, so a failing call leaves a fitted estimator as it was.
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch


# -- options: one spelling of each small check ---------------------------------------------
class InvalidOption(ValueError, TypeError):
    """An option of the wrong kind or out of range. Both a ``ValueError`` and a
    ``TypeError`` (as scikit-learn's ``InvalidParameterError``), so either ``except`` clause
    catches it."""


def positive_int(name: str, value: Any) -> int:
    """``value`` as an ``int`` if it is a positive integer (not a bool), else
    :class:`InvalidOption` naming ``name``.

    Example:
        >>> positive_int("layers", 3)
        3
        >>> positive_int("layers", 0)
        Traceback (most recent call last):
        ...
        pyroflows.validation.InvalidOption: layers must be a positive integer, got 0
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise InvalidOption(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def flag(name: str, value: Any) -> bool:
    """``value`` if it is True or False, else :class:`InvalidOption` naming ``name``."""
    if not isinstance(value, bool):
        raise InvalidOption(f"{name} must be True or False, got {value!r}")
    return value


def hidden_sizes(hidden: int | Sequence[int], name: str = "hidden") -> tuple[int, ...]:
    """Hidden layer sizes as a tuple of positive ints (one int is one layer).

    Example:
        >>> hidden_sizes(64), hidden_sizes([32, 32])
        ((64,), (32, 32))
    """
    if isinstance(hidden, numbers.Integral) and not isinstance(hidden, bool):
        hidden = (hidden,)
    try:
        sizes = tuple(hidden)
    except TypeError:
        raise InvalidOption(
            f"{name} must be a sequence of positive integers, got {hidden!r}"
        ) from None
    if not sizes:
        raise InvalidOption(f"{name} must name at least one hidden layer size, got ()")
    return tuple(positive_int(f"every {name} size", size) for size in sizes)


def as_real_tensor(value: Any, name: str) -> torch.Tensor:
    """``value`` as a real tensor (integers and booleans are accepted, as numbers), or a
    ``ValueError`` naming ``name`` (complex or non-numeric values)."""
    try:
        tensor = torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(
            f"{name} must be numeric (a tensor or array of numbers), got {type(value).__name__}"
        ) from None
    if tensor.is_complex():
        raise ValueError(f"{name} must be real-valued, got dtype {tensor.dtype}")
    return tensor


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


class DataWarning(UserWarning):
    """Data that a continuous density fits badly: discrete or duplicated values, redundant
    columns, very few rows. The fit goes on; the warning says what to check.

    For a column with discrete values that the fit models as continuous, ``column`` is its
    key (its name when the data have column names, else its position from 0) and ``kind``
    the kind of discrete column that fits its values (``"integer"`` or ``"categorical"``,
    as :class:`~pyroflows.density.DensityEstimator`'s ``discrete`` takes them); both are
    None for the other warnings.
    """

    def __init__(self, message: str, column: int | str | None = None, kind: str | None = None):
        super().__init__(message)
        self.column = column
        self.kind = kind


def continuous_advice(j: int, column: int | str, kind: str) -> str:
    """What a :class:`DataWarning` advises for a discrete column (position ``j``, key
    ``column``, discrete ``kind``) of an estimator that models every column as continuous.

    Example:
        >>> print(continuous_advice(1, "count", "integer").split(", fit ")[1][:57])
        pyroflows.DensityEstimator(discrete={'count': 'integer'})
    """
    return (
        "this estimator models every column as continuous; to score the column by the "
        "probability of its values, fit pyroflows.DensityEstimator(discrete="
        f"{{{column!r}: {kind!r}}}), or dequantise it before fitting (add noise uniform on "
        "each value's cell: U(0, 1) on integers)"
    )


_SAMPLE = 20_000  # rows inspected for the checks that cost more than a pass


def _column(j: int, names: Any) -> str:
    return f"column {j} ({names[j]!r})" if names is not None else f"column {j}"


def _first_dependent(corr: np.ndarray, tol: float = 1e-10) -> int | None:
    """The first column of a correlation matrix that is a linear combination of the columns
    before it (its leading block's smallest eigenvalue below ``tol``), or None.

    Example:
        >>> x = np.random.default_rng(0).normal(size=(50, 2))
        >>> data = np.column_stack([x, x[:, 0] - x[:, 1], x[:, 0] ** 2])
        >>> _first_dependent(np.corrcoef(data, rowvar=False))
        2
    """
    if np.linalg.eigvalsh(corr).min() >= tol:
        return None
    for j in range(1, len(corr)):
        if np.linalg.eigvalsh(corr[: j + 1, : j + 1]).min() < tol:
            return j
    return None


def _row_keys(X: np.ndarray) -> np.ndarray:
    """One float per row, equal for equal rows (and, with probability ~1, only for them)."""
    weights = np.random.default_rng(12345).normal(size=X.shape[1])
    return np.ascontiguousarray(X) @ weights


def warn_awkward_data(
    X: np.ndarray,
    X_val: np.ndarray | None = None,
    *,
    names: Any = None,
    split: bool = True,
    name: str = "X",
    advice: Callable[[int, int | str, str], str] = continuous_advice,
) -> list[str]:
    """Warn (:class:`DataWarning`) about data on which a continuous density's likelihood is
    misleading; cheap (a few passes, the costlier checks on at most 20 000 rows).

    - a column with few distinct values (binary, categorical) or only integer values: the
      likelihood of a continuous model on discrete data grows without bound;
    - rows that occur more than once (``split``: the random validation split puts copies on
      both sides, so the validation loss is optimistic), or rows of ``X_val`` found in ``X``;
    - identical or exactly collinear columns (a singular density; ``whiten`` refuses them,
      per-column scaling does not);
    - fewer than ``max(20, 10 * n_features)`` rows.

    Args:
        X: the training rows, float64 ``(n, d)`` (as :func:`check_data` returns them).
        X_val: validation rows, or None.
        names: column names (for messages), or None.
        split: a validation split will be drawn from ``X``.
        name: how ``X`` is called in messages.
        advice: for a column with discrete values that the fit models as continuous, given
            its position, its key (its name, or its position without ``names``) and the kind
            of discrete column that fits it, the text that says why it is continuous and how
            to model it as discrete (default: :func:`continuous_advice`).

    Returns:
        The messages warned (also handy for a command line).

    Example:
        >>> import warnings
        >>> X = np.column_stack([np.linspace(0, 1, 50), np.arange(50.0) * 7])
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")
        ...     message = warn_awkward_data(X, names=["x", "count"])[0]
        >>> print(message[:76])
        X column 1 ('count') takes only integer values but is modelled as continuous
    """
    n, d = X.shape
    messages: list[str] = []
    discrete: list[tuple[int | str, str]] = []  # (column, kind) of each message so far
    sample = X if n <= _SAMPLE else X[np.linspace(0, n - 1, _SAMPLE).astype(np.int64)]
    integer = np.all(X == np.round(X), axis=0)
    for j in range(d):
        distinct = np.unique(sample[:, j]).size
        key = str(names[j]) if names is not None else j
        kind = "integer" if integer[j] else "categorical"
        if distinct <= max(2, min(10, n // 10)):
            what = f"takes only {distinct} distinct values"
        elif integer[j]:
            what = "takes only integer values"
        else:
            continue
        messages.append(
            f"{name} {_column(j, names)} {what} but is modelled as continuous: its "
            "log-likelihood is a density, not a probability (a flexible fit can raise it "
            "without bound by putting spikes on the values), and is not comparable with that "
            f"of a model that treats the column as discrete; {advice(j, key, kind)}"
        )
        discrete.append((key, kind))
    keys = _row_keys(X)
    repeated = n - np.unique(keys).size
    if repeated and split:
        messages.append(
            f"{name} has {repeated} duplicated row(s): the random validation split puts copies on "
            "both sides, so the validation loss (early stopping, model choice) is optimistic; "
            "drop duplicates or pass X_val"
        )
    if X_val is not None:
        shared = int(np.isin(_row_keys(X_val), keys).sum())
        if shared:
            messages.append(
                f"{shared} row(s) of X_val also occur in {name}: the validation loss is optimistic"
            )
    if d > 1 and len(sample) > d:
        centred = sample - sample.mean(0)
        std = centred.std(0)
        ok = std > 0
        corr = (centred[:, ok] / std[ok]).T @ (centred[:, ok] / std[ok]) / len(sample)
        columns = np.flatnonzero(ok)
        pairs = np.argwhere(np.triu(np.abs(corr) > 1 - 1e-10, 1))
        if pairs.size:
            i, j = columns[pairs[0]]
            messages.append(
                f"{name} {_column(j, names)} is exactly collinear with {_column(i, names)} "
                f"({len(pairs)} such pair(s)): the data lie on a lower-dimensional set, where a "
                "density is singular and the likelihood grows without bound; drop one of them"
            )
        else:
            dependent = _first_dependent(corr)
            if dependent is not None:
                j = columns[dependent]
                messages.append(
                    f"{name} {_column(j, names)} is a linear combination of the columns before "
                    "it: the data lie on a lower-dimensional set, where a density is singular; "
                    "drop a redundant column"
                )
    few = max(20, 10 * d)
    if n < few:
        messages.append(
            f"{name} has only {n} rows for {d} column(s) (fewer than {few}): a flow will "
            "overfit them; expect a poor density, or use a simpler model"
        )
    labels = discrete + [(None, None)] * (len(messages) - len(discrete))
    for message, (column, kind) in zip(messages, labels, strict=True):
        warnings.warn(DataWarning(message, column, kind), stacklevel=4)
    return messages
