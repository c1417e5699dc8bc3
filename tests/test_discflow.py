"""DiscFlow: the direction of the discriminator weights (rows the flow under-produces weigh
more), the exact optimum of the weighted likelihood for a Gaussian, the recipe's schedule and
outputs, and its refusals."""

from __future__ import annotations

import math

import numpy as np
import pytest
import sklearn.base
import torch
from test_weights import FULL_BATCH, Gaussian

import pyroflows as pf
from pyroflows.classify import Classifier
from pyroflows.discflow import _log_ratio


def test_weighting_by_p_over_q_moves_a_too_wide_gaussian_towards_the_data():
    # data N(0, 1), flow q = N(0, 1.5^2); with w = (p / q)^alpha the weighted likelihood of a
    # Gaussian is maximised by q' ∝ p w^alpha, of precision (1 + alpha) - alpha / 2.25: the
    # weighted maximum-likelihood Gaussian (weighted mean and variance, which the weighted fit
    # reaches, see test_weights) is that one
    x = torch.tensor(np.random.default_rng(0).normal(size=4000))[:, None]
    log_p = -0.5 * x[:, 0] ** 2
    log_q = -0.5 * (x[:, 0] / 1.5) ** 2 - math.log(1.5)
    sd_data = float(x[:, 0].std())
    for alpha in (0.5, 1.0):
        w = torch.exp(alpha * (log_p - log_q)).numpy()
        sd = math.sqrt(np.average(x[:, 0].numpy() ** 2, weights=w))
        expected = 1 / math.sqrt((1 + alpha) / sd_data**2 - alpha / 2.25)
        assert sd == pytest.approx(expected, rel=0.03)
        assert sd < 1.0 < 1.5  # towards the data (and past it at alpha = 1), not away
    model = Gaussian()  # the weighted fit itself, at alpha = 1
    w = torch.exp(log_p - log_q)
    pf.fit(model, pf.losses.nll, x, sample_weight=w, **(FULL_BATCH | dict(max_epochs=100, lr=0.05)))
    assert float(model.log_sigma.detach().exp()) == pytest.approx(sd, rel=0.01)
    # the inverse weights (1 / w) keep the flow where it was: q ∝ p / w = q
    sd_inverse = math.sqrt(np.average(x[:, 0].numpy() ** 2, weights=torch.exp(log_q - log_p)))
    assert sd_inverse == pytest.approx(1.5, rel=0.1)


def test_discriminator_ratio_points_where_the_flow_under_produces():
    rng = np.random.default_rng(1)
    X = np.r_[rng.normal(-2, 0.3, (1500, 1)), rng.normal(2, 0.3, (1500, 1))]
    est = pf.DensityEstimator(flow="maf", layers=1, hidden=(4,), max_epochs=2, progress=False).fit(
        X
    )  # fmt: skip  (a near-Gaussian: wrong)
    log_w, auc = _log_ratio(est, X, Classifier("hgb", max_iter=50), 3000, 2, seed=0)
    exact = np.log(
        0.5
        * (np.exp(-0.5 * ((X[:, 0] + 2) / 0.3) ** 2) + np.exp(-0.5 * ((X[:, 0] - 2) / 0.3) ** 2))
        / (0.3 * math.sqrt(2 * math.pi))
    )
    exact_log_w = exact - est.score_samples(X)
    assert auc > 0.7
    assert np.corrcoef(log_w, exact_log_w)[0, 1] > 0.7
    assert np.mean(np.sign(log_w) == np.sign(exact_log_w)) > 0.75


def _small(**kwargs):
    options = dict(flow="maf", layers=2, hidden=(8,), max_epochs=3, progress=False)
    return pf.DensityEstimator(**(options | kwargs))


def test_discflow_schedule_outputs_and_weights():
    X = np.random.default_rng(2).normal(size=(400, 2)) * [1.0, 0.2]
    plain = _small().fit(X)
    fast = Classifier("hgb", max_iter=20)
    result = pf.discflow(X, _small(), rounds=3, epochs_per_round=1, power=0.9, max_weight=10.0,
                         classifier=fast)  # fmt: skip
    assert [r.alpha for r in result.rounds] == pytest.approx([0.3, 0.6, 0.9])
    assert all(0.0 < r.ess_fraction <= 1.0 and 0.0 <= r.auc <= 1.0 for r in result.rounds)
    probe = X[:20]
    assert not np.allclose(result.estimator.score_samples(probe), plain.score_samples(probe))
    draws = result.estimator.sample(200, random_state=1)
    w = result.weights(draws, max_weight=5.0)
    assert w.shape == (200,) and np.isfinite(w).all() and (w > 0).all() and w.max() <= 5.0
    draws, report = result.reweight(300, classifier=fast, folds=2)
    assert draws.shape == (300, 2) and report.weights.shape == (300,)


def test_discflow_time_budget_and_refusals():
    X = np.random.default_rng(3).normal(size=(200, 2))
    assert pf.discflow(X, _small(max_epochs=1), rounds=5, time_budget=0.0).rounds == []
    for kwargs, message in [
        (dict(power=0.0), "power"),
        (dict(max_weight=1.0), "max_weight"),
        (dict(folds=1), "folds"),
        (dict(rounds=0), "rounds"),
    ]:
        with pytest.raises(ValueError, match=message):
            pf.discflow(X, _small(), **kwargs)
    with pytest.raises(ValueError, match="NaN|finite"):
        pf.discflow(np.r_[X, [[np.nan, 0.0]]], _small())


def test_core_flow_and_to_latent_give_the_estimators_log_density():
    """The public route DiscFlow trains through: the core flow's log-density of the
    standardised rows plus the pre-transform's log-Jacobian is ``score_samples``."""
    X = np.random.default_rng(4).normal(size=(300, 2)) * [1.0, 20.0] + [0.0, 100.0]
    est = _small(max_epochs=2).fit(X)
    Z = est.to_latent(X)
    assert Z.dtype == next(est.core_flow_.parameters()).dtype
    # fitted on the training split (and whitened or not): standardised, not exactly
    np.testing.assert_allclose(Z.double().mean(0).numpy(), 0.0, atol=0.2)
    np.testing.assert_allclose(Z.double().std(0).numpy(), 1.0, atol=0.2)
    _, ladj = est.preprocessor_.to_latent(torch.tensor(X))
    log_p = est.core_flow_.log_prob(Z).double() + ladj
    np.testing.assert_allclose(log_p.detach().numpy(), est.score_samples(X), rtol=1e-5)
    with pytest.raises(ValueError, match="X has 1 features"):
        est.to_latent(X[:, :1])


def test_core_flow_is_refused_for_ensembles_and_discrete_columns():
    X = np.random.default_rng(5).normal(size=(200, 2))
    ens = _small(max_epochs=1, ensemble=2).fit(X)
    with pytest.raises(ValueError, match="ensemble"):
        _ = ens.core_flow_
    grid = np.c_[X[:, 0], np.round(X[:, 1])]
    disc = _small(max_epochs=1, discrete={1: "integer"}).fit(grid)
    with pytest.raises(ValueError, match="discrete columns"):
        disc.to_latent(grid)
    with pytest.raises(ValueError, match="ensemble=2"):
        pf.discflow(X, _small(ensemble=2))


class _SampledGaussian(Gaussian):
    """The 1-D Gaussian with draws, for the reverse term."""

    def sample(self, shape):
        return (
            self.mu + self.log_sigma.exp() * torch.randn(*shape, 1, dtype=torch.float64)
        ).detach()


def test_reverse_term_gradient_is_the_gradient_of_kl_q_to_p():
    # q = N(0.5, 1.5^2), p = N(0, 1): KL(q || p) = -log s + (s^2 + m^2) / 2 - 1/2, so
    # dKL/dm = m = 0.5 and dKL/dlog s = s^2 - 1 = 1.25; the term adds lam times that to the
    # gradient of the data's likelihood (the batch's own nll gradient is subtracted here)
    from pyroflows.discflow import ReverseTerm

    torch.manual_seed(0)
    model = _SampledGaussian()
    with torch.no_grad():
        model.mu.fill_(0.5)
        model.log_sigma.fill_(math.log(1.5))
    term = ReverseTerm(lambda z: -0.5 * z[:, 0] ** 2, lam=2.0, draws=400_000, low=-50.0, high=50.0)
    batch = (torch.randn(64, 1, dtype=torch.float64),)
    total = torch.autograd.grad(term(model, batch), [model.mu, model.log_sigma])
    data = torch.autograd.grad(pf.losses.nll(model, batch), [model.mu, model.log_sigma])
    reverse = [float(t - d) / 2.0 for t, d in zip(total, data, strict=True)]
    assert reverse == pytest.approx([0.5, 1.25], abs=0.03)


def _gaussian_rows(n, seed):
    return np.random.default_rng(seed).multivariate_normal([1.0, -1.0], [[1, 0.8], [0.8, 1]], n)


def _log_gaussian(x):
    cov = np.array([[1, 0.8], [0.8, 1]])
    d = x - [1.0, -1.0]
    quad = np.einsum("ni,ij,nj->n", d, np.linalg.inv(cov), d)
    return -0.5 * quad - 0.5 * math.log(np.linalg.det(2 * math.pi * cov))


def test_exact_log_target_gives_the_weights_p_over_q():
    # with log_target the round trains on w = (p / q)^alpha from the exact densities: the
    # same fit by hand from the same plain start gives the same flow
    X = _gaussian_rows(600, 6)
    est = _small(max_epochs=2, layers=1)
    result = pf.discflow(X, est, rounds=1, epochs_per_round=2, power=0.5, max_weight=50.0,
                         log_target=_log_gaussian, lr=1e-3, random_state=3)  # fmt: skip
    assert math.isnan(result.rounds[0].auc)
    by_hand = est.fit(X)  # same settings and seed: the same plain start
    log_w = np.clip(_log_gaussian(X) - by_hand.score_samples(X), -math.log(50), math.log(50))
    pf.fit(by_hand.core_flow_, pf.losses.nll, by_hand.to_latent(X),
           sample_weight=np.exp(0.5 * log_w), max_epochs=2, lr=1e-3,
           batch_size=by_hand.batch_size, patience=None, seed=4, progress=False)  # fmt: skip
    np.testing.assert_allclose(
        result.estimator.score_samples(X[:50]), by_hand.score_samples(X[:50]), rtol=1e-6
    )


def _reverse_kl(est, log_target, n=20_000):
    draws = est.sample(n, random_state=9)
    return float(np.mean(est.score_samples(draws) - log_target(draws)))


def test_reverse_term_moves_an_under_trained_flow_towards_p():
    # a flow that can represent the Gaussian target exactly, under-trained: the same rounds
    # with the reverse term (exact ratio) end closer to p in KL(q || p) than without it
    X = _gaussian_rows(2000, 7)
    est = _small(max_epochs=1, layers=1, hidden=(16,), lr=1e-3)
    options = dict(rounds=2, epochs_per_round=2, power=0.5, log_target=_log_gaussian, lr=1e-3)
    start = _reverse_kl(sklearn.base.clone(est).fit(X), _log_gaussian)
    without = _reverse_kl(pf.discflow(X, est, **options).estimator, _log_gaussian)
    with_term = _reverse_kl(
        pf.discflow(X, est, reverse=1.0, reverse_draws=512, **options).estimator, _log_gaussian
    )
    assert with_term < 0.8 * without < start


def test_reverse_term_with_the_classifier_runs_and_its_refusals():
    X = np.random.default_rng(8).normal(size=(300, 2))
    fast = Classifier("hgb", max_iter=20)
    result = pf.discflow(X, _small(), rounds=2, epochs_per_round=1, reverse=0.5,
                         reverse_draws=64, classifier=fast)  # fmt: skip
    assert all(np.isfinite(r.train_loss) and 0 <= r.auc <= 1 for r in result.rounds)
    assert np.isfinite(result.estimator.score_samples(X)).all()
    for kwargs, message in [
        (dict(reverse=-0.1), "reverse"),
        (dict(reverse=float("nan")), "reverse"),
        (dict(reverse=0.1, reverse_draws=0), "reverse_draws"),
        (dict(reverse_draws=64), "reverse_draws shape the reverse-KL term, which is off"),
        (dict(reverse_floor=0.5), "reverse_floor shape the reverse-KL term, which is off"),
        (dict(reverse=0.1, reverse_floor=1.0), "reverse_floor"),
        (dict(log_target="exact"), "log_target"),
        (dict(log_target=lambda x: np.zeros(3)), "one value per row"),
        (dict(log_target=lambda x: np.full(len(x), np.nan)), "NaN"),
    ]:
        with pytest.raises(ValueError, match=message):
            pf.discflow(X, _small(), rounds=1, epochs_per_round=1, classifier=fast, **kwargs)


def test_a_fitted_estimator_is_refused_not_silently_refitted():
    """discflow clones its estimator and fits the clone from the start: a fitted one's fit
    would be discarded without a word, so it is refused."""
    X = np.random.default_rng(9).normal(size=(200, 2))
    fitted = _small().fit(X)
    with pytest.raises(ValueError, match="already fitted"):
        pf.discflow(X, fitted, rounds=1, epochs_per_round=1)


def _log_standard_normal(x):
    return -0.5 * (x**2).sum(1) - x.shape[1] * 0.5 * math.log(2 * math.pi)


@pytest.mark.parametrize("alpha", [0.5, 1.0])
def test_warm_start_round_reaches_the_weighted_optimum_and_moves_towards_p(alpha):
    # p = N(0, I) in 2-D; the flow (a Gaussian-capable MAF) was fitted to rows 1.5x too wide,
    # so q0 ~ N(0, 1.5^2 I): a flow that can represent p, mis-trained. One warm-started round
    # with the exact ratio, trained to convergence on full batches, reaches the weighted
    # maximum-likelihood fit of the rows with weights (p / q0)^alpha (the minimiser of the
    # weighted loss, q ∝ p (p / q0)^alpha: sd 0.885 at alpha 0.5, 0.80 at 1; plain likelihood
    # would give sd 1), and that is closer to p in KL(p || q) than q0 (2-D KL 0.25)
    rng = np.random.default_rng(10)
    X, wide = rng.normal(size=(3000, 2)), 1.5 * rng.normal(size=(3000, 2))
    options = dict(flow="maf", layers=1, hidden=(8,), max_epochs=100, lr=3e-2,
                   batch_size=3000, validation_fraction=0.0, progress=False)  # fmt: skip
    q0 = pf.DensityEstimator(**options).fit(wide)
    before = q0.score_samples(X[:50])
    result = pf.discflow(X, q0, warm_start=True, rounds=1, epochs_per_round=100, power=alpha,
                         max_weight=100.0, lr=3e-2, log_target=_log_standard_normal)  # fmt: skip
    np.testing.assert_array_equal(q0.score_samples(X[:50]), before)  # the one passed: unchanged
    w = np.exp(alpha * (_log_standard_normal(X) - q0.score_samples(X)))
    mean = np.average(X, axis=0, weights=w)
    expected = np.sqrt(np.average((X - mean) ** 2, axis=0, weights=w))
    draws = result.estimator.sample(40_000, random_state=11)
    assert expected == pytest.approx([1 / math.sqrt(1 + alpha - alpha / 2.25)] * 2, rel=0.05)
    np.testing.assert_allclose(draws.std(0), expected, rtol=0.02)
    test = rng.normal(size=(20_000, 2))
    kl_before = float(np.mean(_log_standard_normal(test) - q0.score_samples(test)))
    kl_after = float(np.mean(_log_standard_normal(test) - result.estimator.score_samples(test)))
    assert kl_after < 0.7 * kl_before  # analytic: 0.13 (alpha 0.5), 0.46 (alpha 1)


def test_warm_start_with_the_classifier_moves_a_mis_trained_flow_towards_p():
    # the same mis-trained flow, refined by DiscFlow's own discriminator (three rounds): the
    # rounds start from it (not from a refit: the first round's AUC sees the too-wide flow)
    # and end closer to p in KL(p || q)
    rng = np.random.default_rng(12)
    X, wide = rng.normal(size=(3000, 2)), 1.5 * rng.normal(size=(3000, 2))
    q0 = _small(layers=1, hidden=(8,), max_epochs=200, lr=1e-2, batch_size=3000,
                validation_fraction=0.0).fit(wide)  # fmt: skip
    result = pf.discflow(X, q0, warm_start=True, rounds=3, epochs_per_round=60, power=1.0,
                         lr=1e-2, classifier=Classifier("hgb", max_iter=50))  # fmt: skip
    assert result.rounds[0].auc > 0.6  # the discriminator of round 1 saw q0, not a refit
    test = rng.normal(size=(20_000, 2))
    kl = [float(np.mean(_log_standard_normal(test) - e.score_samples(test)))
          for e in (q0, result.estimator)]  # fmt: skip
    assert kl[1] < 0.5 * kl[0]


def test_warm_start_refusals():
    X = np.random.default_rng(13).normal(size=(200, 2))
    fitted = _small().fit(X)
    for estimator, kwargs, message in [
        (_small(), dict(warm_start=True), "warm_start=True refines a fitted estimator"),
        (None, dict(warm_start=True), "warm_start=True refines a fitted estimator"),
        (fitted, dict(warm_start=1), "warm_start must be True or False"),
        (fitted, {}, "or pass warm_start=True"),
    ]:
        with pytest.raises(ValueError, match=message):
            pf.discflow(X, estimator, rounds=1, epochs_per_round=1, **kwargs)
    with pytest.raises(ValueError, match="X has 3 features, the warm-start estimator"):
        pf.discflow(np.c_[X, X[:, :1]], fitted, warm_start=True, rounds=1)
