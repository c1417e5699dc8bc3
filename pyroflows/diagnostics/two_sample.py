"""Two-sample checks of generated data: the classifier two-sample test (C2ST), which is also
the classifier metric of precision generation (calibrated AUC, JSD, interval, permutation
p-value, null check, weights and their histogram), and the usefulness of synthetic rows for
a downstream classifier (train on genuine, synthetic and augmented data, test on held-out
genuine data)."""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, clone
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, balanced_accuracy_score
from sklearn.model_selection import StratifiedKFold
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from pyroflows.classify import Classifier
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


# -- classifier two-sample test and classifier metric ---------------------------------------
@dataclass(frozen=True)
class C2STResult:
    """Outcome of :func:`c2st`.

    The first four fields are the classic C2ST; the others make it the "classifier metric" of
    precision generation (CaloFlow, the CaloChallenge). With ``X`` generated and ``Y``
    reference rows, ``weights`` are the reweighting factors ``p_Y / p_X`` of the rows of ``X``.

    Attributes:
        accuracy: mean cross-validated accuracy (0.5: indistinguishable, 1: fully separable).
        auc: mean cross-validated ROC AUC (raw classifier scores).
        accuracy_std: standard deviation of the accuracy over the folds.
        n_per_set: rows used from each set (the larger set is subsampled).
        auc_calibrated: ROC AUC of the pooled out-of-fold probabilities after out-of-fold
            calibration (:func:`pyroflows.reweight.calibrate_out_of_fold`); equal to the
            pooled raw AUC for Platt scaling (a monotone map), a little lower for isotonic.
        jsd: ``(ln 2 - BCE) / ln 2`` with the binary cross-entropy (nats) of the calibrated
            probabilities: an estimate of the Jensen-Shannon divergence in bits, 0 for
            indistinguishable sets, 1 for disjoint ones (can be slightly negative by noise).
        auc_interval: ``(low, high)`` stratified-bootstrap percentile interval of the pooled
            AUC (``nan`` when ``n_bootstrap=0``).
        p_value: permutation p-value of the pooled AUC under "same distribution" (labels
            permuted within each fold; exact, since each fold's model never saw its rows);
            ``nan`` when ``permutations=0``.
        null_auc, null_interval: the same AUC and interval for reference vs reference
            (``null``); ``nan`` when no null check was asked for.
        proba, labels: pooled out-of-fold probabilities of "row of ``Y``" and the labels.
        weights: ``p / (1 - p)`` of the calibrated probabilities for the rows of ``X`` that
            the test used, ``X[x_rows]`` (all of ``X``, in order, unless ``X`` was the larger
            set and was subsampled).
        x_rows: the positions in ``X`` of the rows that ``weights`` belong to.
    """

    accuracy: float
    auc: float
    accuracy_std: float
    n_per_set: int
    auc_calibrated: float = float("nan")
    jsd: float = float("nan")
    auc_interval: tuple[float, float] = (float("nan"), float("nan"))
    p_value: float = float("nan")
    null_auc: float = float("nan")
    null_interval: tuple[float, float] = (float("nan"), float("nan"))
    proba: np.ndarray | None = field(default=None, repr=False)
    labels: np.ndarray | None = field(default=None, repr=False)
    weights: np.ndarray | None = field(default=None, repr=False)
    x_rows: np.ndarray | None = field(default=None, repr=False)

    def summary(self) -> str:
        """One line with the AUC, its interval, the JSD, the p-value and the null AUC."""
        lo, hi = self.auc_interval
        return (
            f"AUC {self.auc:.4f} [{lo:.4f}, {hi:.4f}] (calibrated {self.auc_calibrated:.4f}), "
            f"JSD {self.jsd:.4f}, p {self.p_value:.3g}, null AUC {self.null_auc:.4f}, "
            f"n {self.n_per_set} per set"
        )


def _grouped_auc(group: np.ndarray, n_groups: int, y: np.ndarray, c: np.ndarray) -> float:
    """ROC AUC with row multiplicities ``c`` (ties count one half); ``group`` ranks the scores."""
    pos = np.bincount(group, weights=c * y, minlength=n_groups)
    neg = np.bincount(group, weights=c * (1 - y), minlength=n_groups)
    below = np.cumsum(neg) - neg
    return float((pos * (below + 0.5 * neg)).sum() / (pos.sum() * neg.sum()))


def _bootstrap_interval(
    proba: np.ndarray, y: np.ndarray, n_bootstrap: int, level: float, rng: np.random.Generator,
    weight: np.ndarray,
) -> tuple[float, float]:  # fmt: skip
    if n_bootstrap == 0:
        return (float("nan"), float("nan"))
    _, group = np.unique(proba, return_inverse=True)
    n_groups = int(group.max()) + 1
    classes = [np.flatnonzero(y == k) for k in (0, 1)]
    aucs = np.empty(n_bootstrap)
    for b in range(n_bootstrap):
        c = np.zeros(len(y))
        for rows in classes:  # stratified: each class keeps its size
            c[rows] = rng.multinomial(len(rows), np.full(len(rows), 1 / len(rows)))
        aucs[b] = _grouped_auc(group, n_groups, y, c * weight)
    tail = 50 * (1 - level)
    return tuple(float(v) for v in np.percentile(aucs, [tail, 100 - tail]))  # type: ignore[return-value]


def _check_x_weight(x_weight: Any, n_rows: int, classifier: Any, permutations: int) -> np.ndarray:
    w = np.asarray(x_weight, dtype=np.float64)
    if w.shape != (n_rows,) or not np.isfinite(w).all() or (w < 0).any() or not w.sum() > 0:
        raise ValueError(
            f"x_weight must hold one finite, non-negative weight per row of X ({n_rows}), "
            f"not all 0; got shape {w.shape}"
        )
    if not (isinstance(classifier, Classifier) or classifier == "hgb"):
        raise ValueError(
            "x_weight needs classifier='hgb' or a pyroflows.classify.Classifier (they train "
            f"with row weights); got {classifier!r}"
        )
    if permutations:
        raise ValueError("x_weight cannot be combined with permutations > 0")
    return w


def _fit_predict(
    classifier: str | BaseEstimator | Classifier, n_features: int, seed: int,
    X_train: np.ndarray, y_train: np.ndarray, X_test: np.ndarray, w_train: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Probabilities of class 1 and hard predictions of a fresh classifier on ``X_test``
    (trained with row weights ``w_train`` when given: only the pyroflows classifiers)."""
    if isinstance(classifier, Classifier) or classifier == "hgb":
        model = classifier.clone() if isinstance(classifier, Classifier) else Classifier(
            "hgb", random_state=seed
        )  # fmt: skip
        proba = model.fit(X_train, y_train, w_train).predict_proba(X_test)
        return proba, (proba > 0.5).astype(int)
    model = make_classifier(classifier, n_features, seed).fit(X_train, y_train)
    return model.predict_proba(X_test)[:, 1], model.predict(X_test)


def c2st(
    X: Any,
    Y: Any,
    classifier: str | BaseEstimator | Classifier = "mlp",
    folds: int = 5,
    seed: int = 0,
    *,
    calibration: str = "platt",
    n_bootstrap: int = 200,
    level: float = 0.95,
    permutations: int = 0,
    null: Any = None,
    x_weight: Any = None,
) -> C2STResult:
    """Classifier two-sample test and classifier metric: can a classifier tell ``X`` from ``Y``?

    The larger set is subsampled (without replacement) to the size of the smaller, the rows are
    labelled 0 (``X``) / 1 (``Y``), and a classifier is trained on ``folds - 1`` stratified,
    shuffled folds and scored on the remaining one, for each fold. Accuracy and AUC near 0.5
    mean the two sets look alike to the classifier. From the pooled out-of-fold probabilities
    come the calibrated AUC, the JSD, a bootstrap interval, a permutation p-value and the
    weights of the rows of ``X``; ``null`` adds the reference-vs-reference check (a strong
    classifier on finite samples does not always sit at 0.5). With ``x_weight`` the rows of
    ``X`` count with their weights (scaled to mean 1) in the training, the calibration and
    every score, so a reweighted generator (:func:`pyroflows.reweight`) is compared with
    ``Y`` without resampling it.

    Args:
        X: first set (generated rows), shape ``(n, D)``.
        Y: second set (reference rows), shape ``(m, D)``.
        classifier: ``"mlp"``, ``"rf"``, ``"logistic"`` (scikit-learn, see
            :func:`make_classifier`), ``"hgb"`` (gradient boosting of
            :class:`pyroflows.classify.Classifier`: the fast choice for many rows), a
            :class:`~pyroflows.classify.Classifier`, or a scikit-learn classifier.
        folds: number of cross-validation folds.
        seed: seed of the subsampling, the folds, the classifier and the resampling.
        calibration: ``"platt"``, ``"isotonic"`` or ``"none"`` (out of fold).
        n_bootstrap: bootstrap replicates of the AUC interval (0: none).
        level: coverage of the interval.
        permutations: label permutations for the p-value (0: none).
        null: a second reference sample for the null check (``Y`` vs ``null``), ``True`` to
            split ``Y`` into two random halves, or ``None`` for no null check.
        x_weight: one finite, non-negative weight per row of ``X`` (e.g.
            :attr:`pyroflows.reweight.Reweighting.weights`), or ``None``. Needs ``"hgb"`` or
            a :class:`~pyroflows.classify.Classifier` (they train with row weights) and
            ``permutations=0`` (permuting labels of weighted rows is not a test of equal
            distributions).

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> same = c2st(rng.normal(size=(300, 2)), rng.normal(size=(300, 2)), "logistic")
        >>> far = c2st(rng.normal(size=(300, 2)), rng.normal(4, 1, (300, 2)), "logistic",
        ...            permutations=99)
        >>> bool(abs(same.accuracy - 0.5) < 0.1), bool(far.accuracy > 0.95), far.p_value
        (True, True, 0.01)
        >>> bool(far.jsd > 0.8), bool(far.auc_interval[0] > 0.97)
        (True, True)
    """
    from sklearn.metrics import roc_auc_score

    from pyroflows.reweight import calibrate_out_of_fold

    X = check_data(X, name="X", min_samples=folds)
    Y = check_data(Y, X.shape[1], name="Y", min_samples=folds)
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if x_weight is not None:
        x_weight = _check_x_weight(x_weight, len(X), classifier, permutations)
    rng = np.random.default_rng(seed)
    n = min(len(X), len(Y))
    keep = np.arange(len(X))
    if len(X) > n:
        keep = rng.choice(len(X), n, replace=False)
        X = X[keep]
        x_weight = None if x_weight is None else x_weight[keep]
    if len(Y) > n:
        Y = Y[rng.choice(len(Y), n, replace=False)]
    data = np.concatenate([X, Y])
    labels = np.r_[np.zeros(n, dtype=int), np.ones(n, dtype=int)]
    if x_weight is not None and not x_weight.sum() > 0:
        raise ValueError("x_weight: the rows of X kept for the test all have weight 0")
    w = None if x_weight is None else np.r_[x_weight * n / x_weight.sum(), np.ones(n)]
    row_weight = np.ones(2 * n) if w is None else w
    proba = np.empty(2 * n)
    fold_of = np.empty(2 * n, dtype=int)
    accuracy, aucs = [], []
    splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
    for k, (train, test) in enumerate(splitter.split(data, labels)):
        p, predicted = _fit_predict(
            classifier, X.shape[1], seed, data[train], labels[train], data[test],
            None if w is None else w[train],
        )  # fmt: skip
        proba[test], fold_of[test] = p, k
        accuracy.append(accuracy_score(labels[test], predicted, sample_weight=row_weight[test]))
        aucs.append(roc_auc_score(labels[test], p, sample_weight=row_weight[test]))
    log_odds = calibrate_out_of_fold(proba, labels, calibration, folds, seed + 1, row_weight)
    calibrated = 1 / (1 + np.exp(-log_odds))
    loss = np.logaddexp(0, -log_odds) * labels + np.logaddexp(0, log_odds) * (1 - labels)
    bce = np.average(loss, weights=row_weight)
    _, group = np.unique(proba, return_inverse=True)
    n_groups = int(group.max()) + 1
    observed = _grouped_auc(group, n_groups, labels, row_weight)
    p_value = float("nan")
    if permutations:
        exceed = 0
        for _ in range(permutations):
            permuted = labels.copy()
            for k in range(folds):  # within each fold the scores are exchangeable under H0
                rows = np.flatnonzero(fold_of == k)
                permuted[rows] = rng.permutation(labels[rows])
            exceed += _grouped_auc(group, n_groups, permuted, row_weight) >= observed
        p_value = (1 + exceed) / (1 + permutations)
    null_auc, null_interval = float("nan"), (float("nan"), float("nan"))
    if null is not None:
        if isinstance(null, bool) and null:
            order = rng.permutation(len(Y))
            first, second = Y[order[: len(Y) // 2]], Y[order[len(Y) // 2 :]]
        else:
            first, second = Y, check_data(null, X.shape[1], name="null", min_samples=folds)
        check = c2st(first, second, classifier, folds, seed + 2, calibration=calibration,
                     n_bootstrap=n_bootstrap, level=level)  # fmt: skip
        null_auc, null_interval = check.auc, check.auc_interval
    return C2STResult(
        accuracy=float(np.mean(accuracy)),
        auc=float(np.mean(aucs)),
        accuracy_std=float(np.std(accuracy)),
        n_per_set=n,
        auc_calibrated=float(roc_auc_score(labels, calibrated, sample_weight=row_weight)),
        jsd=float((np.log(2) - bce) / np.log(2)),
        auc_interval=_bootstrap_interval(proba, labels, n_bootstrap, level, rng, row_weight),
        p_value=float(p_value),
        null_auc=null_auc,
        null_interval=null_interval,
        proba=proba,
        labels=labels,
        weights=np.exp(np.minimum(log_odds[:n], 700.0)),
        x_rows=keep,
    )


def plot_weight_histogram(weights: Any, ax: Any = None, bins: int = 60, label: str | None = None):
    """Histogram of weights on a logarithmic axis, with the ESS / n in the legend (over every
    row: zero weights count in n and are named in the legend, as the log axis cannot show
    them). NaN, infinite or negative weights are refused.

    Args:
        weights: an array of weights, or anything with a ``weights`` attribute
            (:class:`C2STResult`, :class:`pyroflows.reweight.Reweighting`).
        ax: matplotlib axes (a new figure when ``None``).
        bins: number of logarithmic bins.
        label: legend text before the ESS.

    Returns:
        The axes.
    """
    import matplotlib.pyplot as plt

    w = np.asarray(getattr(weights, "weights", weights), dtype=np.float64).reshape(-1)
    bad = int((~np.isfinite(w)).sum() + (w < 0).sum())
    if bad:
        raise ValueError(f"{bad} of {len(w)} weights are NaN, infinite or negative")
    # ESS over every row (a zero weight counts in n); the log axis shows the positive ones
    ess = w.sum() ** 2 / np.square(w).sum() / len(w) if w.any() else 0.0
    zeros = int((w == 0).sum())
    w = w[w > 0]
    if len(w) == 0:
        raise ValueError("no finite positive weights to plot")
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.5))
    lo, hi = w.min(), w.max()
    edges = np.geomspace(lo, hi * (1 + 1e-9), bins + 1) if hi > lo else np.array([lo / 2, lo * 2])
    text = f"{label + ', ' if label else ''}ESS/n {ess:.2f}"
    text += f", {zeros} zero weights not shown" if zeros else ""
    ax.hist(w, bins=edges, histtype="step", label=text)
    ax.set_xscale("log")
    ax.axvline(1.0, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("weight")
    ax.set_ylabel("rows")
    ax.legend(frameon=False)
    return ax


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
