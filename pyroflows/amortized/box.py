"""Posteriors trained on a box prior's own coordinates (``intervals="box"``): draws kept inside
the support by bounded rejection, densities renormalised by the flow's mass inside the box.

With ``intervals="box"`` (:class:`~pyroflows.amortized.parameters.ParameterSpace`) the flow
of a site with an interval support is a density on the whole real line, trained on draws that
all lie in the box. Its draws that fall outside are rejected (:func:`sample_inside`), and its
density inside is divided by its mass inside the box, ``P(box | x)``, estimated per
observation by Monte Carlo (:func:`mass_inside`, with its standard error), so that
``log_prob`` integrates to one over the support up to that estimate's error.

Rejection is bounded: at most :data:`MAX_PROPOSALS` proposals per draw asked for (an
acceptance rate of at least 1 / :data:`MAX_PROPOSALS` always finishes), a
:class:`LowAcceptanceWarning` naming the observations whose rate is below
:data:`WARN_ACCEPTANCE`, and a :class:`RejectionError` (a ``RuntimeError``) naming the
observation when the budget is spent: no draw outside the support is ever returned, and no
loop runs forever.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

__all__ = [
    "MASS_DRAWS",
    "MAX_PROPOSALS",
    "WARN_ACCEPTANCE",
    "LowAcceptanceWarning",
    "RejectionError",
    "mass_inside",
    "sample_inside",
]

#: below this share of the flow's draws inside the box, sampling and ``log_prob`` warn
WARN_ACCEPTANCE = 0.01
#: rejection's budget: proposals per draw asked for, per observation (the lowest acceptance
#: rate that still finishes is its inverse)
MAX_PROPOSALS = 1000
#: the flow's draws per observation that estimate its mass inside the box for ``log_prob``
#: (standard error ``sqrt(p (1 - p) / n)``: 0.005 at p = 0.5, a relative error of 1 %)
MASS_DRAWS = 10_000
#: at most this many parameter rows per rejection round (rounds repeat until done)
_ROUND_ROWS = 1 << 21


class LowAcceptanceWarning(RuntimeWarning):
    """Few of the flow's draws fall inside the prior's box for some observations: sampling
    is slow there and the flow puts most of its mass where the prior has none."""


class RejectionError(RuntimeError):
    """Rejection's budget was spent before an observation had the draws asked for (or, for
    ``log_prob``, none of the flow's draws fell inside the support)."""


def _name(i: int, count: int) -> str:
    return "the observation" if count == 1 else f"observation {i}"


def sample_inside(
    draw: Callable[[int, Tensor], Tensor],
    inside: Callable[[Tensor], Tensor],
    num_samples: int,
    count: int,
) -> Tensor:
    """``num_samples`` draws inside the support for each of ``count`` observations, by
    rejection: ``(num_samples, count, dim)``.

    Args:
        draw: ``draw(n, rows) -> (n, len(rows), dim)``: ``n`` proposals for each observation
            of ``rows`` (a long tensor of positions), in the user's units.
        inside: ``(..., dim) -> (...)`` booleans, True inside the support.
        num_samples: draws kept per observation (the first accepted, in proposal order, so
            they are independent draws of the flow truncated to the box).
        count: the number of observations.

    Warns :class:`LowAcceptanceWarning` naming the observations with an acceptance rate below
    :data:`WARN_ACCEPTANCE`; raises :class:`RejectionError` naming the observation when
    ``MAX_PROPOSALS * num_samples`` proposals did not give ``num_samples`` draws inside.
    """
    kept: list[list[Tensor]] = [[] for _ in range(count)]
    have = torch.zeros(count, dtype=torch.long)
    accepted = torch.zeros(count, dtype=torch.long)
    tried = torch.zeros(count, dtype=torch.long)
    cap = MAX_PROPOSALS * num_samples
    rows = torch.arange(count)
    n = num_samples
    while len(rows):
        theta = draw(n, rows)
        ok = inside(theta)
        for j, r in enumerate(rows.tolist()):
            got = theta[ok[:, j], j]
            accepted[r] += len(got)
            got = got[: num_samples - int(have[r])]
            kept[r].append(got)
            have[r] += len(got)
        tried[rows] += n
        rows = rows[have[rows] < num_samples]
        if not len(rows):
            break
        spent = rows[tried[rows] >= cap]
        if len(spent):
            i = int(spent[0])
            _warn_low(accepted, tried, count)
            raise RejectionError(
                f"{_name(i, count)}: {int(accepted[i])} of {int(tried[i])} of the flow's draws "
                f"fell inside the prior's support (acceptance {_rate(accepted[i], tried[i])}), "
                f"fewer than the {num_samples} asked for within the rejection budget of "
                f"{MAX_PROPOSALS} proposals per draw: the posterior puts its mass outside the "
                "prior's box for this observation (a misspecified observation, or too few "
                "simulations); fit with intervals='logit' to sample it without rejection"
            )
        # proposals for the slowest observation, from its rate so far (at least 1 accepted,
        # so a rate of zero so far grows the round geometrically), within the budget
        rate = accepted[rows].clamp(min=1).double() / tried[rows].double()
        missing = (num_samples - have[rows]).double()
        n = math.ceil(1.2 * float((missing / rate).max()))
        n = max(1, min(n, int((cap - tried[rows]).min()), max(1, _ROUND_ROWS // len(rows))))
    _warn_low(accepted, tried, count)
    return torch.stack([torch.cat(parts) for parts in kept], 1)


def mass_inside(
    draw: Callable[[int, Tensor], Tensor],
    inside: Callable[[Tensor], Tensor],
    count: int,
    num_draws: int = MASS_DRAWS,
) -> tuple[Tensor, Tensor]:
    """The flow's mass inside the support per observation, ``(mass (count,), standard error
    (count,))`` in float64, from ``num_draws`` of its draws each (``draw`` and ``inside`` as
    in :func:`sample_inside`). Warns :class:`LowAcceptanceWarning` below
    :data:`WARN_ACCEPTANCE`."""
    rows = torch.arange(count)
    hits = torch.zeros(count, dtype=torch.long)
    step = max(1, min(num_draws, _ROUND_ROWS // max(count, 1)))
    for start in range(0, num_draws, step):
        n = min(step, num_draws - start)
        hits += inside(draw(n, rows)).sum(0).cpu()
    mass = hits.double() / num_draws
    _warn_low(hits, torch.full_like(hits, num_draws), count)
    return mass, (mass * (1 - mass) / num_draws).sqrt()


def _rate(accepted: Tensor, tried: Tensor) -> str:
    return f"{100 * float(accepted) / max(int(tried), 1):.2f} %"


def _warn_low(accepted: Tensor, tried: Tensor, count: int) -> None:
    low = [i for i in range(count) if accepted[i] < WARN_ACCEPTANCE * tried[i]]
    if not low:
        return
    shown: Sequence[str] = [
        f"{_name(i, count)}: {_rate(accepted[i], tried[i])} ({int(accepted[i])} of "
        f"{int(tried[i])})" for i in low[:10]
    ]  # fmt: skip
    more = f" and {len(low) - 10} more" if len(low) > 10 else ""
    warnings.warn(
        f"few of the flow's draws fall inside the prior's support (acceptance below "
        f"{100 * WARN_ACCEPTANCE:g} %): {'; '.join(shown)}{more}. Rejection is slow there, and "
        "the posterior puts most of its mass where the prior has none (a misspecified "
        "observation, or too few simulations)",
        LowAcceptanceWarning,
        stacklevel=4,
    )
