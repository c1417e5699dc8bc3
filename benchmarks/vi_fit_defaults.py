"""``FlowGuide.fit()`` settings on the development posteriors: the step budget, particles and
learning-rate schedule of the default fit.

Protocol: for each posterior of the development split (``pyroflows.datasets.posteriors``;
never the reserved confirmation split) and each setting below, ``FlowGuide(model,
init_loc_fn=vi_guides.init_loc).fit(seed=0)`` with that setting and the guide's other defaults
(Adam at 1e-2, gradients clipped at 10, the whitened Laplace start chosen by ELBO), then the
metrics of ``benchmarks/vi_posteriors.py`` from 1 000 guide draws: C2ST against the reference
draws (0.5 ideal), the largest mean and sd errors in reference sds, ELBO, PSIS k-hat, and the
fit's seconds. One process per call, one thread.

Settings:

* ``constant_1x3000``: 3 000 steps, 1 particle, a constant rate;
* ``warmup_cosine_1x3000``: the same steps with a linear warm-up over 5 % of the steps and a
  cosine decay to 0;
* ``warmup_cosine_4x1000``: 1 000 steps of 4 vectorised particles, the same schedule.

Command (rows are appended to ``--out`` as JSON lines; ``--report`` writes the table)::

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/vi_fit_defaults.py \\
        --only surgical-centered funnel10 --out benchmarks/results/vi_fit_defaults.jsonl
    python benchmarks/vi_fit_defaults.py --report benchmarks/results/vi_fit_defaults.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

SETTINGS = {
    "constant_1x3000": {"steps": 3000, "num_particles": 1, "schedule": "constant"},
    "warmup_cosine_1x3000": {"steps": 3000, "num_particles": 1, "schedule": "warmup_cosine"},
    "warmup_cosine_4x1000": {"steps": 1000, "num_particles": 4, "schedule": "warmup_cosine"},
}


def run(names: list[str], settings: list[str], out: Path) -> None:
    from vi_guides import init_loc
    from vi_metrics import evaluate

    import pyroflows as pf
    from pyroflows.datasets import posteriors

    development = [n for n in names if n not in posteriors.RESERVED]
    if development != names:
        raise SystemExit(f"reserved confirmation posteriors are not for tuning: {names}")
    for name in names:
        post = posteriors.load(name)
        for setting in settings:
            guide = pf.FlowGuide(post.model, init_loc_fn=init_loc)
            start = time.perf_counter()
            guide.fit(model_kwargs=post.kwargs, seed=0, progress=False, **SETTINGS[setting])
            row = {"posterior": name, "setting": setting, "seconds": time.perf_counter() - start,
                   **evaluate(post, guide, 1000)}  # fmt: skip
            print(json.dumps(row), flush=True)
            with out.open("a") as f:
                f.write(json.dumps(row) + "\n")


def report(path: Path) -> str:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    lines = ["| posterior | setting | C2ST | mean err | sd err | k-hat | s |",
             "|---|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in sorted(rows, key=lambda r: (r["posterior"], r["setting"])):
        lines.append(f"| {r['posterior']} | {r['setting']} | {r['c2st']:.3f} | "
                     f"{r['mean_err']:.2f} | {r['sd_err']:.2f} | {r['k_hat']:.2f} | "
                     f"{r['seconds']:.1f} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", default=[])
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    parser.add_argument("--out", type=Path, default=Path("vi_fit_defaults.jsonl"))
    parser.add_argument("--report", type=Path, help="print the table of a JSON-lines file")
    args = parser.parse_args(argv)
    if args.report is not None:
        print(report(args.report))
        return
    run(args.only, args.settings, args.out)


if __name__ == "__main__":
    main()
