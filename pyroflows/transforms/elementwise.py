"""Fixed elementwise maps between the data's units and the space a flow is trained in."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from pyroflows.transforms.base import FlowTransform, zero_ladj


class ElementwiseAffine(FlowTransform):
    """Fixed map ``x = z * scale + loc`` (buffers, not trained), e.g. to put a flow trained on
    standardised data back into the data's units with the Jacobian accounted for."""

    def __init__(self, loc: Tensor, scale: Tensor, context_dim: int = 0):
        loc, scale = torch.as_tensor(loc), torch.as_tensor(scale)
        super().__init__(loc.shape[-1], context_dim)
        if not bool((scale > 0).all()):
            raise ValueError("scale must be positive")
        self.register_buffer("loc", loc.clone())
        self.register_buffer("scale", scale.clone())

    def inv_and_ladj(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        ladj = -torch.log(self.scale).sum()
        return (x - self.loc) / self.scale, ladj.expand(zero_ladj(x, context).shape)

    def call_and_ladj(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        ladj = torch.log(self.scale).sum()
        return z * self.scale + self.loc, ladj.expand(zero_ladj(z, context).shape)


class SigmoidBox(FlowTransform):
    """Fixed map from the real line onto the open box ``(low, high)``:
    ``x = low + (high - low) * sigmoid(z)``; its inverse is the logit pre-transform for data
    on a bounded box. Inputs on or outside the box are clipped a tiny ``eps`` inside it.

    Example:
        >>> box = SigmoidBox(torch.zeros(2), torch.ones(2))
        >>> z, ladj = box.inv_and_ladj(torch.tensor([[0.5, 0.25]]))
        >>> z
        tensor([[ 0.0000, -1.0986]])
    """

    def __init__(self, low: Tensor, high: Tensor, eps: float = 1e-6, context_dim: int = 0):
        low, high = torch.as_tensor(low), torch.as_tensor(high)
        super().__init__(low.shape[-1], context_dim)
        if not bool((high > low).all()):
            raise ValueError("every upper bound must exceed its lower bound")
        self.eps = eps
        self.register_buffer("low", low.clone())
        self.register_buffer("high", high.clone())

    def call_and_ladj(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        width = self.high - self.low
        x = self.low + width * torch.sigmoid(z)
        ladj = (torch.log(width) - F.softplus(z) - F.softplus(-z)).sum(-1)
        return x, ladj.expand(zero_ladj(z, context).shape)

    def inv_and_ladj(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        width = self.high - self.low
        u = ((x - self.low) / width).clamp(self.eps, 1.0 - self.eps)
        z = torch.log(u) - torch.log1p(-u)
        ladj = -(torch.log(width) + torch.log(u) + torch.log1p(-u)).sum(-1)
        return z, ladj.expand(zero_ladj(x, context).shape)
