"""The recipe of a density fit: the members that ``flow="auto"`` tries (:class:`Member`,
:data:`PORTFOLIO`, run on one split by :func:`pyroflows.train.recipe.run_portfolio`), the
Gaussian-mixture start of a member with ``base="gmm"`` (:func:`mixture_base`), and the
checkpoint files of a fit (:func:`checkpoint_files`, :func:`check_resume`), and the torch CPU
threads it runs with (:func:`torch_threads`). A new member of the
portfolio is one line in :data:`PORTFOLIO`.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pyroflows.bases import GaussianMixture
from pyroflows.checkpoint import load_checkpoint, member_path

__all__ = [
    "PORTFOLIO",
    "Member",
    "check_resume",
    "checkpoint_files",
    "mixture_base",
    "torch_threads",
]


@dataclass(frozen=True)
class Member:
    """One flow that ``flow="auto"`` fits: family, base and training recipe."""

    name: str
    flow: str
    base: str
    lr: float
    schedule: str | None
    patience: int
    share: float  # of the time budget left when the member starts (the last: all that is left)


#: What ``flow="auto"`` tries, in this order; the member with the best validation likelihood
#: is kept. A spline flow started at a Gaussian mixture fitted to the data (it needs a low
#: learning rate with a warm-up, or the first steps wreck the start) wins on low-dimensional
#: multimodal data; the plain spline flow wins on 30-60 dimensional data (measured in
#: benchmarks/quality.py).
PORTFOLIO = (
    Member("nsf-gmm", "nsf", "gmm", 3e-4, "warmup", 20, 0.4),
    Member("nsf", "nsf", "normal", 1e-3, None, 50, 0.6),
)


def checkpoint_files(path: str | Path, members: Sequence[Member]) -> list[Path]:
    """The files a fit with ``checkpoint=path`` may write: ``path`` itself and, for a
    portfolio of several ``members``, one file per member (``run.ckpt`` -> ``run.nsf.ckpt``),
    in sorted order."""
    return sorted({Path(path)} | {member_path(path, m.name) for m in members})


def check_resume(path: Any, expected: dict[str, Any]) -> None:
    """Refuse a checkpoint written for other data or another model, before any work."""
    if path is None or not Path(path).exists():
        return
    stored = load_checkpoint(path).get("fingerprint") or {}
    differ = [
        f"{key.removeprefix('estimator.')} (checkpoint {stored.get(key)!r}, now {value!r})"
        for key, value in expected.items()
        if stored.get(key) != value
    ]
    if differ:
        old = "estimator.X" not in stored
        raise ValueError(
            f"{path} was written with other settings: {', '.join(differ)}"
            + ("; it predates data fingerprints: remove it to start afresh" if old else "")
        )


def mixture_base(Z: torch.Tensor, Z_val: torch.Tensor | None, seed: int | None) -> GaussianMixture:
    """A mixture base fitted to the standardised rows: diagonal Gaussian mixtures with 1 to 10
    components, the number chosen by validation log-likelihood (BIC without validation rows)."""
    from sklearn.mixture import GaussianMixture as SkMixture

    train = Z.detach().double().cpu().numpy()
    val = None if Z_val is None else Z_val.detach().double().cpu().numpy()
    best, best_score = None, -np.inf
    for k in range(1, min(10, len(train) // 2) + 1):
        mixture = SkMixture(k, covariance_type="diag", reg_covar=1e-4, random_state=seed)
        mixture.fit(train)
        score = mixture.score(val) if val is not None else -mixture.bic(train)
        if score > best_score:
            best, best_score = mixture, score
    base = GaussianMixture.from_parameters(
        torch.from_numpy(best.weights_), torch.from_numpy(best.means_),
        torch.from_numpy(best.covariances_),
    )  # fmt: skip
    return base.to(device=Z.device, dtype=Z.dtype)


@contextmanager
def torch_threads(n: int | None):
    """Run with ``n`` torch CPU threads, then restore the previous number."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
