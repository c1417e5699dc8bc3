"""The simulator side of an amortized posterior: the simulator its constructor's arguments
describe (:func:`simulator_of`, after :func:`check_arguments`) and the simulation methods of
:class:`~pyroflows.amortized.posterior.AmortizedPosterior` (:class:`Simulation`: ``simulate``,
``simulate_data``, ``size_of``). The simulators themselves live in
:mod:`~pyroflows.amortized.simulate`, parallel simulation in
:mod:`~pyroflows.amortized.parallel`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Executor
from typing import Any

import torch
from torch import Tensor, nn

from pyroflows.amortized.observations import ObservationSpace, check_sized
from pyroflows.amortized.parallel import CHUNK_SIZE, check_parallel, simulate_parallel
from pyroflows.amortized.simulate import (
    ModelSimulator,
    PriorSimulator,
    VariableSizeSimulator,
    can_simulate,
)
from pyroflows.builders import FAMILIES

__all__ = ["Simulation", "Simulator", "check_arguments", "simulator_of"]

#: what simulates for a posterior (None: a posterior fitted on given tensors only)
Simulator = ModelSimulator | VariableSizeSimulator | PriorSimulator


def simulator_of(
    model: Callable | None,
    observed: str,
    prior: Any,
    simulator: Callable | None,
    summary: nn.Module | None,
    model_args: Sequence[Any],
    model_kwargs: Mapping[str, Any] | None,
    param_name: str,
    sizes: Iterable[int] | None,
    size_arg: str | None,
) -> tuple[Simulator | None, ObservationSpace]:
    """The simulator of the constructor's arguments (checked by :func:`check_arguments`) and
    the data's :class:`~pyroflows.amortized.observations.ObservationSpace` (sets padded to
    ``max(sizes)`` rows with ``sizes``)."""
    if sizes is not None or size_arg is not None:
        check_sized(model, summary, sizes, size_arg)
    if model is not None and sizes is not None:
        sim = VariableSizeSimulator(model, observed, sizes, size_arg, model_args, model_kwargs)
        return sim, ObservationSpace.of(
            summary, sizes=sim.sizes, size_arg=sim.size_arg, axis=sim.axis,
            row_shape=sim.row_shape,
        )  # fmt: skip
    observations = ObservationSpace.of(summary)
    if model is not None:
        return ModelSimulator(model, observed, model_args, model_kwargs), observations
    if prior is not None:
        return PriorSimulator(prior, simulator, param_name), observations
    return None, observations


class Simulation:
    """The simulation methods of :class:`~pyroflows.amortized.posterior.AmortizedPosterior`
    (on its ``sim`` and ``observations``)."""

    def simulate(
        self,
        num_simulations: int,
        *,
        seed: int | None = None,
        num_workers: int | None = None,
        executor: Executor | None = None,
        chunk_size: int = CHUNK_SIZE,
    ) -> tuple[Tensor, Tensor]:
        """``(theta (N, dim), x (N, ...))`` from the prior predictive (not filtered).

        With ``num_workers`` (processes on this machine) or ``executor`` (any
        ``concurrent.futures.Executor``, e.g. Dask's or Ray's) the simulations run in chunks
        of ``chunk_size``, each under a seed derived from ``(seed, chunk index)``
        (:mod:`~pyroflows.amortized.parallel`): the result is the same bit for bit whatever
        the number of workers or the executor. Without ``seed`` the base seed is drawn from
        torch's global stream. Worker processes need a simulator (or model) that pickles.
        """
        if not can_simulate(self.sim):
            raise ValueError("no simulator: construct with a Pyro model or prior + simulator")
        if num_workers is None and executor is None:
            if seed is not None:
                raise ValueError("seed= is for num_workers= / executor= (chunked simulation)")
            return self.sim(num_simulations)
        check_parallel(num_workers, executor, chunk_size)
        if seed is None:
            seed = int(torch.randint(2**31 - 1, ()).item())
        return simulate_parallel(self.sim, num_simulations, seed, num_workers, executor, chunk_size)

    def size_of(self, x: Any) -> int | None:
        """The number of observations (real, non-padding rows) in one observation ``x`` of a
        posterior with ``sizes``; None without ``sizes``."""
        return self.observations.size_of(x)

    def simulate_data(self, theta: Tensor, size: Any = None) -> Tensor:
        """Data for given parameters ``(N, dim)`` (e.g. posterior predictive draws).

        With ``sizes``: NaN-padded sets ``(N, max(sizes), features)``; ``size`` None draws
        each simulation's number of observations from ``sizes`` (as in training: what
        :func:`pyroflows.diagnostics.posterior_predictive` gets), an int gives all that many
        (e.g. the observation's, for a posterior predictive check), and ``N`` ints one each.
        Without ``sizes``, ``size`` must be None.
        """
        if self.sim is None:
            raise ValueError("no simulator: construct with a Pyro model or prior + simulator")
        if isinstance(self.sim, VariableSizeSimulator):
            return self.sim.simulate(theta, size)
        if size is not None:
            raise ValueError("size= is for a posterior built with sizes= and size_arg=")
        return self.sim.simulate(theta)

    def _simulate_many(
        self, n: int, chunk: int = 10_000, parallel: Mapping[str, Any] | None = None
    ) -> tuple[Tensor, Tensor]:
        if parallel and any(v is not None for v in parallel.values()):
            return self.simulate(n, **parallel)
        parts = [self.simulate(min(chunk, n - i)) for i in range(0, n, chunk)]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def check_arguments(
    model: Any, prior: Any, simulator: Any, summary: Any, flow: Any, model_args: Any,
    model_kwargs: Any, param_name: Any,
) -> None:  # fmt: skip
    """The constructor's arguments that go together or exclude each other."""
    if model is not None and (prior is not None or simulator is not None):
        raise ValueError("pass either a Pyro model or a prior (+ simulator), not both")
    if simulator is not None and prior is None:
        raise ValueError("a simulator needs a prior (prior=...) to draw parameters from")
    if summary is not None and not isinstance(summary, nn.Module):
        raise TypeError(f"summary must be an nn.Module, got {type(summary).__name__}")
    if flow != "auto" and flow not in FAMILIES:
        raise ValueError(f"flow must be 'auto' or one of {sorted(FAMILIES)}, got {flow!r}")
    if model is None and (tuple(model_args) or model_kwargs):
        raise ValueError("model_args / model_kwargs are arguments of a Pyro model: pass model=")
    if model is not None and param_name != "theta":
        raise ValueError(
            f"param_name={param_name!r} names the parameter of a prior or of plain tensors; "
            "a Pyro model's parameters keep their site names"
        )
