"""How well CATHODE's background model mimics the true SR background (issue 29, development
setting only).

For one bump hunt of the development generator, a :class:`pyroflows.anomaly.ConditionalDensity`
is trained in the sidebands and sampled in the SR at the ``m`` of the extra (true) SR background
sample; an out-of-fold HistGradientBoosting classifier of the samples vs. that true background
gives the fidelity AUC (0.5: indistinguishable, which the idealized detector assumes). The same
density then serves CATHODE (``m`` from the KDE of the SR data, 4x oversampling) and its max SIC
is printed next to the idealized detector's on the same data.

Command::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/anomaly_fidelity.py --epochs 8
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from pyroflows import anomaly as A
from pyroflows.classify import Classifier, out_of_fold_proba
from pyroflows.datasets import bump_hunt

BOUNDS = ([-np.inf, -np.inf, 0.0, 0.0], [np.inf, np.inf, 1.0, 1.0])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--n-test", type=int, default=30_000)
    p.add_argument("--n-extra", type=int, default=30_000)
    p.add_argument("--correlation", default="strong")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--family", default="maf")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", default="32,32")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--best-epochs", type=int, default=1)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--schedule", default=None)
    p.add_argument("--patience", type=int, default=5, help="0: no early stopping")
    p.add_argument("--no-bounds", action="store_true")
    p.add_argument("--label", default="")
    args = p.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    hidden = tuple(int(h) for h in args.hidden.split(","))
    data = bump_hunt(
        args.n, 0.006, args.correlation, n_test_background=args.n_test,
        n_test_signal=args.n_test // 10, n_extra_background=args.n_extra,
        n_extra_signal=args.n_test // 10, seed=args.seed,
    )  # fmt: skip
    region, d, t, extra = A.SignalRegion(*data.sr), data.data, data.test, data.extra_background
    sb = region.sidebands(d.m)
    start = time.perf_counter()
    dens = A.ConditionalDensity(
        args.family, layers=args.layers, hidden=hidden, bounds=None if args.no_bounds else BOUNDS,
        max_epochs=args.epochs, batch_size=args.batch, lr=args.lr, schedule=args.schedule,
        patience=args.patience or None, best_epochs=args.best_epochs, seed=args.seed,
    ).fit(d.x[sb], d.m[sb])  # fmt: skip
    train_s = time.perf_counter() - start
    val = dens.histories_[0].val_loss
    # fidelity: samples at the true background's own m vs the true background
    samples = dens.sample(extra.m, seed=args.seed + 1)
    X = np.concatenate([samples, extra.x])
    y = np.repeat([0, 1], len(extra.x))
    clf = Classifier("hgb", random_state=args.seed)
    auc = float(roc_auc_score(y, out_of_fold_proba(clf, X, y, 3)))
    # exact KL(true || model) in the SR from the generator's density (nats per event)
    log_ratio = data.generator.log_prob_background_x(extra.x, extra.m) - dens.log_prob(
        extra.x, extra.m
    )
    kl, kl_err = float(log_ratio.mean()), float(log_ratio.std() / np.sqrt(len(log_ratio)))
    # sampling time of 400 000 conditional samples
    m4 = A.kde_sample(d.m[region.inside(d.m)], 400_000, *data.sr, seed=0)
    s0 = time.perf_counter()
    dens.sample(m4, seed=0)
    sample_s = time.perf_counter() - s0
    clf = Classifier("hgb", ensemble=3, random_state=args.seed)
    cathode = A.CATHODE(region, dens, clf, refit_background=False, seed=args.seed).fit(d.x, d.m)
    sic_c = A.max_sic(t.label, cathode.score(t.x))["max_sic"]
    ideal = A.IdealizedAD(region, Classifier("hgb", ensemble=3, random_state=args.seed))
    sic_i = A.max_sic(t.label, ideal.fit(d.x, d.m, extra.x).score(t.x))["max_sic"]
    row = {
        "label": args.label, "argv": " ".join(sys.argv[1:]), "fidelity_auc": auc,
        "kl": kl, "kl_err": kl_err,
        "cathode": sic_c, "idealized": sic_i, "ratio": sic_c / sic_i, "epochs": len(val),
        "best_val": float(min(val)), "members": len(dens.members_), "train_s": train_s,
        "sample_400k_s": sample_s, "load": os.getloadavg()[0],
    }  # fmt: skip
    print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
