"""Can a parametric bootstrap calibrate the ensemble's error bars? A study, not a feature.

For each development target of ``ensemble_calibration.py`` (same rows, flow settings and
members): fit ``DensityEstimator(ensemble=K)`` to the rows; draw as many rows (and test rows)
from the fitted ensemble, where the true log-density is now known (the ensemble's own); fit a
second ensemble with the same settings to them; the factor ``c`` that brings 90 % of the second
ensemble's errors within ``+-2 c sd`` is then applied to the first ensemble's ``sd`` on the
real test rows. Also with the bootstrap's mean error removed (a constant bias correction).
Printed: the share of real test rows within ``+-2 sd`` and ``+-2 c sd``, the factor the real
rows would have needed, and the mean error of the real fit against the bootstrap's.

Usage::

    python benchmarks/ensemble_bootstrap.py [--targets rings-2 spiral mixture_5d-3]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from ensemble_calibration import FLOW, PARTS, factor_for

from pyroflows.density import DensityEstimator


def study(name: str, make, members: int, budget: float) -> dict:
    truth = make()
    X, X_test = truth.sample(2000, seed=0), truth.sample(1000, seed=1)
    start = time.perf_counter()
    est = DensityEstimator(**FLOW, ensemble=members, time_budget=budget * members).fit(X)
    log_p, sd = est.score_samples(X_test, return_std=True)
    errors = np.asarray(truth.log_prob(X_test), dtype=np.float64) - log_p
    X_boot, X_boot_test = est.sample(2000, random_state=10), est.sample(1000, random_state=11)
    boot = DensityEstimator(**FLOW, ensemble=members, time_budget=budget * members).fit(X_boot)
    log_p_boot, sd_boot = boot.score_samples(X_boot_test, return_std=True)
    errors_boot = est.score_samples(X_boot_test) - log_p_boot
    c = factor_for(errors_boot, sd_boot)
    bias = float(errors_boot.mean())
    c_centred = factor_for(errors_boot - bias, sd_boot)
    return {
        "target": name,
        "within_2sd": float(np.mean(np.abs(errors) <= 2 * sd)),
        "factor_needed": factor_for(errors, sd),
        "factor_bootstrap": c,
        "within_2c_sd": float(np.mean(np.abs(errors) <= 2 * c * sd)),
        "within_centred": float(np.mean(np.abs(errors - bias) <= 2 * c_centred * sd)),
        "mean_error": float(errors.mean()),
        "mean_error_bootstrap": bias,
        "seconds": round(time.perf_counter() - start, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", nargs="+", default=sorted(PARTS["development"]))
    parser.add_argument("--members", type=int, default=5)
    parser.add_argument("--budget", type=float, default=20.0, help="seconds per member")
    parser.add_argument("--out", default="benchmarks/results/ensemble_bootstrap.json")
    args = parser.parse_args()
    unknown = sorted(set(args.targets) - set(PARTS["development"]))
    if unknown:  # the confirmation targets stay unseen by studies
        parser.error(f"not development targets: {unknown}")
    rows = []
    for name in args.targets:
        row = study(name, PARTS["development"][name], args.members, args.budget)
        rows.append(row)
        print(json.dumps(row), flush=True)
    protocol = {k: v for k, v in vars(args).items() if k != "out"} | {"flow": FLOW}
    Path(args.out).write_text(json.dumps({"protocol": protocol, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
