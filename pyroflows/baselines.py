"""Classical density estimators behind the scikit-learn style API that the flows use.

Every estimator here has ``fit(X, X_val=None)``, ``score_samples(X)`` (log-density per row, in
the units of ``X``), ``score(X)`` (mean log-likelihood) and ``sample(n, random_state=None)``:

- :class:`GaussianDensity`: one Gaussian with the maximum-likelihood mean and covariance.
- :class:`KDEDensity`: a kernel density estimate on standardised data, the bandwidth chosen
  by cross-validated log-likelihood.
- :class:`GMMDensity`: a Gaussian mixture, the number of components chosen on a validation set.

Inputs are checked by :func:`pyroflows.validation.check_data` before any state changes, so a
call that raises leaves a fitted estimator as it was.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.linalg import solve_triangular
from sklearn.base import BaseEstimator
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import GridSearchCV, KFold, PredefinedSplit
from sklearn.neighbors import KernelDensity
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from pyroflows.validation import check_data

_LOG_2PI = math.log(2.0 * math.pi)

__all__ = ["BaseDensity", "GMMDensity", "GaussianDensity", "KDEDensity"]


class BaseDensity(BaseEstimator):
    """Shared plumbing: input checks, ``score`` and ``sample`` argument handling.

    Subclasses implement ``_fit(X, X_val) -> dict`` (the fitted attributes, set all at once
    after ``_fit`` returns), ``_score_samples(X)`` and ``_sample(n, rng)``.
    """

    def fit(self, X: Any, X_val: Any = None) -> BaseDensity:
        """Fit to the rows of ``X``; ``X_val`` (optional) is used for model selection.

        Args:
            X: training data of shape ``(n_samples, n_features)``, at least 2 rows, finite,
                no constant column.
            X_val: validation data with the same columns, or ``None``.

        Returns:
            The fitted estimator.
        """
        X = check_data(X, name="X", min_samples=2, check_variance=True)
        if X_val is not None:
            X_val = check_data(X_val, X.shape[1], name="X_val")
        state = self._fit(X, X_val)
        for key, value in state.items():
            setattr(self, key, value)
        self.n_features_in_ = X.shape[1]
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

    # -- to implement -------------------------------------------------------------------------
    def _fit(self, X: np.ndarray, X_val: np.ndarray | None) -> dict[str, Any]:
        raise NotImplementedError

    def _score_samples(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _sample(self, n: int, rng: np.random.RandomState) -> np.ndarray:
        raise NotImplementedError


def _cholesky(cov: np.ndarray, what: str) -> np.ndarray:
    try:
        return np.linalg.cholesky(cov)
    except np.linalg.LinAlgError:
        raise ValueError(
            f"the covariance of {what} is singular (linearly dependent columns, or fewer rows "
            "than columns); set reg_covar > 0"
        ) from None


class GaussianDensity(BaseDensity):
    """A multivariate Gaussian with the maximum-likelihood mean and covariance.

    Args:
        reg_covar: added to the diagonal of the covariance (0: the exact MLE).

    Attributes:
        mean_: the sample mean, shape ``(D,)``.
        covariance_: the MLE covariance (divided by ``n``), shape ``(D, D)``.
        cholesky_: its lower Cholesky factor.

    Example:
        >>> import numpy as np
        >>> X = np.random.default_rng(0).normal(size=(500, 2))
        >>> model = GaussianDensity().fit(X)
        >>> model.score_samples(X[:3]).shape, model.sample(4, random_state=0).shape
        ((3,), (4, 2))
    """

    def __init__(self, reg_covar: float = 0.0):
        self.reg_covar = reg_covar

    def _fit(self, X: np.ndarray, X_val: np.ndarray | None) -> dict[str, Any]:
        if self.reg_covar < 0:
            raise ValueError(f"reg_covar must be >= 0; got {self.reg_covar}")
        mean = X.mean(axis=0)
        centred = X - mean
        cov = centred.T @ centred / X.shape[0] + self.reg_covar * np.eye(X.shape[1])
        return {"mean_": mean, "covariance_": cov, "cholesky_": _cholesky(cov, "X")}

    def _score_samples(self, X: np.ndarray) -> np.ndarray:
        z = solve_triangular(self.cholesky_, (X - self.mean_).T, lower=True)
        log_det = np.log(np.diag(self.cholesky_)).sum()
        return -0.5 * (z**2).sum(axis=0) - log_det - 0.5 * X.shape[1] * _LOG_2PI

    def _sample(self, n: int, rng: np.random.RandomState) -> np.ndarray:
        z = rng.standard_normal((n, self.n_features_in_))
        return self.mean_ + z @ self.cholesky_.T


class KDEDensity(BaseDensity):
    """Kernel density estimate with a cross-validated bandwidth.

    The data are standardised (each column to mean 0 and standard deviation 1), the bandwidth
    is chosen among ``bandwidths`` (in standardised units) by the held-out log-likelihood of a
    shuffled ``cv``-fold split, or of ``X_val`` when one is given, and the kernel estimate is
    refitted on all of ``X``. Log-densities are returned in the units of ``X``: the log-Jacobian
    of the standardisation, ``-sum(log scale_)``, is included.

    Args:
        bandwidths: candidate bandwidths in standardised units; default 30 values log-spaced
            from 0.01 to 10.
        kernel: any kernel of :class:`sklearn.neighbors.KernelDensity` (sampling needs
            ``"gaussian"`` or ``"tophat"``).
        cv: number of folds when no ``X_val`` is given.
        standardize: standardise the columns first (otherwise one bandwidth for raw units).
        random_state: seed of the fold shuffling.

    Attributes:
        bandwidth_: the selected bandwidth (standardised units when ``standardize``).
        mean_, scale_: the standardisation, shape ``(D,)``.
        kde_: the fitted :class:`~sklearn.neighbors.KernelDensity`.
        cv_results_: the ``cv_results_`` of the grid search.

    Example:
        >>> import numpy as np
        >>> X = np.random.default_rng(0).normal(size=(300, 2))
        >>> kde = KDEDensity().fit(X)
        >>> bool(0.1 < kde.bandwidth_ < 1.0), kde.sample(5, random_state=0).shape
        (True, (5, 2))
    """

    def __init__(
        self,
        bandwidths: Sequence[float] | None = None,
        kernel: str = "gaussian",
        cv: int = 5,
        standardize: bool = True,
        random_state: int | None = 0,
    ):
        self.bandwidths = bandwidths
        self.kernel = kernel
        self.cv = cv
        self.standardize = standardize
        self.random_state = random_state

    def _grid(self) -> np.ndarray:
        if self.bandwidths is None:
            return np.logspace(-2, 1, 30)
        grid = np.sort(np.asarray(self.bandwidths, dtype=np.float64).ravel())
        if grid.size == 0 or not np.all(np.isfinite(grid)) or np.any(grid <= 0):
            raise ValueError(f"bandwidths must be positive and finite; got {self.bandwidths!r}")
        return grid

    def _fit(self, X: np.ndarray, X_val: np.ndarray | None) -> dict[str, Any]:
        grid = self._grid()
        if self.standardize:
            mean, scale = X.mean(axis=0), X.std(axis=0)
        else:
            mean, scale = np.zeros(X.shape[1]), np.ones(X.shape[1])
        Z = (X - mean) / scale
        if X_val is None:
            if not isinstance(self.cv, numbers.Integral) or self.cv < 2:
                raise ValueError(f"cv must be an integer >= 2; got {self.cv!r}")
            if X.shape[0] < self.cv:
                raise ValueError(
                    f"X has {X.shape[0]} rows; {self.cv}-fold bandwidth selection needs at "
                    f"least {self.cv} (lower cv or pass X_val)"
                )
            data, split = Z, KFold(self.cv, shuffle=True, random_state=self.random_state)
        else:
            data = np.concatenate([Z, (X_val - mean) / scale])
            split = PredefinedSplit(np.r_[np.full(len(Z), -1), np.zeros(len(X_val), dtype=int)])
        search = GridSearchCV(
            KernelDensity(kernel=self.kernel), {"bandwidth": grid}, cv=split, refit=False
        )
        search.fit(data)
        bandwidth = float(search.best_params_["bandwidth"])
        if grid.size > 1 and bandwidth in (grid[0], grid[-1]):
            warnings.warn(
                f"the selected bandwidth {bandwidth:.3g} lies on the edge of the grid "
                f"[{grid[0]:.3g}, {grid[-1]:.3g}]; widen `bandwidths`",
                stacklevel=3,
            )
        kde = KernelDensity(kernel=self.kernel, bandwidth=bandwidth).fit(Z)
        return {
            "bandwidth_": bandwidth,
            "mean_": mean,
            "scale_": scale,
            "kde_": kde,
            "cv_results_": search.cv_results_,
        }

    def _score_samples(self, X: np.ndarray) -> np.ndarray:
        return self.kde_.score_samples((X - self.mean_) / self.scale_) - np.log(self.scale_).sum()

    def _sample(self, n: int, rng: np.random.RandomState) -> np.ndarray:
        return self.kde_.sample(n, random_state=rng) * self.scale_ + self.mean_


class GMMDensity(BaseDensity):
    """Gaussian mixture whose number of components is chosen on a validation set.

    Each candidate number of components is fitted on the training rows and scored by the mean
    log-likelihood of the validation rows. With ``one_se_rule`` (the default) the smallest
    candidate whose score is within one standard error of the best one is kept (the standard
    error of the paired per-row differences), which stops validation noise of a few
    thousandths of a nat from picking a needlessly large mixture; otherwise the best score
    wins. Without ``X_val`` a random
    ``validation_fraction`` of ``X`` is held out for the choice and the chosen mixture is then
    refitted on all of ``X``; with ``X_val`` the mixture fitted on ``X`` is kept.

    Args:
        n_components: an int (fixed, no selection), a sequence of candidates, or ``None`` for
            ``1, ..., max_components``.
        max_components: the largest candidate when ``n_components`` is ``None``.
        covariance_type: ``"full"``, ``"tied"``, ``"diag"`` or ``"spherical"``.
        reg_covar: added to the diagonal of every covariance.
        n_init: EM restarts per candidate.
        max_iter: EM iterations per restart.
        validation_fraction: share of ``X`` held out when no ``X_val`` is given.
        one_se_rule: prefer the smallest candidate within one standard error of the best.
        random_state: seed of the split and of EM's initialisation.

    Attributes:
        n_components_: the selected number of components.
        gmm_: the fitted :class:`~sklearn.mixture.GaussianMixture`.
        validation_scores_: ``{n_components: mean validation log-likelihood}`` (empty when
            there was nothing to choose).

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> X = np.concatenate([rng.normal(-4, 1, (200, 2)), rng.normal(4, 1, (200, 2))])
        >>> GMMDensity(max_components=4).fit(X).n_components_
        2
    """

    def __init__(
        self,
        n_components: int | Sequence[int] | None = None,
        max_components: int = 10,
        covariance_type: str = "full",
        reg_covar: float = 1e-6,
        n_init: int = 1,
        max_iter: int = 200,
        validation_fraction: float = 0.2,
        one_se_rule: bool = True,
        random_state: int | None = 0,
    ):
        self.n_components = n_components
        self.max_components = max_components
        self.covariance_type = covariance_type
        self.reg_covar = reg_covar
        self.n_init = n_init
        self.max_iter = max_iter
        self.validation_fraction = validation_fraction
        self.one_se_rule = one_se_rule
        self.random_state = random_state

    def _candidates(self) -> list[int]:
        if self.n_components is None:
            candidates = list(range(1, int(self.max_components) + 1))
        elif isinstance(self.n_components, numbers.Integral):
            candidates = [int(self.n_components)]
        else:
            candidates = sorted({int(k) for k in self.n_components})
        if not candidates or min(candidates) < 1:
            raise ValueError(
                f"the candidate numbers of components must be positive integers; got "
                f"n_components={self.n_components!r}, max_components={self.max_components!r}"
            )
        return candidates

    def _mixture(self, k: int) -> GaussianMixture:
        return GaussianMixture(
            n_components=k,
            covariance_type=self.covariance_type,
            reg_covar=self.reg_covar,
            n_init=self.n_init,
            max_iter=self.max_iter,
            random_state=self.random_state,
        )

    def _fit(self, X: np.ndarray, X_val: np.ndarray | None) -> dict[str, Any]:
        candidates = self._candidates()
        if len(candidates) == 1:
            k = candidates[0]
            if k > X.shape[0]:
                raise ValueError(f"X has {X.shape[0]} rows, fewer than n_components={k}")
            return {"n_components_": k, "gmm_": self._mixture(k).fit(X), "validation_scores_": {}}
        refit = X_val is None
        if refit:
            if not 0.0 < self.validation_fraction < 1.0:
                raise ValueError(
                    f"validation_fraction must lie in (0, 1); got {self.validation_fraction}"
                )
            order = check_random_state(self.random_state).permutation(X.shape[0])
            n_val = min(max(1, round(self.validation_fraction * X.shape[0])), X.shape[0] - 1)
            train, X_val = X[order[n_val:]], X[order[:n_val]]
        else:
            train = X
        models, per_row = {}, {}
        for k in candidates:
            if k > train.shape[0]:
                continue
            models[k] = self._mixture(k).fit(train)
            per_row[k] = models[k].score_samples(X_val)
        if not per_row:
            raise ValueError(
                f"the training split has {train.shape[0]} rows, fewer than every candidate "
                f"number of components {candidates}"
            )
        scores = {k: float(v.mean()) for k, v in per_row.items()}
        best = max(scores, key=lambda k: (scores[k], -k))
        if self.one_se_rule and len(X_val) > 1:
            for k in sorted(scores):  # the smallest candidate close enough to the best
                diff = per_row[best] - per_row[k]
                if diff.mean() <= diff.std(ddof=1) / math.sqrt(len(diff)):
                    best = k
                    break
        gmm = self._mixture(best).fit(X) if refit else models[best]
        return {"n_components_": best, "gmm_": gmm, "validation_scores_": scores}

    def _score_samples(self, X: np.ndarray) -> np.ndarray:
        return self.gmm_.score_samples(X)

    def _full_covariances(self) -> np.ndarray:
        gmm, d = self.gmm_, self.n_features_in_
        cov = gmm.covariances_
        if gmm.covariance_type == "full":
            return cov
        if gmm.covariance_type == "tied":
            return np.broadcast_to(cov, (gmm.n_components, d, d))
        if gmm.covariance_type == "diag":
            return cov[:, :, None] * np.eye(d)
        return cov[:, None, None] * np.eye(d)  # spherical

    def _sample(self, n: int, rng: np.random.RandomState) -> np.ndarray:
        gmm = self.gmm_
        weights = gmm.weights_ / gmm.weights_.sum()
        component = rng.choice(gmm.n_components, size=n, p=weights)
        chol = np.linalg.cholesky(self._full_covariances())
        z = rng.standard_normal((n, self.n_features_in_))
        return gmm.means_[component] + np.einsum("nij,nj->ni", chol[component], z)
