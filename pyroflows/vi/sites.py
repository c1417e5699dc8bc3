"""What :class:`~pyroflows.vi.FlowGuide` reads from its model, beside the latent sites it guides.

* the model's arguments: every tensor among them, and a check for NaN / inf in them;
* enumerated discrete sites (``config_enumerate``): hidden from the guide's prototype and
  marginalised by ``TraceEnum_ELBO`` in the full model; discrete sites a user's
  ``poutine.block`` hides from every trace are found and refused;
* particles: whether a site's distribution can be expanded (vectorised particles), and the
  reshaping of draws to and from a particle plate (posterior draws of the model's own sites);
* supports that depend on other sites (``Uniform(0, a)`` with ``a`` a latent): found by a
  second prior trace and refused, since every site is mapped through a fixed bijection.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from pyro import poutine
from pyro.poutine.block_messenger import BlockMessenger
from pyro.poutine.runtime import _PYRO_STACK
from pyro.poutine.trace_messenger import TraceMessenger
from torch import Tensor

from pyroflows.train.seeding import forked_streams

__all__ = [
    "EnumBlock",
    "check_model_arguments",
    "dependent_supports",
    "enumerated",
    "expandable",
    "hidden_discrete",
    "argument_signature",
    "model_tensors",
    "unvectorise",
    "vectorise",
]


def model_tensors(args: Sequence[Any], kwargs: dict[str, Any]) -> Iterator[tuple[str, Tensor]]:
    """``(label, tensor)`` for every tensor among the model arguments (also inside a list,
    tuple or dict, three levels deep)."""

    def walk(label: str, value: Any, depth: int = 0) -> Iterator[tuple[str, Tensor]]:
        if isinstance(value, Tensor):
            yield label, value
        elif depth < 3 and isinstance(value, (list, tuple)):
            for v in value:
                yield from walk(label, v, depth + 1)
        elif depth < 3 and isinstance(value, dict):
            for v in value.values():
                yield from walk(label, v, depth + 1)

    for i, value in enumerate(args):
        yield from walk(f"model argument {i}", value)
    for key, value in kwargs.items():
        yield from walk(f"model keyword argument {key!r}", value)


def argument_signature(args: Sequence[Any], kwargs: dict[str, Any]) -> tuple:
    """What of the model arguments can change the shapes of the model's sites: each tensor's
    label and shape (as :func:`model_tensors` finds them) and each plain number, string or
    boolean among the top-level arguments.

    Example:
        >>> argument_signature((torch.zeros(3), 5), {"n": 2})
        (('model argument 0', (3,)), ('model argument 1', 5), ('n', 2))
    """
    shapes = [(label, tuple(t.shape)) for label, t in model_tensors(args, kwargs)]
    plain = (int, float, str, bool, type(None))
    values = [(f"model argument {i}", v) for i, v in enumerate(args) if isinstance(v, plain)]
    values += [(k, v) for k, v in kwargs.items() if isinstance(v, plain)]
    return tuple(sorted(shapes + values, key=lambda item: item[0]))


def _bad_argument(args: Sequence[Any], kwargs: dict[str, Any]) -> tuple[str, str] | None:
    """``(label, "NaN" or "inf")`` of the first model argument that contains NaN or an
    infinite value, or None."""
    for label, value in model_tensors(args, kwargs):
        if value.is_floating_point() or value.is_complex():
            if bool(torch.isnan(value).any()):
                return label, "NaN"
            if bool(torch.isinf(value).any()):
                return label, "inf"
    return None


def enumerated(msg: dict) -> bool:
    """A latent sample site configured for parallel enumeration (``config_enumerate``)."""
    return (
        msg["type"] == "sample"
        and not msg.get("is_observed", False)
        and (msg.get("infer") or {}).get("enumerate") == "parallel"
    )


class EnumBlock(BlockMessenger):
    """Hides the enumerated sites from the guide's prototype (they are marginalised by
    ``TraceEnum_ELBO`` in the full model, not guided)."""

    def __init__(self):
        super().__init__(hide_fn=enumerated)


@contextmanager
def hidden_discrete(found: list[str]) -> Iterator[None]:
    """Record in ``found`` the discrete latent sites that a user's ``poutine.block`` hides
    from every trace (drawn from the prior inside the model, invisible to the ELBO)."""
    original = BlockMessenger._process_message

    def process(self, msg):
        original(self, msg)
        if not msg["stop"] or isinstance(self, EnumBlock) or msg["type"] != "sample":
            return
        support = getattr(msg["fn"], "support", None)
        if msg.get("is_observed") or not getattr(support, "is_discrete", False):
            return
        # a trace inside this block saw the site already: it is not hidden from that trace
        above = _PYRO_STACK[_PYRO_STACK.index(self) + 1 :] if self in _PYRO_STACK else []
        if not any(isinstance(m, TraceMessenger) for m in above):
            found.append(msg["name"])

    BlockMessenger._process_message = process
    try:
        yield
    finally:
        BlockMessenger._process_message = original


def expandable(fn: Any) -> bool:
    """Whether a site's distribution can be expanded (vectorised particles need it;
    ``pyro.distributions.LKJ`` cannot, an upstream Pyro limitation)."""
    if not isinstance(fn, torch.distributions.Distribution):
        return True  # e.g. a plate's subsample site
    try:
        fn.expand(torch.Size([2]) + fn.batch_shape)
    except NotImplementedError:
        return False
    return True


def vectorise(value: Tensor, event_dim: int, nesting: int) -> Tensor:
    """Draws ``(S, *shape)`` of a site as a value under a particle plate at ``-(nesting+1)``."""
    batch_dims = value.dim() - 1 - event_dim
    return value.reshape(len(value), *([1] * (nesting - batch_dims)), *value.shape[1:])


def unvectorise(value: Tensor, num: int, shape: torch.Size) -> Tensor:
    """A site's value under a particle plate back to ``(num, *shape)``."""
    if value.numel() == num * math.prod(shape):
        return value.reshape(num, *shape)
    # not a function of the draw (e.g. a deterministic site of constants): the same each time
    return value.reshape(-1, *shape)[:1].expand(num, *shape).clone()


def check_model_arguments(model, args: Sequence[Any], kwargs: dict[str, Any]) -> None:
    """Refuse model arguments with NaN, or with inf where the model observes them (inf may be
    a legitimate argument, a bound, not an observation). Runs the model once, in a forked
    random state, only when an argument holds inf.

    Raises:
        ValueError: naming the argument (and the observed site).
    """
    bad = _bad_argument(args, kwargs)
    if bad is None:
        return
    if bad[1] == "NaN":
        raise ValueError(
            f"{bad[0]} contains NaN values; FlowGuide.fit needs finite data (drop or "
            "mask missing values in the model, e.g. with obs_mask)"
        )
    with forked_streams(), torch.no_grad(), poutine.block():
        check = poutine.trace(model).get_trace(*args, **kwargs)
    for name, site in check.nodes.items():
        value = site["value"] if site["type"] == "sample" else None
        if site.get("is_observed") and isinstance(value, Tensor):
            if value.is_floating_point() and bool(torch.isinf(value).any()):
                raise ValueError(
                    f"{bad[0]} contains inf values, observed at site {name!r}; "
                    "FlowGuide.fit needs finite observations (drop or mask them)"
                )


def _support_values(constraint: Any, depth: int = 0) -> list[Any]:
    """The numbers a constraint is made of (bounds, nested constraints' bounds)."""
    out: list[Any] = []
    for key, value in sorted(vars(constraint).items()):
        if isinstance(value, Tensor):
            out.append((key, value.detach()))
        elif isinstance(value, (int, float)):
            out.append((key, value))
        elif depth < 3 and hasattr(value, "check"):  # a nested constraint
            out.extend(_support_values(value, depth + 1))
    return out


def _same_values(a: list[Any], b: list[Any]) -> bool:
    if len(a) != len(b):
        return False
    for (ka, va), (kb, vb) in zip(a, b, strict=True):
        if ka != kb:
            return False
        if isinstance(va, Tensor) or isinstance(vb, Tensor):
            ta, tb = torch.as_tensor(va), torch.as_tensor(vb)
            if ta.shape != tb.shape or not torch.equal(ta, tb):
                return False
        elif va != vb:
            return False
    return True


def dependent_supports(model, args: Sequence[Any], kwargs: dict[str, Any], trace: Any) -> list[str]:
    """Latent sites of ``trace`` whose support differs in a second prior trace of ``model``
    (drawn on forked random streams: the global ones are left as they were), i.e. supports
    that depend on other sites' values.

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> def model():
        ...     a = pyro.sample("a", dist.Gamma(2.0, 1.0))
        ...     pyro.sample("b", dist.Uniform(0.0, a))
        >>> first = poutine.trace(model).get_trace()
        >>> dependent_supports(model, (), {}, first)
        ['b']
    """
    with forked_streams(), torch.no_grad(), poutine.block():
        again = poutine.trace(model).get_trace(*args, **kwargs)
    found = []
    for name, site in trace.iter_stochastic_nodes():
        other = again.nodes.get(name)
        if other is None or other["type"] != "sample" or site["is_observed"]:
            continue
        first = getattr(site["fn"], "support", None)
        second = getattr(other["fn"], "support", None)
        if first is None or second is None:  # e.g. a plate's subsample site
            continue
        if type(first) is not type(second) or not _same_values(
            _support_values(first), _support_values(second)
        ):
            found.append(name)
    return found
