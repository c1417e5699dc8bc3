"""Where :class:`~pyroflows.vi.FlowGuide` starts: the Laplace approximation in whitened
coordinates, or the Gaussian ``N(init_loc, init_scale^2 I)``, chosen by their ELBO.

The last layer of the guide is a :class:`~pyroflows.vi.affine.PreconditionedAffine`. A Laplace
start whitens it by the MAP and the Cholesky factor of the inverse Hessian there: the guide
starts as the Laplace approximation and every learnt parameter (the affine layer's and the flow
layers') lives in whitened units, so the optimiser sees a posterior with unit scales and no
correlation whatever the model's parametrisation. ``affine_init="auto"`` estimates the ELBO of
both starts from the same number of draws and keeps the higher: a funnel or a centred
hierarchical model, whose mode lies in a narrow neck away from the mass (or at infinity), gets
the plain start; a regression or GLM, the Laplace one. ``affine_init="multistart"`` first does
what ``"auto"`` does, then searches for further modes (:mod:`~pyroflows.vi.multistart`) and,
where it finds more than one of comparable mass, also estimates the ELBO of a start at the
mixture of their Laplace approximations and keeps it where it is the highest of the three.
"""

from __future__ import annotations

import math

import torch
from pyro import poutine
from pyro.infer.importance import vectorized_importance_weights
from torch import Tensor

from pyroflows.train.seeding import forked_streams
from pyroflows.vi.laplace import laplace_start, refuse_unsupported
from pyroflows.vi.multistart import find_modes, mixture_start

__all__ = ["choose_start", "start_elbo"]


def start_elbo(guide, args: tuple, kwargs: dict, num_samples: int = 256) -> float:
    """Monte Carlo ELBO of ``guide`` as it stands (``num_samples`` vectorised draws where the
    model vectorises, 32 draws one by one otherwise); ``-inf`` where a draw's weight is not
    finite."""
    log_w = None
    with torch.no_grad(), poutine.block():
        if guide._expandable:
            try:
                log_w, _, _ = vectorized_importance_weights(
                    guide._model_fn, guide, *args, num_samples=num_samples,
                    max_plate_nesting=guide._nesting, **kwargs,
                )  # fmt: skip
            except (RuntimeError, ValueError, IndexError):  # a model that does not vectorise
                log_w = None
        if log_w is None:
            log_w = torch.stack([_one_weight(guide, args, kwargs) for _ in range(32)])
    log_w = log_w.reshape(-1)
    return float(log_w.mean()) if bool(torch.isfinite(log_w).all()) else -math.inf


def _one_weight(guide, args, kwargs) -> Tensor:
    guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
    model = poutine.replay(guide._model_fn, trace=guide_trace)
    model_trace = poutine.trace(model).get_trace(*args, **kwargs)
    return model_trace.log_prob_sum() - guide_trace.log_prob_sum()


def choose_start(guide, mode: str | None, args: tuple, kwargs: dict) -> dict[str, object]:
    """Place the guide's last layer for ``mode`` (``None``: the plain start; ``"laplace"``:
    the whitened Laplace start; ``"auto"``: the one of the two with the higher ELBO;
    ``"multistart"``: as ``"auto"``, or the mixture of the modes found where its ELBO is the
    highest) and return what was chosen and, for ``"auto"`` and ``"multistart"``, the ELBO
    of each start (and the modes' weights for ``"multistart"``).

    Raises:
        NotImplementedError: ``"laplace"`` or ``"multistart"`` for a model with enumerated
            sites or subsampled plates.
    """
    if mode is None:
        return {"start": "init"}
    with poutine.block():  # the MAP search and the ELBO draws stay out of outer traces
        return _choose(guide, mode, args, kwargs)


def _choose(guide, mode: str, args: tuple, kwargs: dict) -> dict[str, object]:
    affine = guide.flow.transforms[-1]
    plain = (affine.loc.detach().clone(), affine.scale_tril.detach().clone())
    if mode == "multistart":
        refuse_unsupported(guide, mode)
    if mode == "auto" and (guide._enumerated_sites or guide._subsampled):
        return {"start": "init", "reason": "no Laplace start for this model"}
    loc, scale_tril = laplace_start(guide, *plain, *args, **kwargs)
    if mode == "laplace":
        affine.precondition(loc, scale_tril)
        return {"start": "laplace"}
    elbo = {"init": start_elbo(guide, args, kwargs)}
    if loc is plain[0]:  # the MAP search ended at a non-finite point: no point to search from
        failed = {"start": "init", "elbo": elbo, "reason": "MAP search did not end finite"}
        return failed | ({"modes": []} if mode == "multistart" else {})
    affine.precondition(loc, scale_tril)
    elbo["laplace"] = start_elbo(guide, args, kwargs)
    chosen: dict[str, object] = {"start": "laplace", "elbo": elbo}
    if not elbo["laplace"] > elbo["init"]:
        _undo_laplace(affine, loc, plain)
        chosen["start"] = "init"
    if mode == "multistart":
        _try_mixture(guide, loc, scale_tril, chosen, args, kwargs)
    return chosen


def _undo_laplace(affine, loc: Tensor, plain: tuple[Tensor, Tensor]) -> None:
    affine.precondition(
        torch.zeros_like(loc), torch.eye(len(loc), dtype=loc.dtype, device=loc.device)
    )
    affine.set(*plain)


def _try_mixture(guide, loc: Tensor, scale_tril: Tensor, chosen: dict, args, kwargs) -> None:
    """Search further modes from the Laplace point; where more than one of comparable mass
    is found (or one other than the Laplace point's, which then carries all the mass) and
    the mixture start's ELBO beats the start already chosen, keep the mixture (``chosen``
    updated in place); otherwise leave the guide exactly as it was."""
    modes, weights = find_modes(guide, loc, scale_tril, guide.map_starts, args, kwargs)
    chosen["modes"] = [round(w, 4) for w in weights]
    if len(modes) < 2 and (not modes or modes[0].loc is loc):
        return  # the Laplace mode alone: the start stays exactly as "auto" left it
    flow, affine = guide.flow, guide.flow.transforms[-1]
    base, state = flow.base, {k: v.clone() for k, v in affine.state_dict().items()}
    mixture_start(guide, modes, weights)
    elbo = chosen["elbo"]
    with forked_streams():  # the caller's random stream is the same whichever start is kept
        elbo["mixture"] = start_elbo(guide, args, kwargs)
    if elbo["mixture"] > max(elbo["init"], elbo["laplace"]):
        chosen["start"] = "mixture"
        return
    flow.base = base
    affine.load_state_dict(state)
