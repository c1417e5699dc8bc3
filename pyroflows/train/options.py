"""The loop's settings: :class:`_Options` (the keyword arguments of
:func:`pyroflows.train.fit`, checked once), the device, and the learning-rate schedules."""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from pyroflows.train.control import History


# -- options ------------------------------------------------------------------------------------
@dataclass
class _Options:
    """The loop's settings (the keyword arguments of :func:`fit`), checked once by
    :meth:`check`, the one validation that :func:`fit` and :func:`check_options` share."""

    val_fn: Callable[[nn.Module], float] | None
    max_epochs: int
    max_steps: int | None
    steps_per_epoch: int | None
    batch_size: int
    lr: float
    weight_decay: float
    schedule: str | None
    clip_grad: float | None
    patience: int | None
    min_delta: float
    overfit_window: int | None
    time_budget: float | None
    max_retries: int
    lr_backoff: float
    progress: bool | str
    desc: str
    callback: Callable[[int, History], bool | None] | None
    checkpoint: str | Path | None
    checkpoint_every: int
    resume: str | Path | None
    seed: int | None
    device: str | torch.device | None
    fingerprint: dict[str, Any] | None
    validate_start: bool = False

    def identity(self, rows: int | None, seed: int | None) -> dict[str, Any]:
        """The settings a resumed run must share with the run that wrote the checkpoint
        (the caller's own ``fingerprint`` entries included)."""
        return {
            "rows": rows,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "schedule": self.schedule,
            # a schedule spans the run's length: a longer resumed run would change it
            "max_epochs": self.max_epochs if self.schedule not in (None, "constant") else None,
            "max_steps": self.max_steps if self.schedule not in (None, "constant") else None,
            "clip_grad": self.clip_grad,
            "seed": seed,
            **(self.fingerprint or {}),
        }

    def check(self) -> None:
        """Raise a ``ValueError`` naming the first option out of range, or a ``TypeError``
        naming the first one of the wrong kind (e.g. a string for ``lr``)."""

        self._check_kinds()
        self._check_ranges()
        self._check_fingerprint()
        resolve_device(self.device)

    def _check_kinds(self) -> None:
        for name in ("lr", "weight_decay", "min_delta", "lr_backoff", "clip_grad", "time_budget"):
            value = getattr(self, name)
            if value is None and name in ("clip_grad", "time_budget"):
                continue
            real = isinstance(value, numbers.Real) or (isinstance(value, Tensor) and not value.ndim)
            if isinstance(value, bool) or not real:
                raise TypeError(f"{name} must be a number, got {value!r}")
        for name in ("val_fn", "callback"):
            value = getattr(self, name)
            if value is not None and not callable(value):
                raise TypeError(f"{name} must be callable or None, got {value!r}")
        for name in ("checkpoint", "resume"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, (str, os.PathLike)):
                raise TypeError(
                    f"{name} must be a path (str or os.PathLike) or None, got {value!r}"
                )
        if self.seed is not None and (
            isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral)
        ):
            raise TypeError(f"seed must be an integer or None, got {self.seed!r}")
        if not isinstance(self.desc, str):
            raise TypeError(f"desc must be a string, got {self.desc!r}")
        if not isinstance(self.validate_start, bool):
            raise TypeError(f"validate_start must be True or False, got {self.validate_start!r}")

    def _check_ranges(self) -> None:
        def positive_int(name: str, value: Any) -> None:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")

        positive_int("max_epochs", self.max_epochs)
        if self.max_steps is not None:
            positive_int("max_steps", self.max_steps)
        positive_int("batch_size", self.batch_size)
        if self.steps_per_epoch is not None:
            positive_int("steps_per_epoch", self.steps_per_epoch)
        if self.patience is not None:
            positive_int("patience", self.patience)
        if self.overfit_window is not None:
            positive_int("overfit_window", self.overfit_window)
            if self.overfit_window < 2:
                raise ValueError(f"overfit_window must be at least 2, got {self.overfit_window}")
        if isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int):
            raise ValueError(f"max_retries must be an integer >= 0, got {self.max_retries!r}")
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be an integer >= 0, got {self.max_retries!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if self.clip_grad is not None and not self.clip_grad > 0:
            raise ValueError(f"clip_grad must be positive or None, got {self.clip_grad!r}")
        if not self.weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if not self.min_delta >= 0:
            raise ValueError(f"min_delta must be >= 0, got {self.min_delta!r}")
        if not 0 < self.lr_backoff < 1:
            raise ValueError(f"lr_backoff must lie in (0, 1), got {self.lr_backoff!r}")
        if self.time_budget is not None and not self.time_budget >= 0:
            raise ValueError(f"time_budget must be >= 0 or None, got {self.time_budget!r}")
        if not (self.schedule is None or isinstance(self.schedule, str)) or (
            self.schedule not in SCHEDULES
        ):
            raise ValueError(f"schedule must be one of {list(SCHEDULES)}, got {self.schedule!r}")
        if self.progress not in (True, False, "auto"):
            raise ValueError(f"progress must be True, False or 'auto', got {self.progress!r}")
        positive_int("checkpoint_every", self.checkpoint_every)

    def _check_fingerprint(self) -> None:
        if self.fingerprint is None:
            return
        if not isinstance(self.fingerprint, dict) or not all(
            isinstance(key, str) for key in self.fingerprint
        ):
            raise TypeError(
                f"fingerprint must be a dict with string keys, got {self.fingerprint!r}"
            )
        taken = sorted(set(self.fingerprint) & _LOOP_KEYS)
        if taken:
            raise ValueError(f"fingerprint keys {taken} are the loop's own; use other names")


#: the loop's own fingerprint entries (a caller's ``fingerprint`` may not reuse these names)
_LOOP_KEYS = frozenset(
    {"rows", "batch_size", "lr", "weight_decay", "schedule", "max_epochs", "max_steps",
     "clip_grad", "seed", "processes", "data", "val_data", "data_weight",
     "val_data_weight", "loss_fn"}
)  # fmt: skip


def resolve_device(device: str | torch.device | None) -> torch.device | None:
    """The device, or a ``ValueError`` if it cannot be used here (e.g. CUDA without a GPU)."""
    if device is None:
        return None
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device {device!r} is not a valid torch device") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} was requested but CUDA is not available here")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {str(device)!r} was requested but MPS is not available here")
    return device


# -- learning-rate schedule ---------------------------------------------------------------------
def _cosine(optimizer: torch.optim.Optimizer, total_steps: int):
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(total_steps, 1))


def _warmup_cosine(optimizer: torch.optim.Optimizer, total_steps: int):
    warmup = max(1, min(total_steps // 20, 500))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _warmup(optimizer: torch.optim.Optimizer, total_steps: int):
    warmup = max(1, min(100, total_steps // 10))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup))


#: name -> factory(optimizer, total_steps) of a per-step scheduler
SCHEDULES: dict[str | None, Callable | None] = {
    None: None,
    "constant": None,
    "warmup": _warmup,
    "cosine": _cosine,
    "warmup_cosine": _warmup_cosine,
}
