"""One ``fit`` call checked once (:mod:`pyroflows.amortized.call`): the record's defaults, its
members' copies, and an ensemble that checks its call once for all members."""

from __future__ import annotations

import dataclasses

import pyro.distributions as dist
import pytest
import torch

import pyroflows.amortized.call as call_module
from pyroflows.amortized import AmortizedPosterior
from pyroflows.amortized.call import FitCall, check_call

torch.set_num_threads(1)


def test_the_defaults_of_each_mode_are_filled_in():
    offline = check_call(num_simulations=50)
    assert (offline.validation_fraction, offline.two_phases, offline.seed) == (0.1, True, None)
    assert offline.parallel == {"num_workers": None, "executor": None}
    online = check_call(simulate_online=True, steps=7, train_options={"seed": 2})
    assert (online.steps, online.num_validation, online.steps_per_epoch) == (7, 1000, 200)
    assert (online.two_phases, online.seed) == (False, 2)
    assert not check_call(num_simulations=50, validation_fraction=0.0).two_phases


def test_the_record_cannot_be_changed():
    call = check_call(num_simulations=50, train_options={"seed": 1})
    with pytest.raises(dataclasses.FrozenInstanceError):
        call.num_simulations = 3
    with pytest.raises(TypeError):
        call.train_options["seed"] = 3


def test_weights_are_checked_into_the_record():
    theta = torch.zeros(4, 2)
    call = check_call(theta, theta, sample_weight=[1, 2, 0, 1])
    assert call.weight.dtype == torch.float64 and call.weight.tolist() == [1.0, 2.0, 0.0, 1.0]
    with pytest.raises(ValueError, match="sample_weight"):
        check_call(theta, theta, sample_weight=[1, 2])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(simulate_online=True, steps=0), "steps=<positive int>"),
        (dict(simulate_online=True, steps=5, num_validation=0), "num_validation"),
        (dict(simulate_online=True, steps=5, steps_per_epoch=-1), "steps_per_epoch"),
        (dict(num_simulations=5, steps=5), "would be ignored by an offline fit"),
        (dict(num_simulations=5, train_options={"lr": 1e-3}), "recipe='one_phase'"),
    ],
    ids=["steps", "num_validation", "steps_per_epoch", "other mode", "recipe option"],
)
def test_a_bad_call_is_refused_before_anything_runs(kwargs, match):
    with pytest.raises(ValueError, match=match):
        check_call(**kwargs)


def test_a_member_gets_its_seed_its_files_and_its_share_of_the_budget(tmp_path):
    options = {"seed": 10, "checkpoint": tmp_path / "run.ckpt", "time_budget": 9.0}
    call = check_call(num_simulations=50, num_workers=2, train_options=options)
    theta, x = torch.zeros(50, 1), torch.ones(50, 1)
    member = call.for_member(2, 3, theta, x)
    assert isinstance(member, FitCall)
    assert member.theta is theta and member.x is x and member.num_simulations is None
    assert member.parallel == {"num_workers": None, "executor": None}
    assert member.seed == 12 and member.train_options["time_budget"] == 3.0
    assert member.train_options["checkpoint"].name == "run.member2.ckpt"
    assert call.train_options["seed"] == 10  # the ensemble's call is left as it was
    unseeded = check_call(theta, x).for_member(1, 2, theta, x)
    assert unseeded.seed == 1  # seed 0 + member index


def test_an_ensemble_checks_its_call_once(monkeypatch):
    """The loop's option check runs once for an ensemble of three, not once per member."""
    calls = []
    check = call_module.check_options
    monkeypatch.setattr(call_module, "check_options", lambda **o: calls.append(o) or check(**o))
    prior = dist.Normal(torch.zeros(2), 1.0).to_event(1)
    post = AmortizedPosterior(
        prior=prior, simulator=lambda t: t + torch.randn_like(t), flow="maf",
        flow_kwargs=dict(layers=1, hidden=(8,)), ensemble=3,
    )  # fmt: skip
    post.fit(num_simulations=60, seed=0, recipe="one_phase", max_epochs=1, progress=False)
    assert len(calls) == 1
    assert [m.history is not None for m in post.members] == [True] * 3
