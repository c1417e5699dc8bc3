"""One ``fit`` call of an amortized posterior, checked once: :class:`FitCall`.

:func:`check_call` runs every check of :meth:`AmortizedPosterior.fit`'s arguments before
anything is simulated or changed (one mode, the options of that mode and of the loop, the
parallel options, the weights, the recipe) and returns them as one frozen record with the
defaults filled in. The recipe (:func:`pyroflows.amortized.recipe.fit_posterior`) and the
ensemble (:func:`pyroflows.amortized.ensemble.fit_ensemble`) take that record: an ensemble
checks its call once and hands each member a copy with the member's own seed and files
(:meth:`FitCall.for_member`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from torch import Tensor

from pyroflows.amortized.parallel import CHUNK_SIZE, check_parallel
from pyroflows.amortized.weights import checked_weight
from pyroflows.train import check_options
from pyroflows.train.checkpoint import member_path
from pyroflows.validation import positive_int

__all__ = ["RECIPES", "TRAIN_DEFAULTS", "FitCall", "check_call"]

#: training defaults: sbi's NPE batch, learning rate, clipping and 10 % validation, with the rate
#: decayed by a cosine over 300 epochs and early stopping after 50 epochs without a better
#: validation loss (sbi: a constant rate, 20 epochs); the best validation state is kept. Two
#: moons at 10 000 simulations with the first-layer-only conditioners of earlier defaults, five
#: training seeds: C2ST 0.581 +- 0.017 in about 65 s, where a constant rate with patience 20
#: gave 0.610-0.627 (three seeds); sbi 0.567 +- 0.012 (benchmarks/amortized.py --seeds).
#: ``overfit_window=20`` also stops a fit whose validation loss has risen away from its best
#: for 20 epochs: on the 30 benchmark fits (three tasks, two budgets, five seeds) it never
#: stopped before the best epoch of the fit without it, so it keeps the same state, and it
#: ends the linear Gaussian's fits after 25-34 epochs instead of 54-56 (best at epoch 3-5).
TRAIN_DEFAULTS: dict[str, Any] = dict(
    batch_size=200, lr=5e-4, schedule="cosine", max_epochs=300, patience=50, clip_grad=5.0,
    overfit_window=20, seed=0,
)  # fmt: skip
#: ``fit(recipe=...)``: ``"two_phase"`` (the default offline, with a validation split) or
#: ``"one_phase"`` (one run of :func:`pyroflows.train.fit` with the options given)
RECIPES = ("two_phase", "one_phase")
#: the options the two-phase recipe sets itself: given to ``fit`` they need
#: ``recipe="one_phase"``. ``max_epochs`` given to a two-phase fit caps both phases together.
RECIPE_OPTIONS = ("lr", "schedule", "patience", "max_steps")
#: the epochs of the two-phase recipe's second phase (the cosine runs over them;
#: :data:`pyroflows.amortized.recipe.FAST_PHASE` describes the recipe)
SECOND_PHASE_EPOCHS = 100
#: the defaults of the online options
ONLINE_DEFAULTS: dict[str, int] = dict(num_validation=1000, steps_per_epoch=200)


@dataclass(frozen=True)
class FitCall:
    """The checked arguments of one :meth:`AmortizedPosterior.fit` (see :func:`check_call`).

    Attributes:
        theta, x: the simulations given (None with ``num_simulations`` or online).
        num_simulations: simulations the fit draws (None otherwise).
        simulate_online: fresh simulations at every step.
        steps, num_validation, steps_per_epoch: the online fit's length, held-out set and
            steps between validations (defaults filled in; ``steps`` None offline).
        validation_fraction: share of offline simulations held out.
        recipe: the recipe asked for (None: the default of the mode).
        two_phases: whether the offline fit runs the two-phase recipe.
        num_workers, executor: how ``num_simulations`` are simulated (None: in this process).
        weight: the checked ``sample_weight`` (float64, one per row of ``theta``) or None.
        train_options: the options for :func:`pyroflows.train.fit` as given (read-only).
        check_heldout: run the calibration check on the held-out simulations after the fit
            (:mod:`~pyroflows.amortized.heldout`; off for an ensemble's members).
    """

    theta: Any
    x: Any
    num_simulations: int | None
    simulate_online: bool
    steps: int | None
    num_validation: int
    steps_per_epoch: int
    validation_fraction: float
    recipe: str | None
    two_phases: bool
    num_workers: int | None
    executor: Any
    weight: Tensor | None
    train_options: Mapping[str, Any]
    check_heldout: bool = True

    @property
    def seed(self) -> Any:
        """The seed given (None when left out: then only the loop uses its default, 0)."""
        return self.train_options.get("seed")

    @property
    def parallel(self) -> dict[str, Any]:
        """``num_workers`` and ``executor``, as :meth:`AmortizedPosterior.simulate` takes them."""
        return {"num_workers": self.num_workers, "executor": self.executor}

    def for_member(self, i: int, k: int, theta: Any, x: Any) -> FitCall:
        """Member ``i`` of ``k`` of an ensemble: a fit on the simulations ``theta``, ``x``
        (drawn once for all members) with seed ``seed + i`` (``seed`` 0 when left out), its
        own ``checkpoint`` / ``resume`` file (``run.ckpt`` -> ``run.member{i}.ckpt``) and a
        ``k``-th of the ``time_budget``."""
        base = 0 if self.seed is None else int(self.seed)
        options = dict(self.train_options, seed=base + i)
        for key in ("checkpoint", "resume"):
            if options.get(key) is not None:
                options[key] = member_path(options[key], f"member{i}")
        if options.get("time_budget") is not None:
            options["time_budget"] = options["time_budget"] / k
        offline = not self.simulate_online
        return dataclasses.replace(
            self, theta=theta if offline else None, x=x if offline else None,
            num_simulations=None, num_workers=None, executor=None,
            train_options=MappingProxyType(options), check_heldout=False,
        )  # fmt: skip


def check_call(
    theta: Any = None,
    x: Any = None,
    *,
    num_simulations: int | None = None,
    simulate_online: bool = False,
    steps: int | None = None,
    validation_fraction: float | None = None,
    num_validation: int | None = None,
    steps_per_epoch: int | None = None,
    recipe: str | None = None,
    num_workers: int | None = None,
    executor: Any = None,
    sample_weight: Any = None,
    train_options: Mapping[str, Any] | None = None,
) -> FitCall:
    """The checks of a ``fit`` call (the arguments of :meth:`AmortizedPosterior.fit`, None
    where left out) before anything is simulated or changed; the checked call.

    Raises:
        ValueError: not exactly one mode, an option of the other mode, a bad value, an option
            the two-phase recipe sets itself, ``num_workers`` / ``executor`` without
            ``num_simulations``, ``sample_weight`` without ``theta`` and ``x``.
        TypeError: a misspelt or reserved training option.

    Example:
        >>> call = check_call(num_simulations=500, train_options={"seed": 1})
        >>> call.validation_fraction, call.two_phases, call.seed
        (0.1, True, 1)
        >>> check_call(num_simulations=500, steps=10)
        Traceback (most recent call last):
        ...
        ValueError: steps=10 would be ignored by an offline fit: ...
    """
    options = dict(train_options or {})
    modes = [theta is not None or x is not None, num_simulations is not None, simulate_online]
    if sum(modes) != 1:
        raise ValueError(
            "fit takes exactly one of: theta and x (tensors), num_simulations, or "
            "simulate_online=True"
        )
    _check_train_options(options)
    given = dict(steps=steps, validation_fraction=validation_fraction,
                 num_validation=num_validation, steps_per_epoch=steps_per_epoch)  # fmt: skip
    _check_mode(simulate_online, given, options)
    if num_workers is not None or executor is not None:
        if num_simulations is None:
            raise ValueError("num_workers / executor simulate: they need fit(num_simulations=)")
        check_parallel(num_workers, executor, CHUNK_SIZE)
    weight = None
    if sample_weight is not None:
        if theta is None or x is None:
            raise ValueError(
                "sample_weight= weighs a fixed set of simulations, fit(theta, x, "
                "sample_weight=w); simulations drawn by the fit (num_simulations, "
                "simulate_online) have no weights to give: simulate them first with "
                "simulate() and pass theta, x and their weights"
            )
        weight = checked_weight(sample_weight, theta)
    fraction = 0.1 if validation_fraction is None else validation_fraction
    if not simulate_online and not 0 <= fraction < 1:
        raise ValueError(f"validation_fraction must lie in [0, 1), got {fraction}")
    two_phases = uses_two_phases(recipe, simulate_online, fraction, options)
    if num_simulations is not None:
        positive_int("num_simulations", num_simulations)
    elif not simulate_online and (theta is None or x is None):
        raise ValueError("fit(theta, x) needs both theta and x")
    online = {k: ONLINE_DEFAULTS[k] if given[k] is None else given[k] for k in ONLINE_DEFAULTS}
    if simulate_online:
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
            raise ValueError(f"simulate_online=True needs steps=<positive int>, got {steps!r}")
        for name, value in online.items():
            positive_int(name, value)
    return FitCall(
        theta=theta, x=x, num_simulations=num_simulations, simulate_online=simulate_online,
        steps=steps, validation_fraction=fraction, recipe=recipe, two_phases=two_phases,
        num_workers=num_workers, executor=executor, weight=weight,
        train_options=MappingProxyType(options), **online,
    )  # fmt: skip


def uses_two_phases(
    recipe: Any, online: bool, validation_fraction: float, options: Mapping[str, Any]
) -> bool:
    """Whether ``fit`` runs the two-phase recipe; ValueError for a recipe that cannot run, or
    an option the two-phase recipe sets itself given without ``recipe="one_phase"``."""
    if recipe is not None and recipe not in RECIPES:
        raise ValueError(f"recipe must be one of {list(RECIPES)} or None, got {recipe!r}")
    if online or recipe == "one_phase":
        if recipe == "two_phase":
            raise ValueError(
                "recipe='two_phase' is for offline fits: an online fit runs one phase over its "
                "steps (leave recipe out)"
            )
        return False
    if validation_fraction == 0:
        if recipe == "two_phase":
            raise ValueError(
                "recipe='two_phase' needs a validation split (validation_fraction > 0): each "
                "phase keeps its best validation state"
            )
        return False
    fixed = [key for key in RECIPE_OPTIONS if key in options]
    if fixed:
        given = ", ".join(f"{key}={options[key]!r}" for key in fixed)
        raise ValueError(
            f"{given}: the default two-phase recipe sets {'/'.join(fixed)} itself (lr 2e-3 "
            "constant until 10 epochs without progress, then lr 5e-4 with a cosine over "
            f"{SECOND_PHASE_EPOCHS} epochs and patience 50); pass recipe='one_phase' to train "
            f"in one phase with {given}"
        )
    return True


def _check_train_options(options: Mapping[str, Any]) -> None:
    """A TypeError for a misspelt (or reserved) training option and the loop's own error for
    a bad value (``lr=-1``), before anything is simulated (the loop would only find them after
    the simulations and the set-up)."""
    reserved = sorted(set(options) & {"desc", "steps_per_epoch", "val_weight"})
    if reserved:
        raise TypeError(
            f"unknown training option(s) {reserved}: Posterior.fit sets these itself (the "
            "validation simulations' weights come from sample_weight)"
        )
    check_options(**{**TRAIN_DEFAULTS, **options})


def _check_mode(online: bool, given: Mapping[str, Any], train_options: Mapping) -> None:
    """An option of the other mode would be ignored: refused instead."""
    other = ("validation_fraction",) if online else (
        "steps", "num_validation", "steps_per_epoch")  # fmt: skip
    ignored = [name for name in other if given[name] is not None]
    if ignored:
        mode = "an online fit" if online else "an offline fit"
        raise ValueError(
            f"{', '.join(f'{n}={given[n]!r}' for n in ignored)} would be ignored by {mode}: "
            + ("validation_fraction splits offline simulations (online, num_validation "
               "sets the held-out set)" if online else
               "steps, num_validation and steps_per_epoch are for simulate_online=True "
               "(offline, the number of epochs is max_epochs with recipe='one_phase')")
        )  # fmt: skip
    online_only = sorted({"max_epochs", "max_steps"} & set(train_options))
    if online and online_only:
        raise ValueError(f"{online_only} would be ignored by an online fit: steps= sets its length")
