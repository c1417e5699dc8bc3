"""Feature permutations and the LU-decomposed invertible linear layer, kept in ``state_dict``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pyroflows.transforms.base import FlowTransform, zero_ladj


class Permutation(FlowTransform):
    """Reorder features: ``x = z[..., permutation]``. The permutation is a buffer, so it is
    saved in ``state_dict`` and moves with ``.to(device)`` (unlike Pyro's ``Permute``).

    Example:
        >>> Permutation.reversed(3)(torch.tensor([1.0, 2.0, 3.0]))
        tensor([3., 2., 1.])
    """

    def __init__(self, permutation: Tensor, context_dim: int = 0):
        permutation = torch.as_tensor(permutation, dtype=torch.long)
        super().__init__(len(permutation), context_dim)
        if sorted(permutation.tolist()) != list(range(len(permutation))):
            raise ValueError("permutation must contain each of 0..dim-1 once")
        self.register_buffer("permutation", permutation)
        self.register_buffer("inverse_permutation", torch.argsort(permutation))

    @classmethod
    def reversed(cls, dim: int, context_dim: int = 0) -> Permutation:
        """The order ``dim-1, ..., 0``."""
        return cls(torch.arange(dim - 1, -1, -1), context_dim)

    @classmethod
    def random(cls, dim: int, seed: int = 0, context_dim: int = 0) -> Permutation:
        """A random order drawn from a seeded generator (independent of the global seed)."""
        return cls(torch.randperm(dim, generator=torch.Generator().manual_seed(seed)), context_dim)

    def call_and_ladj(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return z[..., self.permutation], zero_ladj(z, context)

    def inv_and_ladj(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return x[..., self.inverse_permutation], zero_ladj(x, context)


class LULinear(FlowTransform):
    """Invertible linear layer ``z = P L U x + b`` in the density direction (Kingma & Dhariwal,
    2018): ``P`` a fixed seeded permutation (buffer), ``L`` unit lower-triangular, ``U``
    upper-triangular with a positive diagonal ``exp(log_diag)``. Both directions are one
    matrix product: sampling multiplies by :meth:`inverse_weight`, formed once per call from
    two triangular solves of the ``dim x dim`` identity. Starts at ``z = P x``;
    ``permute=False`` makes ``P`` the identity, so the layer starts as the identity (between
    autoregressive layers of alternating orders, a random ``P`` would undo the alternation).

    Example:
        >>> layer = LULinear(3)
        >>> x, ladj = layer.call_and_ladj(torch.randn(5, 3))
        >>> x.shape, ladj.shape
        (torch.Size([5, 3]), torch.Size([5]))
    """

    def __init__(self, dim: int, seed: int = 0, context_dim: int = 0, permute: bool = True):
        super().__init__(dim, context_dim)
        generator = torch.Generator().manual_seed(seed)
        permutation = torch.randperm(dim, generator=generator) if permute else torch.arange(dim)
        self.register_buffer("permutation", permutation)
        self.lower = nn.Parameter(torch.zeros(dim, dim))
        self.upper = nn.Parameter(torch.zeros(dim, dim))
        self.log_diag = nn.Parameter(torch.zeros(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def _factors(self) -> tuple[Tensor, Tensor]:
        eye = torch.eye(self.dim, dtype=self.lower.dtype, device=self.lower.device)
        lower = torch.tril(self.lower, -1) + eye
        upper = torch.triu(self.upper, 1) + torch.diag(torch.exp(self.log_diag))
        return lower, upper

    def weight(self) -> Tensor:
        """The matrix ``P L U`` of the density direction."""
        lower, upper = self._factors()
        return (lower @ upper)[self.permutation]

    def inv_and_ladj(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        z = x @ self.weight().T + self.bias
        # an infinite coordinate times an exact zero of the weight is NaN; it is infinite
        z = torch.where(torch.isnan(z) & ~torch.isnan(x).any(-1, keepdim=True), torch.inf, z)
        return z, self.log_diag.sum().expand(zero_ladj(x, context).shape)

    def inverse_weight(self) -> Tensor:
        """The matrix ``(P L U)^-1 = U^-1 L^-1 P^T`` of the sampling direction, from two
        triangular solves of the identity (``dim x dim``)."""
        lower, upper = self._factors()
        eye = torch.eye(self.dim, dtype=lower.dtype, device=lower.device)
        lower_inv = torch.linalg.solve_triangular(lower, eye, upper=False, unitriangular=True)
        inverse = torch.linalg.solve_triangular(upper, lower_inv, upper=True)
        return inverse[:, self.permutation]

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args, **kwargs) -> None:
        # saves from before the sampling direction used inverse_weight() hold the inverse
        # permutation as a buffer; it follows from the permutation
        state_dict.pop(prefix + "inverse_permutation", None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def call_and_ladj(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        # one product with the inverse matrix, formed once per call, rather than two
        # triangular solves over every row (and the gather and copies they need): 10-D
        # posterior draws, about a tenth of an affine coupling flow's drawing time
        inverse = self.inverse_weight()
        x = F.linear(z, inverse, -(inverse @ self.bias))
        return x, (-self.log_diag.sum()).expand(zero_ladj(z, context).shape)
