"""Seeded blocks: random streams seeded for a block and restored after it.

These are the one way the package fixes what a call draws without changing the caller's
random streams:

* :func:`seeded` seeds torch, NumPy and Python's ``random`` (all a simulator may draw from),
  e.g. for an amortized fit's simulations and initialisation;
* :func:`seeded_draws` seeds torch's streams alone, e.g. for a posterior's or a guide's draws;
* :func:`forked_streams` restores torch's streams after a block that draws without a seed
  (a throwaway model built to check options, a trace of the user's model).

Every torch stream in use is restored: the CPU's and those of the GPUs that CUDA has
initialised (``torch.manual_seed`` seeds every device, so restoring the CPU alone would leave
a GPU's stream at the seed, and the caller's later "random" GPU draws would repeat).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pyro
import torch

from pyroflows.train.checkpoint import rng_state, set_rng_state

__all__ = ["forked_streams", "seeded", "seeded_draws"]


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
def forked_streams() -> Iterator[None]:
    """Run the block on torch's random streams and restore them after it: the CPU's and
    those of the GPUs CUDA has initialised.

    Example:
        >>> import torch
        >>> before = torch.get_rng_state()
        >>> with forked_streams():
        ...     _ = torch.rand(3)
        >>> bool(torch.equal(torch.get_rng_state(), before))
        True
    """
    gpus = torch.cuda.is_available() and torch.cuda.is_initialized()
    with torch.random.fork_rng(devices=range(torch.cuda.device_count()) if gpus else []):
        yield


@contextmanager
def seeded_draws(seed: int | None) -> Iterator[None]:
    """``torch.manual_seed(seed)`` for the block, torch's CPU stream and the streams of the
    GPUs in use restored after it (``torch.manual_seed`` seeds every device); nothing when
    ``seed`` is None.

    Example:
        >>> before = torch.get_rng_state()
        >>> with seeded_draws(0):
        ...     a = torch.rand(2)
        >>> bool(torch.equal(torch.get_rng_state(), before))  # the caller's stream, untouched
        True
        >>> _ = torch.manual_seed(0)
        >>> bool(torch.equal(a, torch.rand(2)))  # the seed's draws
        True
    """
    if seed is None:
        yield
        return
    with forked_streams():
        torch.manual_seed(seed)
        yield
