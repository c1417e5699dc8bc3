"""Loading a posterior: model, data and reference draws."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pyroflows.datasets.posteriors.registry import RESERVED, SPECS

DATA = Path(__file__).parent / "data"
SPLITS = ("development", "confirmation", "all")


@dataclass
class Posterior:
    """A Pyro model with its data and reference draws.

    Attributes:
        name: registry name (posteriordb's ``data-model`` name where it comes from there).
        model: the Pyro model, called as ``model(**kwargs)``.
        kwargs: the model's keyword arguments (data tensors and options).
        reference: reference draws, ``{site: array of shape (n, *site_shape)}``, float32, in
            each site's natural (constrained) parameterisation.
        split: ``"development"`` or ``"confirmation"``.
        kind: what the posterior exercises (``"regression"``, ``"funnel"`` ...).
        source: where the reference draws come from (``"posteriordb"``, ``"Pyro NUTS"``,
            ``"exact"``).
    """

    name: str
    model: Callable[..., None]
    kwargs: dict[str, Any]
    reference: dict[str, np.ndarray]
    split: str
    kind: str
    source: str

    @property
    def num_reference(self) -> int:
        return len(next(iter(self.reference.values())))


def names(split: str = "development") -> list[str]:
    """Registry names of one split: ``"development"``, ``"confirmation"`` or ``"all"``.

    Raises:
        ValueError: an unknown split.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if split == "all":
        return list(SPECS)
    want = split == "confirmation"
    return [n for n in SPECS if (n in RESERVED) == want]


def load(name: str, dtype: torch.dtype = torch.float32, seed: int = 0) -> Posterior:
    """Load one posterior by name (see :func:`names`).

    Args:
        name: registry name.
        dtype: dtype of the data tensors (and of synthetic models' constants).
        seed: seed of the exact sampler of a synthetic target (2000 draws); unused otherwise.

    Raises:
        KeyError: an unknown name (the message lists the known ones).
    """
    if name not in SPECS:
        raise KeyError(f"unknown posterior {name!r}; known: {', '.join(SPECS)}")
    spec = SPECS[name]
    split = "confirmation" if name in RESERVED else "development"
    if spec.exact is not None:
        kwargs: dict[str, Any] = {"dtype": dtype}
        reference = {k: v.astype(np.float32) for k, v in spec.exact(2000, seed).items()}
    else:
        with np.load(DATA / f"{name}.npz") as f:
            arrays = {k: f[k] for k in f.files}
        kwargs = {k[5:]: torch.as_tensor(v, dtype=dtype) for k, v in arrays.items()
                  if k.startswith("data_")}  # fmt: skip
        reference = {k[4:]: v for k, v in arrays.items() if k.startswith("ref_")}
    kwargs.update(spec.options)
    return Posterior(name, spec.model, kwargs, reference, split, spec.kind, spec.source)
