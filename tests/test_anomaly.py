"""Weakly supervised anomaly detection: the bump-hunt generator, the metrics and the methods."""

import numpy as np
import pytest
from scipy import integrate

from pyroflows.datasets import BumpHuntGenerator, bump_hunt

SMALL = dict(n_test_background=2000, n_test_signal=200, n_extra_background=2000, n_extra_signal=200)


# -- the generator --------------------------------------------------------------------------
@pytest.mark.parametrize("correlation", ["none", "realistic", "strong", 1.5])
def test_generator_densities_normalise(correlation):
    gen = BumpHuntGenerator(correlation=correlation)
    total, _ = integrate.quad(lambda m: np.exp(gen.log_prob_m(np.array([m])))[0], 2.5, 6.5)
    assert total == pytest.approx(1.0, rel=1e-8)
    sr_mass, _ = integrate.quad(lambda m: np.exp(gen.log_prob_m(np.array([m])))[0], 3.3, 3.7)
    assert gen.background_fraction(3.3, 3.7) == pytest.approx(sr_mass, rel=1e-8)
    # both x densities are normalised: E_q[p / q] = 1 under a broad proposal q, a Gaussian in
    # the logit space of the two bounded features (its log-Jacobian computed here).
    rng = np.random.default_rng(0)
    m = np.full(100_000, 3.6)
    signal = lambda x: gen.log_prob_signal_x(x)  # noqa: E731
    for log_p, center, scale in [(lambda x: gen.log_prob_background_x(x, m), 0.0, 2.0),
                                 (signal, np.array(gen.signal_mean), 0.7)]:  # fmt: skip
        g = center + scale * rng.standard_normal((100_000, 4))
        x = np.concatenate([g[:, :2], 1 / (1 + np.exp(-g[:, 2:]))], axis=1)
        log_q = (-0.5 * ((g - center) / scale) ** 2 - np.log(scale * np.sqrt(2 * np.pi))).sum(1)
        log_q -= np.log(x[:, 2:] * (1 - x[:, 2:])).sum(1)
        assert np.exp(log_p(x) - log_q).mean() == pytest.approx(1.0, abs=0.03)


def test_generator_fractions_and_correlation_knob():
    for correlation, slope in [("none", 0.0), ("realistic", 0.5), ("strong", 3.0)]:
        hunt = bump_hunt(40_000, s_over_b=0.02, correlation=correlation, seed=1, **SMALL)
        d = hunt.data
        in_sr = (d.m > 3.3) & (d.m < 3.7)
        bg = d.label == 0
        expected = 40_000 * hunt.generator.background_fraction(3.3, 3.7)
        assert abs((in_sr & bg).sum() - expected) < 4 * np.sqrt(expected)
        assert d.label[in_sr].sum() / (in_sr & bg).sum() == pytest.approx(0.02, rel=0.1)
        fitted = np.polyfit(d.m[bg], d.x[bg, 0], 1)[0]
        assert fitted == pytest.approx(0.7 * slope, abs=0.03)
    assert (hunt.test.m > 3.3).all() and (hunt.test.m < 3.7).all()
    assert hunt.test.label.sum() == 200 and len(hunt.extra_background) == 2000
    assert ((hunt.data.x[:, 2:] > 0) & (hunt.data.x[:, 2:] < 1)).all()
    again = bump_hunt(40_000, s_over_b=0.02, correlation="strong", seed=1, **SMALL)
    np.testing.assert_array_equal(again.data.x, hunt.data.x)
    with pytest.raises(ValueError, match="correlation"):
        BumpHuntGenerator(correlation="weird")
