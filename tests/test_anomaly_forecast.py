"""The truth-free forecast of the bump hunt's pull from background-density samples
(pyroflows.anomaly.forecast)."""

import warnings

import numpy as np
import pytest

from pyroflows import anomaly as A

REGION = A.SignalRegion(3.3, 3.7)
EDGES = (2.5, 4.5)  # the fit range: the SR and two SR widths each side


def _m(rng, n):
    """m with density proportional to m^-4 on [2.1, 6.7]."""
    return 2.1 * (1 - rng.uniform(0.0, 0.97, n)) ** (-1 / 3)


def _by_m(m, x):
    """A score that learned the SR's m: it prefers m near the SR's centre (x: noise)."""
    return -np.abs(m - REGION.center) + 0.3 * x


def _truth(rng, score, n):
    """The bias and pull of a cut on ``score`` measured on ``n`` labelled background events
    (the existing truth-based check)."""
    m = _m(rng, n)
    m = m[(m > EDGES[0]) & (m < EDGES[1])]
    return A.sculpting(m, score(m, rng.standard_normal(m.size)), REGION, (0.2,))[1]


def test_the_forecast_matches_the_truth_for_a_right_density():
    rng = np.random.default_rng(1)
    data_m = _m(rng, 200_000)
    sample_m = rng.uniform(*EDGES, 400_000)
    x = rng.standard_normal(sample_m.size)  # the right density: x ~ N(0, 1) at every m
    smooth = lambda m, x: m + x  # noqa: E731  (prefers high m smoothly: not sculpting)
    for score, sculpts in ((_by_m, True), (smooth, False)):
        forecast = A.predict_sculpting(sample_m, score(sample_m, x), data_m, REGION, (0.2,),
                                       warn=False)  # fmt: skip
        truth = _truth(rng, score, 4_000_000)  # 20x the data
        # both biases within three standard errors (the forecast's from its samples' noise)
        scale = np.sqrt(forecast["predicted"][0] + forecast["predicted_error"][0] ** 2)
        error = forecast["pull_error"][0] * scale / forecast["predicted"][0]
        truth_error = np.sqrt(truth["predicted"] + truth["predicted_error"] ** 2)
        truth_error /= truth["predicted"]
        assert abs(forecast["bias"][0] - truth["bias"]) < 3 * np.hypot(error, truth_error)
        assert error < 0.03 and truth_error < 0.015
        assert forecast["sculpts"] == [sculpts] and forecast["any_sculpts"] is sculpts
    # the fake bump: a large positive pull at the data's size, far beyond the samples' noise
    f = A.predict_sculpting(sample_m, _by_m(sample_m, x), data_m, REGION, (0.2,), warn=False)
    assert f["pull"][0] > 5 and f["z"][0] > 10 and f["expected"][0] > f["predicted"][0]
    in_range = (data_m > EDGES[0]) & (data_m < EDGES[1])
    ratio = f["efficiency_ratio"][0]
    assert ratio[8:12].mean() == pytest.approx(1.0, abs=0.01) and ratio[0] < 0.5
    # the spectrum is the fit to the data's sidebands: its sum is about the data's count
    assert f["spectrum"].sum() == pytest.approx(in_range.sum(), rel=0.02)


def test_the_pull_error_is_the_samples_noise():
    # a cut that does not depend on m sculpts nothing: the forecast pull is pure sample noise,
    # so pull / pull_error is about N(0, 1) over replicas (and rarely flagged)
    rng = np.random.default_rng(2)
    data_m = _m(rng, 200_000)
    z, flags = [], 0
    for _ in range(40):
        sample_m = rng.uniform(*EDGES, 100_000)
        f = A.predict_sculpting(sample_m, rng.uniform(size=sample_m.size), data_m, REGION,
                                (0.2, 0.05), warn=False)  # fmt: skip
        z += f["z"]
        flags += f["any_sculpts"]
    assert 0.6 < np.mean(np.square(z)) < 1.6 and abs(np.mean(z)) < 0.4
    assert flags <= 2  # |z| > 3 has a 0.27 % chance per cut: 80 cuts


def test_warns_naming_the_efficiency_and_the_pull():
    rng = np.random.default_rng(3)
    data_m, sample_m = _m(rng, 200_000), rng.uniform(*EDGES, 400_000)
    scores = _by_m(sample_m, rng.standard_normal(sample_m.size))
    with pytest.warns(A.SculptingWarning, match=r"keeping 20% .* pull \+\d+\.\d \+- 0\.\d"):
        A.predict_sculpting(sample_m, scores, data_m, REGION, (0.2,))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        A.predict_sculpting(
            sample_m, sample_m + rng.standard_normal(sample_m.size), data_m, REGION, (0.2,)
        )  # prefers high m, smoothly
    # a looser threshold than the forecast pull: no flag, no warning
    f = A.predict_sculpting(sample_m, scores, data_m, REGION, (0.2,), threshold=1e3)
    assert not f["sculpts"][0]


def test_a_density_wrong_inside_the_sr_forecasts_what_it_believes():
    # the assumption: the density is right inside the SR. Truth: x ~ N(m, 1) and the score
    # x, a smooth cut that does not sculpt. A density whose x is shifted up inside the SR only
    # makes the forecast see a fake bump that the truth does not have
    rng = np.random.default_rng(4)
    data_m = _m(rng, 200_000)
    sample_m = rng.uniform(*EDGES, 400_000)
    right = sample_m + rng.standard_normal(sample_m.size)
    wrong = right + 0.3 * REGION.inside(sample_m)
    truth = _truth(rng, lambda m, x: m + x, 4_000_000)
    assert abs(truth["bias"]) < 0.02
    good = A.predict_sculpting(sample_m, right, data_m, REGION, (0.2,), warn=False)
    bad = A.predict_sculpting(sample_m, wrong, data_m, REGION, (0.2,), warn=False)
    assert not good["sculpts"][0] and abs(good["bias"][0]) < 0.02
    assert bad["sculpts"][0] and bad["bias"][0] > 0.3
    # the data's sidebands cannot see an error confined to the SR: they agree with both
    data_x = data_m + rng.standard_normal(data_m.size)
    bad = A.predict_sculpting(sample_m, wrong, data_m, REGION, (0.2,), scores=data_x, warn=False)
    assert bad["sideband_ok"]


def test_a_density_wrong_in_the_sidebands_is_caught_there():
    # a density shifted everywhere keeps the wrong fraction in the sidebands too: the data's
    # own sideband scores disagree with it and the forecast is declared untrustworthy
    rng = np.random.default_rng(5)
    data_m = _m(rng, 200_000)
    data_x = data_m + rng.standard_normal(data_m.size)
    sample_m = rng.uniform(*EDGES, 400_000)
    shifted = sample_m + 0.3 + rng.standard_normal(sample_m.size)
    with pytest.warns(A.SculptingWarning, match="not to be trusted"):
        f = A.predict_sculpting(sample_m, shifted, data_m, REGION, (0.2,), scores=data_x)
    assert not f["sideband_ok"] and max(f["sideband_max_abs_z"]) > f["sideband_limit"]
    right = sample_m + rng.standard_normal(sample_m.size)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        f = A.predict_sculpting(sample_m, right, data_m, REGION, (0.2,), scores=data_x)
    assert f["sideband_ok"] and f["sideband_chi2_ndf"][0] < 2


def test_cuts_follow_reference_scores():
    rng = np.random.default_rng(6)
    data_m, sample_m = _m(rng, 100_000), rng.uniform(*EDGES, 100_000)
    s = rng.uniform(size=sample_m.size)
    f = A.predict_sculpting(sample_m, s, data_m, REGION, (0.2, 0.05),
                            reference_scores=np.linspace(0, 1, 1001), warn=False)  # fmt: skip
    assert f["thresholds"] == pytest.approx([0.8, 0.95], abs=0.0011)  # the 200th, 50th of 1001
    g = A.predict_sculpting(sample_m, s, data_m, REGION, (0.2, 0.05), warn=False)
    assert g["thresholds"] == pytest.approx([0.8, 0.95], abs=0.01)  # the samples' own SR


class _Density:
    """x ~ N(m, 1): a background density with the sampling interface of a flow."""

    def sample(self, m, seed=0):
        return (m + np.random.default_rng(seed).standard_normal(len(m)))[:, None]


class _Detector:
    background = _Density()

    def score(self, x, m):
        return -np.abs(m - REGION.center) + 0.3 * (x[:, 0] - m)


def test_flow_sculpting_check_samples_the_detectors_background():
    rng = np.random.default_rng(7)
    data_m = _m(rng, 200_000)
    f = A.flow_sculpting_check(_Detector(), data_m, REGION, (0.2,), per_bin=10_000, warn=False)
    assert f["sculpts"] == [True] and f["pull"][0] > 5
    g = A.flow_sculpting_check(lambda x, m: x[:, 0], data_m, REGION, (0.2,), per_bin=10_000,
                               background=_Density(), warn=False)  # fmt: skip
    assert g["sculpts"] == [False]
    with pytest.raises(ValueError, match="background density"):
        A.flow_sculpting_check(lambda x, m: x[:, 0], data_m, REGION)
    with pytest.raises(ValueError, match="per_bin"):
        A.flow_sculpting_check(_Detector(), data_m, REGION, per_bin=0)


def test_refuses_bad_input():
    rng = np.random.default_rng(8)
    data_m, sample_m = _m(rng, 50_000), rng.uniform(*EDGES, 40_000)
    s = rng.uniform(size=sample_m.size)
    with pytest.raises(ValueError, match="differ in length"):
        A.predict_sculpting(sample_m, s[:-1], data_m, REGION)
    with pytest.raises(ValueError, match="differ in length"):
        A.predict_sculpting(sample_m, s, data_m, REGION, scores=data_m[:-1])
    with pytest.raises(ValueError, match="efficiencies"):
        A.predict_sculpting(sample_m, s, data_m, REGION, (1.0,))
    with pytest.raises(ValueError, match="non-finite"):
        A.predict_sculpting(sample_m, np.append(s[:-1], np.nan), data_m, REGION)
    with pytest.raises(ValueError, match="NaN or infinite"):
        A.predict_sculpting(sample_m, s, np.append(data_m, np.inf), REGION)
    with pytest.raises(ValueError, match="samples in the bin"):
        A.predict_sculpting(sample_m[sample_m > 3.0], s[sample_m > 3.0], data_m, REGION)
    with pytest.raises(ValueError, match="reference_scores is empty"):
        A.predict_sculpting(sample_m, s, data_m, REGION, reference_scores=[])
    with pytest.raises(ValueError, match="threshold"):
        A.predict_sculpting(sample_m, s, data_m, REGION, threshold=-1)
    with pytest.raises(ValueError, match="data events in the sideband"):
        A.predict_sculpting(sample_m, s, np.full(5, 3.0), REGION)
    only_sidebands = REGION.sidebands(sample_m).astype(float)  # the SR's samples all score 0
    with pytest.raises(ValueError, match="keeps no sample in the SR"):
        A.predict_sculpting(sample_m, only_sidebands, data_m, REGION, (0.2,),
                            reference_scores=np.ones(10))  # fmt: skip
    with pytest.raises(ValueError, match="min_per_bin=600"):  # the option is passed on
        A.flow_sculpting_check(_Detector(), data_m, REGION, per_bin=500, min_per_bin=600)
