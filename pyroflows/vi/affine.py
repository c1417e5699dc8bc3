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


class PreconditionedAffine(AffineTril):
    """``x = shift + P (loc + L z)``: an :class:`AffineTril` in coordinates whitened by a fixed
    lower-triangular preconditioner ``P`` (a buffer, not learnt).

    The learnt ``loc`` and ``L`` live in whitened units, so an optimiser's step (Adam moves
    each parameter by about its learning rate) has the same effect along every direction of
    the posterior whatever its scales and correlations. With ``shift = 0`` and ``P = I`` it is
    the plain :class:`AffineTril`.

    Example:
        >>> layer = PreconditionedAffine(torch.zeros(2), torch.eye(2))
        >>> layer.precondition(torch.ones(2), torch.eye(2) * 3)
        >>> x, ladj = layer.call_and_ladj(torch.zeros(1, 2))
        >>> x.tolist(), round(float(ladj[0]), 4)
        ([[1.0, 1.0]], 2.1972)
    """

    def __init__(self, loc: Tensor, scale_tril: Tensor):
        loc = torch.as_tensor(loc)
        dim = loc.shape[-1]
        super().__init__(loc, scale_tril)
        self.register_buffer("shift", torch.zeros(dim, dtype=loc.dtype))
        self.register_buffer("factor", torch.eye(dim, dtype=loc.dtype))

    @torch.no_grad()
    def precondition(self, shift: Tensor, factor: Tensor) -> None:
        """Whiten by ``(shift, factor)``; the learnt part restarts at ``loc = 0``, ``L = I``."""
        factor = torch.as_tensor(factor, dtype=self.loc.dtype, device=self.loc.device)
        if factor.shape != (self.dim, self.dim) or not bool((factor.diagonal() > 0).all()):
            raise ValueError(f"factor must be ({self.dim}, {self.dim}) with a positive diagonal")
        self.shift.copy_(shift)
        self.factor.copy_(torch.tril(factor))
        eye = torch.eye(self.dim, dtype=self.loc.dtype, device=self.loc.device)
        AffineTril.set(self, torch.zeros_like(self.loc), eye)

    @torch.no_grad()
    def set(self, loc: Tensor, scale_tril: Tensor) -> None:
        """Make the layer map ``z`` to ``loc + scale_tril z`` (original coordinates)."""
        if "factor" not in self._buffers:  # called by AffineTril.__init__
            return super().set(loc, scale_tril)
        scale_tril = torch.as_tensor(scale_tril, dtype=self.loc.dtype, device=self.loc.device)
        solve = lambda b: torch.linalg.solve_triangular(self.factor, b, upper=False)  # noqa: E731
        loc = solve((torch.as_tensor(loc, dtype=self.loc.dtype) - self.shift)[:, None])[:, 0]
        return super().set(loc, solve(scale_tril))

    @property
    def mean_and_scale_tril(self) -> tuple[Tensor, Tensor]:
        """The Gaussian this layer maps ``N(0, I)`` to, in the original coordinates."""
        return self.shift + self.factor @ self.loc, self.factor @ self.scale_tril

    def call_and_ladj(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        y, ladj = super().call_and_ladj(z, context)
        x = self.shift + y @ self.factor.T
        return x, ladj + torch.log(self.factor.diagonal()).sum()

    def inv_and_ladj(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        flat = (x - self.shift).reshape(-1, self.dim)
        y = torch.linalg.solve_triangular(self.factor.T, flat, upper=True, left=False)
        z, ladj = super().inv_and_ladj(y.reshape(x.shape), context)
        return z, ladj - torch.log(self.factor.diagonal()).sum()
