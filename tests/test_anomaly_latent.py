"""LaCATHODE (pyroflows.anomaly.latent): the latent map, decorrelation from m, sculpting, edges."""

import numpy as np
import pytest

from pyroflows import anomaly as A
from pyroflows.classify import Classifier
from pyroflows.datasets import bump_hunt

FLOW = dict(
    layers=2, hidden=(32,), max_epochs=20, batch_size=512, lr=3e-3, schedule="cosine", patience=None
)
REGION = A.SignalRegion(3.3, 3.7)


def _falling_m(rng, n, low=2.1, high=6.7):
    """m with density proportional to m^-4 on [low, high]."""
    a, b = low**-3, high**-3
    return (a - rng.uniform(0, 1, n) * (a - b)) ** (-1 / 3)


def _background(rng, m):
    """x | m: a Gaussian whose mean and spread move strongly with m (known latent: the flow
    only has to standardise it). x0 = 10 (m - 3.5) + e0, x1 = 0.8 e0 + (1 + 0.3 (m - 3.5)) e1:
    x0 alone measures m to 0.1, a quarter of the SR's width."""
    e = rng.standard_normal((len(m), 2))
    return np.stack([10 * (m - 3.5) + e[:, 0], 0.8 * e[:, 0] + (1 + 0.3 * (m - 3.5)) * e[:, 1]], 1)


def _exact_latent(x, m):
    """The toy's exact standardisation (the map a perfect flow finds, up to rotations)."""
    e0 = x[:, 0] - 10 * (m - 3.5)
    return np.stack([e0, (x[:, 1] - 0.8 * e0) / (1 + 0.3 * (m - 3.5))], 1)


@pytest.fixture(scope="module")
def toy():
    """Background over the whole m range plus a narrow signal in the SR at x = (0, 2.5)."""
    rng = np.random.default_rng(0)
    m = _falling_m(rng, 60_000)
    x = _background(rng, m)
    n_sig = 300
    m_sig = rng.uniform(REGION.low, REGION.high, n_sig)
    x_sig = rng.normal([0.0, 2.5], 0.25, (n_sig, 2))
    x, m = np.concatenate([x, x_sig]), np.concatenate([m, m_sig])
    la = A.LaCATHODE(REGION, A.ConditionalDensity(**FLOW), Classifier("hgb"), oversampling=2)
    return la.fit(x, m)


def test_latent_of_background_is_standard_normal_at_every_m(toy):
    rng = np.random.default_rng(1)
    m = _falling_m(rng, 40_000, 2.5, 4.5)  # SR and two SR widths of sidebands each side
    x = _background(rng, m)
    u = toy.latent(x, m)
    assert u.shape == x.shape and np.isfinite(u).all()
    assert abs(np.corrcoef(x[:, 0], m)[0, 1]) > 0.8  # the features carry m ...
    for part in (REGION.inside(m), m < REGION.low, m > REGION.high):
        # (raw x0's mean moves by 10 per unit of m; the flow interpolates across the SR)
        np.testing.assert_allclose(u[part].mean(0), 0.0, atol=0.15)
        np.testing.assert_allclose(np.cov(u[part].T), np.eye(2), atol=0.1)
    for k in range(2):  # ... the latents do not
        assert abs(np.corrcoef(u[:, k], m)[0, 1]) < 0.05
    # the flow found the toy's standardisation: |u| matches the exact latent's norm
    exact = _exact_latent(x, m)
    r = np.corrcoef(np.linalg.norm(u, axis=1), np.linalg.norm(exact, axis=1))[0, 1]
    assert r > 0.97
    # the classifier was trained against base draws, 2 per usable SR event, none dropped
    assert toy.nonfinite_training_ == 0 and toy.samples_.shape[1] == 2
    assert len(toy.samples_) == 2 * len(toy.training_[1][toy.training_[1] == 1])


def test_lacathode_finds_the_signal_and_does_not_sculpt(toy):
    rng = np.random.default_rng(2)
    # signal vs background in the SR
    m_b = rng.uniform(REGION.low, REGION.high, 5_000)
    x_b = _background(rng, m_b)
    x_s = rng.normal([0.0, 2.5], 0.25, (500, 2))
    m_s = rng.uniform(REGION.low, REGION.high, 500)
    scores = toy.score(np.concatenate([x_b, x_s]), np.concatenate([m_b, m_s]))
    label = np.repeat([0, 1], [5_000, 500])
    assert A.max_sic(label, scores, min_background=20)["max_sic"] > 3
    # an independent background sample over the SR and its sidebands
    m = _falling_m(rng, 200_000, 2.5, 4.5)
    x = _background(rng, m)
    # a score that learned m: it favours x0 near the SR's mean, hence the SR's m (a fake bump)
    leaking = -np.abs(x[:, 0]) / 10 + 0.5 * x[:, 1]
    cuts = A.sculpting(m, leaking, REGION, (0.2, 0.05))[1:]
    assert all(r["pull"] > 4 and r["bias"] > 0.15 for r in cuts), cuts
    for r in A.sculpting(m, toy.score(x, m), REGION, (0.2, 0.05)):
        assert abs(r["pull"]) < 3 and abs(r["bias"]) < 0.1, r


def test_lacathode_refuses_m_outside_the_flows_range_unless_told(toy):
    x, m = np.zeros((3, 2)), np.array([3.5, 1.0, 9.0])
    with pytest.raises(ValueError, match=r"2 event\(s\) have m outside the range"):
        toy.score(x, m)
    with pytest.raises(ValueError, match="m has 1 NaN or infinite value"):
        toy.latent(x, np.array([3.5, np.nan, 3.5]))
    with pytest.raises(ValueError, match="pass m"):
        toy.score(x)
    low, high = toy.background.m_range_
    inside = np.array([low - 0.005 * (high - low), high + 0.005 * (high - low)])
    assert np.isfinite(toy.score(x[:2], inside)).all()  # within the 1 % margin
    before = toy.extrapolated_
    toy.extrapolate = True
    try:
        with pytest.warns(RuntimeWarning, match="2 event"):
            scores = toy.score(x, m)
    finally:
        toy.extrapolate = False
    assert np.isfinite(scores).all() and toy.extrapolated_ == before + 2


def test_lacathode_counts_nonfinite_latents_never_drops_them():
    hunt = bump_hunt(20_000, 0.05, "none", seed=5, n_test_background=200, n_test_signal=20,
                     n_extra_background=10, n_extra_signal=10)  # fmt: skip
    bounds = ([-np.inf, -np.inf, 0, 0], [np.inf, np.inf, 1, 1])
    d, region = hunt.data, A.SignalRegion(*hunt.sr)
    x = d.x.copy()
    x[np.flatnonzero(region.inside(d.m))[:3], 2] = 1.5  # outside the logit's bounds: no latent
    density = A.ConditionalDensity(bounds=bounds, **dict(FLOW, max_epochs=2, schedule=None))
    la = A.LaCATHODE(region, density, Classifier("hgb"))
    with pytest.warns(RuntimeWarning, match="3 of .* SR events have a non-finite latent"):
        la.fit(x, d.m)
    assert la.nonfinite_training_ == 3
    t = hunt.test.x[:10].copy()
    t[:4, 3] = -0.5
    with pytest.warns(RuntimeWarning, match="4 non-finite"):
        scores = la.score(t, hunt.test.m[:10])
    assert len(scores) == 10 and np.isnan(scores[:4]).all() and np.isfinite(scores[4:]).all()
    assert la.nonfinite_latents_ == 4 and la.nonfinite_["nan"] == 4
    assert np.isnan(la.latent(t, hunt.test.m[:10])[:4]).all()


def test_lacathode_refuses_bad_options():
    with pytest.raises(ValueError, match="oversampling"):
        A.LaCATHODE(REGION, oversampling=0)
    with pytest.raises(ValueError, match="member"):
        A.LaCATHODE(REGION, member=-1)
    density = A.ConditionalDensity(**FLOW)
    with pytest.raises(ValueError, match="member 1 does not exist"):
        A.LaCATHODE(REGION, density, member=1).fit(np.zeros((50, 2)), np.linspace(3, 4, 50))
    assert not density.members_  # refused before the flow was trained
    with pytest.raises(RuntimeError, match="not fitted"):
        A.LaCATHODE(REGION).score(np.zeros((2, 4)), np.full(2, 3.5))
