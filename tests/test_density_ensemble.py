"""``DensityEstimator(ensemble=k)``: members on their own seeds and splits, the log of the mean
density, the members' spread as ``return_std``, mixture draws, save / load."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pyroflows.density import DensityEstimator
from pyroflows.density_ensemble import SD_FACTOR
from pyroflows.tabular import log_mean_exp

TINY = dict(flow="maf", layers=1, hidden=(8,), max_epochs=3, progress=False)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(300, 2)) * [1.0, 3.0], rng.normal(size=(50, 2)) * [1.0, 3.0]


@pytest.fixture(scope="module")
def ensemble(data):
    return DensityEstimator(**TINY, ensemble=3, random_state=4).fit(data[0])


def test_members_are_the_fits_on_successive_seeds(data, ensemble):
    X, X_test = data
    assert [m.random_state for m in ensemble.ensemble_] == [4, 5, 6]
    single = DensityEstimator(**TINY, random_state=5).fit(X)
    np.testing.assert_array_equal(
        ensemble.ensemble_[1].score_samples(X_test), single.score_samples(X_test)
    )
    scores = np.stack([m.score_samples(X_test) for m in ensemble.ensemble_])
    assert not np.allclose(scores[0], scores[1])  # other splits and initialisations
    log_p, sd = ensemble.score_samples(X_test, return_std=True)
    np.testing.assert_allclose(log_p, log_mean_exp(scores, axis=0), rtol=1e-12)
    np.testing.assert_allclose(sd, SD_FACTOR * scores.std(axis=0, ddof=1), rtol=1e-12)
    np.testing.assert_array_equal(ensemble.score_samples(X_test), log_p)
    assert ensemble.member_ == ensemble.ensemble_[0].member_


def test_return_std_needs_an_ensemble_and_a_flag(data, ensemble):
    single = DensityEstimator(**TINY).fit(data[0])
    with pytest.raises(ValueError, match="return_std=True needs an ensemble"):
        single.score_samples(data[1], return_std=True)
    with pytest.raises(ValueError, match="return_std must be True or False"):
        ensemble.score_samples(data[1], return_std="yes")
    with pytest.raises(ValueError, match="ensemble must be a positive integer"):
        DensityEstimator(ensemble=0).fit(data[0])
    with pytest.raises(ValueError, match="not available with ensemble=2"):
        DensityEstimator(**TINY, ensemble=2).fit(data[0], checkpoint="x.ckpt")


def test_draws_come_from_the_mixture_of_the_members(ensemble):
    draws = ensemble.sample(600, random_state=0)
    assert draws.shape == (600, 2)
    np.testing.assert_array_equal(draws, ensemble.sample(600, random_state=0))
    # each draw is one member's: with the member counts drawn, every member's rows are there
    rng = np.random.RandomState(0)
    counts = rng.multinomial(600, np.full(3, 1 / 3))
    first = ensemble.ensemble_[0].sample(int(counts[0]), random_state=int(rng.randint(2**31 - 1)))
    assert np.isin(first[:, 0], draws[:, 0]).all()


def test_an_ensemble_on_a_table_with_categories_saves_and_loads(tmp_path):
    rng = np.random.default_rng(2)
    frame = pd.DataFrame({"c": rng.choice(["a", "b"], 300), "x": rng.normal(size=300)})
    est = DensityEstimator(**TINY, ensemble=2).fit(frame)
    assert all(m.columns_.kinds == {"c": "categorical", "x": "continuous"} for m in est.ensemble_)
    path = tmp_path / "ens.pt"
    est.save(path)
    back = DensityEstimator.load(path)
    assert len(back.ensemble_) == 2
    for got, want in zip(
        back.score_samples(frame, return_std=True),
        est.score_samples(frame, return_std=True),
        strict=True,
    ):
        np.testing.assert_array_equal(got, want)
    pd.testing.assert_frame_equal(back.sample(40, random_state=1), est.sample(40, random_state=1))
    with pytest.raises(ValueError, match="categories not seen at fit time"):
        est.score_samples(pd.DataFrame({"c": ["z"], "x": [0.0]}))
    with pytest.warns(UserWarning, match="does not have valid feature names") as caught:
        est.score_samples(np.array([["a", 0.0]], dtype=object))
    assert len([w for w in caught if "feature names" in str(w.message)]) == 1
    # a refit without the ensemble drops the members
    est.set_params(ensemble=1).fit(frame)
    assert est.ensemble_ is None
