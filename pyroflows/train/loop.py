"""The one training loop of pyroflows, shared by density estimation, variational inference
and amortized inference.

:func:`fit` minimises ``loss_fn(model, batch)`` over minibatches of tensors (or over batches
that the loss draws itself, e.g. samples of a variational flow, when ``data`` is ``None``),
with Adam, an optional schedule, gradient clipping, a validation loss, early stopping that
restores the best state, a time budget, and a guard against divergence: a non-finite loss or
gradient restores the last good state, lowers the learning rate and retries the epoch, and
gives up with :class:`TrainingDiverged` after ``max_retries`` consecutive failures, leaving
the last good state loaded. The parts it wires together live beside it: data sources
(``sources``), settings and schedules (``options``), history, guard, early stopping and
progress (``control``), checkpoints (``checkpoint``) and processes (``distributed``).
"""

from __future__ import annotations

import difflib
import inspect
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from pyroflows.train.checkpoint import (
    FORMAT,
    VERSION,
    atomic_save,
    data_fingerprint,
    load_checkpoint,
    loss_name,
    rng_state,
    set_rng_state,
)
from pyroflows.train.control import (
    History,
    TrainingDiverged,
    _DivergenceGuard,
    _EarlyStopping,
    _Progress,
    show_progress,
)
from pyroflows.train.distributed import Parallel
from pyroflows.train.distributed import setup as setup_parallel
from pyroflows.train.options import SCHEDULES, _Options, resolve_device
from pyroflows.train.sources import Batch, _as_batch, _Source
from pyroflows.train.weights import check_weight_pairing

LossFn = Callable[[nn.Module, Batch], Tensor]

__all__ = ["History", "TrainingDiverged", "check_options", "fit"]


# -- one epoch ----------------------------------------------------------------------------------
def _grad_norm(params: list[nn.Parameter], clip: float | None) -> Tensor:
    if clip is not None:
        return torch.nn.utils.clip_grad_norm_(params, clip)
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))


@dataclass
class _EpochResult:
    losses: list[Tensor]
    diverged: bool = False
    out_of_time: bool = False


def _train_epoch(
    model: nn.Module,
    loss_fn: LossFn,
    batches,
    optimizer: torch.optim.Optimizer,
    scheduler,
    params: list[nn.Parameter],
    clip_grad: float | None,
    deadline: float,
    history: History,
    parallel: Parallel | None,
    step_limit: float = math.inf,
) -> _EpochResult:
    result = _EpochResult([])
    for batch in batches:
        loss = loss_fn(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = _grad_norm(params, clip_grad)
        # one host synchronisation per step, for both checks
        diverged = not bool(torch.isfinite(loss.detach() + norm))
        if parallel is not None:  # every process takes the same decision
            diverged = parallel.any(diverged)
        if diverged:
            result.diverged = True
            history.diverged_steps.append(history.steps + 1)
            return result
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        history.steps += 1
        result.losses.append(loss.detach())
        if history.steps >= step_limit:  # a shorter last epoch: exactly max_steps steps
            break
        out_of_time = time.perf_counter() > deadline
        if parallel is not None and deadline < math.inf:
            out_of_time = parallel.any(out_of_time)
        if out_of_time:
            result.out_of_time = True
            break
    return result


def _validate(
    model: nn.Module, loss_fn: LossFn, val: _Source, deadline: float, parallel: Parallel | None
) -> float | None:
    """Row-weighted mean loss over the validation data in eval mode (over all processes);
    ``None`` when the time budget runs out before it is complete."""
    was_training = model.training
    model.eval()
    total, rows, aborted = 0.0, 0, False
    try:
        with torch.no_grad():
            for batch in val.batches(None, shuffle=False):
                if time.perf_counter() > deadline:
                    aborted = True
                    break
                if parallel is not None:
                    batch = parallel.shard(batch)
                    if len(batch[0]) == 0:
                        continue
                total += float(loss_fn(model, batch)) * len(batch[0])
                rows += len(batch[0])
    finally:
        model.train(was_training)
    if parallel is not None:
        total, rows, aborted = parallel.sum(total, rows, float(aborted))
    if aborted:
        return None
    if rows == 0:
        raise ValueError("val_data yielded no rows")
    return total / rows


def fit(
    model: nn.Module,
    loss_fn: LossFn,
    data: Tensor | Sequence[Tensor] | None = None,
    val_data: Tensor | Sequence[Tensor] | None = None,
    sample_weight: Any = None,
    val_weight: Any = None,
    *,
    val_fn: Callable[[nn.Module], float] | None = None,
    max_epochs: int = 100,
    max_steps: int | None = None,
    steps_per_epoch: int | None = None,
    batch_size: int = 256,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    schedule: str | None = None,
    clip_grad: float | None = 5.0,
    patience: int | None = 20,
    min_delta: float = 0.0,
    overfit_window: int | None = None,
    time_budget: float | None = None,
    max_retries: int = 3,
    lr_backoff: float = 0.5,
    seed: int | None = None,
    device: str | torch.device | None = None,
    progress: bool | str = "auto",
    desc: str = "training",
    callback: Callable[[int, History], bool | None] | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 1,
    resume: str | Path | None = None,
    fingerprint: dict[str, Any] | None = None,
    validate_start: bool = False,
) -> History:
    """Train ``model`` in place by minimising ``loss_fn(model, batch)``.

    Args:
        model: the module to train (parameters are read once, after ``.to(device)``).
        loss_fn: maps the model and a minibatch (a tuple of tensors, or ``()`` when ``data``
            is None) to a scalar loss, e.g. :func:`pyroflows.losses.nll`.
        data: training tensors sharing their first dimension (e.g. ``(x,)`` or
            ``(theta, context)``); or a torch ``DataLoader`` / ``IterableDataset`` whose
            batches are tensors or tuples of tensors (data larger than memory: the loader
            streams, one epoch is one pass over it); or None when the loss draws its own
            batches.
        val_data: validation tensors or loader; the validation loss is the row-weighted mean
            of ``loss_fn`` over them, without gradients and in eval mode.
        sample_weight: one non-negative weight per row of the in-memory ``data`` (an array
            or tensor), or None. The weights are divided by their mean over all rows and
            passed with their rows (through shuffling and batching) to the loss as
            ``loss_fn(model, batch, weight=w)``, which must accept ``weight`` (as
            :func:`pyroflows.losses.nll` does): the loss of a batch, ``mean(w * loss_i)``, is
            an unbiased estimate of the weighted mean ``sum w_i loss_i / sum w_i``, and
            exactly it over the full data, so integer weights are the objective of duplicated
            rows. NaN, infinite, negative or all-zero weights are refused
            (:func:`pyroflows.train.weights.check_sample_weight`). The weights' hash is part
            of every checkpoint: a checkpoint is never resumed with other weights.
        val_weight: the weights of the ``val_data`` rows, likewise; the validation loss is
            then their weighted mean. With ``sample_weight`` and ``val_data`` it is required
            (pass ones for an unweighted validation loss).
        val_fn: a validation loss computed by the caller instead (``model -> float``).
        max_epochs: number of passes over ``data``.
        max_steps: stop after exactly this many optimiser steps in all (the last epoch is
            cut short; ``stop_reason`` ``"max_steps"``), whichever of it and ``max_epochs``
            comes first; schedules are computed on the true number of steps. None: no limit.
        steps_per_epoch: steps per epoch when ``data`` is None (required then).
        batch_size: rows per minibatch.
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
        schedule: None or ``"constant"``, ``"warmup"`` (linear warm-up over the first 100
            steps, or a tenth of all steps if fewer, then constant), ``"cosine"`` (cosine decay
            over all steps) or ``"warmup_cosine"`` (warm-up over 5 % of the steps, then cosine).
        clip_grad: clip the gradient's global norm to this value (None: no clipping).
        patience: stop after this many epochs without a better validation loss (None: never).
        min_delta: smallest decrease that counts as better.
        overfit_window: with a ``patience``, also stop once each of the last
            ``overfit_window`` validation losses exceeds the best one by more than twice
            the median absolute change between consecutive ones in that window (a loss that
            has risen away from its best, not one wandering on a plateau; ``stop_reason``
            ``"overfitting"``). The state kept is the best one either way; None: off.
        time_budget: stop after this many seconds, validation included (checked at every
            step); an epoch whose validation the budget cuts short does not count.
        max_retries: consecutive retries after a non-finite loss or gradient before giving up.
        lr_backoff: factor applied to the learning rate at each retry.
        seed: seed of the shuffling and of the model's own randomness during training; the
            global random state is left as it was (the loop runs in a forked RNG).
        device: move the model and the data there first.
        progress: show a progress bar; ``"auto"``: in notebooks and terminals, not in CI.
        desc: label of the progress bar.
        callback: called as ``callback(epochs, history)`` after each epoch, ``epochs`` the
            number of epochs trained so far (1 after the first); returning True stops.
        checkpoint: write the whole loop state (model, optimiser, schedule, random streams,
            data order, early stopping, history, and the loss's own state when it has a
            ``state_dict``) to this file every ``checkpoint_every`` epochs and at the end,
            atomically (temporary file, fsync, rename). An existing file there that pyroflows
            did not write (e.g. the data) is refused before training, left as it was.
        checkpoint_every: the period of the checkpoints, in epochs.
        resume: continue from this checkpoint (e.g. the same path as ``checkpoint``) if the
            file exists; a seeded run interrupted and resumed ends with bit-identical
            parameters to an uninterrupted one. The settings and the loss (by its name,
            :func:`~pyroflows.train.checkpoint.loss_name`) must match the ones it was
            written with (a ``ValueError`` names those that differ), a checkpoint that has
            run more epochs or steps than ``max_epochs`` / ``max_steps`` is refused, and the
            in-memory ``data`` and ``val_data`` must be the same tensors (a hash of their
            shapes and bytes is stored in every checkpoint): a checkpoint is never resumed
            for other data.
        fingerprint: what else a checkpoint must match to be resumed, as a dict of plain
            values (e.g. a job's model options or a hash of a model's arguments), stored
            with the checkpoint and compared like the settings.
        validate_start: with a validation loss, also score the model as it is before the
            first step (``History.start_loss``) and count that state as a candidate for the
            best one (``best_epoch`` -1 when it stays the best): a model that starts at a
            fitted solution (a flow on a fitted mixture base) then never ends worse than its
            start on the validation rows.

    Returns:
        The :class:`History`. With a validation loss the best state is loaded at the end, and
        the model is left in eval mode (also when training diverged).

    Raises:
        TrainingDiverged: when the loss or gradient stays non-finite after ``max_retries``.
        ValueError: an option out of range, or a device that is not available (checked
            first, by the check that :func:`check_options` runs on its own); a ``resume``
            checkpoint that is corrupt, or was written with other settings or for another
            model (the model is then left as it was); a validation loss that is NaN the
            first time it is computed (NaN in ``val_data``: the model is left as it was
            before the epoch).
        TypeError: an option of the wrong kind (e.g. a string for ``lr``).

    Example:
        >>> import pyroflows as pf
        >>> flow = pf.maf(2, layers=2, hidden=(16, 16))
        >>> x = torch.randn(512, 2) * 2 + 1
        >>> hist = fit(flow, pf.losses.nll, x, max_epochs=3, seed=0)
        >>> len(hist.train_loss), hist.train_loss[-1] < hist.train_loss[0]
        (3, True)
    """
    options = _Options(
        val_fn=val_fn, max_epochs=max_epochs, steps_per_epoch=steps_per_epoch,
        batch_size=batch_size, lr=lr, weight_decay=weight_decay, schedule=schedule,
        clip_grad=clip_grad, patience=patience, min_delta=min_delta,
        overfit_window=overfit_window, time_budget=time_budget,
        max_retries=max_retries, lr_backoff=lr_backoff, progress=progress, desc=desc,
        callback=callback, checkpoint=checkpoint, checkpoint_every=checkpoint_every,
        resume=resume, seed=seed, device=device, max_steps=max_steps, fingerprint=fingerprint,
        validate_start=validate_start,
    )  # fmt: skip
    options.check()
    if val_fn is not None and val_data is not None:
        raise ValueError(
            "pass val_data or val_fn, not both: the validation loss would come from val_fn "
            "and val_data would be ignored"
        )
    if checkpoint is None and checkpoint_every != 1:
        raise ValueError(f"checkpoint_every={checkpoint_every!r} needs a checkpoint path")
    if checkpoint is not None:  # a slip such as checkpoint="data.csv" must not destroy data
        from pyroflows.estimator import refuse_to_overwrite  # (estimator imports train)

        refuse_to_overwrite(checkpoint, "checkpoint:")
    device = resolve_device(device)
    parallel = setup_parallel(device)
    if parallel is not None and device is not None and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    train, val, loss_fn = _sources(
        data, val_data, sample_weight, val_weight, loss_fn, batch_size, steps_per_epoch, device
    )
    if train.steps is None:
        raise ValueError(
            "steps_per_epoch is required when data is None or an iterable of unknown length"
        )
    if device is not None:
        model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    if seed is None:
        if parallel is not None and not train.empty:
            raise ValueError("multi-process training needs a seed (the same data order everywhere)")
        return _loop(model, loss_fn, train, val, params, options, None, None, parallel)
    on_cuda = params[0].device.type == "cuda"
    with torch.random.fork_rng(devices=[params[0].device] if on_cuda else []):
        # each process draws its own samples (its own stream), all shuffle the data alike
        torch.manual_seed(seed + (parallel.rank if parallel is not None else 0))
        generator = torch.Generator().manual_seed(seed)
        return _loop(model, loss_fn, train, val, params, options, generator, seed, parallel)


def _sources(
    data: Any, val_data: Any, sample_weight: Any, val_weight: Any, loss_fn: LossFn,
    batch_size: int, steps_per_epoch: int | None, device: torch.device | None,
) -> tuple[_Source, _Source | None, LossFn]:  # fmt: skip
    """The training and validation sources, and the loss that reads their weights: with
    weights on either side both sides carry them (ones where none were given), and the loss
    receives the last tensor of a batch as its ``weight``."""
    weighted = sample_weight is not None or val_weight is not None
    check_weight_pairing(sample_weight, val_weight, val_data is not None)
    if weighted:
        _check_weighted_loss(loss_fn)
        if sample_weight is None:  # the training rows get weight 1: the batches carry one
            if data is None or isinstance(data, _LOADERS):
                raise ValueError("val_weight needs data as in-memory tensors too")
            sample_weight = torch.ones(len(_as_batch(data, "data")[0]))
    train = _Source(data, "data", batch_size, steps_per_epoch, device, sample_weight)
    val = None
    if val_data is not None:
        val = _Source(val_data, "val_data", batch_size, None, device, val_weight, "val_weight")
    return train, val, (_WeightedLoss(loss_fn) if weighted else loss_fn)


_LOADERS = (torch.utils.data.DataLoader, torch.utils.data.IterableDataset)


def _check_weighted_loss(loss_fn: LossFn) -> None:
    """Refuse weights for a loss that would not use them."""
    try:
        parameters = inspect.signature(loss_fn).parameters
    except (TypeError, ValueError):
        parameters = {}
    if "weight" not in parameters:
        name = getattr(loss_fn, "__name__", type(loss_fn).__name__)
        raise TypeError(
            f"sample_weight / val_weight need a loss that takes the rows' weights, "
            f"loss_fn(model, batch, weight=None) (as pyroflows.losses.nll does); {name} does not"
        )


class _WeightedLoss:
    """``loss_fn(model, batch[:-1], weight=batch[-1])``: the weights ride as the last tensor
    of every batch; the loss's own state (annealing, plate nesting) is reached through it."""

    def __init__(self, loss_fn: LossFn):
        self.loss_fn = loss_fn

    def __call__(self, model: nn.Module, batch: tuple[Tensor, ...]) -> Tensor:
        return self.loss_fn(model, batch[:-1], weight=batch[-1])

    def __getattr__(self, name: str) -> Any:
        if name == "loss_fn":
            raise AttributeError(name)
        return getattr(self.loss_fn, name)


#: the options of :func:`fit` (its keyword-only arguments) and their defaults
_DEFAULTS: dict[str, Any] = {
    name: parameter.default
    for name, parameter in inspect.signature(fit).parameters.items()
    if parameter.kind is inspect.Parameter.KEYWORD_ONLY
}


def check_options(**options: Any) -> None:
    """Check training options as :func:`fit` does, without training anything.

    Takes any of the keyword-only arguments of :func:`fit` (the others keep their defaults)
    and raises exactly the error :func:`fit` would raise for them, since :func:`fit` runs
    the same check first; so a job can refuse bad settings before an expensive set-up
    (simulations, data loading). Returns None when they are fine. What depends on the data
    (e.g. ``steps_per_epoch`` required when ``data`` is None) or on the files (a ``resume``
    checkpoint written with other settings) is only known to :func:`fit`.

    Raises:
        TypeError: an unknown option name, or a value of the wrong kind.
        ValueError: a value out of range, an unknown schedule, or a device not available.

    Example:
        >>> check_options(lr=3e-3, batch_size=128, schedule="cosine", seed=0)
        >>> check_options(lr=-1)
        Traceback (most recent call last):
        ...
        ValueError: lr must be a positive number, got -1
        >>> check_options(max_epoch=10)
        Traceback (most recent call last):
        ...
        TypeError: unknown training option 'max_epoch' (did you mean 'max_epochs'?)
    """
    for name in options:
        if name not in _DEFAULTS:
            close = difflib.get_close_matches(str(name), list(_DEFAULTS), n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"known: {sorted(_DEFAULTS)}"
            raise TypeError(f"unknown training option {name!r} ({hint})")
    _Options(**{**_DEFAULTS, **options}).check()


class _Run:
    """The mutable state of one run of the loop: what a checkpoint holds."""

    def __init__(
        self, model, loss_fn, params, o: _Options, train: _Source, val, generator, seed, parallel
    ):
        self.model, self.loss_fn, self.o, self.generator = model, loss_fn, o, generator
        self.parallel = parallel
        self.optimizer = self._adam(params)
        self.total_steps = train.steps * o.max_epochs
        if o.max_steps is not None:
            self.total_steps = min(self.total_steps, o.max_steps)
        self.scheduler = self._scheduler(self.optimizer)
        self.history = History()
        self.guard = _DivergenceGuard(
            model, self.optimizer, self.scheduler, o.max_retries, o.lr_backoff
        )
        self.stopping = _EarlyStopping(o.patience, o.min_delta, o.overfit_window)
        self.epoch = 0
        self.elapsed = 0.0  # seconds spent before this process (a resumed run)
        self.fingerprint = o.identity(train.rows(), seed)
        self.fingerprint["processes"] = 1 if parallel is None else parallel.world
        weighted = isinstance(loss_fn, _WeightedLoss)  # weights are fingerprinted with the data
        self.fingerprint["loss_fn"] = loss_name(loss_fn.loss_fn if weighted else loss_fn)
        if o.checkpoint is not None or o.resume is not None:  # hashed only where it is used
            for key, source in (("data", train), ("val_data", val)):
                tensors = None if source is None else source.tensors
                weight = None
                if tensors is not None and source.weighted:
                    tensors, weight = tensors[:-1], data_fingerprint(tensors[-1:])
                self.fingerprint[key] = None if tensors is None else data_fingerprint(tensors)
                self.fingerprint[f"{key}_weight"] = weight

    def _adam(self, params: list[Tensor]) -> torch.optim.Optimizer:
        return torch.optim.Adam(params, lr=self.o.lr, weight_decay=self.o.weight_decay)

    def _scheduler(self, optimizer: torch.optim.Optimizer) -> Any:
        make_scheduler = SCHEDULES[self.o.schedule]
        return None if make_scheduler is None else make_scheduler(optimizer, self.total_steps)

    # -- checkpoints ----------------------------------------------------------------------
    def snapshot(self, elapsed: float) -> dict[str, Any]:
        """The checkpoint (on every process: the random streams of all are gathered)."""
        loss_state = getattr(self.loss_fn, "state_dict", None)
        rng = rng_state(self.generator)
        rngs = [rng] if self.parallel is None else self.parallel.gather(rng)
        return {
            "format": FORMAT,
            "version": VERSION,
            "epoch": self.epoch,
            "elapsed": elapsed,
            "fingerprint": self.fingerprint,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "history": self.history.as_dict(),
            "best_state": self.stopping.best_state,
            "waited": self.stopping.waited,
            "rng": rngs,
            "loss": loss_state() if callable(loss_state) else None,
        }

    def restore(self, path: str | Path) -> None:
        """Continue from the checkpoint at ``path``: all or nothing. Everything is checked
        against this run before anything is changed, so a refused checkpoint (other settings,
        another model) leaves the model, the optimiser and the loss as they were."""
        blob = load_checkpoint(path)
        written = blob["fingerprint"]
        differ = [
            f"{key} (written for other {key.replace('_', ' ')})"
            if key in ("data", "val_data", "data_weight", "val_data_weight")
            else f"{key} (checkpoint {written.get(key)!r}, now {value!r})"
            for key, value in self.fingerprint.items()
            # checkpoints written before the loss was recorded are compared without it
            if written.get(key) != value and (key != "loss_fn" or key in written)
        ]
        if differ:
            raise ValueError(f"{path} was written with other settings: {', '.join(differ)}")
        done = {"max_epochs": blob["epoch"], "max_steps": blob["history"]["steps"]}
        for option, count in done.items():
            limit = getattr(self.o, option)
            if limit is not None and count > limit:
                unit = option.removeprefix("max_")
                raise ValueError(
                    f"{path} has already run {count} {unit}, more than {option}={limit}: "
                    f"resume with {option} >= {count}, or start a new run without resume"
                )
        problem = self._mismatch(blob)
        if problem is not None:
            raise ValueError(f"{path} does not match this model ({problem})")
        history = History(**blob["history"])
        if history.stop_reason in ("max_epochs", "max_steps", "time_budget"):
            history.stop_reason = ""  # a resumed run may go on, with more epochs or time
        rng = blob["rng"][0 if self.parallel is None else self.parallel.rank]
        # the guard holds a copy of the model and optimiser state from before the restore
        scheduler_before = None if self.scheduler is None else self.scheduler.state_dict()
        loss_state = getattr(self.loss_fn, "state_dict", None)
        loss_before = loss_state() if callable(loss_state) else None
        try:
            # the modules' own loaders run (they accept the layouts of older versions); the
            # best state is loaded first only to check it, the model state then replaces it
            if blob["best_state"] is not None:
                self.model.load_state_dict(blob["best_state"])
            self.model.load_state_dict(blob["model"])
            self.optimizer.load_state_dict(blob["optimizer"])
            if self.scheduler is not None and blob["scheduler"] is not None:
                self.scheduler.load_state_dict(blob["scheduler"])
            if blob["loss"] is not None and hasattr(self.loss_fn, "load_state_dict"):
                self.loss_fn.load_state_dict(blob["loss"])
        except Exception as error:  # what the checks above cannot foresee: undo it all
            self.model.load_state_dict(self.guard.state[0])
            self.optimizer.load_state_dict(self.guard.state[1])
            if scheduler_before is not None:
                self.scheduler.load_state_dict(scheduler_before)
            if loss_before is not None:
                self.loss_fn.load_state_dict(loss_before)
            text = str(error).strip()
            first = text.splitlines()[0] if text else type(error).__name__
            raise ValueError(f"{path} does not match this model ({first})") from None
        self.history = history
        self.stopping.best_state = blob["best_state"]
        self.stopping.waited = blob["waited"]
        set_rng_state(rng, self.generator)
        self.epoch, self.elapsed = blob["epoch"], blob["elapsed"]
        self.guard.save(history.steps)

    def _mismatch(self, blob: dict[str, Any]) -> str | None:
        """Why the checkpoint's optimiser or schedule state would not load into this run, or
        None; changes nothing. (The model and best states are checked by loading them, with
        the modules' own loaders, and undone on failure.)"""
        # a dry run on a copy of the optimiser (and schedule) whose parameters take no memory
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        shadow = [torch.empty_like(p, device="meta") for p in params]
        try:
            optimizer = self._adam(shadow)
            optimizer.load_state_dict(blob["optimizer"])
            for p, param in zip(shadow, params, strict=True):
                for name, value in optimizer.state.get(p, {}).items():
                    if name != "step" and isinstance(value, Tensor) and value.shape != p.shape:
                        return (
                            f"optimizer: its {name} has shape {tuple(value.shape)}, the "
                            f"parameter {tuple(param.shape)}"
                        )
            scheduler = self._scheduler(optimizer)
            if scheduler is not None and blob["scheduler"] is not None:
                scheduler.load_state_dict(blob["scheduler"])
        except Exception as error:
            text = str(error).strip()
            return (
                f"optimizer or schedule: {text.splitlines()[0] if text else type(error).__name__}"
            )
        return None


def _loop(
    model: nn.Module,
    loss_fn: LossFn,
    train: _Source,
    val: _Source | None,
    params: list[nn.Parameter],
    o: _Options,
    generator: torch.Generator | None,
    seed: int | None,
    parallel: Parallel | None,
) -> History:
    """The epoch loop of :func:`fit`."""
    run = _Run(model, loss_fn, params, o, train, val, generator, seed, parallel)
    main = parallel is None or parallel.main
    if parallel is not None:
        loss_fn = parallel.wrap(model, loss_fn)
    if o.resume is not None and Path(o.resume).exists():
        run.restore(o.resume)
    history, stopping, guard, optimizer = run.history, run.stopping, run.guard, run.optimizer
    start = time.perf_counter() - run.elapsed
    deadline = math.inf if o.time_budget is None else start + o.time_budget
    bar = _Progress(o.max_epochs, main and show_progress(o.progress), o.desc)
    validated = o.val_fn is not None or val is not None
    step_limit = math.inf if o.max_steps is None else o.max_steps

    def save(final: bool = False) -> None:
        if o.checkpoint is not None and (final or run.epoch % o.checkpoint_every == 0):
            snapshot = run.snapshot(time.perf_counter() - start)
            if main:
                atomic_save(snapshot, o.checkpoint)

    def epoch_batches():
        batches = train.batches(generator, shuffle=True)
        if parallel is None or train.empty:
            return batches
        return (b for b in map(parallel.shard, batches) if len(b[0]))

    if o.validate_start and validated and run.epoch == 0:
        _validate_start(model, run, o, val, deadline, parallel)
    model.train()
    try:
        while run.epoch < o.max_epochs and history.steps < step_limit and not history.stop_reason:
            epoch = run.epoch
            result = _train_epoch(
                model, loss_fn, epoch_batches(), optimizer, run.scheduler, params, o.clip_grad,
                deadline, history, parallel, step_limit,
            )  # fmt: skip
            if result.diverged:
                guard.failure(epoch, history)
                continue  # retry the epoch from the last good state
            train_loss, val_loss = _epoch_losses(model, run, o, result, val, deadline, parallel)
            _check_first_validation(run, val_loss, train_loss)
            history.train_loss.append(train_loss)
            history.val_loss.append(math.nan if val_loss is None else val_loss)
            history.lr.append(optimizer.param_groups[0]["lr"])
            history.time.append(time.perf_counter() - start)
            if validated:
                if val_loss is not None:
                    monitored = val_loss if math.isfinite(val_loss) else math.inf
                    stopping.update(model, monitored, epoch, history, keep=True)
            else:
                stopping.update(model, history.train_loss[-1], epoch, history, keep=False)
            guard.success(history.steps)
            bar.update(history)
            run.epoch = epoch + 1
            history.stop_reason = _stop_reason(
                run, o, result.out_of_time, deadline, validated, step_limit, parallel
            )
            save(final=bool(history.stop_reason))
        if not history.stop_reason:  # resumed from the checkpoint of a finished run
            history.stop_reason = "max_steps" if history.steps >= step_limit else "max_epochs"
        if stopping.best_state is not None:
            model.load_state_dict(stopping.best_state)
    finally:
        bar.close()
        model.eval()
    return history


def _check_first_validation(run: _Run, val_loss: float | None, train_loss: float) -> None:
    """Refuse a validation loss that is NaN the first time it is computed (the start's
    included): with NaN every epoch ties, so early stopping and the choice of the best state
    would silently do nothing. The model, optimiser and schedule are put back as they were
    before the epoch (the state the caller passed in, for the first epoch)."""
    if val_loss is None or not math.isnan(val_loss):
        return
    history = run.history
    if math.isfinite(history.start_loss) or any(math.isfinite(v) for v in history.val_loss):
        return  # the validation data gave a number before: the model, not the data
    run.guard.restore(history)
    history.stop_reason = "invalid_validation"
    raise ValueError(
        f"the validation loss is NaN after epoch {run.epoch} (training loss {train_loss:.4g}): "
        "val_data (or val_fn) gives NaN, e.g. a NaN value in the validation rows, or rows "
        "outside the flow's support; early stopping and the best-state choice would be "
        "meaningless. The model is left as it was before the epoch."
    )


def _validate_start(
    model: nn.Module,
    run: _Run,
    o: _Options,
    val: _Source | None,
    deadline: float,
    parallel: Parallel | None,
) -> None:
    """The validation loss of the model before any step, recorded as ``start_loss`` and as
    the best so far (state kept, ``best_epoch`` -1) when it is finite."""
    if o.val_fn is not None:
        loss = float(o.val_fn(model))
    else:
        loss = _validate(model, run.loss_fn, val, deadline, parallel)
    if loss is None or not math.isfinite(loss):
        return
    run.history.start_loss = loss
    run.stopping.update(model, loss, -1, run.history, keep=True)
    run.stopping.waited = 0


def _epoch_losses(
    model: nn.Module,
    run: _Run,
    o: _Options,
    result: _EpochResult,
    val: _Source | None,
    deadline: float,
    parallel: Parallel | None,
) -> tuple[float, float | None]:
    """The epoch's mean training loss (over all processes) and its validation loss (None
    when there is none, or the time budget cut it short)."""
    if o.val_fn is not None:
        val_loss = float(o.val_fn(model))
    elif val is not None and not result.out_of_time:
        val_loss = _validate(model, run.loss_fn, val, deadline, parallel)
    else:
        val_loss = None
    train_loss = torch.stack(result.losses).mean().item() if result.losses else math.nan
    if parallel is not None:  # the mean over processes, the same number everywhere
        train_loss = parallel.sum(train_loss)[0] / parallel.world
    return train_loss, val_loss


def _stop_reason(
    run: _Run,
    o: _Options,
    out_of_time: bool,
    deadline: float,
    validated: bool,
    step_limit: float,
    parallel: Parallel | None,
) -> str:
    """Why the loop stops after this epoch, or ``""`` to go on (the callback runs here)."""
    history, stopping = run.history, run.stopping
    stop = o.callback is not None and bool(o.callback(run.epoch, history))
    late = out_of_time or time.perf_counter() > deadline
    if parallel is not None:  # every process takes the same decision
        stop, late = parallel.any(stop), parallel.any(late)
    if stop:
        return "callback"
    if late:
        return "time_budget"
    if stopping.stop:
        return "early_stopping"
    if stopping.overfitting(
        history.val_loss if validated else history.train_loss, history.best_loss
    ):
        return "overfitting"
    if history.steps >= step_limit:
        return "max_steps"
    if run.epoch == o.max_epochs:
        return "max_epochs"
    return ""
