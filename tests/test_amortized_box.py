"""``AmortizedPosterior(intervals="box")``: a box prior's sites in their own coordinates, draws
by bounded rejection, ``log_prob`` renormalised by the flow's mass inside the box."""

from __future__ import annotations

import math

import pyro.distributions as dist
import pytest
import torch
from torch.distributions import constraints

from pyroflows.amortized import AmortizedPosterior
from pyroflows.amortized.box import (
    LowAcceptanceWarning,
    RejectionError,
    mass_inside,
    sample_inside,
)
from pyroflows.amortized.parameters import ParameterSpace

BOX = constraints.independent(constraints.interval(-1.0, 1.0), 1)


# -- the parameter space ------------------------------------------------------------------
def test_box_space_keeps_interval_sites_in_their_coordinates_and_maps_the_others():
    space = ParameterSpace(["a", "s"], [(2,), ()], [BOX, constraints.positive], "box")
    assert space.boxed == [True, False] and space.has_box
    theta = torch.tensor([[0.5, -0.9, 2.0], [1.5, 0.0, 2.0]], dtype=torch.float64)
    u, ladj = space.to_unconstrained(theta)
    assert torch.equal(u[0], torch.tensor([0.5, -0.9, math.log(2.0)], dtype=torch.float64))
    assert ladj[0].item() == pytest.approx(math.log(2.0))  # the positive site's log map only
    assert ladj[1].item() == math.inf  # outside the box: no density
    assert space.inside(theta).tolist() == [True, False]
    back = space.to_constrained(torch.tensor([[1.7, 0.0, 0.0]], dtype=torch.float64))
    assert back.tolist() == [[1.7, 0.0, 1.0]] and space.inside(back).tolist() == [False]
    logit = space.with_intervals("logit")
    assert logit.boxed == [False, False] and not logit.has_box
    u_logit = logit.to_unconstrained(theta[:1])[0][0, 0].item()
    assert u_logit == pytest.approx(math.log(3.0))  # logit((0.5 + 1) / 2)


def test_the_space_state_keeps_the_choice_and_old_states_read_as_logit():
    space = ParameterSpace(["a"], [(2,)], [BOX], "box")
    assert ParameterSpace.from_state(space.state()).boxed == [True]
    old = {k: v for k, v in space.state().items() if k != "intervals"}
    assert ParameterSpace.from_state(old).intervals == "logit"


def test_an_unknown_intervals_option_is_refused():
    with pytest.raises(ValueError, match="intervals must be one of"):
        ParameterSpace(["a"], [(2,)], [BOX], "clamp")
    with pytest.raises(ValueError, match="intervals must be one of"):
        AmortizedPosterior(prior=dist.Uniform(0.0, 1.0), intervals="clamp")


# -- bounded rejection on a known proposal ---------------------------------------------------
def _normal_draws(locs):
    """``draw(n, rows)``: N(loc_r, 1) proposals in 1-D, one loc per observation."""
    locs = torch.as_tensor(locs, dtype=torch.float64)

    def draw(n, rows):
        return locs[rows][None, :, None] + torch.randn(n, len(rows), 1, dtype=torch.float64)

    return draw


def _inside(theta):
    return (theta.abs() <= 1.0).all(-1)


def test_rejection_returns_the_truncated_flow_inside_the_box():
    torch.manual_seed(0)
    draws = sample_inside(_normal_draws([0.9, 0.0]), _inside, 20_000, 2)
    assert draws.shape == (20_000, 2, 1) and bool((draws.abs() <= 1).all())
    # the mean of N(0.9, 1) truncated to [-1, 1]: 0.9 + (phi(a) - phi(b)) / (Phi(b) - Phi(a))
    normal = torch.distributions.Normal(0.0, 1.0)
    a, b = torch.tensor(-1.9), torch.tensor(0.1)
    z = normal.cdf(b) - normal.cdf(a)
    mean = 0.9 + (normal.log_prob(a).exp() - normal.log_prob(b).exp()) / z
    assert draws[:, 0, 0].mean().item() == pytest.approx(mean.item(), abs=0.015)
    assert draws[:, 1, 0].mean().item() == pytest.approx(0.0, abs=0.015)


def test_low_acceptance_warns_naming_the_observation_and_its_rate():
    torch.manual_seed(0)  # N(3.5, 1): 0.62 % inside [-1, 1]
    with pytest.warns(LowAcceptanceWarning, match=r"observation 1: 0\.[5-7]\d %") as caught:
        draws = sample_inside(_normal_draws([0.0, 3.5]), _inside, 200, 2)
    assert "observation 0" not in str(caught[0].message)
    assert draws.shape == (200, 2, 1) and bool((draws.abs() <= 1).all())


def test_rejection_with_no_mass_inside_stops_with_an_error_instead_of_looping():
    torch.manual_seed(0)
    with (
        pytest.raises(RejectionError, match="observation 1: 0 of 10000"),
        pytest.warns(LowAcceptanceWarning, match="observation 1"),
    ):
        sample_inside(_normal_draws([0.0, 12.0]), _inside, 10, 2)


def test_mass_inside_is_the_flow_probability_of_the_box_with_its_error():
    torch.manual_seed(0)
    mass, se = mass_inside(_normal_draws([0.9]), _inside, 1, 40_000)
    normal = torch.distributions.Normal(0.0, 1.0)
    exact = (normal.cdf(torch.tensor(0.1)) - normal.cdf(torch.tensor(-1.9))).item()
    assert abs(mass.item() - exact) < 4 * se.item() and 0 < se.item() < 0.003


# -- a posterior pressed against a face of the box ----------------------------------------
def _face_simulator(theta):
    return theta + 0.05 * torch.randn_like(theta)


@pytest.fixture(scope="module")
def face_post():
    post = AmortizedPosterior(
        prior=dist.Uniform(torch.zeros(1), torch.ones(1)).to_event(1),
        simulator=_face_simulator, flow="nsf", intervals="box",
        flow_kwargs=dict(layers=2, hidden=(16,)),
    )  # fmt: skip
    return post.fit(num_simulations=2000, max_epochs=20, progress=False, seed=0)


def test_a_box_posterior_draws_inside_the_box_only(face_post):
    x = torch.tensor([[0.99], [1.03], [0.5]])  # two pressed on the face at 1
    draws = face_post.sample(x, 4000, seed=0)
    assert draws.shape == (4000, 3, 1)
    assert bool(((draws >= 0) & (draws <= 1)).all())
    assert (draws[:, 0] > 0.9).double().mean() > 0.5  # the mass is at the face


def test_a_box_posterior_log_prob_integrates_to_one_inside_the_box(face_post):
    x = torch.tensor([[0.99], [1.03]])
    mass, se = face_post.mass_inside(x)
    assert bool((mass < 0.99).all())  # the flow leaks: its raw density is not normalised
    grid = (torch.arange(20_000, dtype=torch.float64) + 0.5) / 20_000  # midpoints of [0, 1]
    density = face_post.log_prob(grid[:, None, None].expand(-1, 2, 1), x).exp()
    integral = density.mean(0)  # the box has length 1
    assert torch.allclose(integral, torch.ones(2, dtype=torch.float64), atol=0.02)
    assert bool((integral - 1).abs().lt(4 * se / mass + 0.005).all())
    outside = face_post.log_prob(torch.tensor([[1.2], [-0.1]]), x)
    assert outside.tolist() == [-math.inf, -math.inf]


def test_a_box_posterior_log_prob_is_the_same_for_the_same_arguments(face_post):
    x, theta = torch.tensor([0.99]), torch.tensor([[0.95], [0.5]])
    assert torch.equal(face_post.log_prob(theta, x), face_post.log_prob(theta, x))


def test_a_box_posterior_log_prob_does_not_depend_on_the_batch_around_it(face_post):
    """Before, the normaliser's draws were made for the batch's distinct observations together
    under one seed: the same theta and x gave another value alone than in a batch."""
    x = torch.tensor([[0.99], [0.2], [1.03]])
    theta = torch.tensor([[0.95], [0.3], [0.97]])
    batched = face_post.log_prob(theta, x)
    alone = torch.stack([face_post.log_prob(theta[i], x[i]) for i in range(3)])
    # the flow's own density differs only by float rounding between batch sizes; the old
    # normaliser moved it by about 2e-3
    assert torch.allclose(batched, alone, rtol=0, atol=1e-5), batched - alone
    mass, _ = face_post.mass_inside(x)
    assert torch.equal(mass, torch.stack([face_post.mass_inside(x[i])[0] for i in range(3)]))


def test_save_load_keeps_the_box(face_post, tmp_path):
    path = tmp_path / "box.pt"
    face_post.save(path)
    loaded = AmortizedPosterior.load(
        path, prior=dist.Uniform(torch.zeros(1), torch.ones(1)).to_event(1),
        simulator=_face_simulator,
    )  # fmt: skip
    assert loaded.intervals == "box" and loaded.space.boxed == [True]
    x, theta = torch.tensor([[0.99], [0.3]]), torch.tensor([[0.95], [0.2]])
    assert torch.equal(loaded.log_prob(theta, x), face_post.log_prob(theta, x))
    assert torch.equal(loaded.sample(x, 50, seed=1), face_post.sample(x, 50, seed=1))


def test_a_file_saved_before_the_option_loads_as_logit(face_post, tmp_path):
    post = AmortizedPosterior(
        prior=dist.Uniform(torch.zeros(1), torch.ones(1)).to_event(1),
        simulator=_face_simulator, flow="nsf", flow_kwargs=dict(layers=1, hidden=(8,)),
        intervals="logit",
    )  # fmt: skip
    post.fit(num_simulations=200, max_epochs=1, progress=False, seed=0)
    path = tmp_path / "old.pt"
    post.save(path)
    blob = torch.load(path, weights_only=True)
    del blob["config"]["space"]["intervals"]
    torch.save(blob, path)
    loaded = AmortizedPosterior.load(path)
    assert loaded.intervals == "logit" and not loaded.space.has_box
    x, theta = torch.tensor([0.99]), torch.tensor([[0.95]])
    assert torch.equal(loaded.log_prob(theta, x), post.log_prob(theta, x))


def test_ensemble_members_get_the_choice():
    post = AmortizedPosterior(prior=dist.Uniform(0.0, 1.0), intervals="box", ensemble=2)
    assert [m.intervals for m in post.members] == ["box", "box"]
    assert all(m.space.has_box for m in post.members)


def test_a_heldout_check_that_cannot_draw_warns_instead_of_failing_the_fit(monkeypatch):
    from pyroflows.amortized import recipe

    def no_draws(*args):
        raise RejectionError("observation 3: 0 of 10000 of the flow's draws fell inside")

    monkeypatch.setattr(recipe, "heldout_check", no_draws)
    post = AmortizedPosterior(
        prior=dist.Uniform(torch.zeros(1), torch.ones(1)).to_event(1),
        simulator=_face_simulator, flow="nsf", intervals="box",
        flow_kwargs=dict(layers=1, hidden=(8,)),
    )  # fmt: skip
    with pytest.warns(RuntimeWarning, match="held-out calibration check was skipped: obs"):
        post.fit(num_simulations=200, max_epochs=1, progress=False, seed=0)
    assert post.estimator is not None and post.heldout_sbc_ is None


def test_box_is_the_default_for_interval_supports_only():
    box = AmortizedPosterior(prior=dist.Uniform(torch.zeros(2), torch.ones(2)).to_event(1))
    assert box.intervals == "box" and box.space.boxed == [True]
    normal = AmortizedPosterior(prior=dist.Normal(torch.zeros(2), 1.0).to_event(1))
    assert not normal.space.has_box
