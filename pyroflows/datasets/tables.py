"""Real data sets that ship inside installed packages, as :class:`Dataset` splits, and the
loader by name (toy names included)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from pyroflows.datasets.toys import _TOYS, ToyDistribution, toy

# --------------------------------------------------------------------------------------------
# Data sets and splits
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """A data set split into train, validation and test arrays.

    Attributes:
        name: Identifier.
        train, val, test: float64 arrays of shape ``(n_split, D)``.
        y_train, y_val, y_test: Integer labels of shape ``(n_split,)``, or ``None``.
        feature_names: Names of the ``D`` columns.
        distribution: The generating :class:`ToyDistribution` for toy data, else ``None``.
        loc, scale: Per-column shift and scale already applied, so the original data are
            ``train * scale + loc`` (0 and 1 unless :meth:`standardized` was called).

    Example:
        >>> d = load("moons", n=100)
        >>> d.dim, len(d.train), d.distribution.name
        (2, 70, 'moons')
    """

    name: str
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    y_train: np.ndarray | None = None
    y_val: np.ndarray | None = None
    y_test: np.ndarray | None = None
    feature_names: tuple[str, ...] = ()
    distribution: ToyDistribution | None = None
    loc: np.ndarray | float = 0.0
    scale: np.ndarray | float = 1.0

    @property
    def dim(self) -> int:
        """Number of columns ``D``."""
        return self.train.shape[1]

    def standardized(self) -> Dataset:
        """Return a copy whose columns are shifted and scaled by the training mean and std.

        Columns with zero training std are only shifted. ``loc`` and ``scale`` record the
        transformation (so densities of the standardized data differ by ``sum(log scale)``).

        Returns:
            A new :class:`Dataset`.

        Example:
            >>> d = load("airports").standardized()
            >>> np.allclose(d.train.mean(0), 0.0), np.allclose(d.train.std(0), 1.0)
            (True, True)
        """
        loc = self.train.mean(0)
        scale = self.train.std(0)
        scale = np.where(scale > 0, scale, 1.0)
        return dataclasses.replace(
            self,
            train=(self.train - loc) / scale,
            val=(self.val - loc) / scale,
            test=(self.test - loc) / scale,
            loc=self.loc + self.scale * loc,
            scale=self.scale * scale,
        )


def split(
    x: np.ndarray,
    y: np.ndarray | None = None,
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded random split of row indices into train, validation and test.

    The test and validation sizes are ``round(fraction * n)``; the training set gets the rest.
    With labels ``y`` the split is stratified (scikit-learn's ``train_test_split``, twice), so
    every class keeps about its overall proportion in each part.

    Args:
        x: Data, shape ``(n, ...)`` (only its length is used).
        y: Optional labels of shape ``(n,)`` to stratify on.
        fractions: Train, validation and test fractions, summing to 1.
        seed: Seed; the same seed gives the same split.

    Returns:
        Three disjoint index arrays ``(train, val, test)`` whose union is ``range(n)``.

    Example:
        >>> tr, va, te = split(np.zeros(20), seed=0)
        >>> len(tr), len(va), len(te)
        (14, 3, 3)
    """
    from sklearn.model_selection import train_test_split

    if not math.isclose(sum(fractions), 1.0) or min(fractions) < 0:
        raise ValueError(f"fractions must be non-negative and sum to 1, got {fractions}")
    n = len(x)
    n_val, n_test = round(fractions[1] * n), round(fractions[2] * n)
    idx = np.arange(n)
    rest, test = train_test_split(idx, test_size=n_test, random_state=seed, stratify=y)
    y_rest = None if y is None else y[rest]
    train, val = train_test_split(rest, test_size=n_val, random_state=seed + 1, stratify=y_rest)
    return train, val, test


def _make_dataset(
    name: str,
    x: np.ndarray,
    y: np.ndarray | None,
    feature_names: Sequence[str],
    seed: int,
    fractions: tuple[float, float, float],
    **extra: Any,
) -> Dataset:
    tr, va, te = split(x, y, fractions, seed)
    x = np.asarray(x, dtype=np.float64)
    labels: dict[str, np.ndarray | None] = {"y_train": None, "y_val": None, "y_test": None}
    if y is not None:
        labels = {"y_train": y[tr], "y_val": y[va], "y_test": y[te]}
    return Dataset(name, x[tr], x[va], x[te], **labels, feature_names=tuple(feature_names), **extra)


def load_digits(
    seed: int = 0,
    dequantize: bool = False,
    drop_constant: bool = False,
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
) -> Dataset:
    """scikit-learn's 8 x 8 handwritten digits: 1797 images, 64 integer pixels in ``0..16``.

    The split is stratified by digit. Options, applied in this order:

    * ``drop_constant``: drop the columns that are constant on the *training* split (e.g. the
      left-most pixel of the top row is always 0); a flow cannot fit a point mass. The same
      columns are dropped from validation and test, and ``feature_names`` follows.
    * ``dequantize``: add independent ``U[0, 1)`` noise to every pixel (seeded by ``seed``), so
      the data lie in ``[0, 17)`` and are continuous. ``floor`` recovers the integer pixels,
      and a density ``q`` on the noisy data lower-bounds the discrete log-likelihood:
      ``log P(k) >= E_u[log q(k + u)]``.

    Args:
        seed: Seed of the split and of the dequantisation noise.
        dequantize: Add uniform noise to the integer pixels.
        drop_constant: Drop columns that are constant on the training split.
        fractions: Train, validation and test fractions.

    Returns:
        A :class:`Dataset` with labels 0-9 and features ``"pixel_r_c"``.

    Example:
        >>> d = load_digits(drop_constant=True, dequantize=True)
        >>> d.train.shape[0] + d.val.shape[0] + d.test.shape[0], d.dim < 64
        (1797, True)
    """
    from sklearn.datasets import load_digits as _sk_digits

    bunch = _sk_digits()
    names = [f"pixel_{i // 8}_{i % 8}" for i in range(64)]
    data = _make_dataset("digits", bunch.data, bunch.target, names, seed, fractions)
    if drop_constant:
        keep = data.train.max(0) > data.train.min(0)
        data = dataclasses.replace(
            data,
            train=data.train[:, keep],
            val=data.val[:, keep],
            test=data.test[:, keep],
            feature_names=tuple(n for n, k in zip(names, keep, strict=True) if k),
        )
    if dequantize:
        rng = np.random.default_rng(seed)
        data = dataclasses.replace(
            data,
            train=data.train + rng.uniform(size=data.train.shape),
            val=data.val + rng.uniform(size=data.val.shape),
            test=data.test + rng.uniform(size=data.test.shape),
        )
    return data


def load_breast_cancer(
    seed: int = 0, fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
) -> Dataset:
    """scikit-learn's Wisconsin breast cancer data: 569 tumours, 30 real features.

    Labels are 0 (malignant, 212) and 1 (benign, 357); the split is stratified on them.
    The features span several orders of magnitude: call :meth:`Dataset.standardized`
    before fitting a flow.

    Args:
        seed: Seed of the split.
        fractions: Train, validation and test fractions.

    Returns:
        A :class:`Dataset` with labels and scikit-learn's feature names.

    Example:
        >>> d = load_breast_cancer()
        >>> d.feature_names[0], int(d.y_train.sum() + d.y_val.sum() + d.y_test.sum())
        ('mean radius', 357)
    """
    from sklearn.datasets import load_breast_cancer as _sk_bc

    bunch = _sk_bc()
    return _make_dataset(
        "breast_cancer",
        bunch.data,
        bunch.target,
        [str(f) for f in bunch.feature_names],
        seed,
        fractions,
    )


def load_airports(
    seed: int = 0,
    contiguous_us: bool = False,
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
) -> Dataset:
    """Locations of 3376 US airports (``vega_datasets``): a real 2-D spatial point pattern.

    Read from the CSV file bundled with ``vega_datasets`` (``vega_datasets.local_data``), so
    nothing is downloaded. Columns are ``longitude`` and ``latitude`` in degrees; the data
    include Alaska, Hawaii and overseas territories, which ``contiguous_us`` removes (keeping
    longitudes in ``[-125, -66]`` and latitudes in ``[24, 50]``).

    Args:
        seed: Seed of the split (unstratified: there are no labels).
        contiguous_us: Keep only the lower 48 states.
        fractions: Train, validation and test fractions.

    Returns:
        A :class:`Dataset` with features ``("longitude", "latitude")``.

    Raises:
        ImportError: If ``vega_datasets`` (a dependency of pyroflows) is missing.

    Example:
        >>> d = load_airports(contiguous_us=True)
        >>> d.feature_names, bool(d.train[:, 0].min() >= -125)
        (('longitude', 'latitude'), True)
    """
    try:
        from vega_datasets import local_data
    except ImportError as err:  # pragma: no cover - optional dependency
        raise ImportError(
            "load_airports needs the package vega_datasets, a dependency of pyroflows that is "
            "missing from this environment: pip install vega_datasets"
        ) from err
    df = local_data.airports()
    x = df[["longitude", "latitude"]].to_numpy(dtype=np.float64)
    if contiguous_us:
        lon, lat = x[:, 0], x[:, 1]
        x = x[(lon >= -125) & (lon <= -66) & (lat >= 24) & (lat <= 50)]
    return _make_dataset("airports", x, None, ("longitude", "latitude"), seed, fractions)


def _load_toy(
    name: str,
    seed: int = 0,
    n: int = 10_000,
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    **kwargs: Any,
) -> Dataset:
    p = toy(name, **kwargs)
    x = p.sample(n, seed=seed)
    d = x.shape[1]
    names = ("x", "y") if d == 2 else tuple(f"x{i}" for i in range(d))
    return _make_dataset(p.name, x, None, names, seed, fractions, distribution=p)


_REAL: dict[str, Callable[..., Dataset]] = {
    "digits": load_digits,
    "breast_cancer": load_breast_cancer,
    "airports": load_airports,
}


def list_datasets() -> list[str]:
    """Names accepted by :func:`load`.

    Returns:
        Real data sets first, then toy distributions.

    Example:
        >>> list_datasets()[:3]
        ['airports', 'breast_cancer', 'digits']
    """
    return sorted(_REAL) + sorted(_TOYS)


def load(name: str, seed: int = 0, **kwargs: Any) -> Dataset:
    """Load a data set by name, split into train, validation and test.

    Real data (``"digits"``, ``"breast_cancer"``, ``"airports"``) pass ``kwargs`` to their
    loader. Toy names (``"mixture_2d"``, ``"mixture"``, ``"rings"``, ``"checkerboard"``,
    ``"moons"``) draw ``n`` samples (default 10 000) with ``seed``, split them with the same
    seed, and keep the distribution in :attr:`Dataset.distribution` for exact log-densities;
    other ``kwargs`` (``fractions`` aside) go to the toy's factory.

    Args:
        name: Data set name, see :func:`list_datasets`.
        seed: Seed of sampling, splitting and dequantisation.
        **kwargs: Loader or toy options, e.g. ``n=5000, n_components=4``.

    Returns:
        A :class:`Dataset`.

    Raises:
        ValueError: For an unknown name.

    Example:
        >>> d = load("mixture_2d", n=1000, n_components=4, gap=6.0)
        >>> d.name, d.train.shape, d.distribution.log_prob(d.test).shape
        ('mixture_2d-4', (700, 2), (150,))
    """
    if name in _REAL:
        return _REAL[name](seed=seed, **kwargs)
    if name in _TOYS:
        return _load_toy(name, seed=seed, **kwargs)
    raise ValueError(f"unknown data set {name!r}; choose from {list_datasets()}")
