"""Shared helpers: seeding and parameter randomisation.

Flows start as the identity (zero-initialised output layers), which would make most checks
trivial, so tests randomise every parameter first.
"""

from __future__ import annotations

import pyro
import pytest
import torch
from torch import nn


@pytest.fixture(autouse=True)
def _seed():
    pyro.set_rng_seed(0)
    pyro.clear_param_store()
    yield


def randomize(module: nn.Module, std: float = 0.3, seed: int = 0) -> nn.Module:
    """Draw every parameter i.i.d. from N(0, std^2) with a fixed seed, and give BatchNorm
    layers non-trivial running statistics."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=generator, dtype=torch.float64) * std)
        for name, b in module.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=generator, dtype=torch.float64))
            elif name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=generator, dtype=torch.float64) + 0.5)
    return module
