"""Candidate defaults of ``FlowGuide`` on a few development posteriors, protocol (a).

Why is a zuko NSF guide ahead of ``FlowGuide`` on banana6 and bimodal4? Every candidate keeps
the whitened Laplace start (``affine_init="auto"``) and changes the layers in front of it:
spline layers (``flow="nsf"``, autoregressive or coupling, which start at the identity), affine
IAF layers mixed with one spline layer on either side, wider conditioners, a wider spline
bound, and the plain start ``N(init_loc, I)``. The loop, the metrics and the seed are those of
protocol (a) in ``benchmarks/vi_posteriors.py``; only the development split may be used here
(the confirmation split is run once, by ``vi_posteriors.py --confirm``).

Run from the repository root (about 1 min per row at load 10 on 2 cores)::

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/vi_guide_candidates.py \\
        --only banana6 bimodal4 --candidates "nsf" "iaf 2 + nsf 1"
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import pyro
import torch
from vi_posteriors import run_a
from vi_report import _f

import pyroflows as pf
from pyroflows.datasets import posteriors
from pyroflows.flows import Flow
from pyroflows.transforms import RQS, MaskedAutoregressive
from pyroflows.vi.guide import guide_flow

RESULTS = Path(__file__).parent / "results"
HEADER = (
    "# FlowGuide candidates on development posteriors, protocol (a)\n\n"
    "Protocol (a) of `benchmarks/vi_posteriors.py`: Trace_ELBO, 1000 steps, 4 vectorised "
    "particles, Adam 1e-2 with a 5 % warm-up and a cosine decay to 1e-4, gradient norm clipped "
    "at 10; seed as listed; C2ST of 1000 draws against the reference (MLP, 3 folds; 0.5 ideal). "
    'Every FlowGuide candidate keeps the whitened Laplace start (`affine_init="auto"`) unless '
    'it says "plain start" or "multistart" (`affine_init="multistart"`). Default width: two '
    'hidden layers of max(32, 2 dim) (32 here). "flipped spline": every spline layer applies '
    "the other direction (`FlippedRQS`: a draw maps base -> latent with the inverse "
    "rational-quadratic spline; `nsf` and zuko's inverted NSF guide apply the forward one). "
    "Measured 2026-12-07 on 2 shared cores at load 1-22 (seconds not comparable). Command: "
    "`OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/vi_guide_candidates.py --only POSTERIORS "
    "--candidates NAMES [--seed S]`. Reference (same protocol, `vi_posteriors_default.md`): "
    "zuko NSF seed 0, banana6 0.590, bimodal4 0.522; FlowGuide (iaf) seed 0: funnel10 0.577, "
    "student_t5 0.523, surgical-centered 0.550."
)


def _hidden(dim: int) -> tuple[int, int]:
    return (max(32, 2 * dim),) * 2  # FlowGuide's default width


def mixed(affine: int, spline: int, spline_first: bool, bound: float = 5.0):
    """``dim -> Flow``: ``affine`` IAF layers and ``spline`` autoregressive spline layers at
    the default width, the splines nearer the base (``spline_first``) or nearer the affine
    layer that holds the start."""

    def make(dim: int) -> Flow:
        a = list(guide_flow("iaf", dim, layers=affine, hidden=_hidden(dim)).transforms)
        s = guide_flow("nsf", dim, layers=spline, hidden=_hidden(dim), bound=bound)
        layers = list(s.transforms) + a if spline_first else a + list(s.transforms)
        return Flow(layers, s.base)

    return make


@dataclass(frozen=True)
class FlippedRQS(RQS):
    """pyroflows' spline applied in the other direction: where a layer asks for the forward
    rational-quadratic spline it gets the inverse one, and the reverse. In a guide's
    autoregressive spline layer (IAF direction) a draw then maps base -> latent with the
    inverse spline (pyroflows' own layer: the forward spline, as zuko's NSF guide inverted
    with ``flow.transform.inv`` does too). The same map as ``RQS(data_to_base="forward")``, the
    option that ``guide_flow("nsf", dim, spline="forward")`` builds (checked equal to 1e-12)."""

    def __call__(self, x, params, inverse=False):
        return super().__call__(x, params, not inverse)

    def value(self, x, params, inverse=False):
        return super().value(x, params, not inverse)


def flipped(hidden: tuple[int, int] | None = None, layers: int = 3, bound: float = 5.0):
    """``dim -> Flow``: the ``"nsf"`` guide flow (``layers`` autoregressive spline layers in
    the IAF direction, default width unless ``hidden``) with every spline a :class:`FlippedRQS`."""

    def make(dim: int) -> Flow:
        flow = guide_flow("nsf", dim, layers=layers, hidden=hidden or _hidden(dim), bound=bound)
        for t in flow.transforms:
            if isinstance(t, MaskedAutoregressive) and type(t.univariate) is RQS:
                t.univariate = FlippedRQS(t.univariate.bins, t.univariate.bound)
        if (
            sum(isinstance(getattr(t, "univariate", None), FlippedRQS) for t in flow.transforms)
            != layers
        ):
            raise RuntimeError("expected one flipped spline per layer")
        return flow

    return make


#: name -> constructor(model, init_loc_fn); "iaf" is the default FlowGuide
CANDIDATES = {
    "iaf": lambda m, i: pf.FlowGuide(m, init_loc_fn=i),
    "iaf, hidden (64, 64)": lambda m, i: pf.FlowGuide(m, hidden=(64, 64), init_loc_fn=i),
    "iaf, multistart": lambda m, i: pf.FlowGuide(m, affine_init="multistart", init_loc_fn=i),
    "iaf, plain start N(init, I)": lambda m, i: pf.FlowGuide(
        m, affine_init=None, init_scale=1.0, init_loc_fn=i
    ),
    "nsf": lambda m, i: pf.FlowGuide(m, flow="nsf", init_loc_fn=i),
    "nsf, hidden (64, 64)": lambda m, i: pf.FlowGuide(
        m, flow="nsf", hidden=(64, 64), init_loc_fn=i
    ),
    "nsf, bound 10": lambda m, i: pf.FlowGuide(m, flow="nsf", bound=10.0, init_loc_fn=i),
    "nsf, hidden (64, 64), bound 10": lambda m, i: pf.FlowGuide(
        m, flow="nsf", hidden=(64, 64), bound=10.0, init_loc_fn=i
    ),
    "nsf, hidden (64, 64), plain start N(init, I)": lambda m, i: pf.FlowGuide(
        m, flow="nsf", hidden=(64, 64), affine_init=None, init_scale=1.0, init_loc_fn=i
    ),
    # the spline direction swapped (FlippedRQS): draws apply the inverse spline
    "nsf, flipped spline": lambda m, i: pf.FlowGuide(m, flow=flipped(), init_loc_fn=i),
    "nsf, hidden (64, 64), flipped spline": lambda m, i: pf.FlowGuide(
        m, flow=flipped((64, 64)), init_loc_fn=i
    ),
    "iaf 2 + nsf 1": lambda m, i: pf.FlowGuide(m, flow=mixed(2, 1, False), init_loc_fn=i),
    "nsf 1 + iaf 2": lambda m, i: pf.FlowGuide(m, flow=mixed(2, 1, True), init_loc_fn=i),
}


def markdown(rows: list[dict], header: str) -> str:
    out = [header, "",
           "| posterior | candidate | seed | C2ST | mean err | sd err | ELBO | k-hat | s |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in rows:
        cells = [r["posterior"], r["guide"], str(r["seed"]), _f(r["c2st"]),
                 _f(r["mean_err"], ".2f"), _f(r["sd_err"], ".2f"), _f(r["elbo"], ".2f"),
                 _f(r["k_hat"], ".2f"), f"{r['seconds']:.1f}"]  # fmt: skip
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="+", required=True, help="development posteriors")
    import vi_guides

    peers = [g for g in vi_guides.GUIDES if not g.startswith("FlowGuide")]
    parser.add_argument("--candidates", nargs="+", choices=[*CANDIDATES, *peers], required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS / "vi_guide_candidates.json")
    args = parser.parse_args(argv)
    development = posteriors.names("development")
    unknown = sorted(set(args.only) - set(development))
    if unknown:
        raise SystemExit(f"development posteriors only: {unknown}")
    torch.set_num_threads(1)
    cfg = dict(steps=1000, particles=4, lr=1e-2, lr_min=1e-4, draws=1000, seed=args.seed)
    vi_guides.GUIDES.update(CANDIDATES)  # run_a builds guides by name
    rows = []
    for name in args.only:
        rows += [dict(r, seed=args.seed) for r in run_a(name, args.candidates, cfg)]
    old = json.loads(args.out.read_text())["rows"] if args.out.exists() else []
    res = {"date": time.strftime("%Y-%m-%d %H:%M"), "config": cfg, "torch": torch.__version__,
           "pyro": pyro.__version__, "load": list(os.getloadavg()), "rows": old + rows}  # fmt: skip
    args.out.write_text(json.dumps(res, indent=1))
    args.out.with_suffix(".md").write_text(markdown(res["rows"], HEADER))


if __name__ == "__main__":
    main()
