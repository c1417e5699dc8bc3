"""Weakly supervised anomaly detection: the bump-hunt generator, the metrics and the methods."""

import numpy as np
import pytest
import torch
from scipy import integrate

from pyroflows import anomaly as A
from pyroflows.classify import Classifier
from pyroflows.datasets import BumpHuntGenerator, Events, bump_hunt

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
    for correlation, slope in [("none", 0.0), ("realistic", 1.0), ("strong", 3.0)]:
        hunt = bump_hunt(40_000, s_over_b=0.02, correlation=correlation, seed=1, **SMALL)
        d = hunt.data
        in_sr = (d.m > 3.3) & (d.m < 3.7)
        bg = d.label == 0
        expected = 40_000 * hunt.generator.background_fraction(3.3, 3.7)
        assert abs((in_sr & bg).sum() - expected) < 4 * np.sqrt(expected)
        assert d.label[in_sr].sum() / (in_sr & bg).sum() == pytest.approx(0.02, rel=0.1)
        fitted = np.polyfit(d.m[bg], d.x[bg, 0], 1)[0]
        assert fitted == pytest.approx(-0.7 * slope, abs=0.03)
    assert (hunt.test.m > 3.3).all() and (hunt.test.m < 3.7).all()
    assert hunt.test.label.sum() == 200 and len(hunt.extra_background) == 2000
    assert ((hunt.data.x[:, 2:] > 0) & (hunt.data.x[:, 2:] < 1)).all()
    again = bump_hunt(40_000, s_over_b=0.02, correlation="strong", seed=1, **SMALL)
    np.testing.assert_array_equal(again.data.x, hunt.data.x)
    with pytest.raises(ValueError, match="correlation"):
        BumpHuntGenerator(correlation="weird")


# -- metrics ----------------------------------------------------------------------------------
def test_sic_of_perfect_and_random_classifiers():
    y = np.repeat([0, 1], [20_000, 2_000])
    for k in (20, 200, 2000):  # perfect: TPR 1 at the smallest FPR allowed, k / n_background
        assert A.max_sic(y, y.astype(float), min_background=k)["max_sic"] == pytest.approx(
            1 / np.sqrt(k / 20_000)
        )
    rng = np.random.default_rng(0)
    random = rng.uniform(size=y.size)  # TPR = FPR: SIC = sqrt(FPR) <= 1, AUC 0.5
    curve = A.sic_curve(y, random)
    assert curve.auc == pytest.approx(0.5, abs=0.02)
    assert A.max_sic(y, random, min_background=500)["max_sic"] == pytest.approx(1.0, abs=0.05)
    with pytest.raises(ValueError, match="exceeds"):
        A.max_sic(y, random, min_background=30_000)


def test_nonfinite_scores_are_counted_never_dropped():
    y = np.array([0, 0, 0, 1, 1, 1])
    s = np.array([0.1, np.nan, 0.3, np.inf, 0.8, -np.inf])
    with pytest.raises(ValueError, match="3 non-finite"):
        A.sic_curve(y, s)
    curve = A.sic_curve(y, s, nonfinite="lowest")
    assert curve.nonfinite == {"nan": 1, "posinf": 1, "neginf": 1}
    assert curve.n_signal + curve.n_background == 6  # all kept
    assert curve.tpr[-1] == 1 and curve.fpr[-1] == 1


def test_significance_and_band():
    assert A.significance(5, 10_000) == pytest.approx(5 / 100, rel=1e-3)
    y = np.repeat([0, 1], [10_000, 1_000])
    out = A.significance_after_cut(y, y.astype(float), 100, 10_000, fpr=0.01)
    assert out["tpr"] == pytest.approx(1.0) and out["improvement"] > 5
    assert A.band([3.0])["median"] == 3.0


def _falling_m(rng, n):
    """m with density proportional to m^-4 on [2.1, 6.7]."""
    return 2.1 * (1 - rng.uniform(0.0, 0.97, n)) ** (-1 / 3)


def test_sculpting_tells_a_fake_bump_from_a_smooth_tilt():
    rng = np.random.default_rng(1)
    region = A.SignalRegion(3.3, 3.7)
    m = _falling_m(rng, 200_000)
    random, tilt = rng.normal(size=m.size), m + rng.normal(0, 1.0, m.size)
    bump = -np.abs(m - region.center) + rng.normal(0, 0.3, m.size)
    for scores in (random, tilt):
        for r in A.sculpting(m, scores, region, (0.2, 0.05)):
            assert abs(r["pull"]) < 3 and r["fit_chi2_ndf"] < 3
    no_cut, *cuts = A.sculpting(m, bump, region, (0.2, 0.05))
    assert no_cut["efficiency"] == 1.0 and abs(no_cut["pull"]) < 3
    assert all(r["pull"] > 5 and r["bias"] > 0.1 for r in cuts)
    # the cut keeps the requested fraction of the SR background
    assert cuts[0]["observed"] == pytest.approx(0.2 * no_cut["observed"], abs=1)
    # a tilted selection changes the per-bin efficiency smoothly, a random one does not
    ratio = A.sculpting(m, tilt, region, (0.2,))[1]["efficiency_ratio"]
    assert np.all(np.diff(ratio) > 0)


def test_sculpting_refuses_bad_input():
    m = _falling_m(np.random.default_rng(0), 5_000)
    region = A.SignalRegion(3.3, 3.7)
    with pytest.raises(ValueError, match="differ in length"):
        A.sculpting(m, m[:-1], region)
    with pytest.raises(ValueError, match="efficiencies"):
        A.sculpting(m, m, region, (0.0,))
    with pytest.raises(ValueError, match="non-finite"):
        A.sculpting(m, np.where(m > 3.4, np.nan, m), region)
    with pytest.raises(ValueError, match="sideband bins"):
        A.sculpting(m, m, region, window=0.1, degree=3)


# -- the flows and the methods ------------------------------------------------------------------
BOUNDS = ([-np.inf, -np.inf, 0, 0], [np.inf, np.inf, 1, 1])
TINY_FLOW = dict(layers=2, hidden=(32,), max_epochs=15, batch_size=512, lr=3e-3, patience=3)


def test_conditional_sampling_is_vectorised_and_follows_m():
    hunt = bump_hunt(20_000, 0.0, "strong", seed=2, **SMALL)
    density = A.ConditionalDensity(ensemble=2, bounds=BOUNDS, **dict(TINY_FLOW, max_epochs=8))
    density.fit(hunt.data.x, hunt.data.m)
    calls = []
    for flow in density.members_:
        original = flow.sample
        flow.sample = lambda *a, _f=original, **k: calls.append(k["context"].shape) or _f(*a, **k)
    m = np.repeat([3.0, 4.5], 5_000)
    x = density.sample(m, seed=0)
    assert x.shape == (10_000, 4) and np.isfinite(x).all()
    assert calls == [(5_000, 1), (5_000, 1)]  # one pass per member, every event its own m
    assert ((x[:, 2:] > 0) & (x[:, 2:] < 1)).all()  # the logit keeps samples inside the bounds
    shift = x[5_000:, 0].mean() - x[:5_000, 0].mean()  # truth: 3.0 * -0.7 * 1.5 = -3.15
    assert shift == pytest.approx(-3.15, abs=0.5)
    np.testing.assert_array_equal(x, density.sample(m, seed=0))
    log_p = density.log_prob(x[:100], m[:100])
    assert log_p.shape == (100,) and np.isfinite(log_p).all()
    outside = x[:3].copy()
    outside[:, 2] = 1.5
    assert np.isneginf(density.log_prob(outside, m[:3])).all()


def test_cathode_on_null_data_cannot_tell_samples_from_data():
    hunt = bump_hunt(40_000, 0.0, "realistic", seed=3, **SMALL)
    density = A.ConditionalDensity(bounds=BOUNDS, **TINY_FLOW)
    cathode = A.CATHODE(A.SignalRegion(*hunt.sr), density, Classifier("hgb"), oversampling=3)
    cathode.fit(hunt.data.x, hunt.data.m)
    assert cathode.nonfinite_samples_ == 0
    assert len(cathode.samples_[0]) == 3 * A.SignalRegion(*hunt.sr).inside(hunt.data.m).sum()
    assert 0.45 < cathode.training_auc(folds=2) < 0.56


def test_strong_signal_is_found_by_every_method():
    hunt = bump_hunt(40_000, 0.15, "realistic", seed=4, **SMALL)
    region, d = A.SignalRegion(*hunt.sr), hunt.data
    background = A.ConditionalDensity(bounds=BOUNDS, **TINY_FLOW).fit(
        d.x[region.sidebands(d.m)], d.m[region.sidebands(d.m)]
    )
    detectors = {
        "cathode": A.CATHODE(region, background, Classifier("hgb"), refit_background=False),
        "anode": A.ANODE(
            region, background, A.ConditionalDensity(bounds=BOUNDS, **TINY_FLOW), False
        ),
        "cwola": A.CWoLa(region, Classifier("hgb")),
    }
    for name, detector in detectors.items():
        scores = detector.fit(d.x, d.m).score(hunt.test.x, hunt.test.m)
        assert np.isfinite(scores).all() and sum(detector.nonfinite_.values()) == 0, name
        assert A.max_sic(hunt.test.label, scores, min_background=20)["max_sic"] > 3, name
    ideal = A.IdealizedAD(region, Classifier("hgb")).fit(d.x, d.m, hunt.extra_background.x)
    both = Events.concat(hunt.extra_signal, hunt.extra_background)
    supervised = A.Supervised(Classifier("hgb")).fit(both.x, both.label)
    for detector in (ideal, supervised):
        result = A.max_sic(hunt.test.label, detector.score(hunt.test.x), min_background=20)
        assert result["max_sic"] > 3


def test_anode_counts_nonfinite_scores():
    hunt = bump_hunt(20_000, 0.05, "none", seed=5, **SMALL)
    small = dict(TINY_FLOW, max_epochs=2)
    anode = A.ANODE(
        A.SignalRegion(*hunt.sr),
        A.ConditionalDensity(bounds=BOUNDS, **small),
        A.ConditionalDensity(bounds=BOUNDS, **small),
    ).fit(hunt.data.x, hunt.data.m)
    x = hunt.test.x[:10].copy()
    x[:4, 3] = 2.0  # outside (0, 1): both densities are 0, the ratio is NaN
    with pytest.warns(RuntimeWarning, match="4 non-finite"):
        scores = anode.score(x, hunt.test.m[:10])
    assert len(scores) == 10 and np.isnan(scores[:4]).all() and anode.nonfinite_["nan"] == 4


def test_ranode_runs_end_to_end_without_nonfinite_scores():
    hunt = bump_hunt(40_000, 0.15, "realistic", seed=6, **SMALL)
    region, d = A.SignalRegion(*hunt.sr), hunt.data
    ranode = A.RANODE(region, A.ConditionalDensity(bounds=BOUNDS, **TINY_FLOW), max_epochs=15,
                      lr=3e-3, patience=3, init_fraction=0.05)  # fmt: skip
    scores = ranode.fit(d.x, d.m).score(hunt.test.x, hunt.test.m)
    assert np.isfinite(scores).all() and ranode.nonfinite_training_ == 0
    assert 0.02 < ranode.fraction_ < 0.4  # truth: 0.15 / 1.15 = 0.13
    assert A.max_sic(hunt.test.label, scores, min_background=20)["max_sic"] > 3


def test_best_epochs_ensemble_and_checkpoints(tmp_path):
    rng = np.random.default_rng(7)
    m = rng.uniform(2.5, 4.5, 3_000)
    x = np.stack([m + rng.normal(size=m.size), 1 / (1 + np.exp(-rng.normal(size=m.size)))], 1)
    density = A.ConditionalDensity(
        layers=1, hidden=(8,), max_epochs=4, patience=None, best_epochs=3, ensemble=2,
        bounds=([-np.inf, 0], [np.inf, 1]), checkpoint_dir=tmp_path,
    )  # fmt: skip
    density.fit(x, m)
    assert len(density.members_) == 6  # 2 flows x their 3 best epochs
    assert sorted(p.name for p in tmp_path.iterdir()) == ["member0.pt", "member1.pt"]
    assert np.isfinite(density.log_prob(x[:50], m[:50])).all()
    with pytest.raises(ValueError, match="finite"):
        density.fit(np.full((10, 2), np.nan), np.ones(10))


# -- the background model's fidelity and CATHODE's recipe ---------------------------------------
def test_background_fidelity_tells_a_good_model_from_an_m_blind_one():
    """At strong correlation the SR background's mean sits 0.3 * 3 = 0.9 sd (along the
    direction b) from the sidebands' at their mean m: a flow that ignores m is detectable, a
    flow of p(x | m) is not."""
    hunt = bump_hunt(20_000, 0.0, "strong", seed=8, **SMALL)
    region, d, e = A.SignalRegion(*hunt.sr), hunt.data, hunt.extra_background
    sb = region.sidebands(d.m)
    truth = hunt.generator.log_prob_background_x(e.x, e.m)
    flow = dict(TINY_FLOW, max_epochs=8)
    good = A.ConditionalDensity(bounds=BOUNDS, **flow).fit(d.x[sb], d.m[sb])
    blind = A.ConditionalDensity(bounds=BOUNDS, **flow).fit(
        d.x[sb],
        np.random.default_rng(0).permutation(d.m[sb]),  # m carries no information
    )
    g = A.background_fidelity(good, e.x, e.m, folds=2, true_log_prob=truth)
    b = A.background_fidelity(blind, e.x, e.m, folds=2, true_log_prob=truth)
    assert g["auc"] < 0.5 + 4 * g["auc_error"] and abs(g["kl"]) < 0.05
    assert b["auc"] > 0.7 and b["kl"] > 0.5  # measured: 0.81 and 0.94 nats
    with pytest.raises(ValueError, match="one m per row"):
        A.background_fidelity(good, e.x, e.m[:-1])
    with pytest.raises(ValueError, match="one value per event"):
        A.background_fidelity(good, e.x, e.m, true_log_prob=truth[:-1])


def test_best_epochs_keep_the_epochs_with_the_lowest_validation_loss():
    from pyroflows.losses import nll
    from pyroflows.train.recipe import validation_rows

    rng = np.random.default_rng(9)
    m = rng.uniform(2.5, 4.5, 2_000)
    x = np.stack([m + rng.normal(size=m.size), rng.normal(size=m.size)], 1)
    density = A.ConditionalDensity(
        layers=1, hidden=(8,), max_epochs=6, batch_size=256, lr=3e-2, patience=None,
        best_epochs=3, seed=1,
    ).fit(x, m)  # fmt: skip
    val_loss = np.array(density.histories_[0].val_loss)
    # distinct losses, not monotone: the 3 best are not the 3 last epochs
    assert len(density.members_) == 3 and len(set(np.round(val_loss, 5))) == 6
    assert set(np.argsort(val_loss)[:3]) != {3, 4, 5}
    # each member's own validation loss, recomputed on the held-out rows
    order = np.random.default_rng(1).permutation(len(x))[: validation_rows(len(x), 0.2)]
    z = density.preprocessor_.to_latent(torch.as_tensor(x[order]))[0].float()
    c = density._context(m[order])
    with torch.no_grad():
        own = sorted(float(nll(f, (z, c))) for f in density.members_)
    np.testing.assert_allclose(own, np.sort(val_loss)[:3], rtol=1e-5)


@pytest.mark.parametrize(
    "options, match",
    [
        (dict(best_epochs=0), "best_epochs"),
        (dict(best_epochs=6, max_epochs=5), "cannot exceed max_epochs"),
        (dict(ensemble=0), "ensemble"),
        (dict(schedule="linear"), "schedule must be one of"),
    ],
)
def test_conditional_density_refuses_invalid_options(options, match):
    with pytest.raises(ValueError, match=match):
        A.ConditionalDensity(**options)


def test_cathode_background_recipe_is_the_default():
    density = A.cathode_background(bounds=BOUNDS, seed=3, max_epochs=12)
    assert (density.family, density.layers, density.hidden) == ("maf", 4, (32, 32))
    assert (density.best_epochs, density.schedule, density.patience) == (5, "cosine", None)
    assert density.max_epochs == 12 and density.seed == 3 and density.bounds is BOUNDS
    cathode = A.CATHODE(A.SignalRegion(3.3, 3.7), seed=4)
    assert cathode.background.best_epochs == A.CATHODE_FLOW["best_epochs"] == 5
    assert cathode.background.seed == 4


@pytest.mark.parametrize("method", ["CWoLa", "CATHODE", "ANODE", "RANODE", "LaCATHODE"])
@pytest.mark.parametrize("where", ["x", "m"])
def test_non_finite_events_are_refused_before_fitting(method, where):
    """An event with a NaN m falls in neither the signal region nor a sideband, and gradient
    boosting takes a NaN x as a missing value: both used to be dropped or fitted silently."""
    rng = np.random.default_rng(3)
    m = rng.uniform(2.5, 4.5, 400)
    x = rng.normal(size=(400, 2))
    if where == "m":
        m[17] = np.nan
    else:
        x[17, 1] = np.inf
    detector = getattr(A, method)(A.SignalRegion(3.3, 3.7))
    with pytest.raises(ValueError, match=f"{where} has 1 NaN or infinite value.*event 17"):
        detector.fit(x, m)
    assert not hasattr(detector, "model_")


SHARED_DETECTORS = {
    "cathode": lambda r, b: A.CATHODE(r, b, Classifier("hgb", max_iter=10), refit_background=False),
    "lacathode": lambda r, b: A.LaCATHODE(
        r, b, Classifier("hgb", max_iter=10), refit_background=False
    ),
    "anode": lambda r, b: A.ANODE(
        r, b, A.ConditionalDensity(layers=1, hidden=(8,), max_epochs=1), refit_background=False
    ),  # fmt: skip
    "ranode": lambda r, b: A.RANODE(r, b, refit_background=False, max_epochs=1),
}


@pytest.mark.parametrize("name", sorted(SHARED_DETECTORS))
def test_a_shared_background_made_for_other_events_is_refused(name):
    """``refit_background=False`` shares a fitted background: one fitted on other features,
    on events inside this signal region (another region's sidebands), or not at all is
    refused before anything is trained, instead of a shape error deep inside or a detector
    whose background has learnt the signal."""
    hunt = bump_hunt(6_000, 0.0, "realistic", seed=5, **SMALL)
    d, region = hunt.data, A.SignalRegion(*hunt.sr)
    tiny = dict(layers=1, hidden=(8,), max_epochs=1)
    sb = region.sidebands(d.m)
    make = SHARED_DETECTORS[name]
    fitted = A.ConditionalDensity(**tiny).fit(d.x[sb][:, :3], d.m[sb])
    with pytest.raises(ValueError, match="fitted on 3 feature\\(s\\), the events have 4"):
        make(region, fitted).fit(d.x, d.m)
    width = region.high - region.low
    shifted = A.SignalRegion(region.low + 0.6 * width, region.high + 0.6 * width)
    other = A.ConditionalDensity(**tiny).fit(
        d.x[shifted.sidebands(d.m)], d.m[shifted.sidebands(d.m)]
    )
    inside = int(region.inside(d.m[shifted.sidebands(d.m)]).sum())
    assert inside > 0
    with pytest.raises(ValueError, match=f"trained on {inside} event\\(s\\) inside this signal"):
        make(region, other).fit(d.x, d.m)
    with pytest.raises(RuntimeError, match="needs a fitted background"):
        make(region, A.ConditionalDensity(**tiny)).fit(d.x, d.m)
    # the background of this region's sidebands is accepted
    make(region, A.ConditionalDensity(**tiny).fit(d.x[sb], d.m[sb])).fit(d.x, d.m)
