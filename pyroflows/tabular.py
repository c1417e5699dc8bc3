"""Discrete, quantised and categorical columns of a table, for a continuous density.

A flow has a density, so a column that takes a countable set of values (counts, a measurement
rounded to a step, a category) is mapped to a continuous one and back:

* :func:`fit_columns` finds the kind of each column (:data:`KINDS`): from a pandas dtype
  (``category``, ``object``, ``string``, ``bool``: categorical, an ordered ``category``:
  ordinal, integer dtypes: integer) or, for a numeric column, from its values
  (:func:`grid_of`: all on a grid ``offset + k * step`` and repeated, so a continuous column,
  whose values are almost surely distinct, is never taken for a discrete one);
* :meth:`Columns.encode` turns a table into float *codes*: the cell index ``k`` of a
  discrete value (``(x - offset) / step`` on a grid; the position of a category), the value
  itself for a continuous column;
* :meth:`Columns.dequantise` adds ``u ~ U(0, 1)`` to each code: the cell of ``k`` is
  ``[k, k + 1)``, in the data's units ``[x, x + step)``, so the cells of a column partition
  the line and their masses under any density sum to one;
* :func:`mixed_log_prob` gives per row ``log P(discrete cells) + log p(continuous columns)``,
  the mass of the cells estimated by importance sampling over the uniform noise;
* :meth:`Columns.decode` maps draws of the density back to the grid and the categories
  (``floor`` of the code), as a DataFrame with the fitted columns and dtypes when fitted on one.

Categories are coded by decreasing training frequency (ties in sorted order): the dequantised
density then falls from cell to cell as far as it can, which a smooth flow fits more easily
than an arbitrary order; an ordinal column keeps its order. A categorical or ordinal code
lives in ``(0, C)`` (``C`` categories), so the density estimator maps it there with its box
map (:meth:`Columns.bounds`): no mass falls outside the categories.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from pyroflows.validation import to_numpy

__all__ = [
    "KINDS",
    "Column",
    "Columns",
    "check_discrete",
    "continuous_columns",
    "fit_columns",
    "grid_of",
    "kept_continuous_advice",
    "latin_hypercube",
    "log_mean_exp",
    "mixed_log_prob",
]

#: the kinds of column; every kind but ``"continuous"`` is discrete
KINDS = ("continuous", "integer", "quantised", "ordinal", "categorical")
#: a numeric column is searched for a grid only if it has at most this share of distinct values
#: (a continuous column has none repeated)
MAX_DISTINCT_SHARE = 0.5
_CATEGORICAL_DTYPES = ("category", "object", "string", "bool")


@dataclass(frozen=True)
class Column:
    """One column: its ``kind`` (:data:`KINDS`), the grid of a discrete numeric column
    (``offset + k * step``; integer: ``step = 1``), the ``categories`` of a categorical or
    ordinal column in code order, and the ``dtype`` that :meth:`Columns.decode` restores
    (``declared``: a pandas categorical dtype's own order of the categories, which the
    decoded column keeps)."""

    name: str
    kind: str
    step: float = 1.0
    offset: float = 0.0
    categories: tuple = ()
    dtype: str = "float64"
    declared: tuple = ()

    @property
    def discrete(self) -> bool:
        """Whether the column is modelled by the mass of its cells."""
        return self.kind != "continuous"

    def as_plain(self) -> dict[str, Any]:
        """Plain values that ``torch.load(weights_only=True)`` reads back."""
        return {
            "name": self.name, "kind": self.kind, "step": float(self.step),
            "offset": float(self.offset), "categories": [_plain(c) for c in self.categories],
            "dtype": self.dtype, "declared": [_plain(c) for c in self.declared],
        }  # fmt: skip


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


@dataclass(frozen=True)
class Columns:
    """The columns of a fitted table (what ``DensityEstimator.columns_`` reports).

    ``frame``: fitted on a pandas DataFrame (then :meth:`decode` returns one when some column
    is discrete).
    """

    columns: tuple[Column, ...]
    frame: bool = False

    @property
    def discrete(self) -> np.ndarray:
        """Boolean mask of the discrete columns."""
        return np.array([c.discrete for c in self.columns], dtype=bool)

    @property
    def any_discrete(self) -> bool:
        return bool(self.discrete.any())

    @property
    def kinds(self) -> dict[str, str]:
        """``{column name: kind}``."""
        return {c.name: c.kind for c in self.columns}

    def as_plain(self) -> dict[str, Any]:
        return {"columns": [c.as_plain() for c in self.columns], "frame": self.frame}

    @classmethod
    def from_plain(cls, state: Mapping[str, Any]) -> Columns:
        tuples = ("categories", "declared")
        columns = tuple(
            Column(**{**c, **{k: tuple(c.get(k, ())) for k in tuples}}) for c in state["columns"]
        )
        return cls(columns, bool(state["frame"]))

    def bounds(self, user: Any, dim: int) -> Any:
        """The box of the codes: the user's ``bounds`` (None, or ``(low, high)`` in the data's
        units) on continuous columns, carried to code units on a grid (the cell of ``high``
        ends at ``high + step``), and ``(0, C)`` on a column of ``C`` categories. None when
        there is no box."""
        from pyroflows.preprocess import bounds_array

        categorical = [c.kind in ("categorical", "ordinal") for c in self.columns]
        if user is None and not any(categorical):
            return None
        low, high = bounds_array(user, dim) if user is not None else (
            np.full(dim, -np.inf), np.full(dim, np.inf))  # fmt: skip
        for j, c in enumerate(self.columns):
            if categorical[j]:
                low[j], high[j] = 0.0, float(len(c.categories))
            elif c.discrete:
                low[j], high[j] = (low[j] - c.offset) / c.step, (high[j] - c.offset) / c.step + 1
        return (tuple(low.tolist()), tuple(high.tolist()))

    # -- data -> codes -> data -------------------------------------------------------------
    def encode(self, X: Any, name: str = "X") -> Any:
        """Codes of the rows of ``X`` (a DataFrame stays a DataFrame with the same column
        labels, anything else becomes a float64 array). A value off its column's grid, or a
        category not seen at fit time, raises a ``ValueError`` naming the column."""
        if not self.any_discrete:
            return X
        frame = _is_frame(X)
        cells = _table_columns(X, len(self.columns), name)
        codes = np.column_stack(
            [_encode_column(c, v, name) for c, v in zip(self.columns, cells, strict=True)]
        )
        if frame:
            import pandas as pd

            return pd.DataFrame(codes, columns=X.columns, index=X.index)
        return codes

    def dequantise(self, codes: Any, rng: np.random.Generator) -> Any:
        """``codes + u`` on the discrete columns, ``u`` uniform on the open interval (0, 1)
        (a DataFrame of codes stays a DataFrame)."""
        if _is_frame(codes):
            import pandas as pd

            values = self.dequantise(codes.to_numpy(dtype=np.float64), rng)
            return pd.DataFrame(values, columns=codes.columns, index=codes.index)
        mask = self.discrete
        out = np.array(codes, dtype=np.float64, copy=True)
        out[:, mask] += _open_uniform(rng, (len(out), int(mask.sum())))
        return out

    def decode(self, Y: np.ndarray) -> Any:
        """Draws in code units back to the data: the cell of each discrete value (``floor``),
        its grid value or category. A DataFrame with the fitted columns and dtypes when
        fitted on a DataFrame with a discrete column, else a float64 array (categories as
        their codes' positions are not numbers: then an object array)."""
        if not self.any_discrete:
            return Y
        values = [_decode_column(c, Y[:, j]) for j, c in enumerate(self.columns)]
        if self.frame:
            import pandas as pd

            return pd.DataFrame({c.name: v for c, v in zip(self.columns, values, strict=True)})
        if all(np.asarray(v).dtype.kind in "biuf" for v in values):
            return np.column_stack(values).astype(np.float64)
        return np.column_stack([np.asarray(v, dtype=object) for v in values])


def _open_uniform(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Uniform draws on the open interval (0, 1): a cell's lower edge has zero probability."""
    u = rng.random(shape)
    return np.where(u == 0.0, 0.5, u)


def _is_frame(X: Any) -> bool:
    return hasattr(X, "columns") and hasattr(X, "iloc")


def _table_columns(X: Any, width: int | None, name: str) -> list[np.ndarray]:
    """The columns of a table as 1-D arrays (their own dtypes kept for a DataFrame)."""
    if _is_frame(X):
        cols = [X.iloc[:, j] for j in range(X.shape[1])]
    else:
        arr = to_numpy(X)
        if arr.ndim != 2:
            raise ValueError(
                f"{name} must be a 2-D array of shape (n_samples, n_features); got a "
                f"{arr.ndim}-D array of shape {arr.shape}"
            )
        cols = [arr[:, j] for j in range(arr.shape[1])]
    if width is not None and len(cols) != width:
        raise ValueError(f"{name} has {len(cols)} features (columns), expected {width}")
    return cols


def _encode_column(c: Column, values: Any, name: str) -> np.ndarray:
    """The codes of one column's values."""
    if c.kind in ("categorical", "ordinal"):
        index = {v: k for k, v in enumerate(c.categories)}
        raw = _category_values(values)
        codes = np.array([index.get(v, -1) for v in raw], dtype=np.float64)
        unseen = sorted({str(v) for v, k in zip(raw, codes, strict=True) if k < 0})
        if unseen:
            raise ValueError(
                f"{name} column {c.name!r} has categories not seen at fit time: "
                f"{unseen[:5]}{' ...' if len(unseen) > 5 else ''} (a model cannot give them a "
                "probability; drop those rows or refit with them)"
            )
        return codes
    x = _numeric(values, c.name, name)
    if not c.discrete:
        return x
    k = np.round((x - c.offset) / c.step)
    off = np.abs(x - c.offset - k * c.step) > _tolerance(c.step, x)
    if off.any():
        i = int(np.argmax(off))
        raise ValueError(
            f"{name} column {c.name!r} is {c.kind} on the grid {c.offset:g} + k * {c.step:g}, "
            f"but row {i} has {float(x[i])!r}, off the grid"
        )
    return k


def _decode_column(c: Column, y: np.ndarray) -> Any:
    """One column of draws in code units, back in the data (with the fitted dtype)."""
    if not c.discrete:
        return _as_dtype(y, c.dtype)
    k = np.floor(y)
    if c.kind in ("categorical", "ordinal"):
        k = np.clip(k, 0, len(c.categories) - 1).astype(np.int64)
        values = np.empty(len(k), dtype=object)
        values[:] = [c.categories[i] for i in k]
        return _as_dtype(values, c.dtype, c)
    x = c.offset + k * c.step
    decimals = max(0, 3 - math.floor(math.log10(c.step)))
    return _as_dtype(np.round(x, decimals), c.dtype)


def _as_dtype(values: np.ndarray, dtype: str, c: Column | None = None) -> Any:
    if dtype == "category":
        import pandas as pd

        order = list(c.declared or c.categories)
        return pd.Categorical(values, categories=order, ordered=c.kind == "ordinal")
    if dtype in ("object", "string"):
        return values if dtype == "object" else values.astype(str)
    return values.astype(dtype)


def _category_values(values: Any) -> list:
    """Python values of a column, for dictionary look-ups (NumPy scalars unwrapped)."""
    return [_plain(v) for v in (values.tolist() if hasattr(values, "tolist") else values)]


def _numeric(values: Any, column: str, name: str) -> np.ndarray:
    try:
        x = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} column {column!r} must be numeric") from None
    return x


def _tolerance(step: float, x: np.ndarray) -> float:
    """How far a value may sit from its grid point: rounding of the step and of the values."""
    scale = float(np.max(np.abs(x))) if x.size else 0.0
    return max(1e-6 * step, 64 * np.finfo(np.float64).eps * scale)


def grid_of(x: np.ndarray) -> tuple[float, float] | None:
    """``(offset, step)`` when every value of ``x`` is ``offset + k * step`` for an integer
    ``k`` (within float rounding) and values repeat (at most :data:`MAX_DISTINCT_SHARE` of the
    rows are distinct values); None otherwise. ``offset`` is the smallest value; ``step`` is
    the smallest gap between distinct values divided by 1 to 10, the first that fits all.

    Example:
        >>> grid_of(np.array([0.1, 0.3, 0.3, 0.6, 0.1, 0.6]))
        (0.1, 0.1)
        >>> grid_of(np.random.default_rng(0).normal(size=100)) is None
        True
    """
    values = np.unique(x)
    if len(values) < 2 or len(values) > MAX_DISTINCT_SHARE * len(x):
        return None
    if not np.isfinite(values).all():
        return None
    shifted = values - values[0]
    gap = float(np.diff(values).min())
    for divisor in range(1, 11):
        k = np.round(shifted / (gap / divisor))
        step = float(shifted @ k / (k @ k))
        if np.abs(shifted - k * step).max() <= _tolerance(step, values):
            return float(values[0]), _tidy(step)
    return None


def _tidy(step: float) -> float:
    """The step rounded to 9 significant digits (``0.1`` rather than ``0.09999999999999``)."""
    return float(f"{step:.9g}")


# -- detection -----------------------------------------------------------------------------
def fit_columns(X: Any, discrete: Any = "auto", name: str = "X") -> Columns:
    """The kind of every column of ``X`` (see :func:`check_discrete` for ``discrete``).

    Args:
        X: the training table: a DataFrame (its dtypes are read) or a 2-D array-like (an
            object array: a column of numbers is numeric, any other is categorical).
        discrete: ``"auto"``, None or ``{column: kind}``.
        name: how ``X`` is called in messages.

    Returns:
        The :class:`Columns`.

    Raises:
        ValueError: a column named in ``discrete`` that ``X`` lacks, a kind its values do not
            fit (``"integer"`` on non-integers, a step off the grid, a non-numeric column
            declared continuous), or missing values in a categorical column.

    Example:
        >>> import pandas as pd
        >>> df = pd.DataFrame({"n": [0, 2, 2, 1], "c": list("abab"), "x": [0.1, 1.3, 2.2, 0.7]})
        >>> fit_columns(df).kinds
        {'n': 'integer', 'c': 'categorical', 'x': 'continuous'}
    """
    check_discrete(discrete)
    frame = _is_frame(X)
    cells = _table_columns(X, None, name)
    names = [str(c) for c in X.columns] if frame else [str(j) for j in range(len(cells))]
    specs = _specs(discrete, names, frame, name)
    if not frame:  # an array's dtype says nothing of categories: only a named kind counts
        specs = ["continuous" if s == "auto" and not _is_numeric(v) else s
                 for s, v in zip(specs, cells, strict=True)]  # fmt: skip
    columns = tuple(_fit_column(names[j], values, specs[j], name) for j, values in enumerate(cells))
    return Columns(columns, frame)


def check_discrete(discrete: Any) -> None:
    """Refuse a ``discrete`` option that is not ``"auto"``, None or a mapping
    ``{column: kind}`` whose keys are column names (str) or positions (int) and whose values
    are a kind of :data:`KINDS` or a positive step (a quantised column on that grid)."""
    if discrete is None or (isinstance(discrete, str) and discrete == "auto"):
        return
    if not isinstance(discrete, Mapping):
        raise ValueError(
            "discrete must be 'auto', None or a dict {column: kind} (kind one of "
            f"{list(KINDS)} or a positive step), got {discrete!r}"
        )
    for key, kind in discrete.items():
        if isinstance(key, bool) or not isinstance(key, str | numbers.Integral):
            raise ValueError(f"discrete: a column is a name (str) or a position (int), got {key!r}")
        if isinstance(kind, str):
            if kind not in KINDS:
                raise ValueError(
                    f"discrete[{key!r}] must be one of {list(KINDS)} or a positive step, "
                    f"got {kind!r}"
                )
        elif (
            isinstance(kind, bool)
            or not isinstance(kind, numbers.Real)
            or not (0 < kind < math.inf)
        ):
            raise ValueError(f"discrete[{key!r}]: a step must be a positive number, got {kind!r}")


def kept_continuous_advice(discrete: Any, j: int, column: int | str, kind: str) -> str:
    """Why the ``discrete`` option of a density estimator leaves column ``j`` (key ``column``:
    a name or a position) continuous although its values are discrete, and the exact option
    that scores it by the probability of its values as a column of ``kind``.

    Example:
        >>> print(kept_continuous_advice("auto", 2, "count", "integer").split("; ")[1])
        pass discrete={'count': 'integer'} to score it by the probability of its values
        >>> print(kept_continuous_advice({0: "integer"}, 1, 1, "integer").split("; ")[1][:42])
        pass discrete={0: 'integer', 1: 'integer'}
    """
    if discrete is None:
        why = "discrete=None models every column as continuous"
        others: dict[Any, Any] = {}
    elif isinstance(discrete, Mapping):
        others = {k: v for k, v in discrete.items() if k != column and k != j}
        why = (
            f"discrete names it {'continuous'!r}"
            if len(others) < len(discrete)
            else "discrete='auto' (for the columns that discrete does not name)"
        )
    else:
        others = {}
        why = "discrete='auto'"
    if why.startswith("discrete='auto'"):
        why += (
            " finds a float column discrete only when its values sit on a grid and repeat "
            f"(at most {MAX_DISTINCT_SHARE:.0%} of them distinct)"
        )
    option = {**others, column: kind}
    return f"{why}; pass discrete={option!r} to score it by the probability of its values"


def _specs(discrete: Any, names: list[str], frame: bool, name: str) -> list[Any]:
    """The kind asked for each column: ``"auto"``, a kind, or a step."""
    if discrete is None:
        return ["continuous"] * len(names)
    specs: list[Any] = ["auto"] * len(names)
    if isinstance(discrete, str):
        return specs
    seen: dict[int, Any] = {}
    for key, kind in discrete.items():
        if isinstance(key, str):
            if key not in names or not frame:
                raise ValueError(
                    f"discrete names column {key!r}, which {name} does not have (its columns: "
                    f"{names if frame else 'positions 0 to ' + str(len(names) - 1)})"
                )
            j = names.index(key)
        else:
            j = int(key)
            if not 0 <= j < len(names):
                raise ValueError(f"discrete names column {j}, but {name} has {len(names)}")
        if j in seen:
            raise ValueError(f"discrete names column {names[j]!r} twice")
        seen[j] = specs[j] = kind
    return specs


def _is_numeric(values: Any) -> bool:
    dtype = getattr(values, "dtype", None)
    if dtype is not None and getattr(dtype, "kind", "O") in "iuf":
        return True
    if dtype is not None and (getattr(dtype, "kind", "O") == "b" or str(dtype) != "object"):
        return False
    try:
        np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        return False
    return True


def _fit_column(name: str, values: Any, spec: Any, what: str) -> Column:
    """One column's :class:`Column` from its training values and the kind asked for."""
    numeric = _is_numeric(values)
    dtype = str(getattr(values, "dtype", "float64"))
    if spec == "continuous" or (spec == "auto" and numeric and _grid_kind(values) is None):
        if not numeric:
            raise ValueError(
                f"{what} column {name!r} is not numeric: it cannot be continuous (a categorical "
                "column is a DataFrame column of dtype category, object, string or bool, or one "
                "named in discrete={column: 'categorical'})"
            )
        return Column(name, "continuous")
    if not numeric or spec in ("categorical", "ordinal"):
        return _categorical(name, values, spec, dtype, what)
    x = np.asarray(values, dtype=np.float64)
    if not np.isfinite(x).all():
        raise ValueError(f"{what} column {name!r} has NaN or infinite values")
    kept = dtype if dtype.startswith(("int", "uint")) else "float64"
    if spec == "auto":
        kind, offset, step = _grid_kind(values)
        return Column(name, kind, step, offset, dtype=kept)
    if spec == "integer" or not isinstance(spec, str):
        step = 1.0 if spec == "integer" else float(spec)
        offset = float(x.min())
        k = np.round((x - offset) / step)
        if np.abs(x - offset - k * step).max() > _tolerance(step, x):
            raise ValueError(
                f"{what} column {name!r} is declared {spec!r}, but its values are not all "
                f"{'integers' if spec == 'integer' else f'on a grid of step {step:g}'}"
            )
        return Column(name, "integer" if spec == "integer" else "quantised", step, offset,
                      dtype=kept)  # fmt: skip
    grid = grid_of(x) if spec == "quantised" else None
    if grid is None:
        raise ValueError(f"{what} column {name!r} is declared quantised, but no grid was found "
                         "(give its step instead: discrete={column: step})")  # fmt: skip
    return Column(name, "quantised", grid[1], grid[0], dtype=kept)


def _grid_kind(values: Any) -> tuple[str, float, float] | None:
    """``(kind, offset, step)`` of a numeric column found discrete by its dtype or values."""
    dtype = getattr(values, "dtype", None)
    x = np.asarray(values, dtype=np.float64)
    if dtype is not None and getattr(dtype, "kind", "f") in "iu":
        return "integer", float(x.min()), 1.0
    grid = grid_of(x)
    if grid is None:
        return None
    offset, step = grid
    integer = step == 1.0 and offset == round(offset)
    return ("integer" if integer else "quantised"), offset, step


def _categorical(name: str, values: Any, spec: Any, dtype: str, what: str) -> Column:
    """A categorical or ordinal column: its categories in code order."""
    if spec not in ("auto", "categorical", "ordinal"):
        raise ValueError(
            f"{what} column {name!r} is not numeric: it can only be categorical or ordinal, "
            f"not {spec!r}"
        )
    declared = getattr(getattr(values, "dtype", None), "categories", None)
    ordered = bool(getattr(getattr(values, "dtype", None), "ordered", False))
    raw = _category_values(values)
    if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in raw):
        raise ValueError(f"{what} column {name!r} has missing values (None or NaN)")
    kind = "ordinal" if spec == "ordinal" or (spec == "auto" and ordered) else "categorical"
    uniques, counts = np.unique(np.array(raw, dtype=object).astype(str), return_counts=True)
    first = {str(v): v for v in raw}
    if declared is not None:
        pool = [_plain(v) for v in declared]
    else:
        pool = [first[u] for u in uniques]
    if kind == "ordinal" and declared is None:
        pool = sorted(pool)
    elif kind == "categorical":
        count = dict(zip(uniques.tolist(), counts.tolist(), strict=True))
        pool = sorted(pool, key=lambda v: -count.get(str(v), 0))
    if len(pool) < 2:
        raise ValueError(f"{what} column {name!r} has a single category: drop it")
    kept = () if declared is None else tuple(_plain(v) for v in declared)
    return Column(name, kind, categories=tuple(pool), dtype=dtype, declared=kept)


# -- the likelihood of mixed rows ----------------------------------------------------------
def log_mean_exp(a: np.ndarray, axis: int = -1) -> np.ndarray:
    """``log(mean(exp(a)))`` along ``axis``, stable (all ``-inf`` gives ``-inf``)."""
    top = np.max(a, axis=axis, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore"):
        out = np.log(np.mean(np.exp(a - top), axis=axis)) + np.squeeze(top, axis)
    return out


def mixed_log_prob(
    log_prob: Callable[[np.ndarray], np.ndarray],
    codes: np.ndarray,
    discrete: np.ndarray,
    draws: int,
    rng: np.random.Generator,
    rows_per_block: int = 4096,
) -> np.ndarray:
    """``log P(cells of the discrete columns) + log p(continuous columns)`` of each row.

    The density ``log_prob`` of the dequantised codes, integrated over each row's unit cell
    ``[k, k + 1)`` in the discrete columns, is estimated by importance sampling with the
    uniform proposal: ``log (1/K) sum_i p(k + u_i, x_c)``, each ``u_i`` uniform on the cell,
    the ``K`` draws of a row a Latin hypercube (:func:`latin_hypercube`: each column's draws
    one per stratum of width ``1/K``, so a density that varies across the cell is averaged
    far better than by independent draws). The mean of ``p`` is unbiased; its log is a lower
    bound in expectation (Jensen) that tightens as the number of ``draws`` ``K`` grows.
    Without discrete columns this is ``log_prob(codes)``.

    Args:
        log_prob: the density of dequantised codes, ``(n, d) -> (n,)``.
        codes: the rows in code units (:meth:`Columns.encode`), float64 ``(n, d)``.
        discrete: boolean mask of the discrete columns.
        draws: ``K``.
        rng: the generator of the noise.
        rows_per_block: rows scored together (``rows_per_block * K`` evaluations at a time).
    """
    if not discrete.any():
        return log_prob(codes)
    out = np.empty(len(codes))
    step = max(1, rows_per_block // draws)
    for start in range(0, len(codes), step):
        block = np.repeat(codes[start : start + step], draws, axis=0)
        rows = len(block) // draws
        block[:, discrete] += latin_hypercube(rng, rows, draws, int(discrete.sum())).reshape(
            rows * draws, -1
        )
        out[start : start + step] = log_mean_exp(log_prob(block).reshape(-1, draws), axis=1)
    return out


def latin_hypercube(rng: np.random.Generator, rows: int, draws: int, dim: int) -> np.ndarray:
    """``(rows, draws, dim)`` points in the open unit cube: for each row and column, one draw
    uniform in each of the ``draws`` strata ``[i / draws, (i + 1) / draws)``, in a random
    order. Each point is uniform on the cube (so averages over them are unbiased).

    Example:
        >>> u = latin_hypercube(np.random.default_rng(0), 2, 4, 3)
        >>> np.sort(np.floor(u * 4), axis=1)[0, :, 0].tolist()
        [0.0, 1.0, 2.0, 3.0]
    """
    strata = rng.permuted(np.broadcast_to(np.arange(draws)[:, None], (rows, draws, dim)), axis=1)
    return (strata + _open_uniform(rng, (rows, draws, dim))) / draws


def continuous_columns(dim: int) -> Columns:
    """The :class:`Columns` of ``dim`` continuous columns (a model fitted without discrete
    handling)."""
    return Columns(tuple(Column(str(j), "continuous") for j in range(dim)))
