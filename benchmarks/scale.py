"""Data larger than memory: fitting from a memory-mapped 10-million-row ``.npy`` file.

Writes (once, in chunks) a ``ROWS x 10`` float64 file of correlated Gaussian rows with large
offsets (800 MB at the default 10 million rows), then in fresh subprocesses

1. **streamed**: ``DensityEstimator(flow="nsf", ...).fit(path)``: chunked checks, float64
   statistics in one streaming pass, training on shuffled blocks read from the file;
2. **in memory**: the same estimator on the first ``--in-memory-rows`` rows loaded as an array;

each for ``--budget`` seconds of training, and prints the peak resident memory of each process
(``ru_maxrss``, which includes the file pages it touched), the training throughput (rows per
second) and the ratio streamed / in memory. Targets (issue "Reliability and scale"): peak RSS
< 2 GB for the streamed 10^7 x 10 fit; throughput within 1.2x of the in-memory fit.

Usage::

    python benchmarks/scale.py                      # 10 million rows, 60 s of training each
    python benchmarks/scale.py --rows 1000000 --budget 10   # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

CHILD = textwrap.dedent(
    """
    import json, resource, sys, time
    import numpy as np
    import pyroflows as pf

    path, mode, rows, budget = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    est = pf.DensityEstimator(flow="nsf", batch_size=512, max_epochs=1000, time_budget=budget,
                              validation_fraction=0.01, progress=False)
    data = path if mode == "streamed" else np.array(np.load(path, mmap_mode="r")[:rows])
    start = time.perf_counter()
    est.fit(data)
    total = time.perf_counter() - start
    h = est.history_
    trained = h.steps * est.batch_size
    print(json.dumps({
        "mode": mode,
        "rows": int(np.load(path, mmap_mode="r").shape[0]) if mode == "streamed" else rows,
        "fit_seconds": total,
        "train_seconds": h.time[-1] if h.time else float("nan"),
        "rows_trained": trained,
        "rows_per_second": trained / h.time[-1] if h.time else float("nan"),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "best_val_loss": h.best_loss,
    }))
    """
)


def make_data(path: Path, rows: int, dim: int = 10, chunk: int = 500_000) -> None:
    """Correlated Gaussian rows with offsets of 1e6, written in chunks (never all in memory)."""
    rng = np.random.default_rng(0)
    mix = rng.normal(size=(dim, dim)) / np.sqrt(dim)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float64, shape=(rows, dim))
    for start in range(0, rows, chunk):
        n = min(chunk, rows - start)
        z = rng.normal(size=(n, dim))
        z[:, 0] = np.sign(z[:, 0]) * np.abs(z[:, 0]) ** 1.5  # a non-Gaussian column
        out[start : start + n] = z @ mix + 1e6
    out.flush()


def run(path: Path, mode: str, rows: int, budget: float, threads: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYROFLOWS_PROGRESS": "0"}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), mode, str(rows), str(budget)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        raise RuntimeError(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--in-memory-rows", type=int, default=1_000_000)
    parser.add_argument("--budget", type=float, default=60.0, help="seconds of training")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--folder", default="/tmp/pyroflows-scale")
    args = parser.parse_args(argv)
    folder = Path(args.folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"rows{args.rows}.npy"
    if not path.exists():
        print(f"writing {path} ({args.rows * 80 / 1e6:.0f} MB) ...", flush=True)
        make_data(path, args.rows)
    in_memory = min(args.in_memory_rows, args.rows)
    streamed = run(path, "streamed", args.rows, args.budget, args.threads)
    memory = run(path, "in_memory", in_memory, args.budget, args.threads)
    ratio = memory["rows_per_second"] / streamed["rows_per_second"]
    print("\n| fit | rows | peak RSS (MB) | fit time (s) | training rows/s | best val loss |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in (streamed, memory):
        print(
            f"| {r['mode']} | {r['rows']:,} | {r['peak_rss_mb']:.0f} | {r['fit_seconds']:.1f} | "
            f"{r['rows_per_second']:,.0f} | {r['best_val_loss']:.3f} |"
        )
    print(
        f"\nthroughput in memory / streamed: {ratio:.2f} (target <= 1.2); streamed peak RSS "
        f"{streamed['peak_rss_mb']:.0f} MB (target < 2048)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
