"""The classifier metric (pyroflows.diagnostics.c2st) against analytic answers: the AUC and the
Jensen-Shannon divergence of N(0, I) vs N(delta 1, I), the null check, the interval, the
permutation p-value and the weight histogram."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
from scipy.stats import norm

from pyroflows import diagnostics as D
from pyroflows.classify import Classifier
from pyroflows.diagnostics.two_sample import _grouped_auc


def shifted_gaussians(n, dim, delta, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, dim)), rng.normal(delta, 1, (n, dim))


def exact_jsd_bits(separation):
    """JSD (bits) of N(0, 1) and N(s, 1) in one dimension: the Bayes projection of the D-dim
    problem, since the JSD is invariant under the sufficient statistic."""
    x = np.linspace(-12, 12 + separation, 200_001)
    p, q = norm.pdf(x), norm.pdf(x, separation)
    m = (p + q) / 2
    kl = lambda a: np.trapezoid(a * np.log2(np.where(a > 0, a / m, 1)), x)  # noqa: E731
    return 0.5 * kl(p) + 0.5 * kl(q)


# a smooth classifier: gradient boosting under-estimates this weak linear signal at n = 10 000
MLP = Classifier("mlp", hidden=(32,), batch_size=512, lr=3e-3, max_epochs=60, patience=5)


@pytest.fixture(scope="module")
def separated():
    dim, delta = 10, 0.15
    X, Y = shifted_gaussians(10_000, dim, delta)
    return dim, delta, D.c2st(X, Y, MLP, folds=3, permutations=49, null=True)


def test_auc_recovers_the_analytic_value(separated):
    dim, delta, r = separated
    exact = norm.cdf(delta * np.sqrt(dim) / np.sqrt(2))  # 0.6314
    assert abs(r.auc - exact) < 0.015, (r.auc, exact)  # +-0.005 at n = 100 000 in the benchmark
    lo, hi = r.auc_interval
    assert lo < r.auc_calibrated < hi and hi - lo < 0.03
    assert lo - 0.01 < exact < hi + 0.01


def test_jsd_recovers_the_analytic_value(separated):
    dim, delta, r = separated
    exact = exact_jsd_bits(delta * np.sqrt(dim))
    assert abs(r.jsd - exact) < 0.015, (r.jsd, exact)


def test_null_check_and_p_values(separated):
    _, _, r = separated
    assert r.p_value == pytest.approx(1 / 50)  # no permutation reaches the observed AUC
    assert abs(r.null_auc - 0.5) < 0.02 and r.null_interval[0] < 0.5 < r.null_interval[1] + 0.01
    X, Y = shifted_gaussians(2000, 2, 0.0, seed=1)
    same = D.c2st(X, Y, "logistic", permutations=99)
    assert same.p_value > 0.05 and abs(same.jsd) < 0.01


def test_weights_and_their_histogram(separated):
    _, _, r = separated
    assert r.weights.shape == (r.n_per_set,) and np.isfinite(r.weights).all()
    assert abs(np.mean(r.weights) - 1) < 0.05  # E_X[p_Y / p_X] = 1
    ax = D.plot_weight_histogram(r, label="hgb")
    assert ax.get_xscale() == "log" and "ESS/n" in ax.get_legend().get_texts()[0].get_text()
    with pytest.raises(ValueError, match="1 of 2 weights are NaN"):
        D.plot_weight_histogram(np.array([np.nan, 0.0]))
    with pytest.raises(ValueError, match="no finite positive"):
        D.plot_weight_histogram(np.zeros(3))


def test_weight_histogram_counts_zero_weights_in_the_ess():
    """Half the rows at weight 0, half at 1: ESS / n is 0.5 (the old legend said 1.00, as it
    dropped the zeros before computing it)."""
    ax = D.plot_weight_histogram(np.repeat([0.0, 1.0], 50))
    assert ax.get_legend().get_texts()[0].get_text() == "ESS/n 0.50, 50 zero weights not shown"


def test_grouped_auc_matches_scikit_learn_with_ties_and_multiplicities():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    score, y = rng.integers(0, 5, 300).astype(float), rng.integers(0, 2, 300)
    counts = rng.integers(0, 3, 300).astype(float)
    _, group = np.unique(score, return_inverse=True)
    expected = roc_auc_score(y, score, sample_weight=counts)
    assert _grouped_auc(group, group.max() + 1, y, counts) == pytest.approx(expected)


def test_the_classic_fields_do_not_change_with_the_new_options():
    X, Y = shifted_gaussians(300, 2, 0.3, seed=2)
    plain = D.c2st(X, Y, "logistic", n_bootstrap=0)
    full = D.c2st(X, Y, "logistic", permutations=19, null=True, calibration="isotonic")
    assert (plain.accuracy, plain.auc, plain.accuracy_std) == (
        full.accuracy, full.auc, full.accuracy_std
    )  # fmt: skip
    assert np.isnan(plain.auc_interval[0]) and np.isnan(plain.p_value)
    with pytest.raises(ValueError, match="level"):
        D.c2st(X, Y, "logistic", level=1.5)


def test_x_weight_turns_a_shifted_sample_into_the_reference():
    # X ~ N(1, 1), Y ~ N(0, 1); the exact ratio p_Y / p_X = exp(1/2 - x) makes X follow Y
    rng = np.random.default_rng(3)
    X, Y = rng.normal(1.0, 1.0, (6000, 1)), rng.normal(0.0, 1.0, (6000, 1))
    exact = np.exp(0.5 - X[:, 0])
    plain = D.c2st(X, Y, "hgb", folds=3, n_bootstrap=100)
    weighted = D.c2st(X, Y, "hgb", folds=3, n_bootstrap=100, x_weight=exact)
    assert abs(plain.auc - norm.cdf(1 / np.sqrt(2))) < 0.02  # analytic 0.760
    assert abs(weighted.auc - 0.5) < 0.03 and abs(weighted.auc_calibrated - 0.5) < 0.03
    lo, hi = weighted.auc_interval
    assert lo < weighted.auc_calibrated < hi and lo < 0.52 and hi > 0.48
    assert abs(weighted.jsd) < 0.01 < plain.jsd


def test_unit_x_weight_changes_nothing():
    X, Y = shifted_gaussians(400, 2, 0.4, seed=4)
    plain = D.c2st(X, Y, "hgb", folds=3, n_bootstrap=20)
    ones = D.c2st(X, Y, "hgb", folds=3, n_bootstrap=20, x_weight=np.full(400, 3.0))
    assert (plain.accuracy, plain.auc) == (ones.accuracy, ones.auc)
    assert plain.auc_interval == pytest.approx(ones.auc_interval)
    assert plain.jsd == pytest.approx(ones.jsd, abs=1e-9)


def test_x_weight_is_checked_before_any_fit():
    X, Y = shifted_gaussians(100, 2, 0.0, seed=5)
    for bad, message in [
        (np.ones(99), "one finite, non-negative weight per row of X"),
        (np.r_[-1.0, np.ones(99)], "non-negative"),
        (np.r_[np.nan, np.ones(99)], "finite"),
        (np.zeros(100), "not all 0"),
    ]:
        with pytest.raises(ValueError, match=message):
            D.c2st(X, Y, "hgb", x_weight=bad)
    with pytest.raises(ValueError, match="x_weight needs classifier='hgb'"):
        D.c2st(X, Y, "logistic", x_weight=np.ones(100))
    with pytest.raises(ValueError, match="permutations"):
        D.c2st(X, Y, "hgb", x_weight=np.ones(100), permutations=9)
