"""Two-step calorimeter-like generation: flow I + flow II teacher + distilled student
(:class:`pyroflows.TwoStepGenerator`) on showers of :func:`pyroflows.datasets.calo_showers`
(99 voxels in 3 layers, incident energy log-uniform on 1-100 GeV, zero suppression).

Per seed ``s``: ``--n-train`` training showers (data seed ``s``); flow I an autoregressive
NSF (4 layers, hidden 64x64, ``--epochs1`` epochs), flow II a MAF (``--layers`` layers,
hidden ``--hidden`` x2, at most ``--epochs2`` epochs and ``--budget2`` seconds), the student
:func:`pyroflows.distill` of flow II (``--distill-epochs`` epochs, at most ``--budget-distill``
seconds); 10 % of the showers held out for early stopping.

Quality: the classifier metric (:func:`pyroflows.diagnostics.c2st`, gradient boosting,
5 folds, Platt calibration, 200 bootstrap replicates for a 95 % interval) of teacher and
student showers against ``--n-ref`` fresh reference showers (data seed ``10000 + s``), each
generated shower conditioned on a reference shower's incident energy; features
``log E_inc``, ``log1p(E_layer / t)`` and ``log1p(voxel / t)`` (``t`` the threshold); the null
check is the same classifier on the reference against a second fresh reference (data seed
``20000 + s``). Speed: whole-generator draws per second (flow I, flow II or student, decoding)
for ``--n-speed`` showers, best of 5 rounds, each round timing flow I, flow II and the whole
call of the teacher path and then of the student path (so both see the same load); the
``rest`` of a call (standardising, decoding, thresholding) is the whole call less the flows.
``--student affine`` distils flow II into affine maps instead of the teacher's splines;
``--redequantise`` draws the zeros' dequantisation noise afresh every epoch.

Targets (issue 28): teacher AUC <= 0.65, student AUC <= teacher + 0.03, student >= 20x the
teacher's draws/s. Seeds are split into development (tuned on) and confirmation (run once).
Usage (one thread; a few minutes per seed at the defaults)::

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/calo.py --seeds 0 --part development \
        --out benchmarks/results/calo
    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/calo.py --seeds 1 --part confirmation \
        --out benchmarks/results/calo
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch

import pyroflows as pf
from pyroflows.datasets import calo_showers
from pyroflows.diagnostics import c2st
from pyroflows.transforms import Affine


def features(energy: np.ndarray, layers: np.ndarray, voxels: np.ndarray, t: float) -> np.ndarray:
    return np.column_stack([np.log(energy), np.log1p(layers / t), np.log1p(voxels / t)])


def best_time(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def stage_times(
    gen: pf.TwoStepGenerator, energy: np.ndarray, repeats: int = 5
) -> dict[str, dict[str, float]]:
    """Milliseconds of each stage of ``gen.sample(energy, sampler=...)`` for the teacher and
    the student path, best of ``repeats`` rounds (each round times every stage of both paths
    in turn, so both see the same load): flow I, flow II (or their students) and the whole
    call; ``rest_ms`` is the whole call less the flows (standardising the contexts, undoing
    the standardisation, decoding and thresholding)."""
    c1 = np.log(energy)[:, None]
    calls = {}
    for sampler in ("teacher", "student"):
        flow1, flow2 = gen.energy_flow, gen.shower_flow
        if sampler == "student":
            flow1, flow2 = gen.energy_student_ or flow1, gen.student_
        ctx1 = gen._tensors(flow1, ("c1", c1))[0]
        f1 = gen._sample_flow(flow1, gen.pre_["f1"], ctx1)
        ctx2 = gen._tensors(flow2, ("c2", np.column_stack([c1, f1])))[0]
        calls[sampler] = {
            "flow1_ms": lambda f=flow1, c=ctx1: f.sample((), c),
            "flow2_ms": lambda f=flow2, c=ctx2: f.sample((), c),
            "whole_ms": lambda s=sampler: gen.sample(energy, seed=0, sampler=s),
        }  # fmt: skip
    best = {s: dict.fromkeys(c, np.inf) for s, c in calls.items()}
    with torch.no_grad():
        for _ in range(repeats):
            for sampler, stages in calls.items():
                for key, fn in stages.items():
                    best[sampler][key] = min(best[sampler][key], 1000 * best_time(fn, 1))
    for times in best.values():
        times["rest_ms"] = times["whole_ms"] - times["flow1_ms"] - times["flow2_ms"]
    return best


def metric(gen_rows: np.ndarray, ref_rows: np.ndarray, null_rows, seed: int) -> dict:
    r = c2st(gen_rows, ref_rows, classifier="hgb", seed=seed, null=null_rows)
    return {"auc": r.auc, "auc_calibrated": r.auc_calibrated, "interval": list(r.auc_interval),
            "jsd": r.jsd, "null_auc": r.null_auc, "null_interval": list(r.null_interval),
            "n_per_set": r.n_per_set}  # fmt: skip


def run(seed: int, args: argparse.Namespace) -> dict:
    torch.manual_seed(seed)
    data = calo_showers(args.n_train, seed=seed)
    t = data.threshold
    family = pf.nsf if args.flow2 == "nsf" else pf.maf
    gen = pf.TwoStepGenerator(
        data.layer_sizes, t, energy_flow=pf.nsf(3, 1, layers=4, hidden=(64, 64)),
        shower_flow=family(99, 4, layers=args.layers, hidden=(args.hidden, args.hidden),
                           **({"bins": args.bins} if args.flow2 == "nsf" else {})),
        floor=args.floor, log_dequantise=not args.uniform_dequantise,
    )  # fmt: skip
    start = time.perf_counter()
    gen.fit(data.energy, data.voxels, max_epochs=(args.epochs1, args.epochs2),
            time_budget=(None, args.budget2), seed=seed, lr=args.lr, progress=False,
            redequantise=args.redequantise)  # fmt: skip
    fit_s = time.perf_counter() - start
    start = time.perf_counter()
    student_map = {"univariate": Affine()} if args.student == "affine" else {}
    gen.distill(max_epochs=args.distill_epochs, time_budget=args.budget_distill, seed=seed,
                progress=False, **student_map)  # fmt: skip
    distill_s = time.perf_counter() - start

    ref = calo_showers(args.n_ref, seed=10_000 + seed)
    null = calo_showers(args.n_ref, seed=20_000 + seed)
    ref_rows = features(ref.energy, ref.layer_energies, ref.voxels, t)
    null_rows = features(null.energy, null.layer_energies, null.voxels, t)
    row = {"seed": seed, "fit_s": fit_s, "distill_s": distill_s,
           "epochs2": len(gen.history_["shower_flow"].train_loss),
           "val_nll2": min(gen.history_["shower_flow"].val_loss),
           "epochs1": len(gen.history_["energy_flow"].train_loss),
           "distill_epochs": len(gen.history_["student"].train_loss)}  # fmt: skip
    for sampler in ("teacher", "student"):
        out = gen.sample(ref.energy, seed=seed + 1, sampler=sampler)
        rows = features(out.energy, out.layer_energies, out.voxels, t)
        # the null check (reference vs a second reference) once, with the teacher's metric
        row[sampler] = metric(rows, ref_rows, null_rows if sampler == "teacher" else None, seed)
        row[sampler]["zero_fraction"] = float((out.voxels == 0).mean())
    # what the classifier sees in the teacher's showers: layer energies alone, zeros alone
    out = gen.sample(ref.energy, seed=seed + 1, sampler="teacher")
    le_gen, le_ref = np.log(out.energy)[:, None], np.log(ref.energy)[:, None]
    for name, g, r in (
        ("layers", np.log1p(out.layer_energies / t), np.log1p(ref.layer_energies / t)),
        ("zero_pattern", out.voxels > 0, ref.voxels > 0),
    ):
        res = c2st(np.column_stack([le_gen, g]), np.column_stack([le_ref, r]), classifier="hgb",
                   seed=seed, n_bootstrap=0)  # fmt: skip
        row["teacher"][f"auc_{name}"] = res.auc
    for key in ("null_auc", "null_interval"):
        row["student"][key] = row["teacher"][key]
    row["reference_zero_fraction"] = float((ref.voxels == 0).mean())

    energy = np.exp(np.random.default_rng(seed).uniform(0, np.log(100), args.n_speed))
    timed = stage_times(gen, energy)
    for sampler, stages in timed.items():
        row[sampler]["stages_ms"] = stages
        row[sampler]["draws_per_s"] = args.n_speed / stages["whole_ms"] * 1000
        row[sampler]["flow1_draws_per_s"] = args.n_speed / stages["flow1_ms"] * 1000
        row[sampler]["flow2_draws_per_s"] = args.n_speed / stages["flow2_ms"] * 1000
    row["speed_ratio"] = row["student"]["draws_per_s"] / row["teacher"]["draws_per_s"]
    for k in ("flow1", "flow2"):
        row[f"{k}_speed_ratio"] = (row["student"][f"{k}_draws_per_s"]
                                   / row["teacher"][f"{k}_draws_per_s"])  # fmt: skip
    row["targets"] = {
        "teacher_auc<=0.65": row["teacher"]["auc"] <= 0.65,
        "student_auc<=teacher+0.03": row["student"]["auc"] <= row["teacher"]["auc"] + 0.03,
        "student>=20x": row["speed_ratio"] >= 20,
    }
    print(json.dumps(row), flush=True)
    return row


def _stages(ms: dict | None) -> str:
    if ms is None:
        return "-"
    return f"{ms['flow1_ms']:.1f} + {ms['flow2_ms']:.1f} + {ms['rest_ms']:.1f}"


def markdown(blob: dict) -> str:
    lines = ["# Two-step calorimeter-like generation (`benchmarks/calo.py`)", ""]
    for part, body in blob.items():
        lines += [f"## {part}", "", f"Protocol: `{json.dumps(body['protocol'])}`", "",
                  "| seed | teacher AUC [95 %] | student AUC [95 %] | null AUC | teacher AUC: "
                  "layer energies / zero pattern only | zeros t / s / ref "
                  "| draws/s t / s (ratio) | flow I / flow II alone (ratio) "
                  "| ms teacher: flow I + flow II + rest | ms student: flow I + flow II + rest "
                  "| flow II epochs, val NLL |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for r in body["rows"]:
            te, st = r["teacher"], r["student"]
            lines.append(
                f"| {r['seed']} | {te['auc']:.3f} [{te['interval'][0]:.3f}, "
                f"{te['interval'][1]:.3f}]"
                f" | {st['auc']:.3f} [{st['interval'][0]:.3f}, {st['interval'][1]:.3f}]"
                f" | {te['null_auc']:.3f} | {te['auc_layers']:.3f} / {te['auc_zero_pattern']:.3f}"
                f" | {te['zero_fraction']:.3f} / {st['zero_fraction']:.3f}"
                f" / {r['reference_zero_fraction']:.3f} | {te['draws_per_s']:.0f} / "
                f"{st['draws_per_s']:.0f} ({r['speed_ratio']:.1f}x) | "
                f"{r['flow1_speed_ratio']:.1f}x / {r['flow2_speed_ratio']:.1f}x | "
                + " | ".join(_stages(x.get("stages_ms")) for x in (te, st))
                + f" | {r['epochs2']}, {r['val_nll2']:.2f} |"
            )
        lines += ["", "Targets per seed: " + "; ".join(
            f"seed {r['seed']}: " + ", ".join(f"{k} {'met' if v else 'NOT met'}"
                                              for k, v in r["targets"].items())
            for r in body["rows"]), ""]  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--part", choices=["development", "confirmation"], required=True)
    parser.add_argument("--n-train", type=int, default=6000)
    parser.add_argument("--n-ref", type=int, default=3000)
    parser.add_argument("--n-speed", type=int, default=2000)
    parser.add_argument("--epochs1", type=int, default=60)
    parser.add_argument("--epochs2", type=int, default=200)
    parser.add_argument("--budget2", type=float, default=240.0)
    parser.add_argument("--distill-epochs", type=int, default=50)
    parser.add_argument("--budget-distill", type=float, default=60.0)
    parser.add_argument("--flow2", choices=["nsf", "maf"], default="nsf")
    parser.add_argument("--floor", type=float, default=0.05)
    parser.add_argument("--uniform-dequantise", action="store_true",
                        help="zeros -> t U(floor, 1) instead of log-uniform")  # fmt: skip
    parser.add_argument("--bins", type=int, default=8, help="flow II's spline bins")
    parser.add_argument("--redequantise", action="store_true",
                        help="fresh dequantisation noise every epoch")  # fmt: skip
    parser.add_argument(
        "--student",
        choices=["spline", "affine"],
        default="spline",
        help="flow II's student: the teacher's maps, or affine maps",
    )
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--out", default=None, help="write OUT.json (merged by part) and OUT.md")
    args = parser.parse_args()
    rows = [run(seed, args) for seed in args.seeds]
    protocol = {k: v for k, v in vars(args).items() if k not in ("out", "part")}
    protocol["threads"] = torch.get_num_threads()
    protocol["load_average"] = os.getloadavg()[0]
    if args.out:
        path = args.out + ".json"
        blob = json.load(open(path)) if os.path.exists(path) else {}
        blob[args.part] = {"protocol": protocol, "rows": rows}
        with open(path, "w") as handle:
            json.dump(blob, handle, indent=1)
        with open(args.out + ".md", "w") as handle:
            handle.write(markdown(blob))


if __name__ == "__main__":
    main()
