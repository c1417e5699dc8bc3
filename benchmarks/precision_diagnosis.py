"""Why DiscFlow's weights do not lower a fresh classifier's AUC on the precision toy
(``benchmarks/precision.py``'s ring and peak; development seeds only).

One plain fit of ``--epochs`` epochs (the same small flow as the benchmark, or ``--flow nsf``),
then each arm continues from that same state for 24 more epochs and is scored on fresh draws:

* ``rounds:unit``: 6 rounds of 4 epochs with unit weights (a fresh Adam each round, all rows,
  no best-state restore: DiscFlow's training without its weights);
* ``plain-epochs``: a plain fit of ``--epochs + 24`` epochs (one Adam, early stopping on 10 %);
* ``rounds:hgb:POWER:CAP``: DiscFlow's rounds (out-of-fold gradient-boosting ratio, weights
  ``w ** alpha`` with alpha rising to POWER, bounded to ``[1/CAP, CAP]``);
* ``rounds:exact:POWER:CAP``: the same with the exact ratio ``p / q`` (no classifier noise);
* ``joint:LAM:POWER``: one fit of 24 epochs where every step recomputes the exact weights of its
  batch (``(p / q) ** POWER``, ``log p / q`` bounded to ``WEIGHT_BOUNDS``, divided by their
  batch mean; the paper's batch-level update with perfect weights) and adds LAM times the
  score-function reverse-KL term on 256 fresh draws (exact ratio, ``log p / q`` bounded to
  ``REVERSE_BOUNDS``).

Metrics: the benchmark's fresh-classifier AUC and chi2 per bin, the held-out NLL, and from the
exact density: the exact-ratio AUC, the total variation ``E_q[max(0, 1 - p/q)]`` and its split
by region (peak ``r < 0.2``, gap ``0.2 <= r < 0.85``, ring ``0.85 <= r < 1.15``, outer), the
generator's mass per region, the radial sd of the ring and the sd of the peak.

Usage::

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/precision_diagnosis.py --seed 0 \\
        --arms rounds:unit plain-epochs rounds:hgb:0.5:5 rounds:exact:0.5:5
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time

import numpy as np
import torch
from precision import auc, chi2_per_bin, log_target, sample_target
from sklearn.metrics import roc_auc_score

import pyroflows as pf
from pyroflows.classify import Classifier
from pyroflows.discflow import _log_ratio
from pyroflows.losses import nll
from pyroflows.train import fit

# bounds of log p / q in the joint arms as they were run: the weights' (then divided by their
# batch mean) and the reverse term's (under-produced draws are rare: a low upper bound)
WEIGHT_BOUNDS = (-3.45, -0.23)
REVERSE_BOUNDS = (-4.84, 1.16)


def regions(x: np.ndarray) -> np.ndarray:
    r = np.linalg.norm(x, axis=1)
    return np.select([r < 0.2, r < 0.85, r < 1.15], [0, 1, 2], 3)


class Study:
    def __init__(self, seed: int, flow: str, epochs: int):
        self.seed, self.flow, self.epochs = seed, flow, epochs
        rng = np.random.default_rng(seed)
        self.X = sample_target(10000, rng)
        self.truth, self.test = sample_target(10000, rng), sample_target(20000, rng)
        self.big = sample_target(400_000, rng)
        t0 = time.perf_counter()
        self.base = self.estimator(epochs).fit(self.X)
        self.t_base = time.perf_counter() - t0
        self.state0 = copy.deepcopy(self.base.core_flow_.state_dict())

    def estimator(self, epochs: int) -> pf.DensityEstimator:
        return pf.DensityEstimator(flow=self.flow, layers=4, hidden=(32, 32), max_epochs=epochs,
                                   random_state=self.seed, progress=False)  # fmt: skip

    def metrics(self, name: str, est: pf.DensityEstimator, seconds: float) -> dict:
        draws = est.sample(10000, random_state=self.seed + 100)
        one = np.ones(len(draws))
        lq_d, lp_d = est.score_samples(draws), log_target(draws)
        lq_t, lp_t = est.score_samples(self.truth), log_target(self.truth)
        s = np.r_[lp_d - lq_d, lp_t - lq_t]
        y = np.r_[np.zeros(len(draws)), np.ones(len(self.truth))]
        where = regions(draws)
        tv = np.maximum(0, 1 - np.exp(lp_d - lq_d))
        r = np.linalg.norm(draws, axis=1)
        row = dict(
            name=name, seed=self.seed, sec=round(seconds, 1),
            auc=round(auc(draws, one, self.truth), 4),
            auc_exact=round(float(roc_auc_score(y, s)), 4),
            chi2=round(chi2_per_bin(draws, one, self.big), 1),
            nll=round(float(-est.score_samples(self.test).mean()), 4),
            tv=round(float(tv.mean()), 4),
            tv_reg=[round(float(tv[where == k].sum() / len(draws)), 4) for k in range(4)],
            q_mass=[round(float(v), 4) for v in np.bincount(where, minlength=4) / len(draws)],
            ring_sd=round(float(r[where == 2].std()), 4),
            peak_sd=round(float(np.sqrt((draws[where == 0] ** 2).mean() / 2)), 4),
        )  # fmt: skip
        print(json.dumps(row), flush=True)
        return row

    def restart(self) -> pf.DensityEstimator:
        self.base.core_flow_.load_state_dict(self.state0)
        return self.base

    def rounds(self, name: str, ratio: str, power: float = 0.5, cap: float = 5.0) -> dict:
        est = self.restart()
        core, Z = est.core_flow_, est.to_latent(self.X)
        t0 = time.perf_counter()
        for r in range(1, 7):
            if ratio == "unit":
                log_w = np.zeros(len(self.X))
            elif ratio == "exact":
                log_w = log_target(self.X) - est.score_samples(self.X)
            else:
                log_w, _ = _log_ratio(est, self.X, Classifier("hgb"), 10000, 2, self.seed + r)
            w = np.exp(power * r / 6 * np.clip(log_w, -math.log(cap), math.log(cap)))
            fit(core, nll, Z, sample_weight=w, max_epochs=4, lr=1e-3, batch_size=256,
                patience=None, seed=self.seed + r, progress=False)  # fmt: skip
        return self.metrics(name, est, time.perf_counter() - t0 + self.t_base)

    def joint(self, name: str, lam: float, power: float, m: int = 256) -> dict:
        est = self.restart()
        core, Z, pre = est.core_flow_, est.to_latent(self.X), est.preprocessor_

        def log_p(z: torch.Tensor) -> torch.Tensor:  # exact target density, latent units
            x = pre.from_latent(z.double())
            _, ladj = pre.to_latent(x)  # log |dz / dx|
            return torch.as_tensor(log_target(x.numpy()), dtype=z.dtype) - ladj.to(z.dtype)

        def loss(model, batch):
            z = batch[0]
            lqz = model.log_prob(z, None, check=False)
            wz = 1.0
            if power > 0:
                with torch.no_grad():
                    wz = torch.exp(power * torch.clamp(log_p(z) - lqz, *WEIGHT_BOUNDS))
                    wz = wz / wz.mean()
            data = -(wz * lqz).mean()
            with torch.no_grad():
                zd = model.sample((m,))
                c = torch.clamp(log_p(zd) - model.log_prob(zd, None, check=False), *REVERSE_BOUNDS)
                c = c - c.mean()
            return data - lam * (c * model.log_prob(zd, None, check=False)).mean()

        t0 = time.perf_counter()
        fit(core, loss, (Z,), max_epochs=24, lr=1e-3, batch_size=256, patience=None,
            seed=self.seed, progress=False)  # fmt: skip
        return self.metrics(name, est, time.perf_counter() - t0 + self.t_base)

    def run(self, arm: str) -> dict:
        kind, *rest = arm.split(":")
        if kind == "plain-epochs":
            t0 = time.perf_counter()
            est = self.estimator(self.epochs + 24).fit(self.X)
            return self.metrics(arm, est, time.perf_counter() - t0)
        if kind == "rounds":
            ratio, *knobs = rest
            return self.rounds(arm, ratio, *[float(k) for k in knobs])
        if kind == "joint":
            return self.joint(arm, float(rest[0]), float(rest[1]))
        raise ValueError(f"unknown arm {arm!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--flow", default="maf")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--arms", nargs="+", default=["rounds:unit", "plain-epochs"])
    args = parser.parse_args()
    study = Study(args.seed, args.flow, args.epochs)
    print(json.dumps({"target_mass": [0.2, 0.0001, 0.7998, 0.0001]}))
    study.metrics(f"plain{args.epochs}", study.base, study.t_base)
    for arm in args.arms:
        study.run(arm)


if __name__ == "__main__":
    main()
