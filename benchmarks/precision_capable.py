"""DiscFlow as a precision step: refining a flow that can represent the target, against plain
likelihood for the same extra epochs (``benchmarks/precision.py``'s ring and peak).

Per seed and flow, one plain fit by :class:`pyroflows.DensityEstimator` (``--epochs`` epochs at
most, its own early stopping on 10 % of the rows and best validation state: "converged"), then
every arm continues from that same fitted flow for ``--rounds * --per-round`` more epochs on all
the training rows, and is scored on fresh draws:

* ``plain-more:LR``: plain likelihood, one Adam at learning rate LR, the last state;
* ``unit:LR``: DiscFlow's rounds with unit weights (a fresh Adam each round; its training
  without its weights);
* ``hgb:POWER:CAP:LR``: ``pf.discflow(X, fitted, warm_start=True, power=POWER,
  max_weight=CAP, lr=LR)`` (gradient-boosting discriminator, out of fold);
* ``exact:POWER:CAP:LR``: the same with the exact ratio ``p / q`` (``log_target=``; no
  classifier noise: a diagnosis, not a method);
* ``ratio``: no training: how well DiscFlow's first discriminator (out of fold, as in round
  1) sees the fitted flow's error on the training rows: its AUC, the correlation and RMSE of
  its ``log w`` against the exact ``log p / q``, and the spread of both.

``plain-epochs`` is a plain fit from scratch with ``--epochs`` plus the rounds' epochs as its
limit (the same fit as the start when that one stopped early, which is then reused), so
``hgb`` against ``plain-epochs`` is DiscFlow from scratch against plain likelihood at the
same epochs, and ``hgb`` against ``plain-more`` / ``unit`` is the refinement of a converged
flow against plain training for the same extra epochs.

Flows (``--flows``): ``nsf`` is ``DensityEstimator(flow="nsf")`` at its defaults (5
autoregressive rational-quadratic spline layers, 128 x 128, 8 bins), ``nsf-small`` the same
with 4 layers of 64 x 64, ``maf-large`` an affine MAF of 8 layers of 128 x 128 (``maf-small``:
the 4 x 32 x 32 MAF of ``precision.py``, for reference).

Metrics (``precision.py``'s): the out-of-fold AUC of a fresh gradient-boosting classifier
between 10 000 draws and 10 000 fresh target rows, the same classifier's AUC between two
fresh target samples (``null``: the floor of this metric), the exact-ratio AUC, chi2 per bin,
held-out NLL on 20 000 fresh rows (the exact target's beside it), and the mass in the gap
between peak and ring (target 0.0001).

Seeds: development 0, 1, 2 (settings chosen there); confirmation 3-7 (run once after).
Usage (one thread)::

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/precision_capable.py --seeds 0 \\
        --flows nsf --arms plain-more:1e-4 unit:1e-4 hgb:0.5:5:1e-4 --out /tmp/capable
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time
import warnings

import numpy as np
from precision import auc, chi2_per_bin, exact_auc, log_target, region_mass, sample_target

import pyroflows as pf
from pyroflows.classify import Classifier
from pyroflows.discflow import _log_ratio
from pyroflows.losses import nll
from pyroflows.train import fit

FLOWS = {
    "nsf": dict(flow="nsf"),
    "nsf-small": dict(flow="nsf", layers=4, hidden=(64, 64)),
    "maf-large": dict(flow="maf", layers=8, hidden=(128, 128)),
    "maf-small": dict(flow="maf", layers=4, hidden=(32, 32)),
}


def estimator(flow: str, epochs: int, seed: int) -> pf.DensityEstimator:
    return pf.DensityEstimator(**FLOWS[flow], max_epochs=epochs, random_state=seed,
                               progress=False)  # fmt: skip


class Study:
    def __init__(self, seed: int, flow: str, args):
        self.seed, self.flow, self.args = seed, flow, args
        rng = np.random.default_rng(seed)
        self.X = sample_target(args.n, rng)
        self.truth, self.test = sample_target(10000, rng), sample_target(20000, rng)
        self.big = sample_target(400_000, rng)
        self.null = auc(sample_target(10000, rng), np.ones(10000), self.truth)
        path = None
        if args.cache:  # the plain fit, reused by later runs with the same flow, seed, epochs
            os.makedirs(args.cache, exist_ok=True)
            path = os.path.join(args.cache, f"{flow}-{seed}-{args.epochs}-{args.n}")
        if path and os.path.exists(path + ".json"):
            self.base = pf.DensityEstimator.load(path + ".pt")
            self.t_base, self.epochs_run = json.load(open(path + ".json"))
        else:
            t0 = time.perf_counter()
            self.base = estimator(flow, args.epochs, seed).fit(self.X)
            self.t_base = time.perf_counter() - t0
            self.epochs_run = len(self.base.history_.train_loss)
            if path:
                self.base.save(path + ".pt", force=True)
                json.dump([self.t_base, self.epochs_run], open(path + ".json", "w"))
        self.extra = args.rounds * args.per_round

    def metrics(self, name: str, est: pf.DensityEstimator, seconds: float) -> dict:
        draws = est.sample(len(self.truth), random_state=self.seed + 100)
        one = np.ones(len(draws))
        row = dict(
            flow=self.flow, arm=name, seed=self.seed, seconds=round(seconds, 1),
            auc=round(auc(draws, one, self.truth), 4), null=round(self.null, 4),
            auc_exact=round(exact_auc(draws, one, self.truth, est.score_samples), 4),
            chi2=round(chi2_per_bin(draws, one, self.big), 2),
            nll=round(float(-est.score_samples(self.test).mean()), 4),
            exact_nll=round(float(-log_target(self.test).mean()), 4),
            gap=round(region_mass(draws, one, 0.2, 0.85), 4),
            base_epochs=self.epochs_run,
        )  # fmt: skip
        print(json.dumps(row), flush=True)
        return row

    def copy(self) -> pf.DensityEstimator:
        return copy.deepcopy(self.base)

    def run(self, arm: str) -> dict:
        kind, *knobs = arm.split(":")
        a = self.args
        t0 = time.perf_counter()
        if kind == "base":
            return self.metrics(arm, self.base, self.t_base)
        if kind == "plain-epochs":
            stopped = self.epochs_run < a.epochs
            est = self.base if stopped else estimator(self.flow, a.epochs + self.extra,
                                                      self.seed).fit(self.X)  # fmt: skip
            return self.metrics(arm, est, self.t_base if stopped else time.perf_counter() - t0)
        if kind in ("plain-more", "unit"):
            lr = float(knobs[0])
            est = self.copy()
            core, Z = est.core_flow_, est.to_latent(self.X)
            chunks = [self.extra] if kind == "plain-more" else [a.per_round] * a.rounds
            for r, epochs in enumerate(chunks, 1):
                fit(core, nll, Z, max_epochs=epochs, lr=lr, batch_size=est.batch_size,
                    patience=None, seed=self.seed + r, progress=False)  # fmt: skip
            return self.metrics(arm, est, time.perf_counter() - t0 + self.t_base)
        if kind == "ratio":  # how well round 1's discriminator sees the start's error
            log_w, disc_auc = _log_ratio(self.base, self.X, Classifier("hgb"), len(self.X), 2,
                                         self.seed + 1)  # fmt: skip
            exact = log_target(self.X) - self.base.score_samples(self.X)
            row = dict(
                flow=self.flow, arm=arm, seed=self.seed, disc_auc=round(disc_auc, 4),
                corr=round(float(np.corrcoef(log_w, exact)[0, 1]), 3),
                sd_hgb=round(float(log_w.std()), 3), sd_exact=round(float(exact.std()), 3),
                rmse=round(float(np.sqrt(np.mean((log_w - exact) ** 2))), 3),
                seconds=round(time.perf_counter() - t0, 1),
            )  # fmt: skip
            print(json.dumps(row), flush=True)
            return row
        if kind in ("hgb", "exact"):
            power, cap, lr = (float(k) for k in knobs)
            extra = dict(log_target=log_target) if kind == "exact" else {}
            result = pf.discflow(
                self.X, self.base, warm_start=True, rounds=a.rounds,
                epochs_per_round=a.per_round, power=power, max_weight=cap, lr=lr,
                random_state=self.seed, **extra,
            )  # fmt: skip
            row = self.metrics(arm, result.estimator, time.perf_counter() - t0 + self.t_base)
            row["rounds_auc"] = [round(r.auc, 4) for r in result.rounds]
            return row
        raise ValueError(f"unknown arm {arm!r}")


def per_seed(rows: list[dict], control: str) -> list[str]:
    """Each DiscFlow arm against ``control`` (same flow and seed): AUC and NLL differences
    (the issue's target: AUC lower by >= 0.02, NLL worse by at most 0.02 nats)."""
    by = {(r["flow"], r["arm"], r["seed"]): r for r in rows}
    lines = []
    for flow in dict.fromkeys(r["flow"] for r in rows):
        arms = [a for a in dict.fromkeys(r["arm"] for r in rows if r["flow"] == flow)
                if a.split(":")[0] in ("hgb", "exact")]  # fmt: skip
        for arm in arms:
            ref = control  # plain-more and unit: the control at the arm's learning rate
            if control in ("plain-more", "unit"):
                ref = f"{control}:{arm.split(':')[-1]}"
            cells = []
            for seed in dict.fromkeys(r["seed"] for r in rows):
                x, y = by.get((flow, arm, seed)), by.get((flow, ref, seed))
                if x is not None and y is not None:
                    d_auc, d_nll = x["auc"] - y["auc"], x["nll"] - y["nll"]
                    met = "met" if d_auc <= -0.02 and d_nll <= 0.02 else "not met"
                    cells.append(f"seed {seed}: AUC {d_auc:+.4f}, NLL {d_nll:+.4f} ({met})")
            if cells:
                lines.append(f"- {flow} {arm} vs {ref}: " + "; ".join(cells))
    return lines


def table(rows: list[dict]) -> str:
    lines = [
        "| flow | arm | seed | AUC (null) | exact-ratio AUC | chi2/bin | test NLL (exact) | "
        "gap mass | base epochs | seconds |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "auc" not in r:
            continue
        lines.append(
            f"| {r['flow']} | {r['arm']} | {r['seed']} | {r['auc']:.4f} ({r['null']:.4f}) | "
            f"{r['auc_exact']:.4f} | {r['chi2']:.2f} | {r['nll']:.4f} ({r['exact_nll']:.4f}) | "
            f"{r['gap']:.4f} | {r['base_epochs']} | {r['seconds']:.0f} |"
        )
    return "\n".join(lines)


def means(rows: list[dict]) -> str:
    """Mean over seeds of each flow and arm (AUC, its floor, NLL, gap mass)."""
    lines = ["| flow | arm | seeds | AUC | null AUC | exact-ratio AUC | test NLL | gap mass |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    keys = dict.fromkeys((r["flow"], r["arm"]) for r in rows if "auc" in r)
    for flow, arm in keys:
        mine = [r for r in rows if (r["flow"], r["arm"]) == (flow, arm)]
        m = {k: float(np.mean([r[k] for r in mine])) for k in ("auc", "null", "auc_exact",
                                                                "nll", "gap")}  # fmt: skip
        lines.append(
            f"| {flow} | {arm} | {len(mine)} | {m['auc']:.4f} | {m['null']:.4f} | "
            f"{m['auc_exact']:.4f} | {m['nll']:.4f} | {m['gap']:.4f} |"
        )
    return "\n".join(lines)


def report(path: str) -> None:
    """Print the tables and comparisons of the rows in ``path`` (a ``--out`` JSONL file)."""
    rows = [json.loads(line) for line in open(path)]
    order = {a: i for i, a in enumerate(("base", "plain-more", "unit", "hgb", "exact"))}
    rows.sort(key=lambda r: (r["flow"], r["seed"], order.get(r["arm"].split(":")[0], 9),
                             r["arm"]))  # fmt: skip
    print(table(rows), "\n\nMeans over seeds:\n\n" + means(rows) + "\n")
    for control in ("plain-more", "unit"):
        print("\n".join(per_seed(rows, control)))
    ratio = [r for r in rows if r["arm"] == "ratio"]
    if ratio:
        print(
            "\n| flow | seed | discriminator AUC | corr(log w, exact) | RMSE | sd log w | "
            "sd exact |\n|---|---|---|---|---|---|---|"
        )
        for r in ratio:
            print(
                f"| {r['flow']} | {r['seed']} | {r['disc_auc']:.4f} | {r['corr']:.3f} | "
                f"{r['rmse']:.3f} | {r['sd_hgb']:.3f} | {r['sd_exact']:.3f} |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--part", choices=["development", "confirmation"], default="development")
    parser.add_argument("--flows", nargs="+", default=["nsf"], choices=sorted(FLOWS))
    parser.add_argument("--arms", nargs="+", default=["base", "plain-more:1e-4", "unit:1e-4",
                                                      "hgb:0.5:5:1e-4"])  # fmt: skip
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--per-round", type=int, default=4)
    parser.add_argument("--out", default=None, help="append the rows to OUT.jsonl")
    parser.add_argument("--cache", default=None, help="folder for the plain fits (reused)")
    parser.add_argument("--report", default=None, help="print the tables of a JSONL file")
    args = parser.parse_args()
    if args.report:
        return report(args.report)
    warnings.simplefilter("ignore")
    rows = []
    for flow in args.flows:
        for seed in args.seeds:
            study = Study(seed, flow, args)
            for arm in args.arms:
                row = study.run(arm) | {"part": args.part}
                rows.append(row)
                if args.out:
                    with open(args.out + ".jsonl", "a") as handle:
                        handle.write(json.dumps(row) + "\n")
    print(table(rows))
    for control in ("plain-epochs", "plain-more", "unit"):
        print("\n".join(per_seed(rows, control)))


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
