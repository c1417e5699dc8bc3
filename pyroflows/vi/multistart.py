"""The multi-start start of :class:`~pyroflows.vi.FlowGuide` (``affine_init="multistart"``).

A guide trained by the reverse KL from a start at one mode of a multi-modal posterior stays at
that mode: the ELBO's gradient carries no information about mass it never samples. This
module looks for the other modes before training and, when it finds more than one of
comparable mass, starts the guide as a mixture of their Laplace approximations:

1. **Search.** ``starts`` L-BFGS MAP searches (the same search as the Laplace start) from
   over-dispersed points around the first Laplace approximation ``N(u0, L0 L0^T)``:
   ``u0 + s L0 eps`` with ``eps ~ N(0, I)`` and ``s`` cycling through 2, 4, 8, 16 posterior sds.
   The draws come from a forked random stream: the caller's stream is left as it was.
2. **Modes.** Each optimum is polished by a few Newton steps and counts as a mode where its
   Hessian is positive definite and the Newton decrement is below :data:`DECREMENT`. Modes are
   clustered in decreasing order of log density: one joins a mode already kept where it lies
   within one sd of it (Mahalanobis distance under either Laplace covariance below 1).
3. **Weights.** Each mode's mass is its Laplace evidence ``log p(u_k) + d/2 log 2 pi + log det
   L_k``; modes whose normalised weight is below :data:`MIN_WEIGHT` are dropped.

:func:`mixture_start` then places the guide: its affine layer whitens by the mixture's overall
mean and covariance, and its base becomes a
:class:`~pyroflows.bases.FixedWeightGaussianMixture` of the modes' Laplace Gaussians (in
those whitened coordinates) with the Laplace weights, fixed during training (a reverse-KL
gradient for the weights would need a score-function term); the flow's layers, which start at
the identity, then learn each mode's shape. The means and factors stay learnable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from pyroflows.bases import FixedWeightGaussianMixture
from pyroflows.train.seeding import forked_streams
from pyroflows.vi.laplace import laplace_factor, log_joint, map_point

__all__ = ["DECREMENT", "MIN_WEIGHT", "SCALES", "Mode", "find_modes", "mixture_start", "polish"]

#: modes of a smaller Laplace weight are dropped (not tuned: a mode of 1 % mass or less
#: changes a two-sample test by about that much)
MIN_WEIGHT = 0.01
#: a point is a mode where the Newton decrement ``g^T H^-1 g`` of the log density is below this
#: (about twice the log density still to gain; float32 models reach about 1e-4)
DECREMENT = 1e-2
#: Newton steps that polish each L-BFGS optimum
NEWTON_STEPS = 5
#: spreads of the over-dispersed starts, in sds of the first Laplace approximation, cycled
SCALES = (2.0, 4.0, 8.0, 16.0)


@dataclass
class Mode:
    """One posterior mode in the packed unconstrained space: the MAP ``loc``, the Cholesky
    factor ``scale_tril`` of the Laplace covariance, the log density there and the Laplace
    log evidence (``log_mass``)."""

    loc: Tensor
    scale_tril: Tensor
    log_density: float
    log_mass: float

    def distance(self, u: Tensor) -> float:
        """Mahalanobis distance of ``u`` from this mode under its Laplace covariance."""
        white = torch.linalg.solve_triangular(self.scale_tril, (u - self.loc)[:, None], upper=False)
        return float(white.norm())


def _log_density(guide, u: Tensor, args: tuple, kwargs: dict) -> float:
    """``log_joint`` at ``u`` as a float; ``-inf`` where the model raises there (a draw
    outside a distribution's domain, e.g. a funnel's scale underflowing to 0)."""
    try:
        with torch.no_grad():
            return float(log_joint(guide, u, *args, **kwargs))
    except (ValueError, RuntimeError):
        return -math.inf


def _mode(guide, u: Tensor, scale_tril: Tensor, args: tuple, kwargs: dict) -> Mode | None:
    log_density = _log_density(guide, u, args, kwargs)
    if not math.isfinite(log_density):
        return None
    log_det = float(torch.log(scale_tril.diagonal()).sum())
    log_mass = log_density + 0.5 * len(u) * math.log(2 * math.pi) + log_det
    return Mode(u, scale_tril, log_density, log_mass)


def _log_density_and_grad(guide, u: Tensor, args: tuple, kwargs: dict) -> tuple[float, Tensor]:
    u = u.detach().requires_grad_()
    value = log_joint(guide, u, *args, **kwargs)
    (grad,) = torch.autograd.grad(value, u)
    return float(value.detach()), grad


def polish(guide, u: Tensor, args: tuple, kwargs: dict, steps: int = NEWTON_STEPS) -> Mode | None:
    """Newton steps from an L-BFGS optimum ``u`` (each halved until the log density does not
    fall) until the Newton decrement ``g^T H^-1 g`` is below :data:`DECREMENT`: the mode
    there, or None where the Hessian is not positive definite, a value is not finite, or
    the decrement stays above the bound (a ridge, an unfinished search: not a mode)."""
    for _ in range(steps + 1):
        try:
            value, grad = _log_density_and_grad(guide, u, args, kwargs)
            chol, _ = laplace_factor(guide, u.detach(), args, kwargs)
        except (ValueError, RuntimeError):  # the model raises there
            return None
        if chol is None or not (math.isfinite(value) and bool(torch.isfinite(grad).all())):
            return None
        step = chol @ (chol.T @ grad)  # H^-1 g
        if float(grad @ step) < DECREMENT:
            return _mode(guide, u.detach(), chol, args, kwargs)
        t = 1.0
        while t > 1e-3:
            new = _log_density(guide, u + t * step, args, kwargs)
            if math.isfinite(new) and new >= value:
                break
            t /= 2
        u = (u + t * step).detach()
    return None


def find_modes(
    guide, first: Tensor, first_tril: Tensor, starts: int, args: tuple, kwargs: dict
) -> tuple[list[Mode], list[float]]:
    """The modes of comparable mass found from the first MAP ``first`` (its Laplace factor
    ``first_tril``) and ``starts`` over-dispersed searches, with their normalised Laplace
    weights; the first MAP's mode first where it is kept, then by decreasing mass.

    Every optimum is polished by Newton steps (:func:`polish`) before it is compared with the
    others; the first MAP's mode is returned as ``Mode(first, first_tril, ...)``, unpolished,
    so that a search that finds one mode gives exactly the Laplace start."""
    anchor = polish(guide, first, args, kwargs)
    exact = _mode(guide, first, first_tril, args, kwargs)
    modes = [anchor or exact] if (anchor or exact) is not None else []
    found: list[Mode] = []
    with forked_streams():
        eps = torch.randn(starts, len(first), dtype=first.dtype, device=first.device)
    for j in range(starts):
        u0 = first + SCALES[j % len(SCALES)] * (first_tril @ eps[j])
        u = map_point(guide, u0, args, kwargs)
        mode = polish(guide, u, args, kwargs) if bool(torch.isfinite(u).all()) else None
        if mode is not None:
            found.append(mode)
    for mode in sorted(found, key=lambda m: -m.log_density):
        if all(min(m.distance(mode.loc), mode.distance(m.loc)) >= 1.0 for m in modes):
            modes.append(mode)
    if not modes:
        return [], []
    log_w = torch.log_softmax(torch.tensor([m.log_mass for m in modes], dtype=torch.float64), 0)
    kept = [(m, float(lw.exp())) for m, lw in zip(modes, log_w, strict=True)]
    kept = [(m, w) for m, w in kept if w >= MIN_WEIGHT]
    head = kept[:1] if kept and kept[0][0] is modes[0] else []
    rest = sorted(kept[len(head) :], key=lambda mw: -mw[1])
    total = sum(w for _, w in kept)
    if head and not rest and exact is not None:
        return [exact], [1.0]  # the Laplace start's own mode alone
    return [m for m, _ in head + rest], [w / total for _, w in head + rest]


def mixture_start(guide, modes: list[Mode], weights: list[float]) -> None:
    """Start ``guide`` as the mixture of the modes' Laplace Gaussians with ``weights``: its
    affine layer whitens by the mixture's mean and covariance, its base becomes the mixture
    in those coordinates (the layers in between start at the identity)."""
    flow = guide.flow
    affine = flow.transforms[-1]
    dtype, device = affine.loc.dtype, affine.loc.device
    w = torch.tensor(weights, dtype=dtype, device=device)
    locs = torch.stack([m.loc for m in modes]).to(dtype)
    trils = torch.stack([m.scale_tril for m in modes]).to(dtype)
    mean = w @ locs
    centred = locs - mean
    cov = (w[:, None, None] * (trils @ trils.transpose(-1, -2))).sum(0)
    cov = cov + (w[:, None] * centred).T @ centred
    factor = torch.linalg.cholesky((cov + cov.T) / 2)
    affine.precondition(mean, factor)
    solve = lambda b: torch.linalg.solve_triangular(factor, b, upper=False)  # noqa: E731
    white_locs = solve(centred.T).T
    white_trils = solve(trils)  # P^-1 L_k: lower-triangular, positive diagonal
    flow.base = FixedWeightGaussianMixture(w, white_locs, white_trils).to(device)
