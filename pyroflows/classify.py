"""Probabilistic classifiers shared by the classifier-based jobs: reweighting (DCTR), the
classifier two-sample metric and weakly supervised anomaly detection.

:class:`Classifier` is one set-up with two kinds: ``"hgb"``, scikit-learn's
``HistGradientBoostingClassifier`` (fast and strong on tabular features), and ``"mlp"``, a
torch MLP trained with the shared loop (:func:`pyroflows.train.fit`, binary cross-entropy,
early stopping on held-out rows). Either can be an ensemble of ``ensemble`` members with
different seeds whose probabilities are averaged. Inputs are standardised in float64 first;
``squares=True`` adds their squares; ``sample_weight`` is honoured by both kinds.
:func:`out_of_fold_proba` scores every row with a classifier that did not see it (stratified
folds), so no row is weighted or ranked by a model that was trained on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from pyroflows.train import fit
from pyroflows.train.seeding import seeded_draws
from pyroflows.validation import flag, hidden_sizes, positive_int

__all__ = ["Classifier", "out_of_fold_proba"]

KINDS = ("hgb", "mlp")
ACTIVATIONS = {"relu": nn.ReLU, "silu": nn.SiLU, "tanh": nn.Tanh, "elu": nn.ELU}


def _weighted_bce(model: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
    x, y, w = batch
    logits = model(x).squeeze(-1)
    losses = nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none")
    return (w * losses).sum() / w.sum()


class Classifier:
    """A binary classifier returning calibrated-by-training probabilities of class 1.

    Args:
        kind: ``"hgb"`` (``HistGradientBoostingClassifier``, early stopping on 10 % of the
            rows) or ``"mlp"`` (a torch MLP with ``hidden`` ReLU layers, Adam, early stopping
            on 20 % of the rows after ``patience`` epochs without progress).
        ensemble: number of members (different seeds); their probabilities are averaged.
        hidden, max_epochs, lr, batch_size, patience: the MLP's settings.
        activation: the MLP's hidden activation, one of ``"relu"``, ``"silu"``, ``"tanh"``,
            ``"elu"`` (smooth ones give smooth log-odds).
        weight_decay: the MLP's Adam weight decay (0: none).
        validation_fraction: fraction of the rows the MLP holds out for early stopping (each
            member draws its own; in ``(0, 1)``).
        squares: also give the model the square of every standardised input (``2 D`` inputs
            in all). The log-odds between two Gaussians of different widths are quadratic in
            ``x``; with the squares a ReLU MLP need not approximate that growth piecewise,
            which it does poorly where rows are few (a generator's too-wide tails).
        max_iter, learning_rate: the gradient boosting's settings.
        random_state: seed of the first member (member ``k`` uses ``random_state + k``).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> X = np.concatenate([rng.normal(0, 1, (500, 2)), rng.normal(1, 1, (500, 2))])
        >>> y = np.repeat([0, 1], 500)
        >>> p = Classifier("hgb").fit(X, y).predict_proba(X)
        >>> p.shape, bool(p[:500].mean() < 0.5 < p[500:].mean())
        ((1000,), True)
    """

    def __init__(
        self,
        kind: str = "hgb",
        ensemble: int = 1,
        hidden: Sequence[int] = (64, 64),
        max_epochs: int = 100,
        lr: float = 1e-3,
        batch_size: int = 256,
        patience: int = 10,
        max_iter: int = 200,
        learning_rate: float = 0.1,
        random_state: int = 0,
        activation: str = "relu",
        weight_decay: float = 0.0,
        validation_fraction: float = 0.2,
        squares: bool = False,
    ):
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        self.kind, self.ensemble = kind, positive_int("ensemble", ensemble)
        self.hidden = hidden_sizes(hidden)
        self.max_epochs, self.lr = positive_int("max_epochs", max_epochs), lr
        self.batch_size, self.patience = positive_int("batch_size", batch_size), patience
        self.max_iter, self.learning_rate = positive_int("max_iter", max_iter), learning_rate
        self.random_state = int(random_state)
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {tuple(ACTIVATIONS)}, got {activation!r}")
        if not (np.isfinite(weight_decay) and weight_decay >= 0):
            raise ValueError(f"weight_decay must be finite and >= 0, got {weight_decay}")
        if not 0 < validation_fraction < 1:
            raise ValueError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
        self.activation, self.weight_decay = activation, float(weight_decay)
        self.validation_fraction = float(validation_fraction)
        self.squares = flag("squares", squares)
        self.members_: list[Any] = []

    def _check(self, X: Any, y: Any = None, sample_weight: Any = None):
        X = np.asarray(X, dtype=np.float64)
        if X.ndim == 1:
            X = X[:, None]
        if X.ndim != 2 or not np.isfinite(X).all():
            raise ValueError(f"X must be a finite 2-D array, got shape {X.shape} or NaN/inf")
        if y is None:
            return X, None, None
        y = np.asarray(y)
        if y.shape != (len(X),) or not np.isin(y, (0, 1)).all():
            raise ValueError(f"y must hold one 0/1 label per row of X ({len(X)}), got {y.shape}")
        if len(np.unique(y)) < 2:
            raise ValueError("y needs rows of both classes")
        w = np.ones(len(X)) if sample_weight is None else np.asarray(sample_weight, float)
        if w.shape != (len(X),) or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
            raise ValueError("sample_weight must be finite, non-negative, one per row, not all 0")
        return X, y.astype(np.float64), w

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> Classifier:
        """Train every member on ``(X, y)`` (labels 0/1), weighted by ``sample_weight``."""
        X, y, w = self._check(X, y, sample_weight)
        self.mean_, self.std_ = X.mean(0), X.std(0)
        self.std_[self.std_ == 0] = 1.0
        if self.squares:
            S = ((X - self.mean_) / self.std_) ** 2
            self.square_mean_, self.square_std_ = S.mean(0), S.std(0)
            self.square_std_[self.square_std_ == 0] = 1.0
        Z = self._features(X)
        self.members_ = [
            (self._fit_hgb if self.kind == "hgb" else self._fit_mlp)(Z, y, w, self.random_state + k)
            for k in range(self.ensemble)
        ]
        return self

    def _features(self, X: np.ndarray) -> np.ndarray:
        """The standardised inputs, followed by their (standardised) squares when ``squares``."""
        Z = (X - self.mean_) / self.std_
        if not self.squares:
            return Z
        return np.concatenate([Z, (Z**2 - self.square_mean_) / self.square_std_], axis=1)

    def _fit_hgb(self, Z: np.ndarray, y: np.ndarray, w: np.ndarray, seed: int) -> Any:
        from sklearn.ensemble import HistGradientBoostingClassifier

        model = HistGradientBoostingClassifier(
            max_iter=self.max_iter, learning_rate=self.learning_rate, early_stopping=True,
            validation_fraction=0.1, random_state=seed,
        )  # fmt: skip
        # equal weights are no weights: scikit-learn bins weighted rows by a slower path
        # (about 60x on 600 x 103 rows), and equal weights leave every split and leaf the same
        uniform = bool((w == w[0]).all())
        return model.fit(Z, y.astype(int), sample_weight=None if uniform else w)

    def _fit_mlp(
        self, Z: np.ndarray, y: np.ndarray, w: np.ndarray, seed: int, on_epoch: Any = None
    ) -> nn.Module:
        """One MLP trained on ``(Z, y, w)``; ``on_epoch(model, epoch, history)`` is called
        after each epoch (e.g. to keep the best epochs' states)."""
        gen = torch.Generator().manual_seed(seed)
        layers: list[nn.Module] = []
        width = Z.shape[1]
        with seeded_draws(seed):
            for size in self.hidden:
                layers += [nn.Linear(width, size), ACTIVATIONS[self.activation]()]
                width = size
            model = nn.Sequential(*layers, nn.Linear(width, 1))
        order = torch.randperm(len(Z), generator=gen)
        n_val = min(len(Z) - 1, max(1, int(self.validation_fraction * len(Z))))
        data = [torch.as_tensor(a, dtype=torch.float32) for a in (Z, y, w)]
        val, train = order[:n_val], order[n_val:]
        fit(
            model, _weighted_bce, tuple(t[train] for t in data), tuple(t[val] for t in data),
            max_epochs=self.max_epochs, lr=self.lr, batch_size=self.batch_size,
            weight_decay=self.weight_decay, patience=self.patience, seed=seed, progress=False,
            desc="classifier",
            callback=None if on_epoch is None else (lambda e, h: on_epoch(model, e, h)),
        )  # fmt: skip
        return model

    def predict_proba(self, X: Any) -> np.ndarray:
        """The members' mean probability of class 1 for each row, ``(n,)``."""
        if not self.members_:
            raise RuntimeError("the classifier is not fitted: call fit(X, y) first")
        X, _, _ = self._check(X)
        if X.shape[1] != len(self.mean_):
            raise ValueError(f"X has {X.shape[1]} features, the classifier {len(self.mean_)}")
        Z = self._features(X)
        return np.mean([self._proba(m, Z) for m in self.members_], axis=0)

    def _proba(self, member: Any, Z: np.ndarray) -> np.ndarray:
        if self.kind == "hgb":
            return member.predict_proba(Z)[:, 1]
        with torch.no_grad():
            logits = member(torch.as_tensor(Z, dtype=torch.float32)).squeeze(-1)
        return torch.sigmoid(logits.double()).numpy()

    def clone(self) -> Classifier:
        """An unfitted classifier with the same settings."""
        return Classifier(
            self.kind, self.ensemble, self.hidden, self.max_epochs, self.lr, self.batch_size,
            self.patience, self.max_iter, self.learning_rate, self.random_state,
            self.activation, self.weight_decay, self.validation_fraction, self.squares,
        )  # fmt: skip


def out_of_fold_proba(
    classifier: Classifier,
    X: Any,
    y: Any,
    folds: int = 5,
    sample_weight: Any = None,
    random_state: int = 0,
) -> np.ndarray:
    """Probabilities of class 1 for every row, each from a copy of ``classifier`` trained on
    the other ``folds - 1`` stratified folds (so no row is scored by a model that saw it).

    Example:
        >>> rng = np.random.default_rng(1)
        >>> X = rng.normal(size=(400, 3)); y = (X[:, 0] > 0).astype(int)
        >>> p = out_of_fold_proba(Classifier("hgb"), X, y, folds=4)
        >>> bool(((p > 0.5) == y).mean() > 0.9)
        True
    """
    from sklearn.model_selection import StratifiedKFold

    positive_int("folds", folds)
    if folds < 2:
        raise ValueError(f"folds must be at least 2, got {folds}")
    X, y, w = classifier._check(X, y, sample_weight)
    proba = np.empty(len(X))
    splitter = StratifiedKFold(folds, shuffle=True, random_state=random_state)
    for train, test in splitter.split(X, y):
        model = classifier.clone().fit(X[train], y[train], w[train])
        proba[test] = model.predict_proba(X[test])
    return proba
