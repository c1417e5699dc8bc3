"""Normalisation layers: BatchNorm (as in MAF) and ActNorm (as in Glow)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pyroflows.transforms.base import FlowTransform, zero_ladj


class BatchNorm(FlowTransform):
    """Batch normalisation as a bijection (Dinh et al., 2017; Papamakarios et al., 2017).

    Density direction: ``z = (x - m) / sqrt(v + eps) * exp(log_gamma) + beta``. In training mode
    ``(m, v)`` are the statistics of the batch being scored (and update the running averages);
    in eval mode they are the running averages. The sampling direction inverts exactly the map
    last used: in training mode the latest batch statistics (running averages before any
    batch), in eval mode the running averages. So ``inverse(forward(x)) == x`` in both modes,
    which Pyro's ``BatchNorm`` does not satisfy in training mode.

    Example:
        >>> bn = BatchNorm(2)
        >>> x = torch.randn(100, 2) * 3 + 1
        >>> z, _ = bn.inv_and_ladj(x)
        >>> torch.allclose(bn.call_and_ladj(z)[0], x, atol=1e-5)
        True
    """

    _transient = FlowTransform._transient + ("_batch_stats",)

    def __init__(self, dim: int, momentum: float = 0.1, eps: float = 1e-5, context_dim: int = 0):
        super().__init__(dim, context_dim)
        self.momentum, self.eps = momentum, eps
        self.log_gamma = nn.Parameter(torch.zeros(dim))
        self.beta = nn.Parameter(torch.zeros(dim))
        self.register_buffer("running_mean", torch.zeros(dim))
        self.register_buffer("running_var", torch.ones(dim))
        self._batch_stats: tuple[Tensor, Tensor] | None = None

    def train(self, mode: bool = True) -> BatchNorm:
        self._batch_stats = None
        return super().train(mode)

    def _stats(self) -> tuple[Tensor, Tensor]:
        if self.training and self._batch_stats is not None:
            return self._batch_stats
        return self.running_mean, self.running_var

    def inv_and_ladj(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        flat = x.reshape(-1, self.dim)
        if self.training and flat.shape[0] > 1:
            mean, var = flat.mean(0), flat.var(0, unbiased=False)
            with torch.no_grad():
                self.running_mean.lerp_(mean.detach(), self.momentum)
                self.running_var.lerp_(var.detach(), self.momentum)
            self._batch_stats = (mean, var)
        mean, var = self._stats()
        z = (x - mean) * torch.rsqrt(var + self.eps) * torch.exp(self.log_gamma) + self.beta
        ladj = (self.log_gamma - 0.5 * torch.log(var + self.eps)).sum()
        return z, ladj.expand(zero_ladj(x, context).shape)

    def call_and_ladj(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        mean, var = self._stats()
        x = (z - self.beta) * torch.exp(-self.log_gamma) * torch.sqrt(var + self.eps) + mean
        ladj = (0.5 * torch.log(var + self.eps) - self.log_gamma).sum()
        return x, ladj.expand(zero_ladj(z, context).shape)


class ActNorm(FlowTransform):
    """Elementwise affine layer ``x = z * exp(log_scale) + loc`` whose parameters are set from
    the first batch scored in training mode so that it comes out with zero mean and unit
    variance (Kingma & Dhariwal, 2018). Whether that happened is a buffer, so a reloaded
    layer is not re-initialised.

    Example:
        >>> an = ActNorm(2)
        >>> z, _ = an.inv_and_ladj(torch.randn(500, 2) * 4 + 3)
        >>> bool((z.mean(0).abs() < 1e-4).all())
        True
    """

    def __init__(self, dim: int, context_dim: int = 0):
        super().__init__(dim, context_dim)
        self.loc = nn.Parameter(torch.zeros(dim))
        self.log_scale = nn.Parameter(torch.zeros(dim))
        self.register_buffer("initialized", torch.tensor(False))

    def inv_and_ladj(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if self.training and not bool(self.initialized):
            flat = x.detach().reshape(-1, self.dim)
            if flat.shape[0] > 1:
                with torch.no_grad():
                    flat = flat[torch.isfinite(flat).all(-1)]  # outliers at inf do not count
                    if len(flat) < 2:
                        raise ValueError("ActNorm needs two finite rows to initialise itself")
                    self.loc.copy_(flat.mean(0))
                    self.log_scale.copy_(flat.std(0).clamp_min(1e-6).log())
                    self.initialized.fill_(True)
        z = (x - self.loc) * torch.exp(-self.log_scale)
        return z, (-self.log_scale.sum()).expand(zero_ladj(x, context).shape)

    def call_and_ladj(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x = z * torch.exp(self.log_scale) + self.loc
        return x, self.log_scale.sum().expand(zero_ladj(z, context).shape)
