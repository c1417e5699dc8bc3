"""Ensembles of amortized posteriors against one member: C2ST and expected coverage.

Protocol (small scale; every number in the results names it): for each task (the simulators
and reference posteriors of ``benchmarks/amortized.py``: ``two_moons`` with exact reference
draws, ``linear_gaussian`` (10-D) with its analytic posterior), ``--simulations`` simulations
are drawn under the part's seed and ``AmortizedPosterior(prior=..., simulator=...,
flow=--flow, ensemble=--members)`` is fitted on them with the default two-phase recipe,
``seed=0`` and ``max_epochs=--max-epochs`` over both phases (member ``i`` trains with seed
``i``: its own split, batches and initial flow). The single posterior compared is member 0
(what the same call with ``ensemble=1`` fits); ``--every-member`` scores every member and
reports their mean too.

* C2ST: :func:`pyroflows.diagnostics.c2st` (gradient boosting, 5 folds; 0.5 = perfect)
  between ``--draws`` posterior draws and as many reference draws, per observation.
* Calibration: expected coverage of highest-density regions
  (:func:`pyroflows.diagnostics.expected_coverage`: the share of ``--coverage-sims`` held-out
  simulations whose true parameter lies inside the level-``a`` region, from 100 draws and
  ``log_prob`` each) at levels 0.5, 0.8, 0.9, 0.95; coverage below the level is over-confident,
  above it conservative. Reported as coverage minus level.

Parts: ``development`` (simulations seed 0, observations 1-3, coverage simulations seed 10)
and ``confirmation`` (simulations seed 1, observations 4-6, coverage simulations seed 11).
The settings (``--members 3``, ``--flow nsf``, ``--max-epochs 20``) were set by the time the
shared CPU allowed, not tuned on the development part; the confirmation part ran once.

Command::

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/ensemble_posterior.py --part development
    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/ensemble_posterior.py --part confirmation
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from amortized import TASKS  # noqa: E402

import pyroflows as pf  # noqa: E402
from pyroflows.diagnostics import c2st, expected_coverage  # noqa: E402

RESULTS = Path(__file__).parent / "results"
LEVELS = [0.5, 0.8, 0.9, 0.95]
PARTS = {
    "development": dict(sim_seed=0, observations=slice(0, 3), coverage_seed=10),
    "confirmation": dict(sim_seed=1, observations=slice(3, 6), coverage_seed=11),
}


def scores(post, task, x_obs, ref_seed, args):
    """C2ST per observation, and coverage minus level at :data:`LEVELS`."""
    c = []
    for i, x in enumerate(x_obs):
        torch.manual_seed(ref_seed + i)
        reference = task.reference(x, args.draws).numpy()
        draws = post.sample(x, args.draws, seed=ref_seed + 100 + i).numpy()
        c.append(float(c2st(draws, reference, classifier="hgb", n_bootstrap=0).accuracy))
    return c


def coverage(post, theta, x):
    result = expected_coverage(post, theta=theta, x=x, num_posterior_samples=100,
                               levels=LEVELS, seed=5)  # fmt: skip
    return [float(v - a) for v, a in zip(result.coverage, LEVELS, strict=True)]


def run(args, log):
    part = PARTS[args.part]
    rows = []
    for name in args.tasks:
        task = TASKS[name]()
        torch.manual_seed(1000)  # the same six observations in both parts
        x_all = task.simulate(task.prior.sample((6,)))
        x_obs = x_all[part["observations"]]
        torch.manual_seed(part["sim_seed"])
        theta = task.prior.sample((args.simulations,))
        x = task.simulate(theta)
        torch.manual_seed(part["coverage_seed"])
        theta_c = task.prior.sample((args.coverage_sims,))
        x_c = task.simulate(theta_c)
        post = pf.AmortizedPosterior(prior=task.prior, simulator=task.simulate, flow=args.flow,
                                     ensemble=args.members)  # fmt: skip
        start = time.perf_counter()
        cap = {} if args.max_epochs is None else dict(max_epochs=args.max_epochs)
        post.fit(theta, x, seed=0, progress=False, **cap)
        fit_s = time.perf_counter() - start
        seed = 7000 + 10 * part["sim_seed"]
        row = dict(task=name, part=args.part, simulations=args.simulations, flow=args.flow,
                   members=args.members, fit_s=fit_s, levels=LEVELS)  # fmt: skip
        row["ensemble_c2st"] = scores(post, task, x_obs, seed, args)
        row["ensemble_coverage_minus_level"] = coverage(post, theta_c, x_c)
        members = post.members if args.every_member else post.members[:1]
        row["member_c2st"] = [scores(m, task, x_obs, seed, args) for m in members]
        row["member_coverage_minus_level"] = [coverage(m, theta_c, x_c) for m in members]
        rows.append(row)
        log(json.dumps(row))
    return rows


def markdown(rows, args) -> str:
    lines = [
        f"# Ensemble posteriors vs one member ({args.part})",
        "",
        f"Protocol: `benchmarks/ensemble_posterior.py --part {args.part}` ({args.simulations} "
        f"simulations, flow {args.flow!r}, {args.members} members, default two-phase recipe "
        f"capped at {args.max_epochs} epochs, "
        f"C2ST over {args.draws} draws per observation, expected coverage over "
        f"{args.coverage_sims} held-out simulations x 100 draws; load average "
        f"{getattr(args, 'load', None) or f'{os.getloadavg()[0]:.1f} at the start'}). "
        "Single = member 0 (seed 0); mean member = the average over the members "
        "(`--every-member`).",
        "",
        "| task | C2ST ensemble | C2ST single | C2ST mean member | coverage - level at "
        f"{LEVELS}: ensemble | single | mean member | fit s (all members) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        members = np.array(r["member_c2st"])
        cov = np.array(r["member_coverage_minus_level"])
        fmt = lambda v: " / ".join(f"{x:+.3f}" for x in v)  # noqa: E731
        every = len(members) > 1  # else only member 0 was scored
        lines.append(
            f"| {r['task']} | {np.mean(r['ensemble_c2st']):.3f} | {members[0].mean():.3f} | "
            f"{f'{members.mean():.3f}' if every else 'not run'} | "
            f"{fmt(r['ensemble_coverage_minus_level'])} | {fmt(cov[0])} | "
            f"{fmt(cov.mean(0)) if every else 'not run'} | {r['fit_s']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=sorted(PARTS), default="development")
    parser.add_argument("--tasks", nargs="+", default=["two_moons", "linear_gaussian"])
    parser.add_argument("--simulations", type=int, default=1000)
    parser.add_argument("--members", type=int, default=3)
    parser.add_argument("--max-epochs", type=int, default=20)
    parser.add_argument("--flow", default="nsf")
    parser.add_argument("--draws", type=int, default=300)
    parser.add_argument("--coverage-sims", type=int, default=100)
    parser.add_argument(
        "--every-member",
        action="store_true",
        help="score every member, not only member 0 (the mean member)",
    )
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    args.load = f"{os.getloadavg()[0]:.1f} at the start"
    rows = run(args, print)
    out = Path(args.out) if args.out else RESULTS / f"ensemble_posterior_{args.part}"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(dict(args=vars(args), rows=rows), indent=1))
    out.with_suffix(".md").write_text(markdown(rows, args))
    print(markdown(rows, args))


if __name__ == "__main__":
    main()
