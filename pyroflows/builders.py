"""Builders of the standard flows: ``maf``, ``nsf``, ``realnvp``, ``iaf``, ``piecewise_linear``.

Each returns a :class:`~pyroflows.flows.Flow`; ``context_dim > 0`` makes it conditional. The
builders only compose layers from :mod:`pyroflows.transforms`; anything they build can be built
by hand with ``Flow([...], base)``.

One keyword set for all of them: ``layers``, ``hidden``, ``residual``, ``activation`` (a name
such as ``"relu"`` or an ``nn.Module`` class), ``bins``, ``bound``, ``spline`` (which spline
maps data to base), ``coupling``, ``order`` (``"alternate"`` or ``"random"``), ``base``
(``"normal"``, ``"diag_normal"``, ``"mog"``, ``"uniform"`` or a
:class:`~pyroflows.bases.Base`), plus ``batch_norm``, ``components``,
``seed``, ``context_affine`` (end with a :class:`~pyroflows.transforms.ContextAffine`) and
``context_every_layer`` (the context enters every hidden layer of the conditioners, not only
the first) and ``lu`` (a learnt :class:`~pyroflows.transforms.LULinear` map between layers,
as in sbi's neural spline flow: it mixes all features, which a coupling or autoregressive
layer alone does not).
A keyword that does not apply to a family (``bins`` for ``maf``, ``order`` for a coupling
flow) is a ``ValueError`` that says why, never silently ignored.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence

from torch import nn

from pyroflows.bases import Base, UniformBox, make_base
from pyroflows.flows import Flow
from pyroflows.transforms import (
    RQS,
    Affine,
    BatchNorm,
    ContextAffine,
    Coupling,
    FlowTransform,
    LULinear,
    MaskedAutoregressive,
    PiecewiseLinear,
    alternating_mask,
)
from pyroflows.transforms.univariate import SPLINE_DIRECTIONS, Univariate
from pyroflows.validation import flag, hidden_sizes, positive_int

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "leaky_relu": nn.LeakyReLU,
}


def _activation(activation: str | type[nn.Module]) -> type[nn.Module]:
    if isinstance(activation, str):
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {sorted(ACTIVATIONS)} or an nn.Module class, "
                f"got {activation!r}"
            )
        return ACTIVATIONS[activation]
    if isinstance(activation, type) and issubclass(activation, nn.Module):
        return activation
    raise ValueError(f"activation must be a name or an nn.Module class, got {activation!r}")


def _bound(bound: float) -> float:
    if not (isinstance(bound, numbers.Real) and math.isfinite(bound) and bound > 0):
        raise ValueError(f"bound must be a positive finite number, got {bound!r}")
    return float(bound)


def _reject(family: str, kwargs: dict, why: dict[str, str]) -> None:
    """A clear error for keywords that do not apply to this family."""
    for name in kwargs:
        if name in why:
            raise ValueError(f"{name} does not apply to {family}: {why[name]}")


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
    head: FlowTransform | None = None,
    lu: bool = False,
) -> Flow:
    positive_int("dim", dim)
    positive_int("layers", layers)
    if isinstance(context_dim, bool) or not isinstance(context_dim, int) or context_dim < 0:
        raise ValueError(f"context_dim must be an integer >= 0, got {context_dim!r}")
    flag("lu", lu)
    transforms: list[FlowTransform] = []
    for i in range(layers):
        if batch_norm and i > 0:
            transforms.append(BatchNorm(dim))
        if lu and i > 0:
            transforms.append(LULinear(dim, seed + i, context_dim, permute=dim > 2))
        transforms.append(make_layer(i))
    if head is not None:
        transforms.append(head)
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
    activation: str | type[nn.Module] = "relu",
    seed: int = 0,
    context_affine: bool = False,
    context_every_layer: bool = False,
    lu: bool = False,
) -> Flow:
    """A stack of :class:`MaskedAutoregressive` layers with the given univariate transform.

    Consecutive layers use reversed orders (``order="alternate"``) or seeded random orders
    (``order="random"``); ``batch_norm`` puts a :class:`BatchNorm` between layers;
    ``context_affine`` ends the stack (on the data side) with a :class:`ContextAffine` layer
    that moves and scales the output by functions of the context; ``lu`` puts a
    :class:`LULinear` layer before every layer but the first: it starts as a seeded random
    permutation (``seed + i``) in three or more dimensions and as the identity in two, where a
    swap would undo the alternation of orders.
    """

    hidden, act = hidden_sizes(hidden), _activation(activation)
    flag("context_every_layer", context_every_layer)  # MLP: no context, refused
    _order(0, order, seed)

    def make(i: int) -> FlowTransform:
        return MaskedAutoregressive(
            dim, univariate, context_dim, hidden, _order(i, order, seed), residual, act, inverse,
            context_every_layer,
        )  # fmt: skip

    head = _head(context_affine, dim, context_dim, hidden, act)
    return _stack(dim, layers, make, batch_norm, base, context_dim, components, seed, head, lu)


def _head(
    context_affine: bool, dim: int, context_dim: int, hidden: tuple[int, ...], act: type
) -> ContextAffine | None:
    flag("context_affine", context_affine)
    return ContextAffine(dim, context_dim, hidden, activation=act) if context_affine else None


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
    activation: str | type[nn.Module] = "relu",
    seed: int = 0,
    context_affine: bool = False,
    context_every_layer: bool = False,
    lu: bool = False,
) -> Flow:
    """A stack of :class:`Coupling` layers with alternating masks (``dim >= 2``), optionally
    ended by a :class:`ContextAffine` layer (see :func:`autoregressive_flow`)."""
    if dim < 2:
        raise ValueError(
            f"coupling layers need dim >= 2 (half the features condition the other half), "
            f"got dim={dim}; use an autoregressive flow"
        )
    hidden, act = hidden_sizes(hidden), _activation(activation)
    flag("context_every_layer", context_every_layer)  # MLP: no context, refused

    def make(i: int) -> FlowTransform:
        return Coupling(
            dim, univariate, context_dim, hidden, alternating_mask(dim, i), residual, act,
            context_every_layer,
        )  # fmt: skip

    head = _head(context_affine, dim, context_dim, hidden, act)
    return _stack(dim, layers, make, batch_norm, base, context_dim, components, seed, head, lu)


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
    _reject("maf", kwargs, _AFFINE_AR)
    return autoregressive_flow(dim, Affine(), context_dim, layers, hidden, **kwargs)


def iaf(
    dim: int, context_dim: int = 0, layers: int = 5, hidden: Sequence[int] = (64, 64), **kwargs
) -> Flow:
    """Inverse autoregressive flow (Kingma et al., 2016): sampling and scoring one's own samples
    in one pass per layer, ``log_prob`` of external data in ``dim`` passes. The usual choice of
    variational guide."""
    _reject(
        "iaf", kwargs, {**_AFFINE_AR, "inverse": "an IAF is the inverse direction by definition"}
    )
    return autoregressive_flow(dim, Affine(), context_dim, layers, hidden, inverse=True, **kwargs)


def spline_direction(spline: str | None) -> str:
    """The spline direction that :func:`nsf` builds for ``spline``: ``spline`` itself
    (checked), or for ``None`` the default, ``"inverse"``.

    Example:
        >>> spline_direction(None), spline_direction("forward")
        ('inverse', 'forward')
    """
    if spline is None:
        return "inverse"
    if spline not in SPLINE_DIRECTIONS:
        raise ValueError(
            f"spline must be 'forward' or 'inverse' (which spline maps data to base) or None "
            f"(the default), got {spline!r}"
        )
    return spline


def nsf(
    dim: int,
    context_dim: int = 0,
    layers: int = 5,
    hidden: Sequence[int] = (64, 64),
    bins: int = 8,
    bound: float = 5.0,
    coupling: bool = False,
    spline: str | None = None,
    **kwargs,
) -> Flow:
    """Neural spline flow (Durkan et al., 2019): rational-quadratic splines on
    ``[-bound, bound]`` (identity outside), autoregressive by default or coupling with
    ``coupling=True``.

    ``spline`` says which spline maps data to base (the density direction; sampling applies
    the other, :class:`~pyroflows.transforms.RQS`): ``"forward"`` (as zuko's and nflows'
    NSF) or ``"inverse"``; ``None``: :func:`spline_direction`'s default.
    Autoregressive and coupling layers both honour it.

    Example:
        >>> flow = nsf(2, context_dim=3, layers=2, hidden=(16, 16))
        >>> flow(torch.randn(4, 3)).sample((10,)).shape
        torch.Size([10, 4, 2])
    """
    direction = spline_direction(spline)
    rqs = RQS(positive_int("bins", bins), _bound(bound), direction)
    if coupling:
        _reject("nsf(coupling=True)", kwargs, _COUPLING)
        return coupling_flow(dim, rqs, context_dim, layers, hidden, **kwargs)
    return autoregressive_flow(dim, rqs, context_dim, layers, hidden, **kwargs)


def realnvp(
    dim: int, context_dim: int = 0, layers: int = 5, hidden: Sequence[int] = (64, 64), **kwargs
) -> Flow:
    """RealNVP (Dinh et al., 2017): affine coupling layers with alternating masks."""
    _reject("realnvp", kwargs, {**_AFFINE, **_COUPLING, "coupling": "realnvp is always coupling"})
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
    _reject(
        "piecewise_linear",
        kwargs,
        {
            "bound": "the maps act on [0, 1] with a uniform base",
            "spline": "the piecewise-linear map has no direction option (nsf only)",
            "lu": "a linear map would leave the unit hypercube",
        },
    )
    if coupling:
        _reject("piecewise_linear(coupling=True)", kwargs, _COUPLING)
    kwargs.setdefault("base", UniformBox(dim))
    build = coupling_flow if coupling else autoregressive_flow
    spline = PiecewiseLinear(positive_int("bins", bins))
    return build(dim, spline, context_dim, layers, hidden, **kwargs)


_AFFINE = {
    "bins": "affine layers have no bins (use nsf or piecewise_linear)",
    "spline": "affine layers have no spline (use nsf)",
    "bound": "affine layers act on the whole real line (use nsf for splines)",
}
_AFFINE_AR = {**_AFFINE, "coupling": "use realnvp for affine coupling layers"}
_COUPLING = {
    "order": "coupling layers alternate halves of the features instead of an order",
    "inverse": "coupling layers are equally fast in both directions",
}

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
