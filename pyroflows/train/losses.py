"""The objectives the three jobs train with, as small callables for :func:`pyroflows.train.fit`.

Every loss has the signature ``loss(model, batch) -> scalar tensor`` that the training loop
expects. ``batch`` is a tuple of tensors: ``(x,)`` for density estimation, ``(theta, context)``
for conditional / amortized posteriors, and ``()`` for the data-free objectives of variational
inference, which draw their own samples from the model.

* :func:`nll` — negative log-likelihood of data, ``-mean log q(x | context)``, optionally
  weighted per row (``weight=``, the rows' ``sample_weight`` passed by the loop).
* :class:`ReverseKL` — ``E_q[log q(z) - log f(z)]`` for an unnormalised log-density ``log f``
  (the negative ELBO; minimising it gives ``KL(q || p) + const``), with optional annealing of
  ``log f`` (a remedy for mode collapse on multimodal targets).
* :class:`WeightedKL` — self-normalised importance weights ``w ∝ (f / q)^power`` on samples of
  ``q``, robust to zeros of ``f``, annealed like ``ReverseKL``; :class:`ForwardKL` is it with
  ``power=1`` (the gradient of ``KL(p || q)``: mass-covering, needs no samples of ``p``) and
  :class:`Chi2` with ``power=2`` (the variance loss of neural importance sampling).
* :class:`ELBOLoss` — the negative ELBO of a Pyro model and guide (``Trace_ELBO``,
  ``TraceEnum_ELBO`` for enumerated discrete sites, the importance-weighted bound, or any Pyro
  ELBO's ``differentiable_loss``), what :meth:`pyroflows.vi.FlowGuide.fit` trains.
* :func:`check_values` — the one check of what a user's log-density or integrand returned.

The model only has to offer ``log_prob(x, context, check=False)`` (likelihood losses) or
``rsample_and_log_prob(shape)`` (sampling losses), as :class:`pyroflows.Flow` does. The
data-free losses run for a number of steps, not epochs: :func:`by_steps` gives the loop's
settings for that.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import pyro
import torch
from pyro.infer import Trace_ELBO, TraceEnum_ELBO
from pyro.infer.importance import vectorized_importance_weights
from torch import Tensor, nn

from pyroflows.validation import positive_int

LogDensity = Callable[[Tensor], Tensor]

__all__ = [
    "ELBOLoss",
    "Chi2",
    "ForwardKL",
    "ReverseKL",
    "WeightedKL",
    "by_steps",
    "check_values",
    "log_mean_exp",
    "nll",
]


def check_values(
    values: object, points: Tensor, name: str = "log_f", *, log: bool = True
) -> Tensor:
    """Return ``values`` if they are one finite-or-legitimate value per point, else raise.

    Args:
        values: what the user's callable returned for ``points``.
        points: the ``(N, D)`` inputs it was called on.
        name: the callable's name in messages (``"log_f"``, ``"f"``, ``"log_target"``).
        log: the values are log-densities (``-inf`` allowed: zero density) rather than
            densities (``>= 0`` and finite).

    Raises:
        ValueError: not a tensor of shape ``points.shape[:-1]`` (expected and received shapes
            named), NaN (how many of how many, and the first point), ``+inf``, or (``log=False``)
            a negative or infinite value.

    Example:
        >>> z = torch.zeros(3, 2)
        >>> check_values(torch.zeros(3, 1), z)
        Traceback (most recent call last):
        ...
        ValueError: log_f returned shape (3, 1) for points of shape (3, 2); expected shape (3,)...
    """
    expected = tuple(points.shape[:-1])
    if not isinstance(values, Tensor):
        raise ValueError(
            f"{name} must return a tensor of shape {expected}, got {type(values).__name__}"
        )
    if tuple(values.shape) != expected:
        raise ValueError(
            f"{name} returned shape {tuple(values.shape)} for points of shape "
            f"{tuple(points.shape)}; expected shape {expected} (one value per point: reduce the "
            "last axis, e.g. .sum(-1) rather than .sum(-1, keepdim=True))"
        )
    if values.is_complex() or not values.is_floating_point():
        values = values.double() if not values.is_complex() else values
        if values.is_complex():
            raise ValueError(f"{name} returned complex values")
    bad = torch.isnan(values.detach())
    kind = "NaN"
    if not bool(bad.any()):
        bad = values.detach() == math.inf
        kind = "+inf"
        if not log and not bool(bad.any()):
            bad = values.detach() < 0
            kind = "negative values"
    if bool(bad.any()):
        count = int(bad.sum())
        first = int(bad.reshape(-1).nonzero()[0])
        point = points.detach().reshape(-1, points.shape[-1])[first].tolist()
        what = "a log-density" if log else "an integrand (>= 0, finite)"
        raise ValueError(
            f"{name} returned {kind} at {count} of {values.numel()} evaluations (first at "
            f"x = {[round(v, 6) for v in point]}); {name} must be {what}"
            + ("; -inf (zero density) is allowed, NaN and +inf are not" if log else "")
        )
    return values


def nll(model: nn.Module, batch: tuple[Tensor, ...], weight: Tensor | None = None) -> Tensor:
    """Mean negative log-likelihood of a batch ``(x,)`` or ``(x, context)``, or with ``weight``
    (one non-negative number per row) the weighted mean ``mean(weight * -log q(x))``.

    The weighted loss divides by the number of rows, not by the batch's weight sum: the
    training loop passes weights already divided by their mean over all training rows
    (:func:`pyroflows.train.fit` with ``sample_weight``), so the batch loss is an unbiased
    estimate of the weighted mean ``sum w_i nll_i / sum w_i`` over the data and equal to it
    on the full data; integer weights give exactly the loss of duplicated rows. A row of
    weight 0 contributes nothing, even where its log-density is ``-inf``.

    Uses the model's check-free ``log_prob`` (inputs were checked once, before training).

    Example:
        >>> import pyroflows as pf
        >>> flow = pf.maf(2, layers=1, hidden=(8,))
        >>> x = torch.randn(3, 2)
        >>> float(nll(flow, (x,))) > 0
        True
        >>> w = torch.tensor([2.0, 1.0, 0.0])  # row 0 twice, row 2 left out
        >>> duplicated = nll(flow, (x[[0, 0, 1]],))
        >>> bool(torch.isclose(nll(flow, (x,), w / w.mean()), duplicated))
        True
    """
    if not 1 <= len(batch) <= 2:
        raise ValueError(f"nll expects a batch (x,) or (x, context), got {len(batch)} tensors")
    context = batch[1] if len(batch) == 2 else None
    log_q = model.log_prob(batch[0], context, check=False)
    if weight is None:
        return -log_q.mean()
    if weight.shape != log_q.shape:
        raise ValueError(f"nll: weight of shape {tuple(weight.shape)} for {len(log_q)} rows")
    kept = weight > 0
    return -torch.where(kept, weight * torch.where(kept, log_q, 0.0), 0.0).mean()


class _SamplingLoss:
    """Shared parts of the losses that draw ``num_samples`` points from the model: the
    checked target, and the annealing ``f^beta`` (``beta`` rising linearly from ``beta0`` to 1
    over ``anneal_steps`` training calls; its position is saved in training checkpoints)."""

    def __init__(self, log_target: LogDensity, num_samples: int = 256, anneal_steps: int = 0,
                 beta0: float = 0.01):  # fmt: skip
        if not callable(log_target):
            raise TypeError("log_target must be a callable mapping (N, D) points to (N,) values")
        self.log_target = log_target
        self.num_samples = positive_int("num_samples", num_samples)
        self.anneal_steps = int(anneal_steps)
        self.beta0 = float(beta0)
        self.calls = 0

    @property
    def beta(self) -> float:
        """The current inverse temperature of the target."""
        if self.calls >= self.anneal_steps:
            return 1.0
        return self.beta0 + (1.0 - self.beta0) * self.calls / self.anneal_steps

    def state_dict(self) -> dict[str, int]:
        """The annealing position (saved in training checkpoints)."""
        return {"calls": self.calls}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.calls = int(state["calls"])

    def _next_beta(self, model: nn.Module) -> float:
        """The inverse temperature of this call; a training call advances the annealing."""
        beta = self.beta
        if model.training:
            self.calls += 1
        return beta

    def _target(self, z: Tensor) -> Tensor:
        return check_values(self.log_target(z), z, "log_target")


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
        super().__init__(log_target, num_samples, anneal_steps, beta0)
        if anneal_steps < 0:
            raise ValueError(f"anneal_steps must be >= 0, got {anneal_steps}")
        if not 0.0 < beta0 <= 1.0:
            raise ValueError(f"beta0 must lie in (0, 1], got {beta0}")

    def __call__(self, model: nn.Module, batch: tuple[Tensor, ...] = ()) -> Tensor:
        beta = self._next_beta(model)
        z, log_q = model.rsample_and_log_prob((self.num_samples,))
        log_f = self._target(z)
        zero = log_f.detach() == -math.inf
        if bool(zero.any()):
            raise ValueError(
                f"log_target returned -inf at {int(zero.sum())} of {len(log_f)} draws; reverse KL "
                "needs log_target finite wherever the flow puts mass; use loss='forward_kl' "
                "(mass-covering, zero density allowed) or a flow on the target's support"
            )
        return (log_q - beta * log_f).mean()


class WeightedKL(_SamplingLoss):
    """Forward KL (``power=1``) or chi-square (``power=2``) through self-normalised importance
    weights ``w ∝ (f / q)^power`` on draws of the model, the one implementation behind
    :class:`ForwardKL`, :class:`Chi2` and :func:`pyroflows.vi.fit_to_density`.

    Draws ``z ~ q`` without gradients and returns the surrogate ``-sum_i w_i log q(z_i)``:
    with ``power=1`` its gradient is the self-normalised estimate of ``∇ KL(p || q)`` (its
    value estimates the cross-entropy ``H(p, q)``; mass-covering, it punishes ``q`` for modes
    of ``p`` its draws reach and it misses); with ``power=2`` it is proportional to that of
    the Pearson chi-square divergence, i.e. of the variance of the importance-sampling
    estimate of ``∫ f`` (neural importance sampling, Müller et al. 2019). Robust to draws
    where ``log f`` or ``log q`` is not finite (points on the edge of a box, zeros of ``f``):
    those rows get zero weight.

    ``anneal_steps > 0`` tempers the target as ``f^beta``, ``beta`` rising linearly from
    ``beta0`` to 1 over that many training calls: the early, broad target is seen by many
    draws, so narrow modes far apart are all found before they sharpen (without it, a proposal
    started far from every mode locks onto the first one its draws hit).

    Example:
        >>> import pyroflows as pf
        >>> loss = WeightedKL(lambda z: -0.5 * (z**2).sum(-1), 64, power=2)
        >>> loss(pf.realnvp(2, layers=1, hidden=(8,)), ()).shape
        torch.Size([])
    """

    def __init__(self, log_target: LogDensity, num_samples: int = 256, power: float = 1.0,
                 anneal_steps: int = 0, beta0: float = 0.05):  # fmt: skip
        super().__init__(log_target, num_samples, anneal_steps, beta0)
        if anneal_steps < 0 or not 0 < beta0 <= 1:
            raise ValueError(f"anneal_steps must be >= 0 and beta0 in (0, 1], got "
                             f"{anneal_steps!r}, {beta0!r}")  # fmt: skip
        self.power = power

    def __call__(self, model: nn.Module, batch: tuple[Tensor, ...] = ()) -> Tensor:
        beta = self._next_beta(model)
        with torch.no_grad():
            z, log_q_draw = model.rsample_and_log_prob((self.num_samples,))
            log_w = beta * self._target(z) - log_q_draw
        log_q = model.log_prob(z, check=False)
        ok = torch.isfinite(log_w) & torch.isfinite(log_q)
        log_w = torch.where(ok, log_w, torch.full_like(log_w, -torch.inf))
        if not bool(ok.any()):
            return (log_q * 0).nan_to_num().sum()
        weights = torch.softmax(self.power * log_w, dim=0)
        return -(weights * torch.where(ok, log_q, torch.zeros_like(log_q))).sum()


class ForwardKL(WeightedKL):
    """Forward KL ``KL(p || q)`` through self-normalised importance weights ``w ∝ f / q``
    (:class:`WeightedKL` with ``power=1``): mass-covering, needs no samples of ``p``.

    Example:
        >>> import pyroflows as pf
        >>> flow = pf.maf(2, layers=1, hidden=(8,))
        >>> ForwardKL(lambda z: -0.5 * (z**2).sum(-1), 64)(flow, ()).shape
        torch.Size([])
    """

    def __init__(self, log_target: LogDensity, num_samples: int = 256, anneal_steps: int = 0,
                 beta0: float = 0.05):  # fmt: skip
        super().__init__(log_target, num_samples, 1.0, anneal_steps, beta0)


class Chi2(WeightedKL):
    """Chi-square (variance) loss of neural importance sampling (Müller et al., 2019):
    :class:`WeightedKL` with weights ``∝ (f / q)^2``, whose gradient is proportional to that
    of the Pearson chi-square divergence ``D_χ²(p || q)``, i.e. of the variance of the
    importance-sampling estimate of ``∫ f``.
    """

    def __init__(self, log_target: LogDensity, num_samples: int = 256, anneal_steps: int = 0,
                 beta0: float = 0.05):  # fmt: skip
        super().__init__(log_target, num_samples, 2.0, anneal_steps, beta0)


def log_mean_exp(x: Tensor, dim: int = 0) -> Tensor:
    """``log(mean(exp(x)))`` along ``dim``, computed stably.

    Example:
        >>> round(float(log_mean_exp(torch.log(torch.tensor([1.0, 3.0])))), 6)  # log 2
        0.693147
    """
    return torch.logsumexp(x, dim) - math.log(x.shape[dim])


def by_steps(steps: int) -> dict[str, int]:
    """The settings of :func:`pyroflows.train.fit` that run a data-free loss for exactly
    ``steps`` optimiser steps: epochs of at most 100 steps (what the history records and a
    checkpoint is written after), the last one cut short.

    Example:
        >>> by_steps(250)
        {'steps_per_epoch': 100, 'max_epochs': 3, 'max_steps': 250}
    """
    per_epoch = min(steps, 100)
    return {"steps_per_epoch": per_epoch, "max_epochs": math.ceil(steps / per_epoch),
            "max_steps": steps}  # fmt: skip


class ELBOLoss:
    """The negative ELBO of a Pyro ``model`` and ``guide``, as a loss for the training loop.

    ``loss(trained, batch)`` ignores both arguments (the guide draws its own samples; the
    trained module holds the guide's and the model's parameters) and returns
    ``elbo.differentiable_loss(model, guide, *args, **kwargs)``, or with
    ``objective="iwae"`` the importance-weighted bound ``-log mean_k p(x, z_k) / q(z_k)`` over
    ``num_particles`` vectorised draws (what ``RenyiELBO(alpha=0)`` computes).

    Args:
        model, guide: the Pyro model and guide (an ``nn.Module``).
        args, kwargs: the model's arguments.
        objective: ``"elbo"`` or ``"iwae"``.
        elbo: any Pyro ELBO with a ``differentiable_loss`` instead of the default one.
        num_particles: particles per step.
        vectorize_particles: draw the particles in one vectorised pass.
        enumerate: the model has enumerated discrete sites (``TraceEnum_ELBO``).
        max_plate_nesting: the model's plate nesting (for ``TraceEnum_ELBO`` and IWAE).

    Example:
        >>> import pyro.distributions as dist
        >>> from pyro.infer.autoguide import AutoNormal
        >>> def model():
        ...     pyro.sample("z", dist.Normal(0.0, 1.0))
        >>> guide = AutoNormal(model)
        >>> ELBOLoss(model, guide, objective="iwae", num_particles=4)(guide, ()).shape
        torch.Size([])
    """

    def __init__(
        self,
        model: Callable,
        guide: Callable,
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        objective: str = "elbo",
        elbo: pyro.infer.ELBO | None = None,
        num_particles: int = 1,
        vectorize_particles: bool = False,
        enumerate: bool = False,
        max_plate_nesting: int = 0,
    ):
        if objective not in ("elbo", "iwae"):
            raise ValueError(f"objective must be 'elbo' or 'iwae', got {objective!r}")
        if elbo is None and objective == "elbo":
            if enumerate:
                elbo = TraceEnum_ELBO(
                    num_particles=num_particles, vectorize_particles=vectorize_particles,
                    max_plate_nesting=max_plate_nesting,
                )  # fmt: skip
            else:
                elbo = Trace_ELBO(
                    num_particles=num_particles, vectorize_particles=vectorize_particles
                )
        self.model, self.guide = model, guide
        self.args, self.kwargs = tuple(args), dict(kwargs or {})
        self.objective, self.elbo, self.num_particles = objective, elbo, num_particles
        self.max_plate_nesting = max_plate_nesting

    def __repr__(self) -> str:
        # what a checkpoint records of the objective
        return repr((self.objective, self.num_particles, type(self.elbo).__name__))

    def resuming(self) -> None:
        """Fix the plate nesting a new ELBO would guess at its first step. It guesses by
        drawing from the guide: the run that wrote a checkpoint did so at its step 0, so a
        resumed run must not do it again (an extra draw would shift the restored random stream
        and the resumed run would not be bit-identical). The nesting is the model's, what
        Pyro guesses (plus the particles' plate, as Pyro adds it)."""
        if getattr(self.elbo, "max_plate_nesting", None) == math.inf:
            particles = bool(getattr(self.elbo, "vectorize_particles", False))
            particles = particles and getattr(self.elbo, "num_particles", 1) > 1
            self.elbo.max_plate_nesting = self.max_plate_nesting + particles

    def __call__(self, trained: nn.Module, batch: tuple[Tensor, ...] = ()) -> Tensor:
        if self.elbo is not None:
            return self.elbo.differentiable_loss(self.model, self.guide, *self.args, **self.kwargs)
        log_w, _, _ = vectorized_importance_weights(
            self.model, self.guide, *self.args, num_samples=self.num_particles,
            max_plate_nesting=self.max_plate_nesting, **self.kwargs,
        )  # fmt: skip
        return -log_mean_exp(log_w)

    def trained_module(self, trace: Any) -> nn.Module:
        """What the loop trains: the guide, with the model's own parameters (its
        ``pyro.param`` / ``pyro.module`` sites in ``trace``) beside it as in SVI."""
        params = model_parameters(trace, exclude=self.guide.parameters())
        return _GuideAndModel(self.guide, params) if params else self.guide


def model_parameters(trace: Any, exclude: Any = ()) -> dict[str, nn.Parameter]:
    """The unconstrained tensors of a model's ``pyro.param`` / ``pyro.module`` sites in the
    param store (those in ``trace`` that require gradients, less the ``exclude`` tensors), as
    ``nn.Parameter`` objects the store keeps using (a plain leaf tensor is swapped for a
    Parameter holding the same values)."""
    store = pyro.get_param_store()
    own = {id(p) for p in exclude}
    result = {}
    for name, site in trace.nodes.items():
        if site["type"] != "param" or name not in store._params:
            continue
        value = store._params[name]
        if id(value) in own or not value.requires_grad:
            continue
        if not isinstance(value, nn.Parameter):
            parameter = nn.Parameter(value.detach())
            store._params[name] = parameter
            store._param_to_name.pop(value, None)
            store._param_to_name[parameter] = name
            value = parameter
        result[name] = value
    return result


class _GuideAndModel(nn.Module):
    """What :class:`ELBOLoss` trains when the model has parameters: the guide and the model's
    parameters (the param store's own tensors), in one module for the loop."""

    def __init__(self, guide: nn.Module, params: dict[str, nn.Parameter]):
        super().__init__()
        self.guide = guide
        self.names = sorted(params)
        self.model_params = nn.ParameterList([params[n] for n in self.names])
