"""Racing the members of a portfolio: successive halving on the validation loss.

:func:`race_portfolio` has the signature of :func:`pyroflows.train.recipe.run_portfolio` and
trains the members by turns instead of one after the other: every member trains until it has
taken ``PILOT_STEPS`` optimiser steps or, with a time budget, trained for ``PILOT_SHARE`` of
it (the first rung), then the better half by best validation loss so far goes on to a rung
twice as long, and so on until one member is left, which trains to its own end (early
stopping, ``max_epochs`` or the time budget). A member that is dropped stops at once with its
best state restored, so the time the portfolio spends on members it does not keep is a
pilot's, not a whole fit's.

A member of the worse half is not dropped while it may still overtake the leader
(:data:`PILOT_RULE` ``"bound"``, the default): while its best loss minus its mean fall per
step over the last half of its epochs times the steps it could still take
(:func:`optimistic_loss`; at its last epoch's speed until the time budget ends, or the next
rung's steps without one) is below the leader's best loss. A member started from scratch
falls fast early and one started at a fitted mixture starts low and falls slowly, so ranking
by the loss alone after a short pilot drops the former even where it wins when trained
(digits16 in ``benchmarks/density_tables.py``).

Each member's fit runs in its own thread but only one trains at a time (the turn passes in the
training loop's ``callback`` after an epoch), so without a time budget the race is
deterministic: which member wins depends on the steps taken, not on the machine's speed (a
time budget makes the rungs end by time too, and the bound depends on the speed). The time
budget is one wall-clock budget for the whole race: every member's fit gets all of it, on one
clock. A fit with checkpoints (``checkpoint`` / ``resume``) runs the members one after the
other (:func:`~pyroflows.train.recipe.run_portfolio`), so that a resumed fit ends
bit-identical.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pyroflows.train.control import History
from pyroflows.train.recipe import Candidate, run_portfolio
from pyroflows.train.seeding import forked_streams

__all__ = [
    "PILOT_RULE",
    "PILOT_RULES",
    "PILOT_SHARE",
    "PILOT_STEPS",
    "RACING",
    "optimistic_loss",
    "projected_loss",
    "race_portfolio",
]

#: False: every member trains to its own end, one after the other (to measure what racing
#: costs in quality; benchmarks/density_tables.py --full)
RACING = True
#: optimiser steps of every member before the first halving (the rungs double after it)
PILOT_STEPS = 1000
#: with a time budget, a rung also ends for a member once it has trained this share of the
#: budget in it (the first rung; the share doubles with the rung)
PILOT_SHARE = 0.1
#: validation epochs every member has trained before it can be dropped
_MIN_EPOCHS = 3
#: how a halving ranks the members: ``"best"``, by the best validation loss so far;
#: ``"slope"``, by that loss extrapolated over the next rung (:func:`projected_loss`);
#: ``"bound"``, by the best loss, but a member of the worse half stays in the race while its
#: optimistic bound (:func:`optimistic_loss`) is below the leader's best loss
PILOT_RULE = "bound"
PILOT_RULES = ("best", "slope", "bound")


def projected_loss(val_loss: Sequence[float]) -> float:
    """The best of ``val_loss`` (one value per epoch, epochs of equal steps) extrapolated to
    twice as many epochs, as if the loss fell linearly in the log of the steps: the best so
    far minus its fall over the second half of the epochs (the next rung of a race doubles
    the steps, so a member still falling keeps the fall it had over the last doubling).

    Example:
        >>> projected_loss([4.0, 3.0, 2.0, 1.5])  # best 1.5; 3.0 after 2 of 4 epochs
        0.0
        >>> projected_loss([1.0, 1.0])
        1.0
    """
    values = [float(v) for v in val_loss]
    best = min(values)
    half = values[: max(1, len(values) // 2)]
    return best - (min(half) - best)


def optimistic_loss(val_loss: Sequence[float], steps: int, steps_left: float) -> float:
    """The best of ``val_loss`` (one value per epoch, epochs of equal steps, ``steps`` in all)
    minus its mean fall per step over the second half of the epochs times ``steps_left``: the
    loss a member would reach if it kept falling as fast as over its last doubling. Learning
    curves flatten, so a member is unlikely to beat this bound; the mean over half the curve,
    not the last epoch's fall, keeps one noisy epoch from stretching it. Values that are not
    finite are left out (infinity without any finite value).

    Example:
        >>> round(optimistic_loss([5.0, 4.0, 3.5, 3.2], steps=40, steps_left=20), 6)  # 0.04 a step
        2.4
        >>> optimistic_loss([3.0, 3.5], steps=20, steps_left=100)  # no fall: the best
        3.0
    """
    values = [float(v) for v in val_loss if math.isfinite(v)]  # an epoch cut by a deadline
    if not values:
        return math.inf
    half = max(1, len(values) // 2)
    best = min(values)
    if steps <= 0 or len(values) < 2:
        return best
    per_step = (min(values[:half]) - best) / ((len(values) - half) * steps / len(values))
    return best - per_step * max(steps_left, 0.0)


class _Race:
    """The turn and the rungs of one race (shared by the members' threads)."""

    def __init__(
        self, names: Sequence[str], pilot_steps: int, pilot_seconds: float | None,
        deadline: float | None = None,
    ):  # fmt: skip
        self.names = list(names)
        self.deadline = deadline  # the race's end on perf_counter's clock (a time budget)
        self.steps = dict.fromkeys(self.names, 0)  # a member's optimiser steps so far
        self.speed = dict.fromkeys(self.names, 0.0)  # its steps per second in its last epoch
        self.seconds = pilot_seconds  # a member's time in the current rung at most
        self.spent = dict.fromkeys(self.names, 0.0)  # a member's time in the current rung
        self.since = dict.fromkeys(self.names, 0.0)  # when it last got the turn
        self.alive = list(names)
        self.target = pilot_steps
        self.turn = self.names[0]
        self.best = {name: float("inf") for name in names}
        self.curves: dict[str, list[float]] = {name: [] for name in names}
        if PILOT_RULE not in PILOT_RULES:
            raise ValueError(f"PILOT_RULE must be one of {PILOT_RULES}, got {PILOT_RULE!r}")
        self.rule = PILOT_RULE
        self.waiting: set[str] = set()  # reached the current rung, waiting for the others
        self.running = set(names)  # whose fit has not returned
        self.failed = False  # a member raised: the others stop at their next epoch
        self.lock = threading.Condition()

    def wait_turn(self, name: str) -> None:
        with self.lock:
            self.lock.wait_for(lambda: self.turn == name or name not in self.alive)
            self.since[name] = time.perf_counter()

    def _pass_turn(self) -> None:
        """The next alive, running member that has not reached the rung trains; when all have,
        the worse half is dropped and the rung doubles."""
        pending = [n for n in self.alive if n in self.running and n not in self.waiting]
        if not pending and len(self.alive) > 1:
            ranked = sorted(self.alive, key=lambda n: (self._rank(n), self.names.index(n)))
            kept = ranked[: (len(ranked) + 1) // 2]
            self.alive = [n for n in self.names if n in kept]
            if self.rule == "bound":  # and every member that may still pass the leader
                lead = self.best[ranked[0]]
                bound = {n: self._bound(n) for n in ranked}
                kept += [n for n in ranked[len(kept) :] if bound[n] < lead]
                # the next rung trains the lowest bound first: with a time budget, a member
                # kept for what it may still gain gets its rung before the budget runs out
                self.alive = sorted(kept, key=lambda n: (bound[n], self.names.index(n)))
            self.waiting.clear()
            self.target *= 2
            self.spent = dict.fromkeys(self.names, 0.0)
            self.seconds = None if self.seconds is None else 2 * self.seconds
            pending = [n for n in self.alive if n in self.running]
        self.turn = pending[0] if pending else None
        self.lock.notify_all()

    def _bound(self, name: str) -> float:
        """:func:`optimistic_loss` of a member over the steps it could still take alone: at
        its last epoch's speed until the deadline, or (no time budget) the next rung's."""
        steps = self.steps[name]
        if self.deadline is None:
            left = float(self.target)  # the next rung doubles the target
        else:
            left = self.speed[name] * max(self.deadline - time.perf_counter(), 0.0)
        curve = optimistic_loss(self.curves[name], steps, left)
        return min(curve, self.best[name])  # the best includes a validated start

    def _rank(self, name: str) -> float:
        """What a halving sorts the members by (lower is kept)."""
        if self.rule == "slope" and self.curves[name]:
            return projected_loss(self.curves[name])
        return self.best[name]

    def after_epoch(self, name: str, epochs: int, history: History) -> bool:
        """The loop's callback: True stops this member (dropped from the race). ``epochs`` is
        the number of epochs trained so far, as :func:`pyroflows.train.fit` passes it (1 after
        the first epoch)."""
        with self.lock:
            # the best so far includes a validated start (fit's validate_start)
            self.best[name] = min(
                self.best[name], float(history.val_loss[-1]), float(history.best_loss)
            )
            self.curves[name] = [float(v) for v in history.val_loss]
            if self.failed:
                return True
            if len(self.alive) == 1:
                return False
            now = time.perf_counter()
            if now > self.since[name] and history.steps > self.steps[name]:
                self.speed[name] = (history.steps - self.steps[name]) / (now - self.since[name])
            self.steps[name] = history.steps
            self.spent[name] += now - self.since[name]
            self.since[name] = now
            out_of_time = self.seconds is not None and self.spent[name] >= self.seconds
            if (history.steps < self.target and not out_of_time) or epochs < _MIN_EPOCHS:
                return False
            self.waiting.add(name)
            self._pass_turn()
            self.lock.wait_for(lambda: self.turn == name or name not in self.alive or self.failed)
            self.since[name] = time.perf_counter()
            return name not in self.alive or self.failed

    def finished(self, name: str, history: History | None) -> None:
        with self.lock:
            self.failed = self.failed or history is None
            self.running.discard(name)
            if history is not None and history.val_loss:
                self.best[name] = min(self.best[name], float(history.best_loss))
            self.waiting.discard(name)
            if self.turn == name or self.turn is None:
                self._pass_turn()
            self.lock.notify_all()


def race_portfolio(
    names: Sequence[str],
    fit_member: Callable[[str, dict[str, Any]], tuple[History, Any]],
    *,
    time_budget: float | None = None,
    checkpoint: str | Path | None = None,
    resume: str | Path | None = None,
    shares: Sequence[float] | None = None,
    pilot_steps: int | None = None,
) -> tuple[Candidate, list[Candidate]]:
    """Race the members: successive halving on the validation loss, one member training at a
    time; ``run`` holds ``time_budget`` (the whole budget, one clock for the race),
    ``checkpoint`` / ``resume`` (None) and ``callback`` (the race's, for the training loop).

    With one member, with ``checkpoint`` / ``resume``, or with :data:`RACING` False, this is
    :func:`~pyroflows.train.recipe.run_portfolio` (then ``shares`` apply; a race ignores
    them: the rungs share the time).

    Returns:
        ``(best, candidates)`` as :func:`~pyroflows.train.recipe.run_portfolio`, the
        candidates in the order given; the best has the lowest ``history.best_loss``.

    Example:
        >>> def fit_member(name, run):  # a loop that calls the race after each epoch, as fit
        ...     h = History()  # does: with the number of epochs trained so far
        ...     for epochs in range(1, 101):
        ...         h.val_loss.append({"a": 2.0, "b": 1.0}[name] + 1 / epochs)
        ...         h.steps, h.best_loss = 10 * epochs, min(h.val_loss)
        ...         if run["callback"](epochs, h):
        ...             break
        ...     return h, len(h.val_loss)
        >>> best, every = race_portfolio(["a", "b"], fit_member, pilot_steps=50)
        >>> best.name, [c.result for c in every]  # "a" dropped after its pilot of 5 epochs
        ('b', [5, 100])
    """
    if not RACING or len(names) < 2 or checkpoint is not None or resume is not None:
        return run_portfolio(
            names, fit_member, time_budget=time_budget, checkpoint=checkpoint, resume=resume,
            shares=shares,
        )  # fmt: skip
    deadline = None if time_budget is None else time.perf_counter() + time_budget
    race = _Race(
        names,
        PILOT_STEPS if pilot_steps is None else pilot_steps,
        None if time_budget is None else PILOT_SHARE * time_budget,
        deadline,
    )
    candidates = _run(race, names, fit_member, deadline)
    return min(candidates, key=lambda c: c.history.best_loss), candidates


def _run(
    race: _Race,
    names: Sequence[str],
    fit_member: Callable[[str, dict[str, Any]], tuple[History, Any]],
    deadline: float | None,
) -> list[Candidate]:
    """Every member's fit in its own thread, by the race's turns; the candidates in the
    order of ``names`` (an error of a member is raised here, after every thread ended)."""
    out: dict[str, Any] = {}

    def member(name: str) -> None:
        history = None
        try:
            race.wait_turn(name)
            left = None if deadline is None else max(deadline - time.perf_counter(), 1e-3)
            run = {"time_budget": left, "checkpoint": None, "resume": None,
                   "callback": lambda epochs, h: race.after_epoch(name, epochs, h)}  # fmt: skip
            began = time.perf_counter()
            history, result = fit_member(name, run)
            out[name] = Candidate(name, history, time.perf_counter() - began, result)
        except BaseException as error:  # noqa: BLE001 - re-raised in the caller's thread
            out[name] = error
        finally:
            race.finished(name, history)

    threads = [threading.Thread(target=member, args=(n,), daemon=True) for n in names]
    # the members' loops fork and seed the global generator in turns: restore it once here
    with forked_streams():
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    for name in names:
        if isinstance(out[name], BaseException):
            raise out[name]
    return [out[name] for name in names]
