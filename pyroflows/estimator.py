"""The contract every density estimator of pyroflows follows (flows and baselines alike).

:class:`BaseDensity` gives the scikit-learn style ``fit(X, X_val=None)``, ``score_samples``,
``score``, ``sample(n, random_state)`` and versioned ``save`` / ``load`` (plain tensors and
Python values only, loaded with ``torch.load(weights_only=True)``), and does the input checks
once, before any state changes: a call that raises leaves a fitted estimator as it was.
Subclasses implement ``_fit``, ``_score_samples``, ``_sample``, and ``_get_state`` /
``_set_state`` for persistence. :func:`split_validation` is the one train/validation split.
"""

from __future__ import annotations

import numbers
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from pyroflows.checkpoint import atomic_save, read_saved
from pyroflows.validation import check_data

__all__ = ["BaseDensity", "split_validation"]


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
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"validation_fraction must lie in [0, 1), got {fraction!r}")
    if fraction == 0.0 or len(X) < min_rows:
        return X, None
    order = check_random_state(random_state).permutation(len(X))
    n_val = min(max(1, int(round(fraction * len(X)))), len(X) - 1)
    return X[order[n_val:]], X[order[:n_val]]


def _plain(value: Any) -> Any:
    """Parameters as types that ``torch.load(weights_only=True)`` reads back."""
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, list):
        return [_plain(v) for v in value]
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
        names = getattr(X, "columns", None)
        X = check_data(X, name="X", min_samples=2, check_variance=True)
        if X_val is not None:
            X_val = check_data(X_val, X.shape[1], name="X_val")
        return self._set_fitted(self._fit(X, X_val, **options), X.shape[1], names)

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

    def save(self, path: str | Path) -> None:
        """Save the hyper-parameters and the fitted state to one file, loadable with
        ``torch.load(path, weights_only=True)`` (no code is pickled), written atomically
        (:func:`pyroflows.checkpoint.atomic_save`)."""
        if not hasattr(self, "n_features_in_"):
            raise ValueError(f"this {type(self).__name__} is not fitted yet; call fit first")
        blob = {
            "format": self._format(),
            "version": self.FORMAT_VERSION,
            "params": {k: _plain(v) for k, v in self.get_params(deep=False).items()},
            "n_features": int(self.n_features_in_),
            "feature_names": [str(n) for n in getattr(self, "feature_names_in_", [])],
            "state": self._get_state(),
        }
        atomic_save(blob, path)

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
        blob = read_saved(path, cls._format(), what)
        version = blob.get("version")
        if not isinstance(version, int) or version > cls.FORMAT_VERSION:
            raise ValueError(
                f"{path} has format version {version}; this pyroflows reads up to "
                f"{cls.FORMAT_VERSION}: upgrade pyroflows"
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
