"""Seeded blocks: random streams seeded for a block and restored after it.

:func:`seeded` is the one way the amortized package fixes what a call draws (a fit's
simulations and initialisation, a parallel chunk, the misspecification check's reference, the
distillation's simulations) without changing the caller's random streams; :func:`seeded_draws`
seeds torch's streams alone (CPU and GPUs) for a posterior's draws.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pyro
import torch

from pyroflows.train.checkpoint import rng_state, set_rng_state

__all__ = ["seeded", "seeded_draws"]


@contextmanager
def seeded(seed: int | None, offset: int = 0) -> Iterator[None]:
    """Seed torch, NumPy and Python's ``random`` (all a simulator may draw from) with
    ``seed + offset`` (modulo ``2**32``) for the block, and restore the global random states
    after it; nothing when ``seed`` is None. Offline (offset 0),
    ``pyro.set_rng_seed(s); post.fit(..., seed=s)`` thus draws what it drew before the
    simulations were seeded (for a prior + simulator).

    Example:
        >>> import torch
        >>> with seeded(3):
        ...     a = torch.rand(2)
        >>> with seeded(3):
        ...     b = torch.rand(2)
        >>> bool(torch.equal(a, b))
        True
    """
    if seed is None:
        yield
        return
    saved = rng_state(None)
    try:
        pyro.set_rng_seed((int(seed) + offset) % 2**32)
        yield
    finally:
        set_rng_state(saved, None)


@contextmanager
def seeded_draws(seed: int | None) -> Iterator[None]:
    """``torch.manual_seed(seed)`` for the block, torch's CPU stream and the streams of the
    GPUs in use restored after it (``torch.manual_seed`` seeds every device); nothing when
    ``seed`` is None.

    Example:
        >>> with seeded_draws(0):
        ...     a = torch.rand(2)
        >>> with seeded_draws(0):
        ...     b = torch.rand(2)
        >>> bool(torch.equal(a, b))
        True
    """
    if seed is None:
        yield
        return
    gpus = torch.cuda.is_available() and torch.cuda.is_initialized()
    with torch.random.fork_rng(devices=range(torch.cuda.device_count()) if gpus else []):
        torch.manual_seed(seed)
        yield
