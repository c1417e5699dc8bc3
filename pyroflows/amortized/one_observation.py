"""A posterior trained for one observation (:func:`~pyroflows.amortized.fit_sequential`): it
keeps that observation (``post.sequential_x_o``), warns when asked about other data and
refuses the tools that need a posterior amortized over the whole prior."""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor

__all__ = ["OtherObservationWarning", "refuse_for_one_observation", "warn_other_observation"]

#: observations within this relative tolerance of ``x_o`` are ``x_o``
RTOL = 1e-5


class OtherObservationWarning(RuntimeWarning):
    """Draws or densities asked of a one-observation posterior for another observation."""


def refuse_for_one_observation(post: Any, what: str) -> None:
    """A clear error for what needs an amortized posterior, asked of a sequential one."""
    if getattr(post, "sequential_x_o", None) is not None:
        raise ValueError(
            f"{what} needs a posterior amortized over the prior; this one was trained for one "
            "observation by fit_sequential (its last rounds simulated from a truncated prior)"
        )


def warn_other_observation(post: Any, batch: Tensor) -> None:
    """Warn when a batch of observations holds one that is not ``post.sequential_x_o``."""
    x_o = getattr(post, "sequential_x_o", None)
    if x_o is None:
        return
    x_o = x_o.to(batch.device, batch.dtype).reshape(batch.shape[1:])
    scale = float(x_o.abs().nan_to_num().max()) if x_o.numel() else 0.0
    same = torch.isclose(batch, x_o.expand_as(batch), rtol=RTOL, atol=RTOL * max(scale, 1e-12),
                         equal_nan=True).reshape(len(batch), -1).all(-1)  # fmt: skip
    others = int((~same).sum())
    if others:
        warnings.warn(
            f"{others} of {len(batch)} observation(s) are not the one this posterior was "
            "trained for by fit_sequential: its last rounds simulated only parameters near "
            "that observation's posterior, so for other data its draws and densities can be "
            "cut off or wrong",
            OtherObservationWarning,
            stacklevel=3,
        )
