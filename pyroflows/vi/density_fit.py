"""``fit_to_density``: train a flow ``q`` to an unnormalized log-density ``log f`` without
samples of ``f``, on ``R^D`` (normal base) or on the unit hypercube (for integration).

Losses (all draw their own points from ``q``):

* ``"reverse_kl"`` — ``E_q[log q - log f]``, mode-seeking; ``anneal_steps`` flattens the target
  early on (``f^beta``, ``beta`` from ``beta0`` to 1), a remedy for dropped modes;
* ``"forward_kl"`` — ``KL(p || q)`` with self-normalised importance weights, mass-covering;
* ``"chi2"`` — the variance loss of neural importance sampling (Müller et al. 2019): minimises
  the variance of ``f / q``, what an importance-sampling estimate of ``∫ f`` needs.

Flows default to coupling splines (one pass per layer in both directions, which the weighted
losses need); on the unit cube an NSF coupling flow is followed by a sigmoid
(:class:`~pyroflows.transforms.Box`) or ``flow="piecewise_linear"`` uses a uniform base with
piecewise-linear couplings as in Müller et al.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from pyroflows.builders import _positive_int, nsf, piecewise_linear, realnvp
from pyroflows.flows import Flow
from pyroflows.losses import ReverseKL, check_values
from pyroflows.train import fit
from pyroflows.transforms import Box
from pyroflows.vi.affine import AffineTril

__all__ = ["WeightedKL", "fit_to_density", "make_flow"]

LOSSES = ("reverse_kl", "forward_kl", "chi2")


class WeightedKL:
    """Forward KL (``power=1``) or chi-square (``power=2``) loss with self-normalised weights
    ``∝ (f / q)^power``, robust to draws where ``log f`` or ``log q`` is not finite (points on
    the edge of a box, zeros of ``f``): those rows get zero weight.

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

    def __init__(self, log_target: Callable[[Tensor], Tensor], num_samples: int = 256,
                 power: float = 1.0, anneal_steps: int = 0, beta0: float = 0.05):  # fmt: skip
        if not callable(log_target):
            raise TypeError("log_target must be a callable mapping (N, D) points to (N,) values")
        if isinstance(num_samples, bool) or int(num_samples) != num_samples or num_samples < 1:
            raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
        if anneal_steps < 0 or not 0 < beta0 <= 1:
            raise ValueError(f"anneal_steps must be >= 0 and beta0 in (0, 1], got "
                             f"{anneal_steps!r}, {beta0!r}")  # fmt: skip
        self.log_target, self.num_samples, self.power = log_target, int(num_samples), power
        self.anneal_steps, self.beta0, self.calls = int(anneal_steps), float(beta0), 0

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

    def __call__(self, model: nn.Module, batch: tuple[Tensor, ...] = ()) -> Tensor:
        beta = self.beta
        if model.training:
            self.calls += 1
        with torch.no_grad():
            z, log_q_draw = model.rsample_and_log_prob((self.num_samples,))
            log_w = beta * check_values(self.log_target(z), z, "log_target") - log_q_draw
        log_q = model.log_prob(z, check=False)
        ok = torch.isfinite(log_w) & torch.isfinite(log_q)
        log_w = torch.where(ok, log_w, torch.full_like(log_w, -torch.inf))
        if not bool(ok.any()):
            return (log_q * 0).nan_to_num().sum()
        weights = torch.softmax(self.power * log_w, dim=0)
        return -(weights * torch.where(ok, log_q, torch.zeros_like(log_q))).sum()


def make_flow(
    dim: int,
    domain: str = "real",
    flow: str = "nsf",
    layers: int = 4,
    hidden: Sequence[int] = (64, 64),
    bins: int = 8,
) -> Flow:
    """The default proposal flows: coupling NSF / RealNVP on ``R^D``; on the unit cube an NSF
    coupling flow followed by a sigmoid, or a piecewise-linear coupling flow (uniform base).

    On ``R^D`` the last layer is a learnable full-rank affine map (:class:`AffineTril`, starting
    at the identity): spline layers map ``[-bound, bound]`` onto itself, so without it a spline
    flow on a normal base could not put mass beyond ``±bound`` (a target with mass at
    ``|x| > 5`` got a confidently wrong ``log Z``); the affine layer moves and scales the
    region the splines work in.

    Example:
        >>> q = make_flow(3, "unit", layers=2, hidden=(8,))
        >>> x = q.sample((100,))
        >>> bool(((x >= 0) & (x <= 1)).all())
        True
    """
    if domain not in ("real", "unit"):
        raise ValueError(f"domain must be 'real' or 'unit', got {domain!r}")
    coupling = dim >= 2
    if flow == "piecewise_linear":
        if domain != "unit":
            raise ValueError("piecewise_linear flows live on the unit cube (domain='unit')")
        return piecewise_linear(dim, layers=layers, hidden=hidden, bins=bins, coupling=coupling)
    if flow == "realnvp":
        q = realnvp(dim, layers=layers, hidden=hidden)
    elif flow == "nsf":
        # spline bound 4 covers sigmoid(±4) = [0.018, 0.982] of the cube; identity tails beyond
        q = nsf(dim, layers=layers, hidden=hidden, bins=bins, coupling=coupling,
                **({} if coupling else {"inverse": True}))  # fmt: skip
    else:
        raise ValueError(f"flow must be 'nsf', 'realnvp' or 'piecewise_linear', got {flow!r}")
    if domain == "unit":
        # N(0, 1) pushed through a sigmoid is peaked in the middle; start near uniform instead
        box = Box(torch.zeros(dim), torch.ones(dim))
        return Flow([*q.transforms, _scale(dim, 1.7), box], q.base)
    return Flow([*q.transforms, AffineTril(torch.zeros(dim), torch.eye(dim))], q.base)


def _scale(dim: int, s: float):
    from pyroflows.transforms import ElementwiseAffine

    return ElementwiseAffine(torch.zeros(dim), torch.full((dim,), s))


def fit_to_density(
    log_f: Callable[[Tensor], Tensor],
    dim: int,
    *,
    loss: str = "reverse_kl",
    domain: str = "real",
    flow: str | Flow = "nsf",
    layers: int = 4,
    hidden: Sequence[int] = (64, 64),
    bins: int = 8,
    steps: int = 2000,
    num_samples: int = 256,
    lr: float = 1e-3,
    anneal_steps: int = 0,
    beta0: float = 0.05,
    schedule: str | None = "cosine",
    **fit_kwargs,
) -> Flow:
    """Fit a flow to the unnormalized density ``exp(log_f)``.

    Args:
        log_f: ``(N, dim) -> (N,)`` log-density up to a constant, in the flow's dtype
            (differentiable for ``"reverse_kl"``).
        dim: dimension.
        loss: ``"reverse_kl"``, ``"forward_kl"`` or ``"chi2"``.
        domain: ``"real"`` (``R^D``) or ``"unit"`` (``[0, 1]^D``).
        flow: ``"nsf"``, ``"realnvp"``, ``"piecewise_linear"`` (unit cube) or a :class:`Flow`.
        layers, hidden, bins: size of a built flow.
        steps: optimiser steps, each with ``num_samples`` fresh draws.
        lr: Adam learning rate.
        anneal_steps, beta0: annealing of the target ``f^beta`` from ``beta0`` to 1 over
            ``anneal_steps`` steps (a remedy for dropped modes; all three losses).
        schedule: learning-rate schedule of :func:`pyroflows.train.fit`.
        **fit_kwargs: passed to :func:`pyroflows.train.fit` (``seed``, ``time_budget``...).

    Returns:
        The trained flow (in eval mode), with the training :class:`History` as ``.history``.

    Example:
        >>> q = fit_to_density(lambda z: -0.5 * ((z - 2) ** 2).sum(-1), 2, steps=200,
        ...                    layers=2, hidden=(16,), lr=1e-2, progress=False, seed=0)
        >>> bool((q.sample((2000,)).mean(0) - 2).abs().max() < 0.2)
        True
    """
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    if not callable(log_f):
        raise TypeError("log_f must be a callable mapping (N, dim) points to (N,) values")
    steps = _positive_int("steps", steps)
    num_samples = _positive_int("num_samples", num_samples)
    if isinstance(flow, Flow) and (
        layers,
        tuple(hidden) if isinstance(hidden, (list, tuple)) else hidden,
        bins,
    ) != (4, (64, 64), 8):
        raise ValueError(
            "layers, hidden and bins size a built flow; with a Flow passed they do not apply"
        )
    q = flow if isinstance(flow, Flow) else make_flow(dim, domain, flow, layers, hidden, bins)
    if q.dim != dim or q.context_dim:
        raise ValueError(f"the flow must be unconditional on {dim} dimensions")
    if loss == "reverse_kl":
        objective = ReverseKL(log_f, num_samples, anneal_steps=anneal_steps, beta0=beta0)
    else:
        power = 1.0 if loss == "forward_kl" else 2.0
        objective = WeightedKL(log_f, num_samples, power, anneal_steps, beta0)
    per_epoch = min(steps, 100)
    fit_kwargs.setdefault("patience", None)
    fingerprint = {
        "dim": dim, "loss": loss, "num_samples": num_samples, "anneal_steps": anneal_steps,
        "beta0": beta0, **(fit_kwargs.pop("fingerprint", None) or {}),
    }  # fmt: skip
    q.history = fit(
        q, objective, None, steps_per_epoch=per_epoch, max_epochs=math.ceil(steps / per_epoch),
        max_steps=steps, lr=lr, schedule=schedule, fingerprint=fingerprint, **fit_kwargs,
    )  # fmt: skip
    return q
