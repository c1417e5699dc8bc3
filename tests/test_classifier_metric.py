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
    with pytest.raises(ValueError, match="no finite positive"):
        D.plot_weight_histogram(np.array([np.nan, 0.0]))


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
