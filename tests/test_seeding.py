"""Seeded blocks restore every torch stream in use, CPU and GPU (``pyroflows.train.seeding``),
and the package seeds its draws only through them."""

import re
from pathlib import Path

import pytest
import torch

import pyroflows
from pyroflows.train import seeding
from pyroflows.train.seeding import forked_streams, seeded_draws

PACKAGE = Path(pyroflows.__file__).parent


def test_no_module_forks_the_cpu_stream_alone():
    """``fork_rng(devices=[])`` restores the CPU stream and leaves a GPU's stream at the seed
    set inside the block: the caller's later GPU draws would repeat after every seeded call
    (and a bare ``fork_rng()`` starts CUDA and warns with several GPUs)."""
    offenders = [
        f"{path.relative_to(PACKAGE)}:{number}"
        for path in PACKAGE.rglob("*.py")
        if path.name != "seeding.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"fork_rng\(\s*(devices\s*=\s*\[\s*\]\s*)?[,)]", line)
    ]
    assert not offenders, f"use pyroflows.train.seeding instead at {offenders}"


def test_forked_streams_restore_the_cpu_stream():
    before = torch.get_rng_state()
    with forked_streams():
        torch.rand(5)
    assert torch.equal(torch.get_rng_state(), before)


def test_forked_streams_fork_the_gpus_cuda_has_started(monkeypatch):
    seen = {}

    class Fork:
        def __init__(self, devices):
            seen["devices"] = list(devices)

        def __enter__(self):
            return None

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(seeding.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(seeding.torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(seeding.torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(seeding.torch.random, "fork_rng", lambda devices: Fork(devices))
    with seeded_draws(1):
        pass
    assert seen["devices"] == [0, 1]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_seeded_guide_summary_on_a_gpu_leaves_its_stream_as_it_was():
    import pyro
    import pyro.distributions as dist

    from pyroflows.vi import FlowGuide

    def model():
        pyro.sample("z", dist.Normal(torch.zeros(2, device="cuda"), 1.0).to_event(1))

    guide = FlowGuide(model, layers=1, hidden=(8,)).to("cuda")
    guide()
    before = torch.cuda.get_rng_state()
    first = guide.quantiles([0.5], num_samples=64, seed=3)
    assert torch.equal(torch.cuda.get_rng_state(), before)
    assert torch.equal(first["z"], guide.quantiles([0.5], num_samples=64, seed=3)["z"])
