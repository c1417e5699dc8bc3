"""The Laplace start of :class:`~pyroflows.vi.FlowGuide` (``affine_init="laplace"``): the
guide's last, full-rank affine layer is placed at the MAP of the packed unconstrained latent
vector (L-BFGS from ``init_loc_fn``) with the Cholesky factor of the inverse Hessian there, so
the guide starts as the Laplace approximation and the flow layers work in whitened coordinates.
"""

from __future__ import annotations

import torch
from pyro import poutine
from pyro.distributions.transforms import biject_to
from torch import Tensor

__all__ = ["laplace_start", "log_joint"]


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
    _refuse(guide)
    u = _map_point(guide, loc, args, kwargs)
    if not bool(torch.isfinite(u).all()):
        return loc, scale_tril
    hessian = torch.autograd.functional.hessian(lambda v: -log_joint(guide, v, *args, **kwargs), u)
    hessian = (hessian + hessian.T) / 2
    precision_chol, info = torch.linalg.cholesky_ex(hessian)
    if int(info) == 0:
        eye = torch.eye(len(u), dtype=u.dtype, device=u.device)
        # Cov = H^-1 = (C C^T)^-1; its Cholesky factor via a solve and a re-factorisation
        cov = torch.cholesky_inverse(precision_chol)
        chol, info = torch.linalg.cholesky_ex((cov + cov.T) / 2 + 1e-10 * eye)
        if int(info) == 0:
            return u, chol
    diag = hessian.diagonal()
    scale = torch.where(diag > 0, diag.clamp_min(1e-12).rsqrt(), guide.init_scale)
    return u, torch.diag(scale)


def _refuse(guide) -> None:
    if guide._enumerated_sites:
        raise NotImplementedError(
            "affine_init='laplace' is not available for models with enumerated discrete "
            f"sites ({guide._enumerated_sites}); use affine_init=None"
        )
    if guide._subsampled:
        raise NotImplementedError(
            "affine_init='laplace' needs the whole data in one step: the model subsamples "
            f"plate(s) {sorted({p for v in guide._subsampled.values() for _, p in v})}; use "
            "affine_init=None (Pyro refuses a full subsample where subsample_size is set)"
        )


def _map_point(guide, loc: Tensor, args, kwargs) -> Tensor:
    """The MAP of the unconstrained latent vector by L-BFGS from ``loc`` (``map_steps``
    iterations, strong Wolfe line search); NaN where the search fails (the model raises at a
    point it reached, e.g. a scale that underflowed)."""
    u = loc.detach().clone().requires_grad_()
    optimizer = torch.optim.LBFGS(
        [u], lr=1.0, max_iter=guide.map_steps, line_search_fn="strong_wolfe"
    )

    def closure():
        optimizer.zero_grad()
        loss = -log_joint(guide, u, *args, **kwargs)
        loss.backward()
        return loss

    try:
        optimizer.step(closure)
    except (ValueError, RuntimeError):  # the search left the model's domain (a funnel's neck)
        return torch.full_like(loc, torch.nan)
    return u.detach()
