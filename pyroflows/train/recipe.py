"""The recipe of a fit, shared by every job: how many rows are held out for validation, and
a portfolio of model families trained one after the other on the same split and batches,
the one with the lowest validation loss kept (``flow="auto"`` of the density estimator and
of the amortized posterior). A job supplies how to train one member; the recipe shares out
the time budget, names each member's checkpoint file, times the members and picks the best.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyroflows.train.checkpoint import member_path
from pyroflows.train.control import History

__all__ = ["Candidate", "merge_histories", "run_portfolio", "validation_rows"]


def validation_rows(n: int, fraction: float) -> int:
    """How many of ``n`` rows a ``fraction`` holds out: ``round(fraction * n)``, at least one
    and at most ``n - 1`` (both sides keep a row); none when ``fraction`` is 0.

    Example:
        >>> validation_rows(1000, 0.1), validation_rows(3, 0.1), validation_rows(10, 0.0)
        (100, 1, 0)
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"validation_fraction must lie in [0, 1), got {fraction!r}")
    if fraction == 0.0:
        return 0
    return min(max(1, int(round(fraction * n))), n - 1)


@dataclass
class Candidate:
    """One trained member of a portfolio: its name, history, seconds, and whatever the job's
    ``fit_member`` returned beside the history (e.g. the flow)."""

    name: str
    history: History
    seconds: float
    result: Any = None


def run_portfolio(
    names: Sequence[str],
    fit_member: Callable[[str, dict[str, Any]], tuple[History, Any]],
    *,
    time_budget: float | None = None,
    checkpoint: str | Path | None = None,
    resume: str | Path | None = None,
    shares: Sequence[float] | None = None,
) -> tuple[Candidate, list[Candidate]]:
    """Train each member in turn with ``fit_member(name, run)`` and keep the best.

    ``run`` holds the member's ``time_budget`` (its share of what is left: ``shares``, equal
    by default; the last member gets all that is left), and its ``checkpoint`` / ``resume``
    files (``run.ckpt`` -> ``run.<name>.ckpt`` when there are several members). The best is
    the lowest ``history.best_loss``; the first listed wins a tie.

    Returns:
        ``(best, candidates)``, the candidates in the order trained.

    Example:
        >>> def fit_member(name, run):
        ...     return History(best_loss={"a": 2.0, "b": 1.0}[name]), name.upper()
        >>> best, every = run_portfolio(["a", "b"], fit_member, checkpoint="run.ckpt")
        >>> best.name, best.result, [c.name for c in every]
        ('b', 'B', ['a', 'b'])
    """
    if not names:
        raise ValueError("a portfolio needs at least one member")
    shares = [1.0] * len(names) if shares is None else [float(s) for s in shares]
    if len(shares) != len(names) or not all(s > 0 for s in shares):
        raise ValueError(f"shares must be {len(names)} positive numbers, got {shares!r}")
    several = len(names) > 1
    start, candidates = time.perf_counter(), []
    for i, name in enumerate(names):
        run: dict[str, Any] = {"time_budget": None}
        if time_budget is not None:
            left = max(time_budget - (time.perf_counter() - start), 1e-3)
            run["time_budget"] = left * shares[i] / sum(shares[i:])
        for key, path in (("checkpoint", checkpoint), ("resume", resume)):
            run[key] = member_path(path, name) if path is not None and several else path
        began = time.perf_counter()
        history, result = fit_member(name, run)
        candidates.append(Candidate(name, history, time.perf_counter() - began, result))
    best = min(candidates, key=lambda c: c.history.best_loss)
    return best, candidates


def merge_histories(first: History, second: History, second_best: bool) -> History:
    """One history for a fit in two phases (the second continuing from the first's best
    state); the best epoch and loss are the second phase's when ``second_best``, else the
    first's.

    Example:
        >>> a = History(train_loss=[3.0, 2.0], val_loss=[3.1, 2.1], lr=[1, 1], time=[1.0, 2.0],
        ...             best_epoch=1, best_loss=2.1, steps=4)
        >>> b = History(train_loss=[1.5], val_loss=[1.9], lr=[0.5], time=[0.5], best_epoch=0,
        ...             best_loss=1.9, stop_reason="max_epochs", steps=2)
        >>> m = merge_histories(a, b, second_best=True)
        >>> m.best_epoch, m.time, m.steps, m.stop_reason
        (2, [1.0, 2.0, 2.5], 6, 'max_epochs')
    """
    offset = len(first.train_loss)
    elapsed = first.time[-1] if first.time else 0.0
    if second_best:
        best_epoch, best_loss = offset + second.best_epoch, second.best_loss
    else:
        best_epoch, best_loss = first.best_epoch, first.best_loss
    return History(
        train_loss=first.train_loss + second.train_loss,
        val_loss=first.val_loss + second.val_loss,
        lr=first.lr + second.lr,
        time=first.time + [elapsed + t for t in second.time],
        best_epoch=best_epoch,
        best_loss=best_loss,
        stop_reason=second.stop_reason,
        restarts=first.restarts + second.restarts,
        steps=first.steps + second.steps,
        diverged_steps=first.diverged_steps + [first.steps + s for s in second.diverged_steps],
        start_loss=first.start_loss,
    )
