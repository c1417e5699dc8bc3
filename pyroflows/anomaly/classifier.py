"""The classifier set-up shared by the classifier-based detectors (CATHODE, LaCATHODE, CWoLa,
the idealized and supervised detectors): one named choice, the same for every method.

* ``"hgb"`` — 3 histogram gradient-boosting classifiers (:class:`pyroflows.classify.Classifier`
  ``"hgb"``), probabilities averaged;
* ``"mlp"`` — 3 torch MLPs of 3 x 64 ReLU units (Adam 2e-3, batch 512, at most 40 epochs,
  early stopping after 10 without progress on 20 % held-out rows), probabilities averaged;
* ``"mlp-epochs"`` — one such MLP whose 5 epochs with the lowest validation loss are averaged
  (:class:`EpochEnsembleMLP`, the reference CATHODE's "ensemble of the best epochs");
* ``"hgb+mlp"`` — the mean of the ``"hgb"`` and ``"mlp"`` probabilities
  (:class:`AveragedClassifier`).

:func:`default_classifier` builds one by name (unknown names are refused); ``DEFAULT`` names
the set-up the detectors use when none is given: ``"mlp-epochs"``, chosen on the development
setting of ``benchmarks/anomaly.py`` by a rule fixed in advance (median over 2 data seeds x 2
correlations of CATHODE's and the idealized detector's mean max SIC: 15.03 against 12.37 for
``"hgb"``, within 1 % of the best set-up tried at a third of its training time;
``benchmarks/results/anomaly_classifier.md``).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
from torch import nn

from pyroflows.classify import Classifier
from pyroflows.validation import positive_int

__all__ = ["CHOICES", "DEFAULT", "AveragedClassifier", "EpochEnsembleMLP", "default_classifier"]

CHOICES = ("hgb", "mlp", "mlp-epochs", "hgb+mlp")
DEFAULT = "mlp-epochs"
# the MLP's settings shared by "mlp", "mlp-epochs" and "hgb+mlp"
MLP = {"hidden": (64, 64, 64), "lr": 2e-3, "batch_size": 512, "max_epochs": 40, "patience": 10}


class EpochEnsembleMLP(Classifier):
    """An MLP :class:`~pyroflows.classify.Classifier` (``kind="mlp"``) whose members are each
    the average of the ``best_epochs`` epochs with the lowest validation loss of one training
    run (the best state included), not the best state alone.

    Args:
        best_epochs: epochs averaged per run (1: the best state, as ``Classifier("mlp")``).
        **options: the :class:`~pyroflows.classify.Classifier` MLP settings (``kind`` is
            ``"mlp"``).
    """

    def __init__(self, best_epochs: int = 5, **options: Any):
        if options.get("kind", "mlp") != "mlp":
            raise ValueError(f"EpochEnsembleMLP is an MLP, got kind={options['kind']!r}")
        options.pop("kind", None)
        super().__init__("mlp", **options)
        self.best_epochs = positive_int("best_epochs", best_epochs)
        if self.best_epochs > self.max_epochs:
            raise ValueError(
                f"best_epochs ({best_epochs}) cannot exceed max_epochs ({self.max_epochs})"
            )

    def _fit_mlp(self, Z: np.ndarray, y: np.ndarray, w: np.ndarray, seed: int) -> Any:
        kept: list[tuple[float, dict]] = []

        def keep(model: nn.Module, epoch: int, history: Any) -> None:
            if history.val_loss:
                kept.append((history.val_loss[-1], copy.deepcopy(model.state_dict())))
                kept.sort(key=lambda item: item[0])
                del kept[self.best_epochs :]

        model = super()._fit_mlp(Z, y, w, seed, on_epoch=keep)
        states = []
        for _, state in kept:  # lowest validation loss first (the loop loaded the best)
            member = copy.deepcopy(model)
            member.load_state_dict(state)
            states.append(member.eval())
        return states or [model.eval()]

    def _proba(self, member: Any, Z: np.ndarray) -> np.ndarray:
        return np.mean([super(EpochEnsembleMLP, self)._proba(m, Z) for m in member], axis=0)

    def clone(self) -> EpochEnsembleMLP:
        """An unfitted classifier with the same settings."""
        base = super().clone()
        options = {k: getattr(base, k) for k in _SETTINGS}
        return EpochEnsembleMLP(self.best_epochs, **options)


_SETTINGS = ("ensemble", "hidden", "max_epochs", "lr", "batch_size", "patience", "max_iter",
             "learning_rate", "random_state", "activation", "weight_decay",
             "validation_fraction", "squares")  # fmt: skip


class AveragedClassifier(Classifier):
    """The mean probability of several fitted classifiers (e.g. gradient boosting and an MLP),
    each trained on the same rows and weights.

    Args:
        parts: the classifiers (cloned at :meth:`fit`).
    """

    def __init__(self, parts: list[Classifier]):
        if len(parts) < 2 or not all(isinstance(p, Classifier) for p in parts):
            raise ValueError("AveragedClassifier needs at least 2 Classifier parts")
        super().__init__(parts[0].kind, random_state=parts[0].random_state)
        self.parts = list(parts)

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> AveragedClassifier:
        """Train every part on ``(X, y)``, weighted by ``sample_weight``."""
        X, y, w = self._check(X, y, sample_weight)
        self.mean_ = X.mean(0)  # for predict_proba's feature-count check
        self.members_ = [p.clone().fit(X, y, w) for p in self.parts]
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        """The parts' mean probability of class 1 for each row, ``(n,)``."""
        if not self.members_:
            raise RuntimeError("the classifier is not fitted: call fit(X, y) first")
        return np.mean([m.predict_proba(X) for m in self.members_], axis=0)

    def clone(self) -> AveragedClassifier:
        """An unfitted classifier with the same parts' settings."""
        return AveragedClassifier([p.clone() for p in self.parts])


def default_classifier(name: str = DEFAULT, seed: int = 0) -> Classifier:
    """The shared classifier set-up named ``name`` (one of :data:`CHOICES`), seeded with
    ``seed`` (member ``k`` uses ``seed + k``).

    Example:
        >>> default_classifier("mlp").hidden
        (64, 64, 64)
        >>> default_classifier("svm")
        Traceback (most recent call last):
        ...
        ValueError: classifier must be one of ('hgb', 'mlp', 'mlp-epochs', 'hgb+mlp'), got 'svm'
    """
    if name not in CHOICES:
        raise ValueError(f"classifier must be one of {CHOICES}, got {name!r}")
    if name == "hgb":
        return Classifier("hgb", ensemble=3, random_state=seed)
    if name == "mlp":
        return Classifier("mlp", ensemble=3, random_state=seed, **MLP)
    if name == "mlp-epochs":
        return EpochEnsembleMLP(5, ensemble=1, random_state=seed, **MLP)
    return AveragedClassifier([default_classifier("hgb", seed), default_classifier("mlp", seed)])
