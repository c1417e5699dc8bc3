"""The mixed student of the fast sampler (``distil(family="mixed")``): narrow new networks,
affine maps and a spline in the last autoregressive layer."""

from __future__ import annotations

import pyro.distributions as dist
import pytest
import torch

import pyroflows as pf
from pyroflows.amortized.fast_sampler import MIXED_BINS, MIXED_DEFAULTS, MIXED_HIDDEN, mixed_maps
from pyroflows.transforms import RQS, Affine, MaskedAutoregressive
from pyroflows.vi import student_of
from pyroflows.vi.distill import _hidden_of

torch.set_num_threads(1)


def _noisy(theta):
    return theta + 0.5 * torch.randn_like(theta)


def _prior():
    return dist.Normal(torch.zeros(2), 1.0).to_event(1)


def _posterior(flow="nsf", layers=2):
    """theta ~ N(0, I_2), x = theta + N(0, 0.5^2 I): posterior N(0.8 x, 0.2 I)."""
    post = pf.AmortizedPosterior(prior=_prior(), simulator=_noisy, flow=flow,
                                 flow_kwargs=dict(layers=layers, hidden=(16, 16)))  # fmt: skip
    return post.fit(num_simulations=600, max_epochs=6, recipe="one_phase", lr=3e-3, seed=0,
                    progress=False)  # fmt: skip


def _autoregressive(flow):
    return [t for t in flow.transforms if isinstance(t, MaskedAutoregressive)]


@pytest.fixture(scope="module")
def mixed_student():
    post = _posterior(layers=3)
    post.distil(num_simulations=400, max_epochs=25, batch_size=32, lr=3e-3, family="mixed")
    return post


def test_mixed_student_has_narrow_affine_layers_and_a_spline_last(mixed_student):
    post = mixed_student
    layers = _autoregressive(post.student)
    assert len(layers) == 3 and all(t.iaf for t in layers)
    assert [type(t.univariate) for t in layers[:2]] == [Affine, Affine]
    assert layers[2].univariate == RQS(MIXED_BINS, 5.0)
    assert all(_hidden_of(t) == MIXED_HIDDEN for t in layers)
    # new networks (narrower than the teacher's) trained to the teacher: its draws have the
    # teacher's moments (mean about 0.8 x, sd about 0.45); the prior's draws (mean 0, sd 1)
    # are far outside these bounds
    assert max(post.student.divergence.values()) < 0.05, post.student.divergence
    x = torch.tensor([[1.0, -1.0]])
    draws, teacher = post.sample(x, 4000, seed=1), post.sample(x, 4000, seed=2, sampler="teacher")
    assert torch.allclose(draws.mean(0), teacher.mean(0), atol=0.08)
    assert torch.allclose(draws.std(0), teacher.std(0), rtol=0.1)


def test_saved_mixed_student_loads_with_its_family_and_draws_the_same(mixed_student, tmp_path):
    post = mixed_student
    post.save(tmp_path / "p.pt")
    assert torch.load(tmp_path / "p.pt", weights_only=True)["student"]["family"] == "mixed"
    loaded = pf.AmortizedPosterior.load(tmp_path / "p.pt", prior=_prior(), simulator=_noisy)
    assert [type(t.univariate) for t in _autoregressive(loaded.student)] == [Affine, Affine, RQS]
    x = torch.tensor([[0.0, 0.0], [1.0, -1.0]])
    assert torch.equal(loaded.sample(x, 200, seed=2), post.sample(x, 200, seed=2))
    assert loaded.student.divergence == post.student.divergence


@pytest.mark.filterwarnings("ignore:the distilled sampler differs")
def test_a_one_layer_mixed_student_keeps_its_family_through_a_file(tmp_path):
    # one autoregressive layer: the mixed student is a spline of MIXED_BINS bins on new
    # networks, not the teacher's spline maps (which have 8 bins here only by default)
    post = pf.AmortizedPosterior(prior=_prior(), simulator=_noisy, flow="nsf",
                                 flow_kwargs=dict(layers=1, hidden=(8,), bins=3))  # fmt: skip
    post.fit(num_simulations=200, max_epochs=1, recipe="one_phase", seed=0, progress=False)
    post.distil(num_simulations=200, max_epochs=1, family="mixed")
    post.save(tmp_path / "p.pt")
    loaded = pf.AmortizedPosterior.load(tmp_path / "p.pt", prior=_prior(), simulator=_noisy)
    (layer,) = _autoregressive(loaded.student)
    assert layer.univariate == RQS(MIXED_BINS, 5.0)
    x = torch.tensor([[0.5, 0.5]])
    assert torch.equal(loaded.sample(x, 50, seed=0), post.sample(x, 50, seed=0))


@pytest.mark.filterwarnings("ignore:the distilled sampler differs")
def test_mixed_student_honours_hidden_and_takes_an_affine_teacher():
    post = _posterior("maf")  # no spline maps in the teacher: the mixed student has its own
    post.distil(num_simulations=100, family="mixed", hidden=(8, 4))
    assert len(post.student.history.train_loss) == MIXED_DEFAULTS["max_epochs"]
    layers = _autoregressive(post.student)
    assert [_hidden_of(t) for t in layers] == [(8, 4), (8, 4)]
    assert isinstance(layers[0].univariate, Affine)
    assert layers[1].univariate == RQS(MIXED_BINS, 5.0)


def test_student_of_takes_one_map_per_autoregressive_layer():
    teacher = pf.nsf(3, layers=3, hidden=(8,))
    maps = mixed_maps(teacher)
    assert [type(m) for m in maps] == [Affine, Affine, RQS]
    student = student_of(teacher, (4,), maps)
    assert [t.univariate for t in _autoregressive(student)] == maps
    # None keeps the teacher's map (and network, without hidden)
    kept = student_of(teacher, None, [None, Affine(), None])
    assert [type(t.univariate) for t in _autoregressive(kept)] == [RQS, Affine, RQS]
    with pytest.raises(ValueError, match="one per autoregressive layer of the teacher \\(3\\)"):
        student_of(teacher, (4,), [Affine(), Affine()])
    with pytest.raises(TypeError, match="Univariate map"):
        student_of(teacher, (4,), [Affine(), "rqs", Affine()])
