"""Defects found by probing as a sceptical user (calorimeter generator, reweighting and the
classifier metric, DiscFlow, anomaly detection): each test reproduces one silently wrong
answer, ignored option or half-changed state, and asserts the refusal or the right answer.
Every test here fails on the code before the fix (named in each docstring)."""

from __future__ import annotations

import signal
import tempfile

import numpy as np
import pandas as pd
import pytest
import torch

import pyroflows as pf
from pyroflows import anomaly as A
from pyroflows.calo import TwoStepGenerator
from pyroflows.datasets import bump_hunt, calo_showers
from pyroflows.diagnostics import c2st
from pyroflows.validation import InvalidOption


# -- checkpoints -------------------------------------------------------------------------------
def test_a_checkpoint_path_never_overwrites_a_users_file(tmp_path):
    """Old code: ``train.fit(..., checkpoint="user.csv")`` (and ``DensityEstimator.fit`` with
    it) replaced the user's CSV file by a zip archive, although ``save`` and the command line
    refuse that path."""
    from pyroflows.losses import nll
    from pyroflows.train import fit

    user = tmp_path / "user.csv"
    user.write_text("a,b\n1,2\n3,4\n")
    before = user.read_bytes()
    x = torch.randn(100, 2)
    with pytest.raises(ValueError, match="not a file pyroflows wrote"):
        fit(pf.maf(2, layers=1, hidden=(8,)), nll, (x,), max_epochs=1, progress=False,
            checkpoint=user)  # fmt: skip
    est = pf.DensityEstimator(flow="maf", layers=1, hidden=(8,), max_epochs=1, progress=False)
    with pytest.raises(ValueError, match="not a file pyroflows wrote"):
        est.fit(x.numpy(), checkpoint=str(user))
    assert user.read_bytes() == before
    # a checkpoint pyroflows wrote is still replaced and resumed
    own = tmp_path / "run.ckpt"
    flow = pf.maf(2, layers=1, hidden=(8,))
    fit(flow, nll, (x,), max_epochs=1, progress=False, checkpoint=own, seed=0)
    fit(flow, nll, (x,), max_epochs=2, progress=False, checkpoint=own, resume=own, seed=0)


def test_the_command_line_still_replaces_a_foreign_checkpoint_file_with_force(tmp_path):
    """``--force`` lets ``--checkpoint`` replace a file pyroflows did not write, as its help
    says. Old code: ``DensityEstimator.fit`` refused the file although ``--force`` was given
    (the command line now removes it first when told to)."""
    from pyroflows.cli import main

    data, notes = tmp_path / "data.csv", tmp_path / "notes.txt"
    np.savetxt(data, np.random.default_rng(0).normal(size=(100, 2)), delimiter=",")
    notes.write_text("my notes\n")
    argv = [
        "fit",
        str(data),
        "--out",
        str(tmp_path / "m.pt"),
        "--checkpoint",
        str(notes),
        "--flow",
        "maf",
        "--layers",
        "1",
        "--hidden",
        "8",
        "--epochs",
        "1",
        "--no-progress",
    ]
    assert main(argv) == 2 and notes.read_text() == "my notes\n"
    assert main(argv + ["--force"]) == 0 and notes.read_bytes()[:2] == b"PK"


# -- calorimeter generator ---------------------------------------------------------------------
def _generator(s) -> TwoStepGenerator:
    return TwoStepGenerator(
        s.layer_sizes, s.threshold, energy_flow=pf.nsf(3, 1, layers=1, hidden=(8,)),
        shower_flow=pf.nsf(99, 4, layers=1, hidden=(8,)),
    )  # fmt: skip


@pytest.fixture(scope="module")
def calo_fitted():
    s = calo_showers(200, seed=0)
    gen = _generator(s).fit(s.energy, s.voxels, max_epochs=1, progress=False)
    return s, gen


def _calo_state(gen: TwoStepGenerator) -> dict:
    return {
        "range": gen.log_energy_range_,
        "pre": gen.pre_,
        "flow1": {k: v.clone() for k, v in gen.energy_flow.state_dict().items()},
        "flow2": {k: v.clone() for k, v in gen.shower_flow.state_dict().items()},
        "history": gen.history_,
    }


def _assert_same(before: dict, gen: TwoStepGenerator) -> None:
    after = _calo_state(gen)
    assert after["range"] == before["range"]
    assert after["history"] is before["history"] and after["pre"] is before["pre"]
    for key in ("flow1", "flow2"):
        assert all(torch.equal(after[key][k], v) for k, v in before[key].items()), key


@pytest.mark.parametrize(
    "options",
    [dict(max_epochs=(1, 0)), dict(time_budget=(None, -1.0)), dict(lr=-1.0)],
    ids=["epochs-of-flow-II", "budget-of-flow-II", "lr"],
)
def test_calo_refit_with_a_bad_option_changes_nothing(calo_fitted, options):
    """Old code: the standardisations and the energy range were replaced by the new showers'
    (and flow I retrained on them) before flow II's option raised, so sampling mixed the new
    encoding with the old flows."""
    _, gen = calo_fitted
    before = _calo_state(gen)
    other = calo_showers(200, seed=1, energy_range=(200.0, 1000.0))
    kwargs = {"max_epochs": 1, "progress": False, **options}
    with pytest.raises(ValueError):
        gen.fit(other.energy, other.voxels, **kwargs)
    _assert_same(before, gen)


def test_calo_refit_that_fails_while_training_flow_two_restores_flow_one(calo_fitted):
    """Old code: flow I stayed trained on the new showers when flow II's training raised."""
    _, gen = calo_fitted
    before = _calo_state(gen)
    other = calo_showers(200, seed=1, energy_range=(200.0, 1000.0))
    calls = []

    def stop_in_flow_two(epoch, history):
        calls.append(epoch)
        if len(calls) > 1:  # flow I ran its one epoch; this is flow II
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        gen.fit(other.energy, other.voxels, max_epochs=1, progress=False,
                callback=stop_in_flow_two)  # fmt: skip
    _assert_same(before, gen)


def test_calo_options_of_the_wrong_kind_are_refused(calo_fitted):
    """Old code: ``redequantise="no"`` and ``log_dequantise="no"`` meant True; a triple of
    epochs silently dropped its third value; a checkpoint path was written by both flows."""
    s, gen = calo_fitted
    with pytest.raises(InvalidOption, match="log_dequantise"):
        TwoStepGenerator(s.layer_sizes, s.threshold, log_dequantise="no")
    with pytest.raises(InvalidOption, match="redequantise"):
        gen.fit(s.energy, s.voxels, max_epochs=1, progress=False, redequantise="no")
    with pytest.raises(ValueError, match="pair"):
        gen.fit(s.energy, s.voxels, max_epochs=(1, 1, 5), progress=False)
    with pytest.raises(ValueError, match="two flows"):
        gen.fit(s.energy, s.voxels, max_epochs=1, progress=False, checkpoint="gen.pt")


def test_calo_decode_refuses_non_finite_features(calo_fitted):
    """Old code: a NaN feature gave NaN voxels (the threshold keeps NaN), and a total-energy
    feature of 800 gave infinite voxels, both returned as showers."""
    s, gen = calo_fitted
    _, f1, f2 = gen.encode(s.energy[:3], s.voxels[:3])
    bad2 = f2.copy()
    bad2[1, 5] = np.nan
    with pytest.raises(ValueError, match="features2 has NaN"):
        gen.decode(s.energy[:3], f1, bad2)
    big = f1.copy()
    big[2, 0] = 800.0
    with pytest.raises(ValueError, match="infinite layer energies"):
        gen.decode(s.energy[:3], big, f2)


@pytest.mark.parametrize(
    "options",
    [dict(noise=float("nan")), dict(threshold=float("nan")), dict(hit_energy=float("nan")),
     dict(energy_range=(1.0, float("inf")))],
    ids=["noise", "threshold", "hit_energy", "energy_range"],
)  # fmt: skip
def test_calo_showers_refuses_non_finite_settings(options):
    """Old code: ``noise=nan`` gave NaN voxels and ``threshold=nan`` showers that were not
    zero-suppressed, both without a word."""
    with pytest.raises(ValueError, match="finite|inf"):
        calo_showers(20, **options)


# -- reweighting, resampling and the classifier metric ------------------------------------------
def test_resample_takes_pandas_rows_by_position():
    """Old code: ``samples[index]`` looked a Series up by its labels (index [3, 2, 1, 0]: the
    row of weight 1 came back as 10.0 instead of 40.0) and a DataFrame by its columns."""
    s = pd.Series([10.0, 20.0, 30.0, 40.0], index=[3, 2, 1, 0])
    assert pf.resample(s, [0, 0, 0, 1.0], n=5).tolist() == [40.0] * 5
    df = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [4.0, 5.0, 6.0]}, index=[7, 8, 9])
    out = pf.resample(df, [0, 1.0, 0], n=3)
    assert list(out.columns) == ["a", "b"] and out["b"].tolist() == [5.0] * 3


def test_c2st_weights_name_the_rows_of_x_they_belong_to():
    """X ~ N(0, 1), Y ~ N(1, 1): the exact weight p_Y / p_X of a row x is exp(x - 1/2). With
    X the larger set it is subsampled, and the weights follow ``X[x_rows]``. Old code: no
    ``x_rows``; the weights were in the subsample's random order, matching no rows of X."""
    rng = np.random.default_rng(0)
    X, Y = rng.normal(0, 1, (2000, 1)), rng.normal(1, 1, (500, 1))
    r = c2st(X, Y, "logistic", n_bootstrap=0)
    assert len(r.weights) == len(r.x_rows) == 500
    exact = X[r.x_rows, 0] - 0.5
    assert np.abs(np.log(r.weights) - exact).mean() < 0.1
    # the same data the other way round: no subsampling, weights in X's own order
    r2 = c2st(X[:500], Y, "logistic", n_bootstrap=0)
    assert np.array_equal(r2.x_rows, np.arange(500))
    assert np.abs(np.log(r2.weights) - (X[:500, 0] - 0.5)).mean() < 0.1


def test_calibration_refuses_labels_and_probabilities_out_of_range():
    """Old code: labels 0/2 were fitted as if 2 were the positive class, and labels 0/0.7 were
    truncated to 0 by ``astype(int)`` (an sklearn error about one class followed)."""
    from pyroflows.reweight import calibrate_out_of_fold

    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 2, 200), rng.uniform(0.01, 0.99, 200)
    for labels in (2 * y, 0.7 * y):
        with pytest.raises(ValueError, match="0/1 label"):
            calibrate_out_of_fold(p, labels, "isotonic")
    with pytest.raises(ValueError, match="probabilities"):
        calibrate_out_of_fold(np.r_[p[:-1], 1.5], y)


def test_classifier_squares_is_a_boolean_option():
    """Old code: ``squares="no"`` meant True."""
    with pytest.raises(InvalidOption, match="squares"):
        pf.classify.Classifier("hgb", squares="no")


# -- DiscFlow --------------------------------------------------------------------------------
def test_discflow_warm_start_refuses_columns_in_another_order():
    """Old code: a warm-start estimator fitted on columns (h, w) was refined on (w, h) with
    only the generic "X does not have valid feature names" warning."""
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"h": rng.normal(170, 10, 300), "w": rng.normal(70, 5, 300)})
    est = pf.DensityEstimator(flow="maf", layers=1, hidden=(8,), max_epochs=2, progress=False)
    est.fit(df)
    with pytest.raises(ValueError, match="same order"):
        pf.discflow(df[["w", "h"]], est, warm_start=True, rounds=1, epochs_per_round=1)


def test_discflow_weights_refuse_a_cap_that_is_not_positive():
    """Old code: ``weights(draws, max_weight=-1)`` returned -1 for every draw."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 2))
    est = pf.DensityEstimator(flow="maf", layers=1, hidden=(8,), max_epochs=2, progress=False)
    result = pf.discflow(X, est, rounds=1, epochs_per_round=1)
    assert (result.weights(X[:5]) > 0).all()
    for cap in (-1.0, 0.0, float("nan")):
        with pytest.raises(ValueError, match="max_weight"):
            result.weights(X[:5], max_weight=cap)


def test_discflow_keeps_the_column_names_of_a_frame():
    """Old code: the estimator was fitted on a bare array, so the result scored a frame with
    swapped columns (only a warning that it was fitted without names)."""
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"h": rng.normal(170, 10, 300), "w": rng.normal(70, 5, 300)})
    est = pf.DensityEstimator(flow="maf", layers=1, hidden=(8,), max_epochs=2, progress=False)
    result = pf.discflow(df, est, rounds=1, epochs_per_round=1)
    assert list(result.estimator.feature_names_in_) == ["h", "w"]
    with pytest.raises(ValueError, match="same order"):
        result.estimator.score(df[["w", "h"]])


# -- anomaly detection ---------------------------------------------------------------------------
def _events(n: int = 2000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    m = rng.uniform(2.5, 4.5, n)
    return rng.normal(size=(n, 2)) + 0.3 * m[:, None], m


def _density() -> A.ConditionalDensity:
    return A.ConditionalDensity(layers=1, hidden=(8,), max_epochs=2)


def test_anode_refit_with_an_empty_signal_region_changes_nothing():
    """Old code: the background was retrained on the new events, then the SR's data density
    raised on its empty input: the scores then mixed the new background with the old data
    density (they moved by 36 nats)."""
    x, m = _events()
    region = A.SignalRegion(3.3, 3.7)
    anode = A.ANODE(region, _density(), _density()).fit(x, m)
    before = anode.score(x[:20], m[:20])
    m_out = np.where(region.inside(m), 2.6, m)  # no event left in the SR
    with pytest.raises(ValueError, match="0 event.*signal region"):
        anode.fit(x + 5.0, m_out)
    assert np.array_equal(anode.score(x[:20], m[:20]), before)


def test_ranode_and_cathode_refuse_an_empty_window_before_training():
    """Old code: both retrained their background before the empty SR raised (CATHODE in the
    KDE, RANODE in the flow's fit)."""
    x, m = _events()
    region = A.SignalRegion(3.3, 3.7)
    far = m + 100.0  # m in other units: nothing in the SR, everything in the sidebands
    for detector in (A.RANODE(region, _density(), max_epochs=1),
                     A.CATHODE(region, _density(), "hgb")):  # fmt: skip
        with pytest.raises(ValueError, match="0 event.*signal region"):
            detector.fit(x, far)
        assert not detector.background.members_  # never trained


def test_conditional_density_refit_that_fails_keeps_the_fitted_members():
    """Old code: ``fit`` set the new preprocessing and emptied the members before a member's
    training raised."""
    x, m = _events()
    density = _density().fit(x, m)
    members, pre = density.members_, density.preprocessor_
    density.max_epochs = 0  # the loop refuses it
    with pytest.raises(ValueError):
        density.fit(x + 5.0, m)
    assert density.members_ is members and density.preprocessor_ is pre


def test_conditional_density_refuses_to_resume_best_epochs_from_a_checkpoint():
    """Old code: a rerun with the same ``checkpoint_dir`` resumed the finished run's best state
    and kept 1 member instead of ``best_epochs`` (3 -> 1, log-densities 0.06 nats apart)."""
    x, m = _events()
    options = dict(layers=1, hidden=(8,), max_epochs=3, best_epochs=3,
                   checkpoint_dir=tempfile.mkdtemp())  # fmt: skip
    first = A.ConditionalDensity(**options).fit(x, m)
    assert len(first.members_) == 3
    with pytest.raises(ValueError, match="best epochs"):
        A.ConditionalDensity(**options).fit(x, m)
    # one state per flow is all best_epochs=1 asks for: resuming it is the same density
    single = {**options, "best_epochs": 1, "checkpoint_dir": tempfile.mkdtemp()}
    again = A.ConditionalDensity(**single).fit(x, m)
    resumed = A.ConditionalDensity(**single).fit(x, m)
    assert np.array_equal(resumed.log_prob(x[:20], m[:20]), again.log_prob(x[:20], m[:20]))


def test_conditional_density_refuses_nan_rather_than_scoring_it():
    """Old code: ``log_prob`` gave -inf (the value of an event outside the bounds) for a NaN
    feature, and ``sample`` returned NaN rows for a NaN ``m``, both without a word."""
    x, m = _events(500)
    density = _density().fit(x, m)
    bad_x = x[:5].copy()
    bad_x[2, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        density.log_prob(bad_x, m[:5])
    with pytest.raises(ValueError, match="m has 1 NaN"):
        density.sample(np.r_[m[:3], np.nan])
    with pytest.raises(ValueError, match="m has 1 NaN"):
        density.log_prob(x[:2], [3.0, np.nan])
    assert np.isneginf(density.log_prob(np.r_[x[:1], [[np.inf, 0.0]]], m[:2])[1])


def test_flat_in_m_refuses_a_background_trained_inside_the_signal_region():
    """Old code: ``FlatInM`` took quantiles from a density trained on all events (the signal
    region included: it models what the region holds, signal too) without a word."""
    x, m = _events()
    region = A.SignalRegion(3.3, 3.7)
    cwola = A.CWoLa(region, "hgb").fit(x, m)
    everywhere = _density().fit(x, m)
    with pytest.raises(ValueError, match="inside the detector's signal region"):
        A.FlatInM(cwola, everywhere, bins=2, per_bin=50)
    sb = region.sidebands(m)
    sidebands = _density().fit(x[sb], m[sb])
    assert A.FlatInM(cwola, sidebands, bins=2, per_bin=50).fit().score(x[:5], m[:5]).shape == (5,)


def test_supervised_refuses_labels_other_than_zero_and_one():
    """Old code: events labelled 2 were dropped from both classes without a word."""
    x, _ = _events(300)
    y = np.random.default_rng(0).integers(0, 3, 300)
    with pytest.raises(ValueError, match="0/1 label"):
        A.Supervised("hgb").fit(x, y)


def test_kde_sample_gives_up_when_the_window_has_no_mass():
    """Old code: an endless loop when the values of m lie far from the window."""

    def timeout(signum, frame):
        raise TimeoutError("kde_sample did not return")

    previous = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(20)
    try:
        with pytest.raises(ValueError, match="almost no mass"):
            A.kde_sample(np.array([1.0, 1.1, 1.2]), 10, 100.0, 101.0)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_metrics_refuse_counts_and_rates_out_of_range():
    """Old code: a negative signal count gave a positive significance (0.32 for s=-1, b=10),
    a NaN sideband width selected no events, and fpr=2 used twice the background."""
    with pytest.raises(ValueError, match="signal count"):
        A.significance(-1.0, 10.0)
    with pytest.raises(ValueError, match="sideband_width"):
        A.SignalRegion(3.3, 3.7, sideband_width=float("nan"))
    y = np.repeat([0, 1], [50, 50])
    with pytest.raises(ValueError, match="fpr"):
        A.significance_after_cut(y, y + 0.0, 10, 1000, fpr=2.0)


def test_bump_hunt_refuses_a_resonance_outside_the_signal_region():
    """Old code: ``m_signal`` far from the SR divided by a signal fraction of 0."""
    with pytest.raises(ValueError, match="signal region"):
        bump_hunt(1000, 0.05, n_test_background=10, n_test_signal=10, n_extra_background=10,
                  n_extra_signal=10, m_signal=10.0)  # fmt: skip
