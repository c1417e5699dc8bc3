"""The race's pilot rule on real tables: rank the members at a halving by their best validation
loss so far (``"best"``; :data:`pyroflows.racing.PILOT_RULE`'s default, ``"bound"``, is
measured by ``benchmarks/density_tables.py``) or by that loss
extrapolated over the next rung (``"slope"``, :func:`pyroflows.racing.projected_loss`), and
what the default's test log-likelihood becomes with each; a fit without racing (every member
trained to its end) says which member a late winner would have been.

Tables, encoding, split and scoring are those of ``benchmarks/density_tables.py`` (the same
dequantised rows, ``log P(discrete cells) + log p(continuous)`` per test row). Each table:
the default at its settings (``time_budget=--budget`` s, seed ``--seed``) fitted three times
in one process, with the ``best`` rule, the ``slope`` rule and no racing; the paired
difference slope minus best per test row with its paired standard error. A rule that changes
nothing picks the same member; with a time budget two fits of the same member differ a little
with the machine's load.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/racing_pilot.py --tables dev --budget 10 --out NAME
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

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
    fit_default,
    prepare,
    warm_up,
)
from quality import Settings  # noqa: E402

from pyroflows import datasets, diagnostics, racing  # noqa: E402

VARIANTS = ("best", "slope", "no racing")


def run_table(name: str, settings: Settings) -> dict[str, Any]:
    """The default with each pilot rule and without racing on one table."""
    x = prepare(TABLES[name]())
    spec = discrete_spec(x)
    raw = tuple(x[i] for i in datasets.split(x, seed=settings.seed))
    rows = encode(*raw, spec, settings.seed, SCORE_DRAWS)
    fits = {}
    default_rule = racing.PILOT_RULE
    for variant in VARIANTS:
        racing.PILOT_RULE = "best" if variant == "no racing" else variant
        try:
            fits[variant] = fit_default(raw, spec, rows, settings, race=variant != "no racing")
        finally:
            racing.PILOT_RULE = default_rule
    stats = {v: diagnostics.test_log_likelihood(f.log_prob) for v, f in fits.items()}
    paired = diagnostics.test_log_likelihood(fits["slope"].log_prob - fits["best"].log_prob)
    row = {
        "table": name,
        "member": {v: f.info["member"] for v, f in fits.items()},
        "candidates": {v: f.info["candidates"] for v, f in fits.items()},
        "test_ll": {v: [s.value, s.stderr] for v, s in stats.items()},
        "slope_minus_best": [paired.value, paired.stderr],
        "seconds": {v: f.seconds for v, f in fits.items()},
    }
    quality.log(f"{name}: {json.dumps(quality.jsonable(row))[:400]}")
    return row


def markdown(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    out = [
        f"Protocol: `{' '.join(sys.argv)}`; budget {args.budget} s, seed {args.seed}, torch "
        f"threads {torch.get_num_threads()}, load average at start {quality.LOAD_AT_START:.2f}. "
        "Test log-likelihood per row (log P(discrete cells) + log p(continuous)) ± se; member "
        "kept in brackets.",
        "",
        "| table | best rule | slope rule | no racing | slope − best (paired) | / se |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = [
            f"{r['test_ll'][v][0]:.3f} ± {r['test_ll'][v][1]:.3f} ({r['member'][v]})"
            for v in VARIANTS
        ]
        value, se = r["slope_minus_best"]
        ratio = f"{value / se:+.1f}" if se > 0 else "—"  # se 0: the two fits are identical
        out.append(f"| {r['table']} | " + " | ".join(cells)
                   + f" | {value:+.3f} ± {se:.3f} | {ratio} |")  # fmt: skip
    total = sum(r["slope_minus_best"][0] for r in rows)
    changed = sum(r["member"]["slope"] != r["member"]["best"] for r in rows)
    out += ["", f"Sum over tables of slope − best: {total:+.3f} nats per row; the member "
            f"differs on {changed} of {len(rows)} tables."]  # fmt: skip
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
    stem = None if args.out is None else RESULTS / args.out
    if stem is not None:
        stem.with_suffix(".json").write_text(json.dumps(quality.jsonable(rows), indent=1))
    text = markdown(rows, args)
    print(text)
    if stem is not None:
        stem.with_suffix(".md").write_text(text)


if __name__ == "__main__":
    main()
