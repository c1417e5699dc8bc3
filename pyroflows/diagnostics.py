"""Metrics for density estimators and generative models: pure functions, no plotting.

- Likelihood: :func:`kl_monte_carlo`, :func:`gaussian_kl`, :func:`test_log_likelihood`.
- Two-sample test: :func:`c2st` (a classifier tries to tell real from generated rows).
- Usefulness of synthetic data: :func:`sampling_quality` (train on genuine, synthetic and
  augmented data, test on held-out genuine data).
- Hot-spot maps: :class:`Grid` (cells over a 2-D region), :func:`cap_curve`, :func:`cap_auc`
  and :func:`hit_rate` (the cumulative accuracy profile of a score map against events).

Arrays may be NumPy arrays, lists or torch tensors; results are floats, NumPy arrays or small
dataclasses.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

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

__all__ = [
    "C2STResult",
    "ClassifierScores",
    "Estimate",
    "Grid",
    "SamplingQuality",
    "c2st",
    "cap_auc",
    "cap_curve",
    "gaussian_kl",
    "hit_rate",
    "kl_monte_carlo",
    "make_classifier",
    "sampling_quality",
    "test_log_likelihood",
]


# -- likelihood-based metrics -----------------------------------------------------------------
class Estimate(NamedTuple):
    """A Monte-Carlo estimate and its standard error; unpacks as ``value, stderr``."""

    value: float
    stderr: float

    def __str__(self) -> str:
        return f"{self.value:.4g} ± {self.stderr:.2g}"


def _vector(x: Any, name: str) -> np.ndarray:
    arr = to_numpy(x).astype(np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one value per sample); got shape {arr.shape}")
    if arr.size < 2:
        raise ValueError(f"{name} has {arr.size} value(s); at least 2 are needed")
    if np.isnan(arr).any():
        raise ValueError(f"{name} contains NaN")
    return arr


def _mean_and_stderr(values: np.ndarray) -> Estimate:
    mean = float(values.mean())
    if not np.isfinite(values).all():
        return Estimate(mean, math.inf)
    return Estimate(mean, float(values.std(ddof=1) / math.sqrt(values.size)))


def kl_monte_carlo(
    log_p: np.ndarray | Callable[[Any], Any],
    log_q: np.ndarray | Callable[[Any], Any],
    x: Any = None,
) -> Estimate:
    """Monte-Carlo estimate of ``KL(p || q) = E_p[log p(x) - log q(x)]`` from draws of ``p``.

    Args:
        log_p: ``log p`` at the draws, shape ``(n,)``, or a function that computes it from ``x``.
        log_q: ``log q`` at the same draws, or a function of ``x``.
        x: the draws from ``p`` (needed when ``log_p`` or ``log_q`` is a function).

    Returns:
        ``Estimate(value, stderr)``: the sample mean of ``log p - log q`` and its standard
        error ``std / sqrt(n)``. Both are infinite when ``q`` vanishes at a draw.

    Example:
        >>> import numpy as np
        >>> from scipy import stats
        >>> x = np.random.default_rng(0).normal(size=20_000)
        >>> kl, se = kl_monte_carlo(stats.norm(0, 1).logpdf, stats.norm(1, 1).logpdf, x)
        >>> abs(kl - 0.5) < 3 * se  # the exact value is 0.5
        True
    """
    if callable(log_p) or callable(log_q):
        if x is None:
            raise ValueError("x (draws from p) is needed when log_p or log_q is a function")
        log_p = log_p(x) if callable(log_p) else log_p
        log_q = log_q(x) if callable(log_q) else log_q
    lp, lq = _vector(log_p, "log_p"), _vector(log_q, "log_q")
    if lp.shape != lq.shape:
        raise ValueError(f"log_p and log_q differ in shape: {lp.shape} vs {lq.shape}")
    if np.isposinf(lp).any():
        raise ValueError("log_p contains +inf")
    diff = lp - lq
    if np.isnan(diff).any():
        raise ValueError("log_p - log_q is NaN at some draw (log_p = log_q = -inf)")
    return _mean_and_stderr(diff)


def gaussian_kl(mean_p: Any, cov_p: Any, mean_q: Any, cov_q: Any) -> float:
    """Closed-form ``KL(N(mean_p, cov_p) || N(mean_q, cov_q))`` in nats.

    Example:
        >>> gaussian_kl([0.0], [[1.0]], [1.0], [[1.0]])
        0.5
    """
    mp = to_numpy(mean_p).astype(np.float64).ravel()
    mq = to_numpy(mean_q).astype(np.float64).ravel()
    lp = np.linalg.cholesky(np.atleast_2d(to_numpy(cov_p)).astype(np.float64))
    lq = np.linalg.cholesky(np.atleast_2d(to_numpy(cov_q)).astype(np.float64))
    d = mp.size
    trace = float(np.sum(np.linalg.solve(lq, lp) ** 2))  # tr(cov_q^-1 cov_p)
    maha = float(np.sum(np.linalg.solve(lq, mq - mp) ** 2))
    logdet = 2.0 * float(np.log(np.diag(lq)).sum() - np.log(np.diag(lp)).sum())
    return 0.5 * (trace + maha - d + logdet)


def test_log_likelihood(log_probs: Any) -> Estimate:
    """Mean test log-likelihood and its standard error ``std(ddof=1) / sqrt(n)``.

    Args:
        log_probs: ``log p(x_i)`` of held-out rows, shape ``(n,)`` (NumPy or torch).

    Example:
        >>> test_log_likelihood([-1.0, -2.0, -3.0])
        Estimate(value=-2.0, stderr=0.5773502691896258)
    """
    return _mean_and_stderr(_vector(log_probs, "log_probs"))


test_log_likelihood.__test__ = False  # not a pytest test, even when imported into a test module


# -- classifiers ------------------------------------------------------------------------------
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


# -- hot-spot maps: cumulative accuracy profile -----------------------------------------------
@dataclass(frozen=True, eq=False)
class Grid:
    """A regular grid of rectangular cells over a 2-D region.

    Per-cell arrays have shape ``(nx, ny)`` and are indexed ``[i_x, i_y]``, the convention of
    ``numpy.histogram2d`` (for ``imshow`` pass the transpose with ``origin="lower"``, or
    ``pcolormesh(grid.x_edges, grid.y_edges, values.T)``).

    Attributes:
        x_edges: increasing cell boundaries along x, shape ``(nx + 1,)``.
        y_edges: increasing cell boundaries along y, shape ``(ny + 1,)``.

    Example:
        >>> grid = Grid.from_bounds(((0, 4), (0, 2)), resolution=(4, 2))
        >>> grid.shape, grid.centers()[:2].tolist()
        ((4, 2), [[0.5, 0.5], [0.5, 1.5]])
        >>> grid.evaluate(lambda xy: xy[:, 0]).tolist()[0]
        [0.5, 0.5]
        >>> grid.count([[0.2, 0.2], [3.9, 1.9], [3.5, 1.0]])[3].tolist()
        [0, 2]
    """

    x_edges: np.ndarray
    y_edges: np.ndarray

    def __post_init__(self) -> None:
        for name in ("x_edges", "y_edges"):
            edges = np.asarray(getattr(self, name), dtype=np.float64)
            if edges.ndim != 1 or edges.size < 2 or not np.all(np.diff(edges) > 0):
                raise ValueError(f"{name} must be at least 2 strictly increasing values")
            object.__setattr__(self, name, edges)

    @classmethod
    def from_bounds(
        cls,
        bounds: Sequence[Sequence[float]],
        resolution: int | Sequence[int] | None = None,
        cell_size: float | None = None,
    ) -> Grid:
        """Cells covering ``bounds = ((xmin, xmax), (ymin, ymax))``.

        Args:
            bounds: the region.
            resolution: number of cells per axis, an int or ``(nx, ny)``.
            cell_size: alternatively, the side of square cells; the upper bounds are extended
                to a whole number of cells.
        """
        (x0, x1), (y0, y1) = bounds
        if not (x1 > x0 and y1 > y0):
            raise ValueError(
                f"bounds must be ((xmin, xmax), (ymin, ymax)) with min < max; got {bounds}"
            )
        if (resolution is None) == (cell_size is None):
            raise ValueError("give exactly one of resolution and cell_size")
        if cell_size is not None:
            if not cell_size > 0:
                raise ValueError(f"cell_size must be positive; got {cell_size}")
            nx = max(1, math.ceil((x1 - x0) / cell_size - 1e-9))
            ny = max(1, math.ceil((y1 - y0) / cell_size - 1e-9))
            return cls(x0 + cell_size * np.arange(nx + 1), y0 + cell_size * np.arange(ny + 1))
        nx, ny = (resolution, resolution) if np.isscalar(resolution) else resolution
        if int(nx) < 1 or int(ny) < 1:
            raise ValueError(f"resolution must be positive; got {resolution}")
        return cls(np.linspace(x0, x1, int(nx) + 1), np.linspace(y0, y1, int(ny) + 1))

    @property
    def shape(self) -> tuple[int, int]:
        """``(nx, ny)``, the number of cells along each axis."""
        return self.x_edges.size - 1, self.y_edges.size - 1

    def centers(self) -> np.ndarray:
        """Cell centres, shape ``(nx * ny, 2)``, in the order of ``values.reshape(-1)``."""
        xc = 0.5 * (self.x_edges[1:] + self.x_edges[:-1])
        yc = 0.5 * (self.y_edges[1:] + self.y_edges[:-1])
        gx, gy = np.meshgrid(xc, yc, indexing="ij")
        return np.column_stack([gx.ravel(), gy.ravel()])

    def cell_areas(self) -> np.ndarray:
        """Area of each cell, shape ``(nx, ny)``."""
        return np.outer(np.diff(self.x_edges), np.diff(self.y_edges))

    def evaluate(
        self, score_fn: Callable[[np.ndarray], Any], batch_size: int = 65_536
    ) -> np.ndarray:
        """``score_fn`` (a function of an ``(N, 2)`` array, e.g. a log-density) at the cell
        centres, shape ``(nx, ny)``; evaluated in batches, torch outputs accepted."""
        centers = self.centers()
        out = [
            to_numpy(score_fn(centers[i : i + batch_size])).astype(np.float64).reshape(-1)
            for i in range(0, len(centers), batch_size)
        ]
        return np.concatenate(out).reshape(self.shape)

    def count(self, points: Any) -> np.ndarray:
        """Number of ``points`` (shape ``(n, 2)``) in each cell, shape ``(nx, ny)``.

        Cells include their lower edges, and the last cell its upper edge too. Points outside
        the grid are dropped with a warning.
        """
        pts = check_data(points, 2, name="points")
        counts, _, _ = np.histogram2d(pts[:, 0], pts[:, 1], bins=[self.x_edges, self.y_edges])
        outside = len(pts) - int(counts.sum())
        if outside:
            warnings.warn(f"{outside} of {len(pts)} points lie outside the grid", stacklevel=2)
        return counts.astype(np.int64)


def cap_curve(scores: Any, counts: Any, areas: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative accuracy profile of a score map against observed events.

    Cells are ranked by decreasing score; the curve gives, for each share of the area taken
    from the top, the share of events that fall in it. Cells with equal scores are taken
    together, and the curve is linear across them (the average over orders of tied cells), so
    a constant score gives the diagonal.

    Args:
        scores: a score (e.g. predicted density) per cell, any shape.
        counts: number of events per cell, same shape (e.g. from :meth:`Grid.count`).
        areas: area per cell, same shape; default equal areas.

    Returns:
        ``(area_fraction, event_fraction)``, increasing from ``(0, 0)`` to ``(1, 1)``, one point
        per distinct score plus the origin.

    Example:
        >>> a, e = cap_curve([3.0, 2.0, 1.0, 0.0], [2, 1, 1, 0])
        >>> a.tolist(), e.tolist()
        ([0.0, 0.25, 0.5, 0.75, 1.0], [0.0, 0.5, 0.75, 1.0, 1.0])
    """
    s = to_numpy(scores).astype(np.float64).ravel()
    c = to_numpy(counts).astype(np.float64).ravel()
    w = np.ones_like(s) if areas is None else to_numpy(areas).astype(np.float64).ravel()
    if not (s.shape == c.shape == w.shape):
        raise ValueError(
            f"scores, counts and areas must have the same size; got {s.size}, {c.size}, {w.size}"
        )
    if s.size == 0:
        raise ValueError("scores is empty")
    if np.isnan(s).any():
        raise ValueError("scores contains NaN")
    if not np.isfinite(c).all() or (c < 0).any() or c.sum() <= 0:
        raise ValueError("counts must be finite, non-negative and include at least one event")
    if not np.isfinite(w).all() or (w <= 0).any():
        raise ValueError("areas must be finite and positive")
    order = np.argsort(-s, kind="stable")
    s, c, w = s[order], c[order], w[order]
    last_of_tie = np.r_[s[1:] != s[:-1], True]  # -inf scores tie with each other, as wanted
    area = np.r_[0.0, np.cumsum(w)[last_of_tie] / w.sum()]
    events = np.r_[0.0, np.cumsum(c)[last_of_tie] / c.sum()]
    return area, events


def cap_auc(scores: Any, counts: Any, areas: Any = None) -> float:
    """Area under :func:`cap_curve`: 1 for a perfect map, 0.5 for an uninformative one.

    Even a perfect ranking falls short of 1, by at most half the share of area holding events
    (the curve cannot rise faster than the events in each cell allow); with many empty cells
    it is close to 1.

    Example:
        >>> cap_auc([3.0, 2.0, 1.0, 0.0], [2, 1, 1, 0])
        0.6875
        >>> cap_auc([1.0, 1.0, 1.0, 1.0], [2, 1, 1, 0])
        0.5
    """
    area, events = cap_curve(scores, counts, areas)
    return float(np.sum(np.diff(area) * (events[1:] + events[:-1]) / 2.0))


def hit_rate(
    scores: Any,
    counts: Any,
    top: Sequence[float] = (0.01, 0.05, 0.10, 0.15, 0.20),
    areas: Any = None,
) -> dict[float, float]:
    """Share of events in the top-scoring ``top`` share of the area, for each value in ``top``.

    Read from :func:`cap_curve` by linear interpolation, so a fraction that ends inside a cell
    (or inside a group of tied cells) counts that part of its events.

    Example:
        >>> scores = [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]
        >>> counts = [5, 0, 3, 0, 0, 0, 0, 0, 0, 2]
        >>> hit_rate(scores, counts, top=(0.1, 0.3, 0.15))
        {0.1: 0.5, 0.3: 0.8, 0.15: 0.5}
    """
    fractions = np.asarray(top, dtype=np.float64)
    if fractions.ndim != 1 or np.any((fractions < 0) | (fractions > 1)):
        raise ValueError(f"top must be a sequence of shares in [0, 1]; got {top!r}")
    area, events = cap_curve(scores, counts, areas)
    return {
        float(k): float(v)
        for k, v in zip(fractions, np.interp(fractions, area, events), strict=True)
    }
