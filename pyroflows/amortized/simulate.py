"""Simulations ``(theta, x)`` for amortized inference, from a Pyro model or a prior + simulator.

* :class:`ModelSimulator` runs a Pyro model ``N`` times in **one vectorised call**: the model is
  traced inside an outer ``pyro.plate`` placed left of the model's own plates (what
  ``pyro.infer.Predictive(parallel=True)`` does). Its latent sample sites are the parameters
  (names, shapes and supports kept, for the bijection to the unconstrained space and for
  ArviZ); the named ``observed`` site is the data. A model that cannot be vectorised falls back
  to a loop, with a warning.
* :class:`VariableSizeSimulator` runs such a model with a varying number of observations (an
  argument of the model): each simulation draws its size, simulations are grouped by size
  (one vectorised call per size) and the data sets are NaN-padded to one tensor
  ``(N, max size, features)`` for set summaries (:class:`pyroflows.nn.DeepSet`).
* :class:`PriorSimulator` draws ``theta`` from a torch / Pyro distribution and calls a
  ``simulator(theta) -> x`` on the whole batch.

Both return flat parameters ``(N, dim)`` and data ``(N, *x_shape)``. :func:`check_training`
checks simulations before a fit (shapes, support) and drops those with non-finite values
(:func:`~pyroflows.amortized.observations.drop_invalid`, re-exported here). A new kind of
simulator goes here.
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import pyro
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample
from torch import Tensor

from pyroflows.amortized.observations import (
    ObservationSpace,
    check_sizes,
    drop_invalid,
    missing_rows,
    set_to_model_layout,
    valid_rows,
)
from pyroflows.amortized.parameters import ParameterSpace
from pyroflows.train.seeding import forked_streams
from pyroflows.validation import as_real_tensor, positive_int

__all__ = [
    "ModelSimulator",
    "can_simulate",
    "PriorSimulator",
    "VariableSizeSimulator",
    "check_training",
    "drop_invalid",
    "missing_rows",
    "set_to_model_layout",
    "valid_rows",
]


def _check_count(n: Any) -> int:
    return positive_int("the number of simulations", n)


def can_simulate(sim: Any) -> bool:
    """Whether a posterior's simulator can draw data: a model, or a prior with a simulator
    (not None, and not a prior alone, which only fits given tensors)."""
    return sim is not None and not (isinstance(sim, PriorSimulator) and sim.simulator is None)


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

    def set_space(self, space: ParameterSpace) -> None:
        """Use ``space`` (the same site, e.g. a loaded posterior's) for the flat vectors."""
        self.space = space

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
                    # on a random stream of its own: the first call of a seeded simulator
                    # must draw what every later call with the same seed draws
                    with forked_streams():
                        probe = self._trace_vectorized(2, None)
                    self._plated = {k: v.shape[1:] for k, v in probe.items()}
                raw = self._trace_vectorized(n, condition)
                return {k: self._natural(k, raw[k], n, shapes[k]) for k in names}
            except (RuntimeError, ValueError) as error:
                warnings.warn(
                    f"the model could not be vectorised over simulations ({error}); simulating "
                    "one at a time (slow). Declare the model's batch dimensions with "
                    "pyro.plate (indexed from the right) to vectorise it.",
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
    def set_space(self, space: ParameterSpace) -> None:
        """Flatten the sites in the order of ``space`` (the same names and shapes, e.g. the
        order of a loaded posterior whose model samples its sites in another order)."""
        self.space = space

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


def _check_size_arg(model: Callable, size_arg: Any, args: tuple, kwargs: dict) -> str:
    """``size_arg`` if the model takes it as a keyword argument (with ``args`` / ``kwargs``)."""
    if not isinstance(size_arg, str) or not size_arg.isidentifier():
        raise ValueError(f"size_arg must be the name of an argument of the model, got {size_arg!r}")
    if size_arg in kwargs:
        raise ValueError(
            f"model_kwargs sets {size_arg!r}, the argument that sizes= varies: leave it out"
        )
    try:
        signature = inspect.signature(model)
    except (TypeError, ValueError):  # a callable without a signature: tracing will tell
        return size_arg
    params = signature.parameters
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    param = params.get(size_arg)
    if (param is None and not var_kw) or (
        param is not None and param.kind is inspect.Parameter.POSITIONAL_ONLY
    ):
        raise ValueError(
            f"size_arg={size_arg!r} is not a keyword argument of the model; its arguments are "
            f"{list(params)}"
        )
    try:
        signature.bind(*args, **kwargs, **{size_arg: 1})
    except TypeError as error:
        raise ValueError(
            f"the model cannot be called with model_args, model_kwargs and {size_arg}=<size> "
            f"({error})"
        ) from None
    return size_arg


def _as_sizes(size: Any, n: int) -> Tensor:
    """A given size (one int, or one per simulation) as a long tensor ``(n,)``."""
    if isinstance(size, Tensor) and size.dim() == 0:
        size = size.item() if not size.is_floating_point() else size
    if isinstance(size, int) and not isinstance(size, bool):
        if size < 1:
            raise ValueError(f"size must be a positive integer, got {size}")
        return torch.full((n,), size, dtype=torch.long)
    if isinstance(size, Tensor):
        values = size
    else:
        try:
            values = torch.as_tensor(size)
        except (TypeError, ValueError, RuntimeError):
            values = None
    if (
        values is None
        or values.dtype == torch.bool
        or values.is_floating_point()
        or values.is_complex()
        or values.shape != (n,)
    ):
        raise ValueError(
            f"size must be a positive integer or {n} of them (one per simulation), got {size!r}"
        )
    if bool((values < 1).any()):
        raise ValueError(f"sizes must be positive, got {values.min().item()}")
    return values.to(torch.long)


class VariableSizeSimulator:
    """Simulations from a Pyro model whose number of observations varies: data sets of a
    random size, NaN-padded to one tensor (the layout of set summaries such as
    :class:`pyroflows.nn.DeepSet` with ``nan_padding``).

    The model takes the number of observations as its keyword argument ``size_arg`` and the
    observed site's shape must change with it in exactly one dimension, of that extent
    (usually the dimension of the plate of that size). Each simulation draws its size
    uniformly from the distinct ``sizes`` (from torch's global random stream, like the model's
    own draws, so a seed fixes sizes and data alike); simulations are grouped by size and each
    group is one vectorised :class:`ModelSimulator` call with that size. One simulation's data
    of size ``n`` becomes a set ``(n, features)``: the varying dimension first, the rest
    flattened into ``features`` (1 for scalar observations); it is padded with all-NaN rows to
    ``max(sizes)`` rows (NaN padding makes integer data floating point). Latent sites (the
    parameters) must not change shape with the size: per-observation latent variables are not
    supported.

    Args:
        model: a Pyro model ``model(*args, **kwargs, **{size_arg: n})`` that samples
            ``observed`` (``obs=None`` by default).
        observed: name of the data site.
        sizes: the possible numbers of observations (positive integers, e.g. ``range(5, 101)``).
        size_arg: the model's keyword argument that sets the number of observations.
        args, kwargs: the model's other arguments (``kwargs`` must not contain ``size_arg``).
        vectorized: as for :class:`ModelSimulator`.

    Attributes:
        sizes: the distinct sizes, sorted; ``max_size`` their maximum.
        axis, row_shape: where the rows lie in one data set of the model, and the shape of
            one row (``()`` for scalar observations).
        x_shape: ``(max_size, features)``, one padded simulation.

    Example:
        >>> import pyro.distributions as dist
        >>> def model(n=10, x=None):
        ...     mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        ...     with pyro.plate("data", n):
        ...         return pyro.sample("x", dist.Normal(mu, 1.0), obs=x)
        >>> sim = VariableSizeSimulator(model, "x", sizes=range(2, 5), size_arg="n")
        >>> sim.space, sim.x_shape
        (ParameterSpace(mu()), torch.Size([4, 1]))
        >>> theta, x = sim(6)
        >>> theta.shape, x.shape
        (torch.Size([6, 1]), torch.Size([6, 4, 1]))
        >>> n = (~x.isnan().all(-1)).sum(-1)  # real rows per simulation: 2, 3 or 4
        >>> bool(((n >= 2) & (n <= 4)).all())
        True
        >>> sim.simulate(theta[:2], size=3).isnan().all(-1)  # given sizes: one padding row
        tensor([[False, False, False,  True],
                [False, False, False,  True]])
    """

    def __init__(
        self,
        model: Callable,
        observed: str = "x",
        sizes: Iterable[int] = (),
        size_arg: str = "n",
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        vectorized: bool = True,
    ):
        if not callable(model):
            raise TypeError("model must be a callable Pyro model")
        self.sizes = check_sizes(sizes)
        self.model, self.observed = model, str(observed)
        self.args, self.kwargs = tuple(args), dict(kwargs or {})
        self.size_arg = _check_size_arg(model, size_arg, self.args, self.kwargs)
        self.vectorized = vectorized
        self.max_size = self.sizes[-1]
        self._size_values = torch.tensor(self.sizes, dtype=torch.long)
        self._subs: dict[int, ModelSimulator] = {}
        a = self.sizes[0]
        b = self.sizes[-1] if len(self.sizes) > 1 else a + 1
        sim_a, sim_b = self._sub(a), self._sub(b)
        shapes_a = dict(zip(sim_a.space.names, sim_a.space.shapes, strict=True))
        shapes_b = dict(zip(sim_b.space.names, sim_b.space.shapes, strict=True))
        if shapes_a != shapes_b:
            changed = sorted(k for k in shapes_a.keys() | shapes_b.keys()
                             if shapes_a.get(k) != shapes_b.get(k))  # fmt: skip
            raise ValueError(
                f"latent site(s) {changed} change with {self.size_arg}= ({a}: "
                f"{ {k: tuple(shapes_a[k]) for k in changed if k in shapes_a} }, {b}: "
                f"{ {k: tuple(shapes_b[k]) for k in changed if k in shapes_b} }): the "
                "parameters must not depend on the number of observations (per-observation "
                "latent variables are not supported)"
            )
        self.space = sim_a.space
        self.axis, self.row_shape = self._find_axis(sim_a.x_shape, a, sim_b.x_shape, b)
        self.features = math.prod(self.row_shape)
        self.x_shape = torch.Size([self.max_size, self.features])

    def _find_axis(self, shape_a, a: int, shape_b, b: int) -> tuple[int, torch.Size]:
        """The dimension of one data set that holds the observations, and a row's shape."""
        differ = [i for i, (p, q) in enumerate(zip(shape_a, shape_b, strict=False)) if p != q]
        if len(shape_a) == len(shape_b) and differ == [] or len(shape_a) == 0:
            raise ValueError(
                f"the observed site {self.observed!r} has shape {tuple(shape_a)} with "
                f"{self.size_arg}={a} and {tuple(shape_b)} with {self.size_arg}={b}: its shape "
                f"does not change with {self.size_arg!r}, so {self.size_arg!r} does not set the "
                f"number of observations (sample {self.observed!r} inside a plate of that size)"
            )
        if len(shape_a) != len(shape_b) or len(differ) != 1 or (
            shape_a[differ[0]], shape_b[differ[0]]) != (a, b):  # fmt: skip
            raise ValueError(
                f"the observed site {self.observed!r} has shape {tuple(shape_a)} with "
                f"{self.size_arg}={a} and {tuple(shape_b)} with {self.size_arg}={b}: it must "
                f"change in exactly one dimension, of extent {self.size_arg} (a plate of that "
                "size)"
            )
        axis = differ[0]
        return axis, torch.Size(shape_a[:axis] + shape_a[axis + 1 :])

    def _sub(self, size: int) -> ModelSimulator:
        """The vectorised simulator of data sets of ``size`` observations (built once, without
        drawing from the global random stream, so the simulations a seed gives do not depend
        on which sizes were used before)."""
        sub = self._subs.get(size)
        if sub is None:
            with forked_streams():
                kwargs = {**self.kwargs, self.size_arg: size}
                sub = ModelSimulator(self.model, self.observed, self.args, kwargs, self.vectorized)
                sub._trace(2, None)  # the probe of per-site shapes under the outer plate
            self.vectorized = sub.vectorized  # a fallback to the loop warns once
            if hasattr(self, "axis"):
                expected = self.row_shape[: self.axis] + (size,) + self.row_shape[self.axis :]
                if tuple(sub.x_shape) != tuple(expected):
                    raise ValueError(
                        f"with {self.size_arg}={size} the observed site {self.observed!r} has "
                        f"shape {tuple(sub.x_shape)}, expected {tuple(expected)}"
                    )
            if hasattr(self, "space"):  # set once the first two sizes have been traced
                sub.set_space(self.space)
            self._subs[size] = sub
        return sub

    def set_space(self, space: ParameterSpace) -> None:
        """Flatten the sites in the order of ``space`` (see :meth:`ModelSimulator.set_space`)."""
        self.space = space
        for sub in self._subs.values():
            sub.set_space(space)

    def sample_sizes(self, n: int) -> Tensor:
        """``(n,)`` sizes drawn uniformly from :attr:`sizes` (torch's global stream)."""
        index = torch.randint(len(self.sizes), (_check_count(n),))
        return self._size_values[index]

    def _run(self, sizes: Tensor, theta: Tensor | None) -> tuple[Tensor, Tensor]:
        """Simulations grouped by size (ascending), padded and put back in their order."""
        n, width = len(sizes), max(self.max_size, int(sizes.max()))
        parts = []
        for size in sizes.unique().tolist():
            index = (sizes == size).nonzero().squeeze(-1)
            sub = self._sub(int(size))
            if theta is None:
                t, x = sub(len(index))
            else:
                t = theta[index]
                x = sub.simulate(t)
            x = x.movedim(1 + self.axis, 1).reshape(len(index), size, self.features)
            parts.append((index, t, x))
        dtype = parts[0][2].dtype
        if not dtype.is_floating_point:
            dtype = torch.get_default_dtype()
        device = parts[0][2].device
        x_out = torch.full((n, width, self.features), math.nan, dtype=dtype, device=device)
        theta_out = theta
        if theta is None:
            first = parts[0][1]
            theta_out = torch.empty((n, self.space.dim), dtype=first.dtype, device=first.device)
        for index, t, x in parts:
            x_out[index, : x.shape[1]] = x.to(dtype)
            if theta is None:
                theta_out[index] = t
        return theta_out, x_out

    def __call__(self, n: int) -> tuple[Tensor, Tensor]:
        """``n`` simulations ``(theta (n, dim), x (n, max_size, features))``, each of a random
        size; rows beyond a simulation's size are NaN."""
        return self._run(self.sample_sizes(n), None)

    def sample_prior(self, n: int) -> Tensor:
        """``(n, dim)`` flat draws of the latent sites."""
        return self._sub(self.sizes[0]).sample_prior(n)

    def simulate(self, theta: Tensor, size: Any = None) -> Tensor:
        """Padded data ``(N, width, features)`` for flat parameters ``(N, dim)``.

        Args:
            size: None (each simulation draws its size from :attr:`sizes`, as in training),
                one positive int for all, or one per simulation ``(N,)``; any positive size
                is allowed (``width`` is ``max(max_size, largest size)``).
        """
        if theta.dim() != 2:
            raise ValueError(
                f"theta must have shape (N, {self.space.dim}), got {tuple(theta.shape)}"
            )
        n = len(theta)
        if n == 0:
            return torch.empty((0, self.max_size, self.features), device=theta.device)
        sizes = self.sample_sizes(n) if size is None else _as_sizes(size, n)
        return self._run(sizes, theta)[1]

    def to_model_layout(self, x: Tensor) -> Tensor:
        """Sets ``(..., n, features)`` in the model's data layout (:func:`set_to_model_layout`)."""
        return set_to_model_layout(x, self.axis, self.row_shape)


def check_training(
    theta: Any, x: Any, space: ParameterSpace | None, observations: ObservationSpace
) -> tuple[Tensor, Tensor, int]:
    """Simulations for a fit: ``(theta (N, dim), x, number of simulations dropped)``, shapes
    and values checked against the posterior's ``space`` and ``observations`` (those known
    yet), non-finite simulations removed (with one warning); changes no state."""
    theta, x = as_real_tensor(theta, "theta"), as_real_tensor(x, "x")
    if theta.dim() == 0 or x.dim() == 0:
        raise ValueError(
            "theta and x need a leading dimension of simulations (one row each), got "
            f"shapes {tuple(theta.shape)} and {tuple(x.shape)}"
        )
    if len(theta) != len(x):
        raise ValueError(f"theta has {len(theta)} rows and x has {len(x)}: one simulation per row")
    if len(theta) == 0:
        raise ValueError("theta and x are empty (0 simulations)")
    theta = theta.reshape(len(theta), -1) if theta.dim() != 2 else theta
    if space is not None and theta.shape[1] != space.dim:
        raise ValueError(
            f"theta must have {space.dim} values per row ({space}), got {tuple(theta.shape)}"
        )
    if observations.shape is not None:
        observations.check(x, "x", values=False)  # values are filtered below
    theta, x, dropped = drop_invalid(theta, x, observations.nan_padding)
    if space is not None:
        inside = torch.isfinite(space.to_unconstrained(theta.double())[1])
        if not bool(inside.all()):
            raise ValueError(
                f"{int((~inside).sum())} parameter draws lie outside the prior's support"
            )
    return theta, x, dropped
