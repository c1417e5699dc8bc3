"""The multi-start start of ``FlowGuide`` against the default start, on development posteriors.

For each posterior, two guides are set up from the same seed, ``FlowGuide(model)`` (the
default ``affine_init="auto"``) and ``FlowGuide(model, affine_init="multistart")``, and the
script prints the start each chose, the modes' Laplace weights, the set-up seconds of each
(MAP searches, Hessians, ELBO estimates; in the same process, one after the other, after a
warm-up set-up whose one-off costs are not counted) and whether
the two guides start bit-identically: same parameters and buffers, and the same global random
state afterwards, so that the whole fit is then identical. Where they are identical, the
multi-start cannot move a C2ST; where they differ, run ``vi_guide_candidates.py`` with the
candidates ``iaf`` and ``iaf, multistart`` (development) or ``vi_posteriors.py --confirm``
with the guide ``FlowGuide (multistart)``. ``--confirm`` runs the reserved confirmation split
(once, after the choice is made).

Run from the repository root::

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/vi_multistart.py [--only NAMES] [--seed S] \\
        [--fit-steps 1000] [--cost-steps 300]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import pyro
import torch

import pyroflows as pf
from pyroflows.datasets import posteriors

RESULTS = Path(__file__).parent / "results"


def set_up(post, mode: str, seed: int) -> tuple[pf.FlowGuide, float, torch.Tensor]:
    """A guide set up from ``seed``; its set-up seconds and the global random state after."""
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    guide = pf.FlowGuide(post.model, affine_init=mode)
    start = time.perf_counter()
    guide(**post.kwargs)
    return guide, time.perf_counter() - start, torch.get_rng_state()


def same_start(a: pf.FlowGuide, b: pf.FlowGuide) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def fit_seconds(post, seed: int, steps: int) -> float:
    """Seconds of ``FlowGuide(model).fit(steps=steps)`` (set-up included), the default guide."""
    pyro.clear_param_store()
    guide = pf.FlowGuide(post.model)
    start = time.perf_counter()
    guide.fit(steps=steps, seed=seed, model_kwargs=post.kwargs, check_convergence=False)
    return time.perf_counter() - start


def step_seconds(post, guides: dict[str, pf.FlowGuide], steps: int, repeats: int = 2) -> dict:
    """Seconds of ``steps`` protocol-(a) steps (``vi_posteriors.svi_shared``: 4 particles,
    Adam 1e-2) of each set-up guide, alternated ``repeats`` times in one process; the
    fastest repeat of each."""
    from vi_posteriors import svi_shared

    best: dict[str, float] = {}
    for _ in range(repeats):
        for name, guide in guides.items():
            pyro.clear_param_store()
            start = time.perf_counter()
            svi_shared(post, guide, steps, 4, 1e-2, 1e-4)
            best[name] = min(best.get(name, math.inf), time.perf_counter() - start)
    return best


def compare(name: str, seed: int, fit_steps: int = 0, cost_steps: int = 0) -> dict:
    post = posteriors.load(name)
    set_up(post, "auto", seed)  # warm-up: the first set-up in a process pays one-off costs
    auto, t_auto, rng_auto = set_up(post, "auto", seed)
    multi, t_multi, rng_multi = set_up(post, "multistart", seed)
    identical = same_start(auto, multi) and torch.equal(rng_auto, rng_multi)  # before training
    fit = fit_seconds(post, seed, fit_steps) if fit_steps else None
    steps = (
        step_seconds(post, {"auto": auto, "multistart": multi}, cost_steps) if cost_steps else {}
    )
    return {
        "cost_steps": cost_steps, "step_seconds": steps,
        "fit_steps": fit_steps, "fit_seconds": fit,
        "posterior": name, "seed": seed, "start_auto": auto.start_["start"],
        "start_multi": multi.start_["start"], "modes": multi.start_.get("modes", []),
        "elbo": multi.start_.get("elbo", {}), "seconds_auto": t_auto, "seconds_multi": t_multi,
        "identical": identical,
    }  # fmt: skip


def _cost(r: dict) -> str:
    """Seconds of ``cost_steps`` training steps of each guide and their ratio."""
    s = r.get("step_seconds") or {}
    if not s:
        return "-"
    auto, multi = s["auto"], s["multistart"]
    return f"{r['cost_steps']} steps: {auto:.2f} / {multi:.2f} s ({multi / auto:.2f}x)"


def _fit(r: dict) -> str:
    """Fit seconds of the default guide and the multi-start's extra set-up as a share of it."""
    if not r.get("fit_seconds"):
        return "- | -"
    extra = (r["seconds_multi"] - r["seconds_auto"]) / r["fit_seconds"]
    return f"{r['fit_seconds']:.1f} ({r['fit_steps']} steps) | {extra:.0%}"


def markdown(rows: list[dict], load: list[float]) -> str:
    out = [
        "# Multi-start start against the default start (set-up only)",
        "",
        '`FlowGuide(model)` (`auto`) and `FlowGuide(model, affine_init="multistart")` set up '
        "from the same seed in one process after one warm-up set-up; set-up seconds of each "
        "(MAP searches, Hessians, ELBO estimates of 256 draws); `identical`: same parameters, "
        "buffers and global random state after the set-up, so the fit that follows is "
        "identical. `s fit (auto)`: `FlowGuide(model).fit(steps=N)` in the same process "
        "(`--fit-steps N`), and the multi-start's extra set-up seconds as a share of it. "
        "`steps`: seconds of N protocol-(a) training steps of each set-up guide "
        "(`--cost-steps N`; fastest of two alternated repeats, one process). "
        "Modes: normalised Laplace weights of the modes kept. Command: `OMP_NUM_THREADS=1 "
        "PYTHONPATH=. python benchmarks/vi_multistart.py [--fit-steps 1000] [--cost-steps 300] "
        "[--only NAMES]`. "
        f"Load average at the end: {load[0]:.1f}.",
        "",
        "| posterior | seed | start (auto) | start (multistart) | modes | s auto | s multistart "
        "| identical | s fit (auto) | extra / fit | steps auto / multistart |",
        "|---|---:|---|---|---|---:|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        if "error" in r:
            out.append(f"| {r['posterior']} | {r['seed']} | failed: {r['error']} |" + " |" * 8)
            continue
        modes = ", ".join(f"{w:.3f}" for w in r["modes"])
        out.append(
            f"| {r['posterior']} | {r['seed']} | {r['start_auto']} | {r['start_multi']} | "
            f"{modes} | {r['seconds_auto']:.1f} | {r['seconds_multi']:.1f} | "
            f"{'yes' if r['identical'] else 'no'} | {_fit(r)} | {_cost(r)} |"
        )
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="+", default=None, help="posterior names")
    parser.add_argument("--confirm", action="store_true", help="the reserved confirmation set")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--fit-steps", type=int, default=0, help="also time FlowGuide(model).fit(steps=N)"
    )
    parser.add_argument(
        "--cost-steps", type=int, default=0, help="also time N training steps of both guides"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "vi_multistart.json")
    args = parser.parse_args(argv)
    split = "confirmation" if args.confirm else "development"
    names = posteriors.names(split)
    if args.only:
        unknown = sorted(set(args.only) - set(names))
        if unknown:
            raise SystemExit(f"not in the {split} split: {unknown}")
        names = args.only
    torch.set_num_threads(1)
    rows = []
    for name in names:
        try:
            row = compare(name, args.seed, args.fit_steps, args.cost_steps)
        except Exception as error:  # a model the start cannot handle is a result
            row = {"posterior": name, "seed": args.seed, "error": repr(error)[:200]}
            print(row, flush=True)
            rows.append(row)
            continue
        print({k: v for k, v in row.items() if k != "elbo"}, flush=True)
        rows.append(row)
    old = json.loads(args.out.read_text())["rows"] if args.out.exists() else []
    load = list(os.getloadavg())
    res = {"date": time.strftime("%Y-%m-%d %H:%M"), "load": load, "rows": old + rows}
    args.out.write_text(json.dumps(res, indent=1))
    args.out.with_suffix(".md").write_text(markdown(res["rows"], load))


if __name__ == "__main__":
    main()
