"""Parallel simulation: speed-up with worker processes for a simulator of 10 ms per call.

Protocol: ``AmortizedPosterior.simulate(N, seed=0, num_workers=w, chunk_size=25)`` for a prior
+ simulator that sleeps 10 ms per simulation (a stand-in for an expensive simulator: the
processes wait, they do not compete for the CPU), ``w`` = 1 and 2, best of 2 calls each;
the tensors of every run are checked to be identical (``torch.equal``). Results:
``benchmarks/results/parallel_simulation.{md,json}``.

Command::

    .venv/bin/python benchmarks/parallel_simulation.py --simulations 1000
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import pyro.distributions as dist
import torch

import pyroflows as pf

RESULTS = Path(__file__).parent / "results"


def slow_simulator(theta):
    time.sleep(0.01 * len(theta))
    return theta + torch.randn_like(theta)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--simulations", type=int, default=1000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args(argv)
    prior = dist.Normal(torch.zeros(2), 1.0).to_event(1)
    post = pf.AmortizedPosterior(prior=prior, simulator=slow_simulator)
    load = os.getloadavg()[0]
    rows, first = [], None
    for w in args.workers:
        times = []
        for _ in range(2):
            start = time.perf_counter()
            out = post.simulate(args.simulations, seed=0, num_workers=w, chunk_size=25)
            times.append(time.perf_counter() - start)
            first = first or out
            assert all(torch.equal(a, b) for a, b in zip(first, out, strict=True))
        rows.append(dict(workers=w, seconds=min(times)))
        print(f"{w} worker(s): {min(times):.2f} s", flush=True)
    base = rows[0]["seconds"]
    result = dict(command="benchmarks/parallel_simulation.py " + " ".join(sys.argv[1:]),
                  date=time.strftime("%Y-%m-%d"), simulations=args.simulations,
                  load_average_start=round(load, 1),
                  load_average_end=round(os.getloadavg()[0], 1), rows=rows,
                  identical=True)  # fmt: skip
    lines = [
        "# Parallel simulation (10 ms per simulation)", "",
        f"Command: `{result['command']}`, {result['date']}, {args.simulations} simulations, "
        f"chunks of 25, load average {result['load_average_start']} -> "
        f"{result['load_average_end']} (2 shared CPUs). Tensors identical across runs: yes.", "",
        "| workers | seconds (best of 2) | speed-up |", "|---:|---:|---:|",
    ]  # fmt: skip
    lines += [f"| {r['workers']} | {r['seconds']:.2f} | {base / r['seconds']:.2f}x |" for r in rows]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "parallel_simulation.json").write_text(json.dumps(result, indent=1))
    (RESULTS / "parallel_simulation.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
