"""Speed of the autoregressive NSF in its two spline directions, in the same process.

``pf.nsf(D, layers=5, hidden=(128, 128), bins=8, bound=5, spline=s)`` for ``s`` in
``"inverse"`` (data -> base applies the spline's inverse, sampling the spline) and
``"forward"`` (data -> base applies the spline, sampling its inverse), float32 on the CPU,
one torch thread. The conditioners' parameters are drawn at random (N(0, 0.05^2)) so that the
splines are not the identity. Per direction and dimension ``D``:

* ``train``: one step on 256 rows (``zero_grad``, ``-log_prob(x).mean()``, ``backward``,
  ``Adam.step``);
* ``log_prob``: 10 000 rows without gradients;
* ``sample``: 10 000 draws (``flow.sample``; ``D`` passes per layer).

The two directions alternate within every repetition (the same load for both); the median
over ``--repeats`` repetitions is printed with the ratio forward / inverse.

Run: ``PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/spline_direction_speed.py``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

import pyroflows as pf

DIRECTIONS = ("inverse", "forward")


def build(dim: int, spline: str) -> pf.Flow:
    torch.manual_seed(0)
    flow = pf.nsf(dim, layers=5, hidden=(128, 128), bins=8, bound=5.0, spline=spline)
    with torch.no_grad():
        for p in flow.parameters():
            p.normal_(0.0, 0.05)
    return flow


def timings(flow: pf.Flow, dim: int) -> dict[str, float]:
    """Seconds of one training step, one log_prob and one sample call."""
    g = torch.Generator().manual_seed(1)
    batch, rows = torch.randn(256, dim, generator=g), torch.randn(10_000, dim, generator=g)
    optimizer = torch.optim.Adam(flow.parameters(), lr=1e-9)
    out = {}
    start = time.perf_counter()
    optimizer.zero_grad()
    (-flow.log_prob(batch).mean()).backward()
    optimizer.step()
    out["train"] = time.perf_counter() - start
    with torch.no_grad():
        start = time.perf_counter()
        flow.log_prob(rows)
        out["log_prob"] = time.perf_counter() - start
    start = time.perf_counter()
    flow.sample((10_000,))
    out["sample"] = time.perf_counter() - start
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[2, 8, 32])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"load average {os.getloadavg()[0]:.2f}; median of {args.repeats} repeats, 1 thread")
    print("| D | measure | inverse (s) | forward (s) | forward / inverse |")
    print("|---|---|---|---|---|")
    for dim in args.dims:
        flows = {s: build(dim, s) for s in DIRECTIONS}
        for flow in flows.values():
            timings(flow, dim)  # warm-up
        seen: dict[str, dict[str, list[float]]] = {s: {} for s in DIRECTIONS}
        for _ in range(args.repeats):
            for s, flow in flows.items():
                for key, value in timings(flow, dim).items():
                    seen[s].setdefault(key, []).append(value)
        for key in seen["inverse"]:
            inv = statistics.median(seen["inverse"][key])
            fwd = statistics.median(seen["forward"][key])
            print(f"| {dim} | {key} | {inv:.4f} | {fwd:.4f} | {fwd / inv:.2f} |", flush=True)
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
