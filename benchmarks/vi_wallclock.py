"""Protocol (b) of ``benchmarks/vi_posteriors.py``: each library's recommended way at equal
wall-clock time, NUTS included. ``FlowGuide.fit()`` sets the clock, so it always runs; the
other guides are those asked for (:data:`DEFAULT_GUIDES` when none are)."""

from __future__ import annotations

import time
from collections.abc import Sequence

import pyro
import torch
from pyro.infer import MCMC, NUTS, SVI, Trace_ELBO
from pyro.optim import Adam
from vi_guides import GUIDES, init_loc
from vi_metrics import draw_metrics, evaluate, failed_row
from vi_report import print_row

import pyroflows as pf
from pyroflows.datasets import posteriors

#: the guides protocol (b) runs when ``--guides`` is not given: FlowGuide.fit() and the three
#: Gaussian / IAF autoguides that Pyro's documentation recommends
DEFAULT_GUIDES = ("FlowGuide", "AutoNormal", "AutoMultivariateNormal", "AutoIAFNormal")


def _flowguide_fit(post, seed: int, steps: int | None):
    guide = pf.FlowGuide(post.model, init_loc_fn=init_loc)
    start = time.perf_counter()
    options = {} if steps is None else {"steps": steps}  # None: the default (smoke runs: few)
    guide.fit(model_kwargs=post.kwargs, seed=seed, progress=False, **options)
    return guide, time.perf_counter() - start


def _svi_until(post, guide, budget: float) -> float:
    svi = SVI(post.model, guide, Adam({"lr": 0.01}), Trace_ELBO())
    start = time.perf_counter()
    while time.perf_counter() - start < budget:
        svi.step(**post.kwargs)
    return time.perf_counter() - start


#: hard cap on NUTS's wall-clock time (pilot included), seconds; every NUTS run of the
#: committed protocol-(b) tables finished below it except diamonds'
NUTS_CAP = 600.0


class _OutOfTime(Exception):
    """Raised by :func:`_nuts_for`'s hook when NUTS passes its cap."""


def _nuts_for(post, budget: float, n: int, cap: float = NUTS_CAP) -> tuple[dict, float, str]:
    """NUTS for about ``budget`` seconds: a 10-iteration pilot times an iteration, then
    warm-up = samples = what the rest of the budget allows (at least 20 each).

    The whole run, pilot included, stops after ``cap`` seconds (checked after every NUTS
    iteration). A run stopped while sampling keeps its draws so far; one stopped in the pilot
    or the warm-up has none. Returns the draws (constrained, reference sites only; empty when
    there are none), the seconds and a note (``""`` when NUTS finished)."""
    start = time.perf_counter()
    kept: list[dict] = []

    def hook(kernel, params, stage, i):
        if stage.startswith("Sample"):
            kept.append({k: kernel.transforms[k].inv(v).detach().clone()
                         for k, v in params.items() if k in post.reference})  # fmt: skip
        if time.perf_counter() - start > cap:
            raise _OutOfTime

    def run(warmup: int, samples: int) -> None:
        kept.clear()
        kernel = NUTS(post.model, init_strategy=init_loc)
        mcmc = MCMC(kernel, num_samples=samples, warmup_steps=warmup, disable_progbar=True,
                    hook_fn=hook)  # fmt: skip
        mcmc.run(**post.kwargs)

    note = ""
    try:
        run(5, 5)  # the pilot
        kept.clear()
        per_iter = (time.perf_counter() - start) / 10
        half = max(20, int((budget - (time.perf_counter() - start)) / per_iter / 2))
        run(half, half)
    except _OutOfTime:
        note = (f"stopped at the {cap:.0f} s cap with {len(kept)} draws"
                if kept else f"did not finish in {cap:.0f} s: no draws")  # fmt: skip
    samples = {k: torch.stack([d[k] for d in kept]).numpy() for k in post.reference} if kept else {}
    return samples, time.perf_counter() - start, note


def check_guides(guides: Sequence[str]) -> None:
    """Refuse a guide list without ``"FlowGuide"`` (its ``fit()`` sets the clock of every
    other guide) or with a name that is not in :data:`vi_guides.GUIDES`."""
    unknown = [g for g in guides if g not in GUIDES]
    if unknown:
        raise ValueError(f"protocol (b): unknown guide(s) {unknown}; known: {list(GUIDES)}")
    if "FlowGuide" not in guides:
        raise ValueError(
            "protocol (b) gives every guide the wall-clock time of FlowGuide.fit(): "
            f"--guides must include FlowGuide (got {list(guides)})"
        )


def run_b(name: str, cfg: dict, guides: Sequence[str] = DEFAULT_GUIDES) -> list[dict]:
    """``FlowGuide.fit()`` (its default recipe; it sets the budget ``T``), then each other
    guide of ``guides`` under Pyro's usual SVI recipe until ``T``, then NUTS for about ``T``;
    one row per guide (a guide that fails on the model is a row with its error)."""
    check_guides(guides)
    post = posteriors.load(name)
    pyro.clear_param_store()
    pyro.set_rng_seed(cfg["seed"])
    guide, budget = _flowguide_fit(post, cfg["seed"], cfg.get("fit_steps"))
    rows = [{**evaluate(post, guide, cfg["draws"]), "guide": "FlowGuide.fit()", "seconds": budget}]
    for g in (g for g in guides if g != "FlowGuide"):
        pyro.clear_param_store()
        pyro.set_rng_seed(cfg["seed"])
        start = time.perf_counter()
        try:
            auto = GUIDES[g](post.model, init_loc)
            seconds = _svi_until(post, auto, budget)
            rows.append({**evaluate(post, auto, cfg["draws"]), "guide": g, "seconds": seconds})
        except Exception as e:  # a guide that fails on this model is a result, not a crash
            rows.append({**failed_row(e), "guide": g, "seconds": time.perf_counter() - start})
    pyro.set_rng_seed(cfg["seed"])
    samples, seconds, note = _nuts_for(post, budget, cfg["draws"], NUTS_CAP)
    nan = float("nan")
    if samples:
        n = min(cfg["draws"], len(next(iter(samples.values()))))
        row = {**draw_metrics(post, samples, n), "elbo": nan, "k_hat": nan, "draws": n}
    else:  # no draws at all: a failure (C2ST 1 in the summaries)
        row = failed_row(RuntimeError(note))
    if note:
        row["error" if not samples else "note"] = note
    rows.append({**row, "guide": "NUTS", "seconds": seconds, "nuts_cap": NUTS_CAP})
    for r in rows:
        r.update(posterior=name, protocol="b", budget=budget)
        print_row(r)
    return rows
