"""Speed and memory of pyroflows' MAF and NSF against zuko, nflows and Pyro's own flows.

Every library builds the same architecture: 5 autoregressive layers, MADE conditioners with
hidden sizes (128, 128) and ReLU, natural and reversed input orders alternating between layers,
a standard normal base, float32 on the CPU. NSF layers use 8 bins on ``[-5, 5]`` with identity
(linear) tails. The libraries, each used the way its documentation shows:

* ``pyroflows``: ``pf.maf(D, layers=5, hidden=(128, 128))`` and
  ``pf.nsf(D, layers=5, hidden=(128, 128), bins=8, bound=5.0)``; ``flow.log_prob(x)``,
  ``flow.sample((n,))``.
* ``zuko``: ``zuko.flows.MAF`` / ``zuko.flows.NSF`` (``transforms=5``,
  ``hidden_features=(128, 128)``; zuko's spline bound is fixed at 5); ``flow().log_prob(x)``,
  ``flow().sample((n,))`` (building the distribution is part of every call, as in zuko's docs).
* ``nflows``: ``Flow(CompositeTransform([...]), StandardNormal([D]))`` with
  ``MaskedAffineAutoregressiveTransform`` or ``MaskedPiecewiseRationalQuadraticAutoregressive
  Transform(tails="linear", tail_bound=5)``, ``num_blocks=1, use_residual_blocks=False`` (an
  input layer plus one hidden block: two hidden layers of 128) and a ``ReversePermutation``
  between layers.
* ``pyro``: as in Pyro's normalizing-flow tutorial, ``AffineAutoregressive(AutoRegressiveNN(D,
  [128, 128]))`` or the equivalent of ``spline_autoregressive(D, hidden_dims=[128, 128],
  count_bins=8, bound=5)`` inside ``dist.TransformedDistribution(dist.Normal(0, 1).expand([D])
  .to_event(1), transforms)``, scored with ``flow_dist.log_prob(x)``. The layers are built
  directly (what the helper does) only to pass the alternating ``permutation`` to
  ``AutoRegressiveNN``. Pyro defines these layers in the IAF direction, so ``log_prob`` of data
  inverts each layer in ``D`` network passes while sampling takes one pass per layer. Note that
  the helper's default spline is the *linear-rational* spline (``order="linear"``, 4K-1
  parameters per feature instead of 3K-1), which is what the tutorial trains.
* ``pyro .inv``: the same layers used as a density estimator through ``.inv`` of each
  transform: ``log_prob`` costs one pass per layer, sampling ``D``. Both ``AffineAutoregressive
  .inv`` and ``SplineAutoregressive.inv`` run (checked with Pyro 1.9.2).

Pyro's transforms cache their last call by tensor identity: scoring the same data tensor twice
would hand back the previous graph in training (an autograd error) and turn ``log_prob`` into a
cache lookup. Every library therefore trains and scores on cycles of four distinct, pre-drawn
batches.

Measurements, for each (family, D, library):

* ``train``: one step = ``zero_grad``, ``-log_prob(x).mean()``, ``backward``, ``Adam.step``;
  median seconds over the timed steps.
* ``log_prob``: ``log_prob`` of a batch of 512 under ``torch.no_grad``; reported as rows/s of
  the median call.
* ``sample``: ``sample(512)`` under ``torch.no_grad``; rows/s of the median call.
* ``peak MB``: working memory of one training step at batch 512, measured in a fresh
  subprocess per configuration: imports, model, optimizer and data are set up and one step at
  batch 8 runs first (so that code pages, Adam state and lazy initialisation are in the
  baseline); then the kernel's peak-RSS mark is reset (``/proc/self/clear_refs``), and the
  result is ``VmHWM`` after the step minus ``VmRSS`` before it. It therefore counts saved
  activations, gradients and temporaries of the step, not parameters or optimizer state. Where
  the reset is not allowed it falls back to ``ru_maxrss`` (``resource.getrusage``) minus the
  baseline, which can only under-report; the method used is stored in the JSON file.

Each operation is warmed up first (``--warmup`` calls), then timed ``--steps`` times, or fewer
once its timed calls add up to ``--budget`` seconds (never fewer than 3): Pyro's ``D``-pass
``log_prob`` at D=50 is measured with fewer repetitions rather than skipped. The libraries of
one (family, D) are timed in turn, call by call, so that load from other processes on the
machine hits them alike; the load average at the start is stored with the results and a
warning is printed when the machine is busy. Ratios are "time relative to zuko":
``t_library / t_zuko`` for the same family and D, so below 1 means faster than zuko.

Usage::

    python benchmarks/speed.py                  # full run, writes benchmarks/results/
    python benchmarks/speed.py --quick          # smoke check (D=10, few steps), prints only
    python benchmarks/speed.py --dims 10 50 --steps 50 --threads 2 --out benchmarks/results
"""

from __future__ import annotations

import argparse
import datetime
import gc
import itertools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import torch
from torch import Tensor, nn

LAYERS = 5
HIDDEN = (128, 128)
BINS = 8
BOUND = 5.0  # zuko's spline bound is fixed at 5.0; keep these equal
BATCH = 512
FAMILIES = ("MAF", "NSF")
MIN_REPS = 3
DATA_POOL = 4  # distinct training batches, so that no identity cache is ever hit
LOAD_AT_START = os.getloadavg()[0]
RESULTS = Path(__file__).resolve().parent / "results"
# Benchmark the checkout this script lives in, whatever the installed copy of pyroflows.
ROOT = str(Path(__file__).resolve().parents[1])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


# -- library adapters ---------------------------------------------------------------------------
@dataclass
class Model:
    """A flow reduced to what the benchmark calls."""

    module: nn.Module
    log_prob: Callable[[Tensor], Tensor]
    sample: Callable[[int], Tensor]

    def parameters(self) -> Iterator[nn.Parameter]:
        return self.module.parameters()


def _orders(dim: int) -> Iterator[Tensor]:
    """Natural, reversed, natural, ... input orders, one per layer."""
    for i in range(LAYERS):
        order = torch.arange(dim)
        yield order if i % 2 == 0 else order.flip(0)


def build_pyroflows(family: str, dim: int) -> Model:
    import pyroflows as pf

    if family == "MAF":
        flow = pf.maf(dim, layers=LAYERS, hidden=HIDDEN)
    else:
        flow = pf.nsf(dim, layers=LAYERS, hidden=HIDDEN, bins=BINS, bound=BOUND)
    return Model(flow, flow.log_prob, lambda n: flow.sample((n,)))


def build_zuko(family: str, dim: int) -> Model:
    import zuko

    kwargs = {"transforms": LAYERS, "hidden_features": HIDDEN}
    if family == "MAF":
        flow = zuko.flows.MAF(dim, **kwargs)
    else:
        flow = zuko.flows.NSF(dim, bins=BINS, **kwargs)
    return Model(flow, lambda x: flow().log_prob(x), lambda n: flow().sample((n,)))


def build_nflows(family: str, dim: int) -> Model:
    from nflows.distributions.normal import StandardNormal
    from nflows.flows.base import Flow
    from nflows.transforms import (
        CompositeTransform,
        MaskedAffineAutoregressiveTransform,
        MaskedPiecewiseRationalQuadraticAutoregressiveTransform,
        ReversePermutation,
    )

    made = {"hidden_features": HIDDEN[0], "num_blocks": len(HIDDEN) - 1}
    made["use_residual_blocks"] = False
    transforms = []
    for i in range(LAYERS):
        if i > 0:
            transforms.append(ReversePermutation(dim))
        if family == "MAF":
            transforms.append(MaskedAffineAutoregressiveTransform(dim, **made))
        else:
            transforms.append(
                MaskedPiecewiseRationalQuadraticAutoregressiveTransform(
                    dim, num_bins=BINS, tails="linear", tail_bound=BOUND, **made
                )
            )
    flow = Flow(CompositeTransform(transforms), StandardNormal([dim]))
    return Model(flow, flow.log_prob, flow.sample)


def build_pyro(family: str, dim: int, inverse: bool = False) -> Model:
    import pyro.distributions as dist
    from pyro.distributions.transforms import AffineAutoregressive, SplineAutoregressive
    from pyro.nn import AutoRegressiveNN

    layers = nn.ModuleList()
    for order in _orders(dim):
        if family == "MAF":
            arn = AutoRegressiveNN(dim, list(HIDDEN), permutation=order)
            layers.append(AffineAutoregressive(arn))
        else:  # what spline_autoregressive(dim, hidden_dims, count_bins, bound) builds
            param_dims = [BINS, BINS, BINS - 1, BINS]
            arn = AutoRegressiveNN(dim, list(HIDDEN), param_dims=param_dims, permutation=order)
            layers.append(SplineAutoregressive(dim, arn, count_bins=BINS, bound=BOUND))
    transforms = [t.inv for t in layers] if inverse else list(layers)
    base = dist.Normal(0.0, 1.0).expand([dim]).to_event(1)
    flow_dist = dist.TransformedDistribution(base, transforms)
    return Model(layers, flow_dist.log_prob, lambda n: flow_dist.sample((n,)))


LIBRARIES: dict[str, Callable[[str, int], Model]] = {
    "pyroflows": build_pyroflows,
    "zuko": build_zuko,
    "nflows": build_nflows,
    "pyro": build_pyro,
    "pyro .inv": lambda family, dim: build_pyro(family, dim, inverse=True),
}


# -- timing -------------------------------------------------------------------------------------
def make_data(dim: int, batch: int = BATCH) -> list[Tensor]:
    """``DATA_POOL`` distinct standard-normal batches."""
    return [torch.randn(batch, dim) for _ in range(DATA_POOL)]


def train_step(model: Model, optimizer: torch.optim.Optimizer, x: Tensor) -> None:
    optimizer.zero_grad()
    loss = -model.log_prob(x).mean()
    loss.backward()
    optimizer.step()


def operations(model: Model, dim: int) -> dict[str, Callable[[], object]]:
    """The timed operations of one model: a training step, ``log_prob`` and ``sample``."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    train_batches, score_batches = itertools.cycle(make_data(dim)), itertools.cycle(make_data(dim))

    def train() -> None:
        train_step(model, optimizer, next(train_batches))

    @torch.no_grad()
    def log_prob() -> Tensor:
        return model.log_prob(next(score_batches))

    @torch.no_grad()
    def sample() -> Tensor:
        return model.sample(BATCH)

    return {"train": train, "log_prob": log_prob, "sample": sample}


def time_interleaved(
    fns: dict[str, Callable[[], object]], reps: int, warmup: int, budget: float
) -> dict[str, list[float]]:
    """Seconds of each timed call of every function, called in turn so that a passing load on
    the machine hits all of them alike. Each gets ``warmup`` untimed calls (fewer once they
    take ``budget / 2`` seconds), then ``reps`` timed calls, fewer once its timed calls add up
    to ``budget`` seconds, but at least ``MIN_REPS`` (or ``reps`` if fewer)."""
    for fn in fns.values():
        start = time.perf_counter()
        for _ in range(warmup):
            fn()
            if time.perf_counter() - start > budget / 2:
                break
    times: dict[str, list[float]] = {name: [] for name in fns}

    def wants_more(t: list[float]) -> bool:
        return len(t) < min(MIN_REPS, reps) or (len(t) < reps and sum(t) < budget)

    while pending := [name for name, t in times.items() if wants_more(t)]:
        for name in pending:
            start = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - start)
    return times


def benchmark(
    family: str, dim: int, libraries: list[str], reps: int, warmup: int, budget: float
) -> list[dict]:
    """Median train-step, ``log_prob`` and ``sample`` seconds of each library for one family
    and dimension (all timings kept under ``<op>_times``)."""
    ops = {}
    for library in libraries:
        torch.manual_seed(0)
        ops[library] = operations(LIBRARIES[library](family, dim), dim)
    rows = {lib: {"family": family, "dim": dim, "library": lib} for lib in libraries}
    for op in ("train", "log_prob", "sample"):
        times = time_interleaved({lib: o[op] for lib, o in ops.items()}, reps, warmup, budget)
        for library, values in times.items():
            rows[library][f"{op}_s"] = statistics.median(values)
            rows[library][f"{op}_times"] = values
    return list(rows.values())


# -- memory -------------------------------------------------------------------------------------
def _proc_status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def memory_probe(library: str, family: str, dim: int) -> dict:
    """Peak RSS growth (MB) during one training step at batch ``BATCH`` (run in a fresh process)."""
    torch.manual_seed(0)
    model = LIBRARIES[library](family, dim)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    small, data = make_data(dim, batch=8), make_data(dim)
    train_step(model, optimizer, small[0])  # pages in kernels, creates the Adam state
    gc.collect()
    reset = _reset_peak_rss()
    baseline_kb = _proc_status_kb("VmRSS")
    train_step(model, optimizer, data[0])
    if reset:
        peak_kb, method = _proc_status_kb("VmHWM"), "VmHWM after clear_refs minus VmRSS"
    else:
        peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        method = "ru_maxrss minus VmRSS"
    return {"peak_mb": max(peak_kb - baseline_kb, 0) / 1024, "memory_method": method}


def run_memory_probe(library: str, family: str, dim: int, threads: int) -> dict:
    """Run :func:`memory_probe` in a fresh interpreter and return its result."""
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--threads",
        str(threads),
        "--probe-memory",
        library,
        family,
        str(dim),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
        return {"peak_mb": float("nan"), "memory_method": f"probe failed: {tail[0]}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- report -------------------------------------------------------------------------------------
def add_ratios(rows: list[dict]) -> None:
    """Add ``<op>_vs_zuko = t_library / t_zuko`` to every row with a zuko row of its kind."""
    zuko = {(r["family"], r["dim"]): r for r in rows if r["library"] == "zuko"}
    for row in rows:
        ref = zuko.get((row["family"], row["dim"]))
        for op in ("train", "log_prob", "sample"):
            row[f"{op}_vs_zuko"] = row[f"{op}_s"] / ref[f"{op}_s"] if ref else float("nan")


def markdown_table(rows: list[dict]) -> str:
    header = (
        "| family | D | library | train ms/step | log_prob rows/s | sample rows/s | peak MB "
        "| train ×zuko | log_prob ×zuko | sample ×zuko |"
    )
    lines = [header, "|" + "---|" * 3 + "---:|" * 7]
    for r in rows:
        lines.append(
            f"| {r['family']} | {r['dim']} | {r['library']} | {1e3 * r['train_s']:.1f} "
            f"| {BATCH / r['log_prob_s']:,.0f} | {BATCH / r['sample_s']:,.0f} "
            f"| {r['peak_mb']:.1f} | {r['train_vs_zuko']:.2f} | {r['log_prob_vs_zuko']:.2f} "
            f"| {r['sample_vs_zuko']:.2f} |"
        )
    return "\n".join(lines)


def machine(threads: int) -> dict:
    versions = {}
    for package in ("torch", "pyro-ppl", "zuko", "nflows", "pyroflows"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "versions": versions,
        "threads": threads,
        "cpus": os.cpu_count(),
        "load_avg_1min_at_start": LOAD_AT_START,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def write_results(out: Path, table: str, info: dict, settings: dict, rows: list[dict]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items())
    text = (
        f"# Speed: pyroflows vs zuko, nflows and Pyro\n\n"
        f"{info['date']} · {info['platform']} · {info['processor']} · Python {info['python']}"
        f" · {info['threads']} of {info['cpus']} CPUs used · load average at start "
        f"{info['load_avg_1min_at_start']:.1f} · {versions}\n\n"
        f"Settings: {json.dumps(settings)}. Ratios are t_library / t_zuko (below 1: faster "
        f"than zuko). Method: see the docstring of `benchmarks/speed.py`.\n\n{table}\n"
    )
    (out / "speed.md").write_text(text)
    payload = {"machine": info, "settings": settings, "results": rows}
    (out / "speed.json").write_text(json.dumps(payload, indent=2) + "\n")


# -- command line -------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke check: D=10, 3 steps, short budgets; prints only",
    )
    parser.add_argument("--dims", type=int, nargs="+", default=None, help="default: 10 50")
    parser.add_argument("--steps", type=int, default=None, help="timed calls per op (50)")
    parser.add_argument(
        "--budget",
        type=float,
        default=None,
        help="seconds of timed calls per op before stopping early (6)",
    )
    parser.add_argument("--warmup", type=int, default=None, help="untimed calls per op (5)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--libraries", nargs="+", default=list(LIBRARIES), choices=LIBRARIES)
    parser.add_argument("--no-memory", action="store_true", help="skip the memory probes")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="folder for speed.md and speed.json (default benchmarks/results; "
        "with --quick nothing is written unless given)",
    )
    parser.add_argument(
        "--probe-memory", nargs=3, metavar=("LIB", "FAMILY", "D"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    quick = args.quick
    args.dims = args.dims or ([10] if quick else [10, 50])
    args.steps = args.steps or (3 if quick else 50)
    args.budget = args.budget or (0.5 if quick else 6.0)
    args.warmup = (1 if quick else 5) if args.warmup is None else args.warmup
    if args.out is None and not quick:
        args.out = RESULTS
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.probe_memory:
        library, family, dim = args.probe_memory
        print(json.dumps(memory_probe(library, family, int(dim))))
        return
    if LOAD_AT_START > (os.cpu_count() or 1) - args.threads + 0.5:
        print(
            f"warning: load average {LOAD_AT_START:.1f} on {os.cpu_count()} CPUs; other "
            "processes compete for the cores and the timings will be noisy",
            file=sys.stderr,
        )

    start = time.perf_counter()
    rows = []
    for family in FAMILIES:
        for dim in args.dims:
            for row in benchmark(family, dim, args.libraries, args.steps, args.warmup, args.budget):
                print(
                    f"{family} D={dim} {row['library']}: train {1e3 * row['train_s']:.1f} ms, "
                    f"log_prob {1e3 * row['log_prob_s']:.1f} ms, "
                    f"sample {1e3 * row['sample_s']:.1f} ms",
                    flush=True,
                )
                rows.append(row)
    for row in rows:
        if args.no_memory:
            row.update(peak_mb=float("nan"), memory_method="skipped")
        else:
            row.update(run_memory_probe(row["library"], row["family"], row["dim"], args.threads))
    add_ratios(rows)

    table = markdown_table(rows)
    print("\n" + table)
    settings = {
        "layers": LAYERS,
        "hidden": HIDDEN,
        "bins": BINS,
        "bound": BOUND,
        "batch": BATCH,
        "dtype": "float32",
        "dims": args.dims,
        "steps": args.steps,
        "warmup": args.warmup,
        "budget_s": args.budget,
        "wall_s": round(time.perf_counter() - start, 1),
    }
    if args.out is not None:
        write_results(args.out, table, machine(args.threads), settings, rows)
        print(f"\nwrote {args.out / 'speed.md'} and {args.out / 'speed.json'}")
    print(f"wall time {settings['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
