"""Simulations in parallel: seeded chunks, the same tensors whatever the number of workers."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pyro
import pyro.distributions as dist
import pytest
import torch

import pyroflows as pf
from pyroflows.amortized.parallel import chunk_seeds, simulate_parallel

torch.set_num_threads(1)


def noisy_sum(theta):
    """Module level, so that worker processes can unpickle it."""
    return theta + 0.1 * torch.randn_like(theta) + theta.sum(-1, keepdim=True)


def slow_simulator(theta):
    time.sleep(0.01 * len(theta))  # 10 ms per simulation
    return theta + torch.randn_like(theta)


def model():
    mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
    with pyro.plate("data", 3):
        return pyro.sample("x", dist.Normal(mu, 0.5))


def _post(simulator=noisy_sum):
    prior = dist.Normal(torch.zeros(2), 1.0).to_event(1)
    return pf.AmortizedPosterior(prior=prior, simulator=simulator,
                                 flow_kwargs=dict(layers=1, hidden=(8,)))  # fmt: skip


def test_one_and_two_workers_and_an_executor_give_the_same_tensors():
    post = _post()
    one = post.simulate(250, seed=3, num_workers=1, chunk_size=40)
    two = post.simulate(250, seed=3, num_workers=2, chunk_size=40)
    with ThreadPoolExecutor(3) as pool:
        three = post.simulate(250, seed=3, executor=pool, chunk_size=40)
    for a, b in zip(one, two, strict=True):
        assert torch.equal(a, b)
    for a, b in zip(one, three, strict=True):
        assert torch.equal(a, b)
    assert one[0].shape == (250, 2) and len(torch.unique(one[0][:, 0])) == 250
    other = post.simulate(250, seed=4, num_workers=1, chunk_size=40)
    assert not torch.equal(one[0], other[0])


def test_pyro_model_simulates_in_worker_processes():
    post = pf.AmortizedPosterior(model, "x")
    one = post.simulate(120, seed=0, num_workers=1, chunk_size=50)
    two = post.simulate(120, seed=0, num_workers=2, chunk_size=50)
    assert torch.equal(one[0], two[0]) and torch.equal(one[1], two[1])
    assert one[1].shape == (120, 3)


def test_chunk_seeds_are_counter_based():
    assert chunk_seeds(7, 3) == chunk_seeds(7, 5)[:3]
    assert len(set(chunk_seeds(7, 100))) == 100


def test_fit_with_workers_equals_fit_with_one():
    a = _post().fit(num_simulations=300, num_workers=1, max_epochs=2, recipe="one_phase",
                    seed=5, progress=False)  # fmt: skip
    b = _post().fit(num_simulations=300, num_workers=2, max_epochs=2, recipe="one_phase",
                    seed=5, progress=False)  # fmt: skip
    for (name, p), q in zip(a.estimator.state_dict().items(), b.estimator.state_dict().values(),
                            strict=True):  # fmt: skip
        assert torch.equal(p, q), name


def test_unpicklable_simulator_and_bad_options_are_refused_before_simulating():
    calls = []

    def local(theta):
        calls.append(1)
        return theta

    post = _post(local)
    with pytest.raises(ValueError, match="cannot be sent to worker processes"):
        post.simulate(10, seed=0, num_workers=2)
    assert not calls
    assert post.simulate(10, seed=0, num_workers=1)[1].shape == (10, 2)  # in this process
    with pytest.raises(ValueError, match="not both"):
        post.simulate(10, num_workers=2, executor=ThreadPoolExecutor(1))
    with pytest.raises(TypeError, match="Executor"):
        post.simulate(10, executor=object())
    with pytest.raises(ValueError, match="num_simulations"):
        _post().fit(torch.zeros(5, 2), torch.zeros(5, 2), num_workers=2)
    with pytest.raises(ValueError, match="seed="):
        post.simulate(10, seed=0)


@pytest.mark.slow
def test_two_workers_speed_up_a_slow_simulator():
    """4 s of simulations: two workers take about half, plus the pool's start and stop (about
    0.6 s measured on a loaded machine)."""
    start = time.perf_counter()
    simulate_parallel(_post(slow_simulator).sim, 400, seed=0, num_workers=1, chunk_size=25)
    one = time.perf_counter() - start
    start = time.perf_counter()
    simulate_parallel(_post(slow_simulator).sim, 400, seed=0, num_workers=2, chunk_size=25)
    two = time.perf_counter() - start
    assert one > 4.0 and two < 0.7 * one, (one, two)
