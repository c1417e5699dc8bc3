"""A learnable full-rank affine layer ``x = loc + L z`` (``L`` lower-triangular, positive
diagonal): the last layer of a flow guide, so the flow's networks work in whitened coordinates
and the guide starts as a full-rank Gaussian (at the MAP with a Laplace covariance, if asked).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pyroflows.transforms.base import FlowTransform, zero_ladj


def _softplus_inv(y: Tensor) -> Tensor:
    return y + torch.log(-torch.expm1(-y))


class AffineTril(FlowTransform):
    """``x = loc + L z`` with ``L = tril(raw, -1) + diag(softplus(raw_diag))``.

    Both directions cost one triangular product or solve; ``log|dx/dz| = sum log diag L``.

    Args:
        loc: initial location, shape ``(dim,)``.
        scale_tril: initial lower-triangular factor with a positive diagonal, ``(dim, dim)``.

    Example:
        >>> layer = AffineTril(torch.zeros(2), torch.eye(2) * 2)
        >>> x, ladj = layer.call_and_ladj(torch.ones(3, 2))
        >>> x[0].tolist(), round(float(ladj[0].detach()), 4)
        ([2.0, 2.0], 1.3863)
    """

    def __init__(self, loc: Tensor, scale_tril: Tensor):
        loc = torch.as_tensor(loc)
        super().__init__(loc.shape[-1])
        self.loc = nn.Parameter(loc.detach().clone())
        self.raw_diag = nn.Parameter(torch.zeros_like(self.loc))
        self.raw_tril = nn.Parameter(torch.zeros(self.dim, self.dim, dtype=loc.dtype))
        self.set(loc, scale_tril)

    @torch.no_grad()
    def set(self, loc: Tensor, scale_tril: Tensor) -> None:
        """Overwrite the layer with ``loc`` and ``scale_tril``."""
        scale_tril = torch.as_tensor(scale_tril, dtype=self.loc.dtype, device=self.loc.device)
        if scale_tril.shape != (self.dim, self.dim) or not bool((scale_tril.diagonal() > 0).all()):
            raise ValueError(
                f"scale_tril must be ({self.dim}, {self.dim}) with a positive diagonal"
            )
        self.loc.copy_(loc)
        self.raw_diag.copy_(_softplus_inv(scale_tril.diagonal()))
        self.raw_tril.copy_(torch.tril(scale_tril, -1))

    @property
    def scale_tril(self) -> Tensor:
        """The current lower-triangular factor ``L``."""
        return torch.tril(self.raw_tril, -1) + torch.diag_embed(F.softplus(self.raw_diag))

    def call_and_ladj(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        diag = F.softplus(self.raw_diag)
        x = self.loc + z * diag + z @ torch.tril(self.raw_tril, -1).T
        return x, torch.log(diag).sum().expand(zero_ladj(z, context).shape)

    def inv_and_ladj(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        scale_tril = self.scale_tril
        flat = (x - self.loc).reshape(-1, self.dim)
        z = torch.linalg.solve_triangular(scale_tril.T, flat, upper=True, left=False)
        ladj = -torch.log(scale_tril.diagonal()).sum()
        return z.reshape(x.shape), ladj.expand(zero_ladj(x, context).shape)
