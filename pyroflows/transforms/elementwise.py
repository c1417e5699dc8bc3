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


class FixedAffine(FlowTransform):
    """Fixed map ``x = loc + L z`` with a lower-triangular ``L`` of positive diagonal (buffers,
    not trained). With ``L`` the Cholesky factor of the data covariance, the density direction
    whitens the data; the log-Jacobian ``sum(log diag L)`` keeps ``log p`` in the data's units.

    Example:
        >>> layer = FixedAffine(torch.zeros(2), torch.tensor([[2.0, 0.0], [1.0, 1.0]]))
        >>> layer.call_and_ladj(torch.tensor([1.0, 1.0]))
        (tensor([2., 2.]), tensor(0.6931))
    """

    def __init__(self, loc: Tensor, scale_tril: Tensor, context_dim: int = 0):
        loc, scale_tril = torch.as_tensor(loc), torch.as_tensor(scale_tril)
        super().__init__(loc.shape[-1], context_dim)
        if scale_tril.shape != (self.dim, self.dim):
            raise ValueError(f"scale_tril must have shape ({self.dim}, {self.dim})")
        if not bool((scale_tril.diagonal() > 0).all()):
            raise ValueError("scale_tril must have a positive diagonal")
        self.register_buffer("loc", loc.clone())
        self.register_buffer("scale_tril", torch.tril(scale_tril))

    @classmethod
    def whitening(cls, data: Tensor, shrinkage: float = 1e-6) -> FixedAffine:
        """The map whose inverse whitens ``data`` (rows): mean and Cholesky factor of its
        covariance, with ``shrinkage`` times the mean variance added to the diagonal."""
        loc = data.mean(0)
        cov = torch.atleast_2d(torch.cov(data.T, correction=0))
        cov = cov + shrinkage * cov.diagonal().mean() * torch.eye(len(cov), dtype=cov.dtype)
        return cls(loc, torch.linalg.cholesky(cov))

    def _ladj(self) -> Tensor:
        return torch.log(self.scale_tril.diagonal()).sum()

    def inv_and_ladj(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        centred = (x - self.loc).reshape(-1, self.dim)
        # Solve z L^T = x - loc; exact in the buffers' dtype (no stored inverse).
        z = torch.linalg.solve_triangular(self.scale_tril.T, centred, upper=True, left=False)
        return z.reshape(x.shape), (-self._ladj()).expand(zero_ladj(x, context).shape)

    def call_and_ladj(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x = z @ self.scale_tril.T + self.loc
        return x, self._ladj().expand(zero_ladj(z, context).shape)


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
