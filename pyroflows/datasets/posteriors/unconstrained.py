"""Pyro's unconstrained space of a posterior: flattening draws, transforms and log-density.

The latent sites, in the order the model samples them, each mapped by
``biject_to(site.support)`` and flattened; a draw is one row of ``(n, D)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyro.poutine as poutine
import torch
from pyro.distributions.transforms import biject_to
from torch import Tensor
from torch.distributions import Transform

from pyroflows.datasets.posteriors.load import Posterior


@dataclass
class _Site:
    name: str
    transform: Transform
    shape: tuple[int, ...]  # the constrained value's shape
    free_shape: tuple[int, ...]  # the unconstrained value's shape

    @property
    def size(self) -> int:
        return int(np.prod(self.free_shape, dtype=int))


def sites(posterior: Posterior) -> list[_Site]:
    """The latent sites with their bijections, from one trace at the first reference draw."""
    first = {k: torch.as_tensor(v[0]).double() for k, v in posterior.reference.items()}
    kwargs = {k: v.double() if torch.is_tensor(v) else v for k, v in posterior.kwargs.items()}
    if "dtype" in kwargs:
        kwargs["dtype"] = torch.float64
    trace = poutine.trace(poutine.condition(posterior.model, first)).get_trace(**kwargs)
    out = []
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or name not in posterior.reference:
            continue
        t = biject_to(site["fn"].support)
        shape = tuple(site["value"].shape)
        out.append(_Site(name, t, shape, tuple(t.inverse_shape(torch.Size(shape)))))
    missing = set(posterior.reference) - {s.name for s in out}
    if missing:
        raise ValueError(f"{posterior.name}: reference sites {sorted(missing)} not in the model")
    return out


def unconstrain(posterior: Posterior, draws: dict | None = None) -> Tensor:
    """Map draws (default: the reference draws) to Pyro's unconstrained space, ``(n, D)``
    float64."""
    draws = posterior.reference if draws is None else draws
    cols = []
    for s in sites(posterior):
        value = torch.as_tensor(np.asarray(draws[s.name])).double()
        cols.append(s.transform.inv(value).reshape(len(value), -1))
    return torch.cat(cols, -1)


def constrain(posterior: Posterior, u: Tensor) -> tuple[dict[str, Tensor], Tensor]:
    """Map unconstrained rows ``u`` ``(n, D)`` to site values; also the summed
    log-Jacobian ``log |d value / d u|`` per row."""
    values, ladj, pos = {}, torch.zeros(len(u), dtype=u.dtype), 0
    for s in sites(posterior):
        free = u[:, pos : pos + s.size].reshape((len(u),) + s.free_shape)
        value = s.transform(free)
        ladj = ladj + s.transform.log_abs_det_jacobian(free, value).reshape(len(u), -1).sum(-1)
        values[s.name] = value
        pos += s.size
    return values, ladj


def log_density(posterior: Posterior, u: Tensor) -> Tensor:
    """``log p(u, y)`` (up to a constant) at unconstrained rows ``u`` ``(n, D)``: the model's
    joint log-density at the constrained values plus the log-Jacobians, one value per row.

    The model broadcasts over the leading dimension of its latent values (all ports do)."""
    values, ladj = constrain(posterior, u)
    kwargs = dict(posterior.kwargs)
    kwargs = {k: v.to(u.dtype) if torch.is_tensor(v) else v for k, v in kwargs.items()}
    if "dtype" in kwargs:
        kwargs["dtype"] = u.dtype
    trace = poutine.trace(poutine.condition(posterior.model, values)).get_trace(**kwargs)
    total = ladj
    for site in trace.nodes.values():
        if site["type"] == "sample":
            lp = site["fn"].log_prob(site["value"])
            total = total + lp.expand(len(u)) if lp.dim() == 0 else total + lp
    return total
