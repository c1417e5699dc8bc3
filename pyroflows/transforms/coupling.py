"""Coupling layer: RealNVP, coupling NSF and piecewise-linear coupling from one class."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from pyroflows.nn import MLP
from pyroflows.transforms.base import FlowTransform
from pyroflows.transforms.univariate import Affine, Univariate


def alternating_mask(dim: int, parity: int = 0) -> Tensor:
    """Boolean mask of the features that pass through unchanged: every other feature."""
    return torch.arange(dim) % 2 == parity % 2


def _as_slice(index: Tensor) -> slice | None:
    """``index`` (sorted, distinct) as an equivalent slice, or None if it is not evenly
    spaced."""
    values = index.tolist()
    step = values[1] - values[0] if len(values) > 1 else 1
    if any(b - a != step for a, b in zip(values, values[1:], strict=False)):
        return None
    return slice(values[0], values[-1] + 1, step)


class Coupling(FlowTransform):
    """Coupling layer (Dinh et al., 2017): features under ``mask`` pass through unchanged and,
    with the context, parametrise an elementwise transform of the others. Both directions cost
    one network pass.

    Args:
        dim: number of features (at least 2).
        univariate: the elementwise transform (default affine: RealNVP).
        context_dim: size of the context (0: unconditional).
        hidden: conditioner hidden sizes.
        mask: boolean tensor of shape ``(dim,)``, True for the features that pass through
            (default: the first ``dim // 2``).
        residual: residual conditioner blocks.
        activation: activation module class.
        context_every_layer: feed the context to every hidden layer of the conditioner, not
            only the first (see :class:`~pyroflows.nn.MLP`).

    Example:
        >>> layer = Coupling(4)
        >>> x, ladj = layer.call_and_ladj(torch.randn(7, 4))
        >>> x.shape, ladj.shape
        (torch.Size([7, 4]), torch.Size([7]))
    """

    def __init__(
        self,
        dim: int,
        univariate: Univariate | None = None,
        context_dim: int = 0,
        hidden: Sequence[int] = (64, 64),
        mask: Tensor | None = None,
        residual: bool = False,
        activation: type[nn.Module] = nn.ReLU,
        context_every_layer: bool = False,
    ):
        super().__init__(dim, context_dim)
        if dim < 2:
            raise ValueError("a coupling layer needs dim >= 2; use MaskedAutoregressive for 1-D")
        if mask is None:
            mask = torch.arange(dim) < dim // 2
        mask = torch.as_tensor(mask, dtype=torch.bool)
        if mask.shape != (dim,) or mask.all() or not mask.any():
            raise ValueError("mask must be a boolean vector of length dim with both values")
        self.univariate = univariate if univariate is not None else Affine()
        kept, changed = torch.nonzero(mask)[:, 0], torch.nonzero(~mask)[:, 0]
        self.register_buffer("mask", mask)
        self.register_buffer("kept", kept)
        self.register_buffer("changed", changed)
        # both index sets as slices when they are evenly spaced (the builders' masks: halves
        # or every other feature): views instead of gathers
        self._slices = (_as_slice(kept), _as_slice(changed))
        self.net = MLP(
            len(kept),
            len(changed) * self.univariate.num_params,
            context_dim,
            hidden,
            activation,
            residual,
            context_every_layer=context_every_layer,
        ).zero_output_()

    def _couple(
        self, u: Tensor, context: Tensor | None, inverse: bool, log_det: bool = True
    ) -> tuple[Tensor, Tensor | None]:
        keep, change = self._slices
        keep = self.kept if keep is None else keep
        change = self.changed if change is None else change
        u_kept = u[..., keep]
        params = self.net(u_kept, context).unflatten(-1, (len(self.changed), -1))
        u_changed = u[..., change].expand(params.shape[:-1])
        if log_det:
            v_changed, ladj = self.univariate(u_changed, params, inverse=inverse)
        else:
            v_changed, ladj = self.univariate.value(u_changed, params, inverse=inverse), None
        out = v_changed.new_empty(v_changed.shape[:-1] + (self.dim,))
        out[..., keep] = u_kept  # broadcast over a batch the context may add
        out[..., change] = v_changed
        return out, None if ladj is None else ladj.sum(-1)

    def call_and_ladj(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x, ladj = self._couple(z, context, inverse=False)
        assert ladj is not None
        return x, ladj

    def call(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        return self._couple(z, context, inverse=False, log_det=False)[0]

    def inv_and_ladj(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        z, ladj = self._couple(x, context, inverse=True)
        assert ladj is not None
        return z, ladj

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args, **kwargs) -> None:
        state_dict.pop(prefix + "merge", None)  # a buffer of older versions, derived
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._slices = (_as_slice(self.kept), _as_slice(self.changed))  # the loaded mask's

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, univariate={self.univariate}"
