"""The default ``DensityEstimator`` against zuko NSF / MAF, KDE and a validated GMM on real
tables that ship inside installed packages (nothing is downloaded).

Tables (continuous columns only; rows with a missing value dropped; constant columns dropped):

* scikit-learn: ``iris`` (150 x 4, values rounded to 0.1), ``wine`` (178 x 13, integer
  columns), ``breast_cancer`` (569 x 30, radius / perimeter / area nearly collinear),
  ``diabetes`` (442 x 10, a two-valued column), ``digits16`` (the 16 pixels of ``load_digits``
  with the largest variance, 1797 x 16, integers 0-16);
* ``vega_datasets`` local files: ``cars`` (392 x 6, integer cylinders, rounded values),
  ``seattle_weather`` (1461 x 4, rounded to 0.1 with many zero-precipitation days);
* ``statsmodels.datasets``: ``macrodata`` (203 x 12, macro series that are nearly linear
  functions of each other), ``star98`` (303 x 20), ``anes96`` (944 x 10, ordinal answers),
  ``modechoice`` (840 x 6).

Columns on a grid (every value a multiple of the smallest gap between distinct values, and
fewer distinct values than half the rows: integer counts, rounded measurements) are
dequantised with uniform noise on ``[0, step)`` drawn once per table (seed 0) before the
split, the same for every method: the numbers are then densities of the dequantised table
(a lower bound of ``log P(grid cell) - log(step)`` per column). Discrete handling proper is a
separate piece of work.

Split 70/15/15 (``pyroflows.datasets.split``, seed ``--seed``). Every method fits the
training rows and may use the validation rows; the test log-likelihood per row is reported in
the data's units with its standard error, and the paired difference (default minus the best
peer, per test row) with its paired standard error. Peers (run in the same process, one
after the other, same wall-clock budget ``--budget`` per flow): zuko NSF and MAF as in
``benchmarks/quality.py`` (5 layers, 128 x 128, Adam 1e-3, patience 50, best state kept, data
standardised), KDE (bandwidth on the validation rows), GMM (1-10 components and the covariance
type chosen on the validation rows). Time to quality: the default's wall time (from the start
of ``fit``, pre-transform choice included) to first reach zuko NSF's best validation loss,
divided by zuko's time to that loss.

``--full`` also fits the default with racing switched off (every member trained to the end)
and reports the final validation loss of both: what racing costs in quality.

Tables are split into a development list (choices were tuned on it) and a confirmation list
(run once, after the choices were made): ``--tables dev`` / ``--tables confirm``.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/density_tables.py --tables dev --budget 20
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
for path in (str(HERE.parent), str(HERE)):
    if path not in sys.path:
        sys.path.insert(0, path)

import quality  # noqa: E402
from quality import Fit, Settings, attempt, fit_classical, fit_zuko  # noqa: E402

from pyroflows import datasets, diagnostics, racing  # noqa: E402
from pyroflows.baselines import GMMDensity  # noqa: E402
from pyroflows.density import DensityEstimator  # noqa: E402

DEVELOPMENT = ("iris", "wine", "breast_cancer", "macrodata", "cars", "seattle_weather")
CONFIRMATION = ("diabetes", "digits16", "star98", "anes96", "modechoice")
PEERS = ("zuko NSF", "zuko MAF", "KDE", "GMM")
RESULTS = HERE / "results"


# -- tables -------------------------------------------------------------------------------------
def _sklearn(name: str) -> np.ndarray:
    import sklearn.datasets as skd

    return getattr(skd, f"load_{name}")().data


def _digits16() -> np.ndarray:
    import sklearn.datasets as skd

    x = skd.load_digits().data
    return x[:, np.argsort(-x.var(0))[:16]]


def _vega(name: str) -> np.ndarray:
    from vega_datasets import local_data

    frame = getattr(local_data, name)()
    return frame.select_dtypes("number").to_numpy(dtype=float)


def _statsmodels(name: str, drop: tuple[str, ...] = ()) -> np.ndarray:
    import statsmodels.api as sm

    frame = getattr(sm.datasets, name).load_pandas().data
    return frame.select_dtypes("number").drop(columns=list(drop)).to_numpy(dtype=float)


TABLES: dict[str, Callable[[], np.ndarray]] = {
    "iris": lambda: _sklearn("iris"),
    "wine": lambda: _sklearn("wine"),
    "breast_cancer": lambda: _sklearn("breast_cancer"),
    "diabetes": lambda: _sklearn("diabetes"),
    "digits16": _digits16,
    "cars": lambda: _vega("cars"),
    "seattle_weather": lambda: _vega("seattle_weather"),
    "macrodata": lambda: _statsmodels("macrodata", ("year", "quarter")),
    "star98": lambda: _statsmodels("star98"),
    "anes96": lambda: _statsmodels("anes96", ("vote",)),
    "modechoice": lambda: _statsmodels("modechoice", ("individual", "mode", "choice")),
}


def grid_step(column: np.ndarray) -> float | None:
    """The step of a column whose values sit on a grid (integers, rounded values), or None."""
    values = np.unique(column)
    if len(values) < 2 or len(values) >= len(column) / 2:
        return None
    step = float(np.diff(values).min())
    ratio = (values - values[0]) / step
    return step if np.allclose(ratio, np.round(ratio), atol=1e-6) else None


def prepare(x: np.ndarray, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """Complete rows, non-constant columns, grid columns dequantised; with notes."""
    x = x[~np.isnan(x).any(1)]
    x = x[:, x.std(0) > 0]
    rng = np.random.default_rng(seed)
    notes = []
    x = x.copy()
    for j in range(x.shape[1]):
        step = grid_step(x[:, j])
        if step is not None:
            x[:, j] += rng.uniform(0.0, step, len(x))
            notes.append(f"col {j} step {step:g}")
    return x, notes


# -- methods ------------------------------------------------------------------------------------
def fit_gmm(train: np.ndarray, val: np.ndarray, test: np.ndarray, settings: Settings) -> Fit:
    """The GMM with the best validation likelihood over the covariance types."""
    best = None
    start = time.perf_counter()
    for kind in ("full", "diag", "tied", "spherical"):
        model = GMMDensity(covariance_type=kind, random_state=settings.seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(train, X_val=val)
        score = float(np.mean(model.score_samples(val)))
        if best is None or score > best[0]:
            best = (score, kind, model)
    info = {"covariance_type": best[1], "n_components": best[2].n_components_}
    return Fit(best[2].score_samples(test), time.perf_counter() - start, info)


def fit_default(
    train: np.ndarray, val: np.ndarray, test: np.ndarray, settings: Settings, race: bool = True
) -> Fit:
    """``DensityEstimator`` at its defaults; the validation curve on the clock of ``fit``."""
    racing.RACING = race
    est = DensityEstimator(random_state=settings.seed, time_budget=settings.budget)
    start = time.perf_counter()
    try:
        est.fit(train, X_val=val)
    finally:
        racing.RACING = True
    seconds = time.perf_counter() - start
    choice = getattr(est.preprocessor_, "choice_", {}) or {}
    lead = float(choice.get("seconds", 0.0))
    curve = {"time": [], "val_loss": []}
    for c in est.candidates_:
        curve["time"] += [lead + t for t in c["history"].time]
        curve["val_loss"] += list(c["history"].val_loss)
    info = {
        "member": est.member_,
        "pretransform": choice.get("chosen"),
        "pretransform_scores": choice.get("scores"),
        "best_val_loss": float(-np.mean(est.score_samples(val))),
        "curve": curve,
        "candidates": {c["name"]: float(c["best_loss"]) for c in est.candidates_},
    }
    return Fit(est.score_samples(test), seconds, info)


METHODS: dict[str, Callable[..., Fit]] = {
    "pyroflows default": fit_default,
    "zuko NSF": lambda *a: fit_zuko("nsf", *a),
    "zuko MAF": lambda *a: fit_zuko("maf", *a),
    "KDE": lambda *a: fit_classical("kde", *a),
    "GMM": fit_gmm,
}


def time_to(curve: dict[str, list[float]], target: float) -> float | None:
    """The earliest wall time at which the validation loss is at most ``target``."""
    hits = [t for t, v in zip(curve["time"], curve["val_loss"], strict=True) if v <= target]
    return min(hits) if hits else None


def run_table(name: str, settings: Settings, full: bool) -> dict[str, Any]:
    """Every method on one table: test log-likelihoods, paired margins, time to quality."""
    x, notes = prepare(TABLES[name]())
    train, val, test = (x[i] for i in datasets.split(x, seed=settings.seed))
    methods = dict(METHODS)
    if full:
        methods["default, no racing"] = lambda *a: fit_default(*a, race=False)
    fits = {m: attempt(f, train, val, test, settings) for m, f in methods.items()}
    stats = {
        m: diagnostics.test_log_likelihood(f.log_prob) if np.isfinite(f.log_prob).all() else None
        for m, f in fits.items()
    }
    peers = [p for p in PEERS if stats[p] is not None]
    best_peer = max(peers, key=lambda p: stats[p].value)
    ours = fits["pyroflows default"].log_prob
    paired = diagnostics.test_log_likelihood(ours - fits[best_peer].log_prob)
    zuko = fits["zuko NSF"].info
    zuko_time = zuko["curve"]["time"][zuko["best_epoch"]]
    reached = time_to(fits["pyroflows default"].info["curve"], zuko["best_val_loss"])
    row = {
        "table": name, "shape": [len(train), len(val), len(test), x.shape[1]], "notes": notes,
        "test_ll": {m: None if s is None else [s.value, s.stderr] for m, s in stats.items()},
        "seconds": {m: f.seconds for m, f in fits.items()},
        "best_peer": best_peer, "margin": [paired.value, paired.stderr],
        "zuko_seconds_to_best": zuko_time, "default_seconds_to_zuko_best": reached,
        "time_ratio": None if reached is None else reached / zuko_time,
        "default": quality.summary(fits["pyroflows default"].info),
        "errors": {m: f.info["error"] for m, f in fits.items() if "error" in f.info},
    }  # fmt: skip
    if full:
        row["full_val_loss"] = fits["default, no racing"].info.get("best_val_loss")
        row["full_member"] = fits["default, no racing"].info.get("member")
    quality.log(f"{name}: {json.dumps(quality.jsonable(row))[:600]}")
    return row


# -- report -------------------------------------------------------------------------------------
def markdown(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    """One table of log-likelihoods and margins, one of time to quality."""
    methods = ["pyroflows default", *PEERS]
    out = [
        f"Protocol: `{' '.join(sys.argv)}`; budget {args.budget} s per flow, seed {args.seed}, "
        f"torch threads {torch.get_num_threads()}, load average at start "
        f"{quality.LOAD_AT_START:.2f}.",
        "",
        "| table | rows (train/val/test) x cols | " + " | ".join(methods)
        + " | margin vs best peer (paired) | margin / se |",
        "|---" * (len(methods) + 4) + "|",
    ]  # fmt: skip
    for r in rows:
        cells = [
            "—"
            if r["test_ll"][m] is None
            else f"{r['test_ll'][m][0]:.3f} ± {r['test_ll'][m][1]:.3f}"
            for m in methods
        ]
        value, se = r["margin"]
        shape = r["shape"]
        out.append(
            f"| {r['table']} | {shape[0]}/{shape[1]}/{shape[2]} x {shape[3]} | "
            + " | ".join(cells)
            + f" | {value:+.3f} ± {se:.3f} ({r['best_peer']}) | {value / se:+.1f} |"
        )
    out += [
        "",
        "| table | pre-transform | member | zuko NSF s to best | default s to it | ratio |"
        + (" val loss raced / full (member) |" if args.full else ""),
        "|---|---|---|---|---|---|" + ("---|" if args.full else ""),
    ]
    for r in rows:
        ratio = "not reached" if r["time_ratio"] is None else f"{r['time_ratio']:.2f}"
        reached = r["default_seconds_to_zuko_best"]
        line = (
            f"| {r['table']} | {r['default'].get('pretransform')} | {r['default'].get('member')} "
            f"| {r['zuko_seconds_to_best']:.1f} | "
            f"{'—' if reached is None else f'{reached:.1f}'} | {ratio} |"
        )
        if args.full:
            line += (
                f" {r['default']['best_val_loss']:.3f} / {r['full_val_loss']:.3f} "
                f"({r['full_member']}) |"
            )
        out.append(line)
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tables", default="dev", help="dev, confirm, or comma-separated names")
    parser.add_argument("--budget", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--full", action="store_true", help="also fit without racing")
    parser.add_argument("--out", default=None, help="results stem (default: print only)")
    parser.add_argument(
        "--combine", action="store_true", help="only join the dev and confirm results files"
    )
    args = parser.parse_args(argv)
    if args.combine:
        combine()
        return
    names = {"dev": DEVELOPMENT, "confirm": CONFIRMATION}.get(args.tables)
    names = names or tuple(args.tables.split(","))
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    settings = Settings(datasets=names, budget=args.budget, seed=args.seed)
    rows = [run_table(name, settings, args.full) for name in names]
    text = markdown(rows, args)
    print(text)
    if args.out:
        stem = RESULTS / args.out
        stem.with_suffix(".md").write_text(text)
        stem.with_suffix(".json").write_text(json.dumps(quality.jsonable(rows), indent=1))


def combine() -> None:
    """``density_tables.{md,json}`` from ``density_tables_dev`` and ``density_tables_confirm``."""
    parts, data = [], {}
    for part, title in (("dev", "Development tables"), ("confirm", "Confirmation tables")):
        stem = RESULTS / f"density_tables_{part}"
        if stem.with_suffix(".md").exists():
            parts.append(f"## {title}\n\n" + stem.with_suffix(".md").read_text())
            data[part] = json.loads(stem.with_suffix(".json").read_text())
    head = "# Real tables: the default against zuko NSF / MAF, KDE, GMM\n\n"
    (RESULTS / "density_tables.md").write_text(head + "\n".join(parts))
    (RESULTS / "density_tables.json").write_text(json.dumps(data, indent=1))


if __name__ == "__main__":
    main()
