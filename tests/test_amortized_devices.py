"""Seeded draws of an amortized posterior leave torch's streams as they were, the GPUs' too
(``torch.manual_seed`` seeds every device). The GPU test runs where CUDA is available."""

from __future__ import annotations

import pyro.distributions as dist
import pytest
import torch

from pyroflows.amortized import AmortizedPosterior
from pyroflows.train.seeding import seeded_draws

torch.set_num_threads(1)


def test_seeded_draws_are_the_seed_s_and_leave_the_stream_as_it_was():
    before = torch.get_rng_state()
    with seeded_draws(7):
        inside = torch.rand(3)
    assert torch.equal(torch.get_rng_state(), before)
    torch.manual_seed(7)
    assert torch.equal(inside, torch.rand(3))
    with seeded_draws(None):
        torch.rand(1)
    assert not torch.equal(torch.get_rng_state(), before)  # no seed: the global stream


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("ensemble", [1, 2])
def test_seeded_draws_on_a_gpu_leave_its_stream_as_it_was(ensemble):
    prior = dist.Normal(torch.zeros(2), 1.0).to_event(1)
    post = AmortizedPosterior(prior=prior, simulator=lambda t: t + torch.randn_like(t),
                              flow="maf", flow_kwargs=dict(layers=1, hidden=(8,)),
                              ensemble=ensemble)  # fmt: skip
    post.fit(num_simulations=100, max_epochs=1, progress=False, device="cuda", recipe="one_phase")
    before = torch.cuda.get_rng_state()
    draws = post.sample(torch.zeros(2), 50, seed=3)
    assert torch.equal(torch.cuda.get_rng_state(), before)
    assert torch.equal(draws, post.sample(torch.zeros(2), 50, seed=3))
