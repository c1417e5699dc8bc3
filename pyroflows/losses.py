"""The objectives the three jobs train with, as small callables for :func:`pyroflows.train.fit`.

Every loss has the signature ``loss(model, batch) -> scalar tensor`` that the training loop
expects. ``batch`` is a tuple of tensors: ``(x,)`` for density estimation, ``(theta, context)``
for conditional / amortized posteriors, and ``()`` for the data-free objectives of variational
inference, which draw their own samples from the model.

* :func:`nll` — negative log-likelihood of data, ``-mean log q(x | context)``.
* :class:`ReverseKL` — ``E_q[log q(z) - log f(z)]`` for an unnormalised log-density ``log f``
  (the negative ELBO; minimising it gives ``KL(q || p) + const``), with optional annealing of
  ``log f`` (a remedy for mode collapse on multimodal targets).
* :class:`ForwardKL` — the gradient of ``KL(p || q)`` estimated with self-normalised importance
  weights ``w ∝ f / q`` on samples of ``q`` (mass-covering, needs no samples of ``p``).
* :class:`Chi2` — the variance (chi-square) loss of neural importance sampling: weights
  ``∝ (f / q)^2``; it minimises the variance of the importance-sampling estimate.

The model only has to offer ``log_prob(x, context, check=False)`` (likelihood losses) or
``rsample_and_log_prob(shape)`` (sampling losses), as :class:`pyroflows.Flow` does.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

LogDensity = Callable[[Tensor], Tensor]

__all__ = ["Chi2", "ForwardKL", "ReverseKL", "log_mean_exp", "nll"]


def nll(model: nn.Module, batch: tuple[Tensor, ...]) -> Tensor:
    """Mean negative log-likelihood of a batch ``(x,)`` or ``(x, context)``.

    Uses the model's check-free ``log_prob`` (inputs were checked once, before training).

    Example:
        >>> import pyroflows as pf
        >>> flow = pf.maf(2, layers=1, hidden=(8,))
        >>> float(nll(flow, (torch.zeros(4, 2),))) > 0
        True
    """
    if not 1 <= len(batch) <= 2:
        raise ValueError(f"nll expects a batch (x,) or (x, context), got {len(batch)} tensors")
    context = batch[1] if len(batch) == 2 else None
    return -model.log_prob(batch[0], context, check=False).mean()


class _SamplingLoss:
    """Shared parts of the losses that draw ``num_samples`` points from the model."""

    def __init__(self, log_target: LogDensity, num_samples: int = 256):
        if not callable(log_target):
            raise TypeError("log_target must be a callable mapping (N, D) points to (N,) values")
        if int(num_samples) != num_samples or num_samples < 1:
            raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
        self.log_target = log_target
        self.num_samples = int(num_samples)

    def _target(self, z: Tensor) -> Tensor:
        log_f = self.log_target(z)
        if log_f.shape != z.shape[:-1]:
            raise ValueError(
                f"log_target returned shape {tuple(log_f.shape)} for points of shape "
                f"{tuple(z.shape)}; expected {tuple(z.shape[:-1])}"
            )
        return log_f


class ReverseKL(_SamplingLoss):
    """Reverse KL ``E_q[log q(z) - beta * log f(z)]`` from reparametrised draws of the model.

    With a normalised ``log f`` this is ``KL(q || p)``; otherwise ``KL(q || p) - log Z`` (the
    negative ELBO). ``anneal_steps > 0`` raises the inverse temperature ``beta`` linearly from
    ``beta0`` to 1 over that many calls, so early training sees a flattened target whose modes
    overlap (fewer modes are dropped); after that the loss is the plain reverse KL.

    Args:
        log_target: unnormalised log-density, ``(N, D) -> (N,)``, differentiable.
        num_samples: draws per step.
        anneal_steps: length of the annealing (0: none).
        beta0: the first inverse temperature.

    Example:
        >>> import pyroflows as pf
        >>> flow = pf.maf(2, layers=1, hidden=(8,))
        >>> loss = ReverseKL(lambda z: -0.5 * (z**2).sum(-1), num_samples=64)
        >>> loss(flow, ()).shape
        torch.Size([])
    """

    def __init__(
        self,
        log_target: LogDensity,
        num_samples: int = 256,
        anneal_steps: int = 0,
        beta0: float = 0.01,
    ):
        super().__init__(log_target, num_samples)
        if anneal_steps < 0:
            raise ValueError(f"anneal_steps must be >= 0, got {anneal_steps}")
        if not 0.0 < beta0 <= 1.0:
            raise ValueError(f"beta0 must lie in (0, 1], got {beta0}")
        self.anneal_steps = int(anneal_steps)
        self.beta0 = float(beta0)
        self.calls = 0

    @property
    def beta(self) -> float:
        """The current inverse temperature."""
        if self.calls >= self.anneal_steps:
            return 1.0
        return self.beta0 + (1.0 - self.beta0) * self.calls / self.anneal_steps

    def state_dict(self) -> dict[str, int]:
        """The annealing position (saved in training checkpoints)."""
        return {"calls": self.calls}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.calls = int(state["calls"])

    def __call__(self, model: nn.Module, batch: tuple[Tensor, ...] = ()) -> Tensor:
        beta = self.beta
        if model.training:
            self.calls += 1
        z, log_q = model.rsample_and_log_prob((self.num_samples,))
        return (log_q - beta * self._target(z)).mean()


class ForwardKL(_SamplingLoss):
    """Forward KL ``KL(p || q)`` through self-normalised importance weights.

    Draws ``z ~ q`` without gradients, weights ``w = softmax(log f(z) - log q(z))`` and returns
    the surrogate ``-sum_i w_i log q(z_i)``, whose gradient is the self-normalised estimate of
    ``∇ KL(p || q)``; its value estimates the cross-entropy ``H(p, q) = KL(p || q) + H(p)``.
    Mass-covering: it punishes ``q`` for missing modes of ``p`` that its draws reach.

    Example:
        >>> import pyroflows as pf
        >>> flow = pf.maf(2, layers=1, hidden=(8,))
        >>> ForwardKL(lambda z: -0.5 * (z**2).sum(-1), 64)(flow, ()).shape
        torch.Size([])
    """

    power = 1.0

    def __call__(self, model: nn.Module, batch: tuple[Tensor, ...] = ()) -> Tensor:
        with torch.no_grad():
            z, log_q_fixed = model.rsample_and_log_prob((self.num_samples,))
            log_w = self._target(z) - log_q_fixed
            weights = torch.softmax(self.power * log_w, dim=0)
        log_q = model.log_prob(z, check=False)
        return -(weights * log_q).sum()


class Chi2(ForwardKL):
    """Chi-square (variance) loss of neural importance sampling (Müller et al., 2019).

    Same as :class:`ForwardKL` with weights ``∝ (f / q)^2``: its gradient is proportional to
    that of the Pearson chi-square divergence ``D_χ²(p || q)``, i.e. of the variance of the
    importance-sampling estimate of ``∫ f``.
    """

    power = 2.0


def log_mean_exp(x: Tensor, dim: int = 0) -> Tensor:
    """``log(mean(exp(x)))`` along ``dim``, computed stably.

    Example:
        >>> round(float(log_mean_exp(torch.log(torch.tensor([1.0, 3.0])))), 6)  # log 2
        0.693147
    """
    return torch.logsumexp(x, dim) - math.log(x.shape[dim])
