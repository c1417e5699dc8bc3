"""What a density fit trains on: :class:`Rows`, made from the user's data by
:func:`rows_in_memory` (arrays) or :func:`rows_streamed` (a memory-mapped ``.npy`` file).

Both hold out the validation rows (:func:`pyroflows.estimator.split_validation`, or
:func:`pyroflows.train.recipe.validation_rows` drawn from one NumPy generator for a file),
check the rows against the bounds naming the user's row, fit the float64 pre-transform on the
training rows, cast them once with :func:`pyroflows.preprocess.to_latent`, and record the
shifts that report losses in the data's units and the digests that name the rows in a
checkpoint. A new kind of data source for :class:`~pyroflows.density.DensityEstimator` is a
function here that returns :class:`Rows`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pyroflows import streaming
from pyroflows.estimator import split_validation
from pyroflows.preprocess import Preprocessor, fit_preprocessor_chunks, to_latent
from pyroflows.train import History
from pyroflows.train.recipe import validation_rows

__all__ = ["RowOptions", "Rows", "rows_in_memory", "rows_streamed", "to_data_units"]


@dataclass(frozen=True)
class RowOptions:
    """How an estimator turns data into rows: ``check(X, name, offset)`` refuses rows outside
    the bounds, ``fit_pre(X, X_val, weight, val_weight)`` fits the pre-transform of in-memory
    rows (it may choose it on the validation rows ``X_val``, weighted by the rows' weights when
    there are any); ``whiten`` and ``bounds`` give that of a streamed
    file (``whiten="auto"`` standardises a file: the choice is measured on in-memory rows
    only); the split's ``fraction`` and ``random_state``; the ``batch_size`` of streamed
    blocks; the flow's ``dtype`` and ``device``."""

    check: Callable[..., None]
    fit_pre: Callable[..., Preprocessor]
    whiten: bool | str
    bounds: Any
    fraction: float
    random_state: Any
    batch_size: int
    dtype: torch.dtype
    device: Any


@dataclass
class Rows:
    """What every member of a fit trains on."""

    pre: Preprocessor
    train: Any  # standardised rows (a tensor) or a loader of streamed blocks
    Z_val: torch.Tensor | None
    sample: torch.Tensor  # standardised training rows in memory (all, or a subsample)
    shifts: tuple[float, float | None]  # standardised -> data units: train, validation
    data: dict[str, str | None]  # digests of the training and validation rows (data units)
    weight: np.ndarray | None = None  # the training rows' weights (None: unweighted)
    val_weight: np.ndarray | None = None  # the validation rows' weights


def rows_in_memory(
    X: np.ndarray,
    X_val: np.ndarray | None,
    opt: RowOptions,
    weight: np.ndarray | None = None,
    val_weight: np.ndarray | None = None,
) -> Rows:
    """In-memory rows: split, pre-transform, standardised tensors. With ``weight`` (one per
    row of ``X``, checked) the held-out rows take their weights with them, the losses are
    shifted to the data's units by the weighted mean log-Jacobian, and the weights' digest
    joins the rows' in ``data["weight"]``; ``val_weight`` are those of ``X_val``."""
    opt.check(X, "X")  # before the split: the row numbers are the user's
    if X_val is not None:
        opt.check(X_val, "X_val")
    if X_val is None:
        train, held = split_validation(np.arange(len(X)), opt.fraction, opt.random_state)
        X, X_val = X[train], None if held is None else X[held]
        if weight is not None:
            weight, val_weight = weight[train], None if held is None else weight[held]
    pre = opt.fit_pre(X, X_val, weight, val_weight).to(opt.device)
    Z, ladj = to_latent(pre, X, opt.dtype, opt.device)
    digest = hashlib.sha256(np.ascontiguousarray(X).tobytes())
    mean_ladj = _mean(ladj, weight)
    rows = _rows(pre, Z, Z, mean_ladj, X_val, _digest(digest, X.shape), opt, val_weight)
    if weight is not None:
        rows.weight, rows.val_weight = weight, val_weight
        rows.data["weight"] = _weights_digest(weight, val_weight)
    return rows


def _mean(values: torch.Tensor, weight: np.ndarray | None) -> float:
    """The mean of ``values``, weighted when there are weights."""
    if weight is None:
        return float(values.mean())
    return float(np.average(values.double().cpu().numpy(), weights=weight))


def _weights_digest(weight: np.ndarray, val_weight: np.ndarray | None) -> str:
    """How a checkpoint names the weights of the training and validation rows."""
    digest = hashlib.sha256(np.ascontiguousarray(weight, dtype=np.float64).tobytes())
    if val_weight is not None:
        digest.update(b"|" + np.ascontiguousarray(val_weight, dtype=np.float64).tobytes())
    return f"{len(weight)} weights, sha256 {digest.hexdigest()[:16]}"


def rows_streamed(rows: np.ndarray, X_val: np.ndarray | None, opt: RowOptions) -> Rows:
    """Rows of a memory-mapped file: held-out validation rows and a subsample in memory,
    statistics in one streaming pass, training rows streamed in shuffled blocks."""
    n, dim = rows.shape
    rng = np.random.default_rng(opt.random_state)
    train = np.ones(n, dtype=bool)
    held_out = None
    n_val = validation_rows(n, opt.fraction)
    if X_val is None and n_val > 0 and n >= 10:
        held_out = np.sort(rng.choice(n, n_val, replace=False))
        train[held_out] = False
        X_val = np.asarray(rows[held_out], dtype=np.float64)
    digest = hashlib.sha256()

    def training_chunks():
        """The training rows in file order, checked against the bounds (naming the row of
        the file) and hashed on the way."""
        for start in range(0, n, streaming.CHUNK_ROWS):
            chunk = np.asarray(rows[start : start + streaming.CHUNK_ROWS], dtype=np.float64)
            opt.check(chunk, "X", offset=start)
            chunk = chunk[train[start : start + streaming.CHUNK_ROWS]]
            digest.update(np.ascontiguousarray(chunk).tobytes())
            yield chunk

    if X_val is not None and held_out is None:
        opt.check(X_val, "X_val")
    whiten = opt.whiten is True
    pre = fit_preprocessor_chunks(training_chunks(), dim, whiten=whiten, bounds=opt.bounds)
    pre.choice_ = {"chosen": "whiten" if whiten else "standardise", "scores": {}, "seconds": 0.0}
    constant = np.flatnonzero(pre.std_ == 0)
    if constant.size:
        raise ValueError(f"X column(s) {constant.tolist()} are constant (zero variance)")
    pre = pre.to(opt.device)
    picked = np.sort(
        rng.choice(np.flatnonzero(train), min(100_000, int(train.sum())), replace=False)
    )
    sample, ladj = to_latent(pre, np.asarray(rows[picked], dtype=np.float64), opt.dtype, opt.device)
    blocks = streaming.Blocks(
        rows, train, lambda block: to_latent(pre, block, opt.dtype, opt.device)[0], opt.batch_size
    )
    loader = torch.utils.data.DataLoader(blocks, batch_size=None)
    data = _digest(digest, (int(train.sum()), dim))
    return _rows(pre, loader, sample, float(ladj.mean()), X_val, data, opt)


def _rows(
    pre: Preprocessor, train: Any, sample: torch.Tensor, ladj: float, X_val: Any, data: str,
    opt: RowOptions, val_weight: np.ndarray | None = None,
) -> Rows:  # fmt: skip
    Z_val, shift_val, val = None, None, None
    if X_val is not None:
        Z_val, ladj_val = to_latent(pre, X_val, opt.dtype, opt.device)
        if not bool(torch.isfinite(ladj_val).all()):
            raise ValueError("X_val has values on or outside the bounds")
        shift_val = -_mean(ladj_val, val_weight)
        val = _digest(hashlib.sha256(np.ascontiguousarray(X_val).tobytes()), X_val.shape)
    # losses are reported in the data's units: -mean log p(x) = -mean log q(z) - mean ladj
    return Rows(pre, train, Z_val, sample, (-ladj, shift_val), {"X": data, "X_val": val})


def _digest(digest: Any, shape: tuple[int, ...]) -> str:
    """How a checkpoint names the rows it was trained on: their shape and a SHA-256 prefix."""
    return f"{shape[0]} rows x {shape[1]}, sha256 {digest.hexdigest()[:16]}"


def to_data_units(history: History, offset: float, train: float, val: float | None) -> None:
    """Shift a member's history from standardised units and its own clock to the data's units
    and the clock of the whole fit."""
    history.time = [t + offset for t in history.time]
    history.train_loss = [v + train for v in history.train_loss]
    monitored = val if val is not None else train
    history.val_loss = [v + monitored for v in history.val_loss]
    history.best_loss += monitored
    history.start_loss += monitored
