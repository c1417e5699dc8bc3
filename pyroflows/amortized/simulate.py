"""Simulations ``(theta, x)`` for amortized inference, from a Pyro model or a prior + simulator.

* :class:`ModelSimulator` runs a Pyro model ``N`` times in **one vectorised call**: the model is
  traced inside an outer ``pyro.plate`` placed left of the model's own plates (what
  ``pyro.infer.Predictive(parallel=True)`` does). Its latent sample sites are the parameters
  (names, shapes and supports kept, for the bijection to the unconstrained space and for
  ArviZ); the named ``observed`` site is the data. A model that cannot be vectorised falls back
  to a loop, with a warning.
* :class:`PriorSimulator` draws ``theta`` from a torch / Pyro distribution and calls a
  ``simulator(theta) -> x`` on the whole batch.

Both return flat parameters ``(N, dim)`` and data ``(N, *x_shape)``. :func:`drop_invalid`
removes simulations with non-finite values (NaN padding rows of set data excepted), counts them
and warns once with the count.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pyro
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample
from torch import Tensor

from pyroflows.amortized.parameters import ParameterSpace

__all__ = ["ModelSimulator", "PriorSimulator", "drop_invalid", "valid_rows"]


def valid_rows(x: Tensor, nan_padding: bool = False) -> Tensor:
    """Boolean ``(N,)``: which simulations ``x[i]`` are usable.

    Without ``nan_padding`` every entry must be finite. With ``nan_padding`` (set data of shape
    ``(N, n, d)`` padded with all-NaN rows) a row is padding when all its entries are NaN; other
    rows must be finite and at least one row must be real.

    Example:
        >>> x = torch.tensor([[[1.0], [float("nan")]], [[float("inf")], [0.0]]])
        >>> valid_rows(x, nan_padding=True)
        tensor([ True, False])
    """
    flat = x.reshape(len(x), -1)
    if not nan_padding:
        return torch.isfinite(flat).all(-1)
    rows = x.reshape(len(x), -1, x.shape[-1])
    padding = torch.isnan(rows).all(-1)
    finite = torch.isfinite(rows).all(-1)
    return (finite | padding).all(-1) & (~padding).any(-1)


def drop_invalid(
    theta: Tensor, x: Tensor, nan_padding: bool = False, what: str = "simulations"
) -> tuple[Tensor, Tensor, int]:
    """Remove simulations whose ``theta`` or ``x`` is not finite; warn once with the count.

    Returns:
        ``(theta, x, dropped)``.

    Raises:
        ValueError: when nothing valid is left.
    """
    keep = torch.isfinite(theta.reshape(len(theta), -1)).all(-1) & valid_rows(x, nan_padding)
    dropped = int((~keep).sum())
    if dropped:
        if dropped == len(keep):
            raise ValueError(f"all {dropped} {what} contain NaN or infinite values")
        warnings.warn(
            f"{dropped} of {len(keep)} {what} contain NaN or infinite values and were "
            "skipped (not trained on)",
            RuntimeWarning,
            stacklevel=3,
        )
        theta, x = theta[keep], x[keep]
    return theta, x, dropped


def _check_count(n: Any) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"the number of simulations must be a positive integer, got {n!r}")
    return n


class PriorSimulator:
    """Simulations from a prior distribution and a batched simulator.

    Args:
        prior: a torch or Pyro distribution; one draw has shape
            ``batch_shape + event_shape`` (flattened into ``dim`` parameters).
        simulator: maps draws ``(N, *prior shape)`` to data ``(N, ...)``; may be None when
            only pre-simulated tensors are used.
        name: the parameter's name (for ArviZ).

    Example:
        >>> import pyro.distributions as dist
        >>> prior = dist.Normal(torch.zeros(2), 1.0).to_event(1)
        >>> sim = PriorSimulator(prior, lambda t: t + 0.1 * torch.randn_like(t))
        >>> theta, x = sim(5)
        >>> theta.shape, x.shape
        (torch.Size([5, 2]), torch.Size([5, 2]))
    """

    def __init__(self, prior: Any, simulator: Callable[[Tensor], Tensor] | None = None,
                 name: str = "theta"):  # fmt: skip
        if not isinstance(prior, torch.distributions.Distribution):
            raise TypeError(f"prior must be a torch or Pyro distribution, got {type(prior)}")
        if simulator is not None and not callable(simulator):
            raise TypeError("simulator must be a callable theta -> x")
        self.prior, self.simulator = prior, simulator
        shape = prior.batch_shape + prior.event_shape
        self.space = ParameterSpace([name], [shape], [_full_support(prior)])

    def sample_prior(self, n: int) -> Tensor:
        """``(n, dim)`` flat prior draws."""
        theta = self.prior.sample((_check_count(n),))
        return theta.reshape(n, -1)

    def simulate(self, theta: Tensor) -> Tensor:
        """Data for flat parameters ``(N, dim)``."""
        if self.simulator is None:
            raise ValueError("no simulator was given: pass simulator=... or fit from tensors")
        n = len(theta)
        shape = self.prior.batch_shape + self.prior.event_shape
        x = self.simulator(theta.reshape(n, *shape))
        if not isinstance(x, Tensor):
            x = torch.as_tensor(x)
        if x.dim() == 0 or len(x) != n:
            raise ValueError(
                f"the simulator returned {tuple(x.shape)} for {n} parameter draws: the prior and "
                "the simulator disagree in batch size (x must have one row per draw)"
            )
        return x

    def __call__(self, n: int) -> tuple[Tensor, Tensor]:
        """``n`` simulations ``(theta (n, dim), x (n, ...))``."""
        theta = self.sample_prior(n)
        return theta, self.simulate(theta)


def _full_support(prior: Any) -> Any:
    """The prior's support as a constraint on one whole draw (batch dims included)."""
    support = prior.support
    extra = len(prior.batch_shape) + len(prior.event_shape) - support.event_dim
    if extra > 0:
        support = torch.distributions.constraints.independent(support, extra)
    return support


def _max_plate_nesting(trace: Any) -> int:
    dims = [
        frame.dim
        for site in trace.nodes.values()
        if site["type"] == "sample"
        for frame in site["cond_indep_stack"]
        if frame.vectorized
    ]
    return -min(dims) if dims else 0


class ModelSimulator:
    """Simulations from a Pyro model: latent sites are the parameters, ``observed`` the data.

    Args:
        model: a Pyro model; called as ``model(*args, **kwargs)``, it must *sample* the
            observed site (e.g. ``obs=None`` by default).
        observed: name of the data site.
        args, kwargs: arguments of the model (e.g. the number of observations).
        vectorized: run ``N`` simulations in one call under an outer plate (fallback to a loop
            with a warning if the model cannot be vectorised).

    Example:
        >>> import pyro.distributions as dist
        >>> def model(x=None):
        ...     mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        ...     sigma = pyro.sample("sigma", dist.LogNormal(0.0, 0.5))
        ...     with pyro.plate("data", 10):
        ...         return pyro.sample("x", dist.Normal(mu, sigma), obs=x)
        >>> sim = ModelSimulator(model, "x")
        >>> sim.space
        ParameterSpace(mu(), sigma())
        >>> theta, x = sim(100)
        >>> theta.shape, x.shape, bool((theta[:, 1] > 0).all())
        (torch.Size([100, 2]), torch.Size([100, 10]), True)
    """

    def __init__(
        self,
        model: Callable,
        observed: str = "x",
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        vectorized: bool = True,
    ):
        if not callable(model):
            raise TypeError("model must be a callable Pyro model")
        self.model, self.observed = model, str(observed)
        self.args, self.kwargs = tuple(args), dict(kwargs or {})
        self.vectorized = vectorized
        with poutine.block(), torch.no_grad():
            trace = poutine.trace(model).get_trace(*self.args, **self.kwargs)
        sites = {n: s for n, s in trace.nodes.items() if s["type"] == "sample"}
        if self.observed not in sites:
            raise ValueError(
                f"the model has no sample site named {self.observed!r}; its sample sites are "
                f"{sorted(sites)}"
            )
        if sites[self.observed]["is_observed"]:
            raise ValueError(
                f"site {self.observed!r} is observed when the model is called with the given "
                "arguments; the model must sample it (leave its obs=None) to simulate data"
            )
        latent = [
            n
            for n, s in sites.items()
            if n != self.observed and not s["is_observed"] and not site_is_subsample(s)
        ]
        if not latent:
            raise ValueError("the model has no latent sample sites (no parameters to infer)")
        self.max_plate_nesting = _max_plate_nesting(trace)
        self.space = ParameterSpace(
            latent,
            [sites[n]["value"].shape for n in latent],
            [sites[n]["fn"].support for n in latent],
        )
        self.x_shape = sites[self.observed]["value"].shape

    # -- tracing ----------------------------------------------------------------------------
    def _names_shapes(self) -> tuple[list[str], dict[str, torch.Size]]:
        shapes = dict(zip(self.space.names, self.space.shapes, strict=True))
        shapes[self.observed] = self.x_shape
        return self.space.names + [self.observed], shapes

    def _trace(self, n: int, condition: Mapping[str, Tensor] | None) -> dict[str, Tensor]:
        """Values of every sample site for ``n`` simulations, each ``(n, *shape)``."""
        names, shapes = self._names_shapes()
        if self.vectorized:
            try:
                if not hasattr(self, "_plated"):  # per-site shapes under the outer plate
                    probe = self._trace_vectorized(2, None)
                    self._plated = {k: v.shape[1:] for k, v in probe.items()}
                raw = self._trace_vectorized(n, condition)
                return {k: self._natural(k, raw[k], n, shapes[k]) for k in names}
            except (RuntimeError, ValueError) as error:
                warnings.warn(
                    f"the model could not be vectorised over simulations ({error}); simulating "
                    "one at a time (slow). Pass vectorized=False to silence this.",
                    RuntimeWarning,
                    stacklevel=3,
                )
                self.vectorized = False
        return self._trace_loop(n, names, condition)

    @staticmethod
    def _natural(name: str, value: Tensor, n: int, shape: torch.Size) -> Tensor:
        if value.shape[0] != n or value.numel() != n * math.prod(shape):
            raise ValueError(f"site {name!r} has shape {tuple(value.shape)} under the plate")
        return value.reshape(n, *shape)

    def _trace_vectorized(self, n: int, condition: Mapping[str, Tensor] | None):
        """Raw site values under an outer plate of size ``n`` (left of the model's plates)."""
        model = self.model
        if condition is not None:
            plated = {k: v.reshape(n, *self._plated[k]) for k, v in condition.items()}
            model = poutine.condition(model, plated)

        def batched(*args, **kwargs):
            with pyro.plate("_simulations", n, dim=-self.max_plate_nesting - 1):
                return model(*args, **kwargs)

        with poutine.block(), torch.no_grad():
            trace = poutine.trace(batched).get_trace(*self.args, **self.kwargs)
        names, _ = self._names_shapes()
        return {name: trace.nodes[name]["value"] for name in names}

    def _trace_loop(self, n, names, condition) -> dict[str, Tensor]:
        rows: dict[str, list[Tensor]] = {name: [] for name in names}
        for i in range(n):
            cond = None if condition is None else {k: v[i] for k, v in condition.items()}
            model = self.model if cond is None else poutine.condition(self.model, cond)
            with poutine.block(), torch.no_grad():
                trace = poutine.trace(model).get_trace(*self.args, **self.kwargs)
            for name in names:
                rows[name].append(trace.nodes[name]["value"])
        return {name: torch.stack(values) for name, values in rows.items()}

    # -- public ---------------------------------------------------------------------------------
    def __call__(self, n: int) -> tuple[Tensor, Tensor]:
        """``n`` simulations ``(theta (n, dim), x (n, *x_shape))`` from the prior predictive."""
        values = self._trace(_check_count(n), None)
        return self.space.flatten(values), values[self.observed]

    def sample_prior(self, n: int) -> Tensor:
        """``(n, dim)`` flat draws of the latent sites."""
        return self(n)[0]

    def simulate(self, theta: Tensor) -> Tensor:
        """Data for given flat parameters ``(N, dim)``: the model conditioned on them."""
        if theta.dim() != 2:
            raise ValueError(
                f"theta must have shape (N, {self.space.dim}), got {tuple(theta.shape)}"
            )
        condition = self.space.unflatten(theta)
        return self._trace(len(theta), condition)[self.observed]
