"""Students of one fitted flow II: what each student map costs and how well it samples.

Fits one :class:`pyroflows.TwoStepGenerator` with ``benchmarks/calo.py``'s development
settings (6 000 showers of data seed 0; flow I ``nsf(3, 1, 4 layers, 64x64)`` for 40 epochs;
flow II ``nsf(99, 4, 3 layers, 96x96, 8 bins)`` for at most ``--epochs2`` epochs /
``--budget2`` seconds, default 200 / 300), then for each ``--students`` map distils flow II
anew (flow I's student too; at most ``--distill-epochs`` epochs / ``--budget-distill``
seconds each, default 20 / 150) and reports the student path's AUC against 2 000 fresh
reference showers (data seed 10 000; ``c2st``, gradient boosting, no bootstrap) and the
milliseconds of each stage of both paths for 1 000 showers (``benchmarks/calo.py``'s
``stage_times``: best of 5 interleaved rounds). Student maps: ``spline`` (the teacher's
networks and splines, copied), ``rqs4`` (new networks driving 4-bin splines), ``pwl8`` (new
networks driving 8-bin piecewise-linear maps), ``affine`` (new networks driving affine maps).
Development use only. Usage::

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/calo_students.py --students spline affine
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))

from calo import features, stage_times  # noqa: E402

import pyroflows as pf  # noqa: E402
from pyroflows.datasets import calo_showers  # noqa: E402
from pyroflows.diagnostics import c2st  # noqa: E402
from pyroflows.transforms import Affine  # noqa: E402
from pyroflows.transforms.univariate import PiecewiseLinear  # noqa: E402


def student_options(gen: pf.TwoStepGenerator, kind: str) -> dict:
    spline = gen.shower_flow.transforms[0].univariate
    return {
        "spline": {},
        "rqs4": {"univariate": dataclasses.replace(spline, bins=4)},
        "pwl8": {"univariate": PiecewiseLinear(8)},
        "affine": {"univariate": Affine()},
    }[kind]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", nargs="+", default=["spline", "rqs4", "pwl8", "affine"],
                        choices=["spline", "rqs4", "pwl8", "affine"])  # fmt: skip
    parser.add_argument("--epochs2", type=int, default=200)
    parser.add_argument("--budget2", type=float, default=300.0)
    parser.add_argument("--distill-epochs", type=int, default=20)
    parser.add_argument("--budget-distill", type=float, default=150.0, help="0: no limit")
    parser.add_argument("--redequantise", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    data = calo_showers(6000, seed=0)
    gen = pf.TwoStepGenerator(
        data.layer_sizes, data.threshold, energy_flow=pf.nsf(3, 1, layers=4, hidden=(64, 64)),
        shower_flow=pf.nsf(99, 4, layers=3, hidden=(96, 96)),
    )  # fmt: skip
    gen.fit(data.energy, data.voxels, max_epochs=(40, args.epochs2),
            time_budget=(None, args.budget2), seed=0, progress=False,
            redequantise=args.redequantise)  # fmt: skip
    ref = calo_showers(2000, seed=10_000)
    t = data.threshold
    ref_rows = features(ref.energy, ref.layer_energies, ref.voxels, t)
    energy = np.exp(np.random.default_rng(0).uniform(0, np.log(100), 1000))
    out = gen.sample(ref.energy, seed=1)
    teacher_auc = c2st(features(out.energy, out.layer_energies, out.voxels, t), ref_rows,
                       classifier="hgb", seed=0, n_bootstrap=0).auc  # fmt: skip
    epochs2 = len(gen.history_["shower_flow"].train_loss)
    print(json.dumps({"teacher_auc": teacher_auc, "epochs2": epochs2}), flush=True)
    for kind in args.students:
        start = time.perf_counter()
        gen.distill(max_epochs=args.distill_epochs, time_budget=args.budget_distill or None,
                    seed=0, progress=False, **student_options(gen, kind))  # fmt: skip
        distill_s = time.perf_counter() - start
        out = gen.sample(ref.energy, seed=1, sampler="student")
        rows = features(out.energy, out.layer_energies, out.voxels, t)
        row = {"student": kind, "distill_s": distill_s,
               "distill_epochs": len(gen.history_["student"].train_loss),
               "auc": c2st(rows, ref_rows, classifier="hgb", seed=0, n_bootstrap=0).auc,
               "zero_fraction": float((out.voxels == 0).mean()),
               "stages_ms": stage_times(gen, energy),
               "load_average": os.getloadavg()[0]}  # fmt: skip
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
