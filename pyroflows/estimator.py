"""The contract every density estimator of pyroflows follows (flows and baselines alike).

:class:`BaseDensity` gives the scikit-learn style ``fit(X, X_val=None)``, ``score_samples``,
``score``, ``sample(n, random_state)`` and versioned ``save`` / ``load`` (plain tensors and
Python values only, loaded with ``torch.load(weights_only=True)``), and does the input checks
once, before any state changes: a call that raises leaves a fitted estimator as it was.
Subclasses implement ``_fit``, ``_score_samples``, ``_sample``, and ``_get_state`` /
``_set_state`` for persistence. :func:`split_validation` is the one train/validation split of
in-memory rows; :func:`save_envelope` / :func:`read_envelope` (with :func:`plain`) are the one
envelope of a saved model (format, version, plain parameters), for any job's ``save`` / ``load``.
A new density estimator subclasses :class:`BaseDensity` (a flow in :mod:`pyroflows.density`, a
classical one in :mod:`pyroflows.baselines`).
"""

from __future__ import annotations

import numbers
import os
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.utils import check_random_state
from sklearn.utils.validation import _get_feature_names, check_is_fitted

from pyroflows.checkpoint import atomic_save, read_saved
from pyroflows.train.recipe import validation_rows
from pyroflows.validation import check_data, warn_awkward_data

__all__ = [
    "BaseDensity",
    "check_feature_names",
    "is_pyroflows_file",
    "plain",
    "read_envelope",
    "refuse_to_overwrite",
    "save_envelope",
    "split_validation",
]


def is_pyroflows_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a file that pyroflows wrote (a saved model or a checkpoint): a zip
    archive that ``torch.load(weights_only=True)`` reads as a dictionary whose ``"format"``
    starts with ``"pyroflows."``. Anything else (a CSV file, a ``.npy`` file, a damaged or
    foreign archive) is not, and pyroflows does not overwrite it without being told to.
    """
    try:
        if not (os.path.isfile(path) and zipfile.is_zipfile(path)):
            return False
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return False
    return isinstance(blob, dict) and str(blob.get("format", "")).startswith("pyroflows.")


def refuse_to_overwrite(path: str | os.PathLike, what: str, force: str | None = None) -> None:
    """Raise a ``ValueError`` when ``path`` exists and is not a file pyroflows wrote
    (:func:`is_pyroflows_file`): writing there would destroy the user's data. ``force``
    names the option that allows it (e.g. ``"force=True"``)."""
    if os.path.lexists(path) and not is_pyroflows_file(path):
        raise ValueError(
            f"{what} {path} exists and is not a file pyroflows wrote: refusing to overwrite it "
            + (
                "(choose another path, or remove the file first)"
                if force is None
                else f"(choose another path, or pass {force})"
            )
        )


def _name_list(names: Any) -> str:
    listed = [str(n) for n in names]
    return str(listed if len(listed) <= 8 else listed[:8] + ["..."])


def check_feature_names(
    fitted: Any, X: Any, owner: str, name: str = "X", fitted_as: str = "fit"
) -> None:
    """scikit-learn's rule for the column names of ``X`` against those seen at fit time
    (``fitted``: ``feature_names_in_`` or None): other names, or the same names in another
    order, raise a ``ValueError`` naming the difference; names on one side only warn (a
    ``UserWarning``, as scikit-learn's estimators do). Changes nothing.

    Example:
        >>> import pandas as pd
        >>> df = pd.DataFrame({"a": [0.0], "b": [1.0]})
        >>> try:
        ...     check_feature_names(np.array(["a", "b"], dtype=object), df[["b", "a"]], "Est")
        ... except ValueError as error:
        ...     print(str(error).splitlines()[1][-33:])
        (fit: ['a', 'b'], X: ['b', 'a']).
    """
    names = _get_feature_names(X)
    if fitted is None and names is None:
        return
    if fitted is None:
        warnings.warn(
            f"{name} has feature names, but {owner} was fitted without feature names",
            UserWarning,
            stacklevel=3,
        )
        return
    if names is None:
        warnings.warn(
            f"{name} does not have valid feature names, but {owner} was fitted with feature names",
            UserWarning,
            stacklevel=3,
        )
        return
    fitted = np.asarray(fitted, dtype=object)
    if len(fitted) == len(names) and np.all(fitted == names):
        return
    message = f"The feature names should match those that were passed during {fitted_as}.\n"
    unexpected = sorted(set(names) - set(fitted))
    missing = sorted(set(fitted) - set(names))

    def listed(values: list) -> str:
        return "".join(f"- {v}\n" for v in values[:5]) + ("- ...\n" if len(values) > 5 else "")

    if unexpected:
        message += f"Feature names unseen at {fitted_as} time:\n" + listed(unexpected)
    if missing:
        message += f"Feature names seen at {fitted_as} time, yet now missing:\n" + listed(missing)
    if not unexpected and not missing:
        message += (
            f"Feature names must be in the same order as they were in {fitted_as} "
            f"({fitted_as}: {_name_list(fitted)}, {name}: {_name_list(names)}).\n"
        )
    raise ValueError(message.strip())


def split_validation(
    X: np.ndarray, fraction: float, random_state: Any = None, min_rows: int = 10
) -> tuple[np.ndarray, np.ndarray | None]:
    """Hold out a random ``fraction`` of the rows: ``(train, validation)``.

    With fewer than ``min_rows`` rows, or ``fraction == 0``, nothing is held out (validation
    is ``None``). At least one row stays on each side.

    Example:
        >>> train, val = split_validation(np.arange(20.0).reshape(10, 2), 0.2, 0)
        >>> train.shape, val.shape
        ((8, 2), (2, 2))
    """
    n_val = validation_rows(len(X), fraction)  # checks the fraction
    if n_val == 0 or len(X) < min_rows:
        return X, None
    order = check_random_state(random_state).permutation(len(X))
    return X[order[n_val:]], X[order[:n_val]]


def save_envelope(path: str | Path, fmt: str, version: int, **body: Any) -> None:
    """Write a saved model: ``{"format": fmt, "version": version, **body}`` (tensors and plain
    values, see :func:`plain`), atomically (:func:`pyroflows.checkpoint.atomic_save`). The
    one envelope of pyroflows' saved files; :func:`read_envelope` reads it back."""
    atomic_save({"format": fmt, "version": version, **body}, path)


def read_envelope(path: str | Path, fmt: str, what: str, newest: int) -> tuple[dict, int]:
    """Read a file written by :func:`save_envelope`: ``(blob, version)``.

    Raises:
        ValueError: a missing, truncated, corrupt (checksums) or foreign file
            (:func:`pyroflows.checkpoint.read_saved`; ``what`` names the expected kind), or a
            version that is not an int or is newer than ``newest``.
    """
    blob = read_saved(path, fmt, what)
    version = blob.get("version")
    if not isinstance(version, int) or version > newest:
        raise ValueError(
            f"{path} has format version {version}; this pyroflows reads up to "
            f"{newest}: upgrade pyroflows"
        )
    return blob, version


def plain(value: Any) -> Any:
    """Parameters as types that ``torch.load(weights_only=True)`` reads back."""
    if isinstance(value, tuple):
        return [plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


class BaseDensity(BaseEstimator):
    """Shared plumbing of the density estimators: input checks, ``score``, ``sample``
    arguments, and persistence.

    Subclasses implement ``_fit(X, X_val) -> dict`` (the fitted attributes, set all at once
    after ``_fit`` returns), ``_score_samples(X)``, ``_sample(n, rng)``, and for ``save`` /
    ``load`` ``_get_state() -> dict`` and ``_set_state(state)``. ``_check_params()`` validates
    the hyper-parameters before any work.
    """

    #: bumped whenever the saved layout of a subclass changes
    FORMAT_VERSION = 1
    #: hyper-parameters that the fitted state depends on: ``load`` refuses to override them
    _FIXED_BY_FIT: tuple[str, ...] = ()

    def fit(self, X: Any, X_val: Any = None) -> BaseDensity:
        """Fit to the rows of ``X``; ``X_val`` (optional) is used for model selection.

        Args:
            X: training data of shape ``(n_samples, n_features)``, at least 2 rows, finite,
                no constant column.
            X_val: validation data with the same columns, or ``None``.

        Returns:
            The fitted estimator.
        """
        return self._fit_checked(X, X_val)

    def _fit_checked(self, X: Any, X_val: Any, **options: Any) -> BaseDensity:
        """Check the parameters and the data, then ``_fit(X, X_val, **options)`` (options of
        one fit that a subclass takes, e.g. checkpoint files)."""
        self._check_params()
        names = _get_feature_names(X)
        if X_val is not None:
            check_feature_names(names, X_val, type(self).__name__, "X_val", "X")
        X = check_data(X, name="X", min_samples=2, check_variance=True)
        if X_val is not None:
            X_val = check_data(X_val, X.shape[1], name="X_val")
        self._warn_awkward(X, X_val, names)
        return self._set_fitted(self._fit(X, X_val, **options), X.shape[1], names)

    def _warn_awkward(self, X: np.ndarray, X_val: np.ndarray | None, names: Any) -> None:
        """Warn about data a continuous density fits badly (:func:`warn_awkward_data`)."""
        warn_awkward_data(X, X_val, names=names, split=X_val is None)

    def _check_names(self, X: Any) -> None:
        """scikit-learn's feature-name check of ``X`` against the names seen at fit."""
        check_feature_names(getattr(self, "feature_names_in_", None), X, type(self).__name__)

    def _set_fitted(self, state: dict[str, Any], n_features: int, names: Any) -> BaseDensity:
        """Set the fitted attributes all at once, after the fit succeeded."""
        for key, value in state.items():
            setattr(self, key, value)
        self.n_features_in_ = n_features
        if names is not None:
            self.feature_names_in_ = np.asarray([str(n) for n in names], dtype=object)
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_
        return self

    def score_samples(self, X: Any) -> np.ndarray:
        """Log-density ``log p(x)`` of each row of ``X``, shape ``(n_samples,)``."""
        check_is_fitted(self, "n_features_in_")
        self._check_names(X)
        X = check_data(X, self.n_features_in_, name="X")
        return self._score_samples(X)

    def score(self, X: Any, y: Any = None) -> float:
        """Mean log-likelihood of the rows of ``X`` (``y`` is ignored)."""
        return float(np.mean(self.score_samples(X)))

    def sample(self, n: int, random_state: Any = None) -> np.ndarray:
        """Draw ``n`` rows, shape ``(n, n_features)``.

        Args:
            n: number of draws (a positive integer).
            random_state: ``None``, an int seed or a ``numpy.random.RandomState``.
        """
        check_is_fitted(self, "n_features_in_")
        if not isinstance(n, numbers.Integral) or isinstance(n, bool) or n < 1:
            raise ValueError(f"n must be a positive integer; got {n!r}")
        return self._sample(int(n), check_random_state(random_state))

    # -- persistence -----------------------------------------------------------------------
    @classmethod
    def _format(cls) -> str:
        return f"pyroflows.{cls.__name__}"

    def save(self, path: str | Path, *, force: bool = False) -> None:
        """Save the hyper-parameters and the fitted state to one file, loadable with
        ``torch.load(path, weights_only=True)`` (no code is pickled), written atomically
        (:func:`pyroflows.checkpoint.atomic_save`).

        Args:
            path: the file. An existing file there is replaced only if pyroflows wrote it (a
                saved model or a checkpoint), so a slip such as ``est.save("data.csv")``
                cannot destroy data.
            force: replace whatever file is at ``path``.

        Raises:
            ValueError: not fitted, or ``path`` is a file pyroflows did not write (it is left
                byte-identical).
        """
        if not hasattr(self, "n_features_in_"):
            raise ValueError(f"this {type(self).__name__} is not fitted yet; call fit first")
        if not force:
            refuse_to_overwrite(path, "save:", "force=True")
        save_envelope(
            path,
            self._format(),
            self.FORMAT_VERSION,
            params={k: plain(v) for k, v in self.get_params(deep=False).items()},
            n_features=int(self.n_features_in_),
            feature_names=[str(n) for n in getattr(self, "feature_names_in_", [])],
            state=self._get_state(),
        )

    @classmethod
    def load(cls, path: str | Path, **overrides: Any) -> BaseDensity:
        """Load an estimator written by :meth:`save` (safe: ``weights_only=True``).

        Args:
            path: the file.
            **overrides: hyper-parameters to replace (e.g. ``device="cuda"``).

        Raises:
            ValueError: a missing, truncated, corrupt (checksums) or foreign file, or a newer
                format version.
        """
        what = f"a saved pyroflows {cls.__name__}"
        blob, version = read_envelope(path, cls._format(), what, cls.FORMAT_VERSION)
        known = cls().get_params(deep=False)
        unknown = sorted(set(overrides) - set(known))
        if unknown:
            raise TypeError(f"{cls.__name__}.load: unknown parameter(s) {unknown}")
        saved = blob.get("params") or {}
        fixed = [
            key
            for key in cls._FIXED_BY_FIT
            if key in overrides and plain(overrides[key]) != saved.get(key)
        ]
        if fixed:
            raise ValueError(
                f"{cls.__name__}.load: {fixed} shape the saved model and cannot be changed at "
                f"load time (saved: {', '.join(f'{k}={saved.get(k)!r}' for k in fixed)}); "
                "fit a new model instead"
            )
        try:
            params = {**blob["params"], **overrides}
            est = cls(**cls._params_from_plain(params))
            est.n_features_in_ = int(blob["n_features"])
            est._set_state(blob["state"], version)
        except (KeyError, TypeError, RuntimeError) as error:
            raise ValueError(
                f"{path} is {what} with missing or mismatched parts ({error})"
            ) from None
        if blob.get("feature_names"):
            est.feature_names_in_ = np.asarray(blob["feature_names"], dtype=object)
        return est

    @classmethod
    def _params_from_plain(cls, params: dict[str, Any]) -> dict[str, Any]:
        return params

    # -- to implement ----------------------------------------------------------------------
    def _check_params(self) -> None:
        """Raise a ``ValueError`` naming a hyper-parameter that is out of range."""

    def _fit(self, X: np.ndarray, X_val: np.ndarray | None) -> dict[str, Any]:
        raise NotImplementedError

    def _score_samples(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _sample(self, n: int, rng: np.random.RandomState) -> np.ndarray:
        raise NotImplementedError

    def _get_state(self) -> dict[str, Any]:
        raise NotImplementedError

    def _set_state(self, state: dict[str, Any], version: int) -> None:
        raise NotImplementedError
