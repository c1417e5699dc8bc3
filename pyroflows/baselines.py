"""Classical density estimators behind the scikit-learn style API that the flows use.

Every estimator here has ``fit(X, X_val=None)``, ``score_samples(X)`` (log-density per row, in
the units of ``X``), ``score(X)`` (mean log-likelihood) and ``sample(n, random_state=None)``:

- :class:`GaussianDensity`: one Gaussian with the maximum-likelihood mean and covariance.
- :class:`KDEDensity`: a kernel density estimate on standardised data, the bandwidth chosen
  by cross-validated log-likelihood.
- :class:`GMMDensity`: a Gaussian mixture, the number of components chosen on a validation set.

They share :class:`pyroflows.estimator.BaseDensity` with the flows (input checks before any
state changes, ``save`` / ``load`` with ``weights_only=True``). Each standardises in float64
with :func:`pyroflows.preprocess.fit_preprocessor` where it needs to.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from scipy.linalg import solve_triangular
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import GridSearchCV, KFold, PredefinedSplit
from sklearn.neighbors import KernelDensity

from pyroflows.estimator import BaseDensity, split_validation
from pyroflows.preprocess import Preprocessor, fit_preprocessor, preprocessor_layout

_LOG_2PI = math.log(2.0 * math.pi)

__all__ = ["GMMDensity", "GaussianDensity", "KDEDensity"]


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

    _FIXED_BY_FIT = ("reg_covar",)

    def __init__(self, reg_covar: float = 0.0):
        self.reg_covar = reg_covar

    def _fit(self, X: np.ndarray, X_val: np.ndarray | None) -> dict[str, Any]:
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

    def _check_params(self) -> None:
        if not self.reg_covar >= 0:
            raise ValueError(f"reg_covar must be >= 0; got {self.reg_covar}")

    def _get_state(self) -> dict[str, Any]:
        return {
            "mean": torch.from_numpy(self.mean_),
            "covariance": torch.from_numpy(self.covariance_),
        }

    def _set_state(self, state: dict[str, Any], version: int) -> None:
        self.mean_ = state["mean"].numpy()
        self.covariance_ = state["covariance"].numpy()
        self.cholesky_ = _cholesky(self.covariance_, "the saved model")


class KDEDensity(BaseDensity):
    """Kernel density estimate with a cross-validated bandwidth.

    The data are standardised (each column to mean 0 and standard deviation 1), the bandwidth
    is chosen among ``bandwidths`` (in standardised units) by the held-out log-likelihood of a
    shuffled ``cv``-fold split, or of ``X_val`` when one is given, and the kernel estimate is
    refitted on all of ``X``. Log-densities are returned in the units of ``X``: the log-Jacobian
    of the standardisation is included.

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
        preprocessor_: the standardisation (:class:`pyroflows.preprocess.Preprocessor`).
        kde_: the fitted :class:`~sklearn.neighbors.KernelDensity`.
        cv_results_: the ``cv_results_`` of the grid search.

    Example:
        >>> import numpy as np
        >>> X = np.random.default_rng(0).normal(size=(300, 2))
        >>> kde = KDEDensity().fit(X)
        >>> bool(0.1 < kde.bandwidth_ < 1.0), kde.sample(5, random_state=0).shape
        (True, (5, 2))
    """

    _FIXED_BY_FIT = ("kernel", "standardize")

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

    def _check_params(self) -> None:
        self._grid()
        if not isinstance(self.cv, numbers.Integral) or self.cv < 2:
            raise ValueError(f"cv must be an integer >= 2; got {self.cv!r}")

    def _preprocessor(self, X: np.ndarray) -> Preprocessor:
        if self.standardize:
            return fit_preprocessor(X)
        return preprocessor_layout(X.shape[1])  # the identity

    def _fit(self, X: np.ndarray, X_val: np.ndarray | None) -> dict[str, Any]:
        grid = self._grid()
        pre = self._preprocessor(X)
        Z = _latent(pre, X)
        if X_val is None:
            if X.shape[0] < self.cv:
                raise ValueError(
                    f"X has {X.shape[0]} rows; {self.cv}-fold bandwidth selection needs at "
                    f"least {self.cv} (lower cv or pass X_val)"
                )
            data, split = Z, KFold(self.cv, shuffle=True, random_state=self.random_state)
        else:
            data = np.concatenate([Z, _latent(pre, X_val)])
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
            "preprocessor_": pre,
            "kde_": kde,
            "cv_results_": search.cv_results_,
        }

    def _score_samples(self, X: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            z, ladj = self.preprocessor_.to_latent(torch.from_numpy(X))
        return self.kde_.score_samples(z.numpy()) + ladj.numpy()

    def _sample(self, n: int, rng: np.random.RandomState) -> np.ndarray:
        z = self.kde_.sample(n, random_state=rng)
        with torch.no_grad():
            return self.preprocessor_.from_latent(torch.from_numpy(z)).numpy()

    def _get_state(self) -> dict[str, Any]:
        return {
            "bandwidth": self.bandwidth_,
            "preprocessor": self.preprocessor_.state_dict(),
            "latent": torch.from_numpy(np.asarray(self.kde_.tree_.data)),
        }

    def _set_state(self, state: dict[str, Any], version: int) -> None:
        latent = state["latent"].numpy()
        pre = preprocessor_layout(latent.shape[1])
        pre.load_state_dict(state["preprocessor"])
        self.preprocessor_ = pre
        self.bandwidth_ = float(state["bandwidth"])
        self.kde_ = KernelDensity(kernel=self.kernel, bandwidth=self.bandwidth_).fit(latent)


def _latent(pre: Preprocessor, X: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return pre.to_latent(torch.from_numpy(X))[0].numpy()


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

    _FIXED_BY_FIT = ("covariance_type", "reg_covar")

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
            train, X_val = split_validation(X, self.validation_fraction, self.random_state, 2)
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

    def _get_state(self) -> dict[str, Any]:
        gmm = self.gmm_
        return {
            "n_components": int(self.n_components_),
            "weights": torch.from_numpy(gmm.weights_),
            "means": torch.from_numpy(gmm.means_),
            "covariances": torch.from_numpy(np.asarray(gmm.covariances_)),
            "precisions_cholesky": torch.from_numpy(np.asarray(gmm.precisions_cholesky_)),
            "validation_scores": {int(k): float(v) for k, v in self.validation_scores_.items()},
        }

    def _set_state(self, state: dict[str, Any], version: int) -> None:
        gmm = self._mixture(int(state["n_components"]))
        gmm.weights_ = state["weights"].numpy()
        gmm.means_ = state["means"].numpy()
        gmm.covariances_ = state["covariances"].numpy()
        gmm.precisions_cholesky_ = state["precisions_cholesky"].numpy()
        gmm.converged_, gmm.n_features_in_ = True, gmm.means_.shape[1]
        self.gmm_ = gmm
        self.n_components_ = int(state["n_components"])
        self.validation_scores_ = dict(state["validation_scores"])
