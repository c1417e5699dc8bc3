"""The spline student of the fast sampler (``distil(family="spline")``) and the
parameters-first spline it draws with."""

from __future__ import annotations

import pyro.distributions as dist
import pytest
import torch

import pyroflows as pf
from pyroflows.nn import MADE
from pyroflows.ops.rqs import (
    rational_quadratic_spline_packed,
    rational_quadratic_spline_params_first,
)
from pyroflows.transforms import RQS, Affine, MaskedAutoregressive

torch.set_num_threads(1)


@pytest.mark.parametrize("bins", [1, 2, 4, 8, 300])  # 300: more bins than 8 bits count
def test_params_first_spline_is_the_spline(bins):
    # float64, raw parameters far from 0 (bins of very different sizes, steep and flat
    # knots) and inputs inside, on and outside the interval [-5, 5]
    g = torch.Generator().manual_seed(bins)
    params = 3.0 * torch.randn(400, 3, 3 * bins - 1, generator=g, dtype=torch.float64)
    x = 4.0 * torch.randn(400, 3, generator=g, dtype=torch.float64)
    x[:4, 0] = torch.tensor([-5.0, 5.0, -7.5, 9.0], dtype=torch.float64)
    expected, _ = rational_quadratic_spline_packed(x, params, bins)
    got = rational_quadratic_spline_params_first(x, params.movedim(-1, 0).contiguous(), bins)
    assert torch.allclose(got, expected, atol=1e-12, rtol=0)
    assert torch.equal(got[2:4, 0], x[2:4, 0])  # the identity outside the interval


def test_params_first_spline_refuses_parameters_of_another_shape():
    with pytest.raises(ValueError, match="takes parameters of shape"):
        rational_quadratic_spline_params_first(torch.zeros(5, 2), torch.zeros(5, 2, 11), 4)


def test_made_gives_its_output_parameters_first():
    made = MADE(4, params=7, context=3, hidden=(16, 16)).double()
    with torch.no_grad():
        made.flat_params.normal_()
    x, c = torch.randn(6, 5, 4, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    first = made.forward_params_first(x, c)
    assert first.shape == (7, 4, 6, 5)
    assert torch.allclose(first.movedim((0, 1), (-1, -2)), made(x, c), atol=1e-12)


@pytest.mark.parametrize("dim", [1, 3, 6])
def test_spline_iaf_draws_the_same_with_and_without_autograd(dim):
    # without autograd a spline IAF layer draws with the parameters-first spline; with it,
    # with the spline of the training loop: the same map
    layer = MaskedAutoregressive(dim, RQS(8), context_dim=2, hidden=(16,), inverse=True).double()
    with torch.no_grad():
        layer.net.flat_params.normal_()
    z, c = 3.0 * torch.randn(50, 4, dim, dtype=torch.float64), torch.randn(4, 2).double()
    with torch.no_grad():
        fast = layer.call(z, c)
    reference, _ = layer.call_and_ladj(z, c)  # the one-pass map with its log-derivative
    assert torch.allclose(fast, reference, atol=1e-12)


def _noisy(theta):
    return theta + 0.5 * torch.randn_like(theta)


def _prior():
    return dist.Normal(torch.zeros(2), 1.0).to_event(1)


def _posterior(flow):
    """theta ~ N(0, I_2), x = theta + N(0, 0.5^2 I): posterior N(0.8 x, 0.2 I)."""
    post = pf.AmortizedPosterior(prior=_prior(), simulator=_noisy, flow=flow,
                                 flow_kwargs=dict(layers=2, hidden=(16, 16)))  # fmt: skip
    return post.fit(num_simulations=600, max_epochs=6, recipe="one_phase", lr=3e-3, seed=0,
                    progress=False)  # fmt: skip


@pytest.fixture(scope="module")
def spline_student():
    post = _posterior("nsf")
    post.distil(num_simulations=600, max_epochs=3, lr=1e-3, family="spline")
    return post


def test_spline_student_keeps_the_teachers_spline_maps(spline_student):
    post = spline_student
    teacher = [t for t in post.estimator.flow.transforms if isinstance(t, MaskedAutoregressive)]
    student = [t for t in post.student.transforms if isinstance(t, MaskedAutoregressive)]
    assert len(student) == len(teacher) == 2
    pairs = zip(student, teacher, strict=True)
    assert all(s.iaf and s.univariate == t.univariate for s, t in pairs)
    # it starts as the teacher's networks read the other way: close to it after training
    assert max(post.student.divergence.values()) < 0.05, post.student.divergence
    x = torch.tensor([[0.5, -1.0]])
    draws, teacher = post.sample(x, 4000, seed=1), post.sample(x, 4000, seed=2, sampler="teacher")
    assert not torch.equal(draws, post.sample(x, 4000, seed=1, sampler="teacher"))
    # the teacher's draws have sd 0.6-0.7 (Monte Carlo error of a difference of means
    # 0.015); the prior's draws (sd 1, mean 0) are far outside these bounds
    assert torch.allclose(draws.mean(0), teacher.mean(0), atol=0.08)
    assert torch.allclose(draws.std(0), teacher.std(0), rtol=0.1)


def test_saved_spline_student_loads_with_its_family(spline_student, tmp_path):
    post = spline_student
    post.save(tmp_path / "p.pt")
    loaded = pf.AmortizedPosterior.load(tmp_path / "p.pt", prior=_prior(), simulator=_noisy)
    layers = [t for t in loaded.student.transforms if isinstance(t, MaskedAutoregressive)]
    assert all(isinstance(t.univariate, RQS) for t in layers)
    x = torch.tensor([[0.0, 0.0], [1.0, -1.0]])
    assert torch.equal(loaded.sample(x, 200, seed=2), post.sample(x, 200, seed=2))
    assert loaded.student.divergence == post.student.divergence


def test_a_family_that_does_not_apply_is_refused():
    post = _posterior("maf")  # affine layers: no spline maps to keep
    with pytest.raises(ValueError, match="family='spline' reads the teacher's spline maps"):
        post.distil(num_simulations=100, max_epochs=1, family="spline")
    with pytest.raises(ValueError, match="family must be one of"):
        post.distil(num_simulations=100, max_epochs=1, family="rqs")
    with pytest.raises(ValueError, match="follows from family"):
        post.distil(num_simulations=100, max_epochs=1, univariate=Affine())
    assert post.student is None  # nothing changed
    post.distil(num_simulations=100, max_epochs=1, family="affine")  # the affine one applies
    layers = [t for t in post.student.transforms if isinstance(t, MaskedAutoregressive)]
    assert all(t.iaf and isinstance(t.univariate, Affine) for t in layers)


def test_a_saved_student_of_an_unknown_family_is_refused(spline_student, tmp_path):
    spline_student.save(tmp_path / "p.pt")
    blob = torch.load(tmp_path / "p.pt", weights_only=True)
    assert blob["student"]["family"] == "spline"
    blob["student"]["family"] = "flow"
    torch.save(blob, tmp_path / "q.pt")
    with pytest.raises(ValueError, match="family must be one of"):
        pf.AmortizedPosterior.load(tmp_path / "q.pt", prior=_prior(), simulator=_noisy)
