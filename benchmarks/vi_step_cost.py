"""What a wider or a spline ``FlowGuide`` costs per SVI step, against ``AutoIAFNormal``.

One SVI step (``Trace_ELBO``, one particle, Pyro's Adam) on a ``D``-dimensional standard
normal latent, median over rounds that alternate the guides (so a change of machine load hits
them alike): ``FlowGuide`` with its default conditioners (two hidden layers of
``max(32, 2 D)``), with hidden ``(64, 64)``, and with spline layers (``flow="nsf"``, default
width); ``AutoIAFNormal`` at the default width and at ``(64, 64)``, all with 3 layers. The
step-time target of issue 25 compares guides at equal layer sizes (ratio <= 1).

Run from the repository root (a few minutes)::

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/vi_step_cost.py
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoIAFNormal
from pyro.optim import Adam

from pyroflows.vi import FlowGuide

RESULTS = Path(__file__).parent / "results"
LAYERS = 3


def guides(d: int) -> dict:
    """name -> constructor(model) at dimension ``d``."""
    default = (max(32, 2 * d),) * 2
    return {
        "FlowGuide iaf (default width)": lambda m: FlowGuide(m, "iaf", LAYERS, default),
        "FlowGuide iaf (64, 64)": lambda m: FlowGuide(m, "iaf", LAYERS, (64, 64)),
        "FlowGuide nsf (default width)": lambda m: FlowGuide(m, "nsf", LAYERS, default),
        "AutoIAFNormal (default width)": lambda m: AutoIAFNormal(
            m, num_transforms=LAYERS, hidden_dim=list(default)
        ),
        "AutoIAFNormal (64, 64)": lambda m: AutoIAFNormal(
            m, num_transforms=LAYERS, hidden_dim=[64, 64]
        ),
    }


def step_ms(d: int, rounds: int, steps: int) -> dict[str, float]:
    """Median milliseconds per step of each guide over ``rounds`` x ``steps`` timed steps."""

    def model():
        pyro.sample("z", dist.Normal(torch.zeros(d), 1.0).to_event(1))

    times: dict[str, list[float]] = {name: [] for name in guides(d)}
    for _ in range(rounds):
        for name, make in guides(d).items():
            pyro.clear_param_store()  # a fresh guide each round: names do not clash
            svi = SVI(model, make(model), Adam({"lr": 1e-4}), Trace_ELBO())
            for _ in range(5):  # set-up and warm-up
                svi.step()
            for _ in range(steps):
                start = time.perf_counter()
                svi.step()
                times[name].append(time.perf_counter() - start)
    return {name: 1000 * float(np.median(t)) for name, t in times.items()}


def markdown(res: dict) -> str:
    names = list(res["rows"][0]["ms"])
    head = "| D | " + " | ".join(names) + " | wider / default | nsf / default | "
    head += "wider / AutoIAF (64, 64) | default / AutoIAF (default) |"
    out = [
        f"# FlowGuide step cost ({res['date']}, torch {res['torch']}, pyro {res['pyro']}, "
        f"1 thread, load {res['load'][0]:.1f})",
        "",
        f"Protocol: {res['protocol']}",
        "",
        "Milliseconds per SVI step (median) and ratios.",
        "",
        head,
        "|" + "---|" * (len(names) + 5),
    ]
    for r in res["rows"]:
        ms = r["ms"]
        ratios = (
            ms["FlowGuide iaf (64, 64)"] / ms["FlowGuide iaf (default width)"],
            ms["FlowGuide nsf (default width)"] / ms["FlowGuide iaf (default width)"],
            ms["FlowGuide iaf (64, 64)"] / ms["AutoIAFNormal (64, 64)"],
            ms["FlowGuide iaf (default width)"] / ms["AutoIAFNormal (default width)"],
        )
        cells = [f"{ms[n]:.2f}" for n in names] + [f"{x:.2f}" for x in ratios]
        out.append(f"| {r['D']} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dims", nargs="+", type=int, default=[6, 10, 26])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=40, help="timed steps per round")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    pyro.set_rng_seed(0)
    res = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        "load": list(os.getloadavg()),
        "protocol": f"Trace_ELBO, 1 particle, Adam 1e-4, {LAYERS} layers, D-dim N(0, I) latent; "
        f"{args.rounds} rounds x {args.steps} timed steps per guide, guides alternating "
        "within each round (a fresh guide each round, 5 untimed steps first); median.",
        "rows": [],
    }
    for d in args.dims:
        ms = step_ms(d, args.rounds, args.steps)
        print(f"D={d}: " + ", ".join(f"{k} {v:.2f} ms" for k, v in ms.items()), flush=True)
        res["rows"].append({"D": d, "ms": ms})
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "vi_step_cost.json").write_text(json.dumps(res, indent=1))
    (args.out / "vi_step_cost.md").write_text(markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()
