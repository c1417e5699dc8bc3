"""The teacher of ``benchmarks/fast_sampler.py``, fitted once and kept on disk for the
variant scripts (``$FAST_SAMPLER_TEACHERS``, default /tmp)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from fast_sampler import teacher

import pyroflows as pf


def load_teacher(name: str, task) -> pf.AmortizedPosterior:
    folder = Path(os.environ.get("FAST_SAMPLER_TEACHERS", "/tmp"))
    path = folder / f"fast_sampler_teacher_{name}.pt"
    if path.exists():
        return pf.AmortizedPosterior.load(path, prior=task.prior, simulator=task.simulate)
    post, _ = teacher(task, argparse.Namespace(simulations=3000, teacher_epochs=20))
    post.save(path)
    return post
