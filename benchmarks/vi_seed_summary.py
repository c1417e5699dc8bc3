"""Protocol (a) over several seeds: per posterior, the mean C2ST of FlowGuide and of the
autoguide that was best at seed 0, and whether FlowGuide meets issue 25's target (no worse
than that autoguide + 0.01).

Reads result files of ``benchmarks/vi_posteriors.py`` (protocol (a), one seed per file; the
seed is the file's ``config["seed"]``) and prints a markdown table; a (posterior, guide, seed)
found in two files is refused. Run from the repository root::

    python benchmarks/vi_seed_summary.py benchmarks/results/vi_posteriors_default.json \\
        benchmarks/results/vi_posteriors_default_seed1.json \\
        benchmarks/results/vi_posteriors_default_seed2.json
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

#: the Pyro autoguides the target is measured against
AUTOGUIDES = ("AutoNormal", "AutoMultivariateNormal", "AutoLowRankMVN", "AutoIAFNormal")
MARGIN = 0.01


def _c2st(row: dict) -> float:
    """A failed fit counts as C2ST 1, as in every summary of ``vi_posteriors.py``."""
    return 1.0 if math.isnan(row["c2st"]) else row["c2st"]


def collect(paths: list[Path]) -> dict[tuple[str, str], dict[int, float]]:
    """``{(posterior, guide): {seed: C2ST}}`` over the protocol-(a) rows of ``paths``."""
    out: dict[tuple[str, str], dict[int, float]] = {}
    for path in paths:
        res = json.loads(path.read_text())
        seed = int(res["config"]["seed"])
        for r in res["rows"]:
            if r.get("protocol", "a") != "a":
                continue
            cell = out.setdefault((r["posterior"], r["guide"]), {})
            if seed in cell:
                raise SystemExit(f"{r['posterior']} / {r['guide']} seed {seed} is in two files")
            cell[seed] = _c2st(r)
    return out


def table(acc: dict[tuple[str, str], dict[int, float]], seeds: list[int]) -> str:
    """One row per posterior with every seed of ``seeds`` for FlowGuide: the best autoguide
    at the first seed, both guides' C2ST per seed and their means over the seeds where both
    ran, FlowGuide's margin (autoguide mean + 0.01 - FlowGuide mean) and the verdict."""
    posts = [p for (p, g), v in acc.items() if g == "FlowGuide" and set(seeds) <= set(v)]
    lines = [
        f"| posterior | best autoguide at seed {seeds[0]} | FlowGuide per seed | "
        "autoguide per seed | FlowGuide mean | autoguide mean | margin | target |",
        "|---|---|---|---|---:|---:|---:|---|",
    ]
    met = 0
    for p in posts:
        first = {g: acc[(p, g)][seeds[0]] for g in AUTOGUIDES if seeds[0] in acc.get((p, g), {})}
        best = min(first, key=first.get)
        both = [s for s in seeds if s in acc[(p, best)]]
        fg = [acc[(p, "FlowGuide")][s] for s in both]
        au = [acc[(p, best)][s] for s in both]
        margin = np.mean(au) + MARGIN - np.mean(fg)
        met += margin >= 0
        lines.append(
            f"| {p} | {best} | {', '.join(f'{x:.3f}' for x in fg)} | "
            f"{', '.join(f'{x:.3f}' for x in au)} | {np.mean(fg):.3f} | {np.mean(au):.3f} | "
            f"{margin:+.3f} | {'met' if margin >= 0 else 'missed'}"
            f"{'' if len(both) == len(seeds) else f' (seeds {both})'} |"
        )
    lines.append(f"\nTarget met on {met} of {len(posts)} posteriors.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("results", nargs="+", type=Path, help="vi_posteriors.py JSON results")
    args = parser.parse_args(argv)
    acc = collect(args.results)
    seeds = sorted({s for v in acc.values() for s in v})
    print(table(acc, seeds))


if __name__ == "__main__":
    main()
