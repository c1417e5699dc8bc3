"""The detectors: scikit-learn style objects with ``fit`` and ``score`` (higher = more
anomalous) sharing one :class:`~pyroflows.anomaly.SignalRegion`, one classifier set-up
(:func:`~pyroflows.anomaly.default_classifier`, a
:class:`pyroflows.classify.Classifier` cloned per use) and one conditional density
(:class:`~pyroflows.anomaly.ConditionalDensity`).

* :class:`CATHODE` — background flow in the sidebands, sampled in the SR with ``m`` from a KDE of
  the SR's ``m`` (oversampled), classifier of SR data vs. samples.
* :class:`ANODE` — the ratio of a flow fitted to SR data and the sideband flow interpolated.
* :class:`RANODE` — a flow for the signal only, fitted to the SR as a mixture with the fixed
  sideband flow.
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
import torch

from pyroflows.anomaly.classifier import default_classifier
from pyroflows.anomaly.density import ConditionalDensity, cathode_background, kde_sample
from pyroflows.anomaly.metrics import count_nonfinite
from pyroflows.anomaly.region import SignalRegion
from pyroflows.builders import build
from pyroflows.classify import Classifier, out_of_fold_proba
from pyroflows.train import fit
from pyroflows.train.checkpoint import restore_on_error
from pyroflows.train.recipe import validation_rows

__all__ = [
    "ANODE",
    "CATHODE",
    "RANODE",
    "CWoLa",
    "IdealizedAD",
    "Supervised",
    "default_classifier",
]


def _xm(x: Any, m: Any) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, np.float64)
    x = x[:, None] if x.ndim == 1 else x
    m = np.asarray(m, np.float64).reshape(-1)
    if x.ndim != 2 or len(x) != len(m):
        raise ValueError(f"x must be (n, d) with one m per row, got {x.shape} and {m.shape}")
    for name, values in (("x", x), ("m", m)):
        bad = ~np.isfinite(values)
        if bad.any():
            row = int(np.argwhere(bad)[0][0])
            raise ValueError(
                f"{name} has {int(bad.sum())} NaN or infinite value(s) (first in event {row}): "
                "such an event would be dropped from a region or scored silently; remove or fix it"
            )
    return x, m


def _check_windows(region: SignalRegion, m: np.ndarray, sidebands: bool) -> None:
    """At least two events inside the signal region (and, with ``sidebands``, outside it),
    before anything is trained: an empty window means ``m`` or the region is in other
    units, and a fit would fail half way (after retraining a shared background)."""
    counts = {"signal region": int(region.inside(m).sum())}
    if sidebands:
        counts["sidebands"] = int(region.sidebands(m).sum())
    for where, count in counts.items():
        if count < 2:
            raise ValueError(
                f"{count} event(s) in the {where} of ({region.low:.6g}, {region.high:.6g}); "
                f"m spans [{m.min():.6g}, {m.max():.6g}]: at least 2 are needed (are m and "
                "the region in the same units?)"
            )


def _sideband_background(detector: Any, x: np.ndarray, m: np.ndarray) -> None:
    """Train ``detector.background`` on the sidebands, or (``refit_background=False``) check
    that the fitted one it shares was made for these events: the same features, and no
    training event inside this signal region (a flow trained there has learnt the signal)."""
    background, region = detector.background, detector.region
    if detector.refit_background:
        sb = region.sidebands(m)
        background.fit(x[sb], m[sb])
        return
    dim = getattr(background, "dim_", None)
    if dim is None:
        raise RuntimeError(
            "refit_background=False needs a fitted background: call background.fit(x, m) on "
            "the sidebands first, or leave refit_background=True"
        )
    if dim != x.shape[1]:
        raise ValueError(
            f"the shared background was fitted on {dim} feature(s), the events have "
            f"{x.shape[1]}: refit it on these events (refit_background=True)"
        )
    inside = int(region.inside(background.m_train_).sum())
    if inside:
        raise ValueError(
            f"the shared background was trained on {inside} event(s) inside this signal region "
            f"({region.low}, {region.high}): it was fitted for another region and has learnt "
            "what this one holds; refit it on this region's sidebands (refit_background=True)"
        )


def _classifier(classifier: Classifier | str | None, seed: int) -> Classifier:
    """A :class:`Classifier` as given, or the shared set-up by name (None: the default)."""
    if classifier is None:
        return default_classifier(seed=seed)
    if isinstance(classifier, str):
        return default_classifier(classifier, seed)  # refuses unknown names
    if not isinstance(classifier, Classifier):
        raise TypeError(
            "classifier must be a pyroflows.classify.Classifier, a set-up name "
            f"(anomaly.classifier.CHOICES) or None, got {type(classifier).__name__}"
        )
    return classifier


def _balanced(n1: int, n0: int) -> np.ndarray:
    """Weights that give both classes the same total (label 1 rows first)."""
    return np.concatenate([np.ones(n1), np.full(n0, n1 / n0)])


class _ClassifierDetector:
    """Score = the probability of the "data" class from a classifier of two samples."""

    def __init__(
        self, region: SignalRegion | None, classifier: Classifier | str | None = None, seed: int = 0
    ):
        self.region = region
        self.classifier = _classifier(classifier, seed)
        self.nonfinite_ = {"nan": 0, "posinf": 0, "neginf": 0}

    def _train(self, data: np.ndarray, reference: np.ndarray) -> None:
        if len(data) == 0 or len(reference) == 0:
            raise ValueError(f"need events in both samples, got {len(data)} and {len(reference)}")
        X = np.concatenate([data, reference])
        y = np.repeat([1, 0], [len(data), len(reference)])
        training = (X, y, _balanced(len(data), len(reference)))
        self.model_ = self.classifier.clone().fit(*training)
        self.training_ = training  # with the model it trained, never without

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
            share it with :class:`ANODE`). None: :func:`cathode_background` (a MAF whose 5
            best epochs of 30 are sampled in turn; bounds None, so pass one with the
            features' bounds for a logit preprocessing).
        classifier: the classifier set-up (cloned), or its name in
            :data:`pyroflows.anomaly.classifier.CHOICES` (seeded with ``seed``); None: the
            shared default (:func:`~pyroflows.anomaly.default_classifier`).
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
        classifier: Classifier | str | None = None,
        oversampling: float = 4.0,
        refit_background: bool = True,
        seed: int = 0,
    ):
        super().__init__(region, classifier, seed)
        self.background = background if background is not None else cathode_background(seed=seed)
        self.oversampling, self.refit_background, self.seed = oversampling, refit_background, seed

    def fit(self, x: Any, m: Any) -> CATHODE:
        """Train on the observed events (all ``m``): sidebands for the flow, SR for the rest."""
        x, m = _xm(x, m)
        _check_windows(self.region, m, self.refit_background)
        with restore_on_error(self, self.background):
            return self._fit(x, m)

    def _fit(self, x: np.ndarray, m: np.ndarray) -> CATHODE:
        sr = self.region.inside(m)
        _sideband_background(self, x, m)
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

    def __init__(self, classifier: Classifier | str | None = None):
        super().__init__(None, classifier)

    def fit(self, x: Any, y: Any) -> Supervised:
        x = np.asarray(x, np.float64)
        y = np.asarray(y).reshape(-1)
        if len(y) != len(x) or not np.isin(y, (0, 1)).all():
            raise ValueError(
                f"y must hold one 0/1 label per event ({len(x)}), got {len(y)} labels with "
                f"values {np.unique(y)[:5].tolist()}"
            )
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
        """Train the sideband background (unless shared) and the SR's data density; a fit
        that raises leaves the detector and its densities as they were."""
        x, m = _xm(x, m)
        _check_windows(self.region, m, self.refit_background)
        with restore_on_error(self, self.background, self.data_density):
            _sideband_background(self, x, m)
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


class _SignalMixture(torch.nn.Module):
    """``w p_sig(z) + (1 - w) p_bg(z | m)`` with ``p_bg`` fixed (its log-density comes with each
    batch) and ``p_sig`` a flow; ``w = sigmoid(logit_w)`` is learned with it."""

    def __init__(self, flow: torch.nn.Module, fraction: float):
        super().__init__()
        self.flow = flow
        self.logit_w = torch.nn.Parameter(torch.tensor(float(np.log(fraction / (1 - fraction)))))

    def log_prob(self, z: torch.Tensor, log_bg: torch.Tensor) -> torch.Tensor:
        log_sig = self.flow.log_prob(z, check=False)
        log_w = torch.nn.functional.logsigmoid(self.logit_w)
        log_1mw = torch.nn.functional.logsigmoid(-self.logit_w)
        return torch.logaddexp(log_w + log_sig, log_1mw + log_bg)


def _mixture_nll(model: _SignalMixture, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
    return -model.log_prob(*batch).mean()


class RANODE:
    """Residual ANODE (Das, Kasieczka & Shih, 2023): a flow for the signal only, fitted to the
    SR's data by maximum likelihood of ``w p_sig(x) + (1 - w) p_bg(x | m)`` with the sideband
    background flow fixed and the signal fraction ``w`` learned; score
    ``log p_sig(x) - log p_bg(x | m)``.

    This implementation leaves out the paper's mass term (``p_sig(m)`` / ``p_bg(m)`` inside the
    SR): the likelihood is conditional on ``m``. The signal flow is unconditional and small by
    default (the signal is rare: a few hundred events).

    Args:
        region: the signal region.
        background: the sideband :class:`ConditionalDensity` (shared with ``refit_background``
            False).
        family, layers, hidden: the signal flow (:func:`pyroflows.build`).
        init_fraction: the starting signal fraction ``w``.
        max_epochs, batch_size, lr, patience, validation_fraction, seed: the loop's settings.
    """

    def __init__(
        self,
        region: SignalRegion,
        background: ConditionalDensity | None = None,
        refit_background: bool = True,
        family: str = "maf",
        layers: int = 2,
        hidden: tuple[int, ...] = (32,),
        init_fraction: float = 0.01,
        max_epochs: int = 50,
        batch_size: int = 512,
        lr: float = 1e-3,
        patience: int = 10,
        validation_fraction: float = 0.2,
        seed: int = 0,
    ):
        if not 0 < init_fraction < 1:
            raise ValueError(f"init_fraction must lie in (0, 1), got {init_fraction}")
        self.region, self.refit_background = region, refit_background
        self.background = background if background is not None else ConditionalDensity()
        self.family, self.layers, self.hidden = family, layers, tuple(hidden)
        self.init_fraction, self.max_epochs, self.batch_size = init_fraction, max_epochs, batch_size
        self.lr, self.patience, self.seed = lr, patience, seed
        self.validation_fraction = validation_fraction
        self.nonfinite_ = {"nan": 0, "posinf": 0, "neginf": 0}

    def _latent(self, x: np.ndarray, m: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Features in the background's standardised space and ``log p_bg`` there."""
        pre = self.background.preprocessor_
        with torch.no_grad():
            z, ladj = pre.to_latent(torch.as_tensor(x))
        log_bg = self.background.log_prob(x, m) - ladj.numpy()
        return z.float(), torch.as_tensor(log_bg, dtype=torch.float32)

    def fit(self, x: Any, m: Any) -> RANODE:
        """Train the sideband background (unless shared) and the signal flow; a fit that
        raises leaves the detector and its background as they were."""
        x, m = _xm(x, m)
        _check_windows(self.region, m, self.refit_background)
        with restore_on_error(self, self.background):
            return self._fit(x, m)

    def _fit(self, x: np.ndarray, m: np.ndarray) -> RANODE:
        _sideband_background(self, x, m)
        sr = self.region.inside(m)
        z, log_bg = self._latent(x[sr], m[sr])
        keep = torch.isfinite(z).all(-1) & torch.isfinite(log_bg)
        self.nonfinite_training_ = int((~keep).sum())
        if self.nonfinite_training_:
            warnings.warn(f"RANODE: {self.nonfinite_training_} SR events have a non-finite "
                          "background density and are left out of the fit (counted)",
                          RuntimeWarning, stacklevel=2)  # fmt: skip
        z, log_bg = z[keep], log_bg[keep]
        torch.manual_seed(self.seed)
        flow = build(self.family, x.shape[1], layers=self.layers, hidden=self.hidden)
        self.model_ = _SignalMixture(flow, self.init_fraction)
        order = np.random.default_rng(self.seed).permutation(len(z))
        n_val = validation_rows(len(z), self.validation_fraction)
        val, train = torch.as_tensor(order[:n_val]), torch.as_tensor(order[n_val:])
        self.history_ = fit(
            self.model_, _mixture_nll, (z[train], log_bg[train]), (z[val], log_bg[val]),
            max_epochs=self.max_epochs, batch_size=self.batch_size, lr=self.lr,
            patience=self.patience, seed=self.seed, progress=False, desc="R-ANODE",
        )  # fmt: skip
        return self

    @property
    def fraction_(self) -> float:
        """The fitted signal fraction ``w`` in the SR."""
        return float(torch.sigmoid(self.model_.logit_w.detach()))

    def score(self, x: Any, m: Any) -> np.ndarray:
        """``log p_sig(x) - log p_bg(x | m)`` per event (needs each event's ``m``)."""
        if not hasattr(self, "model_"):
            raise RuntimeError("RANODE is not fitted: call fit(x, m) first")
        x, m = _xm(x, m)
        z, log_bg = self._latent(x, m)
        with torch.no_grad():
            bad = ~torch.isfinite(z).all(-1)
            log_sig = self.model_.flow.log_prob(torch.where(bad[:, None], 0.0, z), check=False)
            log_sig = torch.where(bad, torch.nan, log_sig)
        with np.errstate(invalid="ignore"):
            scores = log_sig.double().numpy() - log_bg.double().numpy()
        return _counted(self, scores)
