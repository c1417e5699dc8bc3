"""Classifier reweighting of generated samples (DCTR, Diefenbacher et al. arXiv:2009.03796).

A classifier trained to tell reference rows (label 1) from generated rows (label 0) estimates
``p = P(reference | x)``; by the Neyman-Pearson lemma ``p / (1 - p) * n_gen / n_ref`` equals
``p_ref(x) / p_gen(x)``, so generated rows weighted by it follow the reference distribution.

:func:`reweight` does this with the care that makes the weights usable:

1. **Out of fold.** Every row is scored by a classifier trained on the other folds
   (:func:`pyroflows.classify.out_of_fold_proba`), so no row is weighted by a model that saw it.
2. **Calibrated out of fold.** The out-of-fold probabilities are recalibrated by Platt scaling
   (a logistic regression on their logit) or isotonic regression, again fitted on the other
   folds only.
3. **Class sizes.** The prior odds ``n_ref / n_gen`` are divided out.
4. **Extreme weights, announced.** Probabilities are bounded away from 0 and 1 (so the
   log-weights are finite: NaN or inf weights cannot occur, and an error is raised if they
   ever did), and weights above ``max_weight`` are capped. The number of capped rows is in the
   report and a warning is emitted when any row is capped; nothing is silently replaced.

:func:`resample` draws rows following the weights (for consumers that need unweighted
samples).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from pyroflows.classify import Classifier, out_of_fold_proba
from pyroflows.validation import check_data, positive_int

__all__ = ["Reweighting", "calibrate_out_of_fold", "resample", "reweight"]

CALIBRATIONS = ("platt", "isotonic", "none")
_P_FLOOR = 1e-12  # raw probabilities are kept in [_P_FLOOR, 1 - _P_FLOOR] before the logit


@dataclass(frozen=True)
class Reweighting:
    """Outcome of :func:`reweight`.

    Attributes:
        weights: one weight per generated row, ``(n_gen,)``, finite and positive; their mean is
            close to 1 when the classifier is right (they are not renormalised).
        log_weights: their logarithms (before capping: the classifier's own estimate).
        ess: Kish effective sample size ``(sum w)^2 / sum w^2``.
        ess_fraction: ``ess / n_gen``.
        largest: the five largest weights, descending.
        fraction_clipped: fraction of generated rows whose weight was capped at ``max_weight``.
        max_weight: the cap that was applied (``inf`` when none).
        calibration: ``"platt"``, ``"isotonic"`` or ``"none"``.
        auc: out-of-fold ROC AUC of the classifier, reference vs generated (0.5: the generator
            is already indistinguishable to it).
    """

    weights: np.ndarray
    log_weights: np.ndarray
    ess: float
    ess_fraction: float
    largest: np.ndarray
    fraction_clipped: float
    max_weight: float
    calibration: str
    auc: float

    def summary(self) -> str:
        """One line: ESS / n, largest weights, fraction capped, AUC."""
        top = ", ".join(f"{w:.3g}" for w in self.largest)
        return (
            f"ESS/n {self.ess_fraction:.3f}, largest weights [{top}], "
            f"{100 * self.fraction_clipped:.2f} % capped at {self.max_weight:.3g}, "
            f"calibration {self.calibration}, classifier AUC {self.auc:.4f}"
        )


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, _P_FLOOR, 1 - _P_FLOOR)
    return np.log(p) - np.log1p(-p)


def calibrate_out_of_fold(
    proba: Any,
    labels: Any,
    method: str = "platt",
    folds: int = 5,
    random_state: int = 0,
    sample_weight: Any = None,
) -> np.ndarray:
    """Calibrated log-odds of class 1 for every row, each from a calibrator fitted on the
    other ``folds - 1`` folds of ``(proba, labels)``.

    ``"platt"`` fits ``logit p' = a logit p + b`` (a logistic regression); ``"isotonic"`` fits
    a monotone step function, whose output is kept in ``[1 / (2 m), 1 - 1 / (2 m)]`` (``m`` the
    rows it was fitted on) so the log-odds are finite; ``"none"`` returns ``logit(proba)``.
    ``sample_weight`` (one non-negative weight per row) weights the rows in both fits.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> y = rng.integers(0, 2, 2000)
        >>> p = 1 / (1 + np.exp(-3 * (y - 0.5 + rng.normal(0, 1, 2000))))  # over-confident
        >>> z = calibrate_out_of_fold(p, y, "platt")
        >>> bool(np.abs(z).mean() < np.abs(np.log(p / (1 - p))).mean())
        True
    """
    from sklearn.isotonic import IsotonicRegression
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    if method not in CALIBRATIONS:
        raise ValueError(f"calibration must be one of {CALIBRATIONS}, got {method!r}")
    proba, labels = np.asarray(proba, float), np.asarray(labels)
    if proba.ndim != 1 or not (np.isfinite(proba).all() and (proba >= 0).all()
                               and (proba <= 1).all()):  # fmt: skip
        raise ValueError("proba must be a 1-D array of probabilities in [0, 1] (no NaN)")
    if labels.shape != proba.shape or not np.isin(labels, (0, 1)).all():
        raise ValueError(
            f"labels must hold one 0/1 label per probability ({len(proba)}), got shape "
            f"{labels.shape} with values {np.unique(labels)[:5].tolist()}"
        )
    labels = labels.astype(int)
    w = np.ones(len(proba)) if sample_weight is None else np.asarray(sample_weight, float)
    if w.shape != proba.shape or not np.isfinite(w).all() or (w < 0).any():
        raise ValueError("sample_weight must hold one finite, non-negative weight per row")
    logit = _logit(proba)
    if method == "none":
        return logit
    out = np.empty(len(proba))
    splitter = StratifiedKFold(folds, shuffle=True, random_state=random_state)
    for train, test in splitter.split(logit[:, None], labels):
        if method == "platt":
            model = LogisticRegression(C=1e6, max_iter=1000)
            model.fit(logit[train, None], labels[train], sample_weight=w[train])
            out[test] = model.decision_function(logit[test, None])
        else:
            floor = 0.5 / len(train)
            model = IsotonicRegression(y_min=floor, y_max=1 - floor, out_of_bounds="clip")
            model.fit(logit[train], labels[train], sample_weight=w[train])
            out[test] = _logit(model.predict(logit[test]))
    return out


def _make_classifier(
    classifier: str | Classifier, ensemble: int | None, random_state: int
) -> Classifier:
    if isinstance(classifier, Classifier):
        if ensemble is not None:
            raise ValueError(
                "ensemble applies to a named classifier; set it on the Classifier "
                f"(Classifier(..., ensemble={ensemble})) instead"
            )
        return classifier
    if classifier == "hgb":
        ensemble = 1 if ensemble is None else positive_int("ensemble", ensemble)
        return Classifier(
            "hgb", ensemble, max_iter=400, learning_rate=0.05, random_state=random_state
        )
    if classifier == "mlp":
        ensemble = 3 if ensemble is None else positive_int("ensemble", ensemble)
        return Classifier(
            "mlp", ensemble, hidden=(64, 64), max_epochs=200, lr=2e-3, batch_size=512,
            patience=10, squares=True, random_state=random_state,
        )  # fmt: skip
    raise ValueError(f"classifier must be 'hgb', 'mlp' or a Classifier, got {classifier!r}")


def reweight(
    generated: Any,
    reference: Any,
    classifier: str | Classifier = "mlp",
    ensemble: int | None = None,
    folds: int = 5,
    calibration: str = "platt",
    max_weight: float | None = 100.0,
    random_state: int = 0,
) -> Reweighting:
    """Weights that make ``generated`` rows follow the distribution of ``reference`` rows.

    Args:
        generated: rows from the generator, ``(n_gen, D)``.
        reference: rows from the target (truth), ``(n_ref, D)``.
        classifier: ``"mlp"`` (an ensemble of torch MLPs with two hidden layers of 64 whose
            inputs are the standardised rows and their squares: the most accurate weights
            measured, see ``benchmarks/reweight.py``), ``"hgb"`` (gradient boosting, 400
            rounds at rate 0.05, faster on many rows) or any
            :class:`pyroflows.classify.Classifier`.
        ensemble: members of the named classifier (their probabilities are averaged); None:
            3 for ``"mlp"``, 1 for ``"hgb"``. Refused with a
            :class:`~pyroflows.classify.Classifier`, which carries its own ``ensemble``.
        folds: out-of-fold splits for the classifier and for the calibrator.
        calibration: ``"platt"`` (default), ``"isotonic"`` or ``"none"``.
        max_weight: weights above this are capped at it, counted in ``fraction_clipped`` and
            announced by a warning; ``None`` caps nothing (the weights stay finite anyway:
            probabilities are bounded away from 0 and 1 before the log-odds are taken).
        random_state: seed of the folds and of a named classifier (a
            :class:`~pyroflows.classify.Classifier` keeps its own ``random_state``).

    Returns:
        A :class:`Reweighting` with the weights and their report.

    Raises:
        ValueError: bad inputs, or (never expected) a non-finite weight.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> gen, ref = rng.normal(0, 1.5, (1000, 1)), rng.normal(0, 1, (1000, 1))
        >>> r = reweight(gen, ref)
        >>> bool(np.isfinite(r.weights).all()), bool(0.8 < r.weights.mean() < 1.2)
        (True, True)
        >>> var = np.average(gen[:, 0] ** 2, weights=r.weights)  # unweighted: about 2.25
        >>> bool(abs(var - 1) < 0.2)
        True
    """
    positive_int("folds", folds)
    # two rows per fold and class: a classifier's inner split (gradient boosting's early
    # stopping) needs both classes in every training fold
    generated = check_data(generated, name="generated", min_samples=2 * folds)
    reference = check_data(reference, generated.shape[1], name="reference", min_samples=2 * folds)
    if calibration not in CALIBRATIONS:
        raise ValueError(f"calibration must be one of {CALIBRATIONS}, got {calibration!r}")
    if max_weight is not None and not max_weight > 0:
        raise ValueError(f"max_weight must be positive or None, got {max_weight}")
    from sklearn.metrics import roc_auc_score

    n_gen, n_ref = len(generated), len(reference)
    X = np.concatenate([generated, reference])
    y = np.r_[np.zeros(n_gen, dtype=int), np.ones(n_ref, dtype=int)]
    model = _make_classifier(classifier, ensemble, random_state)
    proba = out_of_fold_proba(model, X, y, folds=folds, random_state=random_state)
    log_odds = calibrate_out_of_fold(proba, y, calibration, folds, random_state + 1)
    log_w = log_odds[:n_gen] + np.log(n_gen / n_ref)
    cap = np.inf if max_weight is None else float(max_weight)
    clipped = log_w > np.log(cap)
    weights = np.minimum(np.exp(np.minimum(log_w, 700.0)), cap)  # exp(700) is finite
    if not np.isfinite(weights).all():  # unreachable by construction; never repaired silently
        raise ValueError(f"{int((~np.isfinite(weights)).sum())} non-finite weights")
    if clipped.any():
        warnings.warn(
            f"reweight: {int(clipped.sum())} of {n_gen} weights ({100 * clipped.mean():.2f} %) "
            f"were capped at max_weight={cap:g}; the generator under-covers part of the "
            "reference",
            stacklevel=2,
        )
    ess = float(weights.sum() ** 2 / np.square(weights).sum())
    return Reweighting(
        weights=weights,
        log_weights=log_w,
        ess=ess,
        ess_fraction=ess / n_gen,
        largest=np.sort(weights)[::-1][:5].copy(),
        fraction_clipped=float(clipped.mean()),
        max_weight=cap,
        calibration=calibration,
        auc=float(roc_auc_score(y, proba)),
    )


def resample(
    samples: Any, weights: Any, n: int | None = None, seed: int | np.random.Generator = 0
) -> Any:
    """``n`` rows of ``samples`` drawn with replacement with probabilities proportional to
    ``weights`` (so they follow the reweighted distribution); ``n`` defaults to the ESS.

    ``samples`` may be a NumPy array, a torch tensor or a pandas DataFrame / Series (rows
    taken by position, whatever the index's labels), indexed along the first axis.

    Example:
        >>> x = np.arange(4.0)[:, None]
        >>> resample(x, [0, 0, 1, 3], n=1000, seed=0)[:, 0].mean().round(1)
        np.float64(2.8)
    """
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    if len(w) != len(samples):
        raise ValueError(f"one weight per sample needed: {len(w)} weights, {len(samples)} rows")
    if not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ValueError("weights must be finite, non-negative and not all 0")
    if n is None:
        n = max(1, int(w.sum() ** 2 / np.square(w).sum()))
    n = positive_int("n", n)
    rng = np.random.default_rng(seed)
    index = rng.choice(len(w), size=n, replace=True, p=w / w.sum())
    if hasattr(samples, "iloc"):  # pandas: by position (``[]`` takes labels, or columns)
        return samples.iloc[index]
    return samples[index]
