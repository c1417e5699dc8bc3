"""The parameter space of an amortized posterior: named sites, their shapes and supports.

A :class:`ParameterSpace` maps between three views of the parameters:

* a dict ``{site name: tensor (..., *site shape)}`` (what a Pyro model samples, what ArviZ shows);
* a flat vector ``(..., dim)`` in the user's units (what ``sample`` returns);
* a flat vector ``(..., unconstrained_dim)`` in the unconstrained space
  ``biject_to(support).inv`` of every site (what the flow is trained on), with the
  log-Jacobian of the map, so densities stay in the user's units and draws never leave the
  support.

``intervals="box"`` leaves the sites with a bounded interval support (a uniform prior's box)
in their own coordinates instead of mapping them with the logit: the flow then sees the box
itself, a face is a face and not a far tail, and draws outside the box must be rejected and
densities renormalised by the flow's mass inside it (:mod:`~pyroflows.amortized.box`).

It also owns the conversions to the flow's space: :meth:`ParameterSpace.standardisation` (fitted
in float64 on the training draws), :meth:`~ParameterSpace.encode` (user units -> standardised
unconstrained values and the log-Jacobian) and :meth:`~ParameterSpace.decode`.

Supports of the usual kinds (real, positive, greater/less than, interval, simplex, lower
Cholesky, ...) are saved as plain data so a saved posterior reloads without the prior;
:func:`saved_space` matches a saved space with the model or prior given to ``load``. A new
kind of support goes here.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.distributions import biject_to, constraints
from torch.distributions.transforms import identity_transform

from pyroflows.amortized.observations import warn_if_swamped
from pyroflows.amortized.weights import standardisation as weighted_standardisation
from pyroflows.preprocess import Preprocessor

__all__ = [
    "INTERVAL_MAPS",
    "ParameterSpace",
    "is_interval",
    "decode_constraint",
    "describe_constraint",
    "encode_constraint",
    "same_support",
]

_SIMPLE = {
    "real": constraints.real,
    "positive": constraints.positive,
    "nonnegative": constraints.nonnegative,
    "unit_interval": constraints.unit_interval,
    "simplex": constraints.simplex,
    "lower_cholesky": constraints.lower_cholesky,
    "corr_cholesky": constraints.corr_cholesky,
    "positive_definite": constraints.positive_definite,
}


#: how sites with a bounded interval support reach the flow: ``"logit"`` (``biject_to``: a
#: scaled logit, the box's faces at infinity) or ``"box"`` (the box's own coordinates)
INTERVAL_MAPS = ("logit", "box")


def is_interval(c: constraints.Constraint) -> bool:
    """Whether a support is a bounded interval (closed or half-open, ``unit_interval`` too),
    perhaps reinterpreted as an event (``independent``): a uniform prior's box.

    Example:
        >>> is_interval(constraints.independent(constraints.interval(-1.0, 1.0), 1))
        True
        >>> is_interval(constraints.positive)
        False
    """
    while isinstance(c, constraints.independent):
        c = c.base_constraint
    return isinstance(c, constraints._Interval | constraints._HalfOpenInterval)


def encode_constraint(c: constraints.Constraint) -> dict[str, Any]:
    """A constraint as plain data (loadable with ``weights_only=True``); unknown kinds give
    ``{"kind": "unknown", "name": ...}``.

    Example:
        >>> encode_constraint(constraints.interval(0.0, 2.0))
        {'kind': 'interval', 'lower': 0.0, 'upper': 2.0}
    """
    if isinstance(c, constraints.independent):
        return {
            "kind": "independent",
            "base": encode_constraint(c.base_constraint),
            "ndims": int(c.reinterpreted_batch_ndims),
        }
    for name, simple in _SIMPLE.items():
        if c is simple:
            return {"kind": name}
    bounds = {
        constraints._Interval: ("interval", ("lower_bound", "upper_bound")),
        constraints._HalfOpenInterval: ("half_open_interval", ("lower_bound", "upper_bound")),
        constraints._GreaterThan: ("greater_than", ("lower_bound",)),
        constraints._GreaterThanEq: ("greater_than_eq", ("lower_bound",)),
        constraints._LessThan: ("less_than", ("upper_bound",)),
    }
    if type(c) in bounds:
        kind, names = bounds[type(c)]
        out: dict[str, Any] = {"kind": kind}
        for name in names:
            value = getattr(c, name)
            key = name.split("_")[0]
            out[key] = value.detach().cpu().clone() if isinstance(value, Tensor) else float(value)
        return out
    return {"kind": "unknown", "name": type(c).__name__}


def decode_constraint(spec: Mapping[str, Any]) -> constraints.Constraint:
    """Inverse of :func:`encode_constraint`; ``ValueError`` for an unknown kind."""
    kind = spec["kind"]
    if kind in _SIMPLE:
        return _SIMPLE[kind]
    if kind == "independent":
        return constraints.independent(decode_constraint(spec["base"]), spec["ndims"])
    makers = {
        "interval": lambda s: constraints.interval(s["lower"], s["upper"]),
        "half_open_interval": lambda s: constraints.half_open_interval(s["lower"], s["upper"]),
        "greater_than": lambda s: constraints.greater_than(s["lower"]),
        "greater_than_eq": lambda s: constraints.greater_than_eq(s["lower"]),
        "less_than": lambda s: constraints.less_than(s["upper"]),
    }
    if kind in makers:
        return makers[kind](spec)
    raise ValueError(
        f"the support {spec.get('name', kind)!r} cannot be rebuilt from a file; "
        "pass the prior or the model to load()"
    )


#: supports that are one of the bounded kinds: compared as such (a Beta's ``unit_interval`` is
#: the same support as a Uniform(0, 1)'s ``interval(0, 1)``; a Gamma's ``nonnegative`` that of
#: a LogNormal's ``positive``: whether the bound belongs to the set does not change the map to
#: the unconstrained space)
_AS_BOUNDS = {
    "unit_interval": {"kind": "interval", "lower": 0.0, "upper": 1.0},
    "positive": {"kind": "greater_than", "lower": 0.0},
    "nonnegative": {"kind": "greater_than", "lower": 0.0},
}
_SAME_MAP = {"greater_than_eq": "greater_than", "half_open_interval": "interval"}


def _canonical(spec: Mapping[str, Any]) -> Any:
    """An encoded support as comparable plain data (bounds as lists of floats)."""
    spec = _AS_BOUNDS.get(spec.get("kind"), spec)
    spec = {**spec, "kind": _SAME_MAP.get(spec.get("kind"), spec.get("kind"))}
    out = {}
    for key, value in spec.items():
        if isinstance(value, Mapping):
            value = _canonical(value)
        elif isinstance(value, Tensor):
            value = value.detach().to(torch.float64).cpu().flatten().tolist()
            value = value[0] if len(set(value)) == 1 else value
        elif isinstance(value, int | float) and not isinstance(value, bool) and key != "ndims":
            value = float(value)
        out[key] = value
    return out


def same_support(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool | None:
    """Whether two encoded supports (:func:`encode_constraint`) are the same set; None when
    either is of a kind that cannot be compared (``"unknown"``)."""
    if "unknown" in (a.get("kind"), b.get("kind")) or "unknown" in repr(a) + repr(b):
        return None
    return _canonical(a) == _canonical(b)


def describe_constraint(spec: Mapping[str, Any]) -> str:
    """An encoded support in words: ``interval(0, 1)``, ``positive``, ``independent(real, 1)``.

    Example:
        >>> describe_constraint(encode_constraint(constraints.interval(0.0, 2.0)))
        'interval(0, 2)'
    """
    kind = spec.get("kind")
    if kind == "unknown":
        return str(spec.get("name", "unknown"))
    if kind == "independent":
        return f"independent({describe_constraint(spec['base'])}, {spec['ndims']})"
    bounds = [spec[k] for k in ("lower", "upper") if k in spec]
    if not bounds:
        return str(kind)

    def text(value: Any) -> str:
        if isinstance(value, Tensor):
            values = value.flatten().tolist()
            value = values[0] if len(set(values)) == 1 else values
        return f"{value:g}" if isinstance(value, float | int) else str(value)

    return f"{kind}({', '.join(text(b) for b in bounds)})"


def _discrete_name(c: constraints.Constraint) -> str:
    """``boolean``, ``integer_interval``, ... for a discrete support."""
    while isinstance(c, constraints.independent):
        c = c.base_constraint
    name = type(c).__name__.lstrip("_")
    return "".join(f"_{ch.lower()}" if ch.isupper() else ch for ch in name).lstrip("_")


class ParameterSpace:
    """Named parameter sites with shapes and supports, and the maps between their views.

    Args:
        names: site names, in the order of the flat vector.
        shapes: per-site shapes of one draw (``()`` for a scalar).
        supports: per-site supports (torch constraints); ``None`` means real.
        intervals: ``"logit"`` (default): every site through ``biject_to(support)``;
            ``"box"``: sites with a bounded interval support (:func:`is_interval`) stay in
            their own coordinates (identity map; :attr:`boxed` flags them), so
            :meth:`to_constrained` may return points outside their box: check them with
            :meth:`inside`.

    Example:
        >>> space = ParameterSpace(["mu", "sigma"], [(), ()], [None, constraints.positive])
        >>> u, ladj = space.to_unconstrained(torch.tensor([[0.5, 2.0]]))
        >>> u, space.to_constrained(u)
        (tensor([[0.5000, 0.6931]]), tensor([[0.5000, 2.0000]]))
    """

    def __init__(
        self,
        names: Sequence[str],
        shapes: Sequence[Sequence[int]],
        supports: Sequence[constraints.Constraint | None],
        intervals: str = "logit",
    ):
        if intervals not in INTERVAL_MAPS:
            raise ValueError(f"intervals must be one of {INTERVAL_MAPS}, got {intervals!r}")
        if not (len(names) == len(shapes) == len(supports)) or not names:
            raise ValueError("names, shapes and supports need one entry per site (at least one)")
        if len(set(names)) != len(names):
            raise ValueError(f"site names must be distinct, got {list(names)}")
        self.names = [str(n) for n in names]
        self.shapes = [torch.Size(s) for s in shapes]
        self.supports = [constraints.real if s is None else s for s in supports]
        for name, support in zip(self.names, self.supports, strict=True):
            if getattr(support, "is_discrete", False):
                raise ValueError(
                    f"site {name!r} is discrete (support {_discrete_name(support)}); amortized "
                    "posteriors need continuous parameters"
                )
        self.sizes = [math.prod(s) for s in self.shapes]
        self.intervals = intervals
        #: per site: left in its own coordinates (``intervals="box"`` and an interval support)
        self.boxed = [intervals == "box" and is_interval(s) for s in self.supports]
        self.bijections = [
            identity_transform if box else biject_to(s)
            for s, box in zip(self.supports, self.boxed, strict=True)
        ]
        pairs = zip(self.bijections, self.shapes, strict=True)
        self.unconstrained_shapes = [torch.Size(t.inverse_shape(s)) for t, s in pairs]
        self.unconstrained_sizes = [math.prod(s) for s in self.unconstrained_shapes]
        self.dim = sum(self.sizes)
        self.unconstrained_dim = sum(self.unconstrained_sizes)

    # -- views -----------------------------------------------------------------------------
    def flatten(self, values: Mapping[str, Tensor], batch_dims: int = 1) -> Tensor:
        """``{name: (*batch, *shape)}`` -> ``(*batch, dim)``."""
        missing = [n for n in self.names if n not in values]
        if missing:
            raise ValueError(f"values for the sites {missing} are missing")
        parts = []
        for name, shape in zip(self.names, self.shapes, strict=True):
            v = torch.as_tensor(values[name])
            batch = v.shape[:batch_dims]
            if v.shape[batch_dims:] != shape:
                raise ValueError(
                    f"site {name!r}: expected draws of shape {tuple(shape)}, got "
                    f"{tuple(v.shape[batch_dims:])}"
                )
            parts.append(v.reshape(batch + (-1,)))
        return torch.cat(parts, -1)

    def unflatten(self, flat: Tensor) -> dict[str, Tensor]:
        """``(..., dim)`` -> ``{name: (..., *shape)}``."""
        self._check_dim(flat, self.dim, "theta")
        batch = flat.shape[:-1]
        return {
            name: part.reshape(batch + shape)
            for name, shape, part in zip(
                self.names, self.shapes, flat.split(self.sizes, -1), strict=True
            )
        }

    def with_intervals(self, intervals: str) -> ParameterSpace:
        """The same sites with another map of their interval supports (:data:`INTERVAL_MAPS`)."""
        return ParameterSpace(self.names, self.shapes, self.supports, intervals)

    @property
    def has_box(self) -> bool:
        """Whether some site is left in its own bounded coordinates (draws need rejection)."""
        return any(self.boxed)

    def _check_dim(self, t: Tensor, dim: int, name: str) -> None:
        if t.dim() == 0 or t.shape[-1] != dim:
            raise ValueError(f"{name} must have {dim} entries in its last dimension, got shape "
                             f"{tuple(t.shape)}")  # fmt: skip

    # -- bijection -------------------------------------------------------------------------
    def to_unconstrained(self, theta: Tensor) -> tuple[Tensor, Tensor]:
        """Flat draws in the user's units -> ``(u, log|dtheta/du|)``; points outside the support
        get ``u = 0`` and ``log|dtheta/du| = +inf`` (so a density there is ``-inf``)."""
        self._check_dim(theta, self.dim, "theta")
        batch = theta.shape[:-1]
        parts, ladj = [], torch.zeros(batch, dtype=theta.dtype, device=theta.device)
        inside = torch.ones(batch, dtype=torch.bool, device=theta.device)
        for shape, support, t, part in zip(
            self.shapes, self.supports, self.bijections, theta.split(self.sizes, -1), strict=True
        ):
            value = part.reshape(batch + shape)
            ok = support.check(value)
            ok = ok.reshape(batch + (-1,)).all(-1) if ok.dim() > len(batch) else ok
            inside = inside & ok
            u = t.inv(value)
            site_ladj = t.log_abs_det_jacobian(u, value)
            if site_ladj.dim() > len(batch):
                site_ladj = site_ladj.reshape(batch + (-1,)).sum(-1)
            ladj = ladj + site_ladj
            parts.append(u.reshape(batch + (-1,)))
        u = torch.cat(parts, -1)
        u = torch.where(inside[..., None], u, torch.zeros_like(u))
        ladj = torch.where(inside, ladj, torch.full_like(ladj, math.inf))
        return u, ladj

    def to_constrained(self, u: Tensor) -> Tensor:
        """Flat unconstrained vectors -> flat draws in the user's units."""
        self._check_dim(u, self.unconstrained_dim, "u")
        batch = u.shape[:-1]
        parts = [
            t(part.reshape(batch + ushape)).reshape(batch + (-1,))
            for ushape, t, part in zip(
                self.unconstrained_shapes,
                self.bijections,
                u.split(self.unconstrained_sizes, -1),
                strict=True,
            )
        ]
        return torch.cat(parts, -1)

    def inside(self, theta: Tensor) -> Tensor:
        """``(...)`` booleans: flat draws ``(..., dim)`` whose boxed sites (:attr:`boxed`) lie
        in their supports (the other sites are inside by construction of
        :meth:`to_constrained`; all True when no site is boxed)."""
        self._check_dim(theta, self.dim, "theta")
        batch = theta.shape[:-1]
        ok = torch.ones(batch, dtype=torch.bool, device=theta.device)
        parts = theta.split(self.sizes, -1)
        for shape, support, box, part in zip(
            self.shapes, self.supports, self.boxed, parts, strict=True
        ):
            if box:
                site = support.check(part.reshape(batch + shape))
                ok = ok & (site.reshape(batch + (-1,)).all(-1) if site.dim() > len(batch) else site)
        return ok

    # -- the encoder: user units <-> the flow's standardised unconstrained space -------------
    def standardisation(self, theta: Tensor, weight: Tensor | None = None) -> Preprocessor:
        """The float64 standardisation of the unconstrained parameters, fitted on training
        draws ``theta (N, dim)`` in the user's units, weighted by ``weight (N,)`` when given
        (:func:`pyroflows.amortized.weights.standardisation`); warns when a few extreme
        values dominate a column."""
        u, _ = self.to_unconstrained(theta.to(torch.float64))
        warn_if_swamped(u, "theta (unconstrained)")
        return weighted_standardisation(u, weight, "theta (unconstrained)")

    def encode(self, theta: Tensor, pre: Preprocessor) -> tuple[Tensor, Tensor]:
        """User units -> ``(z, log|dz/dtheta|)`` in float64: the bijection to the
        unconstrained space, then the standardisation ``pre`` (``-inf`` outside the support)."""
        u, ladj_bij = self.to_unconstrained(theta.to(torch.float64))
        z, ladj_pre = pre.to_latent(u)
        return z, ladj_pre - ladj_bij

    def decode(self, z: Tensor, pre: Preprocessor) -> Tensor:
        """The flow's space -> user units, in float64 (inside the support by construction)."""
        return self.to_constrained(pre.from_latent(z.to(torch.float64)))

    # -- persistence -----------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Plain data: names, shapes and encoded supports."""
        return {
            "names": list(self.names),
            "shapes": [list(s) for s in self.shapes],
            "supports": [encode_constraint(s) for s in self.supports],
            "intervals": self.intervals,
        }

    @classmethod
    def from_state(
        cls, state: Mapping[str, Any], supports: Sequence[constraints.Constraint] | None = None
    ) -> ParameterSpace:
        """Rebuild from :meth:`state`; ``supports`` replaces the saved ones (e.g. from the
        prior, for kinds that cannot be saved). A state saved before ``intervals`` existed
        is ``"logit"``."""
        if supports is None:
            supports = [decode_constraint(s) for s in state["supports"]]
        shapes = [tuple(s) for s in state["shapes"]]
        return cls(state["names"], shapes, supports, _saved_intervals(state))

    def __repr__(self) -> str:
        sites = ", ".join(f"{n}{tuple(s)}" for n, s in zip(self.names, self.shapes, strict=True))
        box = ", intervals='box'" if self.intervals == "box" else ""
        return f"ParameterSpace({sites}{box})"


def _saved_intervals(state: Mapping[str, Any]) -> str:
    """The saved map of interval supports (``"logit"`` for files older than the option);
    ValueError for an unknown one."""
    intervals = state.get("intervals", "logit")
    if intervals not in INTERVAL_MAPS:
        raise ValueError(f"unknown map of interval supports {intervals!r} in the saved space")
    return intervals


def saved_space(
    path: Any, saved: Mapping[str, Any], current: ParameterSpace | None
) -> ParameterSpace:
    """The saved parameter space (its order: the flow's), with the supports of the model or
    prior passed to ``load`` matched by site name. ValueError naming the difference when that
    model's sites, shapes or supports are not the saved ones; a warning when a support could
    not be saved (then the model's is used, checked by its type's name only)."""
    names = [str(n) for n in saved["names"]]
    shapes = [torch.Size(int(d) for d in s) for s in saved["shapes"]]
    specs = saved.get("supports")
    intervals = _saved_intervals(saved)
    if current is None:
        if specs is None:
            raise ValueError(
                f"{path} was saved without the supports of its sites: pass the model or prior"
            )
        return ParameterSpace(names, shapes, [decode_constraint(spec) for spec in specs], intervals)
    if sorted(names) != sorted(current.names):
        new = [n for n in current.names if n not in names]
        missing = [n for n in names if n not in current.names]
        parts = [f"{n!r} is new" for n in new] + [f"{n!r} is missing" for n in missing]
        raise ValueError(
            f"{path}: the saved posterior has sites {names}; the model passed to load has "
            f"{current.names}: {', '.join(parts)}"
        )
    shape_of = dict(zip(current.names, current.shapes, strict=True))
    support_of = dict(zip(current.names, current.supports, strict=True))
    supports, unchecked = [], []
    for i, (name, shape) in enumerate(zip(names, shapes, strict=True)):
        if shape_of[name] != shape:
            raise ValueError(
                f"{path}: site {name!r} has shape {tuple(shape)} in the saved posterior, "
                f"{tuple(shape_of[name])} in the model passed to load"
            )
        model_spec = encode_constraint(support_of[name])
        spec = None if specs is None else specs[i]
        same = None if spec is None else same_support(spec, model_spec)
        if same is False:
            raise ValueError(
                f"{path}: site {name!r}: saved support {describe_constraint(spec)}, the "
                f"model's {describe_constraint(model_spec)}"
            )
        if same is None:
            if (
                spec is not None
                and spec.get("kind") == "unknown"
                and (spec.get("name") != model_spec.get("name"))
            ):
                raise ValueError(
                    f"{path}: site {name!r}: saved support {describe_constraint(spec)}, the "
                    f"model's {describe_constraint(model_spec)}"
                )
            unchecked.append(name)
            known = spec is not None and spec.get("kind") != "unknown"
            supports.append(decode_constraint(spec) if known else support_of[name])
        else:  # the support trained on (the same set, perhaps spelt otherwise by the model)
            supports.append(decode_constraint(spec))
    if unchecked:
        warnings.warn(
            f"{path}: the supports of {unchecked} could not be compared with the saved ones "
            "(not stored in the file, or of a kind that cannot be); the model's are used",
            RuntimeWarning,
            stacklevel=3,
        )
    return ParameterSpace(names, shapes, supports, intervals)
