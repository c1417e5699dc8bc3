"""Fixed elementwise maps between the data's units and the space a flow is trained in."""

from __future__ import annotations

import math

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


class _Float64Fixed(FlowTransform):
    """Fixed layers whose buffers stay float64 whatever dtype the module is moved to, and
    whose maps compute in float64 and return the input's dtype.

    A flow trained in float32 on data with a large offset (``1e8 + N(0, 1)``) then still
    standardises exactly: the subtraction happens in float64 before any cast.
    """

    def _apply(self, fn, recurse=True):
        pinned = {
            name: b
            for name, b in self._buffers.items()
            if b is not None and b.dtype == torch.float64
        }
        super()._apply(fn, recurse)
        for name, b in pinned.items():
            self._buffers[name] = b.to(device=self._buffers[name].device)
        return self


class FixedAffine(_Float64Fixed):
    """Fixed map ``x = loc + L z`` with a lower-triangular ``L`` of positive diagonal (float64
    buffers, not trained). With ``L`` the Cholesky factor of the data covariance the density
    direction whitens the data (:mod:`pyroflows.preprocess` builds it); a diagonal ``L`` is
    per-column standardisation. The log-Jacobian ``sum(log diag L)`` keeps ``log p`` in the
    data's units.

    Example:
        >>> layer = FixedAffine(torch.zeros(2), torch.tensor([[2.0, 0.0], [1.0, 1.0]]))
        >>> layer.call_and_ladj(torch.tensor([1.0, 1.0]))
        (tensor([2., 2.]), tensor(0.6931))
    """

    def __init__(self, loc: Tensor, scale_tril: Tensor, context_dim: int = 0):
        loc = torch.as_tensor(loc, dtype=torch.float64)
        scale_tril = torch.as_tensor(scale_tril, dtype=torch.float64)
        super().__init__(loc.shape[-1], context_dim)
        if scale_tril.shape != (self.dim, self.dim):
            raise ValueError(f"scale_tril must have shape ({self.dim}, {self.dim})")
        if not bool((scale_tril.diagonal() > 0).all()):
            raise ValueError("scale_tril must have a positive diagonal")
        scale_tril = torch.tril(scale_tril)
        self.register_buffer("loc", loc.clone())
        self.register_buffer("scale_tril", scale_tril)
        self._set_diagonal()

    def _set_diagonal(self) -> None:
        # a diagonal factor takes the elementwise products: the same arithmetic whether the
        # layer was built from its factor or loaded from a saved state
        tril = self.scale_tril
        self.diagonal = bool((tril == torch.diag(tril.diagonal())).all())

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._set_diagonal()

    def _ladj(self) -> Tensor:
        return torch.log(self.scale_tril.diagonal()).sum()

    def inv_and_ladj(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        centred = x.to(torch.float64) - self.loc
        if self.diagonal:
            z = centred / self.scale_tril.diagonal()
        else:
            # Solve z L^T = x - loc: exact in float64 (no stored inverse).
            flat = centred.reshape(-1, self.dim)
            z = torch.linalg.solve_triangular(self.scale_tril.T, flat, upper=True, left=False)
            z = z.reshape(centred.shape)
        ladj = (-self._ladj()).to(x.dtype).expand(zero_ladj(x, context).shape)
        return z.to(x.dtype), ladj

    def call_and_ladj(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        z64 = z.to(torch.float64)
        if self.diagonal:
            x = z64 * self.scale_tril.diagonal() + self.loc
        else:
            x = z64 @ self.scale_tril.T + self.loc
        return x.to(z.dtype), self._ladj().to(z.dtype).expand(zero_ladj(z, context).shape)


class Box(_Float64Fixed):
    """Fixed map from the real line onto an interval per coordinate, for data with bounds.

    Per coordinate, with ``low`` and ``high`` possibly infinite:

    * both finite: ``x = low + (high - low) * sigmoid(z)`` (its inverse is the logit);
    * only ``low`` finite (half-open ``(low, inf)``): ``x = low + exp(z)`` (a log transform);
    * only ``high`` finite: ``x = high - exp(-z)``;
    * neither: the identity.

    Computed in float64 with an exact logit, ``z = log(x - low) - log(high - x)``, so points
    within ``1e-12`` of an edge keep distinct log-densities, and draws reach the edges. In the
    density direction, points on or outside the box get a log-Jacobian of ``-inf`` (so
    ``log_prob`` is ``-inf`` there) and a finite placeholder ``z = 0``.

    Example:
        >>> box = Box(torch.zeros(2), torch.tensor([1.0, float("inf")]))
        >>> z, ladj = box.inv_and_ladj(torch.tensor([[0.5, 1.0]]))
        >>> z
        tensor([[0., 0.]])
    """

    def __init__(self, low: Tensor, high: Tensor, context_dim: int = 0):
        low = torch.as_tensor(low, dtype=torch.float64)
        high = torch.as_tensor(high, dtype=torch.float64)
        low, high = torch.broadcast_tensors(low, high)
        super().__init__(low.shape[-1], context_dim)
        if torch.isnan(low).any() or torch.isnan(high).any():
            raise ValueError("bounds must not be NaN")
        if not bool((high > low).all()):
            raise ValueError("every upper bound must exceed its lower bound")
        self.register_buffer("low", low.clone())
        self.register_buffer("high", high.clone())

    def _kinds(self) -> tuple[Tensor, Tensor, Tensor]:
        lo, hi = torch.isfinite(self.low), torch.isfinite(self.high)
        return lo & hi, lo & ~hi, ~lo & hi

    def call_and_ladj(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        z64 = z.to(torch.float64)
        both, lower, upper = self._kinds()
        low = torch.where(torch.isfinite(self.low), self.low, 0.0)
        high = torch.where(torch.isfinite(self.high), self.high, 0.0)
        width = torch.where(both, high - low, 1.0)
        # sigmoid, written so that each edge is approached from its own side without rounding
        # to the other edge: x = low + w sigmoid(z) for z < 0, high - w sigmoid(-z) for z >= 0
        s_pos, s_neg = torch.sigmoid(z64), torch.sigmoid(-z64)
        x_both = torch.where(z64 < 0, low + width * s_pos, high - width * s_neg)
        ladj_both = torch.log(width) + F.logsigmoid(z64) + F.logsigmoid(-z64)
        x = torch.where(both, x_both, z64)
        x = torch.where(lower, low + torch.exp(z64), x)
        x = torch.where(upper, high - torch.exp(-z64), x)
        ladj = torch.where(both, ladj_both, torch.zeros_like(z64))
        ladj = torch.where(lower, z64, ladj)
        ladj = torch.where(upper, -z64, ladj)
        ladj = ladj.sum(-1).to(z.dtype)
        return x.to(z.dtype), ladj.expand(zero_ladj(z, context).shape)

    def inv_and_ladj(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x64 = x.to(torch.float64)
        both, lower, upper = self._kinds()
        inside = (x64 > self.low) & (x64 < self.high)
        # distances to the edges; 1 where an edge is infinite or the point is outside
        d_low = torch.where(inside & torch.isfinite(self.low), x64 - self.low, 1.0)
        d_high = torch.where(inside & torch.isfinite(self.high), self.high - x64, 1.0)
        log_low, log_high = torch.log(d_low), torch.log(d_high)
        z = torch.where(both | lower, log_low, torch.zeros_like(x64)) - torch.where(
            both | upper, log_high, torch.zeros_like(x64)
        )
        z = torch.where(both | lower | upper, z, x64)
        width = torch.where(both, self.high - self.low, 1.0)
        ladj = torch.log(width) - log_low - log_high
        ladj = torch.where(both | lower | upper, ladj, torch.zeros_like(x64))
        z = torch.where(inside, z, torch.zeros_like(z))
        ladj = torch.where(inside, ladj, torch.full_like(ladj, -math.inf)).sum(-1)
        return z.to(x.dtype), ladj.to(x.dtype).expand(zero_ladj(x, context).shape)
