"""Sequential rounds for one observation: truncated-prior neural posterior estimation (TSNPE).

An amortized posterior learns ``p(theta | x)`` for every ``x`` the prior predictive makes; for
one observation ``x_o`` whose posterior sits in the prior's tail, few of its simulations fall
near ``x_o``. :func:`fit_sequential` spends the same simulations in rounds (Deistler,
Gonçalves & Macke, 2022, "Truncated proposals for scalable and hassle-free simulation-based
inference"):

1. round 1 simulates from the prior and fits the posterior;
2. each next round simulates from the prior truncated to a region ``R`` around the current
   posterior at ``x_o`` and trains the same networks further on **all** simulations so far with
   the ordinary NPE loss.

The region after round ``r`` is nested in the ones before it: ``R_r = R_{r-1} ∩ B_r ∩ {theta:
log q_r(theta | x_o) >= t_r}``, with ``t_r`` the :data:`QUANTILE` quantile of ``log q_r`` over
:data:`REGION_DRAWS` draws of ``q_r(. | x_o)`` (a highest-density region holding all but about
1e-4 of ``q_r``'s mass) and ``B_r`` the box (per parameter, in the user's units) spanning those
draws widened by :data:`BOX_MARGIN` of its width on each side. The box lets the rejection
sampler discard most prior draws before any network runs; it is part of the region's
definition, so the checks below see what it cuts.

Why the plain loss is right: the simulations come from a mixture of the prior and priors
truncated to the nested regions, whose ratio to the prior is one constant on the last region.
The loss's optimum is the posterior times that ratio, so at ``x_o`` it is the exact posterior as
long as the posterior lies inside the last region. Two checks say whether that holds:

* **mass outside** (per round): the share of the new posterior's draws at ``x_o`` outside the
  region its newest simulations came from. Above :data:`OUTSIDE_WARN` (1e-3) a
  :class:`TruncationWarning` says the truncation may have cut posterior mass. The trained
  posterior under-states that mass (outside the region it saw fewer simulations, so the same
  ratio shrinks it there), so a share near the level is already a strong signal;
* **SBC on the truncated prior** (per round): ``check_simulations`` of the round's new pairs
  ``(theta, x)`` (drawn from the prior truncated to the round's region) are held out of that
  round's training (they join the next round's); each ``theta``'s rank among the posterior's
  draws for its ``x`` that fall in the same region is uniform when the posterior restricted to
  the region is calibrated (exact on the region for the reason above). A rejection of the last
  round at :data:`~pyroflows.amortized.heldout.ALPHA` (Bonferroni) warns
  :class:`~pyroflows.amortized.heldout.CalibrationWarning`.

The result is a posterior for ``x_o`` (and observations like it): its draws for data far from
``x_o`` are not calibrated, so amortized tools (``distil``, ``calibrate_check``, SBC over the
prior) do not apply to it. Ensembles are refused (their mixture would need every member's
region), as is a posterior fitted before (round 1 must see the prior).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import stats
from torch import Tensor

from pyroflows.amortized.call import check_call
from pyroflows.amortized.estimator import PosteriorEstimator, log_prob_chunks
from pyroflows.amortized.heldout import ALPHA, MIN_ROWS, CalibrationWarning, describe
from pyroflows.amortized.recipe import all_or_nothing, fit_posterior
from pyroflows.amortized.simulate import can_simulate, drop_invalid
from pyroflows.diagnostics.calibration import SBCResult, _names
from pyroflows.train.seeding import seeded, seeded_draws
from pyroflows.validation import as_real_tensor, positive_int

__all__ = [
    "BOX_MARGIN",
    "OUTSIDE_WARN",
    "QUANTILE",
    "REGION_DRAWS",
    "Region",
    "RoundReport",
    "SequentialResult",
    "TruncationWarning",
    "fit_sequential",
]

#: the region keeps ``log q(theta | x_o)`` above this quantile of its values on the draws
QUANTILE = 1e-4
#: posterior draws at ``x_o`` that set each round's threshold and box (and measure the mass
#: outside the previous region)
REGION_DRAWS = 10_000
#: the box spans the draws widened by this share of their range on each side
BOX_MARGIN = 0.5
#: a share of the posterior's draws at ``x_o`` outside the region above this warns
OUTSIDE_WARN = 1e-3
#: posterior draws per held-out simulation in the SBC check (before the restriction)
CHECK_DRAWS = 100
#: fit's arguments that choose its mode: fit_sequential sets them itself
_MODE_OPTIONS = frozenset(
    {"theta", "x", "num_simulations", "simulate_online", "steps", "num_validation",
     "steps_per_epoch", "sample_weight", "num_workers", "executor"}
)  # fmt: skip


class TruncationWarning(UserWarning):
    """A posterior trained on truncated-prior simulations has mass outside the region."""


@dataclass
class _Level:
    """One round's density cut: ``log q(theta | x_o) >= threshold`` for a frozen copy of the
    networks (``context``: their summary of ``x_o``)."""

    estimator: PosteriorEstimator
    context: Tensor
    threshold: float


@dataclass
class Region:
    """The prior truncated to ``low <= theta <= high`` and every level's density cut.

    Attributes:
        low, high: the box ``(dim,)`` in the user's units.
        thresholds: each round's ``log q`` threshold, oldest first.
    """

    low: Tensor
    high: Tensor
    _levels: list[_Level]
    _encode: Callable[[Tensor], tuple[Tensor, Tensor]]

    @property
    def thresholds(self) -> list[float]:
        return [level.threshold for level in self._levels]

    def contains(self, theta: Tensor) -> Tensor:
        """A boolean ``(N,)``: which rows of ``theta (N, dim)`` lie in the region (the box
        first, then the density cuts, newest first, each on the rows still in)."""
        theta = torch.as_tensor(theta, dtype=torch.float64).reshape(len(theta), -1)
        inside = ((theta >= self.low) & (theta <= self.high)).all(-1)
        for level in reversed(self._levels):
            rows = inside.nonzero()[:, 0]
            if len(rows) == 0:
                break
            log_q = _log_q(level, theta[rows], self._encode)
            inside[rows] = log_q >= level.threshold
        return inside

    def narrowed(self, level: _Level, draws: Tensor, margin: float = BOX_MARGIN) -> Region:
        """This region cut by ``level`` and by the box of ``draws (N, dim)`` widened by
        ``margin`` of its range on each side."""
        draws = draws.to(torch.float64)
        lo, hi = draws.min(0).values, draws.max(0).values
        pad = margin * (hi - lo)
        low, high = torch.maximum(self.low, lo - pad), torch.minimum(self.high, hi + pad)
        return Region(low, high, [*self._levels, level], self._encode)


def _log_q(level: _Level, theta: Tensor, encode: Callable) -> Tensor:
    """``log q(theta | x_o)`` ``(N,)`` of a level's frozen networks, in the user's units."""
    with torch.inference_mode():
        parts = log_prob_chunks(
            level.estimator, theta, level.context, torch.Size([len(theta)]), False, encode
        )
    return torch.cat([p.reshape(-1) for p in parts]).clone()


@dataclass
class RoundReport:
    """What one round drew and what its checks say.

    Attributes:
        round: 1, 2, ...
        simulations: new simulations of this round (from the prior in round 1, else from the
            prior truncated to the region after the round before).
        trained_on: simulations this round's fit trained on (all so far but the held-out
            check rows of this round).
        prior_draws: prior draws the rejection sampler made for this round (0 in round 1).
        prior_volume: the share of them in the region: a Monte Carlo estimate of the prior
            mass the truncation kept (1 in round 1).
        acceptance: the share of the draws in the box that passed the density cuts (what the
            networks' cost per kept draw depends on; 1 in round 1).
        outside: the share of the trained posterior's draws at ``x_o`` outside the region
            the new simulations came from (0 in round 1); above :data:`OUTSIDE_WARN` warns.
        threshold: the ``log q(theta | x_o)`` threshold this round's posterior sets for the
            next region (None after the last round).
        sbc: SBC of this round's posterior, restricted to the region, on the held-out rows
            (None with fewer than ``MIN_ROWS`` of them).
        seconds: wall time of the round (simulation, training and checks).
    """

    round: int
    simulations: int
    trained_on: int
    prior_draws: int
    prior_volume: float
    acceptance: float
    outside: float
    threshold: float | None
    sbc: SBCResult | None
    seconds: float


@dataclass
class SequentialResult:
    """The rounds of :func:`fit_sequential` (the posterior itself is trained in place).

    Attributes:
        rounds: one :class:`RoundReport` per round.
        region: the last region the simulations came from (``contains(theta)``).
        simulations: all simulations drawn (training and checks; the last round's check rows
            are never trained on).
    """

    rounds: list[RoundReport]
    region: Region
    simulations: int

    @property
    def outside(self) -> float:
        """The last round's share of posterior draws at ``x_o`` outside its region."""
        return self.rounds[-1].outside

    def table(self) -> str:
        """The rounds as a Markdown table."""
        lines = [
            "| round | new simulations | trained on | prior volume | acceptance | outside "
            "| SBC min p |",
            "|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in self.rounds:
            p = "-" if r.sbc is None else f"{float(np.min(r.sbc.pvalues)):.2g}"
            lines.append(
                f"| {r.round} | {r.simulations} | {r.trained_on} | {r.prior_volume:.3g} | "
                f"{r.acceptance:.3g} | {r.outside:.2g} | {p} |"
            )
        return "\n".join(lines)


def fit_sequential(
    posterior: Any,
    x_o: Any,
    *,
    rounds: int = 4,
    simulations: int = 10_000,
    quantile: float = QUANTILE,
    check_simulations: int = 200,
    max_prior_draws: int = 10**9,
    seed: int | None = 0,
    **train_options: Any,
) -> SequentialResult:
    """Train ``posterior`` for one observation ``x_o`` in truncated-prior rounds (TSNPE).

    Round 1 draws ``simulations // rounds`` (plus the remainder) from the prior and fits; each
    next round draws ``simulations // rounds`` from the prior truncated to the region of the
    posterior at ``x_o`` (module docstring) by rejection, and fits again on all simulations so
    far (the networks go on from their state; the standardisations stay those of round 1).
    Each round's ``check_simulations`` newest pairs are held out of its fit for the SBC check
    and trained on from the next round on. Every fit gets ``train_options`` (as
    :meth:`~pyroflows.amortized.AmortizedPosterior.fit`) with seed ``seed + round - 1``; the
    held-out check of an ordinary fit is replaced by this function's checks.

    Args:
        posterior: an unfitted :class:`~pyroflows.amortized.AmortizedPosterior` with a
            simulator (no ensemble).
        x_o: one observation.
        rounds: number of rounds (1: one amortized fit, with the checks).
        simulations: all simulations drawn, checks included.
        quantile: the region keeps ``log q(theta | x_o)`` above this quantile of its values
            on :data:`REGION_DRAWS` draws (in (0, 0.5]; larger is tighter and riskier).
        check_simulations: held-out rows per round for the SBC check (0: none).
        max_prior_draws: most prior draws per round for the rejection sampler (drawn in
            chunks of up to a million; the box discards most before the networks run); a
            region that keeps too little prior mass raises ``RuntimeError`` (the posterior is
            then left as it was, unfitted).
        seed: seeds the simulations, the draws and the fits (None: the global streams).
        **train_options: options of ``fit`` (``max_epochs``, ``recipe``, ``lr``, ...).

    Returns:
        A :class:`SequentialResult` (per round: prior volume, acceptance, mass outside, SBC).

    Warns:
        TruncationWarning: a round's posterior has more than :data:`OUTSIDE_WARN` of its
            draws at ``x_o`` outside the region its new simulations came from.
        CalibrationWarning: the last round's SBC on the truncated prior rejects.

    Raises:
        ValueError: a bad argument or posterior, before anything is simulated or changed
            (``x_o``'s shape: after round 1's simulations, before any fit).
        RuntimeError: the rejection sampler kept too few prior draws.

    Example:
        >>> import pyro.distributions as dist
        >>> from pyroflows.amortized import AmortizedPosterior
        >>> prior = dist.Normal(torch.zeros(1), 1.0).to_event(1)
        >>> post = AmortizedPosterior(prior=prior, flow="maf",
        ...     simulator=lambda t: t + 0.1 * torch.randn_like(t),
        ...     flow_kwargs=dict(layers=1, hidden=(8,)))
        >>> result = fit_sequential(post, torch.tensor([2.0]), rounds=2, simulations=400,
        ...     check_simulations=0, max_epochs=2, recipe="one_phase", progress=False)
        >>> [r.simulations for r in result.rounds], result.rounds[1].prior_volume < 1
        ([200, 200], True)
    """
    rounds = positive_int("rounds", rounds)
    simulations = positive_int("simulations", simulations)
    max_prior_draws = positive_int("max_prior_draws", max_prior_draws)
    if (
        isinstance(check_simulations, bool)
        or not isinstance(check_simulations, int)
        or (check_simulations < 0)
    ):
        raise ValueError(f"check_simulations must be an int >= 0, got {check_simulations!r}")
    if not isinstance(quantile, int | float) or not 0.0 < float(quantile) <= 0.5:
        raise ValueError(f"quantile must be in (0, 0.5], got {quantile!r}")
    per_round = simulations // rounds
    if per_round - check_simulations < 2:
        raise ValueError(
            f"{simulations} simulations in {rounds} rounds leave {per_round} a round, too "
            f"few for {check_simulations} held-out check rows and a fit (at least 2 more)"
        )
    _check_posterior(posterior)
    mode = sorted(_MODE_OPTIONS.intersection(train_options))
    if mode or "seed" in train_options:
        raise ValueError(
            f"fit_sequential sets {', '.join(mode + ['seed'] * ('seed' in train_options))} "
            "itself: give the fits' seed as seed= and the budget as simulations="
        )
    x_o = as_real_tensor(x_o, "x_o")
    first = per_round + simulations % rounds
    # every fit's options, checked before anything is simulated
    _call(torch.zeros(2, 1), torch.zeros(2, 1), train_options, seed)
    with seeded(seed), all_or_nothing(posterior):
        result = _run(posterior, x_o, rounds, first, per_round, float(quantile),
                      check_simulations, max_prior_draws, seed, train_options)  # fmt: skip
    # what it was trained for: other observations warn, amortized tools refuse
    posterior.sequential_x_o = posterior.observations.check(x_o, "x_o")[0][0].detach().cpu()
    return result


def _check_posterior(post: Any) -> None:
    if getattr(post, "members", None):
        raise ValueError(
            "fit_sequential does not train ensembles (each member's region would differ): "
            "use a posterior with ensemble=1"
        )
    if getattr(post, "estimator", None) is not None or getattr(post, "_members", None):
        raise ValueError(
            "fit_sequential needs an unfitted posterior: round 1 fits it on prior simulations"
        )
    sim = getattr(post, "sim", None)
    if not can_simulate(sim):
        raise ValueError(
            "fit_sequential needs a simulator: construct with a model or prior + simulator"
        )


def _run(
    post: Any, x_o: Tensor, rounds: int, first: int, per_round: int, quantile: float,
    n_check: int, max_prior_draws: int, seed: int | None, options: dict[str, Any],
) -> SequentialResult:  # fmt: skip
    reports: list[RoundReport] = []
    theta_all, x_all = torch.empty(0), torch.empty(0)
    held_theta = held_x = None
    region: Region | None = None
    total = 0
    for r in range(1, rounds + 1):
        start = time.perf_counter()
        n = first if r == 1 else per_round
        if region is None:
            theta, x = post._simulate_many(n)
            drawn, volume, acceptance = 0, 1.0, 1.0
        else:
            theta, drawn, boxed, kept = _sample_region(post, region, n, max_prior_draws, r)
            volume, acceptance = kept / drawn, kept / boxed
            x = post.simulate_data(theta)
        total += n
        if r == 1:
            batch, _ = _observation(post, x, x_o)
        # held out: this round's last check rows; the previous round's join the training set
        train_theta, train_x = theta[: n - n_check], x[: n - n_check]
        if held_theta is not None:
            train_theta = torch.cat([held_theta, train_theta])
            train_x = torch.cat([held_x, train_x])
        theta_all = train_theta if r == 1 else torch.cat([theta_all, train_theta])
        x_all = train_x if r == 1 else torch.cat([x_all, train_x])
        held_theta, held_x = theta[n - n_check :], x[n - n_check :]
        _fit(post, theta_all, x_all, options, None if seed is None else seed + r - 1)
        level, draws, log_q = _freeze(post, batch, seed, r, quantile)
        outside = 0.0 if region is None else 1.0 - float(region.contains(draws).double().mean())
        check = None
        if len(held_theta) >= MIN_ROWS:
            with warnings.catch_warnings():  # the fit has counted the invalid ones
                warnings.simplefilter("ignore", RuntimeWarning)
                valid = drop_invalid(held_theta, held_x, post.observations.nan_padding)[:2]
            check = _restricted_sbc(post, region, *valid, seed, r)
        last = r == rounds
        reports.append(RoundReport(
            round=r, simulations=n, trained_on=len(theta_all), prior_draws=drawn,
            prior_volume=volume, acceptance=acceptance, outside=outside,
            threshold=None if last else level.threshold, sbc=check,
            seconds=time.perf_counter() - start,
        ))  # fmt: skip
        if outside > OUTSIDE_WARN:
            warnings.warn(
                f"round {r}: {outside:.2%} of the posterior's draws at x_o lie outside the "
                f"region its newest simulations came from (above {OUTSIDE_WARN:g}): the "
                "truncation may have cut posterior mass; use a smaller quantile or fewer "
                "rounds",
                TruncationWarning,
                stacklevel=3,
            )
        if not last:
            base = region or Region(
                torch.full((draws.shape[-1],), -math.inf, dtype=torch.float64),
                torch.full((draws.shape[-1],), math.inf, dtype=torch.float64),
                [], post._encode_theta,
            )  # fmt: skip
            region = base.narrowed(level, draws)
    if check is not None and check.rejected(ALPHA):
        names = [
            f"{check.names[j]} (KS p = {check.pvalues[j]:.1g}: {describe(check.pit[:, j])})"
            for j in range(len(check.pvalues))
            if check.pvalues[j] < ALPHA / len(check.pvalues)
        ]
        warnings.warn(
            f"the last round's posterior is not calibrated on its {len(check.pit)} held-out "
            f"simulations from the truncated prior: {'; '.join(names)}",
            CalibrationWarning,
            stacklevel=3,
        )
    if region is None:  # one round: the whole space
        dim = post.space.dim
        region = Region(
            torch.full((dim,), -math.inf, dtype=torch.float64),
            torch.full((dim,), math.inf, dtype=torch.float64), [], post._encode_theta,
        )  # fmt: skip
    return SequentialResult(reports, region, total)


def _observation(post: Any, x: Tensor, x_o: Tensor) -> tuple[Tensor, bool]:
    """``x_o`` checked against the shape of the simulations ``x`` (one observation only)."""
    observations = post.observations
    if observations.shape is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            observations = observations.fitted(x[:2])
    batch, single = observations.check(x_o, "x_o")
    if not single:
        raise ValueError(
            f"fit_sequential is for one observation; x_o has shape {tuple(x_o.shape)}, a batch "
            f"of {len(batch)} (fit one posterior per observation)"
        )
    return batch, single


def _fit(post: Any, theta: Tensor, x: Tensor, options: dict[str, Any], seed: int | None) -> None:
    """One offline fit of all simulations so far, without the ordinary held-out check (its
    pairs do not come from the prior)."""
    fit_posterior(post, dataclasses.replace(_call(theta, x, options, seed), check_heldout=False))


def _call(theta: Tensor, x: Tensor, options: dict[str, Any], seed: int | None) -> Any:
    """The checked ``fit(theta, x, **options, seed=seed)`` call."""
    options = dict(options)
    fit_arguments = {k: options.pop(k) for k in ("recipe", "validation_fraction") if k in options}
    if seed is not None:
        options["seed"] = seed
    return check_call(theta, x, **fit_arguments, train_options=options)


def _freeze(
    post: Any, batch: Tensor, seed: int | None, r: int, quantile: float
) -> tuple[_Level, Tensor, Tensor]:
    """A frozen copy of the trained networks, the threshold of its region and the draws at
    ``x_o`` that set it (with their ``log q``)."""
    estimator = copy.deepcopy(post.estimator).eval().requires_grad_(False)
    with torch.inference_mode():
        encoded = post.observations.encode(batch, post._dtype).to(post._device)
        context = estimator.summary(encoded)[0].clone()
    level = _Level(estimator, context, 0.0)
    draw_seed = None if seed is None else 7919 * seed + r
    draws = post.sample(batch[0], REGION_DRAWS, seed=draw_seed).to(torch.float64)
    log_q = _log_q(level, draws, post._encode_theta)
    finite = log_q[torch.isfinite(log_q)]
    level.threshold = float(torch.quantile(finite, quantile)) if len(finite) else math.inf
    return level, draws, log_q


def _sample_region(
    post: Any, region: Region, n: int, max_draws: int, r: int
) -> tuple[Tensor, int, int, int]:
    """``n`` prior draws in ``region`` by rejection (the first ``n`` kept), the prior draws
    made, how many of them were in the box and how many in the region; RuntimeError past
    ``max_draws``."""
    kept: list[Tensor] = []
    count = drawn = boxed = 0
    while count < n:
        if drawn >= max_draws:
            raise RuntimeError(
                f"round {r}: the truncated prior kept {count} of {drawn:,} prior draws "
                f"(prior volume about {max(count, 1) / drawn:.1e}), too few for {n} "
                f"simulations within max_prior_draws={max_draws:,}: raise max_prior_draws, "
                "use fewer rounds or a smaller quantile"
            )
        if drawn == 0:  # a first chunk to estimate the acceptance
            m = min(max_draws, max(10_000, 2 * n))
        else:
            rate = max(count, 1) / drawn
            m = int(min(max_draws - drawn, max(10_000, min(1_000_000, 1.2 * (n - count) / rate))))
        theta = post.sim.sample_prior(m)
        drawn += m
        wide = theta.to(torch.float64)
        in_box = ((wide >= region.low) & (wide <= region.high)).all(-1)
        boxed += int(in_box.sum())
        theta = theta[in_box]
        inside = region.contains(theta) if len(theta) else torch.zeros(0, dtype=torch.bool)
        kept.append(theta[inside])
        count += int(inside.sum())
    return torch.cat(kept)[:n], drawn, max(boxed, 1), count


def _restricted_sbc(
    post: Any, region: Region | None, theta: Tensor, x: Tensor, seed: int | None, r: int
) -> SBCResult | None:
    """SBC of the posterior restricted to ``region`` (None: the prior's whole space) on the
    held-out pairs ``theta``, ``x`` drawn from the prior truncated to it: the rank of each
    ``theta`` among the draws for its ``x`` inside the region, as a randomised PIT over the
    number of such draws (rows with fewer than 10 are left out: that depends on ``x`` only,
    so the PIT of the others stays uniform)."""
    if len(theta) < MIN_ROWS:
        return None
    with seeded_draws(None if seed is None else 104_729 * seed + r):
        draws = post.sample(x, CHECK_DRAWS).to(torch.float64)  # (S, N, dim)
        s, rows, dim = draws.shape
        if region is None:
            inside = torch.ones(s, rows, dtype=torch.bool)
        else:
            inside = region.contains(draws.reshape(-1, dim)).reshape(s, rows)
        counts = inside.sum(0)
        below = ((draws < theta.to(torch.float64)) & inside[..., None]).sum(0)
        keep = counts >= 10
        if int(keep.sum()) < MIN_ROWS:
            return None
        u = torch.rand(int(keep.sum()), dim, dtype=torch.float64)
        ranks, counts = below[keep], counts[keep]
        pit = ((ranks + u) / (counts[:, None] + 1)).numpy()
    pvalues = np.array([stats.kstest(pit[:, j], "uniform").pvalue for j in range(dim)])
    return SBCResult(ranks.numpy(), pit, pvalues, _names(post, dim), CHECK_DRAWS, None)
