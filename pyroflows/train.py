"""The one training loop of pyroflows, shared by density estimation, variational inference
and amortized inference.

:func:`fit` minimises ``loss_fn(model, batch)`` over minibatches of tensors (or over batches
that the loss draws itself, e.g. samples of a variational flow, when ``data`` is ``None``),
with Adam, an optional schedule, gradient clipping, a validation loss, early stopping that
restores the best state, a time budget, and a guard against divergence: a non-finite loss or
gradient restores the last good state, lowers the learning rate and retries, and gives up
with :class:`TrainingDiverged` after ``max_retries`` tries, leaving the last good state loaded.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

Batch = tuple[Tensor, ...]
LossFn = Callable[[nn.Module, Batch], Tensor]


class TrainingDiverged(RuntimeError):
    """The loss or its gradient stayed non-finite after every retry."""


@dataclass
class History:
    """What happened during :func:`fit`: one entry per epoch."""

    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    time: list[float] = field(default_factory=list)
    best_epoch: int = -1
    best_loss: float = math.inf
    stop_reason: str = ""
    restarts: int = 0
    steps: int = 0

    def as_dict(self) -> dict:
        """Plain Python types only (so it can be saved with ``torch.save`` and loaded with
        ``weights_only=True``)."""
        return dict(self.__dict__)


def _as_batch(data: Tensor | Sequence[Tensor] | None) -> Batch | None:
    if data is None:
        return None
    batch = (data,) if isinstance(data, Tensor) else tuple(data)
    if not batch or any(not isinstance(t, Tensor) for t in batch):
        raise TypeError("data must be a tensor or a sequence of tensors")
    n = len(batch[0])
    if n == 0:
        raise ValueError("training data is empty")
    if any(len(t) != n for t in batch):
        raise ValueError(
            f"all data tensors need the same number of rows, got {[len(t) for t in batch]}"
        )
    return batch


def _minibatches(data: Batch, batch_size: int, generator: torch.Generator | None, shuffle: bool):
    n = len(data[0])
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    order = order.to(data[0].device)
    for start in range(0, n, batch_size):
        index = order[start : start + batch_size]
        yield tuple(t[index] for t in data)


def _progress(total: int, enabled: bool, desc: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False)


def fit(
    model: nn.Module,
    loss_fn: LossFn,
    data: Tensor | Sequence[Tensor] | None = None,
    val_data: Tensor | Sequence[Tensor] | None = None,
    *,
    val_fn: Callable[[nn.Module], float] | None = None,
    max_epochs: int = 100,
    steps_per_epoch: int | None = None,
    batch_size: int = 256,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    schedule: str | None = None,
    clip_grad: float | None = 5.0,
    patience: int | None = 20,
    min_delta: float = 0.0,
    time_budget: float | None = None,
    max_retries: int = 3,
    lr_backoff: float = 0.5,
    seed: int | None = None,
    device: str | torch.device | None = None,
    progress: bool = False,
    desc: str = "training",
    callback: Callable[[int, History], bool | None] | None = None,
) -> History:
    """Train ``model`` in place by minimising ``loss_fn(model, batch)``.

    Args:
        model: the module to train (parameters are read once, after ``.to(device)``).
        loss_fn: maps the model and a minibatch (a tuple of tensors, or ``()`` when ``data``
            is None) to a scalar loss, e.g. the mean negative log-likelihood.
        data: training tensors sharing their first dimension (e.g. ``(x,)`` or
            ``(theta, context)``), or None when the loss draws its own batches.
        val_data: validation tensors; the validation loss is the row-weighted mean of
            ``loss_fn`` over them, without gradients and in eval mode.
        val_fn: a validation loss computed by the caller instead (``model -> float``).
        max_epochs: number of passes over ``data``.
        steps_per_epoch: steps per epoch when ``data`` is None (required then).
        batch_size: rows per minibatch.
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
        schedule: None (constant) or ``"cosine"`` (cosine decay over all steps).
        clip_grad: clip the gradient's global norm to this value (None: no clipping).
        patience: stop after this many epochs without a better validation loss (None: never).
        min_delta: smallest decrease that counts as better.
        time_budget: stop after this many seconds (checked at every step).
        max_retries: retries after a non-finite loss or gradient before giving up.
        lr_backoff: factor applied to the learning rate at each retry.
        seed: seed for the shuffling and the model's own randomness (``torch.manual_seed``).
        device: move the model and the data there first.
        progress: show a progress bar (notebook-aware).
        desc: label of the progress bar.
        callback: called as ``callback(epoch, history)`` after each epoch; returning True stops.

    Returns:
        The :class:`History`. With a validation loss the best state is loaded at the end.

    Raises:
        TrainingDiverged: when the loss or gradient stays non-finite after ``max_retries``.

    Example:
        >>> import pyroflows as pf
        >>> flow = pf.maf(2, layers=2, hidden=(16, 16))
        >>> x = torch.randn(512, 2) * 2 + 1
        >>> hist = fit(flow, lambda f, b: -f.log_prob(b[0]).mean(), x, max_epochs=3, seed=0)
        >>> len(hist.train_loss), hist.train_loss[-1] < hist.train_loss[0]
        (3, True)
    """
    train = _as_batch(data)
    val = _as_batch(val_data)
    if train is None and not steps_per_epoch:
        raise ValueError("steps_per_epoch is required when data is None")
    if batch_size < 1 or max_epochs < 1:
        raise ValueError("batch_size and max_epochs must be positive")
    if schedule not in (None, "cosine"):
        raise ValueError(f"schedule must be None or 'cosine', got {schedule!r}")
    if device is not None:
        model.to(device)
        train = None if train is None else tuple(t.to(device) for t in train)
        val = None if val is None else tuple(t.to(device) for t in val)
    if seed is not None:
        torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed) if seed is not None else None

    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    optimizer = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    n_steps = steps_per_epoch or math.ceil(len(train[0]) / batch_size)
    total_steps = n_steps * max_epochs
    scheduler = (
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, total_steps)
        if schedule == "cosine"
        else None
    )

    def validation_loss() -> float | None:
        if val_fn is not None:
            return float(val_fn(model))
        if val is None:
            return None
        was_training = model.training
        model.eval()
        total, rows = 0.0, 0
        with torch.no_grad():
            for batch in _minibatches(val, max(batch_size, 1024), None, shuffle=False):
                total += float(loss_fn(model, batch)) * len(batch[0])
                rows += len(batch[0])
        model.train(was_training)
        return total / rows

    history = History()
    good_state = (copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict()))
    best_state = None
    start = time.perf_counter()
    bar = _progress(max_epochs, progress, desc)
    epochs_without_gain = 0
    model.train()
    epoch = 0
    try:
        while epoch < max_epochs:
            losses, diverged, out_of_time = [], False, False
            batches = (
                _minibatches(train, batch_size, generator, shuffle=True)
                if train is not None
                else (() for _ in range(n_steps))
            )
            for batch in batches:
                loss = loss_fn(model, batch)
                if not torch.isfinite(loss):
                    diverged = True
                    break
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if clip_grad is not None:
                    norm = torch.nn.utils.clip_grad_norm_(params, clip_grad)
                else:
                    norm = torch.sqrt(
                        sum(
                            (p.grad.square().sum() for p in params if p.grad is not None),
                            torch.zeros(()),
                        )
                    )
                if not torch.isfinite(norm):
                    diverged = True
                    break
                optimizer.step()
                if scheduler is not None:
                    scheduler.step()
                history.steps += 1
                losses.append(loss.item())
                if time_budget is not None and time.perf_counter() - start > time_budget:
                    out_of_time = True
                    break
            if diverged:
                history.restarts += 1
                current_lrs = [group["lr"] for group in optimizer.param_groups]
                model.load_state_dict(good_state[0])
                optimizer.load_state_dict(good_state[1])
                if history.restarts > max_retries:
                    history.stop_reason = "diverged"
                    raise TrainingDiverged(
                        f"the loss or its gradient became non-finite in epoch {epoch} and "
                        f"stayed so after {max_retries} retries with a lower learning rate; "
                        "the last good state is loaded. Try a smaller lr, stronger clip_grad, "
                        "or standardised data."
                    )
                for group, current in zip(optimizer.param_groups, current_lrs, strict=True):
                    group["lr"] = current * lr_backoff
                continue  # retry the epoch from the last good state
            val_loss = validation_loss()
            history.train_loss.append(sum(losses) / max(len(losses), 1))
            history.val_loss.append(math.nan if val_loss is None else val_loss)
            history.lr.append(optimizer.param_groups[0]["lr"])
            history.time.append(time.perf_counter() - start)
            monitored = val_loss if val_loss is not None else history.train_loss[-1]
            if val_loss is not None and not math.isfinite(val_loss):
                monitored = math.inf
            if monitored < history.best_loss - min_delta:
                history.best_loss, history.best_epoch = monitored, epoch
                epochs_without_gain = 0
                if val_loss is not None:
                    best_state = copy.deepcopy(model.state_dict())
            else:
                epochs_without_gain += 1
            good_state = (copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict()))
            if bar is not None:
                bar.update(1)
                bar.set_postfix(
                    train=f"{history.train_loss[-1]:.4g}", val=f"{history.val_loss[-1]:.4g}"
                )
            epoch += 1
            if callback is not None and callback(epoch, history):
                history.stop_reason = "callback"
                break
            if out_of_time:
                history.stop_reason = "time_budget"
                break
            if patience is not None and epochs_without_gain >= patience:
                history.stop_reason = "early_stopping"
                break
        else:
            history.stop_reason = "max_epochs"
    finally:
        if bar is not None:
            bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return history
