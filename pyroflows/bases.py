"""Base distributions of flows, as modules so that their parameters and buffers follow the flow
(``state_dict``, ``.to(device)``, ``.double()``).

Each base computes ``log_prob`` and draws samples directly (the hot path of training), and
builds the equivalent Pyro distribution with :meth:`Base.distribution` when one is needed.
"""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pyroflows.validation import positive_int

_LOG_2PI = math.log(2.0 * math.pi)


def _float_dtype(t: Tensor) -> torch.dtype:
    """The dtype of a base built from ``t``: its own when floating, else the default."""
    return t.dtype if t.is_floating_point() else torch.get_default_dtype()


class Base(nn.Module):
    """A distribution on vectors of size ``dim`` whose parameters live in a module."""

    dim: int
    has_rsample: bool = True

    def log_prob(self, z: Tensor) -> Tensor:
        raise NotImplementedError

    def rsample(self, shape: torch.Size) -> Tensor:
        """Reparametrised draws of shape ``shape + (dim,)``."""
        raise NotImplementedError

    def sample(self, shape: torch.Size) -> Tensor:
        with torch.no_grad():
            return self.rsample(shape)

    def distribution(self, batch_shape: torch.Size = torch.Size()) -> dist.TorchDistribution:
        """The same distribution as a Pyro distribution with the given batch shape."""
        raise NotImplementedError


class StandardNormal(Base):
    """``N(0, I)`` in ``dim`` dimensions.

    Example:
        >>> StandardNormal(2).log_prob(torch.zeros(2))
        tensor(-1.8379)
    """

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.register_buffer("loc", torch.zeros(dim))

    def log_prob(self, z: Tensor) -> Tensor:
        return -0.5 * (z.square().sum(-1) + self.dim * _LOG_2PI)

    def rsample(self, shape: torch.Size) -> Tensor:
        return torch.randn(*shape, self.dim, dtype=self.loc.dtype, device=self.loc.device)

    def distribution(self, batch_shape: torch.Size = torch.Size()) -> dist.TorchDistribution:
        normal = dist.Normal(self.loc, torch.ones_like(self.loc))
        return normal.expand(torch.Size(batch_shape) + (self.dim,)).to_event(1)


class DiagNormal(Base):
    """Gaussian with learnable mean and diagonal scale."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.loc = nn.Parameter(torch.zeros(dim))
        self.log_scale = nn.Parameter(torch.zeros(dim))

    def log_prob(self, z: Tensor) -> Tensor:
        u = (z - self.loc) * torch.exp(-self.log_scale)
        return -0.5 * (u.square().sum(-1) + self.dim * _LOG_2PI) - self.log_scale.sum()

    def rsample(self, shape: torch.Size) -> Tensor:
        eps = torch.randn(*shape, self.dim, dtype=self.loc.dtype, device=self.loc.device)
        return self.loc + eps * torch.exp(self.log_scale)

    def distribution(self, batch_shape: torch.Size = torch.Size()) -> dist.TorchDistribution:
        normal = dist.Normal(self.loc, torch.exp(self.log_scale))
        return normal.expand(torch.Size(batch_shape) + (self.dim,)).to_event(1)


class _Mixture(Base):
    """What the two Gaussian mixtures share: no reparametrised sampler, and draws as a
    component index ``k`` per draw plus that component's noise (:meth:`_shifted`)."""

    logits: Tensor
    loc: Tensor

    def rsample(self, shape: torch.Size) -> Tensor:
        raise NotImplementedError(
            "a Gaussian mixture base has no reparametrised sampler; use sample() or another base"
        )

    def sample(self, shape: torch.Size) -> Tensor:
        with torch.no_grad():
            k = torch.distributions.Categorical(logits=self.logits).sample(torch.Size(shape))
            eps = torch.randn(*shape, self.dim, dtype=self.loc.dtype, device=self.loc.device)
            return self.loc[k] + self._shifted(k, eps)

    def _shifted(self, k: Tensor, eps: Tensor) -> Tensor:
        """Standard normal noise ``eps`` mapped by component ``k``'s scale."""
        raise NotImplementedError


class GaussianMixture(_Mixture):
    """Mixture of ``components`` diagonal Gaussians with learnable weights, means and scales
    (the base of MAF MoG). Not reparametrisable: use ``sample``, not ``rsample``.

    Means start spread with a seeded generator so that components differ.
    """

    has_rsample = False

    def __init__(self, dim: int, components: int = 10, seed: int = 0):
        super().__init__()
        self.dim, self.components = positive_int("dim", dim), positive_int("components", components)
        generator = torch.Generator().manual_seed(seed)
        self.logits = nn.Parameter(torch.zeros(components))
        self.loc = nn.Parameter(torch.randn(components, dim, generator=generator))
        self.log_scale = nn.Parameter(torch.zeros(components, dim))

    @classmethod
    def from_parameters(cls, weights: Tensor, means: Tensor, variances: Tensor) -> GaussianMixture:
        """A mixture with the given weights ``(K,)``, means ``(K, D)`` and diagonal variances
        ``(K, D)``, e.g. those of a fitted ``sklearn.mixture.GaussianMixture(covariance_type=
        "diag")``: a flow with identity layers on this base starts at that fit.

        Example:
            >>> base = GaussianMixture.from_parameters(
            ...     torch.tensor([0.5, 0.5]), torch.tensor([[-2.0], [2.0]]), torch.ones(2, 1)
            ... )
            >>> round(base.log_prob(torch.tensor([[2.0]])).item(), 4)
            -1.6118
        """
        weights, means, variances = (torch.as_tensor(t) for t in (weights, means, variances))
        if means.ndim != 2 or variances.shape != means.shape or weights.shape != means.shape[:1]:
            raise ValueError("expected weights (K,), means (K, D) and variances (K, D)")
        if not (bool((weights > 0).all()) and bool((variances > 0).all())):
            raise ValueError("weights and variances must be positive")
        base = cls(means.shape[1], means.shape[0]).to(_float_dtype(means))
        with torch.no_grad():
            base.logits.copy_(torch.log(weights / weights.sum()))
            base.loc.copy_(means)
            base.log_scale.copy_(0.5 * torch.log(variances))
        return base

    def log_prob(self, z: Tensor) -> Tensor:
        u = (z[..., None, :] - self.loc) * torch.exp(-self.log_scale)
        comp = -0.5 * (u.square().sum(-1) + self.dim * _LOG_2PI) - self.log_scale.sum(-1)
        return torch.logsumexp(comp + F.log_softmax(self.logits, -1), dim=-1)

    def _shifted(self, k: Tensor, eps: Tensor) -> Tensor:
        return eps * torch.exp(self.log_scale[k])

    def distribution(self, batch_shape: torch.Size = torch.Size()) -> dist.TorchDistribution:
        mixture = dist.MixtureSameFamily(
            dist.Categorical(logits=self.logits),
            dist.Normal(self.loc, torch.exp(self.log_scale)).to_event(1),
        )
        return mixture.expand(torch.Size(batch_shape))


class FullGaussianMixture(_Mixture):
    """Mixture of ``components`` Gaussians with full covariances: learnable weights, means and
    Cholesky factors (a lower-triangular matrix per component whose diagonal is stored as its
    log). Not reparametrisable: use ``sample``, not ``rsample``.

    Untrained it is the standard normal in every component (equal weights, zero means,
    identity covariances); :meth:`from_parameters` starts it at a fitted mixture.

    Example:
        >>> base = FullGaussianMixture.from_parameters(
        ...     torch.ones(1), torch.zeros(1, 2), torch.tensor([[[1.0, 0.5], [0.5, 1.0]]])
        ... )
        >>> round(base.log_prob(torch.zeros(2)).item(), 4)  # -log(2 pi) - log(0.75) / 2
        -1.694
    """

    has_rsample = False

    def __init__(self, dim: int, components: int = 1):
        super().__init__()
        self.dim, self.components = dim, components
        self.logits = nn.Parameter(torch.zeros(components))
        self.loc = nn.Parameter(torch.zeros(components, dim))
        self.log_diag = nn.Parameter(torch.zeros(components, dim))
        self.off_diag = nn.Parameter(torch.zeros(components, dim, dim))
        self.register_buffer("_lower", torch.ones(dim, dim).tril(-1), persistent=False)

    @classmethod
    def from_parameters(
        cls, weights: Tensor, means: Tensor, covariances: Tensor
    ) -> FullGaussianMixture:
        """A mixture with the given weights ``(K,)``, means ``(K, D)`` and covariance matrices
        ``(K, D, D)`` (symmetric positive definite), e.g. those of a fitted
        ``sklearn.mixture.GaussianMixture(covariance_type="full")``: a flow with identity
        layers on this base starts at that fit. The parameters take the dtype of ``means``
        (the default dtype for integer means)."""
        weights, means, covariances = (
            torch.as_tensor(t) for t in (weights, means, covariances)
        )  # fmt: skip
        k, d = means.shape if means.ndim == 2 else (None, None)
        if k is None or covariances.shape != (k, d, d) or weights.shape != (k,):
            raise ValueError("expected weights (K,), means (K, D) and covariances (K, D, D)")
        if not bool((weights > 0).all()):
            raise ValueError("weights must be positive")
        factor, info = torch.linalg.cholesky_ex(covariances.double())
        if bool((info != 0).any()):
            raise ValueError(
                f"covariance of component {int((info != 0).nonzero()[0, 0])} is not positive "
                "definite"
            )
        base = cls(d, k).to(_float_dtype(means))
        with torch.no_grad():
            base.logits.copy_(torch.log(weights / weights.sum()))
            base.loc.copy_(means)
            base.log_diag.copy_(torch.log(torch.diagonal(factor, dim1=-2, dim2=-1)))
            base.off_diag.copy_(factor.tril(-1))
        return base

    def scale_tril(self) -> Tensor:
        """The Cholesky factors of the covariances, ``(K, D, D)``."""
        return self.off_diag * self._lower + torch.diag_embed(torch.exp(self.log_diag))

    def log_prob(self, z: Tensor) -> Tensor:
        tril = self.scale_tril()
        diff = (z[..., None, :] - self.loc).unsqueeze(-1)  # (..., K, D, 1)
        u = torch.linalg.solve_triangular(tril.expand(diff.shape[:-2] + tril.shape[-2:]), diff,
                                          upper=False).squeeze(-1)  # fmt: skip
        comp = -0.5 * (u.square().sum(-1) + self.dim * _LOG_2PI) - self.log_diag.sum(-1)
        return torch.logsumexp(comp + F.log_softmax(self.logits, -1), dim=-1)

    def _shifted(self, k: Tensor, eps: Tensor) -> Tensor:
        return (self.scale_tril()[k] @ eps.unsqueeze(-1)).squeeze(-1)

    def distribution(self, batch_shape: torch.Size = torch.Size()) -> dist.TorchDistribution:
        mixture = dist.MixtureSameFamily(
            dist.Categorical(logits=self.logits),
            dist.MultivariateNormal(self.loc, scale_tril=self.scale_tril()),
        )
        return mixture.expand(torch.Size(batch_shape))


class FixedWeightGaussianMixture(Base):
    """Mixture of full-covariance Gaussians with fixed weights (a buffer) and learnable means
    and Cholesky factors: reparametrisable given the weights, so a reverse-KL fit can train it.

    ``rsample`` draws a component index per draw from the fixed weights (no gradient flows
    through that choice, and none needs to: the weights are not learnt) and maps standard
    normal noise by that component's mean and factor, so gradients reach every mean and
    factor; ``log_prob`` is the full mixture density. The multi-mode start of
    :class:`~pyroflows.vi.FlowGuide` (``affine_init="multistart"``) is built on it.

    Args:
        weights: mixture weights ``(K,)``, positive (normalised here).
        means: component means ``(K, D)``.
        scale_trils: lower-triangular Cholesky factors ``(K, D, D)`` with positive diagonals.

    Example:
        >>> base = FixedWeightGaussianMixture(
        ...     torch.tensor([0.25, 0.75]), torch.tensor([[-2.0], [2.0]]), torch.ones(2, 1, 1)
        ... )
        >>> round(base.log_prob(torch.tensor([[2.0]])).item(), 4)  # about log(0.75 N(0; 0, 1))
        -1.2065
        >>> base.rsample((5,)).requires_grad
        True
    """

    def __init__(self, weights: Tensor, means: Tensor, scale_trils: Tensor):
        super().__init__()
        weights, means, scale_trils = (torch.as_tensor(t) for t in (weights, means, scale_trils))
        k, d = means.shape if means.ndim == 2 else (None, None)
        if k is None or weights.shape != (k,) or scale_trils.shape != (k, d, d):
            raise ValueError("expected weights (K,), means (K, D) and scale_trils (K, D, D)")
        diag = torch.diagonal(scale_trils, dim1=-2, dim2=-1)
        if not (bool((weights > 0).all()) and bool((diag > 0).all())):
            raise ValueError("weights and the diagonals of scale_trils must be positive")
        dtype = _float_dtype(means)
        self.dim, self.components = d, k
        self.register_buffer("log_weights", torch.log(weights / weights.sum()).to(dtype))
        self.loc = nn.Parameter(means.detach().clone().to(dtype))
        self.log_diag = nn.Parameter(torch.log(diag).detach().clone().to(dtype))
        self.off_diag = nn.Parameter(scale_trils.tril(-1).detach().clone().to(dtype))

    def scale_tril(self) -> Tensor:
        """The Cholesky factors of the covariances, ``(K, D, D)``."""
        return self.off_diag.tril(-1) + torch.diag_embed(torch.exp(self.log_diag))

    def log_prob(self, z: Tensor) -> Tensor:
        flat = z.reshape(-1, self.dim)
        diff = flat.T[None] - self.loc[:, :, None]  # (K, D, N): one solve per component
        u = torch.linalg.solve_triangular(self.scale_tril(), diff, upper=False)
        comp = -0.5 * (u.square().sum(-2) + self.dim * _LOG_2PI) - self.log_diag.sum(-1)[:, None]
        log_prob = torch.logsumexp(comp + self.log_weights[:, None], dim=0)
        return log_prob.reshape(z.shape[:-1])

    def rsample(self, shape: torch.Size) -> Tensor:
        shape = torch.Size(shape)
        k = torch.multinomial(self.log_weights.exp(), max(1, shape.numel()), replacement=True)
        k = k[: shape.numel()].reshape(shape)
        eps = torch.randn(*shape, self.dim, dtype=self.loc.dtype, device=self.loc.device)
        return self.loc[k] + (self.scale_tril()[k] @ eps.unsqueeze(-1)).squeeze(-1)

    def distribution(self, batch_shape: torch.Size = torch.Size()) -> dist.TorchDistribution:
        mixture = dist.MixtureSameFamily(
            dist.Categorical(logits=self.log_weights),
            dist.MultivariateNormal(self.loc, scale_tril=self.scale_tril()),
        )
        return mixture.expand(torch.Size(batch_shape))


class UniformBox(Base):
    """Uniform distribution on the box ``[low, high]`` (default the unit hypercube); ``-inf``
    log-density outside."""

    def __init__(self, dim: int, low: float | Tensor = 0.0, high: float | Tensor = 1.0):
        super().__init__()
        self.dim = dim = positive_int("dim", dim)
        bounds = {}
        for name, value in (("low", low), ("high", high)):
            value = torch.as_tensor(value, dtype=torch.float32)
            if value.dim() > 1 or value.numel() not in (1, dim):
                raise ValueError(
                    f"{name} must be a number or {dim} numbers, got {tuple(value.shape)}"
                )
            if not bool(torch.isfinite(value).all()):  # an infinite box has no uniform law
                raise ValueError(f"{name} must be finite, got {value.tolist()}")
            bounds[name] = value.expand(dim).clone()
        self.register_buffer("low", bounds["low"])
        self.register_buffer("high", bounds["high"])
        if not bool((self.high > self.low).all()):
            raise ValueError("every upper bound must exceed its lower bound")

    def log_prob(self, z: Tensor) -> Tensor:
        inside = ((z >= self.low) & (z <= self.high)).all(-1)
        log_volume = torch.log(self.high - self.low).sum()
        return torch.where(inside, -log_volume, torch.full_like(log_volume, -math.inf))

    def rsample(self, shape: torch.Size) -> Tensor:
        u = torch.rand(*shape, self.dim, dtype=self.low.dtype, device=self.low.device)
        return self.low + u * (self.high - self.low)

    def distribution(self, batch_shape: torch.Size = torch.Size()) -> dist.TorchDistribution:
        uniform = dist.Uniform(self.low, self.high, validate_args=False)
        return uniform.expand(torch.Size(batch_shape) + (self.dim,)).to_event(1)


def make_base(base: str | Base, dim: int, components: int = 10, seed: int = 0) -> Base:
    """A base from its name: ``"normal"``, ``"diag_normal"``, ``"mog"`` or ``"uniform"``."""
    if isinstance(base, Base):
        if base.dim != dim:
            raise ValueError(f"base has dim {base.dim}, expected {dim}")
        return base
    choices = {
        "normal": lambda: StandardNormal(dim),
        "diag_normal": lambda: DiagNormal(dim),
        "mog": lambda: GaussianMixture(dim, components, seed),
        "uniform": lambda: UniformBox(dim),
    }
    if base not in choices:
        raise ValueError(f"base must be one of {sorted(choices)} or a Base, got {base!r}")
    return choices[base]()
