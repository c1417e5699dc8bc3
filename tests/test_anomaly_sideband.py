"""The truth-free sculpting check in the sidebands (pyroflows.anomaly.sideband)."""

import warnings

import numpy as np
import pytest

from pyroflows import anomaly as A

REGION = A.SignalRegion(3.3, 3.7)


def _sideband_m(rng, n):
    """m with density proportional to m^-4 on [2.1, 6.7], the SR's events removed."""
    m = 2.1 * (1 - rng.uniform(0.0, 0.97, n)) ** (-1 / 3)
    return m[REGION.sidebands(m)]


def test_warns_on_a_score_that_selects_by_m_and_not_on_one_independent_of_m():
    rng = np.random.default_rng(3)
    m = _sideband_m(rng, 300_000)
    # a sharp preference for m near the SR (the flanks of a fake bump reach the sidebands)
    by_m = -np.abs(m - REGION.center) + rng.normal(0, 0.05, m.size)
    with pytest.warns(A.SculptingWarning, match="sculpts the m spectrum"):
        result = A.sideband_check(m, by_m, REGION)
    assert result["sculpts"] and result["fit_ok"] and result["max_abs_pull"] > 10
    for scores in (rng.uniform(size=m.size), m + rng.normal(0, 0.5, m.size)):  # none, smooth
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            result = A.sideband_check(m, scores, REGION)
        assert not result["sculpts"] and result["max_abs_pull"] < 3
    # the validation windows: one SR width next to the SR on each side, inside the fit range
    assert np.allclose(result["windows"], [[2.9, 3.3], [3.7, 4.1]])
    assert result["pulls"].shape == (3, 2) and result["efficiencies"] == [1.0, 0.2, 0.05]


def test_numbers_on_a_toy_with_a_known_answer():
    # an exactly smooth spectrum (quantiles of m^-4, no Poisson noise): the fit is exact
    n = 400_000
    u = (np.arange(n) + 0.5) / n
    m = 2.1 * (1 - 0.97 * u) ** (-1 / 3)
    m = m[REGION.sidebands(m)]
    in_window = (m > 3.7) & (m < 4.1)
    # every event of the right-hand window is kept; elsewhere every 10th value 0.85 or 0.95
    # of a cycle 0.05, ..., 0.95 (20 %, evenly in m)
    scores = np.where(in_window, 1.0, (np.arange(m.size) * 7 % 10) / 10 + 0.05)
    result = A.sideband_check(m, scores, REGION, (0.2,), reference_scores=np.linspace(0, 1, 1001),
                              warn=False)  # fmt: skip
    no_cut, cut = result["pulls"][:, 1]
    assert abs(no_cut) < 0.05  # an exact spectrum: the fit predicts the window
    assert result["observed"][1, 1] == in_window.sum()
    expected = 0.2 * in_window.sum()  # what the other 80 % of the spectrum interpolates to
    assert result["predicted"][1, 1] == pytest.approx(expected, rel=0.01)
    # the pull: (observed - predicted) / sqrt(predicted + the fit's variance)
    error = result["predicted_error"][1, 1]
    assert 0 < error < 0.1 * expected
    assert cut == pytest.approx((in_window.sum() - expected) / np.sqrt(expected + error**2),
                                rel=0.02)  # fmt: skip


def test_a_spectrum_the_fit_cannot_describe_is_reported_not_judged():
    rng = np.random.default_rng(0)
    m = _sideband_m(rng, 200_000)
    m = np.concatenate([m, rng.uniform(3.8, 3.9, 4000)])  # a step the cubic cannot follow
    with pytest.warns(A.SculptingWarning, match="cannot judge"):
        result = A.sideband_check(m, rng.uniform(size=m.size), REGION)
    assert not result["fit_ok"]


def test_refuses_bad_input():
    rng = np.random.default_rng(0)
    m = _sideband_m(rng, 20_000)
    s = rng.uniform(size=m.size)
    with pytest.raises(ValueError, match="inside the signal region"):
        A.sideband_check(np.append(m, 3.5), np.append(s, 0.5), REGION)
    with pytest.raises(ValueError, match="differ in length"):
        A.sideband_check(m, s[:-1], REGION)
    with pytest.raises(ValueError, match="efficiencies"):
        A.sideband_check(m, s, REGION, (1.0,))
    with pytest.raises(ValueError, match="non-finite"):
        A.sideband_check(m, np.where(m > 4, np.nan, s), REGION)
    with pytest.raises(ValueError, match="no validation window"):
        A.sideband_check(m, s, REGION, window=0.4)


# -- FlatInM: the score's quantile among background samples at the event's m -------------------
class _Background:
    """Background with two features: ``m`` itself and an independent N(0, 1)."""

    def sample(self, m, seed=0):
        m = np.asarray(m, float)
        return np.stack([m, np.random.default_rng(seed).standard_normal(len(m))], 1)


class _PrefersSR:
    """A score that prefers the SR's m through the first feature (a fake-bump maker)."""

    background = _Background()

    def score(self, x, m=None):
        x = np.asarray(x)
        return -np.abs(x[:, 0] - REGION.center) + 0.3 * x[:, 1]


def test_flat_in_m_matches_the_analytic_quantile():
    from scipy.stats import norm

    flat = A.FlatInM(_PrefersSR(), m_range=(2.5, 4.5), bins=20, per_bin=20_000, seed=1).fit()
    scores = np.array([-0.3, -0.05, 0.0, 0.4])
    x = np.stack([3.575 + 0 * scores, (scores + 0.075) / 0.3], 1)  # between nodes 3.5, 3.6
    assert _PrefersSR().score(x) == pytest.approx(scores)
    # P(a sample scores below s) = P(-|m - 3.5| + 0.3 z < s) at the nodes m = 3.5 and 3.6,
    # weighted 1/4 and 3/4 (the event's m is 3/4 of the way)
    expected = 0.25 * norm.cdf(scores / 0.3) + 0.75 * norm.cdf((scores + 0.1) / 0.3)
    assert flat.score(x, x[:, 0]) == pytest.approx(expected, abs=0.012)


def test_flat_in_m_removes_the_sculpting_of_a_score_that_selects_by_m():
    rng = np.random.default_rng(2)
    m = 2.1 * (1 - rng.uniform(0.0, 0.97, 400_000)) ** (-1 / 3)
    m = m[(m > 2.5) & (m < 4.5)]
    x = _Background().sample(m, seed=3)
    raw = _PrefersSR().score(x)
    flat = A.FlatInM(_PrefersSR(), m_range=(2.5, 4.5), seed=4).fit()
    before = A.sculpting(m, raw, REGION, (0.2, 0.05))[1:]
    after = A.sculpting(m, flat.score(x, m), REGION, (0.2, 0.05))[1:]
    assert all(r["pull"] > 5 and r["bias"] > 0.3 for r in before)  # a fake bump
    assert all(abs(r["pull"]) < 2 and abs(r["bias"]) < 0.06 for r in after)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the sideband check passes the flattened score
        side = REGION.sidebands(m)
        assert not A.sideband_check(m[side], flat.score(x[side], m[side]), REGION)["sculpts"]


def test_flat_in_m_refuses_bad_input():
    with pytest.raises(ValueError, match="background density"):
        A.FlatInM(object(), m_range=(2.5, 4.5))
    with pytest.raises(ValueError, match="m_range"):
        A.FlatInM(_PrefersSR(), m_range=(4.5, 2.5))
    flat = A.FlatInM(_PrefersSR(), m_range=(2.5, 4.5), bins=4, per_bin=100)
    with pytest.raises(RuntimeError, match="not fitted"):
        flat.score(np.zeros((1, 2)), [3.0])
    flat.fit()
    with pytest.raises(ValueError, match="outside m_range"):
        flat.score(np.zeros((2, 2)), [3.0, 5.0])
