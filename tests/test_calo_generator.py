"""The two-step conditional shower generator: the encoding is exact (dequantise/threshold,
layer energies and voxel shares round-trip), wrong input is refused before any state
changes, a small fitted generator returns exact zeros and consistent energies, follows its
conditions like the data, and its distilled student samples what the teacher samples."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import pyroflows as pf
from pyroflows.calo import encoding as enc
from pyroflows.datasets import calo_showers

SIZES = (25, 49, 25)


@pytest.fixture(scope="module")
def showers():
    return calo_showers(3000, seed=0)


def test_dequantise_and_threshold_are_exact_inverses(showers):
    v, t = showers.voxels, showers.threshold
    d = enc.dequantise(v, t, np.random.default_rng(0))
    assert (d > 0).all() and (d[v == 0] < t).all() and np.array_equal(d[v > 0], v[v > 0])
    assert np.array_equal(enc.threshold(d, t), v)  # zeros come back exactly 0


def test_dequantise_refuses_unsuppressed_voxels():
    with pytest.raises(ValueError, match="at least the threshold"):
        enc.dequantise(np.array([[0.0, 0.005]]), 0.01, np.random.default_rng(0))


def test_layer_energy_encoding_round_trips(showers):
    d = enc.dequantise(showers.voxels, showers.threshold, np.random.default_rng(1))
    layers = enc.layer_sums(d, SIZES)
    f = enc.encode_layer_energies(layers, showers.energy)
    assert np.isfinite(f).all()
    np.testing.assert_allclose(enc.decode_layer_energies(f, showers.energy), layers, rtol=1e-9)
    with pytest.raises(ValueError, match="> 0"):
        enc.encode_layer_energies(showers.layer_energies * 0, showers.energy)


def test_voxel_encoding_round_trips_and_renormalises(showers):
    d = enc.dequantise(showers.voxels, showers.threshold, np.random.default_rng(2))
    layers = enc.layer_sums(d, SIZES)
    f = enc.encode_voxels(d, SIZES)
    np.testing.assert_allclose(enc.decode_voxels(f, layers, SIZES), d, rtol=1e-8)
    # shares that do not sum to 1 are renormalised: decoded layers sum to the given energies
    noisy = f + np.random.default_rng(3).normal(0, 0.5, f.shape)
    np.testing.assert_allclose(enc.layer_sums(enc.decode_voxels(noisy, layers, SIZES), SIZES),
                               layers, rtol=1e-9)  # fmt: skip


def test_wrong_flows_and_input_are_refused(showers):
    with pytest.raises(ValueError, match="context_dim 4"):
        pf.TwoStepGenerator(SIZES, 0.01, shower_flow=pf.maf(99, 3, layers=1, hidden=(8,)))
    with pytest.raises(ValueError, match="threshold"):
        pf.TwoStepGenerator(SIZES, 0.0)
    gen = pf.TwoStepGenerator(SIZES, 0.01, shower_flow=pf.maf(99, 4, layers=1, hidden=(8,)))
    with pytest.raises(RuntimeError, match="fit the generator"):
        gen.sample([1.0])
    with pytest.raises(ValueError, match=r"voxels must be \(3000, 99\)"):
        gen.fit(showers.energy, showers.voxels[:, :98])
    with pytest.raises(ValueError, match="energy must be finite and > 0"):
        gen.fit(-showers.energy, showers.voxels)
    with pytest.raises(ValueError, match="at least the threshold"):
        gen.fit(showers.energy, showers.voxels + 0.001)
    assert not hasattr(gen, "pre_")  # nothing was fitted by the refused calls


@pytest.fixture(scope="module")
def fitted(showers):
    gen = pf.TwoStepGenerator(
        SIZES, showers.threshold,
        energy_flow=pf.nsf(3, 1, layers=2, hidden=(32,)),
        shower_flow=pf.maf(99, 4, layers=1, hidden=(64,)),
    )  # fmt: skip
    gen.fit(showers.energy[:2000], showers.voxels[:2000], max_epochs=(40, 4), batch_size=128,
            progress=False)  # fmt: skip
    gen.distill(max_epochs=1, progress=False)
    return gen


@pytest.mark.slow  # the shared fitted generator: about 15 s of CPU
def test_samples_have_exact_zeros_and_consistent_energies(fitted, showers):
    energy = np.geomspace(1, 100, 400)
    for sampler in ("teacher", "student"):
        out = fitted.sample(energy, seed=0, sampler=sampler)
        v = out.voxels
        assert v.shape == (400, 99) and out.layer_energies.shape == (400, 3)
        assert np.array_equal(out.energy, energy)
        assert ((v == 0) | (v >= showers.threshold)).all()  # nothing in (0, threshold)
        assert 0.1 < (v == 0).mean() < 0.9
        np.testing.assert_allclose(out.layer_energies, enc.layer_sums(v, SIZES))
        again = fitted.sample(energy, seed=0, sampler=sampler).voxels
        assert np.array_equal(v, again)


@pytest.mark.slow  # the shared fitted generator: about 15 s of CPU
def test_samples_follow_the_incident_energy_like_the_data(fitted):
    """Per energy bin, the generated visible fraction, layer-0 share and zero fraction match
    fresh reference showers; the data's trends (deeper, denser at high energy) are kept."""
    ref = calo_showers(3000, seed=7)
    out = fitted.sample(ref.energy, seed=1)
    stats = {}
    for name, s in (("ref", ref), ("gen", out)):
        total = s.layer_energies.sum(1)
        stats[name] = [
            (np.mean(total[b] / s.energy[b]), np.mean(s.layer_energies[b, 0] / total[b]),
             np.mean(s.voxels[b] == 0))
            for b in (ref.energy < 3, ref.energy > 30)
        ]  # fmt: skip
    (r_lo, r_hi), (g_lo, g_hi) = stats["ref"], stats["gen"]
    np.testing.assert_allclose(g_lo, r_lo, atol=0.1)  # a small flow II, four epochs
    np.testing.assert_allclose(g_hi, r_hi, atol=0.1)
    assert g_lo[1] > g_hi[1] + 0.05 and g_lo[2] > g_hi[2] + 0.2


@pytest.mark.slow  # the shared fitted generator: about 15 s of CPU
def test_student_samples_what_the_teacher_samples(fitted):
    energy = np.geomspace(1, 100, 2000)
    teacher = fitted.sample(energy, seed=2, sampler="teacher")
    student = fitted.sample(energy, seed=2, sampler="student")
    assert abs((teacher.voxels == 0).mean() - (student.voxels == 0).mean()) < 0.03
    # the same flow I draws (same seed): the student changes only the voxels within layers
    np.testing.assert_allclose(np.log(student.layer_energies.sum(1)),
                               np.log(teacher.layer_energies.sum(1)), atol=0.1)  # fmt: skip


def test_student_needs_distillation(showers):
    gen = pf.TwoStepGenerator(SIZES, showers.threshold,
                              energy_flow=pf.nsf(3, 1, layers=1, hidden=(8,)),
                              shower_flow=pf.maf(99, 4, layers=1, hidden=(8,)))  # fmt: skip
    gen.fit(showers.energy[:200], showers.voxels[:200], max_epochs=1, progress=False)
    with pytest.raises(RuntimeError, match="distill"):
        gen.sample([1.0], sampler="student")
    with pytest.raises(ValueError, match="sampler"):
        gen.sample([1.0], sampler="fast")


@pytest.mark.parametrize("log", [False, True], ids=["uniform", "log-uniform"])
def test_encode_then_decode_gives_back_every_voxel(showers, log):
    """Per voxel: exact zeros come back exactly 0, kept voxels (one of them exactly at the
    threshold) come back to rounding, also from float32 features (what the flows return)."""
    t = showers.threshold
    v = showers.voxels[:1000].copy()
    v[0, 0] = t  # a kept voxel on the threshold itself
    gen = pf.TwoStepGenerator(SIZES, t, log_dequantise=log)
    _, f1, f2 = gen.encode(showers.energy[:1000], v, seed=4)
    for dtype in (np.float64, np.float32):
        out = gen.decode(showers.energy[:1000], f1.astype(dtype), f2.astype(dtype))
        assert np.array_equal(out.voxels == 0, v == 0)
        np.testing.assert_allclose(out.voxels, v, rtol=1e-5 if dtype == np.float32 else 1e-9)
        np.testing.assert_allclose(out.layer_energies, enc.layer_sums(v, SIZES), rtol=1e-5)
    with pytest.raises(ValueError, match="features must be"):
        gen.decode(showers.energy[:1000], f1[:, :2], f2)


def test_log_dequantisation_is_log_uniform_below_the_threshold():
    v = np.zeros((20000, 1))
    for log, mean in ((False, 0.5 * (0.01 + 1)), (True, np.log(0.01) / 2)):
        d = enc.dequantise(v, 0.5, np.random.default_rng(0), floor=0.01, log=log)[:, 0] / 0.5
        assert 0.01 <= d.min() and d.max() < 1
        got = np.log(d).mean() if log else d.mean()
        assert abs(got - mean) < 0.02  # the mean of log U or of U on [0.01, 1)


def test_distilling_flow_one_is_refused_for_a_coupling_flow(showers):
    gen = pf.TwoStepGenerator(SIZES, showers.threshold,
                              energy_flow=pf.nsf(3, 1, layers=2, hidden=(8,), coupling=True),
                              shower_flow=pf.maf(99, 4, layers=1, hidden=(8,)))  # fmt: skip
    gen.fit(showers.energy[:200], showers.voxels[:200], max_epochs=1, progress=False)
    with pytest.raises(ValueError, match="coupling layers"):
        gen.distill(max_epochs=1, progress=False)
    with pytest.raises(ValueError, match="energy=False"):
        gen.distill(energy=False, energy_options={"max_epochs": 1})
    assert gen.student_ is None and gen.energy_student_ is None  # refused before training
    gen.distill(energy=False, max_epochs=1, progress=False)
    assert gen.energy_student_ is None and gen.student_ is not None


def test_the_student_path_samples_both_students(showers, monkeypatch):
    gen = pf.TwoStepGenerator(SIZES, showers.threshold,
                              energy_flow=pf.nsf(3, 1, layers=2, hidden=(8,)),
                              shower_flow=pf.maf(99, 4, layers=1, hidden=(8,)))  # fmt: skip
    gen.fit(showers.energy[:200], showers.voxels[:200], max_epochs=1, progress=False)
    gen.distill(max_epochs=1, progress=False)
    assert all(layer.iaf for layer in gen.energy_student_.transforms)
    assert all(layer.iaf for layer in gen.student_.transforms)
    calls = []
    for name in ("energy_flow", "shower_flow", "energy_student_", "student_"):
        flow = getattr(gen, name)
        monkeypatch.setattr(flow, "sample", lambda *a, f=flow, n=name, **k: calls.append(n)
                            or type(f).sample(f, *a, **k))  # fmt: skip
    gen.sample([1.0, 10.0], sampler="student")
    assert calls == ["energy_student_", "student_"]
    calls.clear()
    gen.sample([1.0, 10.0], sampler="teacher")
    assert calls == ["energy_flow", "shower_flow"]


def test_log_dequantised_zeros_survive_a_smooth_density(showers):
    """A flow's density is smooth in its log-like units: modelled here by blurring the log of
    the dequantised voxels by 0.3 nats. Uniform zeros pile up just below the threshold, and
    the blur carries several per cent of all voxels over it (too few zeros after
    thresholding); log-uniform zeros keep the zero fraction to half a per cent."""
    v, t = showers.voxels[showers.energy < 10], showers.threshold
    zeros = (v == 0).mean()
    blur = np.random.default_rng(1).normal(0, 0.3, v.shape)
    kept = {}
    for log, floor in ((False, 1e-3), (True, 0.05)):
        d = enc.dequantise(v, t, np.random.default_rng(0), floor=floor, log=log)
        kept[log] = (np.log(d) + blur < np.log(t)).mean()
    assert kept[False] < zeros - 0.02
    assert abs(kept[True] - zeros) < 0.005


def test_a_failed_distillation_leaves_the_students_as_they_were(showers):
    gen = pf.TwoStepGenerator(SIZES, showers.threshold,
                              energy_flow=pf.nsf(3, 1, layers=1, hidden=(8,)),
                              shower_flow=pf.maf(99, 4, layers=1, hidden=(8,)))  # fmt: skip
    gen.fit(showers.energy[:200], showers.voxels[:200], max_epochs=1, progress=False)
    with pytest.raises(TypeError):
        gen.distill(max_epochs=1, progress=False, no_such_option=1)  # flow II's distillation
    assert gen.energy_student_ is None and gen.student_ is None


def test_energies_outside_the_training_range_are_refused_or_counted(showers):
    """Flow I and II are conditioned on log E: below 3 GeV or above 30 GeV they never saw a
    shower here, and sampling there used to return showers silently."""
    mid = (showers.energy > 3) & (showers.energy < 30)
    gen = pf.TwoStepGenerator(
        SIZES, showers.threshold, shower_flow=pf.nsf(99, 4, layers=1, hidden=(8,))
    )
    gen.fit(showers.energy[mid][:300], showers.voxels[mid][:300], max_epochs=1, progress=False)
    low, high = np.exp(gen.log_energy_range_)
    assert 3 <= low < 3.2 and 28 < high <= 30
    inside = gen.sample([low, 10.0, high], seed=0)  # the edges and within: no warning
    assert inside.voxels.shape == (3, 99)
    with pytest.raises(ValueError, match=r"2 incident energies lie outside .*extrapolate=True"):
        gen.sample([1.0, 10.0, 100.0], seed=0)
    with pytest.warns(RuntimeWarning, match="2 incident energies lie outside"):
        out = gen.sample([1.0, 10.0, 100.0], seed=0, extrapolate=True)
    assert out.voxels.shape == (3, 99)


def test_redequantised_training_rows_change_every_epoch_and_decode_to_the_showers(
    showers, monkeypatch
):
    """With ``redequantise=True`` each epoch of flow II's training sees other noise below
    the threshold (fixed noise lets a flow learn the draws: train NLL 9 nats under val NLL)
    but the same showers: the rows of two epochs differ, and both decode exactly to the
    training showers; the validation rows keep one draw."""
    from pyroflows.calo import generator as module

    seen, real_fit = {}, module.fit

    def record(flow, loss, data, val_data, **kwargs):
        seen[flow] = (data, val_data)
        return real_fit(flow, loss, data, val_data, **kwargs)

    monkeypatch.setattr(module, "fit", record)
    gen = pf.TwoStepGenerator(SIZES, showers.threshold,
                              energy_flow=pf.nsf(3, 1, layers=1, hidden=(8,)),
                              shower_flow=pf.maf(99, 4, layers=1, hidden=(8,)))  # fmt: skip
    e, v = showers.energy[:300], showers.voxels[:300]
    gen.fit(e, v, max_epochs=1, progress=False, redequantise=True, batch_size=64)
    data, val = seen[gen.shower_flow]
    assert isinstance(val, tuple) and len(val[0]) == 30  # the held-out rows: one fixed draw
    epochs = [[torch.cat(t) for t in zip(*data, strict=True)] for _ in range(2)]
    (x1, c1), (x2, c2) = epochs
    assert x1.shape == (270, 99) and c1.shape == (270, 4)
    assert not torch.equal(x1, x2)
    train = np.setdiff1d(np.arange(300), np.random.default_rng(0).permutation(300)[:30])
    for x, c in epochs:
        f2 = gen.pre_["f2"].from_latent(x.double()).numpy()
        f1 = gen.pre_["c2"].from_latent(c.double()).numpy()[:, 1:]
        energy = np.exp(gen.pre_["c2"].from_latent(c.double()).numpy()[:, 0])
        out = gen.decode(energy, f1, f2)
        order = np.argsort(energy)  # the epoch's rows are shuffled: match them by energy
        ref = np.argsort(e[train])
        assert np.array_equal(out.voxels[order] == 0, v[train][ref] == 0)
        np.testing.assert_allclose(out.voxels[order], v[train][ref], rtol=1e-4)
