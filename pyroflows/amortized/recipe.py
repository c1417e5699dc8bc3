"""How an amortized posterior is trained: a checked call
(:class:`~pyroflows.amortized.call.FitCall`) run in its mode and recipe by the one loop
(:func:`pyroflows.train.fit`).

* offline (``fit(theta, x)`` / ``fit(num_simulations=N)``): simulations drawn under the fit's
  seed, checked (:func:`~pyroflows.amortized.simulate.check_training`), split
  (:func:`pyroflows.train.recipe.validation_rows`), encoded once; ``flow="auto"`` trains each
  family on the same split and batches (:func:`pyroflows.train.recipe.run_portfolio`), each
  in two phases by default (:func:`pyroflows.train.recipe.merge_histories`);
* online (``fit(simulate_online=True, steps=S)``): fresh simulations as a data source of the
  loop (:class:`pyroflows.train.sources.Simulations`), a fixed simulated validation set.

The posterior (:mod:`~pyroflows.amortized.posterior`) holds the state this module changes:
its networks (``_setup``, ``_use``, ``_choose``) and its encoders (``_training_tensors``). A
new way to train a posterior (another recipe, another source of simulations) goes here.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor

from pyroflows.amortized.box import RejectionError
from pyroflows.amortized.call import RECIPES, SECOND_PHASE_EPOCHS, TRAIN_DEFAULTS, FitCall
from pyroflows.amortized.estimator import build_members, check_summary_output, plain
from pyroflows.amortized.heldout import heldout_check
from pyroflows.amortized.observations import drop_invalid, valid_rows
from pyroflows.amortized.parameters import ParameterSpace, describe_constraint, encode_constraint
from pyroflows.amortized.simulate import check_training
from pyroflows.losses import nll
from pyroflows.nn.summary import IdentitySummary
from pyroflows.train import History, fit
from pyroflows.train.checkpoint import member_path, restore_on_error
from pyroflows.train.recipe import merge_histories, run_portfolio, validation_rows
from pyroflows.train.seeding import seeded
from pyroflows.train.sources import Simulations
from pyroflows.train.weights import effective_sample_size
from pyroflows.validation import as_real_tensor

#: the facade (:class:`~pyroflows.amortized.posterior.AmortizedPosterior`) that calls these
#: functions with itself; not imported, so the facade stays the one module above this one
Posterior = Any

__all__ = [
    "AUTO_FLOWS",
    "FAST_PHASE",
    "RECIPES",
    "SECOND_PHASE_EPOCHS",
    "TRAIN_DEFAULTS",
    "fit_posterior",
    "seeded",
]

#: A default offline fit runs in two phases: first :data:`FAST_PHASE` (a rate four times
#: larger, held constant until the validation loss has not improved for 10 epochs), then, from
#: its best state, :data:`TRAIN_DEFAULTS` with the cosine over :data:`SECOND_PHASE_EPOCHS`
#: epochs. Five training seeds on the benchmark's simulations (C2ST; one phase / two phases /
#: sbi NPE): two moons 1 000 0.757 / 0.728 / 0.744, 10 000 0.562 / 0.564 / 0.567; SLCP 1 000
#: 0.954 / 0.949 / 0.963, 10 000 0.838 / 0.812 / 0.842 (in 27 instead of 53 s); linear
#: Gaussian 1 000 0.587 / 0.608 / 0.639, 10 000 0.531 / 0.532 / 0.529. The fast rate alone
#: fails the Gaussian (0.634 at 1 000, 0.560 at 10 000); the second phase recovers it.
FAST_PHASE: dict[str, Any] = dict(lr=2e-3, schedule="constant", patience=10)
#: a two-phase fit's ``checkpoint`` / ``resume`` path gets one file per phase, named after it
#: (``run.ckpt`` -> ``run.phase1.ckpt``, ``run.phase2.ckpt``; with ``flow="auto"``
#: ``run.nsf.phase1.ckpt``, ...)
PHASE_NAMES = ("phase1", "phase2")
#: added to the ``seed`` of an online fit for the draws before its loop (the validation
#: simulations, the networks' initialisation): the loop simulates from torch's stream seeded
#: with ``seed`` itself, and would otherwise train on the validation set's first simulations
_ONLINE_SEED_OFFSET = 0x5EED


#: ``flow="auto"`` (the default): an offline fit with a validation split trains these
#: families on the same simulations, split and batches, and keeps the one with the lower
#: validation loss (online, or without a validation split: the first).
AUTO_FLOWS: tuple[str, ...] = ("nsf", "realnvp")


def fit_posterior(post: Posterior, call: FitCall) -> Posterior:
    """:meth:`AmortizedPosterior.fit` of one posterior for a checked ``call``
    (:func:`~pyroflows.amortized.call.check_call`): run its mode, all or nothing."""
    seed = call.seed  # only an explicit seed fixes the simulations
    if call.simulate_online:
        online = {**TRAIN_DEFAULTS, "patience": None, **call.train_options}
        # the loop simulates too: a simulator drawing from NumPy or Python's random (which
        # the loop does not seed) is seeded here, and those states are restored after it
        with seeded(seed, _ONLINE_SEED_OFFSET), all_or_nothing(post):
            return fit_online(post, call, online)
    options = {**TRAIN_DEFAULTS, **call.train_options}
    if call.two_phases and "max_epochs" in call.train_options:
        options["_epoch_cap"] = call.train_options["max_epochs"]
    with all_or_nothing(post):
        return fit_offline(post, call, options)


# -- the posterior's state: set up by the first fit, restored by a failed one -----------
def setup(post: Posterior, theta: Tensor, x: Tensor, weight: Tensor | None = None) -> None:
    """A posterior's first fit: parameter space, preprocessors (weighted by the simulations'
    ``weight`` when given), networks. All or nothing: the attributes are set only once
    everything is built, so a failure leaves none behind. Warns when a few extreme values
    (say 1e30) dominate a column's standardisation."""
    space = post.space
    if space is None:
        space = ParameterSpace([post.param_name], [theta.shape[1:]], [None], post.intervals)
    theta_pre = space.standardisation(theta, weight)
    observations = post.observations.fitted(x, weight)
    x_shape = observations.shape
    summary = post.summary
    if summary is None:
        summary = IdentitySummary(max(1, math.prod(x_shape)))
    with torch.no_grad():
        encoded = observations.encode(x[:2], torch.float32)
        context = summary(encoded)
    check_summary_output(context, len(encoded), summary)
    context_dim = int(context.shape[-1])
    dim = space.unconstrained_dim
    families = (post.flow_name,)
    if post.flow_name == "auto":  # coupling needs two parameters or more
        families = tuple(f for f in AUTO_FLOWS if dim >= 2 or f != "realnvp")
    auto = post.flow_name == "auto"
    members = build_members(families, summary, dim, context_dim, post.flow_kwargs, auto)
    post.space, post.theta_pre, post.observations = space, theta_pre, observations
    post.context_dim = context_dim
    post._members = members
    if len(families) == 1:
        post._choose(families[0])
    else:  # the first offline fit chooses
        post._use(families[0])


@contextmanager
def all_or_nothing(post: Posterior) -> Iterator[None]:
    """A fit that raises (a simulator's or summary network's bad output, a checkpoint of
    other simulations given to ``resume``, an interrupt) leaves the posterior as it was:
    its attributes and its networks' parameters (the last checkpoint keeps the work)."""
    with restore_on_error(post, *([] if post.estimator is None else [post.estimator])):
        yield


# -- offline ---------------------------------------------------------------------------------
def fit_offline(post: Posterior, call: FitCall, options: dict[str, Any]) -> Posterior:
    """Simulate (under the call's seed, in parallel when asked), check, split, set up on the
    first fit, then train with ``options``: every family of ``flow="auto"`` on the same
    split, or the one family. The call's checked weights
    (:mod:`~pyroflows.amortized.weights`) ride with their simulations."""
    theta, x, weight = call.theta, call.x, call.weight
    with seeded(call.seed):
        if call.num_simulations is not None:
            theta, x = post._simulate_many(call.num_simulations, parallel=call.parallel)
        if weight is not None:
            theta, x, weight = _weighted(theta, x, weight, post)
        theta, x, dropped = check_training(theta, x, post.space, post.observations)
        if len(theta) < 2:
            raise ValueError(
                f"fit needs at least 2 valid simulations, got {len(theta)} (one for "
                "training and one for validation)"
            )
        n_val = validation_rows(len(theta), call.validation_fraction)
        order = torch.randperm(len(theta), generator=torch.Generator().manual_seed(
            int(options.get("seed") or 0)))  # fmt: skip
        if n_val == 0:
            options["patience"] = None
        val, train = order[:n_val], order[n_val:]
        if post.estimator is None:
            setup(post, theta[train], x[train], None if weight is None else weight[train])
    post.dropped += dropped
    post.ess_ = None
    if weight is not None:  # the loop normalises them and hashes them into its checkpoints
        options["sample_weight"] = weight[train]
        options["val_weight"] = weight[val] if n_val else None
        post.ess_ = effective_sample_size(weight[train].numpy())
    data = post._training_tensors(theta[train], x[train])
    val_data = post._training_tensors(theta[val], x[val]) if n_val else None
    if post._members and n_val:
        post.history = _fit_members(post, data, val_data, options, call.two_phases)
    else:
        if post._members:  # flow="auto" without a validation split: the first family
            post._choose(next(iter(post._members)))
        post.history = _fit_once(post, data, val_data, options, call.two_phases)
    post.heldout_sbc_ = None
    if call.check_heldout and weight is None:
        try:  # called here, not in a helper: its warning names the caller of fit
            post.heldout_sbc_ = heldout_check(post, theta[val], x[val], call.seed)
        except RejectionError as error:
            _skipped_check(error)
    return post


def _skipped_check(error: RejectionError) -> None:
    """With ``intervals="box"``, a held-out simulation for which rejection cannot draw skips
    the held-out check (``heldout_sbc_`` stays None) with this warning instead of failing the
    fit."""
    warnings.warn(
        f"the held-out calibration check was skipped: {error}", RuntimeWarning, stacklevel=5
    )


def _weighted(theta: Any, x: Any, weight: Tensor, post: Posterior) -> tuple[Tensor, Tensor, Tensor]:
    """Simulations of weight zero removed (as if not passed); those with non-finite values
    kept for :func:`check_training` to count and drop, and the weights of the ones it keeps
    (an error when none of positive weight is left)."""
    theta, x = as_real_tensor(theta, "theta"), as_real_tensor(x, "x")
    if theta.dim() == 0 or x.dim() == 0 or len(theta) != len(x):
        return theta, x, weight  # check_training says what is wrong
    finite = torch.isfinite(theta.reshape(len(theta), -1)).all(-1)
    valid = finite & valid_rows(x, post.observations.nan_padding)
    if not bool((weight[valid] > 0).any()):
        raise ValueError("sample_weight is zero on every simulation with finite values")
    keep = ~valid | (weight > 0)
    return theta[keep], x[keep], weight[keep & valid]


def _fit_members(
    post: Posterior, data: tuple, val_data: tuple, options: dict, two_phases: bool
) -> History:
    """``flow="auto"``: train every family of the posterior's members with the same options
    (split, batches, seed) and keep the one with the lower validation loss
    (:func:`~pyroflows.train.recipe.run_portfolio`: a ``time_budget`` shared out, one
    ``checkpoint`` file per family, ``run.ckpt`` -> ``run.nsf.ckpt``, ...)."""

    def fit_member(family: str, run: dict[str, Any]) -> tuple[History, None]:
        post._use(family)
        member = {**options, **{key: value for key, value in run.items() if value is not None}}
        return _fit_once(post, data, val_data, member, two_phases, f"NPE {family}"), None

    best, candidates = run_portfolio(
        list(post._members),
        fit_member,
        time_budget=options.get("time_budget"),
        checkpoint=options.get("checkpoint"),
        resume=options.get("resume"),
    )
    post.candidates = [
        dict(flow=c.name, best_loss=c.history.best_loss, epochs=len(c.history.train_loss),
             seconds=c.seconds)
        for c in candidates
    ]  # fmt: skip
    post._choose(best.name)
    return best.history


def _fit_once(
    post: Posterior,
    data: tuple,
    val_data: tuple | None,
    options: dict,
    two_phases: bool,
    desc: str = "NPE",
) -> History:
    if two_phases:
        return _fit_two_phases(post, data, val_data, options, desc)
    return _train(post, data, val_data, options, desc, "one_phase")


def _fit_two_phases(
    post: Posterior, data: tuple, val_data: tuple, options: dict, desc: str
) -> History:
    """:data:`FAST_PHASE`, then the given options with a cosine over
    :data:`SECOND_PHASE_EPOCHS` epochs from the first phase's best state; the state with
    the lower validation loss of the two is kept. One history for both."""
    phases = [{**options, **FAST_PHASE}, {**options, "max_epochs": SECOND_PHASE_EPOCHS}]
    for phase, name in zip(phases, PHASE_NAMES, strict=True):
        for key in ("checkpoint", "resume"):
            if phase.get(key) is not None:
                phase[key] = member_path(phase[key], name)
    first = _train(post, data, val_data, phases[0], f"{desc} (fast phase)",
                   f"two_phase:{PHASE_NAMES[0]}")  # fmt: skip
    cap = options.get("_epoch_cap")  # max_epochs given: both phases together
    if cap is not None:
        left = cap - len(first.train_loss)
        if left <= 0:
            return first
        phases[1]["max_epochs"] = min(SECOND_PHASE_EPOCHS, left)
    budget = options.get("time_budget")
    if budget is not None:  # the second phase gets what the first left
        left = budget - (first.time[-1] if first.time else 0.0)
        if left <= 0:
            return first
        phases[1]["time_budget"] = left
    best_first = {k: v.detach().clone() for k, v in post.estimator.state_dict().items()}
    second = _train(post, data, val_data, phases[1], desc, f"two_phase:{PHASE_NAMES[1]}")
    second_best = second.best_loss < first.best_loss
    if not second_best:  # the second phase never did better
        post.estimator.load_state_dict(best_first)
    return merge_histories(first, second, second_best)


def _train(
    post: Posterior, data: Any, val_data: Any, options: dict, desc: str, run: str
) -> History:
    """One :func:`pyroflows.train.fit` of the current networks, with the posterior's
    :func:`fingerprint` stored in its checkpoint and compared on resume."""
    options = {k: v for k, v in options.items() if k != "_epoch_cap"}
    return fit(post.estimator, nll, data, val_data, desc=desc, **options,
               fingerprint=fingerprint(post, run))  # fmt: skip


def fingerprint(post: Posterior, run: str) -> dict[str, Any]:
    """What a checkpoint of this posterior's training must share with a run resuming
    from it, beyond the training tensors and the loop's settings (which the loop checks
    itself): the sites (names, shapes, supports), the preprocessing of theta and x (fitted
    on the simulations), the data's shape, the flow family and its options, the summary
    network, and which run of the recipe wrote it."""
    digest = hashlib.sha256()
    for pre in (post.theta_pre, post.x_pre):
        for key, value in pre.state_dict().items():
            digest.update(key.encode())
            digest.update(value.detach().to(torch.float64).cpu().numpy().tobytes())
    summary = post.estimator.summary
    config = getattr(summary, "config", None)
    space = post.space
    sites = [
        f"{n}{tuple(shape)}:{describe_constraint(encode_constraint(support))}"
        for n, shape, support in zip(space.names, space.shapes, space.supports, strict=True)
    ]
    return {
        "posterior_sites": ", ".join(sites),
        "posterior_preprocessing": digest.hexdigest()[:20],
        "posterior_x_shape": str(tuple(post.x_shape)),
        "posterior_flow": f"{post.flow_name} {sorted(plain(post.flow_kwargs).items())}",
        "posterior_summary": f"{type(summary).__name__} {plain(config)}",
        "posterior_run": run,
    }


# -- online ----------------------------------------------------------------------------------
def fit_online(post: Posterior, call: FitCall, options: dict[str, Any]) -> Posterior:
    """Fresh simulations at every step (a :class:`~pyroflows.train.sources.Simulations`
    source of ``steps_per_epoch`` batches an epoch, exactly ``steps`` steps), validated on
    ``num_validation`` simulations drawn once (which also set up a first fit)."""
    steps = call.steps
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        theta_val, x_val, val_dropped = check_training(
            *post._simulate_many(call.num_validation), post.space, post.observations
        )
        if post.estimator is None:
            setup(post, theta_val, x_val)
    if post._members:  # flow="auto" online: the first family (see AUTO_FLOWS)
        post._choose(next(iter(post._members)))
    for w in caught:  # anything but the count of skipped rows (reported once, below)
        if "were skipped" not in str(w.message):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    val_data = post._training_tensors(theta_val, x_val)
    per_epoch = min(call.steps_per_epoch, steps)
    source, dropped = _simulations(post, options["batch_size"], per_epoch)
    options["max_epochs"] = math.ceil(steps / per_epoch)
    options["max_steps"] = steps  # exactly ``steps`` steps (the last epoch shorter)
    post.history = _train(post, source, val_data, options, "NPE online", "online")
    dropped[0] += val_dropped
    if dropped[0]:
        warnings.warn(
            f"{dropped[0]} simulations contained NaN or infinite values and were skipped "
            "during online training",
            RuntimeWarning,
            stacklevel=4,
        )
    post.dropped += dropped[0]
    post.heldout_sbc_ = None
    if call.check_heldout:
        try:
            post.heldout_sbc_ = heldout_check(post, theta_val, x_val, call.seed)
        except RejectionError as error:
            _skipped_check(error)
    return post


def _simulations(
    post: Posterior, batch_size: int, steps: int
) -> tuple[torch.utils.data.DataLoader, list[int]]:
    """A loader of ``steps`` fresh encoded batches of ``batch_size`` simulations (those with
    non-finite values dropped and counted in the list returned). The simulations draw from
    the loop's seeded random streams, in the order the old loss closure drew them: the
    loader gets a private generator, since it would otherwise draw its workers' base seed
    from torch's global stream at every epoch."""
    dropped = [0]

    def draw() -> tuple[Tensor, Tensor]:
        theta, x = post.simulate(batch_size)
        post.observations.check(x, "the simulator's x", values=False)  # never reinterpreted
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            theta, x, n_bad = drop_invalid(theta, x, post.observations.nan_padding)
        dropped[0] += n_bad
        device = post._device  # simulated on the CPU; trained there
        return tuple(t.to(device) for t in post._training_tensors(theta, x))

    source = Simulations(draw, steps)
    loader = torch.utils.data.DataLoader(source, batch_size=None, generator=torch.Generator())
    return loader, dropped
