"""The fastspline student of the fast sampler (``distil(family="fastspline")``): new networks,
splines on equal-width bins in the first and last autoregressive layer, affine maps between."""

from __future__ import annotations

import pyro.distributions as dist
import pytest
import torch

import pyroflows as pf
from pyroflows.amortized.fast_sampler import (
    FAMILIES,
    FASTSPLINE_BINS,
    FASTSPLINE_DEFAULTS,
    FASTSPLINE_HIDDEN,
    _family_of,
    fastspline_maps,
)
from pyroflows.transforms import RQS, Affine, EqualBinRQS, MaskedAutoregressive
from pyroflows.vi import student_of
from pyroflows.vi.distill import _hidden_of

torch.set_num_threads(1)


def _noisy(theta):
    return theta + 0.5 * torch.randn_like(theta)


def _prior():
    return dist.Normal(torch.zeros(2), 1.0).to_event(1)


def _posterior(flow="nsf", layers=3):
    """theta ~ N(0, I_2), x = theta + N(0, 0.5^2 I): posterior N(0.8 x, 0.2 I)."""
    post = pf.AmortizedPosterior(prior=_prior(), simulator=_noisy, flow=flow,
                                 flow_kwargs=dict(layers=layers, hidden=(16, 16)))  # fmt: skip
    return post.fit(num_simulations=600, max_epochs=6, recipe="one_phase", lr=3e-3, seed=0,
                    progress=False)  # fmt: skip


def _autoregressive(flow):
    return [t for t in flow.transforms if isinstance(t, MaskedAutoregressive)]


@pytest.fixture(scope="module")
def fast_student():
    post = _posterior()
    post.distil(num_simulations=400, max_epochs=25, batch_size=32, lr=3e-3, family="fastspline")
    return post


def test_fastspline_is_a_family_with_equal_bin_splines_first_and_last():
    assert "fastspline" in FAMILIES
    teacher = pf.nsf(3, layers=4, hidden=(8,), bound=3.0)
    maps = fastspline_maps(teacher)
    spline = EqualBinRQS(FASTSPLINE_BINS, 3.0)  # the teacher's bound
    assert maps == [spline, Affine(), Affine(), spline]
    assert fastspline_maps(pf.maf(3, layers=1, hidden=(8,))) == [EqualBinRQS(FASTSPLINE_BINS)]
    assert _family_of(student_of(teacher, (4,), maps)) == "fastspline"
    assert _family_of(student_of(teacher, (4,), RQS(4))) == "spline"  # as before


def test_fastspline_student_draws_like_its_teacher(fast_student):
    post = fast_student
    layers = _autoregressive(post.student)
    assert len(layers) == 3 and all(t.iaf for t in layers)
    assert [type(t.univariate) for t in layers] == [EqualBinRQS, Affine, EqualBinRQS]
    assert all(_hidden_of(t) == FASTSPLINE_HIDDEN for t in layers)
    assert post.student.family == "fastspline"
    # trained to the teacher: its draws have the teacher's moments (mean about 0.8 x, sd
    # about 0.45); the prior's draws (mean 0, sd 1) are far outside these bounds
    assert max(post.student.divergence.values()) < 0.05, post.student.divergence
    x = torch.tensor([[1.0, -1.0]])
    draws, teacher = post.sample(x, 4000, seed=1), post.sample(x, 4000, seed=2, sampler="teacher")
    assert torch.allclose(draws.mean(0), teacher.mean(0), atol=0.08)
    assert torch.allclose(draws.std(0), teacher.std(0), rtol=0.1)


def test_saved_fastspline_student_loads_with_its_family_and_draws_the_same(fast_student, tmp_path):
    post = fast_student
    post.save(tmp_path / "p.pt")
    assert torch.load(tmp_path / "p.pt", weights_only=True)["student"]["family"] == "fastspline"
    loaded = pf.AmortizedPosterior.load(tmp_path / "p.pt", prior=_prior(), simulator=_noisy)
    kinds = [type(t.univariate) for t in _autoregressive(loaded.student)]
    assert kinds == [EqualBinRQS, Affine, EqualBinRQS]
    x = torch.tensor([[0.0, 0.0], [1.0, -1.0]])
    assert torch.equal(loaded.sample(x, 200, seed=2), post.sample(x, 200, seed=2))
    assert loaded.student.family == "fastspline"


@pytest.mark.filterwarnings("ignore:the distilled sampler differs")
def test_fastspline_student_honours_hidden_and_takes_an_affine_teacher():
    post = _posterior("maf", layers=2)
    post.distil(num_simulations=100, family="fastspline", hidden=(8, 4))
    assert len(post.student.history.train_loss) == FASTSPLINE_DEFAULTS["max_epochs"]
    layers = _autoregressive(post.student)
    assert [_hidden_of(t) for t in layers] == [(8, 4), (8, 4)]
    assert [t.univariate for t in layers] == [EqualBinRQS(FASTSPLINE_BINS, 5.0)] * 2
