"""Ensembles of amortized posteriors: ``AmortizedPosterior(..., ensemble=k)``.

The ensemble is the equal-weight mixture of ``k`` member posteriors, each an ordinary
:class:`~pyroflows.amortized.posterior.AmortizedPosterior` (``post.members``), trained on the
same simulations with its own seed: member ``i`` trains with ``seed + i`` (``seed`` the fit's,
0 by default), which gives it its own validation split, batch order and initial flow. On
the first fit every member's summary network (a copy of the one passed) is also drawn again
(:func:`redrawn`: its layers' ``reset_parameters``, from a stream of ``seed + i``), so the
members start apart in both networks and a fit with the same seed starts them the same way.

* :func:`sample_mixture`: each draw picks a member uniformly (the same pick for every
  observation of a batch), so the draws of one observation are i.i.d. from the mixture;
* :func:`log_prob_mixture`: ``log mean_i p_i(theta | x)`` (log-sum-exp);
* :func:`fit_ensemble`: the call is checked once, the simulations drawn once (under the fit's
  seed, as a single posterior draws them), then the members are trained one after the other,
  all or nothing; a ``checkpoint`` / ``resume`` path gets one file per member
  (``run.ckpt`` -> ``run.member0.ckpt``, ...) and a ``time_budget`` is shared out equally.

A mixture of members that disagree is wider than each of them: the spread between fits adds
to each member's own width, which is what makes ensembles of neural posteriors more
conservative (benchmarks/ensemble_posterior.py measures C2ST and coverage against one member).
"""

from __future__ import annotations

import copy
import math
from contextlib import ExitStack
from typing import Any

import torch
from torch import Tensor, nn

from pyroflows.amortized.call import FitCall
from pyroflows.amortized.recipe import all_or_nothing, fit_posterior
from pyroflows.train.seeding import seeded, seeded_draws
from pyroflows.validation import positive_int

#: the posterior (:class:`~pyroflows.amortized.posterior.AmortizedPosterior`), not imported
Posterior = Any

__all__ = ["check_ensemble", "check_redrawable", "fit_ensemble", "log_prob_mixture",
           "member_copies", "new_members", "redrawn", "sample_mixture"]  # fmt: skip

#: added to member ``i``'s seed (``seed + i``) for the draw of its summary network, so that
#: it is not the stream its flow's initialisation draws from
SUMMARY_SEED_OFFSET = 0x5A11


def check_ensemble(ensemble: Any) -> int:
    """``ensemble`` as a positive int (1: a single posterior)."""
    return positive_int("ensemble", ensemble)


def member_copies(summary: Any, k: int) -> list[Any]:
    """A copy of ``summary`` per member (None stays None)."""
    return [None if summary is None else copy.deepcopy(summary) for _ in range(k)]


def new_members(cls: type, k: int, summary: Any, arguments: dict[str, Any]) -> list[Any]:
    """The ``k`` members of an ensemble: ``cls(**arguments)``, each with its own copy of
    ``summary``; none for ``k = 1``."""
    if k == 1:
        return []
    return [cls(**arguments, summary=copy) for copy in member_copies(summary, k)]


def _reset_of(module: nn.Module) -> Any:
    """The method that draws a layer's own parameters again (torch's layers have one;
    ``nn.MultiheadAttention`` names it ``_reset_parameters``), or None."""
    reset = getattr(module, "reset_parameters", None)
    if not callable(reset):
        reset = getattr(module, "_reset_parameters", None)
    return reset if callable(reset) else None


def check_redrawable(summary: nn.Module | None) -> None:
    """A ValueError naming the parameters of ``summary`` that no layer's
    ``reset_parameters`` draws (the ensemble could not give each member its own start)."""
    if summary is None:
        return
    bare = [
        f"{prefix}.{name}" if prefix else name
        for prefix, module in summary.named_modules()
        if _reset_of(module) is None
        for name, _ in module.named_parameters(recurse=False)
    ]
    if bare:
        raise ValueError(
            f"ensemble= draws each member's summary network again with its layers' "
            f"reset_parameters(), but {type(summary).__name__} has parameters no layer draws: "
            f"{bare[:5]}; give the module that holds them a reset_parameters() method"
        )


def redrawn(summary: nn.Module, seed: int) -> nn.Module:
    """A copy of ``summary`` with every layer's parameters drawn again by its
    ``reset_parameters`` (innermost layers first, as at construction) from a stream of
    ``seed + SUMMARY_SEED_OFFSET``; the global random state is left as it was."""
    net = copy.deepcopy(summary)
    with seeded(seed, SUMMARY_SEED_OFFSET), torch.no_grad():
        for module in reversed(list(net.modules())):
            reset = _reset_of(module)
            if reset is not None:
                reset()
    return net


def not_for_ensembles(post: Posterior, what: str) -> None:
    """A clear error for what an ensemble does not offer (yet)."""
    if post.members:
        raise ValueError(
            f"{what} is not available for an ensemble (ensemble={len(post.members)}); use it "
            "on a member, post.members[i]"
        )


def fit_ensemble(post: Posterior, call: FitCall) -> Posterior:
    """:meth:`AmortizedPosterior.fit` of an ensemble for a checked ``call`` (see the module's
    description): the simulations drawn once, then each member's fit
    (:meth:`FitCall.for_member`), all or nothing."""
    first = post.members[0].estimator is None  # a first fit: it draws the members' networks
    if first:
        check_redrawable(post.members[0].summary)
    theta, x = call.theta, call.x
    if call.num_simulations is not None:  # once, for every member, as a single fit draws them
        with seeded(call.seed):
            theta, x = post.members[0]._simulate_many(call.num_simulations, parallel=call.parallel)
    k = len(post.members)
    calls = [call.for_member(i, k, theta, x) for i in range(k)]
    with ExitStack() as stack:
        for member in post.members:
            stack.enter_context(all_or_nothing(member))
        for member, member_call in zip(post.members, calls, strict=True):
            if first and member.summary is not None:
                member.summary = redrawn(member.summary, member_call.seed)
            fit_posterior(member, member_call)
    adopt(post)
    return post


def adopt(post: Posterior) -> None:
    """The facade's view of its fitted members: parameter space, data shape, counts."""
    first = post.members[0]
    post.space, post.observations = first.space, first.observations
    post.context_dim = first.context_dim
    post.dropped = first.dropped
    ess = [m.ess_ for m in post.members]
    post.ess_ = None if ess[0] is None else float(sum(ess) / len(ess))


def sample_mixture(post: Posterior, x: Any, num_samples: int, seed: int | None,
                   sampler: str) -> Tensor:  # fmt: skip
    """``num_samples`` draws from the mixture, each from a member picked uniformly; the shape,
    dtype and device of one member's ``sample``."""
    k = len(post.members)
    with seeded_draws(seed):
        pick = torch.randint(k, (num_samples,))
        parts = [member.sample(x, int((pick == i).sum()), sampler=sampler)
                 for i, member in enumerate(post.members) if bool((pick == i).any())]  # fmt: skip
    # the draws grouped by member, in the order of their rows; put back in the rows' order
    order = torch.argsort(pick, stable=True)
    draws = torch.cat(parts)
    return draws[torch.argsort(order).to(draws.device)]


def log_prob_mixture(post: Posterior, theta: Any, x: Any) -> Tensor:
    """``log (1/k) sum_i p_i(theta | x)``; ``-inf`` where every member gives ``-inf``."""
    parts = torch.stack([member.log_prob(theta, x) for member in post.members])
    return torch.logsumexp(parts, 0) - math.log(len(post.members))
