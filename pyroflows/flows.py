"""The :class:`Flow` module: a base distribution pushed through a stack of layers.

``flow(context)`` returns a Pyro distribution (usable in ``pyro.sample``), and the flow scores
and samples directly with ``log_prob``, ``sample``, ``rsample`` and ``rsample_and_log_prob``.
A context of size 0 (the default) means unconditional; the same code serves both cases.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyro.distributions as dist
import torch
from torch import Tensor, nn

from pyroflows.bases import Base
from pyroflows.transforms.base import FlowTransform

Shape = torch.Size | Sequence[int] | int


def _shape(shape: Shape) -> torch.Size:
    return torch.Size([shape]) if isinstance(shape, int) else torch.Size(shape)


class Flow(nn.Module):
    """A normalizing flow: ``x = T_K(... T_1(z))`` with ``z ~ base``.

    Args:
        transforms: layers in the sampling order (the first acts on base draws).
        base: the base distribution module.
        context_dim: size of the conditioning vector (0: unconditional).

    Example:
        >>> from pyroflows import bases, transforms
        >>> flow = Flow([transforms.MaskedAutoregressive(2)], bases.StandardNormal(2))
        >>> flow.log_prob(torch.zeros(3, 2)).shape
        torch.Size([3])
        >>> flow.sample((5,)).shape
        torch.Size([5, 2])
    """

    def __init__(self, transforms: Sequence[FlowTransform], base: Base, context_dim: int = 0):
        super().__init__()
        for t in transforms:
            if not isinstance(t, FlowTransform):
                raise TypeError(f"every layer must be a FlowTransform, got {type(t).__name__}")
            if t.dim != base.dim:
                raise ValueError(f"layer {t} acts on {t.dim} features, the base on {base.dim}")
            if t.context_dim not in (0, context_dim):
                raise ValueError(
                    f"layer {t} expects a context of size {t.context_dim}, "
                    f"the flow has context_dim={context_dim}"
                )
        self.transforms = nn.ModuleList(transforms)
        self.base = base
        self.dim = base.dim
        self.context_dim = int(context_dim)

    # -- checks -----------------------------------------------------------------------------
    def _reference(self) -> Tensor:
        for tensor in self.parameters():
            return tensor
        return next(self.buffers())

    def check_inputs(self, x: Tensor | None, context: Tensor | None) -> None:
        """Raise a ``ValueError`` naming the problem if ``x`` or ``context`` cannot be used.

        The finiteness check reads values (a host synchronisation); it is skipped while
        ``torch.compile`` traces. Internal callers that have already checked their data use
        ``log_prob(..., check=False)``."""
        if self.context_dim and context is None:
            raise ValueError(f"this flow is conditional: pass a context of size {self.context_dim}")
        if not self.context_dim and context is not None:
            raise ValueError("this flow is unconditional (context_dim=0) but got a context")
        ref = self._reference()
        for name, t, size in (("x", x, self.dim), ("context", context, self.context_dim)):
            if t is None:
                continue
            if not isinstance(t, Tensor):
                raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
            if not t.is_floating_point():
                raise ValueError(f"{name} must be a floating-point tensor, got {t.dtype}")
            if t.dtype != ref.dtype:
                raise ValueError(
                    f"{name} has dtype {t.dtype} but the flow is {ref.dtype}; "
                    f"convert one of them (e.g. flow.to({t.dtype}))"
                )
            if t.dim() == 0 or t.shape[-1] != size:
                raise ValueError(
                    f"{name} must have {size} features in its last dimension, "
                    f"got shape {tuple(t.shape)}"
                )
            if not torch.compiler.is_compiling() and not bool(torch.isfinite(t).all()):
                raise ValueError(f"{name} contains NaN or infinite values")
        if x is not None and context is not None:
            try:
                torch.broadcast_shapes(x.shape[:-1], context.shape[:-1])
            except RuntimeError:
                raise ValueError(
                    f"batch shapes of x {tuple(x.shape)} and context "
                    f"{tuple(context.shape)} do not broadcast"
                ) from None

    # -- distribution -------------------------------------------------------------------------
    def forward(self, context: Tensor | None = None) -> FlowDistribution:
        """The flow as a Pyro distribution; its batch shape is ``context.shape[:-1]``."""
        self.check_inputs(None, context)
        return FlowDistribution(self, context)

    # -- direct use ---------------------------------------------------------------------------
    def log_prob(self, x: Tensor, context: Tensor | None = None, *, check: bool = True) -> Tensor:
        """Exact ``log p(x | context)``, shape ``broadcast(x.shape[:-1], context.shape[:-1])``.
        One network pass per layer (for MAF, NSF and coupling layers).

        Args:
            x: points, ``(..., dim)``.
            context: conditioning vectors ``(..., context_dim)`` (conditional flows only).
            check: validate shapes, dtype and finiteness first (a host synchronisation).
                ``check=False`` is the fast path for training loops and for
                ``torch.func.vmap`` / ``torch.compile``, on inputs already checked.
        """
        if check:
            self.check_inputs(x, context)
        total = 0.0
        for t in reversed(self.transforms):
            x, ladj = t.inv_and_ladj(x, context)
            total = total + ladj
        return self.base.log_prob(x) + total

    def transform_to_base(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Map data to the base space (the density direction)."""
        self.check_inputs(x, context)
        for t in reversed(self.transforms):
            x, _ = t.inv_and_ladj(x, context)
        return x

    def transform_from_base(
        self, z: Tensor, context: Tensor | None = None, *, check: bool = True
    ) -> Tensor:
        """Map base points to data (the sampling direction), without the log-Jacobians:
        ``sample`` is ``transform_from_base(base draws)``. ``z`` is ``(..., dim)``, its batch
        shape broadcast with the context's.

        Args:
            z: base points, ``(..., dim)``.
            context: conditioning vectors ``(..., context_dim)`` (conditional flows only).
            check: validate shapes, dtype and finiteness first (a host synchronisation);
                ``check=False`` for inputs already checked, e.g. the chunks of one draw.

        Example:
            >>> from pyroflows import bases, transforms
            >>> flow = Flow([transforms.MaskedAutoregressive(2)], bases.StandardNormal(2))
            >>> z = torch.randn(4, 2)
            >>> torch.allclose(flow.transform_to_base(flow.transform_from_base(z)), z)
            True
        """
        if check:
            self.check_inputs(z, context)
        for t in self.transforms:
            z = t.call(z, context)
        return z

    def _sample(
        self, shape: Shape, context: Tensor | None, reparam: bool, log_prob: bool = True
    ) -> tuple[Tensor, Tensor | None]:
        self.check_inputs(None, context)
        batch = context.shape[:-1] if context is not None else torch.Size()
        full = _shape(shape) + batch
        z = self.base.rsample(full) if reparam else self.base.sample(full)
        if not log_prob:  # the layers skip their log-Jacobians
            return self.transform_from_base(z, context, check=False), None
        density = self.base.log_prob(z)
        for t in self.transforms:
            z, ladj = t.call_and_ladj(z, context)
            density = density - ladj
        return z, density

    def rsample_and_log_prob(
        self, shape: Shape = (), context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Reparametrised draws of shape ``shape + context.shape[:-1] + (dim,)`` and their
        log-density, computed in the same pass."""
        x, log_prob = self._sample(shape, context, reparam=True)
        assert log_prob is not None
        return x, log_prob

    def rsample(self, shape: Shape = (), context: Tensor | None = None) -> Tensor:
        """Reparametrised draws (gradients flow to the parameters)."""
        return self._sample(shape, context, reparam=True, log_prob=False)[0]

    @torch.no_grad()
    def sample(self, shape: Shape = (), context: Tensor | None = None) -> Tensor:
        """Draws of shape ``shape + context.shape[:-1] + (dim,)``, without gradients (and
        without the log-Jacobians that scoring them would need)."""
        return self._sample(shape, context, reparam=False, log_prob=False)[0]

    def extra_repr(self) -> str:
        return f"dim={self.dim}, context_dim={self.context_dim}"


class FlowDistribution(dist.TransformedDistribution):
    """A :class:`Flow` (with an optional context) as a Pyro ``TransformedDistribution``.

    ``log_prob``, ``rsample`` and ``rsample_and_log_prob`` go straight through the flow's fused
    passes; ``base_dist`` and ``transforms`` are the usual Pyro objects (each layer conditioned
    on the context), so the distribution works wherever Pyro expects one.

    Scoring a draw of this distribution costs nothing: the log-density computed while drawing
    is handed to the next ``log_prob`` of exactly that tensor (what ``pyro.sample`` followed by
    an ELBO does: one pass per layer per step for every family, IAF or MAF). The hand-over is
    used once, and only while the flow's parameters are unchanged since the draw (their
    version counters), so a draw scored after an optimiser step is scored afresh and never
    brings back a graph that a backward pass already freed (the trap of Pyro's identity cache).
    """

    arg_constraints: dict = {}

    def __init__(
        self, flow: Flow, context: Tensor | None = None, batch_shape: torch.Size | None = None
    ):
        if batch_shape is None:
            batch_shape = context.shape[:-1] if context is not None else torch.Size()
        self.flow = flow
        self.context = context
        self._drawn: tuple[Tensor, Tensor, int] | None = None
        transforms = [t.condition(context if t.context_dim else None) for t in flow.transforms]
        super().__init__(flow.base.distribution(batch_shape), transforms, validate_args=False)

    @property
    def has_rsample(self) -> bool:
        return self.flow.base.has_rsample

    def _version(self) -> int:
        return sum(p._version for p in self.flow.parameters())

    def log_prob(self, value: Tensor) -> Tensor:
        drawn, self._drawn = self._drawn, None
        if (
            drawn is not None
            and drawn[0] is value
            and drawn[2] == self._version()
            and (drawn[1].requires_grad or not torch.is_grad_enabled())
        ):
            log_prob = drawn[1]
        else:
            log_prob = self.flow.log_prob(value, self.context)
        return log_prob.expand(torch.broadcast_shapes(value.shape[:-1], self.batch_shape))

    def _draw(self, sample_shape: Shape, reparam: bool) -> tuple[Tensor, Tensor | None]:
        shape = _shape(sample_shape)
        context = self.context
        extra = self.batch_shape[
            : len(self.batch_shape) - (0 if context is None else context.dim() - 1)
        ]
        # Only reparametrised draws hand their log-density over (and compute it): a draw made
        # without gradients must be scored afresh (score-function estimators need the
        # gradient of log q).
        x, log_prob = self.flow._sample(shape + extra, context, reparam, log_prob=reparam)
        self._drawn = (x, log_prob, self._version()) if reparam else None
        return x, log_prob

    def rsample(self, sample_shape: Shape = torch.Size()) -> Tensor:
        return self._draw(sample_shape, reparam=True)[0]

    def sample(self, sample_shape: Shape = torch.Size()) -> Tensor:
        with torch.no_grad():
            return self._draw(sample_shape, reparam=False)[0]

    def rsample_and_log_prob(self, sample_shape: Shape = torch.Size()) -> tuple[Tensor, Tensor]:
        x, log_prob = self._draw(sample_shape, reparam=True)
        self._drawn = None
        assert log_prob is not None
        return x, log_prob

    def expand(self, batch_shape: Shape, _instance=None) -> FlowDistribution:
        batch_shape = _shape(batch_shape)
        context = self.context
        if context is not None:
            context = context.expand(batch_shape + context.shape[-1:])
        return FlowDistribution(self.flow, context, batch_shape)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_drawn"] = None
        return state
