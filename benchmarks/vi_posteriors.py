"""Variational guides on real posteriors (``pyroflows.datasets.posteriors``), two protocols.

**Protocol (a), one SVI loop for every guide** (the guide as a drop-in replacement for an
autoguide): ``Trace_ELBO`` with vectorised particles, Adam with a linear warm-up over the first
5 % of the steps to ``lr`` then a cosine decay to ``lr_min``, gradient norm clipped at 10; the
same steps, particles, seed and initialisation (:func:`vi_guides.init_loc`) for all.

**Protocol (b), each library's recommended way at equal wall-clock**: ``FlowGuide(model).fit()``
with its defaults sets the time budget ``T``; Pyro's autoguides run their usual recipe
(``SVI``, ``Adam(lr=0.01)``, one particle) until ``T``; NUTS runs for about ``T`` (a pilot of
10 iterations sizes warm-up = samples; its actual time is reported).

Metrics per (posterior, guide), from ``n`` guide draws against the reference draws, both mapped
to Pyro's unconstrained space and standardised by the reference's mean and sd: C2ST accuracy
(MLP, 3 folds; 0.5 ideal), the largest error of a coordinate's mean and of its sd in reference
posterior sds, the final ELBO (500 particles), PSIS k-hat (1000 particles), training seconds.

The development split runs by default; ``--confirm`` runs the reserved confirmation split
instead (run it once, after every choice is made). ``--quick`` is a smoke run that writes no
file. Run from the repository root::

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/vi_posteriors.py --steps 1000
    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/vi_posteriors.py --quick
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import pyro
import torch
from pyro.infer import Trace_ELBO
from vi_guides import GUIDES, init_loc
from vi_metrics import evaluate, failed_row
from vi_report import markdown, print_row

from pyroflows.datasets import posteriors

RESULTS = Path(__file__).parent / "results"


# -- protocol (a): the shared loop ---------------------------------------------------------------
def lr_factor(step: int, steps: int, lr: float, lr_min: float) -> float:
    """Linear warm-up over 5 % of the steps, then a cosine decay from ``lr`` to ``lr_min``
    (returned as a factor of ``lr``)."""
    warm = max(1, steps // 20)
    if step < warm:
        return (step + 1) / warm
    t = (step - warm) / max(1, steps - warm)
    return (lr_min + 0.5 * (lr - lr_min) * (1 + math.cos(math.pi * t))) / lr


def svi_shared(post, guide, steps: int, particles: int, lr: float, lr_min: float) -> list:
    """The protocol-(a) loop; returns the loss per step (NaN stops it)."""
    elbo = Trace_ELBO(num_particles=particles, vectorize_particles=True)
    loss = elbo.differentiable_loss(post.model, guide, **post.kwargs)  # sets the guide up
    params = list(
        {id(p): p for p in (v.unconstrained() for v in pyro.get_param_store().values())}.values()
    )
    optim = torch.optim.Adam(params, lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(optim, lambda s: lr_factor(s, steps, lr, lr_min))
    losses = []
    for _ in range(steps):
        optim.zero_grad()
        loss = elbo.differentiable_loss(post.model, guide, **post.kwargs)
        if not torch.isfinite(loss):
            losses.append(float("nan"))
            break
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 10.0)
        optim.step()
        sched.step()
        losses.append(loss.item())
    return losses


# -- metrics ---------------------------------------------------------------------------------------
def run_a(name: str, guides: list[str], cfg: dict) -> list[dict]:
    post = posteriors.load(name)
    rows = []
    for g in guides:
        pyro.clear_param_store()
        pyro.set_rng_seed(cfg["seed"])
        start = time.perf_counter()
        try:
            guide = GUIDES[g](post.model, init_loc)
            losses = svi_shared(post, guide, cfg["steps"], cfg["particles"], cfg["lr"],
                                cfg["lr_min"])  # fmt: skip
            seconds = time.perf_counter() - start
            row = evaluate(post, guide, cfg["draws"])
            if losses and math.isnan(losses[-1]):
                row["error"] = f"NaN loss at step {len(losses)}"
        except Exception as e:  # a guide that cannot fit this model is a result, not a crash
            seconds, row = time.perf_counter() - start, failed_row(e)
        row.update(posterior=name, guide=g, seconds=seconds, protocol="a")
        print_row(row)
        rows.append(row)
    return rows


def merge(paths: list[Path], out: Path) -> None:
    """One table from results of the same protocol and split run in several processes; a
    (posterior, guide, protocol) row of a later file replaces the one of an earlier file (a
    re-run), and the replaced rows are listed in the result's ``replaced``."""
    parts = [json.loads(p.read_text()) for p in paths]
    if len({(p["split"], json.dumps(p["config"], sort_keys=True)) for p in parts}) != 1:
        raise SystemExit("the results to merge differ in split or configuration")
    rows: dict[tuple, dict] = {}
    replaced = list(parts[0].get("replaced", []))
    for path, part in zip(paths, parts, strict=True):
        for r in part["rows"]:
            key = (r["posterior"], r["guide"], r.get("protocol", "a"))
            if key in rows:
                replaced.append({**rows[key], "replaced_by": path.name})
            rows[key] = r
    res = {**parts[0], "rows": list(rows.values()), "replaced": replaced}
    res["split_size"] = len(posteriors.names(res["split"]))
    res["load"] = max((p["load"] for p in parts), key=lambda x: x[0])
    stem = "vi_posteriors" + ("_confirmation" if res["split"] == "confirmation" else "")
    (out / f"{stem}.json").write_text(json.dumps(res, indent=1))
    (out / f"{stem}.md").write_text(markdown(res))
    print(markdown(res))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--confirm", action="store_true", help="the reserved confirmation set")
    parser.add_argument("--quick", action="store_true", help="smoke run, no files")
    parser.add_argument("--protocol", nargs="+", choices=("a", "b"), default=["a"])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--particles", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--lr-min", type=float, default=1e-4)
    parser.add_argument("--draws", type=int, default=1000, help="guide draws for the metrics")
    parser.add_argument("--only", nargs="+", default=None, help="posterior names")
    parser.add_argument(
        "--guides", nargs="+", default=None, choices=list(GUIDES),
        help="the guides to run (default: all for protocol (a); for protocol (b), which times "
        "every guide against FlowGuide.fit() and must include FlowGuide: FlowGuide, "
        "AutoNormal, AutoMultivariateNormal, AutoIAFNormal)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--merge", nargs="+", type=Path, default=None,
                        help="only combine these JSON results (split runs)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.merge:
        return merge(args.merge, args.out)
    from vi_wallclock import DEFAULT_GUIDES, check_guides, run_b

    guides_a = args.guides or list(GUIDES)
    guides_b = args.guides or list(DEFAULT_GUIDES)
    if "b" in args.protocol:
        try:
            check_guides(guides_b)
        except ValueError as error:
            parser.error(str(error))
    torch.set_num_threads(1)
    split = "confirmation" if args.confirm else "development"
    names = posteriors.names(split)
    if args.only:
        unknown = set(args.only) - set(names)
        if unknown:
            raise SystemExit(f"not in the {split} split: {sorted(unknown)}")
        names = args.only
    if args.quick:
        args.steps, args.draws, names = 20, 200, names[: 1 if args.only else 2]
    cfg = {k: getattr(args, k) for k in ("steps", "particles", "lr", "lr_min", "draws", "seed")}
    cfg["fit_steps"] = 20 if args.quick else None  # protocol (b): FlowGuide.fit()'s default
    res = {"date": time.strftime("%Y-%m-%d %H:%M"), "split": split, "config": cfg,
           "torch": torch.__version__, "pyro": pyro.__version__,
           "load": list(__import__("os").getloadavg()), "rows": [],
           "split_size": len(posteriors.names(split))}  # fmt: skip
    for name in names:
        if "a" in args.protocol:
            res["rows"] += run_a(name, guides_a, cfg)
        if "b" in args.protocol:
            res["rows"] += run_b(name, cfg, guides_b)
    if args.quick:
        return
    stem = "vi_posteriors" + ("_confirmation" if args.confirm else "")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(json.dumps(res, indent=1))
    (args.out / f"{stem}.md").write_text(markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()
