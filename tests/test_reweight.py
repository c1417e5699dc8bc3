"""pf.reweight against exact answers: both densities are known, so the ideal weight
w* = p_ref / p_gen of every generated row is known; after reweighting a fresh classifier can no
longer tell the sets apart; weights are always finite; extreme weights are capped loudly."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

import pyroflows as pf
from pyroflows.classify import Classifier, out_of_fold_proba
from pyroflows.datasets import GaussianMixture, gaussian_mixture
from pyroflows.reweight import calibrate_out_of_fold


def problem(dim):
    """The reference is a two-mode mixture; the generator misplaces, widens and mis-weights
    its modes (an under-fitted flow with an exact density)."""
    reference = gaussian_mixture(dim, n_components=2, gap=3.0)
    generator = GaussianMixture(0.85 * reference.means, 1.15, [0.65, 0.35])
    return reference, generator


def post_auc(gen, weights, fresh_ref):
    """Out-of-fold AUC of a fresh classifier, weighted generated rows vs fresh reference."""
    X = np.concatenate([gen, fresh_ref])
    y = np.r_[np.zeros(len(gen)), np.ones(len(fresh_ref))].astype(int)
    w = np.r_[weights * len(gen) / weights.sum(), np.ones(len(fresh_ref))]
    proba = out_of_fold_proba(Classifier("hgb", max_iter=50), X, y, folds=3, sample_weight=w)
    return roc_auc_score(y, proba, sample_weight=w)


@pytest.mark.parametrize(
    "dim, max_rmse, max_auc",
    [(2, 0.6, 0.52), (4, 0.6, 0.52), (8, 0.7, 0.55)],
    ids=["D2", "D4", "D8"],
)
def test_weights_approach_the_exact_density_ratio(dim, max_rmse, max_auc):
    p, q = problem(dim)
    n = 2000
    ref, gen = p.sample(n, seed=1), q.sample(n, seed=2)
    exact = p.log_prob(gen) - q.log_prob(gen)
    r = pf.reweight(gen, ref, random_state=0)
    assert np.isfinite(r.weights).all() and (r.weights > 0).all()
    rmse = np.sqrt(np.mean((r.log_weights - exact) ** 2))
    assert rmse < max_rmse * exact.std(), (rmse, exact.std())  # most of the spread recovered
    before = post_auc(gen, np.ones(n), p.sample(n, seed=3))
    after = post_auc(gen, r.weights, p.sample(n, seed=3))
    assert after <= max_auc < before, (before, after)
    assert 0.5 < r.ess_fraction <= 1 and r.fraction_clipped == 0


def test_the_default_mlp_follows_a_generator_that_is_too_wide():
    """gen ~ N(0, 1.3^2 I), ref ~ N(0, I) in D = 4: the exact log-weight is quadratic in x,
    which the default MLP (fed the squared inputs too) follows even with one member."""
    rng = np.random.default_rng(0)
    dim, n, scale = 4, 2000, 1.3
    gen, ref = rng.normal(0, scale, (n, dim)), rng.normal(0, 1, (n, dim))
    exact = -0.5 * (gen**2).sum(1) * (1 - scale**-2) + dim * np.log(scale)
    r = pf.reweight(gen, ref, ensemble=1, random_state=0)
    rmse = np.sqrt(np.mean((r.log_weights - exact) ** 2))
    assert rmse < 0.3, (rmse, exact.std())  # 0.25; without the squares 0.33


def test_unequal_class_sizes_are_corrected():
    rng = np.random.default_rng(0)
    gen, ref = rng.normal(0, 1, (3000, 1)), rng.normal(0, 1, (1000, 1))
    r = pf.reweight(gen, ref, classifier="hgb")
    assert abs(r.weights.mean() - 1) < 0.05
    assert np.abs(np.log(r.weights)).max() < 0.6  # same distribution: weights near 1


def test_extreme_weights_are_capped_and_announced():
    rng = np.random.default_rng(0)
    gen, ref = rng.normal(0, 1, (1000, 1)), rng.normal(3, 1, (1000, 1))
    with pytest.warns(UserWarning, match="capped at max_weight=5"):
        r = pf.reweight(gen, ref, classifier="hgb", max_weight=5.0)
    assert r.fraction_clipped > 0 and r.weights.max() == 5.0 and np.isfinite(r.weights).all()
    assert "capped at 5" in r.summary()
    unc = pf.reweight(gen, ref, classifier="hgb", max_weight=None)
    assert np.isfinite(unc.weights).all() and unc.fraction_clipped == 0


@pytest.mark.parametrize("method", ["none", "platt", "isotonic"])
def test_calibrated_log_odds_are_finite_even_for_certain_probabilities(method):
    y = np.r_[np.zeros(50), np.ones(50)].astype(int)
    z = calibrate_out_of_fold(y.astype(float), y, method)  # probabilities exactly 0 and 1
    assert np.isfinite(z).all() and (z[y == 1] > z[y == 0].max()).all()


def test_resample_follows_the_weights():
    x = np.arange(3.0)[:, None]
    draws = pf.resample(x, [1.0, 0.0, 3.0], n=4000, seed=0)
    assert set(np.unique(draws)) == {0.0, 2.0} and abs((draws == 2).mean() - 0.75) < 0.03
    assert len(pf.resample(x, [1.0, 1.0, 2.0], seed=1)) == 2  # default n: the ESS, rounded down


@pytest.mark.parametrize(
    "kwargs, match",
    [({"calibration": "beta"}, "calibration"), ({"max_weight": 0.0}, "max_weight"),
     ({"classifier": "svm"}, "classifier")],
    ids=["calibration", "max_weight", "classifier"],
)  # fmt: skip
def test_bad_arguments_are_refused(kwargs, match):
    x = np.random.default_rng(0).normal(size=(40, 2))
    with pytest.raises(ValueError, match=match):
        pf.reweight(x, x + 1, **kwargs)


def test_an_ensemble_size_for_a_given_classifier_is_refused_not_ignored():
    x = np.random.default_rng(0).normal(size=(40, 2))
    with pytest.raises(ValueError, match="ensemble"):
        pf.reweight(x, x + 1, classifier=Classifier("hgb", max_iter=5), ensemble=3)


def test_bad_data_and_weights_are_refused():
    x = np.random.default_rng(0).normal(size=(40, 2))
    with pytest.raises(ValueError):
        pf.reweight(x, np.full((40, 2), np.nan))
    with pytest.raises(ValueError, match="generated has 6 row.*at least 10"):
        pf.reweight(x[:6], x[:20] + 1, classifier="hgb")  # was scikit-learn's inner-split error
    with pytest.raises(ValueError, match="one weight per sample"):
        pf.resample(x, np.ones(3))
    with pytest.raises(ValueError, match="finite"):
        pf.resample(x, np.r_[np.ones(39), np.inf])
