"""Baseline density estimators: exact answers, normalisation, units, model choice, bad input."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from threadpoolctl import threadpool_limits

from pyroflows.baselines import GaussianDensity, GMMDensity, KDEDensity
from pyroflows.validation import check_data

from conftest import flip_a_byte_inside_the_largest_tensor

# Small, fast settings for each estimator, keyed by a readable id.
ESTIMATORS = {
    "gaussian": lambda: GaussianDensity(),
    "kde": lambda: KDEDensity(bandwidths=np.logspace(-1, 0, 5), cv=3),
    "gmm": lambda: GMMDensity(max_components=3),
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Small scikit-learn fits are far slower with OpenMP/BLAS threads on a busy 2-core machine.
    with threadpool_limits(1):
        yield


def _correlated(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 2)) @ np.array([[2.0, 0.0], [1.2, 0.5]]) + np.array([1.0, -3.0])


def _three_clusters(n_per: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = [(-6.0, 0.0), (6.0, 0.0), (0.0, 8.0)]
    return np.concatenate([rng.normal(c, 1.0, (n_per, 2)) for c in centres])


# -- Gaussian ---------------------------------------------------------------------------------
def test_gaussian_matches_scipy_with_mle_parameters():
    X = _correlated(400)
    model = GaussianDensity().fit(X)
    mean, cov = X.mean(axis=0), np.cov(X, rowvar=False, bias=True)
    Xt = _correlated(50, seed=1)
    expected = stats.multivariate_normal(mean, cov).logpdf(Xt)
    np.testing.assert_allclose(model.score_samples(Xt), expected, rtol=1e-10)
    assert model.score(Xt) == pytest.approx(expected.mean())
    np.testing.assert_allclose(model.covariance_, cov, rtol=1e-12)


def test_gaussian_samples_have_the_fitted_moments_and_are_reproducible():
    model = GaussianDensity().fit(_correlated(300))
    draws = model.sample(20_000, random_state=0)
    assert draws.shape == (20_000, 2)
    np.testing.assert_allclose(draws.mean(axis=0), model.mean_, atol=0.05)
    np.testing.assert_allclose(np.cov(draws, rowvar=False), model.covariance_, atol=0.1)
    np.testing.assert_array_equal(model.sample(5, random_state=3), model.sample(5, random_state=3))


def test_gaussian_singular_covariance_is_explained():
    X = np.column_stack([np.arange(10.0), 2 * np.arange(10.0)])
    with pytest.raises(ValueError, match="covariance of X is singular"):
        GaussianDensity().fit(X)
    assert np.isfinite(GaussianDensity(reg_covar=1e-3).fit(X).score(X))


# -- KDE --------------------------------------------------------------------------------------
def _quadrature(model, lo: float, hi: float, n: int = 200) -> float:
    edges = np.linspace(lo, hi, n + 1)
    centres = 0.5 * (edges[1:] + edges[:-1])
    gx, gy = np.meshgrid(centres, centres, indexing="ij")
    log_p = model.score_samples(np.column_stack([gx.ravel(), gy.ravel()]))
    return float(np.exp(log_p).sum() * (edges[1] - edges[0]) ** 2)


def test_kde_integrates_to_one():
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(-1.5, 0.5, (150, 2)), rng.normal(1.5, 1.0, (150, 2))])
    model = KDEDensity().fit(X)
    assert 0.02 < model.bandwidth_ < 2.0
    assert _quadrature(model, -7.0, 7.0) == pytest.approx(1.0, abs=1e-3)


def test_kde_log_density_is_in_the_units_of_the_data():
    X, Xt = _correlated(200), _correlated(20, seed=1)
    small, large = KDEDensity().fit(X), KDEDensity().fit(10.0 * X)
    assert large.bandwidth_ == pytest.approx(small.bandwidth_)
    shift = -X.shape[1] * math.log(10.0)
    np.testing.assert_allclose(large.score_samples(10.0 * Xt), small.score_samples(Xt) + shift)


def test_kde_validation_set_and_edge_warning():
    X, X_val = _correlated(200), _correlated(100, seed=1)
    model = KDEDensity().fit(X, X_val=X_val)
    assert model.bandwidth_ in model.cv_results_["param_bandwidth"]
    assert len(model.cv_results_["mean_test_score"]) == 30
    with pytest.warns(UserWarning, match="edge of the grid"):
        KDEDensity(bandwidths=[1e-3, 2e-3]).fit(X)
    with pytest.raises(ValueError, match="bandwidths must be positive"):
        KDEDensity(bandwidths=[0.1, -1.0]).fit(X)
    with pytest.raises(ValueError, match="5-fold bandwidth selection needs at least 5"):
        KDEDensity().fit(X[:4])
    draws = model.sample(1000, random_state=0)
    np.testing.assert_allclose(draws.mean(axis=0), X.mean(axis=0), atol=0.25)


# -- GMM --------------------------------------------------------------------------------------
def test_gmm_recovers_three_clusters():
    model = GMMDensity(max_components=6).fit(_three_clusters(200))
    assert model.n_components_ == 3
    assert sorted(model.validation_scores_) == [1, 2, 3, 4, 5, 6]
    np.testing.assert_allclose(
        sorted(model.gmm_.means_.tolist()), [[-6, 0], [0, 8], [6, 0]], atol=0.3
    )


def test_gmm_with_validation_set_and_fixed_number_of_components():
    X, X_val = _three_clusters(150), _three_clusters(50, seed=1)
    chosen = GMMDensity(n_components=[1, 3, 5]).fit(X, X_val=X_val)
    assert chosen.n_components_ == 3 and set(chosen.validation_scores_) == {1, 3, 5}
    fixed = GMMDensity(n_components=2).fit(X)
    assert fixed.n_components_ == 2 and fixed.validation_scores_ == {}
    with pytest.raises(ValueError, match="positive integers"):
        GMMDensity(n_components=[0, 2]).fit(X)


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_gmm_samples_are_shuffled_and_match_the_mixture(covariance_type):
    model = GMMDensity(n_components=3, covariance_type=covariance_type).fit(_three_clusters(200))
    draws = model.sample(3000, random_state=0)
    gmm = model.gmm_
    mixture_mean = gmm.weights_ @ gmm.means_
    np.testing.assert_allclose(draws.mean(axis=0), mixture_mean, atol=0.3)
    labels = gmm.predict(draws)
    assert len(set(labels[:30])) == 3  # not grouped by component
    assert np.isfinite(model.score_samples(draws)).all()


# -- API shared by every estimator ------------------------------------------------------------
@pytest.mark.parametrize("make", ESTIMATORS.values(), ids=ESTIMATORS.keys())
def test_api_accepts_torch_and_pandas_and_clones(make):
    X = _correlated(120)
    model = make().fit(torch.from_numpy(X))
    frame = pd.DataFrame(X[:7], columns=["a", "b"])
    np.testing.assert_allclose(model.score_samples(frame), model.score_samples(X[:7]))
    assert model.score_samples(X[:1]).shape == (1,)  # one row is fine when scoring
    assert model.sample(4, random_state=0).shape == (4, 2)
    fresh = clone(model)
    assert fresh.get_params().keys() == model.get_params().keys()
    assert not hasattr(fresh, "n_features_in_")
    with pytest.raises(NotFittedError):
        make().score_samples(X)
    with pytest.raises(ValueError, match="n must be a positive integer"):
        model.sample(0)


BAD_FIT = {
    "NaN": (np.array([[0.0, 1.0], [np.nan, 2.0], [1.0, 3.0]]), r"X contains NaN or infinite"),
    "inf": (np.array([[0.0, 1.0], [1.0, np.inf], [1.0, 3.0]]), r"row 1, column 1"),
    "empty": (np.zeros((0, 2)), r"X is empty"),
    "one row": (np.ones((1, 2)), r"X has 1 row\(s\); at least 2"),
    "1-D": (np.arange(5.0), r"2-D array .* got a 1-D array .*reshape\(-1, 1\)"),
    "3-D": (np.zeros((4, 2, 2)), r"got a 3-D array"),
    "constant column": (np.column_stack([np.arange(6.0), np.full(6, 3.0)]), r"column 1 is const"),
    "text": (np.array([["a", "b"], ["c", "d"]]), r"X must be numeric"),
}


@pytest.mark.parametrize("make", ESTIMATORS.values(), ids=ESTIMATORS.keys())
@pytest.mark.parametrize("bad, message", BAD_FIT.values(), ids=BAD_FIT.keys())
def test_fit_rejects_bad_data_and_keeps_the_fitted_state(make, bad, message):
    X = _correlated(60)
    model = make().fit(X)
    before = model.score_samples(X[:5])
    state = dict(vars(model))
    with pytest.raises(ValueError, match=message):
        model.fit(bad)
    assert vars(model).keys() == state.keys()
    assert all(vars(model)[k] is v for k, v in state.items())
    np.testing.assert_array_equal(model.score_samples(X[:5]), before)


@pytest.mark.parametrize("make", ESTIMATORS.values(), ids=ESTIMATORS.keys())
def test_scoring_and_validation_data_need_the_fitted_columns(make):
    X = _correlated(60)
    model = make().fit(X)
    state = dict(vars(model))
    with pytest.raises(ValueError, match="X has 3 features .columns., expected 2"):
        model.score_samples(np.zeros((4, 3)))
    with pytest.raises(ValueError, match="X contains NaN"):
        model.score(np.array([[np.nan, 0.0]]))
    with pytest.raises(ValueError, match="X_val has 1 features"):
        model.fit(X, X_val=np.zeros((5, 1)))
    assert all(vars(model)[k] is v for k, v in state.items())


def test_check_data_conversions_and_messages():
    out = check_data(torch.ones(3, 2, dtype=torch.float32))
    assert out.dtype == np.float64 and out.flags.c_contiguous
    assert check_data([[True, False], [False, True]]).dtype == np.float64
    with pytest.raises(ValueError, match=r"Z columns \[0, 2\] are constant"):
        check_data(np.array([[1.0, 0.0, 2.0], [1.0, 1.0, 2.0]]), name="Z", check_variance=True)
    with pytest.raises(ValueError, match="must be real-valued"):
        check_data(np.ones((2, 2), dtype=complex))
    with pytest.raises(ValueError, match="X has 2 row.s.; at least 3"):
        check_data(np.ones((2, 2)), min_samples=3)


# -- issue 7: one estimator contract (save/load for every estimator) ---------------------------
@pytest.mark.parametrize("make", ESTIMATORS.values(), ids=ESTIMATORS.keys())
def test_save_and_load_reproduce_scores_and_samples(make, tmp_path):
    rng = np.random.default_rng(3)
    X = np.concatenate([rng.normal(-1, 1, (150, 2)), rng.normal(1, 0.5, (150, 2))]) + 1e6
    model = make().fit(X)
    path = tmp_path / "model.pt"
    model.save(path)
    blob = torch.load(path, weights_only=True)
    assert blob["format"] == f"pyroflows.{type(model).__name__}"
    loaded = type(model).load(path)
    np.testing.assert_array_equal(loaded.score_samples(X[:20]), model.score_samples(X[:20]))
    np.testing.assert_array_equal(
        loaded.sample(10, random_state=0), model.sample(10, random_state=0)
    )

    def plain(params):
        return {k: np.asarray(v).tolist() for k, v in params.items()}

    assert plain(loaded.get_params()) == plain(model.get_params())


@pytest.mark.parametrize("make", ESTIMATORS.values(), ids=ESTIMATORS.keys())
def test_a_file_with_altered_tensor_bytes_is_refused(make, tmp_path):
    """``torch.load`` does not check the archive's checksums: without the check an altered
    byte inside a stored tensor would load silently as other parameters."""
    X = np.random.default_rng(4).normal(size=(200, 2))
    path = tmp_path / "m.pt"
    make().fit(X).save(path)
    flip_a_byte_inside_the_largest_tensor(path)
    with pytest.raises(ValueError, match="is corrupt: the bytes of .* checksum"):
        type(make()).load(path)


@pytest.mark.parametrize("make", ESTIMATORS.values(), ids=ESTIMATORS.keys())
def test_loading_a_foreign_or_newer_file_is_a_clear_error(make, tmp_path):
    cls = type(make())
    path = tmp_path / "m.pt"
    torch.save({"format": "something else"}, path)
    with pytest.raises(ValueError, match=f"not a saved pyroflows {cls.__name__}"):
        cls.load(path)
    torch.save({"format": f"pyroflows.{cls.__name__}", "version": 99}, path)
    with pytest.raises(ValueError, match="format version 99"):
        cls.load(path)
    torch.save({"format": f"pyroflows.{cls.__name__}", "version": 1, "params": {}}, path)
    with pytest.raises(ValueError, match="missing or mismatched"):
        cls.load(path)
    path.write_bytes(b"\x80\x04garbage")
    with pytest.raises(ValueError, match="is not a saved"):
        cls.load(path)
