"""Two-sample checks of generated data: the classifier two-sample test (C2ST) and the
usefulness of synthetic rows for a downstream classifier (train on genuine, synthetic and
augmented data, test on held-out genuine data)."""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, clone
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, balanced_accuracy_score
from sklearn.model_selection import StratifiedKFold, cross_validate
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from pyroflows.validation import check_data, to_numpy


def make_classifier(
    classifier: str | BaseEstimator, n_features: int, seed: int = 0
) -> BaseEstimator:
    """A fresh scikit-learn classifier preceded by a :class:`StandardScaler`.

    Args:
        classifier: ``"mlp"`` (two hidden layers of ``10 * n_features`` ReLU units, at least
            16, trained with Adam until the training loss stalls), ``"rf"`` (a random forest
            of 100 trees), ``"logistic"``, or any scikit-learn classifier (cloned, never
            modified).
        n_features: number of input features (sizes the MLP).
        seed: random state of the classifier.
    """
    if isinstance(classifier, str):
        width = max(10 * n_features, 16)
        options = {
            "mlp": lambda: MLPClassifier(
                hidden_layer_sizes=(width, width),
                max_iter=1000,
                random_state=seed,
            ),
            "rf": lambda: RandomForestClassifier(n_estimators=100, random_state=seed),
            "logistic": lambda: LogisticRegression(max_iter=1000),
        }
        if classifier not in options:
            raise ValueError(
                f"unknown classifier {classifier!r}; use one of {sorted(options)} or an estimator"
            )
        model = options[classifier]()
    elif hasattr(classifier, "fit") and hasattr(classifier, "predict"):
        model = clone(classifier)
    else:
        raise ValueError(
            f"classifier must be a name or a scikit-learn classifier; got {classifier!r}"
        )
    return make_pipeline(StandardScaler(), model)


# -- classifier two-sample test ---------------------------------------------------------------
@dataclass(frozen=True)
class C2STResult:
    """Outcome of :func:`c2st`.

    Attributes:
        accuracy: mean cross-validated accuracy (0.5: indistinguishable, 1: fully separable).
        auc: mean cross-validated ROC AUC.
        accuracy_std: standard deviation of the accuracy over the folds.
        n_per_set: rows used from each set (the larger set is subsampled).
    """

    accuracy: float
    auc: float
    accuracy_std: float
    n_per_set: int


def c2st(
    X: Any,
    Y: Any,
    classifier: str | BaseEstimator = "mlp",
    folds: int = 5,
    seed: int = 0,
) -> C2STResult:
    """Classifier two-sample test: can a classifier tell the rows of ``X`` from those of ``Y``?

    The larger set is subsampled (without replacement) to the size of the smaller, the rows are
    labelled 0 / 1, and a standardising pipeline (:func:`make_classifier`) is scored by
    stratified, shuffled ``folds``-fold cross-validation. Accuracy near 0.5 means the two sets
    look alike to the classifier.

    Args:
        X: first set, shape ``(n, D)``.
        Y: second set, shape ``(m, D)``.
        classifier: ``"mlp"``, ``"rf"``, ``"logistic"`` or a scikit-learn classifier.
        folds: number of cross-validation folds.
        seed: seed of the subsampling, the folds and the classifier.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> same = c2st(rng.normal(size=(300, 2)), rng.normal(size=(300, 2)), "logistic")
        >>> far = c2st(rng.normal(size=(300, 2)), rng.normal(4, 1, (300, 2)), "logistic")
        >>> bool(abs(same.accuracy - 0.5) < 0.1), bool(far.accuracy > 0.95)
        (True, True)
    """
    X = check_data(X, name="X", min_samples=folds)
    Y = check_data(Y, X.shape[1], name="Y", min_samples=folds)
    rng = np.random.default_rng(seed)
    n = min(len(X), len(Y))
    if len(X) > n:
        X = X[rng.choice(len(X), n, replace=False)]
    if len(Y) > n:
        Y = Y[rng.choice(len(Y), n, replace=False)]
    data = np.concatenate([X, Y])
    labels = np.r_[np.zeros(n, dtype=int), np.ones(n, dtype=int)]
    result = cross_validate(
        make_classifier(classifier, X.shape[1], seed),
        data,
        labels,
        cv=StratifiedKFold(folds, shuffle=True, random_state=seed),
        scoring=("accuracy", "roc_auc"),
    )
    accuracy = result["test_accuracy"]
    return C2STResult(
        accuracy=float(accuracy.mean()),
        auc=float(result["test_roc_auc"].mean()),
        accuracy_std=float(accuracy.std()),
        n_per_set=n,
    )


# -- usefulness of synthetic data -------------------------------------------------------------
@dataclass(frozen=True)
class ClassifierScores:
    """Scores of one classifier on the held-out genuine test set."""

    accuracy: float
    balanced_accuracy: float


@dataclass(frozen=True)
class SamplingQuality:
    """Outcome of :func:`sampling_quality`: the same classifier trained on three data sets.

    Attributes:
        genuine: trained on the genuine training data.
        synthetic: trained on the synthetic data only.
        augmented: trained on genuine and synthetic data together.
    """

    genuine: ClassifierScores
    synthetic: ClassifierScores
    augmented: ClassifierScores

    def to_dict(self) -> dict[str, dict[str, float]]:
        """``{"genuine": {"accuracy": ..., "balanced_accuracy": ...}, ...}`` (e.g. for pandas)."""
        return asdict(self)


def _labels(y: Any, n: int, name: str) -> np.ndarray:
    arr = to_numpy(y)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"{name} must be 1-D with one label per row ({n}); got shape {arr.shape}")
    return arr


def sampling_quality(
    train_X: Any,
    train_y: Any,
    synthetic_X: Any,
    synthetic_y: Any,
    test_X: Any,
    test_y: Any,
    classifier: str | BaseEstimator = "rf",
    seed: int = 0,
) -> SamplingQuality:
    """How useful synthetic rows are for training a classifier.

    The same classifier (:func:`make_classifier`, with standardisation fitted on each training
    set) is trained on (a) the genuine training data, (b) the synthetic data and (c) both
    together ("augmented"), and each is scored on the held-out genuine test set. Synthetic data
    from a good generator give (b) close to (a), and (c) at least as good as (a).

    Args:
        train_X, train_y: genuine training rows and labels.
        synthetic_X, synthetic_y: generated rows and their labels (e.g. from a conditional
            flow sampled per class).
        test_X, test_y: held-out genuine rows and labels.
        classifier: ``"rf"``, ``"mlp"``, ``"logistic"`` or a scikit-learn classifier.
        seed: random state of the classifier.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> def draw(n):
        ...     y = rng.integers(0, 2, n)
        ...     return rng.normal(size=(n, 2)) + 3 * y[:, None], y
        >>> (Xa, ya), (Xs, ys), (Xt, yt) = draw(100), draw(300), draw(300)
        >>> q = sampling_quality(Xa, ya, Xs, ys, Xt, yt, classifier="logistic")
        >>> bool(q.synthetic.accuracy > 0.9), sorted(q.to_dict())
        (True, ['augmented', 'genuine', 'synthetic'])
    """
    train_X = check_data(train_X, name="train_X", min_samples=2)
    d = train_X.shape[1]
    synthetic_X = check_data(synthetic_X, d, name="synthetic_X", min_samples=2)
    test_X = check_data(test_X, d, name="test_X")
    train_y = _labels(train_y, len(train_X), "train_y")
    synthetic_y = _labels(synthetic_y, len(synthetic_X), "synthetic_y")
    test_y = _labels(test_y, len(test_X), "test_y")

    def scores(X: np.ndarray, y: np.ndarray) -> ClassifierScores:
        model = make_classifier(classifier, d, seed).fit(X, y)
        predicted = model.predict(test_X)
        with warnings.catch_warnings():  # test classes missing from training: still defined
            warnings.simplefilter("ignore", UserWarning)
            balanced = balanced_accuracy_score(test_y, predicted)
        return ClassifierScores(float(accuracy_score(test_y, predicted)), float(balanced))

    return SamplingQuality(
        genuine=scores(train_X, train_y),
        synthetic=scores(synthetic_X, synthetic_y),
        augmented=scores(np.concatenate([train_X, synthetic_X]), np.r_[train_y, synthetic_y]),
    )
