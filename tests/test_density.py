"""DensityEstimator: known answers, units, persistence, scikit-learn protocol, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV

import pyroflows as pf
from pyroflows.flows import Flow

SMALL = dict(layers=2, hidden=(32, 32), max_epochs=40, patience=10, batch_size=128)


@pytest.fixture(scope="module")
def gaussian_data():
    rng = np.random.default_rng(0)
    cov = np.array([[2.0, 1.2], [1.2, 1.5]])
    mean = np.array([3.0, -1.0])
    return rng.multivariate_normal(mean, cov, size=1500), mean, cov


@pytest.fixture(scope="module")
def fitted(gaussian_data):
    X, _, _ = gaussian_data
    return pf.DensityEstimator(flow="maf", **SMALL).fit(X[:1000])


def test_fit_recovers_a_known_gaussian_density(fitted, gaussian_data):
    from scipy.stats import multivariate_normal

    X, mean, cov = gaussian_data
    test = X[1000:]
    truth = multivariate_normal(mean, cov).logpdf(test)
    kl = np.mean(truth - fitted.score_samples(test))
    assert abs(kl) < 0.03, kl
    assert fitted.score(test) == pytest.approx(np.mean(fitted.score_samples(test)))


def test_log_density_is_in_the_users_units(gaussian_data):
    X, _, _ = gaussian_data
    a = pf.DensityEstimator(flow="maf", **{**SMALL, "max_epochs": 3}).fit(X[:300])
    b = pf.DensityEstimator(flow="maf", **{**SMALL, "max_epochs": 3}).fit(X[:300] * 10.0 + 5)
    # Standardisation makes both fits identical; only the Jacobian of the units differs.
    diff = a.score_samples(X[:50]) - b.score_samples(X[:50] * 10.0 + 5)
    assert np.allclose(diff, 2 * np.log(10.0), atol=1e-4)


def test_sample_is_reproducible_and_matches_moments(fitted, gaussian_data):
    _, mean, cov = gaussian_data
    s1, s2 = fitted.sample(4000, random_state=0), fitted.sample(4000, random_state=0)
    assert s1.shape == (4000, 2) and np.array_equal(s1, s2)
    assert not np.array_equal(s1, fitted.sample(4000, random_state=1))
    assert np.allclose(s1.mean(0), mean, atol=0.15)
    assert np.allclose(np.cov(s1.T), cov, atol=0.3)


def test_save_and_load_reproduce_scores_exactly(fitted, gaussian_data, tmp_path):
    X, _, _ = gaussian_data
    path = tmp_path / "model.pt"
    fitted.save(path)
    blob = torch.load(path, weights_only=True)
    assert blob["format"] == "pyroflows.DensityEstimator" and blob["version"] == 2
    loaded = pf.DensityEstimator.load(path)
    assert np.array_equal(loaded.score_samples(X[:100]), fitted.score_samples(X[:100]))
    assert loaded.get_params() == {**fitted.get_params(), "hidden": tuple(fitted.hidden)}
    assert len(loaded.history_.train_loss) == len(fitted.history_.train_loss)


def test_bounded_data_density_integrates_to_one_on_the_box():
    rng = np.random.default_rng(1)
    X = np.column_stack([rng.beta(2, 5, 800), rng.beta(3, 3, 800)])
    est = pf.DensityEstimator(flow="maf", bounds=(0.0, 1.0), **{**SMALL, "max_epochs": 10})
    est.fit(X)
    n = 400
    mids = (np.arange(n) + 0.5) / n
    grid = np.stack(np.meshgrid(mids, mids, indexing="ij"), -1).reshape(-1, 2)
    mass = np.exp(est.score_samples(grid)).sum() / n**2
    assert mass == pytest.approx(1.0, abs=2e-2)
    assert np.all(est.score_samples(np.array([[1.5, 0.5], [-0.1, 0.2]])) == -np.inf)
    assert np.all((est.sample(500, random_state=0) > 0) & (est.sample(500) < 1))
    with pytest.raises(ValueError, match="outside the bounds"):
        clone(est).fit(X + 1.0)


def test_scikit_learn_protocol(gaussian_data):
    X, _, _ = gaussian_data
    est = pf.DensityEstimator(flow="maf", **{**SMALL, "max_epochs": 2})
    assert clone(est).get_params() == est.get_params()
    search = GridSearchCV(est, {"layers": [1, 2]}, cv=2).fit(X[:200])
    assert search.best_params_["layers"] in (1, 2)
    assert np.isfinite(search.best_score_)


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.array([[0.0, np.nan]] * 5), "NaN or infinite"),
        (np.zeros((0, 2)), "empty"),
        (np.ones((1, 2)), "at least 2"),
        (np.column_stack([np.arange(5.0), np.ones(5)]), "constant"),
        (np.array([["1", "x"], ["2", "3"]]), "numeric"),
        (np.arange(5.0), "2-D"),
    ],
)
def test_bad_training_data_is_rejected_before_any_change(fitted, bad, match):
    before = {k: v.clone() for k, v in fitted.flow_.state_dict().items()}
    with pytest.raises(ValueError, match=match):
        fitted.fit(bad)
    after = fitted.flow_.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_bad_scoring_data_is_rejected(fitted):
    with pytest.raises(ValueError, match="3 features"):
        fitted.score_samples(np.zeros((4, 3)))
    with pytest.raises(ValueError, match="NaN"):
        fitted.score_samples(np.array([[np.inf, 0.0]]))
    with pytest.raises(ValueError, match="not fitted"):
        pf.DensityEstimator().save("nowhere.pt")


def test_a_diverging_fit_raises_and_leaves_the_estimator_unfitted(gaussian_data, monkeypatch):
    X, _, _ = gaussian_data

    def nan_log_prob(self, x, context=None, check=True):
        return (x.sum(-1) + sum(p.sum() for p in self.parameters())) * np.nan

    monkeypatch.setattr(Flow, "log_prob", nan_log_prob)
    est = pf.DensityEstimator(flow="maf", **SMALL)
    with pytest.raises(pf.TrainingDiverged):
        est.fit(X[:200])
    assert not hasattr(est, "flow_")


def test_untrained_flow_is_the_whitening_gaussian(gaussian_data):
    """Flows start as the identity, so with lr~0 the estimator is exactly its pre-transform:
    the maximum-likelihood Gaussian (whiten=True) or the product of its marginals (False)."""
    from scipy.stats import multivariate_normal, norm

    from pyroflows.baselines import GaussianDensity

    X, _, _ = gaussian_data
    kw = dict(
        flow="maf",
        layers=1,
        hidden=(8, 8),
        lr=1e-12,
        max_epochs=1,
        validation_fraction=0.0,
        dtype="float64",
    )
    full = pf.DensityEstimator(whiten=True, **kw).fit(X)
    assert np.allclose(
        full.score_samples(X[:20]), GaussianDensity().fit(X).score_samples(X[:20]), atol=1e-6
    )
    diag = pf.DensityEstimator(whiten=False, **kw).fit(X)
    expected = norm(X.mean(0), X.std(0)).logpdf(X[:20]).sum(1)
    assert np.allclose(diag.score_samples(X[:20]), expected, atol=1e-6)
    assert not np.allclose(expected, multivariate_normal(X.mean(0), np.cov(X.T)).logpdf(X[:20]))


def test_linearly_dependent_columns_are_rejected_when_whitening():
    x = np.random.default_rng(0).normal(size=(100, 2))
    X = np.column_stack([x, x[:, 0] - x[:, 1]])
    with pytest.raises(ValueError, match="linearly dependent"):
        pf.DensityEstimator(flow="maf", layers=1, max_epochs=1, whiten=True).fit(X)


# -- issue 7 defects: each test failed before the fix ----------------------------------------
TINY = dict(flow="maf", layers=2, hidden=(16, 16), max_epochs=15, patience=5, batch_size=256)


def test_float32_data_with_a_large_offset_keep_their_shape():
    """Defect 1: standardised in float64 before the cast, so 1e8 + N(0, 1) is not collapsed."""
    X = 1e8 + np.random.default_rng(0).normal(size=(2000, 1))
    est = pf.DensityEstimator(**TINY).fit(X)
    scores = est.score_samples(X[:200])
    assert scores.std() > 0.2  # was 0: one value for every row
    expected = -0.5 * (X[:200, 0] - 1e8) ** 2 - 0.5 * np.log(2 * np.pi)
    assert np.corrcoef(scores, expected)[0, 1] > 0.99
    draws = est.sample(4000, random_state=0)
    assert abs(draws.std() - 1.0) < 0.1 and abs(draws.mean() - 1e8) < 0.1


def test_bounded_data_keep_distinct_densities_within_1e_6_of_an_edge():
    """Defect 2: an exact logit, no clamp; -inf outside the box, also through flow_."""
    from scipy.stats import beta

    X = np.random.default_rng(0).beta(0.3, 0.3, size=(3000, 1))
    est = pf.DensityEstimator(bounds=(0.0, 1.0), **TINY).fit(X)
    near = np.array([[1e-7], [1e-9], [1e-11], [1 - 1e-7], [1 - 1e-9]])
    scores = est.score_samples(near)
    assert np.isfinite(scores).all() and len(np.unique(scores)) == 5
    draws = est.sample(20000, random_state=0)
    assert ((draws > 0) & (draws < 1)).all()
    # the data put 2 x 1.3 % of their mass within 1e-6 of the edges: so must the draws
    share = np.mean((draws < 1e-6) | (draws > 1 - 1e-6))
    assert share > 0.3 * 2 * beta(0.3, 0.3).cdf(1e-6)
    outside = np.array([[-0.1], [1.0], [1.5]])
    assert np.isneginf(est.score_samples(outside)).all()
    flow_scores = est.flow_.log_prob(torch.tensor(outside, dtype=torch.float32))
    assert torch.isneginf(flow_scores).all()


def test_half_open_bounds_are_a_log_transform():
    """Defect 2: bounds=(0, inf) fits positive data instead of raising TrainingDiverged."""
    from scipy.stats import lognorm

    X = np.random.default_rng(0).lognormal(1.0, 0.5, size=(3000, 1))
    est = pf.DensityEstimator(bounds=(0.0, np.inf), **TINY).fit(X[:2000])
    truth = lognorm(0.5, scale=np.e).logpdf(X[2000:, 0])
    assert abs(np.mean(truth - est.score_samples(X[2000:]))) < 0.03
    assert np.isneginf(est.score_samples(np.array([[-1.0], [0.0]]))).all()
    assert (est.sample(2000, random_state=0) > 0).all()


@pytest.mark.parametrize("flow", ["nsf", "maf", "realnvp"])
def test_far_outliers_score_finite_or_minus_inf_never_nan(flow):
    """Defect 3: float32 scores of points 1e3-1e6 standard deviations away, or beyond
    float32's range, are very negative or -inf, never NaN."""
    X = np.random.default_rng(0).normal(size=(600, 2))
    kw = {**TINY, "flow": flow, "max_epochs": 3}
    est = pf.DensityEstimator(**kw).fit(X)
    far = np.array([[1e3, 0.0], [0.0, -1e6], [1e6, 1e6], [1e39, 0.0], [-1e300, 1.0]])
    scores = est.score_samples(far)
    assert not np.isnan(scores).any(), scores
    assert (scores < -1e5).all(), scores


def test_fit_leaves_the_global_random_state_alone():
    """Defect 5: local generators, no reseeding of torch's global RNG."""
    X = np.random.default_rng(0).normal(size=(300, 2))
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    pf.DensityEstimator(**{**TINY, "max_epochs": 2}).fit(X)
    assert torch.equal(torch.rand(3), expected)


BAD_PARAMS = [
    ({"hidden": ()}, "hidden"),
    ({"hidden": (16, -3)}, "hidden"),
    ({"bins": 0, "flow": "nsf"}, "bins"),
    ({"clip_grad": 0.0}, "clip_grad"),
    ({"clip_grad": -1.0}, "clip_grad"),
    ({"lr": 0.0}, "lr"),
    ({"lr": -1e-3}, "lr"),
    ({"validation_fraction": 1.0}, "validation_fraction"),
    ({"validation_fraction": -0.1}, "validation_fraction"),
    ({"patience": 0}, "patience"),
    ({"bound": 0.0, "flow": "nsf"}, "bound"),
    ({"layers": 2.5}, "layers"),
    ({"layers": 0}, "layers"),
    ({"batch_size": 0}, "batch_size"),
    ({"max_epochs": 0}, "max_epochs"),
    ({"weight_decay": -1.0}, "weight_decay"),
    ({"base": "uniform"}, "base"),
    ({"flow": "glow"}, "flow"),
    ({"dtype": "float16"}, "dtype"),
    ({"schedule": "linear"}, "schedule"),
]


@pytest.mark.parametrize(
    "params, name",
    BAD_PARAMS,
    ids=[",".join(f"{k}={v!r}" for k, v in p.items()) for p, _ in BAD_PARAMS],
)
def test_hyper_parameters_out_of_range_name_the_parameter(params, name):
    """Defect 6: a ValueError naming the parameter, before any state changes."""
    X = np.random.default_rng(0).normal(size=(200, 2))
    est = pf.DensityEstimator(**{**TINY, **params})
    with pytest.raises(ValueError, match=name):
        est.fit(X)
    assert not hasattr(est, "flow_")


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_without_a_gpu_is_a_clear_error():
    est = pf.DensityEstimator(device="cuda", **TINY)
    with pytest.raises(ValueError, match="CUDA is not available"):
        est.fit(np.random.default_rng(0).normal(size=(100, 2)))


def test_plot_history_draws_the_loss_curves(fitted):
    from matplotlib.figure import Figure

    ax = fitted.plot_history(ax=Figure().subplots())
    assert [line.get_label() for line in ax.lines][:2] == ["train", "validation"]


# -- the default: a small portfolio ------------------------------------------------------------
def test_gmm_base_starts_at_the_fitted_mixture():
    """base="gmm": identity flow layers on a mixture fitted to the standardised rows or to the
    rows in the data's units (full, diagonal or tied covariances, 1-10 components, the lowest
    BIC in the standardised space without validation rows), so an untrained estimator is
    exactly that mixture (in the data's units)."""
    from sklearn.mixture import GaussianMixture

    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(-3, 1, (400, 2)), rng.normal(3, 0.5, (400, 2))]) * [1, 10]
    est = pf.DensityEstimator(
        flow="nsf", base="gmm", layers=1, hidden=(8,), lr=1e-12, max_epochs=1,
        validation_fraction=0.0, dtype="float64",
    ).fit(X)  # fmt: skip
    mean, std = X.mean(0), X.std(0)
    Z = (X - mean) / std
    log_det = np.log(std).sum()  # log p in the standardised space = log p(x) + log_det
    candidates = []  # (BIC in the standardised space, log p(x) of the first 50 rows)
    for k in range(1, 11):
        for kind in ("full", "diag", "tied"):
            g = GaussianMixture(k, covariance_type=kind, random_state=0, max_iter=200)
            g.fit(Z)
            candidates.append((g.bic(Z), k, g.score_samples(Z[:50]) - log_det))
            g.fit(X)
            candidates.append((g.bic(X) - 2 * len(X) * log_det, k, g.score_samples(X[:50])))
    _, k, expected = min(candidates, key=lambda c: c[0])
    assert k == est.flow_.base.components == 2
    np.testing.assert_allclose(est.score_samples(X[:50]), expected, atol=1e-6)


def test_auto_fits_the_portfolio_and_keeps_the_best_on_validation(tmp_path):
    rng = np.random.default_rng(1)
    X = np.concatenate([rng.normal(-4, 0.6, (500, 2)), rng.normal(4, 0.6, (500, 2))])
    est = pf.DensityEstimator(layers=2, hidden=(16, 16), max_epochs=20).fit(X)
    names = [c["name"] for c in est.candidates_]
    assert names == [m.name for m in pf.density.PORTFOLIO]
    best = min(est.candidates_, key=lambda c: c["best_loss"])
    assert est.member_ == best["name"] and est.history_.best_loss == best["best_loss"]
    # each member's history is timed from the start of the whole fit
    assert est.candidates_[1]["history"].time[0] > est.candidates_[0]["history"].time[-1]
    est.save(tmp_path / "auto.pt")
    loaded = pf.DensityEstimator.load(tmp_path / "auto.pt")
    assert loaded.member_ == est.member_
    np.testing.assert_array_equal(loaded.score_samples(X[:20]), est.score_samples(X[:20]))


def test_fitting_restores_the_number_of_torch_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        X = np.random.default_rng(0).normal(size=(200, 2))
        pf.DensityEstimator(**{**TINY, "max_epochs": 1}).fit(X)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_the_history_is_in_the_data_units():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(900, 2)) * [0.01, 100.0] + 5.0
    est = pf.DensityEstimator(**{**TINY, "patience": 50}).fit(X[:700], X[700:])
    assert est.history_.best_loss == pytest.approx(-est.score(X[700:]), abs=1e-3)


def test_the_same_seed_gives_bit_identical_models():
    """Determinism: two fits with one seed on one machine (CPU, one thread) are identical."""
    X = np.random.default_rng(3).normal(size=(600, 2)) * [1, 4]
    kw = dict(layers=2, hidden=(16, 16), max_epochs=6, random_state=7)
    a, b = pf.DensityEstimator(**kw).fit(X), pf.DensityEstimator(**kw).fit(X)
    assert a.member_ == b.member_
    for key, value in a.flow_.state_dict().items():
        assert torch.equal(value, b.flow_.state_dict()[key]), key
    c = pf.DensityEstimator(**{**kw, "random_state": 8}).fit(X)
    assert any(not torch.equal(v, c.flow_.state_dict()[k]) for k, v in a.flow_.state_dict().items())
