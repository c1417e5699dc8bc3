"""Elementwise affine layer whose shift and scale are a function of the context alone."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from pyroflows.nn import MLP
from pyroflows.ops import affine, soft_clamp
from pyroflows.transforms.base import FlowTransform


class ContextAffine(FlowTransform):
    """``x = shift(c) + exp(s(c)) * z`` per feature, with ``(shift, s)`` from a network of the
    context ``c`` (trained parameters when ``context_dim == 0``); starts as the identity.

    As the last layer of a conditional flow it carries the location and width of a
    posterior that moves and narrows with the observation (widths over orders of magnitude),
    so the layers before it only model the shape. ``s`` is soft-clamped to
    ``(-scale_bound, scale_bound)``. Both directions cost one pass of a network that reads
    only the context: for many draws per context it runs once per context.

    Args:
        dim: number of features.
        context_dim: size of the context (0: a learnt shift and scale).
        hidden: hidden sizes of the network.
        scale_bound: bound of the log-scale.
        activation: activation module class.

    Example:
        >>> layer = ContextAffine(2, context_dim=3)
        >>> x, ladj = layer.call_and_ladj(torch.randn(10, 4, 2), torch.randn(4, 3))
        >>> x.shape, ladj.shape
        (torch.Size([10, 4, 2]), torch.Size([10, 4]))
    """

    def __init__(
        self,
        dim: int,
        context_dim: int = 0,
        hidden: Sequence[int] = (64, 64),
        scale_bound: float = 10.0,
        activation: type[nn.Module] = nn.ReLU,
    ):
        super().__init__(dim, context_dim)
        if not scale_bound > 0:
            raise ValueError(f"scale_bound must be positive, got {scale_bound!r}")
        self.scale_bound = float(scale_bound)
        if context_dim:
            self.net: MLP | None = MLP(context_dim, 2 * dim, 0, hidden, activation).zero_output_()
            # a linear path next to the network: SGD fits a linear map of the context to the
            # precision a narrow posterior needs (a ReLU network only to about 1 % of its range)
            self.linear: nn.Linear | None = nn.Linear(context_dim, 2 * dim, bias=False)
            nn.init.zeros_(self.linear.weight)
            self.register_parameter("params", None)
        else:
            self.net, self.linear = None, None
            self.params = nn.Parameter(torch.zeros(2 * dim))

    def _shift_log_scale(self, context: Tensor | None) -> tuple[Tensor, Tensor]:
        if self.net is None:
            raw = self.params
        elif context is None:
            raise ValueError(f"this layer needs a context of size {self.context_dim}")
        else:
            bound = self.net.input_bound  # both paths read the context the network reads
            if bound is not None:
                context = context.clamp(-bound, bound)
            raw = self.net(context) + self.linear(context)
        shift, raw_scale = raw.chunk(2, dim=-1)
        return shift, soft_clamp(raw_scale, self.scale_bound)

    def call_and_ladj(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        shift, log_scale = self._shift_log_scale(context)
        x, _ = affine(z, shift, log_scale)  # x has the batch shape of z and the context
        return x, log_scale.sum(-1).expand(x.shape[:-1])

    def inv_and_ladj(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        shift, log_scale = self._shift_log_scale(context)
        z, _ = affine(x, shift, log_scale, inverse=True)
        return z, (-log_scale.sum(-1)).expand(z.shape[:-1])

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, scale_bound={self.scale_bound}"
