"""The contract every pyroflows layer follows, and its bridge to Pyro's transform API.

A layer computes its output and its log-Jacobian together, in both directions:

* ``call_and_ladj(z, context) -> (x, log|dx/dz|)``: the sampling direction (base -> data);
* ``inv_and_ladj(x, context) -> (z, log|dz/dx|)``: the density direction (data -> base);
* ``call(z, context) -> x``: the sampling direction alone (drawing samples).

``context`` is ``None`` for unconditional layers (``context_dim == 0``). Every layer is both a
Pyro ``TransformModule`` (usable directly in ``TransformedDistribution`` when unconditional) and
a ``ConditionalTransformModule`` (``layer.condition(context)`` gives a plain ``Transform``), so
the conditional and unconditional cases share one code path.

Pyro's ``TransformedDistribution.log_prob(x)`` calls ``transform.inv(x)`` and then
``transform.log_abs_det_jacobian(z, x)``. To keep that at one network pass, the transform
remembers the log-Jacobian of its latest call and hands it to the next
``log_abs_det_jacobian`` whose arguments are exactly that call's tensors, once. A new call
always recomputes, so scoring the same data tensor in consecutive training steps never sees a
graph from the previous step (the trap of Pyro's own identity cache).
"""

from __future__ import annotations

from typing import Any

import torch
from pyro.distributions.conditional import ConditionalTransformModule
from pyro.distributions.torch_transform import TransformModule
from torch import Tensor
from torch.distributions import Transform, constraints


class FlowTransform(TransformModule, ConditionalTransformModule):
    """Base class of pyroflows layers acting on vectors of size ``dim``.

    Subclasses implement :meth:`call_and_ladj` and :meth:`inv_and_ladj`, and set
    ``inverse_is_fast`` to tell which direction costs a single pass.
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True
    #: True when the density direction (``inv_and_ladj``) is the cheap one.
    inverse_is_fast: bool = True
    # Attributes holding tensors of the latest call; dropped when copying or pickling.
    _transient = ("_unconditioned",)

    def __init__(self, dim: int, context_dim: int = 0):
        super().__init__(cache_size=0)
        if dim < 1:
            raise ValueError(f"dim must be positive, got {dim}")
        if context_dim < 0:
            raise ValueError(f"context_dim must be >= 0, got {context_dim}")
        self.dim = int(dim)
        self.context_dim = int(context_dim)

    # -- to be implemented by layers ------------------------------------------------------
    def call_and_ladj(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Sampling direction: ``(x, log|dx/dz|)`` with the log-Jacobian of shape ``z.shape[:-1]``
        (broadcast with the context's batch shape)."""
        raise NotImplementedError

    def inv_and_ladj(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Density direction: ``(z, log|dz/dx|)``."""
        raise NotImplementedError

    def call(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        """Sampling direction without the log-Jacobian (drawing samples). Layers whose
        log-Jacobian has a cost of its own override this."""
        return self.call_and_ladj(z, context)[0]

    # -- Pyro / torch API -------------------------------------------------------------------
    def condition(self, context: Tensor | None) -> ConditionedTransform:
        """The transform for a given context (``None`` when ``context_dim == 0``)."""
        if self.context_dim == 0:
            if context is not None and context.shape[-1] != 0:
                raise ValueError(
                    "this transform is unconditional (context_dim=0) "
                    f"but got a context of shape {tuple(context.shape)}"
                )
            return ConditionedTransform(self, None)
        if context is None:
            raise ValueError(f"this transform needs a context of size {self.context_dim}")
        if context.shape[-1] != self.context_dim:
            raise ValueError(
                f"context has size {context.shape[-1]} in its last dimension, "
                f"expected {self.context_dim}"
            )
        return ConditionedTransform(self, context)

    def _bound(self) -> ConditionedTransform:
        bound = self.__dict__.get("_unconditioned")
        if bound is None:
            if self.context_dim:
                raise ValueError(
                    f"this transform needs a context of size {self.context_dim}: use "
                    "transform.condition(context) or ConditionalTransformedDistribution"
                )
            bound = ConditionedTransform(self, None)
            self.__dict__["_unconditioned"] = bound
        return bound

    def _call(self, z: Tensor) -> Tensor:
        return self._bound()._call(z)

    def _inverse(self, x: Tensor) -> Tensor:
        return self._bound()._inverse(x)

    def log_abs_det_jacobian(self, z: Tensor, x: Tensor) -> Tensor:
        return self._bound().log_abs_det_jacobian(z, x)

    def with_cache(self, cache_size: int = 1) -> FlowTransform:
        # The layer keeps its own one-shot log-Jacobian memory; torch's identity cache is
        # deliberately never used.
        return self

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        for name in self._transient:
            state.pop(name, None)
        return state

    def extra_repr(self) -> str:
        return f"dim={self.dim}, context_dim={self.context_dim}"


class ConditionedTransform(Transform):
    """A :class:`FlowTransform` bound to one context: an ordinary torch ``Transform``."""

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(self, layer: FlowTransform, context: Tensor | None):
        super().__init__(cache_size=0)
        self.layer = layer
        self.context = context
        self._last: tuple[Tensor, Tensor, Tensor, bool] | None = None

    def _call(self, z: Tensor) -> Tensor:
        x, ladj = self.layer.call_and_ladj(z, self.context)
        self._last = (z, x, ladj, True)
        return x

    def _inverse(self, x: Tensor) -> Tensor:
        last = self._last
        # The exact output of the latest sampling call maps back to its input for free; this
        # is what lets Pyro score its own flow samples (IAF guides) in one pass.
        if last is not None and last[3] and last[1] is x:
            return last[0]
        z, ladj = self.layer.inv_and_ladj(x, self.context)
        self._last = (z, x, -ladj, False)
        return z

    def log_abs_det_jacobian(self, z: Tensor, x: Tensor) -> Tensor:
        last, self._last = self._last, None
        if last is not None and last[0] is z and last[1] is x:
            return last[2]
        if self.layer.inverse_is_fast:
            return -self.layer.inv_and_ladj(x, self.context)[1]
        return self.layer.call_and_ladj(z, self.context)[1]

    def with_cache(self, cache_size: int = 1) -> ConditionedTransform:
        return self

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_last"] = None
        return state


def zero_ladj(x: Tensor, context: Tensor | None = None) -> Tensor:
    """A zero log-Jacobian with the batch shape of ``x`` broadcast against the context."""
    shape = x.shape[:-1]
    if context is not None:
        shape = torch.broadcast_shapes(shape, context.shape[:-1])
    return x.new_zeros(shape)
