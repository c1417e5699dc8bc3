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

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from pyroflows.builders import nsf, piecewise_linear, realnvp
from pyroflows.flows import Flow
from pyroflows.train import fit
from pyroflows.train.losses import ReverseKL, WeightedKL, by_steps
from pyroflows.transforms import Box
from pyroflows.validation import positive_int
from pyroflows.vi.affine import AffineTril

__all__ = ["WeightedKL", "built_or_given", "fit_to_density", "make_flow"]

LOSSES = ("reverse_kl", "forward_kl", "chi2")


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


def built_or_given(flow: str | Flow, dim: int, domain: str, layers: int, hidden: Sequence[int],
             bins: int, default_bins: int) -> Flow:  # fmt: skip
    """The :class:`Flow` passed as ``flow``, or the one :func:`make_flow` builds from a name;
    sizes other than the defaults beside a passed Flow are refused (they would not apply)."""
    if not isinstance(flow, Flow):
        return make_flow(dim, domain, flow, layers, hidden, bins)
    sizes = (layers, tuple(hidden) if isinstance(hidden, (list, tuple)) else hidden, bins)
    if sizes != (4, (64, 64), default_bins):
        raise ValueError(
            "layers, hidden and bins size a built flow; with a Flow passed they do not apply"
        )
    return flow


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
    steps = positive_int("steps", steps)
    num_samples = positive_int("num_samples", num_samples)
    q = built_or_given(flow, dim, domain, layers, hidden, bins, default_bins=8)
    if q.dim != dim or q.context_dim:
        raise ValueError(f"the flow must be unconditional on {dim} dimensions")
    if loss == "reverse_kl":
        objective = ReverseKL(log_f, num_samples, anneal_steps=anneal_steps, beta0=beta0)
    else:
        power = 1.0 if loss == "forward_kl" else 2.0
        objective = WeightedKL(log_f, num_samples, power, anneal_steps, beta0)
    fit_kwargs.setdefault("patience", None)
    fingerprint = {
        "dim": dim, "loss": loss, "num_samples": num_samples, "anneal_steps": anneal_steps,
        "beta0": beta0, **(fit_kwargs.pop("fingerprint", None) or {}),
    }  # fmt: skip
    q.history = fit(q, objective, None, **by_steps(steps), lr=lr, schedule=schedule,
                    fingerprint=fingerprint, **fit_kwargs)  # fmt: skip
    return q
