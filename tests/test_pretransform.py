"""The pre-transform chosen on validation rows (pyroflows.pretransform) and regularised
whitening (pyroflows.preprocess eigen_floor)."""

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

import pyroflows as pf
from pyroflows.preprocess import fit_preprocessor
from pyroflows.pretransform import EIGEN_FLOOR, choose_preprocessor

SMALL = dict(flow="maf", layers=2, hidden=(16,), max_epochs=15, progress=False)


def correlated_gaussian(n, seed=0, rho=0.95, dim=4):
    cov = np.full((dim, dim), rho) + (1 - rho) * np.eye(dim)
    cov *= np.outer(np.arange(1, dim + 1), np.arange(1, dim + 1))  # unequal scales
    mean = np.linspace(-3, 10, dim)
    X = np.random.default_rng(seed).multivariate_normal(mean, cov, size=n)
    return X, multivariate_normal(mean, cov)


def collinear(n, noise, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2)) * [1.0, 3.0]
    return np.column_stack([x, x[:, 0] + x[:, 1] + noise * rng.normal(size=n)])


def test_whitening_is_chosen_where_it_obviously_pays():
    X, _ = correlated_gaussian(1200)
    pre = choose_preprocessor(X[:1000], X[1000:])
    assert pre.choice_["chosen"] == "whiten"
    scores = pre.choice_["scores"]
    # 4-D, rho 0.95: 3.8 nats for one component; mixtures of 8 axis-aligned ones close part
    assert scores["whiten"] > scores["standardise"] + 0.2


def test_standardising_is_kept_for_independent_columns():
    X = np.random.default_rng(1).normal(size=(1200, 3)) * [1.0, 5.0, 0.1]
    pre = choose_preprocessor(X[:1000], X[1000:])
    assert pre.choice_["chosen"] == "standardise"
    L = pre.transforms[0].scale_tril.numpy()
    assert np.array_equal(L, np.diag(np.diag(L)))


def ridge_and_cross(n, seed):
    """Three quarters of the rows on a thin diagonal ridge (whitening aligns it with the axes),
    a quarter on a cross of two thin axis-aligned arms (whitening shears it off the axes); the
    second value marks the cross rows."""
    rng = np.random.default_rng(seed)
    ridge, arms = int(0.75 * n), n - int(0.75 * n)
    t = rng.normal(size=ridge)
    long, thin = rng.normal(size=arms), 0.02 * rng.normal(size=arms)
    first = rng.integers(0, 2, arms)[:, None] == 0
    cross = np.where(first, np.column_stack([long, thin]), np.column_stack([thin, long]))
    X = np.vstack([np.column_stack([t, t + 0.05 * rng.normal(size=ridge)]), cross])
    return X, np.r_[np.zeros(ridge, dtype=bool), np.ones(arms, dtype=bool)]


@pytest.mark.parametrize("seed", [0, 1])
def test_the_choice_follows_the_weights(seed):
    """Unweighted, the ridge dominates and whitening wins; with the ridge rows down-weighted
    1000-fold the weighted fit is of the cross, for which whitening loses: a choice that
    ignored the weights would whiten both times."""
    X, cross = ridge_and_cross(1200, seed)
    X_val, cross_val = ridge_and_cross(600, seed + 100)
    plain = choose_preprocessor(X, X_val)
    assert plain.choice_["chosen"] == "whiten"
    w, w_val = np.where(cross, 1.0, 1e-3), np.where(cross_val, 1.0, 1e-3)
    weighted = choose_preprocessor(X, X_val, weight=w, val_weight=w_val)
    assert weighted.choice_["chosen"] == "standardise"
    scores = weighted.choice_["scores"]
    assert scores["standardise"] > scores["whiten"] + 0.1


def test_equal_weights_are_the_unweighted_choice():
    X, _ = ridge_and_cross(600, 0)
    X_val, _ = ridge_and_cross(300, 1)
    plain = choose_preprocessor(X, X_val).choice_
    equal = choose_preprocessor(X, X_val, weight=np.full(600, 2.0), val_weight=np.ones(300))
    assert equal.choice_["chosen"] == plain["chosen"]
    assert equal.choice_["scores"] == plain["scores"]


def test_the_estimator_chooses_its_pre_transform_with_the_weights():
    X, cross = ridge_and_cross(1200, 0)
    X_val, cross_val = ridge_and_cross(600, 100)
    options = {**SMALL, "max_epochs": 1, "flow": "maf", "random_state": 0}
    est = pf.DensityEstimator(**options).fit(X, X_val)
    assert est.preprocessor_.choice_["chosen"] == "whiten"
    w, w_val = np.where(cross, 1.0, 1e-3), np.where(cross_val, 1.0, 1e-3)
    est.fit(X, X_val, sample_weight=w, val_weight=w_val)
    assert est.preprocessor_.choice_["chosen"] == "standardise"


def test_the_pre_transform_keeps_log_p_in_the_data_units():
    """log N(z; 0, I) + log|dz/dx| of the chosen (whitening) map is the Gaussian density with
    the map's mean and covariance, in the data's units: the Jacobian is included."""
    X, _ = correlated_gaussian(1200)
    pre = choose_preprocessor(X[:1000], X[1000:])
    layer = pre.transforms[0]
    loc, L = layer.loc.numpy(), layer.scale_tril.numpy()
    assert np.allclose(L @ L.T, np.cov(X[:1000].T, bias=True), rtol=1e-8)
    z, ladj = pre.to_latent(torch.as_tensor(X[1000:]))
    ours = -0.5 * (z**2).sum(1).numpy() - X.shape[1] / 2 * np.log(2 * np.pi) + ladj.numpy()
    exact = multivariate_normal(loc, L @ L.T).logpdf(X[1000:])
    np.testing.assert_allclose(ours, exact, rtol=1e-10)


def test_default_estimator_whitens_and_matches_the_exact_density():
    X, truth = correlated_gaussian(1500)
    test, _ = correlated_gaussian(2000, seed=5)
    est = pf.DensityEstimator(**{**SMALL, "max_epochs": 5}).fit(X)
    assert est.preprocessor_.choice_["chosen"] == "whiten"
    gap = np.mean(truth.logpdf(test)) - np.mean(est.score_samples(test))
    assert abs(gap) < 0.05  # the whitened model is near the exact Gaussian


@pytest.mark.parametrize("noise", [1e-9, 0.0], ids=["near-collinear", "exactly-collinear"])
def test_collinear_columns_give_finite_log_likelihoods(noise):
    X = collinear(800, noise)
    with pytest.warns(Warning) if noise == 0.0 else _no_check():
        est = pf.DensityEstimator(**{**SMALL, "max_epochs": 5}).fit(X)
    log_p = est.score_samples(collinear(200, noise, seed=3))
    assert np.isfinite(log_p).all()
    assert np.isfinite(est.sample(100, random_state=0)).all()


def test_eigen_floor_regularises_a_singular_covariance():
    X = collinear(500, 0.0)
    with pytest.raises(ValueError, match="linearly dependent"):
        fit_preprocessor(X, whiten=True)
    pre = fit_preprocessor(X, whiten=True, eigen_floor=EIGEN_FLOOR)
    L = pre.transforms[0].scale_tril.numpy()
    assert np.isfinite(L).all() and (np.diag(L) > 0).all()
    z, ladj = pre.to_latent(torch.as_tensor(X))
    assert torch.isfinite(z).all() and torch.isfinite(ladj).all()
    back = pre.from_latent(z)
    np.testing.assert_allclose(back.numpy(), X, atol=1e-8)


def test_a_whitened_model_reloads_with_the_same_log_likelihoods(tmp_path):
    X, _ = correlated_gaussian(1000)
    est = pf.DensityEstimator(**{**SMALL, "max_epochs": 2}, whiten=True).fit(X)
    path = tmp_path / "m.pt"
    est.save(path)
    again = pf.DensityEstimator.load(path)
    np.testing.assert_allclose(again.score_samples(X[:50]), est.score_samples(X[:50]))


def test_whiten_must_be_true_false_or_auto():
    with pytest.raises(ValueError, match="whiten must be"):
        pf.DensityEstimator(whiten="yes").fit(np.zeros((20, 2)) + np.arange(20)[:, None])


class _no_check:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
