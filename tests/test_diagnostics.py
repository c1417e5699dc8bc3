"""Diagnostics against analytic answers: KL, test log-likelihood, C2ST, sampling quality, CAP."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from pyroflows import diagnostics as D
from pyroflows.diagnostics import Grid, test_log_likelihood


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Small scikit-learn fits are far slower with OpenMP/BLAS threads on a busy 2-core machine.
    with threadpool_limits(1):
        yield


# -- KL and log-likelihood --------------------------------------------------------------------
def test_gaussian_kl_matches_univariate_formula():
    s1, m, s2 = 0.7, 1.3, 2.1
    exact = math.log(s2 / s1) + (s1**2 + m**2) / (2 * s2**2) - 0.5
    assert D.gaussian_kl([0.0], [[s1**2]], [m], [[s2**2]]) == pytest.approx(exact, rel=1e-12)
    assert D.gaussian_kl(np.zeros(3), np.eye(3), np.zeros(3), np.eye(3)) == pytest.approx(0.0)


def test_kl_monte_carlo_agrees_with_closed_form_within_3_se():
    rng = np.random.default_rng(0)
    mean_p, mean_q = np.array([0.0, 1.0, -1.0]), np.array([0.5, 0.0, -1.0])
    a = rng.normal(size=(3, 3))
    cov_p = a @ a.T + np.eye(3)
    cov_q = np.diag([2.0, 1.0, 3.0])
    p, q = stats.multivariate_normal(mean_p, cov_p), stats.multivariate_normal(mean_q, cov_q)
    x = p.rvs(20_000, random_state=rng)
    est, se = D.kl_monte_carlo(p.logpdf, q.logpdf, x)
    exact = D.gaussian_kl(mean_p, cov_p, mean_q, cov_q)
    assert 0 < se < 0.05
    assert abs(est - exact) < 3 * se
    # the same from precomputed arrays, as torch tensors
    again = D.kl_monte_carlo(torch.from_numpy(p.logpdf(x)), torch.from_numpy(q.logpdf(x)))
    assert again == pytest.approx((est, se))


def test_kl_monte_carlo_edge_cases():
    lp = np.array([-1.0, -2.0, -0.5])
    assert tuple(D.kl_monte_carlo(lp, lp)) == (0.0, 0.0)
    value, se = D.kl_monte_carlo(lp, np.array([-1.0, -np.inf, -0.5]))
    assert value == math.inf and se == math.inf
    with pytest.raises(ValueError, match="x .draws from p. is needed"):
        D.kl_monte_carlo(lambda x: x, lp)
    with pytest.raises(ValueError, match="differ in shape"):
        D.kl_monte_carlo(lp, lp[:2])
    with pytest.raises(ValueError, match="log_q contains NaN"):
        D.kl_monte_carlo(lp, np.array([0.0, np.nan, 0.0]))


def test_test_log_likelihood_standard_error_formula():
    values = np.random.default_rng(1).normal(-3.0, 2.0, size=400)
    mean, se = test_log_likelihood(values)
    assert mean == pytest.approx(values.mean())
    assert se == pytest.approx(values.std(ddof=1) / math.sqrt(values.size))
    assert se == pytest.approx(stats.sem(values))
    assert test_log_likelihood(torch.tensor(values)) == pytest.approx((mean, se))
    assert str(test_log_likelihood([-1.0, -3.0])) == "-2 ± 1"


@pytest.mark.parametrize(
    "bad, message",
    [([1.0], "at least 2"), ([[1.0, 2.0]], "must be 1-D"), ([1.0, np.nan], "contains NaN")],
    ids=["one value", "2-D", "NaN"],
)
def test_test_log_likelihood_rejects_bad_input(bad, message):
    with pytest.raises(ValueError, match=message):
        test_log_likelihood(bad)


# -- classifier two-sample test ---------------------------------------------------------------
@pytest.mark.parametrize("classifier", ["logistic", "rf"])
def test_c2st_is_chance_for_identical_distributions(classifier):
    rng = np.random.default_rng(2)
    result = D.c2st(rng.normal(size=(1000, 3)), rng.normal(size=(1000, 3)), classifier)
    assert abs(result.accuracy - 0.5) < 0.05
    assert abs(result.auc - 0.5) < 0.06
    assert 0 <= result.accuracy_std < 0.1


def test_c2st_mlp_separates_distant_distributions_and_balances_sizes():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(500, 2))
    Y = rng.normal(size=(300, 2)) + np.array([5.0, 0.0])
    result = D.c2st(X, Y, classifier="mlp", folds=3)
    assert result.accuracy > 0.98 and result.auc > 0.99
    assert result.n_per_set == 300


def test_c2st_accepts_estimators_without_modifying_them():
    rng = np.random.default_rng(4)
    model = LogisticRegression(C=0.5)
    X, Y = rng.normal(size=(200, 2)), torch.randn(200, 2, dtype=torch.float64) + 3.0
    assert D.c2st(X, Y, classifier=model).accuracy > 0.9
    assert not hasattr(model, "coef_")  # cloned, never fitted in place


def test_c2st_rejects_mismatched_inputs():
    rng = np.random.default_rng(5)
    with pytest.raises(ValueError, match="Y has 3 features"):
        D.c2st(rng.normal(size=(50, 2)), rng.normal(size=(50, 3)))
    with pytest.raises(ValueError, match="unknown classifier 'svm'"):
        D.c2st(rng.normal(size=(50, 2)), rng.normal(size=(50, 2)), classifier="svm")
    with pytest.raises(ValueError, match="at least 5"):
        D.c2st(rng.normal(size=(4, 2)), rng.normal(size=(50, 2)))


# -- sampling quality -------------------------------------------------------------------------
def _disc_and_ring(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Class 0 uniform in radius on [0, 1], class 1 on [1, 2]: separable, non-linear."""
    y = rng.integers(0, 2, n)
    radius = np.where(y == 0, rng.uniform(0, 1, n), rng.uniform(1, 2, n))
    angle = rng.uniform(0, 2 * np.pi, n)
    return np.column_stack([radius * np.cos(angle), radius * np.sin(angle)]), y


def test_sampling_quality_orders_good_and_useless_generators():
    rng = np.random.default_rng(0)
    (Xa, ya), (Xs, ys), (Xt, yt) = (_disc_and_ring(n, rng) for n in (30, 1000, 1000))
    good = D.sampling_quality(Xa, ya, Xs, ys, Xt, yt, classifier="rf")
    useless = D.sampling_quality(Xa, ya, Xs, rng.integers(0, 2, len(ys)), Xt, yt, "rf")
    # a perfect generator with many draws beats 30 genuine rows; random labels are chance
    assert good.synthetic.accuracy > good.genuine.accuracy + 0.03
    assert good.augmented.accuracy > good.genuine.accuracy + 0.03
    assert abs(useless.synthetic.accuracy - 0.5) < 0.06
    assert useless.synthetic.accuracy < good.genuine.accuracy < good.synthetic.accuracy
    assert useless.genuine == good.genuine  # same genuine data, same seed
    assert set(good.to_dict()["augmented"]) == {"accuracy", "balanced_accuracy"}


def test_sampling_quality_balanced_accuracy_of_a_one_class_generator():
    rng = np.random.default_rng(1)
    (Xa, ya), (Xt, yt) = _disc_and_ring(100, rng), _disc_and_ring(400, rng)
    Xs = rng.normal(size=(50, 2))
    result = D.sampling_quality(Xa, ya, Xs, np.zeros(50, dtype=int), Xt, yt, "rf")
    # trained on one class it always predicts it: accuracy = that class's share, balanced = 0.5
    assert result.synthetic.accuracy == pytest.approx(np.mean(yt == 0))
    assert result.synthetic.balanced_accuracy == pytest.approx(0.5)


def test_sampling_quality_checks_labels():
    rng = np.random.default_rng(2)
    X, y = _disc_and_ring(20, rng)
    with pytest.raises(ValueError, match="synthetic_y must be 1-D with one label per row"):
        D.sampling_quality(X, y, X, y[:-1], X, y)
    with pytest.raises(ValueError, match="test_X has 3 features"):
        D.sampling_quality(X, y, X, y, np.zeros((5, 3)), y[:5])


# -- cumulative accuracy profile --------------------------------------------------------------
def test_grid_cells_centres_and_counts():
    grid = Grid.from_bounds(((0.0, 2.0), (0.0, 1.0)), resolution=(2, 1))
    assert grid.shape == (2, 1)
    np.testing.assert_allclose(grid.centers(), [[0.5, 0.5], [1.5, 0.5]])
    np.testing.assert_allclose(grid.cell_areas(), [[1.0], [1.0]])
    np.testing.assert_array_equal(grid.count([[0.1, 0.1], [1.0, 0.5], [2.0, 1.0]]), [[1], [2]])
    with pytest.warns(UserWarning, match="1 of 2 points lie outside"):
        np.testing.assert_array_equal(grid.count([[0.5, 0.5], [5.0, 0.5]]), [[1], [0]])
    # a torch-valued score function, evaluated in small batches
    values = grid.evaluate(lambda xy: torch.from_numpy(xy).sum(-1), batch_size=1)
    np.testing.assert_allclose(values, [[1.0], [2.0]])


def test_grid_from_cell_size_covers_the_bounds():
    grid = Grid.from_bounds(((0.0, 1.0), (10.0, 10.25)), cell_size=0.3)
    assert grid.shape == (4, 1)
    assert grid.x_edges[-1] >= 1.0 and grid.y_edges[-1] >= 10.25
    np.testing.assert_allclose(np.diff(grid.x_edges), 0.3)
    with pytest.raises(ValueError, match="exactly one of resolution and cell_size"):
        Grid.from_bounds(((0, 1), (0, 1)))
    with pytest.raises(ValueError, match="min < max"):
        Grid.from_bounds(((1, 0), (0, 1)), resolution=3)


def test_cap_curve_on_a_hand_built_grid():
    # 2 x 2 cells on [0, 2]^2 scored by x + 2y at the centres:
    # (0.5, 0.5) -> 1.5, (0.5, 1.5) -> 3.5, (1.5, 0.5) -> 2.5, (1.5, 1.5) -> 4.5
    grid = Grid.from_bounds(((0, 2), (0, 2)), resolution=2)
    scores = grid.evaluate(lambda xy: xy[:, 0] + 2 * xy[:, 1])
    np.testing.assert_allclose(scores, [[1.5, 3.5], [2.5, 4.5]])
    events = [[0.2, 0.2], [0.3, 0.4], [0.5, 1.5], [1.5, 0.5], [1.7, 1.8], [0.1, 0.9]]
    counts = grid.count(events)
    np.testing.assert_array_equal(counts, [[3, 1], [1, 1]])
    area, hits = D.cap_curve(scores, counts)
    # ranked cells: 4.5 (1 event), 3.5 (1), 2.5 (1), 1.5 (3)
    np.testing.assert_allclose(area, [0, 0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(hits, [0, 1 / 6, 2 / 6, 3 / 6, 1.0])
    expected_auc = 0.25 * (0 + 1 / 6 + 1 / 6 + 2 / 6 + 2 / 6 + 3 / 6 + 3 / 6 + 1) / 2
    assert D.cap_auc(scores, counts) == pytest.approx(expected_auc)


def test_cap_ties_are_taken_together_and_areas_weight_cells():
    area, hits = D.cap_curve([2.0, 1.0, 1.0, 1.0], [0, 3, 0, 0])
    np.testing.assert_allclose(area, [0, 0.25, 1.0])
    np.testing.assert_allclose(hits, [0, 0, 1.0])
    area, hits = D.cap_curve([2.0, 1.0], [1, 1], areas=[3.0, 1.0])
    np.testing.assert_allclose(area, [0, 0.75, 1.0])
    np.testing.assert_allclose(hits, [0, 0.5, 1.0])


def test_cap_auc_perfect_constant_random_and_reversed_maps():
    rng = np.random.default_rng(0)
    grid = Grid.from_bounds(((-4, 4), (-4, 4)), resolution=60)
    events = rng.normal(scale=0.5, size=(2000, 2))
    counts = grid.count(events)
    density = grid.evaluate(lambda xy: stats.multivariate_normal(cov=0.25 * np.eye(2)).logpdf(xy))
    occupied = np.mean(counts > 0)
    perfect = D.cap_auc(counts, counts)
    assert perfect >= 1 - occupied / 2 and perfect > 0.95
    assert D.cap_auc(density, counts) > 0.95
    assert D.cap_auc(np.ones(grid.shape), counts) == pytest.approx(0.5)
    assert abs(D.cap_auc(rng.uniform(size=grid.shape), counts) - 0.5) < 0.05
    assert D.cap_auc(-density, counts) < 0.1


def test_hit_rate_hand_computed():
    # 20 cells with 10 events: the best cell holds 4, the 2nd 0, the 3rd 3, the 4th 1,
    # and two events sit in cells ranked last
    scores = np.arange(20, 0, -1, dtype=float)
    counts = np.zeros(20)
    counts[[0, 2, 3, 18, 19]] = [4, 3, 1, 1, 1]
    rates = D.hit_rate(scores, counts)
    assert list(rates) == [0.01, 0.05, 0.10, 0.15, 0.20]
    # top 1% = a fifth of the first cell; 5% = cell 1; 10% = cells 1-2; 15% = 1-3; 20% = 1-4
    assert rates == pytest.approx({0.01: 0.08, 0.05: 0.4, 0.10: 0.4, 0.15: 0.7, 0.20: 0.8})
    # tied cells share their events in proportion to the area taken
    assert D.hit_rate([1.0, 1.0], [2, 0], top=(0.5,)) == {0.5: 0.5}


@pytest.mark.parametrize(
    "args, message",
    [
        (([1.0, 2.0], [1, 2, 3]), "same size"),
        (([1.0, np.nan], [1, 1]), "scores contains NaN"),
        (([1.0, 2.0], [0, 0]), "at least one event"),
        (([1.0, 2.0], [1, -1]), "non-negative"),
    ],
    ids=["sizes", "NaN score", "no events", "negative count"],
)
def test_cap_curve_rejects_bad_input(args, message):
    with pytest.raises(ValueError, match=message):
        D.cap_curve(*args)


def test_hit_rate_rejects_shares_outside_unit_interval():
    with pytest.raises(ValueError, match="shares in"):
        D.hit_rate([1.0, 2.0], [1, 1], top=(0.5, 1.5))
