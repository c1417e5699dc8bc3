"""Builders of the standard flows: ``maf``, ``nsf``, ``realnvp``, ``iaf``, ``piecewise_linear``.

Each returns a :class:`~pyroflows.flows.Flow`; ``context_dim > 0`` makes it conditional. The
builders only compose layers from :mod:`pyroflows.transforms`; anything they build can be built
by hand with ``Flow([...], base)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn

from pyroflows.bases import Base, UniformBox, make_base
from pyroflows.flows import Flow
from pyroflows.transforms import (
    RQS,
    Affine,
    BatchNorm,
    Coupling,
    FlowTransform,
    MaskedAutoregressive,
    PiecewiseLinear,
    alternating_mask,
)
from pyroflows.transforms.univariate import Univariate


def _order(i: int, order: str, seed: int) -> str | int:
    if order == "alternate":
        return "natural" if i % 2 == 0 else "reversed"
    if order == "random":
        return seed + i
    raise ValueError(f"order must be 'alternate' or 'random', got {order!r}")


def _stack(
    dim: int,
    layers: int,
    make_layer: Callable[[int], FlowTransform],
    batch_norm: bool,
    base: str | Base,
    context_dim: int,
    components: int,
    seed: int,
) -> Flow:
    if dim < 1:
        raise ValueError(f"dim must be positive, got {dim}")
    if layers < 1:
        raise ValueError(f"layers must be positive, got {layers}")
    transforms: list[FlowTransform] = []
    for i in range(layers):
        if batch_norm and i > 0:
            transforms.append(BatchNorm(dim))
        transforms.append(make_layer(i))
    return Flow(transforms, make_base(base, dim, components, seed), context_dim)


def autoregressive_flow(
    dim: int,
    univariate: Univariate,
    context_dim: int = 0,
    layers: int = 5,
    hidden: Sequence[int] = (64, 64),
    residual: bool = False,
    order: str = "alternate",
    inverse: bool = False,
    batch_norm: bool = False,
    base: str | Base = "normal",
    components: int = 10,
    activation: type[nn.Module] = nn.ReLU,
    seed: int = 0,
) -> Flow:
    """A stack of :class:`MaskedAutoregressive` layers with the given univariate transform.

    Consecutive layers use reversed orders (``order="alternate"``) or seeded random orders
    (``order="random"``); ``batch_norm`` puts a :class:`BatchNorm` between layers.
    """

    def make(i: int) -> FlowTransform:
        return MaskedAutoregressive(
            dim,
            univariate,
            context_dim,
            hidden,
            _order(i, order, seed),
            residual,
            activation,
            inverse,
        )

    return _stack(dim, layers, make, batch_norm, base, context_dim, components, seed)


def coupling_flow(
    dim: int,
    univariate: Univariate,
    context_dim: int = 0,
    layers: int = 5,
    hidden: Sequence[int] = (64, 64),
    residual: bool = False,
    batch_norm: bool = False,
    base: str | Base = "normal",
    components: int = 10,
    activation: type[nn.Module] = nn.ReLU,
    seed: int = 0,
) -> Flow:
    """A stack of :class:`Coupling` layers with alternating masks (``dim >= 2``)."""

    def make(i: int) -> FlowTransform:
        return Coupling(
            dim, univariate, context_dim, hidden, alternating_mask(dim, i), residual, activation
        )

    return _stack(dim, layers, make, batch_norm, base, context_dim, components, seed)


def maf(
    dim: int, context_dim: int = 0, layers: int = 5, hidden: Sequence[int] = (64, 64), **kwargs
) -> Flow:
    """Masked autoregressive flow (Papamakarios et al., 2017): affine MADE layers, ``log_prob``
    in one pass per layer. ``base="mog"`` gives MAF MoG, ``batch_norm=True`` the paper's
    BatchNorm layers. Other arguments: see :func:`autoregressive_flow`.

    Example:
        >>> flow = maf(3, layers=2, hidden=(16, 16))
        >>> flow.sample((4,)).shape
        torch.Size([4, 3])
    """
    return autoregressive_flow(dim, Affine(), context_dim, layers, hidden, **kwargs)


def iaf(
    dim: int, context_dim: int = 0, layers: int = 5, hidden: Sequence[int] = (64, 64), **kwargs
) -> Flow:
    """Inverse autoregressive flow (Kingma et al., 2016): sampling and scoring one's own samples
    in one pass per layer, ``log_prob`` of external data in ``dim`` passes. The usual choice of
    variational guide."""
    return autoregressive_flow(dim, Affine(), context_dim, layers, hidden, inverse=True, **kwargs)


def nsf(
    dim: int,
    context_dim: int = 0,
    layers: int = 5,
    hidden: Sequence[int] = (64, 64),
    bins: int = 8,
    bound: float = 5.0,
    coupling: bool = False,
    **kwargs,
) -> Flow:
    """Neural spline flow (Durkan et al., 2019): rational-quadratic splines on
    ``[-bound, bound]`` (identity outside), autoregressive by default or coupling with
    ``coupling=True``.

    Example:
        >>> flow = nsf(2, context_dim=3, layers=2, hidden=(16, 16))
        >>> flow(torch.randn(4, 3)).sample((10,)).shape
        torch.Size([10, 4, 2])
    """
    spline = RQS(bins, bound)
    if coupling:
        return coupling_flow(dim, spline, context_dim, layers, hidden, **kwargs)
    return autoregressive_flow(dim, spline, context_dim, layers, hidden, **kwargs)


def realnvp(
    dim: int, context_dim: int = 0, layers: int = 5, hidden: Sequence[int] = (64, 64), **kwargs
) -> Flow:
    """RealNVP (Dinh et al., 2017): affine coupling layers with alternating masks."""
    return coupling_flow(dim, Affine(), context_dim, layers, hidden, **kwargs)


def piecewise_linear(
    dim: int,
    context_dim: int = 0,
    layers: int = 5,
    hidden: Sequence[int] = (64, 64),
    bins: int = 8,
    coupling: bool = True,
    **kwargs,
) -> Flow:
    """Piecewise-linear flow on the unit hypercube (Müller et al., 2018), with a uniform base:
    coupling layers by default (``dim >= 2``), autoregressive with ``coupling=False``."""
    kwargs.setdefault("base", UniformBox(dim))
    build = coupling_flow if coupling else autoregressive_flow
    return build(dim, PiecewiseLinear(bins), context_dim, layers, hidden, **kwargs)


FAMILIES: dict[str, Callable[..., Flow]] = {
    "maf": maf,
    "nsf": nsf,
    "realnvp": realnvp,
    "iaf": iaf,
    "piecewise_linear": piecewise_linear,
}


def build(family: str, dim: int, context_dim: int = 0, **kwargs) -> Flow:
    """Build a flow by family name (``"maf"``, ``"nsf"``, ``"realnvp"``, ``"iaf"``,
    ``"piecewise_linear"``) with the builder's keyword arguments.

    Example:
        >>> build("realnvp", 4, layers=2).dim
        4
    """
    if family not in FAMILIES:
        raise ValueError(f"flow family must be one of {sorted(FAMILIES)}, got {family!r}")
    return FAMILIES[family](dim, context_dim, **kwargs)
