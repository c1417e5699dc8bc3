"""Classifier reweighting and the classifier metric against exact answers and against peers.

Part 1, reweighting (``pf.reweight``). The reference is a two-mode Gaussian mixture in D = 2, 4,
8 dimensions; the "generator" is a mixture with misplaced, widened and mis-weighted modes (an
under-fitted flow with an exact density). Both densities are exact, so the ideal weight
``w* = p_ref / p_gen`` of every generated row is known. For each method: the RMSE of
``log w - log w*`` over the generated rows, the out-of-fold AUC of a fresh gradient-boosting
classifier between the weighted generated rows and a fresh reference sample (0.5: the
reweighted generator is indistinguishable), the number of NaN / inf weights, and the time.
Methods:

* ``pf.reweight`` (default: torch MLP, out of fold, Platt-calibrated out of fold), and its
  ``"hgb"`` variant;
* ``hep_ml.reweight.GBReweighter`` with its defaults (fitted on all rows, weights predicted for
  the same rows, as in its documentation);
* a plain MLP DCTR as in the original paper (Andreassen & Nachman arXiv:1907.08209;
  Diefenbacher et al. arXiv:2009.03796): three hidden layers of 100 ReLU units, binary
  cross-entropy, Adam, trained on all rows, ``w = f / (1 - f)`` predicted for the same rows,
  no calibration.

Part 2, the classifier metric (``pf.diagnostics.c2st``): N(0, I) vs N(delta 1, I) in D = 10,
whose AUC is ``Phi(delta sqrt(D) / sqrt(2))``, and the null (N(0, I) vs N(0, I)); then the time
of ``c2st`` against ``sbi.utils.metrics.c2st`` (its default random forest, 5 folds) at the same n.

Usage (one thread; the sizes are arguments because the full ones take long on a shared CPU)::

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/reweight.py --n 10000 --metric-n 100000 \
        --sbi-n 20000 --out benchmarks/results/reweight
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings

import numpy as np
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

import pyroflows as pf
from pyroflows.classify import Classifier, out_of_fold_proba
from pyroflows.datasets import GaussianMixture, gaussian_mixture


def problem(dim):
    reference = gaussian_mixture(dim, n_components=2, gap=3.0)
    return reference, GaussianMixture(0.85 * reference.means, 1.15, [0.65, 0.35])


def post_auc(gen, weights, fresh_ref):
    X = np.concatenate([gen, fresh_ref])
    y = np.r_[np.zeros(len(gen)), np.ones(len(fresh_ref))].astype(int)
    weights = np.where(np.isfinite(weights), weights, 0.0)
    w = np.r_[weights * len(gen) / weights.sum(), np.ones(len(fresh_ref))]
    proba = out_of_fold_proba(Classifier("hgb"), X, y, folds=3, sample_weight=w)
    return float(roc_auc_score(y, proba, sample_weight=w))


def plain_dctr(gen, ref):
    X = np.concatenate([gen, ref])
    y = np.r_[np.zeros(len(gen)), np.ones(len(ref))].astype(int)
    clf = Classifier("mlp", hidden=(100, 100, 100), max_epochs=50, patience=50, batch_size=256)
    f = clf.fit(X, y).predict_proba(gen)
    with np.errstate(divide="ignore"):
        return f / (1 - f) * len(gen) / len(ref)


def gb_reweighter(gen, ref):
    from hep_ml.reweight import GBReweighter

    return GBReweighter().fit(gen, ref).predict_weights(gen)


def reweighting_rows(n, dims, seed=0):
    methods = {
        "pf.reweight (mlp)": lambda g, r: pf.reweight(g, r, random_state=seed).weights,
        "pf.reweight (mlp, no calibration)": lambda g, r: (
            pf.reweight(g, r, calibration="none", random_state=seed).weights
        ),
        "pf.reweight (mlp, ensemble 3)": lambda g, r: (
            pf.reweight(g, r, ensemble=3, random_state=seed).weights
        ),
        "pf.reweight (hgb)": lambda g, r: pf.reweight(g, r, "hgb", random_state=seed).weights,
        "hep_ml GBReweighter": gb_reweighter,
        "plain MLP DCTR": plain_dctr,
    }
    rows = []
    for dim in dims:
        p, q = problem(dim)
        ref, gen, fresh = (
            p.sample(n, seed=10 + dim),
            q.sample(n, seed=20 + dim),
            p.sample(n, 30 + dim),
        )
        exact = p.log_prob(gen) - q.log_prob(gen)
        before = post_auc(gen, np.ones(n), fresh)
        for name, method in methods.items():
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                w = np.asarray(method(gen, ref), dtype=float)
            seconds = time.perf_counter() - start
            bad = int((~np.isfinite(w)).sum() + (w <= 0).sum())
            ok = np.isfinite(w) & (w > 0)
            rmse = float(np.sqrt(np.mean((np.log(w[ok]) - exact[ok]) ** 2)))
            row = dict(D=dim, method=name, rmse=rmse, sd_log_w_exact=float(exact.std()),
                       auc_before=before, auc_after=post_auc(gen, w, fresh), nan_inf_or_zero=bad,
                       seconds=seconds)  # fmt: skip
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def metric_rows(n, sbi_n, dim=10, delta=0.15):
    exact = float(norm.cdf(delta * np.sqrt(dim) / np.sqrt(2)))
    rng = np.random.default_rng(0)
    clf = Classifier("mlp", hidden=(32,), batch_size=1024, lr=3e-3, max_epochs=40, patience=5)
    out = {}
    for name, shift in (("analytic", delta), ("null", 0.0)):
        X, Y = rng.normal(size=(n, dim)), rng.normal(shift, 1, (n, dim))
        start = time.perf_counter()
        r = pf.diagnostics.c2st(X, Y, clf, permutations=99)
        out[name] = dict(n=n, D=dim, delta=shift, exact_auc=exact if shift else 0.5, auc=r.auc,
                         auc_calibrated=r.auc_calibrated, interval=r.auc_interval, jsd=r.jsd,
                         p_value=r.p_value, seconds=time.perf_counter() - start)  # fmt: skip
        print(json.dumps(out[name]), flush=True)
    if sbi_n:
        import torch
        from sbi.utils.metrics import c2st as sbi_c2st

        X, Y = rng.normal(size=(sbi_n, dim)), rng.normal(delta, 1, (sbi_n, dim))
        start = time.perf_counter()
        ours = pf.diagnostics.c2st(X, Y, clf, permutations=99).auc
        t_ours = time.perf_counter() - start
        start = time.perf_counter()
        tX, tY = (torch.as_tensor(a, dtype=torch.float32) for a in (X, Y))
        theirs = float(sbi_c2st(tX, tY, metric="roc_auc"))
        t_sbi = time.perf_counter() - start
        out["timing"] = dict(n=sbi_n, D=dim, exact_auc=exact, pyroflows_auc=ours,
                             pyroflows_seconds=t_ours, sbi_auc=theirs, sbi_seconds=t_sbi,
                             speedup=t_sbi / t_ours)  # fmt: skip
        print(json.dumps(out["timing"]), flush=True)
    return out


def markdown(rows, metric, args):
    lines = [f"# Reweighting and classifier metric (n = {args.n} per set, one thread)", "",
             "| D | method | log-w RMSE | RMSE / pf.reweight | AUC before | AUC after | "
             "NaN/inf/0 | s |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for row in rows:
        ours = next(r for r in rows if r["D"] == row["D"] and r["method"] == "pf.reweight (mlp)")
        lines.append(
            f"| {row['D']} | {row['method']} | {row['rmse']:.4f} | "
            f"{row['rmse'] / ours['rmse']:.2f} | {row['auc_before']:.4f} | "
            f"{row['auc_after']:.4f} | {row['nan_inf_or_zero']} | {row['seconds']:.1f} |"
        )
    lines += ["", "## Classifier metric", "", "```", json.dumps(metric, indent=1), "```"]
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--dims", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--metric-n", type=int, default=100_000)
    parser.add_argument("--sbi-n", type=int, default=20_000)
    parser.add_argument("--skip-reweight", action="store_true")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    rows = [] if args.skip_reweight else reweighting_rows(args.n, args.dims)
    metric = metric_rows(args.metric_n, args.sbi_n) if args.metric_n else {}
    if args.out:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out + ".json", "w") as f:
            json.dump(dict(args=vars(args), reweighting=rows, metric=metric), f, indent=1)
        with open(args.out + ".md", "w") as f:
            f.write(markdown(rows, metric, args))
    print(markdown(rows, metric, args))


if __name__ == "__main__":
    main()
