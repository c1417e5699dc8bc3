"""Ill-conditioned posteriors: the default ``FlowGuide`` against Pyro's autoguides, protocol (a).

Every guide runs inside the same plain Pyro SVI loop: ``steps`` steps, 8 vectorised particles
of ``Trace_ELBO``, Adam from 1e-2 with a linear warm-up over the first 5 % of the steps and an
exponential decay to 1e-4 at the end (``pyro.optim.LambdaLR``), gradient norms clipped at 10.
Guides: ``FlowGuide(model)`` (its defaults), ``FlowGuide(model, affine_init=None)`` (the plain
start ``N(init_loc, 0.1^2 I)``), ``AutoNormal``, ``AutoMultivariateNormal``, ``AutoIAFNormal``
(3 layers, Pyro's hidden sizes) and a zuko NSF guide (3 layers, ``pyro.contrib.zuko``).
Scores: C2ST accuracy (MLP, 3 folds) of 1000 guide draws against 1000 reference draws, both
whitened by the reference's mean and covariance (0.5 ideal), the largest error of a posterior
mean in posterior sds, and the training seconds. Targets are the development set of
``benchmarks/vi_conditioning_targets.py`` (no confirmation set: nothing here is a posteriordb
posterior). Run::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/vi_conditioning.py --steps 1500
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import pyro
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import (
    AutoContinuous,
    AutoIAFNormal,
    AutoMultivariateNormal,
    AutoNormal,
)
from vi_conditioning_targets import development_targets

from pyroflows.diagnostics import c2st
from pyroflows.vi import FlowGuide

RESULTS = Path(__file__).parent / "results"


class AutoZukoNSF(AutoContinuous):
    """A zuko NSF over the packed unconstrained latent vector, sampling in one pass per layer."""

    def _setup_prototype(self, *args, **kwargs):
        import zuko

        super()._setup_prototype(*args, **kwargs)
        self.nsf = zuko.flows.NSF(self.latent_dim, transforms=3, hidden_features=(64, 64))
        self.nsf.transform = self.nsf.transform.inv

    def get_posterior(self, *args, **kwargs):
        from pyro.contrib.zuko import ZukoToPyro

        return ZukoToPyro(self.nsf())


GUIDES = {
    "FlowGuide": lambda m: FlowGuide(m),
    "FlowGuide plain start": lambda m: FlowGuide(m, affine_init=None),
    "AutoNormal": lambda m: AutoNormal(m),
    "AutoMultivariateNormal": lambda m: AutoMultivariateNormal(m),
    "AutoIAFNormal": lambda m: AutoIAFNormal(m, num_transforms=3),
    "zuko NSF": lambda m: AutoZukoNSF(m),
}


def optimiser(steps: int, lr: float = 1e-2, final: float = 1e-4, warmup: float = 0.05):
    warm = max(1, int(warmup * steps))

    def factor(t):
        if t < warm:
            return (t + 1) / warm
        return math.exp(math.log(final / lr) * (t - warm) / max(1, steps - warm))

    return pyro.optim.LambdaLR(
        {"optimizer": torch.optim.Adam, "optim_args": {"lr": lr}, "lr_lambda": factor},
        clip_args={"clip_norm": 10.0},
    )


def unconstrained_draws(model, guide, args, n):
    """Guide draws in the packed unconstrained coordinates, in site order."""
    from pyro.distributions.transforms import biject_to

    with torch.no_grad():
        if isinstance(guide, AutoZukoNSF):  # ZukoToPyro draws one shape only
            return guide.nsf().sample((n,)).numpy()
        if isinstance(guide, AutoContinuous):  # the packed latent vector itself
            return guide.get_posterior(*args).sample((n,)).reshape(n, -1).numpy()
        trace = pyro.poutine.trace(model).get_trace(*args)
        pred = pyro.infer.Predictive(model, guide=guide, num_samples=n)(*args)
    cols = []
    for name, site in trace.iter_stochastic_nodes():
        if type(site["fn"]).__name__ == "_Subsample":
            continue
        u = biject_to(site["fn"].support).inv(pred[name])
        cols.append(u.reshape(n, -1))
    return torch.cat(cols, -1).numpy()


def score(sample, ref):
    mean, cov = ref.mean(0), np.cov(ref.T)
    white = np.linalg.inv(np.linalg.cholesky(cov))
    acc = c2st((sample - mean) @ white.T, (ref - mean) @ white.T, "mlp", folds=3).accuracy
    err = np.abs(sample.mean(0) - mean) / ref.std(0)
    return float(acc), float(err.max()) if np.isfinite(err).all() else float("inf")


def run_one(name, make, model, args, ref, steps, n=1000, seed=0):
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    guide = make(model)
    optim = optimiser(steps)
    svi = SVI(model, guide, optim, Trace_ELBO(num_particles=8, vectorize_particles=True))
    start = time.perf_counter()
    for _ in range(steps):
        svi.step(*args)
        optim.step()
    seconds = time.perf_counter() - start
    try:
        sample = unconstrained_draws(model, guide, args, n)
        acc, err = score(sample, ref[:n])
    except (ValueError, RuntimeError, np.linalg.LinAlgError) as error:  # non-finite draws
        acc, err = 1.0, float("inf")
        print("   ", name, error)
    chosen = getattr(guide, "start_", {}).get("start")
    return {"guide": name, "c2st": round(acc, 3), "max_mean_err_sd": round(err, 2),
            "train_s": round(seconds, 1), "start": chosen}  # fmt: skip


def markdown(res) -> str:
    names = list(GUIDES)
    lines = [
        f"# Ill-conditioned posteriors, protocol (a): {res['steps']} SVI steps, 8 particles, "
        "Adam 1e-2, 5 % warm-up, exponential decay to 1e-4, clip 10; C2ST (MLP, 3 folds, "
        "1000 vs 1000 whitened draws; 0.5 ideal) / largest mean error in posterior sds",
        "",
        f"Run: `{res['command']}` on {res['date']} (torch {res['torch']}, pyro {res['pyro']}, "
        "one thread). Development targets only.",
        "",
        "| target | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for target, rows in res["targets"].items():
        by = {r["guide"]: r for r in rows}
        cells = [f"{by[g]['c2st']:.3f} / {by[g]['max_mean_err_sd']:.2g}" for g in names]
        lines.append(f"| {target} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--only", nargs="*", default=None, help="target names")
    parser.add_argument("--guides", nargs="*", default=None, help="guide names")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    res = {"date": time.strftime("%Y-%m-%d"), "torch": torch.__version__,
           "pyro": pyro.__version__, "steps": args.steps, "targets": {},
           "command": f"benchmarks/vi_conditioning.py --steps {args.steps}"}  # fmt: skip
    guides = {k: v for k, v in GUIDES.items() if not args.guides or k in args.guides}
    for target, (model, margs, _, ref, info) in development_targets(args.only).items():
        if args.only and target not in args.only:
            continue
        res["targets"][target] = rows = []
        for name, make in guides.items():
            rows.append(run_one(name, make, model, margs, ref, args.steps))
            print(f"{target:22s} {info} {rows[-1]}", flush=True)
    previous = RESULTS / "vi_conditioning.json"
    if args.only and previous.exists():  # keep the other targets' rows of the same protocol
        old = json.loads(previous.read_text())
        if old["steps"] == args.steps:
            res["targets"] = {**old["targets"], **res["targets"]}
    if not args.no_write:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "vi_conditioning.json").write_text(json.dumps(res, indent=1))
        (RESULTS / "vi_conditioning.md").write_text(markdown(res))


if __name__ == "__main__":
    main()
