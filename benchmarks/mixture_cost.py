"""What the mixture start search of ``flow="auto"`` costs and what it buys, per table.

Tables, split, encoding of discrete columns and scoring are those of
``benchmarks/density_tables.py``. For each table, in one process:

* the search itself (:func:`pyroflows.density_mixture.mixture_base`) on the rows the
  estimator's ``nsf-gmm`` member sees, without a time budget (the start that depends on the
  rows and the seed only): its seconds, the count of components it stopped at and why, and
  after each count the seconds so far and the best validation loss per row so far (in the
  flow's space): what a search cut after that count would have kept;
* the two members of :data:`pyroflows.density_recipe.PORTFOLIO` fitted alone, each with the
  whole ``--budget`` (``flow="nsf"`` with the member's base, learning rate, schedule and
  patience): the ``nsf-gmm`` member (its search inside the budget) and the plain ``nsf``
  member; test log-likelihood per row of each and the paired difference gmm minus plain
  (what the search buys over the plain flow at that budget).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/mixture_cost.py --tables dev --budget 10 --out NAME
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
for path in (str(HERE.parent), str(HERE)):
    if path not in sys.path:
        sys.path.insert(0, path)

import quality  # noqa: E402
from density_tables import (  # noqa: E402
    CONFIRMATION,
    DEVELOPMENT,
    RESULTS,
    SCORE_DRAWS,
    TABLES,
    discrete_spec,
    encode,
    prepare,
    warm_up,
)
from quality import Settings  # noqa: E402

from pyroflows import datasets, density, density_mixture, diagnostics  # noqa: E402
from pyroflows.density import DensityEstimator  # noqa: E402
from pyroflows.density_recipe import PORTFOLIO  # noqa: E402


def search_alone(args: tuple, kwargs: dict) -> dict[str, Any]:
    """The search on the member's rows without a time budget, each count timed."""
    Z, Z_val, seed = args[:3]
    data_map = args[4] if len(args) > 4 else kwargs.get("data_map")
    per_count: dict[int, float] = {}
    real_fit = density_mixture._fit

    def timed_fit(X: np.ndarray, k: int, kind: str, s: Any) -> Any:
        began = time.perf_counter()
        try:
            return real_fit(X, k, kind, s)
        finally:
            per_count[k] = per_count.get(k, 0.0) + time.perf_counter() - began

    density_mixture._fit = timed_fit
    try:
        _, choice = density_mixture.mixture_base(Z, Z_val, seed, None, data_map)
    finally:
        density_mixture._fit = real_fit
    counts, elapsed, best = [], 0.0, -np.inf
    for k in sorted(per_count):
        elapsed += per_count[k]
        scores = [v for name, v in choice.scores.items() if f" x {k} (" in name]
        best = max([best, *scores])
        counts.append({"k": k, "seconds": elapsed, "best_val_loss": -best})
    return {"choice": choice.name, "stopped": choice.stopped, "seconds": choice.seconds,
            "counts": counts, "dim": int(Z.shape[1]), "rows": int(Z.shape[0])}  # fmt: skip


def run_table(name: str, settings: Settings) -> dict[str, Any]:
    x = prepare(TABLES[name]())
    spec = discrete_spec(x)
    raw = tuple(x[i] for i in datasets.split(x, seed=settings.seed))
    rows = encode(*raw, spec, settings.seed, SCORE_DRAWS)
    seen: dict[str, Any] = {}
    real_base = density.mixture_base

    def recording(*args: Any, **kwargs: Any) -> Any:
        seen["call"] = (args, kwargs)
        return real_base(*args, **kwargs)

    fits: dict[str, Any] = {}
    for member in PORTFOLIO:
        est = DensityEstimator(
            flow=member.flow, base=member.base, lr=member.lr, patience=member.patience,
            schedule=member.schedule or "constant", random_state=settings.seed,
            time_budget=settings.budget, discrete=spec, score_draws=rows.draws, progress=False,
        )  # fmt: skip
        density.mixture_base = recording
        began = time.perf_counter()
        try:
            est.fit(raw[0], X_val=raw[1])
        finally:
            density.mixture_base = real_base
        mixture = est.candidates_[0]["mixture"]
        fits[member.name] = {
            "log_p": est.score_samples(raw[2]), "seconds": time.perf_counter() - began,
            "search_seconds": None if mixture is None else mixture["seconds"],
            "mixture": None if mixture is None else f"{mixture['covariance_type']} x "
            f"{mixture['components']} ({mixture['space']}), {mixture['stopped']}",
            "best_epoch": est.history_.best_epoch,
        }  # fmt: skip
    search = search_alone(*seen["call"])
    stats = {m: diagnostics.test_log_likelihood(f["log_p"]) for m, f in fits.items()}
    gain = diagnostics.test_log_likelihood(fits["nsf-gmm"]["log_p"] - fits["nsf"]["log_p"])
    row = {
        "table": name, "load": os.getloadavg()[0], "search": search,
        "members": {m: {k: v for k, v in f.items() if k != "log_p"} for m, f in fits.items()},
        "test_ll": {m: [s.value, s.stderr] for m, s in stats.items()},
        "gmm_minus_plain": [gain.value, gain.stderr],
    }  # fmt: skip
    quality.log(f"{name}: {json.dumps(quality.jsonable(row))[:500]}")
    return row


def markdown(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    out = [
        f"Protocol: `{' '.join(sys.argv)}`; budget {args.budget} s per member fitted alone, "
        f"seed {args.seed}, torch threads {torch.get_num_threads()}, load average at start "
        f"{quality.LOAD_AT_START:.2f} (1-minute load after each table in the last column). "
        "Search: the mixture search without a time budget on the nsf-gmm member's rows; "
        "'seconds by count' is the time after each count of components (its best validation "
        "loss per row so far in brackets). Members: each fitted alone with the whole budget; "
        "test log-likelihood per row ± se.",
        "",
        "| table | n x d | search: choice, stop, seconds (share of budget) | seconds by count "
        "(best val loss) | nsf-gmm alone (search s in its fit) | nsf alone | gmm − plain "
        "(paired) / se | load |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        s, m = r["search"], r["members"]
        counts = "; ".join(f"{c['k']}: {c['seconds']:.2f} ({c['best_val_loss']:.2f})"
                           for c in s["counts"])  # fmt: skip
        ll = {k: f"{v[0]:.3f} ± {v[1]:.3f}" for k, v in r["test_ll"].items()}
        value, se = r["gmm_minus_plain"]
        out.append(
            f"| {r['table']} | {s['rows']} x {s['dim']} | {s['choice']}, {s['stopped']}, "
            f"{s['seconds']:.2f} s ({s['seconds'] / args.budget:.0%}) | {counts} | "
            f"{ll['nsf-gmm']} ({m['nsf-gmm']['search_seconds']:.2f} s) | {ll['nsf']} | "
            f"{value:+.3f} ± {se:.3f} ({value / se:+.1f}) | {r['load']:.1f} |"
        )
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tables", default="dev", help="dev, confirm, or comma-separated names")
    parser.add_argument("--budget", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="results stem (default: print only)")
    args = parser.parse_args(argv)
    names = {"dev": DEVELOPMENT, "confirm": CONFIRMATION}.get(args.tables)
    names = names or tuple(args.tables.split(","))
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    settings = Settings(datasets=names, budget=args.budget, seed=args.seed)
    warm_up(settings)
    rows = [run_table(name, settings) for name in names]
    text = markdown(rows, args)
    print(text)
    if args.out:
        stem = RESULTS / args.out
        stem.with_suffix(".md").write_text(text)
        stem.with_suffix(".json").write_text(json.dumps(quality.jsonable(rows), indent=1))


if __name__ == "__main__":
    main()
