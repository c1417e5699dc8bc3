"""Conditional distillation: a conditional IAF student of an autoregressive teacher, and the
amortized posterior's fast sampler built on it."""

from __future__ import annotations

import pyro.distributions as dist
import pytest
import torch

import pyroflows as pf
from pyroflows.nn import MLP
from pyroflows.transforms import Affine
from pyroflows.vi import distill, student_of

torch.set_num_threads(1)


def _conditional_data(n, seed=0):
    """x | c: x1 ~ N(c, 0.5^2), x2 ~ N(tanh(x1), 0.3^2); c ~ N(0, 1)."""
    g = torch.Generator().manual_seed(seed)
    c = torch.randn(n, 1, generator=g)
    x1 = c[:, 0] + 0.5 * torch.randn(n, generator=g)
    x2 = torch.tanh(x1) + 0.3 * torch.randn(n, generator=g)
    return torch.stack([x1, x2], -1), c


def _reverse_kl(student, teacher, context, n=4000):
    """KL(student || teacher) per context row, by Monte Carlo on the student's draws."""
    with torch.no_grad():
        x, log_q = student.rsample_and_log_prob((n,), context)
        return (log_q - teacher.log_prob(x, context)).mean(0)


def _calls(flow):
    calls = [0]
    for m in flow.modules():
        if isinstance(m, MLP):
            m.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


@pytest.fixture(scope="module")
def spline_teacher():
    x, c = _conditional_data(3000)
    teacher = pf.nsf(2, context_dim=1, layers=2, hidden=(32, 32), lu=True)
    pf.fit(teacher, pf.losses.nll, (x, c), max_epochs=10, batch_size=256, lr=3e-3, seed=0,
           progress=False)  # fmt: skip
    return teacher.eval(), x, c


@pytest.mark.parametrize("objective", ["kl", "latent"])
def test_conditional_spline_teacher_gives_affine_student_close_to_it(spline_teacher, objective):
    teacher, x, c = spline_teacher
    weights, kl = ({k: 0.0 for k in ("z", "x", "hidden")}, 1.0) if objective == "kl" else ({}, 0.0)
    start = student_of(teacher, univariate=Affine())
    student = distill(teacher, (x, c), weights=weights, kl_weight=kl, univariate=Affine(),
                      max_epochs=10, lr=3e-3, seed=0, progress=False)  # fmt: skip
    contexts = torch.tensor([[-1.0], [0.0], [1.0]])
    before = _reverse_kl(start, teacher, contexts)
    after = _reverse_kl(student, teacher, contexts)
    assert (before > 0.3).all(), before  # the untrained student is far from the teacher
    assert (after < 0.1).all(), (objective, after)
    for layer in student.transforms:  # learnt linear maps copied, autoregressive ones affine
        if hasattr(layer, "iaf"):
            assert layer.iaf and isinstance(layer.univariate, Affine)
    calls = _calls(student)
    student.sample((10,), contexts)
    assert calls[0] == 2  # one network pass per layer


def test_params_term_refused_for_another_univariate(spline_teacher):
    teacher, x, c = spline_teacher
    with pytest.raises(ValueError, match="params"):
        distill(teacher, (x, c), weights={"params": 1.0}, univariate=Affine(), max_epochs=1)
    with pytest.raises(ValueError, match="context"):
        distill(teacher, x, univariate=Affine(), max_epochs=1)


def _gaussian_posterior(flow="nsf", n=2000, epochs=15):
    """theta ~ N(0, I_2), x = theta + N(0, 0.5^2 I): posterior N(0.8 x, 0.2 I)."""
    prior = dist.Normal(torch.zeros(2), 1.0).to_event(1)
    post = pf.AmortizedPosterior(prior=prior, simulator=_noisy, flow=flow,
                                 flow_kwargs=dict(layers=2, hidden=(32, 32)))  # fmt: skip
    return post.fit(num_simulations=n, max_epochs=epochs, recipe="one_phase", lr=3e-3, seed=0,
                    progress=False)  # fmt: skip


def _noisy(theta):
    return theta + 0.5 * torch.randn_like(theta)


@pytest.fixture(scope="module")
def distilled():
    post = _gaussian_posterior()
    x = torch.tensor([[0.0, 0.0], [1.0, -1.0], [-2.0, 0.5]])
    log_p = post.log_prob(torch.zeros(3, 2), x)
    post.distil(num_simulations=2000, max_epochs=15, lr=3e-3, family="affine")
    return post, x, log_p


def test_posterior_samples_from_its_student_and_scores_with_its_flow(distilled):
    post, x, log_p = distilled
    assert post.student is not None
    assert torch.equal(post.log_prob(torch.zeros(3, 2), x), log_p)  # the teacher's density
    auto = post.sample(x, 4000, seed=1)
    assert torch.equal(auto, post.sample(x, 4000, seed=1, sampler="student"))
    teacher = post.sample(x, 4000, seed=1, sampler="teacher")
    assert not torch.equal(auto, teacher)
    # the student's draws follow the teacher's (posteriors of sd about 0.5; the untrained
    # student's draws have the prior's sd 1 and mean 0)
    assert (auto.mean(0) - teacher.mean(0)).abs().max() < 0.08
    ratio = auto.std(0) / teacher.std(0)
    assert ((ratio > 0.85) & (ratio < 1.15)).all(), ratio
    calls = _calls(post.student)
    post.sample(x, 10)
    assert calls[0] == 2  # the student's two layers, one pass each


def test_student_survives_save_and_load_and_a_new_fit_drops_it(distilled, tmp_path):
    post, x, _ = distilled
    post.save(tmp_path / "p.pt")
    prior = dist.Normal(torch.zeros(2), 1.0).to_event(1)
    loaded = pf.AmortizedPosterior.load(tmp_path / "p.pt", prior=prior, simulator=_noisy)
    assert loaded.student is not None
    assert torch.equal(loaded.sample(x, 50, seed=2), post.sample(x, 50, seed=2))
    loaded.fit(num_simulations=200, max_epochs=1, recipe="one_phase", seed=1, progress=False)
    assert loaded.student is None
    with pytest.raises(ValueError, match="no student"):
        loaded.sample(x, 5, sampler="student")
    with pytest.raises(ValueError, match="sampler"):
        post.sample(x, 5, sampler="fast")


def test_coupling_posterior_has_nothing_to_distil():
    post = _gaussian_posterior("realnvp", n=200, epochs=1)
    with pytest.raises(ValueError, match="nothing to distil"):
        post.distil(num_simulations=100)
    assert post.student is None


def test_distil_scores_its_student_against_the_flow(distilled):
    post, x, _ = distilled
    # both KL estimates, from the flows' exact densities on held-out simulations: an affine
    # student of a spline teacher is close to it but not equal (an untrained student, with the
    # prior's sd 1 instead of about 0.45 in each of 2 dimensions, is about 2.4 nats away)
    divergence = post.student.divergence
    assert set(divergence) == {"student_teacher", "teacher_student"}
    assert 0 < divergence["student_teacher"] < 0.2, divergence
    assert 0 < divergence["teacher_student"] < 0.2, divergence


def test_divergences_of_flows_with_a_known_kl():
    # one affine autoregressive layer each, starting as the identity (N(0, 1) whatever the
    # context); the student's output bias for the shift set to 1 gives N(1, 1): KL = 1/2
    # either way
    from pyroflows.amortized.fast_sampler import divergences
    from pyroflows.bases import StandardNormal
    from pyroflows.flows import Flow
    from pyroflows.transforms import MaskedAutoregressive

    def flow(iaf, shift):
        layer = MaskedAutoregressive(1, Affine(), context_dim=1, hidden=(4,), inverse=iaf)
        with torch.no_grad():
            layer.net.flat_params[-2] = shift  # the last layer's bias: (shift, log-scale)
        return Flow([layer], StandardNormal(1), 1).eval()

    teacher, student = flow(False, 0.0), flow(True, 1.0)
    context = torch.randn(64, 1)
    assert torch.allclose(student.sample((4000,), context).mean(), torch.tensor(1.0), atol=0.05)
    assert torch.allclose(teacher.sample((4000,), context).mean(), torch.tensor(0.0), atol=0.05)
    d = divergences(teacher, student, context, draws=500)
    assert abs(d["student_teacher"] - 0.5) < 0.03 and abs(d["teacher_student"] - 0.5) < 0.03, d
    assert divergences(teacher, teacher, context, draws=10) == {
        "student_teacher": 0.0, "teacher_student": 0.0}  # fmt: skip


def test_distil_warns_when_its_student_is_off_and_the_file_keeps_the_divergences(tmp_path):
    post = _gaussian_posterior(n=500, epochs=5)
    with pytest.warns(UserWarning, match="sampler='teacher'"):
        post.distil(num_simulations=200, max_epochs=1, lr=1e-5)
    assert max(post.student.divergence.values()) > 0.05
    post.save(tmp_path / "p.pt")
    prior = dist.Normal(torch.zeros(2), 1.0).to_event(1)
    loaded = pf.AmortizedPosterior.load(tmp_path / "p.pt", prior=prior, simulator=_noisy)
    assert loaded.student.divergence == post.student.divergence


def test_patience_without_held_out_simulations_is_refused():
    post = _gaussian_posterior(n=200, epochs=1)
    with pytest.raises(ValueError, match="patience needs held-out"):
        post.distil(num_simulations=100, validation_fraction=0.0, patience=3)
    assert post.student is None
    post.distil(num_simulations=100, validation_fraction=0.0, max_epochs=1)  # no patience: runs
    assert post.student is not None and len(post.student.history.train_loss) == 1
