"""Calibration of the ensemble's error bars on densities known exactly.

Protocol: for each target, ``--train`` rows and ``--test`` rows are drawn (seeds 0 and 1); a
``DensityEstimator(ensemble=K)`` with the flow settings below is fitted (members on seeds 0,
..., K-1, each with ``--budget`` seconds of training); on the test rows we record the
ensemble's ``log p`` and ``sd`` (``score_samples(X, return_std=True)``), the true ``log p``,
and report the share of test rows whose true ``log p`` lies within ``+-2 sd`` (target: at
least 90 %), the share within ``+-2 c sd`` for the factor ``c`` that reaches 90 % on the
development targets, the mean error ``mean(log p_true - log p)`` (the bias the spread does not
see) and the median ``sd``. Targets are split into a development part (where ``c`` is chosen)
and a confirmation part (run once with the ``c`` found on the development part).

Usage::

    python benchmarks/ensemble_calibration.py --part development
    python benchmarks/ensemble_calibration.py --part confirmation --factor C
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from pyroflows import datasets
from pyroflows.density import DensityEstimator

PARTS = {
    "development": {
        "rings-2": lambda: datasets.rings(n_rings=2),
        "spiral": lambda: datasets.spiral(),
        "mixture_5d-3": lambda: datasets.gaussian_mixture(dim=5, n_components=3, gap=4.0),
    },
    "confirmation": {
        "mixture_2d-4": lambda: datasets.gaussian_mixture_2d(4),
        "rings-3": lambda: datasets.rings(n_rings=3),
        "mixture_8d-4": lambda: datasets.gaussian_mixture(dim=8, n_components=4, gap=4.0),
    },
}
FLOW = dict(flow="nsf", layers=3, hidden=(64, 64), max_epochs=300, patience=20, progress=False)


def factor_for(errors: np.ndarray, sd: np.ndarray, share: float = 0.9) -> float:
    """The smallest ``c`` with ``|error| <= 2 c sd`` on ``share`` of the rows."""
    return float(np.quantile(np.abs(errors) / (2 * sd), share))


def run_target(name: str, make, args: argparse.Namespace) -> dict:
    truth = make()
    X = truth.sample(args.train, seed=0)
    X_test = truth.sample(args.test, seed=1)
    start = time.perf_counter()
    est = DensityEstimator(**FLOW, ensemble=args.members, time_budget=args.budget * args.members)
    est.fit(X)
    seconds = time.perf_counter() - start
    log_p, sd = est.score_samples(X_test, return_std=True)
    true = np.asarray(truth.log_prob(X_test), dtype=np.float64)
    errors = true - log_p
    members = np.stack([m.score_samples(X_test) for m in est.ensemble_])
    return {
        "target": name,
        "seconds": round(seconds, 1),
        "within_2sd": float(np.mean(np.abs(errors) <= 2 * sd)),
        "within_2c_sd": float(np.mean(np.abs(errors) <= 2 * args.factor * sd)),
        "factor_for_90": factor_for(errors, sd),
        "mean_error": float(errors.mean()),
        "median_sd": float(np.median(sd)),
        "ensemble_loglik": float(log_p.mean()),
        "member_loglik": [float(v) for v in members.mean(axis=1)],
        "true_loglik": float(true.mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=sorted(PARTS), default="development")
    parser.add_argument("--members", type=int, default=5)
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--budget", type=float, default=20.0, help="seconds per member")
    parser.add_argument("--factor", type=float, default=1.0, help="c, chosen on development")
    parser.add_argument("--out", default="benchmarks/results/ensemble_calibration")
    args = parser.parse_args()
    rows = []
    for name, make in PARTS[args.part].items():
        row = run_target(name, make, args)
        rows.append(row)
        print(
            f"{name:14s} within 2 sd {row['within_2sd']:.3f}  within 2c sd "
            f"{row['within_2c_sd']:.3f}  c for 90% {row['factor_for_90']:.2f}  mean error "
            f"{row['mean_error']:+.3f}  median sd {row['median_sd']:.3f}  "
            f"log-lik {row['ensemble_loglik']:.3f} (members {np.mean(row['member_loglik']):.3f}, "
            f"true {row['true_loglik']:.3f})  {row['seconds']:.0f} s",
            flush=True,
        )
    out = Path(args.out + f".{args.part}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    protocol = {k: v for k, v in vars(args).items() if k != "out"} | {"flow": FLOW}
    out.write_text(json.dumps({"protocol": protocol, "rows": rows}, indent=1, default=str))


if __name__ == "__main__":
    main()
