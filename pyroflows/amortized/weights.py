"""Weighted simulations: one non-negative weight per simulation of ``fit(theta, x,
sample_weight=w)``.

A weighted posterior fit minimises ``sum_i w_i nll_i / sum_i w_i`` over the simulations
(:mod:`pyroflows.train.weights`: the loop's weighted loss), and the standardisations of
``theta`` and ``x`` are the weighted ones (weighted mean and maximum-likelihood standard
deviation, :func:`standardisation`). An integer weight ``k`` is therefore the same fit as the
simulation repeated ``k`` times (with a full batch and no validation split: the same loss to
rounding; tests/test_amortized_weights.py). Simulations of weight zero are removed before the
split, as if they had not been passed.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from pyroflows.preprocess import Preprocessor, fit_preprocessor
from pyroflows.train.weights import check_sample_weight
from pyroflows.transforms import FixedAffine

__all__ = ["checked_weight", "standardisation"]


def checked_weight(weight: Any, theta: Any) -> Tensor:
    """``weight`` as a float64 tensor with one finite, non-negative value per row of
    ``theta``, not all zero (:func:`pyroflows.train.weights.check_sample_weight`'s errors,
    which name ``sample_weight`` and the problem)."""
    try:
        rows = len(theta)
    except TypeError:
        raise ValueError("sample_weight needs theta with one row per simulation") from None
    return torch.from_numpy(check_sample_weight(weight, rows))


def standardisation(rows: Tensor, weight: Tensor | None, name: str) -> Preprocessor:
    """The per-column standardisation of ``rows (n, k)`` in float64: plain
    (:func:`pyroflows.preprocess.fit_preprocessor`) without ``weight``, else with the
    weighted mean and the weighted maximum-likelihood standard deviation (constant columns
    keep scale 1), which for integer weights are those of the repeated rows.

    Example:
        >>> pre = standardisation(torch.tensor([[0.0], [3.0]]), torch.tensor([2.0, 1.0]), "x")
        >>> pre.to_latent(torch.tensor([[1.0]], dtype=torch.float64))[0].item()
        0.0
    """
    if weight is None:
        return fit_preprocessor(rows, name=name)
    x = rows.to(torch.float64)
    w = weight.to(torch.float64)
    w = w / w.sum()
    loc = (w[:, None] * x).sum(0)
    std = (w[:, None] * (x - loc) ** 2).sum(0).sqrt()
    pre = Preprocessor([FixedAffine(loc, torch.diag(torch.where(std > 0, std, 1.0)))])
    pre.std_ = std.numpy()
    return pre
