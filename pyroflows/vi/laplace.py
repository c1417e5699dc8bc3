"""The Laplace start of :class:`~pyroflows.vi.FlowGuide` (``affine_init="laplace"``): the
guide's last, full-rank affine layer is placed at the MAP of the packed unconstrained latent
vector (L-BFGS from ``init_loc_fn``) with the Cholesky factor of the inverse Hessian there, so
the guide starts as the Laplace approximation and the flow layers work in whitened coordinates.
"""

from __future__ import annotations

import math

import torch
from pyro import poutine
from pyro.distributions.transforms import biject_to
from torch import Tensor

__all__ = ["laplace_factor", "laplace_start", "log_joint", "map_point", "refuse_unsupported"]


def log_joint(guide, latent: Tensor, *args, **kwargs) -> Tensor:
    """``log p(x, z) + log|dz/du|`` of ``guide``'s model at one unconstrained latent vector
    ``u`` (full plates only; no subsampled local latents)."""
    values, log_jac = {}, 0.0
    for site, u in guide._unpack_latent(latent):
        transform = biject_to(site["fn"].support)
        value = transform(u)
        log_jac = log_jac + transform.log_abs_det_jacobian(u, value).sum()
        values[site["name"]] = value
    model = poutine.condition(guide._model_fn, data=values)
    trace = poutine.trace(poutine.block(model, hide_fn=lambda m: False)).get_trace(*args, **kwargs)
    return trace.log_prob_sum() + log_jac


def laplace_start(guide, loc: Tensor, scale_tril: Tensor, *args, **kwargs):
    """``(loc, scale_tril)`` of the Laplace approximation at the MAP found from ``loc``; the
    diagonal of the Hessian where it is not positive definite, ``(loc, scale_tril)`` as given
    where the MAP search ends at a non-finite point.

    Raises:
        NotImplementedError: a model with enumerated discrete sites or subsampled plates.
    """
    refuse_unsupported(guide, "laplace")
    u = map_point(guide, loc, args, kwargs)
    if not bool(torch.isfinite(u).all()):
        return loc, scale_tril
    chol, hessian = laplace_factor(guide, u, args, kwargs)
    if chol is not None:
        return u, chol
    diag = hessian.diagonal()
    scale = torch.where(diag > 0, diag.clamp_min(1e-12).rsqrt(), guide.init_scale)
    return u, torch.diag(scale)


def laplace_factor(guide, u: Tensor, args: tuple, kwargs: dict) -> tuple[Tensor | None, Tensor]:
    """``(chol, hessian)`` at the point ``u``: the Cholesky factor of the inverse Hessian of
    ``-log_joint`` (None where the Hessian is not positive definite) and the Hessian."""
    hessian = torch.autograd.functional.hessian(lambda v: -log_joint(guide, v, *args, **kwargs), u)
    hessian = (hessian + hessian.T) / 2
    precision_chol, info = torch.linalg.cholesky_ex(hessian)
    if int(info) == 0:
        eye = torch.eye(len(u), dtype=u.dtype, device=u.device)
        # Cov = H^-1 = (C C^T)^-1; its Cholesky factor via a solve and a re-factorisation
        cov = torch.cholesky_inverse(precision_chol)
        chol, info = torch.linalg.cholesky_ex((cov + cov.T) / 2 + 1e-10 * eye)
        if int(info) == 0:
            return chol, hessian
    return None, hessian


def refuse_unsupported(guide, mode: str) -> None:
    """Refuse a start by MAP search (``affine_init=mode``) for a model with enumerated sites
    or subsampled plates (the MAP needs the continuous sites only and the whole data)."""
    if guide._enumerated_sites:
        raise NotImplementedError(
            f"affine_init={mode!r} is not available for models with enumerated discrete "
            f"sites ({guide._enumerated_sites}); use affine_init=None"
        )
    if guide._subsampled:
        raise NotImplementedError(
            f"affine_init={mode!r} needs the whole data in one step: the model subsamples "
            f"plate(s) {sorted({p for v in guide._subsampled.values() for _, p in v})}; use "
            "affine_init=None (Pyro refuses a full subsample where subsample_size is set)"
        )


def map_point(guide, loc: Tensor, args, kwargs, tries: int = 6) -> Tensor:
    """The MAP of the unconstrained latent vector by L-BFGS from ``loc`` (``map_steps``
    iterations in all, strong Wolfe line search); NaN where no search ends finite.

    A log density that climbs by tens of orders of magnitude within one step (an ARMA
    recursion ``theta^T``, an exponential link) makes the line search's cubic interpolation
    overflow even where the density is finite, and the step becomes NaN; a step can also land
    where the model raises or its density is not finite (a funnel's neck). Such a search is
    undone: it starts again from the best finite point it reached, with the step length
    divided by 8, at most ``tries`` times."""
    best: list = [loc.detach().clone(), math.inf]  # the lowest finite point seen, its loss
    lr, used = 1.0, 0
    for _ in range(tries):
        u, ended, iterations = _lbfgs(guide, best, lr, guide.map_steps - used, args, kwargs)
        if ended:
            return u
        used += iterations
        if used >= guide.map_steps or not math.isfinite(best[1]):
            break
        lr /= 8
    return torch.full_like(loc, torch.nan)


def _lbfgs(guide, best: list, lr: float, max_iter: int, args, kwargs) -> tuple[Tensor, bool, int]:
    """One L-BFGS search from ``best[0]``: ``(point, ended finite, iterations)``; ``best``
    is updated in place with the lowest finite point it evaluates."""
    u = best[0].clone().requires_grad_()
    optimizer = torch.optim.LBFGS(
        [u], lr=lr, max_iter=max(1, max_iter), line_search_fn="strong_wolfe"
    )

    def closure():
        optimizer.zero_grad()
        loss = -log_joint(guide, u, *args, **kwargs)
        loss.backward()
        value = float(loss.detach())
        if value < best[1] and bool(torch.isfinite(u.grad).all()):
            best[0], best[1] = u.detach().clone(), value
        return loss

    try:
        optimizer.step(closure)
        ended = bool(torch.isfinite(u).all()) and math.isfinite(float(closure().detach()))
    except (ValueError, RuntimeError):  # the search left the model's domain
        ended = False
    return u.detach(), ended, optimizer.state[u].get("n_iter", 0) if u in optimizer.state else 0
