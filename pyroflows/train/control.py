"""What the loop records and what decides when it stops: :class:`History`, the divergence
guard (:class:`TrainingDiverged`), early stopping and the progress bar."""

from __future__ import annotations

import copy
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn


class TrainingDiverged(RuntimeError):
    """The loss or its gradient stayed non-finite after every retry; ``history`` is the
    loop's :class:`History` at that point (``diverged_steps`` names the steps), or None."""

    def __init__(self, message: str, history: History | None = None):
        super().__init__(message)
        self.history = history


@dataclass
class History:
    """What happened during :func:`fit`: one entry per epoch in the lists of losses, learning
    rates and times; ``restarts`` counts the epochs retried after a non-finite loss or gradient
    and ``diverged_steps`` holds the step (1-based, counting kept steps) where each happened.
    ``start_loss`` is the validation loss before the first step (NaN unless ``fit`` ran with
    ``validate_start=True``); ``best_epoch`` -1 with a finite ``best_loss`` means that the
    starting state stayed the best."""

    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    time: list[float] = field(default_factory=list)
    best_epoch: int = -1
    best_loss: float = math.inf
    stop_reason: str = ""
    restarts: int = 0
    steps: int = 0
    diverged_steps: list[int] = field(default_factory=list)
    start_loss: float = math.nan

    def as_dict(self) -> dict:
        """Plain Python types only (so it can be saved with ``torch.save`` and loaded with
        ``weights_only=True``)."""
        return dict(self.__dict__)


# -- divergence guard ---------------------------------------------------------------------------
class _DivergenceGuard:
    """Keeps the last good model and optimiser state; on a failure restores it and lowers the
    learning rate, and raises :class:`TrainingDiverged` after ``max_retries`` consecutive
    failures (a successful epoch resets the count)."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        max_retries: int,
        backoff: float,
    ):
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.max_retries, self.backoff = max_retries, backoff
        self.consecutive = 0
        self.save()

    def save(self, steps: int = 0) -> None:
        self.state = (
            copy.deepcopy(self.model.state_dict()),
            copy.deepcopy(self.optimizer.state_dict()),
            None if self.scheduler is None else copy.deepcopy(self.scheduler.state_dict()),
            steps,
        )

    def success(self, steps: int) -> None:
        self.consecutive = 0
        self.save(steps)

    def restore(self, history: History) -> None:
        """Load the last good model, optimiser and schedule state."""
        self.model.load_state_dict(self.state[0])
        self.optimizer.load_state_dict(self.state[1])
        if self.scheduler is not None:  # the retried steps run at the schedule's same place
            self.scheduler.load_state_dict(self.state[2])
        history.steps = self.state[3]  # only the steps kept count (``max_steps``)

    def failure(self, epoch: int, history: History) -> None:
        history.restarts += 1
        self.consecutive += 1
        lrs = [group["lr"] for group in self.optimizer.param_groups]
        self.restore(history)
        if self.consecutive > self.max_retries:
            history.stop_reason = "diverged"
            raise TrainingDiverged(
                f"the loss or its gradient became non-finite in epoch {epoch} (at step "
                f"{history.diverged_steps[-1] if history.diverged_steps else '?'}) and stayed so "
                f"after {self.max_retries} retries with a lower learning rate; the last good "
                "state is loaded. If the loss is non-finite from the start, look at its inputs "
                "first (a target log density that is -inf or NaN where the flow puts mass, "
                "data with inf); otherwise try a smaller lr, stronger clip_grad, or "
                "standardised data.",
                history,
            )
        for group, lr in zip(self.optimizer.param_groups, lrs, strict=True):
            group["lr"] = lr * self.backoff
        if self.scheduler is not None and hasattr(self.scheduler, "base_lrs"):
            # schedules that recompute the lr from their base lrs must see the back-off too
            self.scheduler.base_lrs = [lr * self.backoff for lr in self.scheduler.base_lrs]


# -- early stopping -----------------------------------------------------------------------------
class _EarlyStopping:
    """Tracks the best monitored loss and its model state, and says when to stop."""

    def __init__(self, patience: int | None, min_delta: float, overfit_window: int | None = None):
        self.patience, self.min_delta = patience, min_delta
        self.overfit_window = overfit_window
        self.best_state: dict[str, Tensor] | None = None
        self.waited = 0

    def update(self, model: nn.Module, loss: float, epoch: int, history: History, keep: bool):
        """Record an epoch's monitored loss; ``keep`` stores the state when it is the best."""
        if loss < history.best_loss - self.min_delta:
            history.best_loss, history.best_epoch = loss, epoch
            self.waited = 0
            if keep:
                self.best_state = copy.deepcopy(model.state_dict())
        else:
            self.waited += 1

    @property
    def stop(self) -> bool:
        return self.patience is not None and self.waited >= self.patience

    def overfitting(self, monitored: Sequence[float], best: float) -> bool:
        """Whether each of the last ``overfit_window`` monitored losses lies above ``best`` by
        more than twice the median absolute change between consecutive ones among them: the
        loss has moved away from its best for that long, by more than it wanders (a rising
        validation loss: overfitting), rather than drifting around it on a plateau. Only with
        a patience (no early stopping of any kind without one)."""
        window = self.overfit_window
        if self.patience is None or window is None or len(monitored) < window:
            return False
        recent = torch.tensor(monitored[-window:], dtype=torch.float64)
        if not bool(torch.isfinite(recent).all()) or not math.isfinite(best):
            return False
        wander = recent.diff().abs().median()
        return bool(recent.min() > best + 2.0 * wander)


# -- progress -----------------------------------------------------------------------------------
def _in_notebook() -> bool:
    shell = sys.modules.get("IPython")
    if shell is None:
        return False
    ip = shell.get_ipython() if hasattr(shell, "get_ipython") else None
    return ip is not None and type(ip).__name__ == "ZMQInteractiveShell"


def show_progress(progress: bool | str) -> bool:
    """Whether to draw a progress bar: ``"auto"`` means in notebooks and interactive
    terminals, never in CI (``CI`` set), with ``PYROFLOWS_PROGRESS=0``, or when standard
    error is not a terminal."""
    if progress != "auto":
        return bool(progress)
    if os.environ.get("CI") or os.environ.get("PYROFLOWS_PROGRESS") == "0":
        return False
    return _in_notebook() or (hasattr(sys.stderr, "isatty") and sys.stderr.isatty())


class _Progress:
    def __init__(self, total: int, enabled: bool, desc: str):
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=desc, leave=False)

    def update(self, history: History) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(
                train=f"{history.train_loss[-1]:.4g}", val=f"{history.val_loss[-1]:.4g}"
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
