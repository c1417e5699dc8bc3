"""The pre-transform of a density fit chosen by measurement on validation rows.

:func:`choose_preprocessor` fits the candidate pre-transforms of :data:`CANDIDATES` on the
training rows (per-column standardisation, and whitening with the Cholesky factor of a
regularised correlation matrix, :func:`pyroflows.preprocess.fit_preprocessor` with
``eigen_floor``) and scores each by the validation log-likelihood, in the data's units (the
pre-transform's log-Jacobian included), of the best diagonal Gaussian mixture fitted in its
space (1, 2, 4 or 8 components, the number also chosen on the validation rows); whitening is
kept only where its gain over standardisation exceeds two paired standard errors. With row
weights (a weighted fit) the choice is weighted the same way as the fit: each mixture is fitted
to a weighted resample of the training rows, and the gain is the weighted mean over the
validation rows with the standard error of a weighted mean. A flow whose
layers act coordinate by coordinate starts from, and profits most from, a space in which an
axis-aligned mixture already fits well, so the better space for the mixture is the one the
flow is trained in. The choice, the scores and the seconds it took are recorded on the
returned pre-transform as ``choice_``.

Eigenvalues of the correlation matrix below ``EIGEN_FLOOR`` times the largest are raised to
that floor before the factorisation, so nearly or exactly collinear columns give a finite,
well-conditioned map (no NaN, no division by a vanishing pivot); the map stays exactly
invertible and its Jacobian exact, so ``log p`` stays a density in the data's units.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from pyroflows.preprocess import Preprocessor, fit_preprocessor

__all__ = [
    "CANDIDATES",
    "EIGEN_FLOOR",
    "choose_preprocessor",
    "mixture_score",
    "weighted_resample",
]

#: the pre-transforms ``whiten="auto"`` chooses between, by name
CANDIDATES = ("standardise", "whiten")
#: eigenvalues of the correlation matrix are floored at this share of the largest
EIGEN_FLOOR = 1e-6
_COMPONENTS = (1, 2, 4, 8)


def mixture_score(Z: np.ndarray, Z_val: np.ndarray, seed: int | None = 0) -> np.ndarray:
    """Per-row validation log-likelihoods, in the units of ``Z``, of the diagonal Gaussian
    mixture fitted to ``Z`` (1, 2, 4 or 8 components, at most half the rows) whose mean
    validation log-likelihood is the highest.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> scores = mixture_score(rng.normal(size=(500, 1)), rng.normal(size=(200, 1)))
        >>> scores.shape, round(float(scores.mean()), 1)
        ((200,), -1.4)
    """
    from sklearn.mixture import GaussianMixture

    best = None
    for k in _COMPONENTS:
        if k > len(Z) // 2 and k > 1:
            break
        mixture = GaussianMixture(k, covariance_type="diag", reg_covar=1e-4, random_state=seed)
        mixture.fit(Z)
        scores = mixture.score_samples(Z_val)
        if best is None or scores.mean() > best.mean():
            best = scores
    return best


def _score(pre: Preprocessor, X: np.ndarray, X_val: np.ndarray, seed: int | None) -> np.ndarray:
    """Per-row validation log-likelihoods, in data units, of the mixture fitted in ``pre``'s
    space to the training rows ``X``."""
    with torch.no_grad():
        Z = pre.to_latent(torch.as_tensor(X, dtype=torch.float64))[0].numpy()
        z_val, ladj = pre.to_latent(torch.as_tensor(X_val, dtype=torch.float64))
    return mixture_score(Z, z_val.numpy(), seed) + ladj.numpy()


def weighted_resample(X: np.ndarray, weight: np.ndarray | None, seed: int | None) -> np.ndarray:
    """``X`` itself without weights or with equal ones, else as many rows drawn from it with
    replacement, row ``i`` with probability ``weight[i] / sum(weight)`` (an unweighted sample
    of the weighted rows, for fitters that take no weights).

    Example:
        >>> weighted_resample(np.arange(4.0)[:, None], np.array([0, 0, 1, 0]), 0).ravel()
        array([2., 2., 2., 2.])
    """
    if weight is None:
        return X
    w = np.asarray(weight, dtype=np.float64)
    if np.all(w == w[0]):
        return X
    index = np.random.default_rng(seed).choice(len(X), size=len(X), p=w / w.sum())
    return X[index]


def _mean_and_se(values: np.ndarray, weight: np.ndarray | None) -> tuple[float, float]:
    """The (weighted) mean of per-row values and its standard error: ``sd / sqrt(n)``
    without weights or with equal ones, ``sqrt(sum w^2 (v - m)^2) / sum w`` with others."""
    w = None if weight is None else np.asarray(weight, dtype=np.float64)
    if w is None or np.all(w == w[0]):
        return float(values.mean()), float(values.std(ddof=1) / np.sqrt(len(values)))
    mean = float(np.average(values, weights=w))
    return mean, float(np.sqrt(np.sum(w**2 * (values - mean) ** 2)) / w.sum())


def _pays(gain: np.ndarray, weight: np.ndarray | None = None) -> bool:
    """Whether per-row gains are positive by more than two paired standard errors (their
    weighted mean and its standard error with ``weight``)."""
    if len(gain) < 2 or not np.isfinite(gain).all():
        return False
    mean, se = _mean_and_se(gain, weight)
    return bool(mean > 2 * se)


def choose_preprocessor(
    X: np.ndarray,
    X_val: np.ndarray | None,
    *,
    whiten: bool | str = "auto",
    bounds: Any = None,
    seed: int | None = 0,
    weight: np.ndarray | None = None,
    val_weight: np.ndarray | None = None,
) -> Preprocessor:
    """The pre-transform of the training rows ``X``: standardisation (``whiten=False``),
    regularised whitening (``True``), or (``"auto"``) whitening where it gives a diagonal
    Gaussian mixture fitted in its space a higher validation log-likelihood than
    standardisation does, by more than two paired standard errors (per validation row), and
    standardisation otherwise.

    Args:
        X: float64 training rows ``(n, d)``, inside ``bounds``.
        X_val: validation rows, or None (``"auto"`` then standardises: nothing to measure on).
        whiten: ``False``, ``True`` or ``"auto"``.
        bounds: the box of the data (:func:`pyroflows.preprocess.fit_preprocessor`).
        seed: seed of the mixtures (and of the weighted resample).
        weight: non-negative weights of the rows of ``X`` (checked by the caller), or None:
            the mixtures are then fitted to a weighted resample of ``X``. The maps
            themselves are fitted to ``X`` unweighted.
        val_weight: weights of the rows of ``X_val``, or None: the scores and the gain are
            then weighted means over the validation rows.

    Returns:
        A :class:`~pyroflows.preprocess.Preprocessor` with ``choice_ = {"chosen": name,
        "scores": {name: validation log-likelihood per row}, "seconds": s}`` (no scores
        when nothing was measured).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> X = rng.normal(size=(600, 2)) @ np.array([[1.0, 0.99], [0.0, 0.14]])
        >>> choose_preprocessor(X[:500], X[500:]).choice_["chosen"]
        'whiten'
    """
    if whiten not in (True, False, "auto"):
        raise ValueError(f"whiten must be True, False or 'auto', got {whiten!r}")
    start = time.perf_counter()
    if whiten != "auto" or X_val is None or X.shape[1] < 2:
        chosen = "whiten" if whiten is True else "standardise"
        pre = _fit(X, chosen, bounds, floor=whiten == "auto")
        pre.choice_ = {"chosen": chosen, "scores": {}, "seconds": time.perf_counter() - start}
        return pre
    if val_weight is not None and len(val_weight) != len(X_val):
        raise ValueError(f"val_weight has {len(val_weight)} weights for {len(X_val)} rows")
    if weight is not None and len(weight) != len(X):
        raise ValueError(f"weight has {len(weight)} weights for {len(X)} rows")
    fitted = {name: _fit(X, name, bounds, floor=True) for name in CANDIDATES}
    sample = weighted_resample(X, weight, seed)
    rows = {name: _score(pre, sample, X_val, seed) for name, pre in fitted.items()}
    gain = rows["whiten"] - rows["standardise"]
    chosen = "whiten" if _pays(gain, val_weight) else "standardise"
    pre = fitted[chosen]
    scores = {name: _mean_and_se(values, val_weight)[0] for name, values in rows.items()}
    pre.choice_ = {"chosen": chosen, "scores": scores, "seconds": time.perf_counter() - start}
    return pre


def _fit(X: np.ndarray, name: str, bounds: Any, floor: bool) -> Preprocessor:
    return fit_preprocessor(
        X, whiten=name == "whiten", bounds=bounds, eigen_floor=EIGEN_FLOOR if floor else None
    )
