"""Soak test of float32 training: no NaN across seeds, on the density, VI and amortized jobs.

The reliability target: float32 training on the real data sets of the density job and on the
VI and amortized examples never returns a NaN, across 10 seeds. For every seed (``--seeds``,
default 10: seeds 0-9) and every problem below, one run trains in float32 and then evaluates
what a user would use; the script counts the runs that returned a NaN anywhere (target: zero).

Problems (``--only`` takes names, job names or name prefixes, e.g. ``density``, ``digits``,
``funnel-nsf``):

* **density** job, ``pf.DensityEstimator(dtype="float32", random_state=seed,
  time_budget=--budget)`` with the default ``flow="auto"`` and with ``flow="maf"``, on the four
  real data sets of ``benchmarks/quality.py`` (``breast_cancer``, ``digits`` dequantised with
  the constant pixels dropped, ``airports`` contiguous US, ``china_pixels``), loaded with its
  own loader (:func:`quality.load_real`) with the split seed = the run's seed; fitted on the
  training split with the validation split as ``X_val``. Checked: training losses, best
  validation loss, ``score_samples`` of the test split, ``--draws`` samples and their
  ``score_samples``.
* **vi** job: ``pf.FlowGuide(model, flow=...).fit(steps=--vi-steps, num_particles=8,
  seed=seed)`` (the library's default learning rate and clipping; float32 is the default
  dtype) on Neal's funnel (10-D, ``benchmarks/vi.py``) with ``nsf`` and ``iaf`` and on eight
  schools (non-centred, as in notebook 06) with ``nsf`` and ``realnvp``. Checked: training
  losses, ``sample_posterior`` draws, ``log q`` of the guide's draws, a 500-particle ELBO.
  ``pf.fit_to_density`` (defaults: coupling NSF, cosine schedule; ``--density-steps`` steps)
  with the ``reverse_kl``, ``forward_kl`` and ``chi2`` losses on the ring of 8 Gaussians of
  notebook 07 (``log Z = log 3``). Checked: training losses, draws, their ``log q``, the
  ``log Z`` of :func:`pyroflows.vi.importance_sample` (20 000 draws).
* **amortized** job: ``pf.AmortizedPosterior(prior=..., simulator=...)`` (library defaults,
  float32) offline on ``--simulations`` simulations of ``two_moons`` and ``slcp`` (the
  simulators of ``benchmarks/amortized.py``) with ``time_budget=--amortized-budget``, and
  online (``simulate_online=True``, ``--online-steps`` steps) on ``slcp``. Checked: training
  and validation losses, posterior draws for 5 observations, ``log_prob`` of 500 held-out
  simulations and of the posterior draws.

Each run ends ``ok``, ``diverged`` (``pf.TrainingDiverged``: the divergence guard gave up; a
caught divergence, no model is returned, counted apart from NaN) or ``error`` (any other
exception). For an ``ok`` run every returned number is checked: **NaN** (the failure this
benchmark counts) or, where a finite value is expected, **±inf** (reported apart:
``score_samples`` maps a NaN log-density to ``-inf``, so a ``-inf`` on held-out rows of
unbounded data usually hides one). ``retried`` counts the runs in which the guard caught a
non-finite step and recovered (``history.restarts > 0``). A validation loss is NaN in the
history when the time budget cut its last validation short; only that last entry is exempt.

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/soak.py           # ~15-20 min, writes results/
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/soak.py --quick   # smoke run, 1 seed, prints only
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/soak.py --only funnel-nsf --first-seed 3 --seeds 1

Writes ``soak.md`` and ``soak.json`` to ``--out`` (default ``benchmarks/results``; with
``--quick`` nothing unless ``--out`` is given), after every seed. Exit status 1 if any run
returned a NaN, else 0.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import logging
import math
import os
import shlex
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import pyro.distributions as dist
import torch

# The checkout this script lives in, and the sibling benchmarks whose problems are reused.
HERE = Path(__file__).resolve().parent
for _path in (str(HERE.parent), str(HERE)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import amortized as bench_amortized  # noqa: E402
import quality as bench_quality  # noqa: E402
import vi as bench_vi  # noqa: E402

import pyroflows as pf  # noqa: E402
from pyroflows.datasets import eight_schools  # noqa: E402

RESULTS = HERE / "results"
LOAD_AT_START = os.getloadavg()


@dataclass
class Settings:
    """Sizes of one soak run (``--quick`` shrinks them)."""

    seeds: list[int]
    budget: float = 8.0  # seconds per DensityEstimator fit
    vi_steps: int = 1000  # FlowGuide.fit steps
    density_steps: int = 400  # fit_to_density steps
    simulations: int = 2000  # offline amortized training set
    amortized_budget: float = 4.0  # seconds per offline AmortizedPosterior fit
    online_steps: int = 300
    draws: int = 1000  # samples drawn after training
    china_rows: int = 30_000
    cap: float = 60.0  # safety time budget of the step-bounded runs (VI, online)


@dataclass
class Outcome:
    """What one run returned: named arrays to check, and facts about the training."""

    checks: dict[str, Any] = field(default_factory=dict)  # name -> (values, finite expected)
    info: dict[str, Any] = field(default_factory=dict)

    def add(self, name: str, values: Any, finite: bool = True) -> None:
        self.checks[name] = (values, finite)

    def history(self, h: pf.History | None, prefix: str = "") -> None:
        """Training losses (all must be non-NaN; a budget-cut last validation is exempt)."""
        if h is None:
            return
        val = list(h.val_loss)
        if h.stop_reason == "time_budget" and val:
            val = val[:-1]
        self.add(prefix + "train loss", h.train_loss, finite=False)
        if any(not math.isnan(v) for v in h.val_loss):  # runs with validation
            self.add(prefix + "val loss", val, finite=False)
            self.add(prefix + "best val loss", [h.best_loss], finite=False)
        self.info["restarts"] = self.info.get("restarts", 0) + int(h.restarts)
        self.info.setdefault("stop", []).append(h.stop_reason)
        self.info.setdefault("epochs", []).append(len(h.train_loss))
        self.info.setdefault("steps", []).append(int(h.steps))


def as_array(values: Any) -> np.ndarray:
    if isinstance(values, dict):
        return np.concatenate([as_array(v).ravel() for v in values.values()])
    if isinstance(values, torch.Tensor):
        return values.detach().double().cpu().numpy()
    return np.asarray(values, dtype=np.float64)


# -- density job ----------------------------------------------------------------------------------
DENSITY_DATA = bench_quality.REAL_DATASETS
DENSITY_FLOWS = ("auto", "maf")


@functools.lru_cache(maxsize=4)
def load_real(name: str, seed: int, china_rows: int):
    """The quality benchmark's loader and preprocessing, split with ``seed``."""
    qs = bench_quality.Settings(datasets=(name,), budget=0.0, seed=seed, china_rows=china_rows)
    return bench_quality.load_real(name, qs)


def density_run(data: str, flow: str) -> Callable[[int, Settings], Outcome]:
    def run(seed: int, s: Settings) -> Outcome:
        d = load_real(data, seed, s.china_rows)
        est = pf.DensityEstimator(
            flow=flow, dtype="float32", random_state=seed, time_budget=s.budget, progress=False
        )
        est.fit(d.train, X_val=d.val)
        out = Outcome(info={"member": getattr(est, "member_", flow), "dim": d.train.shape[1]})
        for c in getattr(est, "candidates_", []):
            out.history(c["history"], prefix=f"{c['name']}: ")
            out.add(f"{c['name']}: candidate best loss", [c["best_loss"]], finite=False)
        test_ll = est.score_samples(d.test)
        out.add("test log-likelihood", test_ll)
        out.info["test_ll"] = float(np.mean(test_ll))
        samples = est.sample(s.draws, random_state=seed)
        out.add("samples", samples)
        out.add("log p of samples", est.score_samples(samples))
        return out

    return run


# -- VI job ---------------------------------------------------------------------------------------
VI_MODELS: dict[str, tuple[Callable, tuple]] = {
    "funnel": (bench_vi.funnel, ()),
    "schools": eight_schools(),
}


def guide_run(model_name: str, flow: str) -> Callable[[int, Settings], Outcome]:
    def run(seed: int, s: Settings) -> Outcome:
        model, args = VI_MODELS[model_name]
        pyro.clear_param_store()
        pyro.set_rng_seed(seed)
        guide = pf.FlowGuide(model, flow=flow)
        h = guide.fit(
            *args, steps=s.vi_steps, num_particles=8, seed=seed, progress=False,
            time_budget=s.cap,
        )  # fmt: skip
        out = Outcome(info={"dtype": str(next(guide.parameters()).dtype)})
        out.history(h)
        with torch.no_grad():
            out.add("posterior samples", guide.sample_posterior(s.draws))
            _, log_q = guide.flow.rsample_and_log_prob((s.draws,))
            out.add("log q of guide draws", log_q)
            elbo = -pyro.infer.Trace_ELBO(num_particles=500, vectorize_particles=True).loss(
                model, guide, *args
            )
        out.add("ELBO", [elbo])
        out.info["elbo"] = float(elbo)
        return out

    return run


RING_CENTRES = 5 * torch.stack(
    [torch.cos(torch.arange(8) * 2 * math.pi / 8), torch.sin(torch.arange(8) * 2 * math.pi / 8)],
    -1,
)
RING_LOG_Z = math.log(3.0)


def log_ring(z: torch.Tensor) -> torch.Tensor:
    """Ring of 8 Gaussians (sd 0.5) at radius 5, unnormalised with ``log Z = log 3``
    (notebook 07)."""
    comp = dist.Normal(RING_CENTRES.to(z), 0.5).to_event(1).log_prob(z.unsqueeze(-2))
    return torch.logsumexp(comp, -1) - math.log(8) + RING_LOG_Z


def fit_to_density_run(loss: str) -> Callable[[int, Settings], Outcome]:
    def run(seed: int, s: Settings) -> Outcome:
        torch.manual_seed(seed)  # the flow's initialisation
        q = pf.fit_to_density(
            log_ring, 2, loss=loss, steps=s.density_steps, seed=seed, progress=False,
            time_budget=s.cap,
        )  # fmt: skip
        out = Outcome(info={"dtype": str(next(q.parameters()).dtype)})
        out.history(q.history)
        with torch.no_grad():
            x = q.sample((s.draws,))
            out.add("samples", x)
            out.add("log q of samples", q.log_prob(x))
        result = pf.importance_sample(log_ring, q, n=20_000, keep=False)
        out.add("importance log Z", [result.log_z])
        out.info["log_z_error"] = float(result.log_z - RING_LOG_Z)
        return out

    return run


# -- amortized job --------------------------------------------------------------------------------
def posterior_checks(post: pf.AmortizedPosterior, task: Any, seed: int, s: Settings) -> Outcome:
    out = Outcome(
        info={"dtype": str(next(post.estimator.parameters()).dtype), "dropped": int(post.dropped)}
    )
    out.history(post.history)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(10_000 + seed)
        theta_obs = task.prior.sample((5,))
        x_obs = task.simulate(theta_obs)
        theta_test = task.prior.sample((500,))
        x_test = task.simulate(theta_test)
    draws = post.sample(x_obs, s.draws, seed=seed)  # (draws, 5, dim)
    out.add("posterior samples", draws)
    out.add("log q of posterior samples", post.log_prob(draws, x_obs))
    held_out = post.log_prob(theta_test, x_test)
    out.add("log q of held-out simulations", held_out)
    out.info["held_out_log_q"] = float(held_out.mean())
    return out


def amortized_run(task_name: str, online: bool) -> Callable[[int, Settings], Outcome]:
    def run(seed: int, s: Settings) -> Outcome:
        task = bench_amortized.TASKS[task_name]()
        post = pf.AmortizedPosterior(prior=task.prior, simulator=task.simulate)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # the simulations and the network's initialisation
            if online:
                post.fit(simulate_online=True, steps=s.online_steps, seed=seed, progress=False,
                         time_budget=s.cap)  # fmt: skip
            else:
                theta = task.prior.sample((s.simulations,))
                post.fit(theta, task.simulate(theta), seed=seed, progress=False,
                         time_budget=s.amortized_budget)  # fmt: skip
        return posterior_checks(post, task, seed, s)

    return run


# -- the problems ---------------------------------------------------------------------------------
PROBLEMS: dict[str, tuple[str, Callable[[int, Settings], Outcome]]] = {
    **{
        f"{data}-{flow}": ("density", density_run(data, flow))
        for data in DENSITY_DATA
        for flow in DENSITY_FLOWS
    },
    "funnel-nsf": ("vi", guide_run("funnel", "nsf")),
    "funnel-iaf": ("vi", guide_run("funnel", "iaf")),
    "schools-nsf": ("vi", guide_run("schools", "nsf")),
    "schools-realnvp": ("vi", guide_run("schools", "realnvp")),
    "ring8-reverse_kl": ("vi", fit_to_density_run("reverse_kl")),
    "ring8-forward_kl": ("vi", fit_to_density_run("forward_kl")),
    "ring8-chi2": ("vi", fit_to_density_run("chi2")),
    "two_moons-offline": ("amortized", amortized_run("two_moons", online=False)),
    "slcp-offline": ("amortized", amortized_run("slcp", online=False)),
    "slcp-online": ("amortized", amortized_run("slcp", online=True)),
}


def select(only: list[str] | None) -> list[str]:
    if not only:
        return list(PROBLEMS)
    chosen = [
        name
        for name, (job, _) in PROBLEMS.items()
        if any(t in (name, job) or name.startswith(t + "-") for t in only)
    ]
    unknown = [
        t
        for t in only
        if not any(t in (n, j) or n.startswith(t + "-") for n, (j, _) in PROBLEMS.items())
    ]
    if unknown:
        raise SystemExit(f"--only: unknown problem(s) {unknown}; known: {list(PROBLEMS)}")
    return chosen


# -- one run --------------------------------------------------------------------------------------
def execute(name: str, seed: int, s: Settings) -> dict[str, Any]:
    job, run = PROBLEMS[name]
    row: dict[str, Any] = {"problem": name, "job": job, "seed": seed, "nan": [], "inf": []}
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            out = run(seed, s)
            row["status"] = "ok"
        except pf.TrainingDiverged as error:
            out, row["status"], row["message"] = None, "diverged", str(error)
        except Exception as error:  # noqa: BLE001 (any other failure is counted, not fatal)
            out, row["status"] = None, "error"
            row["message"] = f"{type(error).__name__}: {error}"
            row["traceback"] = traceback.format_exc(limit=-6)
    row["seconds"] = time.perf_counter() - start
    messages = sorted({f"{w.category.__name__}: {w.message}" for w in caught})
    row["warnings"] = [m[:300] for m in messages if "DeprecationWarning" not in m]
    if out is not None:
        row.update(out.info)
        for check, (values, finite) in out.checks.items():
            a = as_array(values)
            if np.isnan(a).any():
                row["nan"].append(f"{check} ({int(np.isnan(a).sum())} of {a.size})")
            elif finite and np.isinf(a).any():
                row["inf"].append(f"{check} ({int(np.isinf(a).sum())} of {a.size})")
    return row


# -- report ---------------------------------------------------------------------------------------
def summarise(rows: list[dict[str, Any]], names: list[str]) -> list[dict[str, Any]]:
    table = []
    for name in [*names, "total"]:
        mine = [r for r in rows if name in ("total", r["problem"])]
        if not mine:
            continue
        secs = [r["seconds"] for r in mine]
        table.append(
            {
                "problem": name,
                "job": mine[0]["job"] if name != "total" else "",
                "runs": len(mine),
                "ok": sum(r["status"] == "ok" for r in mine),
                "nan": sum(bool(r["nan"]) for r in mine),
                "inf": sum(bool(r["inf"]) for r in mine),
                "diverged": sum(r["status"] == "diverged" for r in mine),
                "errors": sum(r["status"] == "error" for r in mine),
                "retried": sum(r.get("restarts", 0) > 0 for r in mine),
                "median_s": float(np.median(secs)),
                "max_s": float(np.max(secs)),
                "total_s": float(np.sum(secs)),
            }
        )
    return table


def markdown(result: dict[str, Any]) -> str:
    s = result["settings"]
    lines = [
        "# Soak: float32 training never returns NaN",
        "",
        f"Command: `{result['command']}`  ",
        f"Commit: `{result['commit']}`, {result['date']}, load average at start "
        f"{' / '.join(f'{x:.2f}' for x in result['load_average'])} (1 / 5 / 15 min), "
        f"torch {result['torch']}, pyro {result['pyro']}, 1 thread.  ",
        f"Seeds {s['seeds'][0]}-{s['seeds'][-1]} ({len(s['seeds'])}); density time budget "
        f"{s['budget']} s; FlowGuide {s['vi_steps']} steps x 8 particles; fit_to_density "
        f"{s['density_steps']} steps; amortized offline {s['simulations']} simulations, "
        f"{s['amortized_budget']} s; online {s['online_steps']} steps. Wall time "
        f"{result['wall_s'] / 60:.1f} min{' (incomplete)' if not result['complete'] else ''}.",
        "",
        "NaN: runs that returned a NaN anywhere (loss, test log-likelihood, samples, log-density, "
        "ELBO / log Z; target 0). inf: runs with an infinite value where a finite one is "
        "expected (`score_samples` maps a NaN log-density to -inf). diverged: "
        "`pf.TrainingDiverged` raised (a caught divergence). retried: the divergence guard "
        "caught a non-finite step and recovered. Seconds: fit plus checks, per run.",
        "",
        "| problem | job | runs | ok | NaN | inf | diverged | errors | retried | median s "
        "| max s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for t in result["table"]:
        bold = "**" if t["problem"] == "total" else ""
        lines.append(
            f"| {bold}{t['problem']}{bold} | {t['job']} | {t['runs']} | {t['ok']} | {t['nan']} | "
            f"{t['inf']} | {t['diverged']} | {t['errors']} | {t['retried']} | "
            f"{t['median_s']:.1f} | {t['max_s']:.1f} |"
        )
    bad = [
        r for r in result["runs"] if r["nan"] or r["inf"] or r["status"] != "ok"
    ]  # fmt: skip
    lines += ["", "## Runs that were not clean", ""]
    if not bad:
        lines.append("None.")
    for r in bad:
        what = "; ".join(
            [f"NaN in {', '.join(r['nan'])}"] * bool(r["nan"])
            + [f"inf in {', '.join(r['inf'])}"] * bool(r["inf"])
            + [f"{r['status']}: {r.get('message', '')}"] * (r["status"] != "ok")
        )
        lines.append(
            f"- `{r['problem']}` seed {r['seed']}: {what}. Reproduce: "
            f"`OMP_NUM_THREADS=1 .venv/bin/python benchmarks/soak.py --only {r['problem']} "
            f"--first-seed {r['seed']} --seeds 1{result['size_flags']}`"
        )
    retried = [r for r in result["runs"] if r.get("restarts", 0) > 0]
    if retried:
        lines += ["", "## Runs the divergence guard rescued", ""]
        lines += [
            f"- `{r['problem']}` seed {r['seed']}: {r['restarts']} restart(s)" for r in retried
        ]
    return "\n".join(lines) + "\n"


def jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, np.generic):
        return jsonable(value.item())
    return value


def print_table(table: list[dict[str, Any]]) -> None:
    head = f"{'problem':24s} {'runs':>4s} {'ok':>4s} {'NaN':>4s} {'inf':>4s} {'div':>4s} "
    print(head + f"{'err':>4s} {'retry':>5s} {'median s':>9s} {'max s':>7s}", flush=True)
    for t in table:
        print(
            f"{t['problem']:24s} {t['runs']:4d} {t['ok']:4d} {t['nan']:4d} {t['inf']:4d} "
            f"{t['diverged']:4d} {t['errors']:4d} {t['retried']:5d} {t['median_s']:9.1f} "
            f"{t['max_s']:7.1f}",
            flush=True,
        )


# -- command line ---------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds (10; quick 1)")
    parser.add_argument("--first-seed", type=int, default=0, help="seeds start here (0)")
    parser.add_argument("--budget", type=float, default=None, help="density fit seconds (8)")
    parser.add_argument("--vi-steps", type=int, default=None, help="FlowGuide steps (1000)")
    parser.add_argument("--density-steps", type=int, default=None, help="fit_to_density (400)")
    parser.add_argument("--simulations", type=int, default=None, help="offline NPE sims (2000)")
    parser.add_argument("--amortized-budget", type=float, default=None, help="NPE seconds (4)")
    parser.add_argument("--online-steps", type=int, default=None, help="online NPE steps (300)")
    parser.add_argument(
        "--only", nargs="+", default=None, metavar="PROBLEM",
        help=f"problems, jobs or name prefixes (default all): {', '.join(PROBLEMS)}",
    )  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="1 seed, tiny budgets, prints only")
    parser.add_argument(
        "--out", type=Path, default=None,
        help="folder for soak.md / soak.json (default benchmarks/results; --quick: none)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.out is None and not args.quick:
        args.out = RESULTS
    return args


def make_settings(args: argparse.Namespace) -> Settings:
    quick = Settings(
        seeds=[], budget=1.0, vi_steps=30, density_steps=30, simulations=500,
        amortized_budget=1.0, online_steps=30, draws=200, china_rows=3000,
    )  # fmt: skip
    base = quick if args.quick else Settings(seeds=[])
    n = args.seeds if args.seeds is not None else (1 if args.quick else 10)
    base.seeds = list(range(args.first_seed, args.first_seed + n))
    for key in ("budget", "vi_steps", "density_steps", "simulations", "amortized_budget",
                "online_steps"):  # fmt: skip
        if getattr(args, key) is not None:
            setattr(base, key, getattr(args, key))
    return base


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    logging.getLogger("pyro").setLevel(logging.WARNING)
    assert torch.get_default_dtype() == torch.float32
    settings = make_settings(args)
    names = select(args.only)
    argv = sys.argv[1:] if argv is None else argv
    size_flags = " --quick" if args.quick else ""
    for key in ("budget", "vi_steps", "density_steps", "simulations", "amortized_budget",
                "online_steps"):  # fmt: skip
        if getattr(args, key) is not None:
            size_flags += f" --{key.replace('_', '-')} {getattr(args, key)}"
    result: dict[str, Any] = {
        "command": " ".join(["benchmarks/soak.py", *map(shlex.quote, argv)]),
        "commit": bench_quality.git_commit(),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "load_average": [round(x, 2) for x in LOAD_AT_START],
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        "settings": asdict(settings),
        "problems": names,
        "size_flags": size_flags,
        "complete": False,
        "runs": [],
    }
    print(
        f"load average {LOAD_AT_START[0]:.2f}; {len(names)} problems x {len(settings.seeds)} "
        f"seed(s); commit {result['commit']}",
        flush=True,
    )
    start = time.perf_counter()
    for seed in settings.seeds:
        for name in names:
            row = execute(name, seed, settings)
            result["runs"].append(row)
            flags = "".join(
                [f" NaN: {row['nan']}"] * bool(row["nan"])
                + [f" inf: {row['inf']}"] * bool(row["inf"])
                + [f" {row.get('message', '')[:200]}"] * (row["status"] != "ok")
            )
            print(
                f"[{time.strftime('%H:%M:%S')}] seed {seed} {name:22s} {row['status']:8s} "
                f"{row['seconds']:6.1f} s restarts {row.get('restarts', 0)}{flags}",
                flush=True,
            )
        result["complete"] = seed == settings.seeds[-1]
        result["wall_s"] = time.perf_counter() - start
        result["table"] = summarise(result["runs"], names)
        if args.out is not None:  # after every seed, so a long run leaves partial results
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "soak.json").write_text(json.dumps(jsonable(result), indent=1) + "\n")
            (args.out / "soak.md").write_text(markdown(result))
    print()
    print_table(result["table"])
    nan_runs = result["table"][-1]["nan"]
    print(f"\nwall time {result['wall_s'] / 60:.1f} min; runs with NaN: {nan_runs}", flush=True)
    return 1 if nan_runs else 0


if __name__ == "__main__":
    sys.exit(main())
