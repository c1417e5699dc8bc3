"""The pre-transform of a density fit chosen by measurement on validation rows.

:func:`choose_preprocessor` fits the candidate pre-transforms of :data:`CANDIDATES` on the
training rows (per-column standardisation, and whitening with the Cholesky factor of a
regularised correlation matrix, :func:`pyroflows.preprocess.fit_preprocessor` with
``eigen_floor``) and scores each by the validation log-likelihood, in the data's units (the
pre-transform's log-Jacobian included), of the best diagonal Gaussian mixture fitted in its
space (1, 2, 4 or 8 components, the number also chosen on the validation rows); whitening is
kept only where its gain over standardisation exceeds two paired standard errors. A flow whose
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

__all__ = ["CANDIDATES", "EIGEN_FLOOR", "choose_preprocessor", "mixture_score"]

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


def _pays(gain: np.ndarray) -> bool:
    """Whether per-row gains are positive by more than two paired standard errors."""
    if len(gain) < 2 or not np.isfinite(gain).all():
        return False
    return bool(gain.mean() > 2 * gain.std(ddof=1) / np.sqrt(len(gain)))


def choose_preprocessor(
    X: np.ndarray,
    X_val: np.ndarray | None,
    *,
    whiten: bool | str = "auto",
    bounds: Any = None,
    seed: int | None = 0,
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
        seed: seed of the mixtures.

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
    fitted = {name: _fit(X, name, bounds, floor=True) for name in CANDIDATES}
    rows = {name: _score(pre, X, X_val, seed) for name, pre in fitted.items()}
    chosen = "whiten" if _pays(rows["whiten"] - rows["standardise"]) else "standardise"
    pre = fitted[chosen]
    scores = {name: float(values.mean()) for name, values in rows.items()}
    pre.choice_ = {"chosen": chosen, "scores": scores, "seconds": time.perf_counter() - start}
    return pre


def _fit(X: np.ndarray, name: str, bounds: Any, floor: bool) -> Preprocessor:
    return fit_preprocessor(
        X, whiten=name == "whiten", bounds=bounds, eigen_floor=EIGEN_FLOOR if floor else None
    )
