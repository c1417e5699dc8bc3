"""The recipe of a density fit: the members that ``flow="auto"`` tries (:class:`Member`,
:data:`PORTFOLIO`, run on one split by :func:`pyroflows.train.recipe.run_portfolio`), the
checkpoint files of a fit (:func:`checkpoint_files`, :func:`check_resume`), and the torch CPU
threads it runs with (:func:`torch_threads`). A new member of the portfolio is one line in
:data:`PORTFOLIO`; the Gaussian-mixture start of a member with ``base="gmm"`` is
:mod:`pyroflows.density_mixture`.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pyroflows.checkpoint import load_checkpoint, member_path

__all__ = [
    "PORTFOLIO",
    "Member",
    "check_resume",
    "checkpoint_files",
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
#: is kept. A spline flow started at the validated Gaussian mixture
#: (:func:`pyroflows.density_mixture.mixture_base`; it needs a low learning rate with a
#: warm-up: at 1e-3 without one the first steps made it worse than its start on 4 of the 6
#: development tables of benchmarks/density_tables.py, where its start is then kept), and a
#: plain spline flow (ahead on the 30-60 dimensional data of benchmarks/quality.py with a
#: diagonal mixture start).
PORTFOLIO = (
    Member("nsf-gmm", "nsf", "gmm", 3e-4, "warmup", 20, 0.4),
    Member("nsf", "nsf", "normal", 1e-3, None, 50, 0.6),
)


def checkpoint_files(path: str | Path, members: Sequence[Member]) -> list[Path]:
    """The files a fit with ``checkpoint=path`` may write: ``path`` itself and, for a
    portfolio of several ``members``, one file per member (``run.ckpt`` -> ``run.nsf.ckpt``),
    in sorted order."""
    return sorted({Path(path)} | {member_path(path, m.name) for m in members})


#: fingerprint entries that older checkpoints lack, with the value those checkpoints had
LEGACY_FINGERPRINT = {"estimator.spline_direction": "inverse"}


def check_resume(path: Any, expected: dict[str, Any]) -> None:
    """Refuse a checkpoint written for other data or another model, before any work."""
    if path is None or not Path(path).exists():
        return
    stored = load_checkpoint(path).get("fingerprint") or {}
    stored = {**{k: v for k, v in LEGACY_FINGERPRINT.items() if "estimator.X" in stored}, **stored}
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
