"""Per-row weights of weighted training: the one check of a ``sample_weight``, the
normalisation the loop applies, and the Kish effective sample size.

A weighted likelihood fit minimises ``sum_i w_i nll_i / sum_i w_i``. The loop divides the
weights by their mean over all training rows once (:func:`normalised`), so the loss of a
minibatch, ``mean_batch(w * nll)``, is an unbiased estimate of that weighted mean (the
weights travel with their rows through shuffling and batching), and over the full data it is
exactly that mean. Integer weights are therefore the same objective as duplicated rows: a
full-batch fit is identical to the fit on the duplicated rows, a minibatch step has the same
expected gradient.

Negative weights (as next-to-leading-order event generators produce) are refused: a row of
negative weight rewards the model for giving it zero density, so the loss of a batch in which
such rows dominate a region is unbounded below and the fit diverges there. Cancel them
against positive neighbours first (or drop them and say so) and train on the result.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["check_sample_weight", "check_weight_pairing", "effective_sample_size", "normalised"]


def check_sample_weight(weight: Any, n: int, name: str = "sample_weight") -> np.ndarray:
    """``weight`` as a float64 array of ``n`` finite, non-negative values, not all zero.

    Raises:
        ValueError: not 1-D of length ``n``, not numeric, NaN or infinite values, negative
            values (how many, the first row and its value), or all zero. The message names
            ``name`` and the problem.

    Example:
        >>> check_sample_weight([1, 2, 0], 3)
        array([1., 2., 0.])
        >>> check_sample_weight([1.0, -0.5], 2)
        Traceback (most recent call last):
        ...
        ValueError: sample_weight has 1 negative value(s) (first at row 1: -0.5); ...
    """
    if isinstance(weight, torch.Tensor):
        weight = weight.detach().cpu().numpy()
    try:
        w = np.asarray(weight, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be numeric, got {type(weight).__name__}") from None
    if w.ndim != 1 or len(w) != n:
        raise ValueError(
            f"{name} must be 1-D with one weight per row ({n}), got shape {tuple(w.shape)}"
        )
    bad = ~np.isfinite(w)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{name} has {int(bad.sum())} NaN or infinite value(s) (first at row {first}: "
            f"{w[first]})"
        )
    negative = w < 0
    if negative.any():
        first = int(np.flatnonzero(negative)[0])
        raise ValueError(
            f"{name} has {int(negative.sum())} negative value(s) (first at row {first}: "
            f"{w[first]:g}); weighted likelihood training needs weights >= 0 (a negative "
            "weight rewards zero density at its row and the loss is unbounded below): cancel "
            "negative weights against positive neighbours first"
        )
    if not w.sum() > 0:
        raise ValueError(f"{name} is all zero: no row would count")
    return w


def check_weight_pairing(
    sample_weight: Any, val_weight: Any, has_validation: bool, validation: str = "val_data"
) -> None:
    """Refuse weights on one side of a fit where the other side needs them too.

    Validation weights without validation rows have nothing to weigh; training weights with
    validation rows but without validation weights would compare a weighted training loss with
    an unweighted validation loss, so both are refused rather than guessed.

    Args:
        sample_weight: the training rows' weights, or None.
        val_weight: the validation rows' weights, or None.
        has_validation: whether the caller was given validation rows.
        validation: how the validation rows are called in messages (``"X_val"``,
            ``"val_data"``).

    Raises:
        ValueError: ``val_weight`` without validation rows, or ``sample_weight`` with
            validation rows and no ``val_weight``.

    Example:
        >>> check_weight_pairing([1.0, 2.0], [1.0], has_validation=True)
        >>> check_weight_pairing(None, [1.0], has_validation=False, validation="X_val")
        Traceback (most recent call last):
        ...
        ValueError: val_weight needs X_val
    """
    if val_weight is not None and not has_validation:
        raise ValueError(f"val_weight needs {validation}")
    if sample_weight is not None and has_validation and val_weight is None:
        raise ValueError(
            f"sample_weight with {validation} needs val_weight (the weights of the {validation} "
            "rows; pass ones for an unweighted validation loss)"
        )


def normalised(weight: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    """The weights divided by their mean, as a tensor of ``like``'s dtype and device.

    Example:
        >>> normalised(np.array([1.0, 3.0]), torch.zeros(1)).tolist()
        [0.5, 1.5]
    """
    w = np.asarray(weight, dtype=np.float64)
    return torch.as_tensor(w / w.mean(), dtype=like.dtype, device=like.device)


def effective_sample_size(weight: Any) -> float:
    """Kish's effective sample size ``(sum w)^2 / sum w^2`` (``n`` for equal weights).

    Example:
        >>> effective_sample_size([1, 1, 1, 1]), effective_sample_size([1, 0, 0, 0])
        (4.0, 1.0)
    """
    w = np.asarray(weight, dtype=np.float64)
    return float(w.sum() ** 2 / np.square(w).sum())
