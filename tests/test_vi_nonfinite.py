"""FlowGuide where the model's log density is not finite or overflows: the Laplace start's MAP
search, and what ``fit`` does and says about a step whose ELBO estimate is not finite."""

from __future__ import annotations

import math
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer.autoguide.initialization import init_to_value

import pyroflows as pf
from pyroflows.datasets import posteriors
from pyroflows.train import TrainingDiverged
from pyroflows.vi import FlowGuide, NonFiniteELBOWarning
from pyroflows.vi.convergence import ConvergenceWarning


# -- the MAP search of the Laplace start ------------------------------------------------------
def _arma11_filter(y: torch.Tensor):
    """posteriordb's ARMA(1, 1) (:func:`pyroflows.datasets.posteriors.timeseries.arma11`) with
    its error recursion ``err_t = r_t - theta err_{t-1}`` written as one product with the
    lower-triangular matrix ``(-theta)^(t - s)``: the same density, a few tensor operations
    in place of a 200-step loop (its L-BFGS search costs about half as much)."""
    n = len(y)
    lag = torch.arange(n)[:, None] - torch.arange(n)[None, :]
    below, index = lag >= 0, lag.clamp(min=0)
    exponents = torch.arange(n, dtype=y.dtype)

    def model():
        mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
        phi = pyro.sample("phi", dist.Normal(0.0, 2.0))
        theta = pyro.sample("theta", dist.Normal(0.0, 2.0))
        sigma = pyro.sample("sigma", dist.HalfCauchy(2.5))
        previous = torch.cat([mu[..., None], y[:-1].expand(mu.shape + (n - 1,))], -1)
        r = y - mu[..., None] - phi[..., None] * previous  # err_0 = y_0 - mu - phi mu
        powers = torch.where(below, torch.pow(-theta[..., None], exponents)[..., index], 0.0)
        errors = (powers @ r[..., None])[..., 0]
        pyro.factor("y", dist.Normal(0.0, sigma[..., None]).log_prob(errors).sum(-1))

    return model


def test_map_search_survives_a_line_search_step_where_the_density_climbs_by_1e19():
    """posteriordb's ARMA(1, 1) in float32 from a point at the prior's median draws: L-BFGS's
    first step lands at theta 1.12, where the error recursion (theta^199) gives a negative log
    density of 5e19 with a gradient of 7e21; the strong Wolfe line search's cubic
    interpolation overflows there and the step becomes NaN. The search must recover and find
    the mode: the Laplace start then matches the reference draws' moments (posteriordb).
    The model is the port's density in matrix form (checked equal here, at the start and
    where the first step lands)."""
    post = posteriors.load("arma-arma11")
    model = _arma11_filter(post.kwargs["y"])
    start = {"mu": 3.7172, "phi": -0.9005, "theta": 0.8557, "sigma": math.exp(1.1034)}
    for point in (start, {**start, "theta": 1.12}):
        values = {k: torch.tensor(v) for k, v in point.items()}
        port = poutine.trace(poutine.condition(post.model, values)).get_trace(**post.kwargs)
        ours = poutine.trace(poutine.condition(model, values)).get_trace()
        assert math.isclose(ours.log_prob_sum(), port.log_prob_sum(), rel_tol=1e-5)
    init = init_to_value(values={k: torch.tensor(v) for k, v in start.items()})
    guide = FlowGuide(model, layers=1, hidden=(8,), init_loc_fn=init)
    guide()
    assert guide.start_["start"] == "laplace", guide.start_
    mean, tril = guide.flow.transforms[-1].mean_and_scale_tril
    sd = (tril @ tril.T).diagonal().sqrt().detach()
    ref = posteriors.unconstrain(post)  # (draws, 4) in the guide's order mu, phi, theta, sigma
    ref_mean, ref_sd = ref.mean(0), ref.std(0)
    assert ((mean.detach() - ref_mean).abs() / ref_sd).max() < 0.25
    assert ((sd / ref_sd) - 1).abs().max() < 0.15


# -- non-finite ELBO estimates during fit -----------------------------------------------------
def _poisoned_model(state):
    """``x ~ N(0, 1)``; the log density is -inf at the ``state["at"]``-th call with gradients
    on after the test arms it (``state["until"]``: the last such call that is -inf), i.e. at
    that step of a one-particle fit."""

    def model():
        x = pyro.sample("x", dist.Normal(0.0, 1.0))
        if state["armed"] and torch.is_grad_enabled():
            state["calls"] += 1
            if state["at"] <= state["calls"] <= state["until"]:
                pyro.factor("poison", torch.full_like(x, -math.inf))

    return model


def _armed_guide(at: int, until: float):
    state = {"armed": False, "calls": 0, "at": at, "until": until}
    guide = FlowGuide(_poisoned_model(state), layers=1, hidden=(8,), affine_init=None)
    guide()
    state["armed"] = True
    return guide


def test_a_transient_nonfinite_elbo_is_undone_and_named_in_a_warning():
    guide = _armed_guide(at=5, until=5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = guide.fit(
            steps=12, num_particles=1, progress=False, seed=0, check_convergence=False
        )
    found = [w for w in caught if issubclass(w.category, NonFiniteELBOWarning)]
    assert len(found) == 1, [str(w.message) for w in caught]
    assert "step(s) 5." in str(found[0].message)
    assert history.diverged_steps == [5]
    assert history.restarts == 1 and history.steps == 12
    assert all(bool(torch.isfinite(p).all()) for p in guide.parameters())


def test_a_fit_that_stays_nonfinite_raises_naming_the_step_and_keeps_finite_parameters():
    guide = _armed_guide(at=3, until=math.inf)
    before = {k: v.clone() for k, v in guide.state_dict().items()}
    with pytest.raises(TrainingDiverged, match=r"not finite at step\(s\) 3, 1, 1, 1") as info:
        guide.fit(steps=10, num_particles=1, progress=False, seed=0)
    assert "float64" in str(info.value) and "smaller lr" in str(info.value)
    assert info.value.history.diverged_steps == [3, 1, 1, 1]
    after = guide.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the state at step 0


def test_a_clean_fit_gives_no_nonfinite_warning():
    def model():
        pyro.sample("x", dist.Normal(0.0, 1.0))

    guide = FlowGuide(model, layers=1, hidden=(8,))
    with warnings.catch_warnings():
        warnings.simplefilter("error", NonFiniteELBOWarning)
        warnings.simplefilter("ignore", ConvergenceWarning)
        history = guide.fit(steps=20, progress=False, seed=0)
    assert history.diverged_steps == []


def test_the_loop_records_the_step_of_a_nonfinite_loss():
    calls = {"n": 0}
    layer = torch.nn.Linear(1, 1)

    def loss_fn(model, batch):
        calls["n"] += 1
        value = model.weight.square().sum()
        return value * math.nan if calls["n"] == 7 else value

    history = pf.fit(layer, loss_fn, None, steps_per_epoch=5, max_epochs=3, progress=False)
    assert history.diverged_steps == [7]
    assert history.restarts == 1 and history.steps == 15
