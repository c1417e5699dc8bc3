"""What a classifier sees in the two-step generator's showers: one small fit of
:class:`pyroflows.TwoStepGenerator` (flow I an autoregressive NSF, flow II ``--flow2``), then
the AUC of a gradient-boosting classifier (scikit-learn ``HistGradientBoostingClassifier``,
200 iterations with early stopping, 3-fold out-of-fold predictions) between the teacher's
showers and fresh reference showers on feature subsets:

* ``all``: ``log E_inc``, ``log1p(E_layer / t)``, ``log1p(voxel / t)`` (``benchmarks/calo.py``'s
  features);
* ``layers``: ``log E_inc`` and the log layer energies (mostly flow I);
* ``zero_pattern``: ``log E_inc`` and which voxels are nonzero;
* ``all_comb_blind``: ``all`` after the same jitter ``U(-t/2, t/2)`` of every nonzero voxel in
  both sets (reflected at ``t``): the data's voxels sit near whole numbers of ``t``-sized hits,
  and this hides that comb from the classifier.

Also the zero fraction of generated and reference voxels, overall and per energy range.
Data seed 0 for training, 10 000 for the reference; development use only. ``--comb-only``
fits nothing: it compares the reference with a second reference (data seed 20 000) as drawn
and with its nonzero voxels jittered as above (what a generator that matches everything but
the comb would score). ``--speed-only`` fits nothing either: it times ``sample`` of flow II
(3 layers, hidden 96x96, context 4, untrained: the cost does not depend on the weights) for
1 000 rows, best of 3, one thread: spline and affine MAF teachers and their IAF students
(:func:`pyroflows.vi.distill.student_of`; for the spline teacher also an affine student), and
:meth:`pyroflows.TwoStepGenerator.decode` of 1 000 draws.
``--students`` adds, after the teacher's fit, two students of flow II, each distilled for
at most 20 epochs / 120 s: a spline one (the teacher's maps) and an affine one
(``univariate=Affine()``), with their AUC on all features and the whole student path's time
for 1 000 showers (best of 3) next to the teacher path's. Usage::

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/calo_diagnostics.py --flow2 nsf --floor 0.05
    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/calo_diagnostics.py --comb-only
    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/calo_diagnostics.py --speed-only
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import cross_val_predict

import pyroflows as pf
from pyroflows.calo.encoding import layer_sums
from pyroflows.datasets import calo_showers
from pyroflows.transforms import Affine
from pyroflows.vi.distill import student_of

SIZES = (25, 49, 25)


def auc(X: np.ndarray, Y: np.ndarray) -> float:
    Z, y = np.vstack([X, Y]), np.r_[np.zeros(len(X)), np.ones(len(Y))]
    model = HistGradientBoostingClassifier(max_iter=200, early_stopping=True, random_state=0)
    p = cross_val_predict(model, Z, y, cv=3, method="predict_proba")[:, 1]
    a = roc_auc_score(y, p)
    return max(a, 1 - a)


def jitter(v: np.ndarray, t: float, rng: np.random.Generator) -> np.ndarray:
    out, nonzero = v.copy(), v > 0
    moved = out[nonzero] + rng.uniform(-t / 2, t / 2, nonzero.sum())
    out[nonzero] = np.where(moved < t, 2 * t - moved, moved)  # reflected at t: no atom there
    return out


def report(energy: np.ndarray, gen: np.ndarray, ref: np.ndarray, t: float) -> dict:
    le = np.log(energy)[:, None]

    def feats(v: np.ndarray) -> np.ndarray:
        return np.column_stack([le, np.log1p(layer_sums(v, SIZES) / t), np.log1p(v / t)])

    out: dict = {"zeros_gen": float((gen == 0).mean()), "zeros_ref": float((ref == 0).mean())}
    for name, b in (("E<3", energy < 3), ("3<=E<30", (energy >= 3) & (energy < 30)),
                    ("E>=30", energy >= 30)):  # fmt: skip
        out[f"zeros {name} gen/ref"] = [float((gen[b] == 0).mean()), float((ref[b] == 0).mean())]
    out["auc_all"] = auc(feats(gen), feats(ref))
    lg, lr = (np.log1p(layer_sums(v, SIZES) / t) for v in (gen, ref))
    out["auc_layers"] = auc(np.column_stack([le, lg]), np.column_stack([le, lr]))
    out["auc_zero_pattern"] = auc(np.column_stack([le, gen > 0]), np.column_stack([le, ref > 0]))
    rng = np.random.default_rng(0)
    out["auc_all_comb_blind"] = auc(feats(jitter(gen, t, rng)), feats(jitter(ref, t, rng)))
    return out


def speeds(n: int = 1000) -> dict[str, float]:
    """Milliseconds per ``sample`` of ``n`` rows for teachers and students of flow II."""
    torch.manual_seed(0)
    spline, affine = (
        pf.nsf(99, 4, layers=3, hidden=(96, 96)),
        pf.maf(99, 4, layers=3, hidden=(96, 96)),
    )
    flows = {"spline teacher": spline, "spline student": student_of(spline),
             "affine student of the spline teacher": student_of(spline, univariate=Affine()),
             "affine teacher": affine, "affine student": student_of(affine)}  # fmt: skip
    context, out = torch.randn(n, 4), {}
    with torch.no_grad():
        for name, flow in flows.items():
            flow.eval()
            times = []
            for _ in range(3):
                start = time.perf_counter()
                flow.sample((), context)
                times.append(time.perf_counter() - start)
            out[name] = 1000 * min(times)
    # the decoding of a draw (float64): layer energies, renormalised shares, threshold
    gen = pf.TwoStepGenerator(SIZES, 0.01)
    rng = np.random.default_rng(0)
    energy, f1, f2 = np.geomspace(1, 100, n), rng.normal(0, 1, (n, 3)), rng.normal(-6, 2, (n, 99))
    times = []
    for _ in range(3):
        start = time.perf_counter()
        gen.decode(energy, f1, f2)
        times.append(time.perf_counter() - start)
    out["decode"] = 1000 * min(times)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flow2", choices=["nsf", "maf"], default="nsf")
    parser.add_argument("--floor", type=float, default=0.05)
    parser.add_argument("--uniform-dequantise", action="store_true")
    parser.add_argument("--n-train", type=int, default=4000)
    parser.add_argument("--n-ref", type=int, default=2500)
    parser.add_argument("--budget2", type=float, default=150.0)
    parser.add_argument("--comb-only", action="store_true")
    parser.add_argument("--speed-only", action="store_true")
    parser.add_argument("--students", action="store_true")
    args = parser.parse_args()
    if args.speed_only:
        print(json.dumps(speeds()))
        return
    if args.comb_only:
        ref, other = calo_showers(args.n_ref, seed=10_000), calo_showers(args.n_ref, seed=20_000)
        t, rng = ref.threshold, np.random.default_rng(0)
        rows = {name: np.column_stack([np.log(other.energy), np.log1p(layer_sums(v, SIZES) / t),
                                       np.log1p(v / t)])
                for name, v in (("as drawn", other.voxels),
                                ("jittered", jitter(other.voxels, t, rng)))}  # fmt: skip
        r = np.column_stack([np.log(ref.energy), np.log1p(ref.layer_energies / t),
                             np.log1p(ref.voxels / t)])  # fmt: skip
        print(json.dumps({name: auc(x, r) for name, x in rows.items()}))
        return
    torch.manual_seed(0)
    data = calo_showers(args.n_train, seed=0)
    family = pf.nsf if args.flow2 == "nsf" else pf.maf
    gen = pf.TwoStepGenerator(
        data.layer_sizes, data.threshold, energy_flow=pf.nsf(3, 1, layers=4, hidden=(64, 64)),
        shower_flow=family(99, 4, layers=3, hidden=(96, 96)), floor=args.floor,
        log_dequantise=not args.uniform_dequantise,
    )  # fmt: skip
    start = time.perf_counter()
    gen.fit(data.energy, data.voxels, max_epochs=(40, 500), time_budget=(60, args.budget2),
            progress=False)  # fmt: skip
    history = gen.history_["shower_flow"]
    ref = calo_showers(args.n_ref, seed=10_000)
    out = gen.sample(ref.energy, seed=1)
    row = {**vars(args), "fit_s": time.perf_counter() - start,
           "epochs2": len(history.train_loss), "val_nll2": min(history.val_loss),
           **report(ref.energy, out.voxels, ref.voxels, data.threshold)}  # fmt: skip
    if args.students:
        row.update(students(gen, ref))
    print(json.dumps(row))


def students(gen: pf.TwoStepGenerator, ref) -> dict:
    """AUC (all features) and whole-path milliseconds of a spline and an affine student."""
    t, le = gen.threshold, np.log(ref.energy)[:, None]

    def feats(v: np.ndarray) -> np.ndarray:
        return np.column_stack([le, np.log1p(layer_sums(v, SIZES) / t), np.log1p(v / t)])

    def ms(sampler: str) -> float:
        energy, times = np.geomspace(1, 100, 1000), []
        for _ in range(3):
            start = time.perf_counter()
            gen.sample(energy, sampler=sampler)
            times.append(time.perf_counter() - start)
        return 1000 * min(times)

    out = {"teacher_path_ms": ms("teacher")}
    for name, options in (("spline", {}), ("affine", {"univariate": Affine()})):
        gen.distill(max_epochs=20, time_budget=120, progress=False, **options)
        drawn = gen.sample(ref.energy, seed=1, sampler="student")
        out[f"{name}_student"] = {
            "auc_all": auc(feats(drawn.voxels), feats(ref.voxels)),
            "epochs": len(gen.history_["student"].train_loss), "path_ms": ms("student"),
        }  # fmt: skip
    return out


if __name__ == "__main__":
    main()
