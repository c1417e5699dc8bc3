"""The detectors: scikit-learn style objects with ``fit`` and ``score`` (higher = more
anomalous) sharing one :class:`~pyroflows.anomaly.SignalRegion`, one classifier set-up
(:class:`pyroflows.classify.Classifier`, cloned per use) and one conditional density
(:class:`~pyroflows.anomaly.ConditionalDensity`).

* :class:`CATHODE` — background flow in the sidebands, sampled in the SR with ``m`` from a KDE of
  the SR's ``m`` (oversampled), classifier of SR data vs. samples.
* :class:`ANODE` — the ratio of a flow fitted to SR data and the sideband flow interpolated.
* :class:`CWoLa` — classifier of SR data vs. the nearby sidebands.
* :class:`IdealizedAD` — classifier of SR data vs. a perfect SR background sample (upper bound
  of the weakly supervised classifiers).
* :class:`Supervised` — classifier of signal vs. background with truth labels.

Scores are never filtered: :meth:`score` returns every value and the fitted object counts the
non-finite ones it met (``nonfinite_``); the metrics refuse or rank them, counted.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from pyroflows.anomaly.density import ConditionalDensity, kde_sample
from pyroflows.anomaly.metrics import count_nonfinite
from pyroflows.anomaly.region import SignalRegion
from pyroflows.classify import Classifier, out_of_fold_proba

__all__ = ["ANODE", "CATHODE", "CWoLa", "IdealizedAD", "Supervised", "default_classifier"]


def default_classifier() -> Classifier:
    """The shared set-up: an ensemble of 3 histogram gradient-boosting classifiers."""
    return Classifier("hgb", ensemble=3)


def _xm(x: Any, m: Any) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, np.float64)
    x = x[:, None] if x.ndim == 1 else x
    m = np.asarray(m, np.float64).reshape(-1)
    if x.ndim != 2 or len(x) != len(m):
        raise ValueError(f"x must be (n, d) with one m per row, got {x.shape} and {m.shape}")
    return x, m


def _balanced(n1: int, n0: int) -> np.ndarray:
    """Weights that give both classes the same total (label 1 rows first)."""
    return np.concatenate([np.ones(n1), np.full(n0, n1 / n0)])


class _ClassifierDetector:
    """Score = the probability of the "data" class from a classifier of two samples."""

    def __init__(self, region: SignalRegion, classifier: Classifier | None = None):
        self.region = region
        self.classifier = classifier if classifier is not None else default_classifier()
        self.nonfinite_ = {"nan": 0, "posinf": 0, "neginf": 0}

    def _train(self, data: np.ndarray, reference: np.ndarray) -> None:
        if len(data) == 0 or len(reference) == 0:
            raise ValueError(f"need events in both samples, got {len(data)} and {len(reference)}")
        X = np.concatenate([data, reference])
        y = np.repeat([1, 0], [len(data), len(reference)])
        self.training_ = (X, y, _balanced(len(data), len(reference)))
        self.model_ = self.classifier.clone().fit(*self.training_)

    def training_auc(self, folds: int = 5) -> float:
        """Out-of-fold AUC of the classifier's own task (data vs. reference). For CATHODE on
        data without signal it measures how well the samples mimic the SR background: 0.5 is
        perfect."""
        from sklearn.metrics import roc_auc_score

        X, y, w = self.training_
        proba = out_of_fold_proba(self.classifier.clone(), X, y, folds, sample_weight=w)
        return float(roc_auc_score(y, proba))

    def score(self, x: Any, m: Any = None) -> np.ndarray:
        """Anomaly score of each event (``m`` is not used by classifier-based detectors)."""
        if not hasattr(self, "model_"):
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit first")
        scores = self.model_.predict_proba(np.asarray(x, np.float64))
        return _counted(self, scores)


def _counted(detector: Any, scores: np.ndarray) -> np.ndarray:
    counts = count_nonfinite(scores)
    for key, value in counts.items():
        detector.nonfinite_[key] += value
    if sum(counts.values()):
        warnings.warn(
            f"{type(detector).__name__}: {sum(counts.values())} non-finite score(s) {counts} "
            "returned as they are (not dropped)", RuntimeWarning, stacklevel=3,
        )  # fmt: skip
    return scores


class CATHODE(_ClassifierDetector):
    """Classifying Anomalies THrough Outer Density Estimation (Hallin et al., 2022).

    Args:
        region: the signal region.
        background: the conditional density trained in the sidebands (a
            :class:`ConditionalDensity`; pass a fitted one with ``refit_background=False`` to
            share it with :class:`ANODE`).
        classifier: the classifier set-up (cloned).
        oversampling: samples per SR data event.
        refit_background: train ``background`` in :meth:`fit` (False: use it as it is).
        seed: seed of the KDE and of the flow samples.

    Example:
        >>> from pyroflows.datasets import bump_hunt
        >>> hunt = bump_hunt(20_000, 0.05, n_test_background=500, n_test_signal=50,
        ...                  n_extra_background=10, n_extra_signal=10, seed=0)
        >>> density = ConditionalDensity(layers=2, hidden=(16,), max_epochs=2)
        >>> cathode = CATHODE(SignalRegion(*hunt.sr), density).fit(hunt.data.x, hunt.data.m)
        >>> cathode.score(hunt.test.x).shape, cathode.samples_[0].shape[1]
        ((550,), 4)
    """

    def __init__(
        self,
        region: SignalRegion,
        background: ConditionalDensity | None = None,
        classifier: Classifier | None = None,
        oversampling: float = 4.0,
        refit_background: bool = True,
        seed: int = 0,
    ):
        super().__init__(region, classifier)
        self.background = background if background is not None else ConditionalDensity()
        self.oversampling, self.refit_background, self.seed = oversampling, refit_background, seed

    def fit(self, x: Any, m: Any) -> CATHODE:
        """Train on the observed events (all ``m``): sidebands for the flow, SR for the rest."""
        x, m = _xm(x, m)
        sr, sb = self.region.inside(m), self.region.sidebands(m)
        if self.refit_background:
            self.background.fit(x[sb], m[sb])
        n = int(round(self.oversampling * sr.sum()))
        m_samples = kde_sample(m[sr], n, self.region.low, self.region.high, seed=self.seed)
        x_samples = self.background.sample(m_samples, seed=self.seed)
        bad = ~np.isfinite(x_samples).all(1)
        self.nonfinite_samples_ = int(bad.sum())
        if bad.any():  # counted and reported, never silently dropped
            warnings.warn(
                f"CATHODE: {int(bad.sum())} of {n} background samples are not finite; they are "
                "left out of the classifier's training (see nonfinite_samples_)",
                RuntimeWarning, stacklevel=2,
            )  # fmt: skip
        self.samples_ = (x_samples[~bad], m_samples[~bad])
        self._train(x[sr], self.samples_[0])
        return self


class CWoLa(_ClassifierDetector):
    """Classification Without Labels hunting (Collins et al., 2018): SR data vs. the nearby
    sidebands (``region.sideband_width``), classes balanced by weights."""

    def fit(self, x: Any, m: Any) -> CWoLa:
        x, m = _xm(x, m)
        self._train(x[self.region.inside(m)], x[self.region.near_sidebands(m)])
        return self


class IdealizedAD(_ClassifierDetector):
    """The idealized anomaly detector: SR data vs. a perfect, independent SR background
    sample ``background`` (features only) — what CATHODE's samples would be at best."""

    def fit(self, x: Any, m: Any, background: Any) -> IdealizedAD:
        x, m = _xm(x, m)
        self._train(x[self.region.inside(m)], np.asarray(background, np.float64))
        return self


class Supervised(_ClassifierDetector):
    """The fully supervised bound: a classifier of signal (``y = 1``) vs. background."""

    def __init__(self, classifier: Classifier | None = None):
        super().__init__(SignalRegion(0.0, 1.0), classifier)

    def fit(self, x: Any, y: Any) -> Supervised:
        x = np.asarray(x, np.float64)
        y = np.asarray(y).reshape(-1)
        self._train(x[y == 1], x[y == 0])
        return self


class ANODE:
    """ANOmaly detection with Density Estimation (Nachman & Shih, 2020): score
    ``log p_data(x | m) - log p_bg(x | m)`` with ``p_bg`` trained in the sidebands and
    ``p_data`` on the SR's data.

    Args:
        region: the signal region.
        background, data_density: two :class:`ConditionalDensity` (defaults if None).
        refit_background: train ``background`` in :meth:`fit` (False: share a fitted one).
    """

    def __init__(
        self,
        region: SignalRegion,
        background: ConditionalDensity | None = None,
        data_density: ConditionalDensity | None = None,
        refit_background: bool = True,
    ):
        self.region = region
        self.background = background if background is not None else ConditionalDensity()
        self.data_density = data_density if data_density is not None else ConditionalDensity()
        self.refit_background = refit_background
        self.nonfinite_ = {"nan": 0, "posinf": 0, "neginf": 0}

    def fit(self, x: Any, m: Any) -> ANODE:
        x, m = _xm(x, m)
        if self.refit_background:
            sb = self.region.sidebands(m)
            self.background.fit(x[sb], m[sb])
        sr = self.region.inside(m)
        self.data_density.fit(x[sr], m[sr])
        self.fitted_ = True
        return self

    def score(self, x: Any, m: Any) -> np.ndarray:
        """The log density ratio per event (needs each event's ``m``)."""
        if not getattr(self, "fitted_", False):
            raise RuntimeError("ANODE is not fitted: call fit(x, m) first")
        x, m = _xm(x, m)
        with np.errstate(invalid="ignore"):
            scores = self.data_density.log_prob(x, m) - self.background.log_prob(x, m)
        return _counted(self, scores)
