"""How well a background model mimics the true SR background: the check behind CATHODE.

CATHODE can only reach the idealized anomaly detector if its samples of ``p_bg(x | m)`` in the
SR cannot be told from real SR background events. :func:`background_fidelity` measures that
directly on a labelled background sample (a simulation, or an extra sample of a synthetic
generator): it draws one model sample at each true event's ``m`` and reports the out-of-fold
AUC of a classifier of samples vs. true events (0.5: indistinguishable; the standard error is
about ``sqrt((2n + 1) / (12 n^2))`` for ``n`` events each) and, when the true log-density is
known, the exact ``KL(true || model)`` in nats per event.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pyroflows.anomaly.density import ConditionalDensity
from pyroflows.classify import Classifier, out_of_fold_proba

__all__ = ["background_fidelity"]


def background_fidelity(
    density: ConditionalDensity,
    x: Any,
    m: Any,
    classifier: Classifier | None = None,
    folds: int = 3,
    true_log_prob: Any = None,
    seed: int = 0,
) -> dict:
    """Compare a fitted background density with true background events ``x`` ``(n, d)`` at
    their ``m`` ``(n,)``.

    Args:
        density: a fitted :class:`ConditionalDensity`.
        x, m: true background events (not used to fit ``density``).
        classifier: the classifier set-up (cloned per fold); None: one HistGradientBoosting.
        folds: folds of the out-of-fold AUC (at least 2).
        true_log_prob: ``log p_true(x | m)`` of the events, ``(n,)``; given, the result also has
            ``kl``, the mean of ``log p_true - log p_model`` (``KL(true || model)``, exact up to
            the Monte-Carlo error ``kl_error``).
        seed: seed of the model's samples.

    Returns:
        ``{"auc", "auc_error", "n"}`` and, with ``true_log_prob``, ``"kl"`` and ``"kl_error"``.

    Raises:
        ValueError: ``x`` and ``m`` of different lengths, non-finite input, or fewer than
            ``2 * folds`` events.

    Example:
        >>> from pyroflows.datasets import bump_hunt
        >>> from pyroflows.anomaly import SignalRegion
        >>> hunt = bump_hunt(20_000, 0.0, n_test_background=10, n_test_signal=10,
        ...                  n_extra_background=2000, n_extra_signal=10, seed=0)
        >>> sb = SignalRegion(*hunt.sr).sidebands(hunt.data.m)
        >>> bounds = ([-np.inf, -np.inf, 0, 0], [np.inf, np.inf, 1, 1])
        >>> density = ConditionalDensity(layers=2, hidden=(16,), max_epochs=10, bounds=bounds)
        >>> density = density.fit(hunt.data.x[sb], hunt.data.m[sb])
        >>> e = hunt.extra_background
        >>> truth = hunt.generator.log_prob_background_x(e.x, e.m)
        >>> check = background_fidelity(density, e.x, e.m, true_log_prob=truth)
        >>> bool(check["auc"] < 0.55 and check["kl"] < 0.06), check["n"]
        (True, 2000)
    """
    x = np.asarray(x, np.float64)
    m = np.asarray(m, np.float64).reshape(-1)
    if x.ndim != 2 or len(x) != len(m):
        raise ValueError(f"x must be (n, d) with one m per row, got {x.shape} and {m.shape}")
    if not (np.isfinite(x).all() and np.isfinite(m).all()):
        raise ValueError("the true background events must be finite")
    if len(x) < 2 * folds:
        raise ValueError(f"need at least {2 * folds} events for {folds} folds, got {len(x)}")
    if true_log_prob is not None:
        true_log_prob = np.asarray(true_log_prob, np.float64).reshape(-1)
        if len(true_log_prob) != len(x):
            raise ValueError(f"true_log_prob needs one value per event, got {len(true_log_prob)}")
    from sklearn.metrics import roc_auc_score

    samples = density.sample(m, seed=seed)
    bad = ~np.isfinite(samples).all(1)
    if bad.any():
        raise ValueError(f"{int(bad.sum())} of the model's samples are not finite")
    X = np.concatenate([x, samples])
    y = np.repeat([1, 0], len(x))
    classifier = classifier if classifier is not None else Classifier("hgb")
    auc = float(roc_auc_score(y, out_of_fold_proba(classifier, X, y, folds, random_state=seed)))
    n = len(x)
    out = {"auc": auc, "auc_error": float(np.sqrt((2 * n + 1) / (12 * n**2))), "n": n}
    if true_log_prob is not None:
        ratio = true_log_prob - density.log_prob(x, m)
        out["kl"] = float(ratio.mean())
        out["kl_error"] = float(ratio.std() / np.sqrt(n))
    return out
