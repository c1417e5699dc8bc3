"""Simulations in parallel: worker processes on one machine, or any ``concurrent.futures``
executor (Dask's and Ray's run them on a cluster; pyroflows does not depend on them).

The simulations are cut into chunks of ``chunk_size`` (fixed, whatever the number of
workers); chunk ``k`` runs under a seed derived from ``(seed, k)`` by NumPy's
``SeedSequence`` (torch, NumPy and Python's ``random`` are seeded with it in the process that
runs the chunk), and the chunks are concatenated in order. The result thus depends on
``seed``, ``chunk_size`` and the number of simulations only: one worker, two workers and an
executor give the same tensors bit for bit (for a simulator whose arithmetic does not depend
on the thread count). Chunks share a process's global random states, so a thread pool runs
them one at a time (processes, e.g. ``num_workers`` or a process-based Dask cluster, in
parallel).

Worker processes receive the simulator by ``pickle``: a simulator or Pyro model defined at a
module's top level pickles; a lambda or a function defined inside another is refused before
anything runs (define it at module level, or pass an ``executor`` that serialises functions
by value, such as Dask's).
"""

from __future__ import annotations

import pickle
import threading
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pyroflows.train.seeding import seeded
from pyroflows.validation import positive_int

__all__ = ["CHUNK_SIZE", "chunk_seeds", "simulate_parallel"]

#: simulations per chunk (each chunk one task for a worker, under its own seed)
CHUNK_SIZE = 100


def chunk_seeds(seed: int, num_chunks: int) -> list[int]:
    """The seed of each chunk: ``SeedSequence([seed, k])``'s first word, for ``k`` in order
    (counter-based: chunk ``k``'s seed does not depend on how many chunks there are)."""
    return [int(np.random.SeedSequence([int(seed), k]).generate_state(1)[0])
            for k in range(num_chunks)]  # fmt: skip


#: one chunk at a time per process: threads share the global random states a chunk seeds
_SEEDED = threading.Lock()


def _run_chunk(sim: Callable[[int], tuple[Tensor, Tensor]], n: int, seed: int):
    """``sim(n)`` under ``seed`` (torch, NumPy, ``random``), the global states restored. The
    global states are per process, so threads of one process (a thread pool executor) run
    their chunks one at a time; worker processes run in parallel."""
    with _SEEDED, seeded(seed):
        theta, x = sim(n)
    return theta, x


def _check_picklable(sim: Any) -> None:
    try:
        pickle.dumps(sim)
    except (pickle.PicklingError, AttributeError, TypeError) as error:
        raise ValueError(
            "the simulator (or Pyro model) cannot be sent to worker processes: "
            f"{type(error).__name__}: {error}. Define it at a module's top level (not a lambda "
            "or a function inside another), or pass an executor that serialises functions "
            "by value (e.g. Dask's)"
        ) from None


def check_parallel(num_workers: Any, executor: Any, chunk_size: Any) -> None:
    """The options, before anything is simulated."""
    if num_workers is not None and executor is not None:
        raise ValueError("pass num_workers or executor, not both")
    if num_workers is not None:
        positive_int("num_workers", num_workers)
    if executor is not None and not isinstance(executor, Executor):
        raise TypeError(
            f"executor must be a concurrent.futures.Executor, got {type(executor).__name__}"
        )
    positive_int("chunk_size", chunk_size)


def simulate_parallel(
    sim: Callable[[int], tuple[Tensor, Tensor]],
    num_simulations: int,
    seed: int,
    num_workers: int | None = None,
    executor: Executor | None = None,
    chunk_size: int = CHUNK_SIZE,
) -> tuple[Tensor, Tensor]:
    """``num_simulations`` pairs ``(theta, x)`` of ``sim`` in seeded chunks.

    Args:
        sim: ``n -> (theta (n, dim), x (n, ...))``.
        num_simulations: how many.
        seed: the base seed of the chunks' seeds (:func:`chunk_seeds`).
        num_workers: processes on this machine (1: in this process).
        executor: any ``concurrent.futures.Executor`` instead (not shut down here).
        chunk_size: simulations per chunk.

    Example:
        >>> def sim(n):
        ...     theta = torch.randn(n, 1)
        ...     return theta, theta + torch.randn(n, 1)
        >>> a = simulate_parallel(sim, 250, seed=0, num_workers=1)
        >>> b = simulate_parallel(sim, 250, seed=0, num_workers=1, chunk_size=100)
        >>> torch.equal(a[1], b[1]), a[0].shape
        (True, torch.Size([250, 1]))
    """
    n = positive_int("num_simulations", num_simulations)
    check_parallel(num_workers, executor, chunk_size)
    sizes = [min(chunk_size, n - i) for i in range(0, n, chunk_size)]
    seeds = chunk_seeds(seed, len(sizes))
    if executor is None and (num_workers or 1) == 1:
        parts = [_run_chunk(sim, size, s) for size, s in zip(sizes, seeds, strict=True)]
    elif executor is not None:
        if isinstance(executor, ProcessPoolExecutor):
            _check_picklable(sim)
        parts = list(executor.map(_run_chunk, [sim] * len(sizes), sizes, seeds))
    else:
        _check_picklable(sim)
        with ProcessPoolExecutor(min(num_workers, len(sizes))) as pool:
            parts = list(pool.map(_run_chunk, [sim] * len(sizes), sizes, seeds))
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
