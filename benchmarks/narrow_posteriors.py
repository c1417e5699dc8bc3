"""Narrow posteriors in the prior's tail: how wide the amortized posterior is against the exact one.

The model of notebook 09: ``n`` i.i.d. draws ``x_j ~ N(mu, sigma^2)`` with ``n`` between 5 and
100, priors ``mu ~ N(0, 3^2)`` and ``log sigma ~ N(0, 1)``; the notebook's posterior
(``DeepSet(1, 16, hidden=64)`` summary, a ``ContextAffine`` last layer, the whole cosine
schedule at a rate of 1e-3, the best validation state kept) with the autoregressive spline
flow (``flow="nsf"``: the flow of the recorded results; ``--flow auto`` for the library's
default, which also trains an affine coupling flow and keeps the better), trained on ``--budgets``
simulations for ``--epochs`` epochs each. For data sets from a few ``(sigma, n)`` (three each,
``mu = 1``) it prints the posterior standard deviations of ``mu`` and ``log sigma`` as a ratio
of the exact ones, and the error of the posterior means in exact standard deviations. The exact
posterior comes from quadrature on an 801 x 801 grid around the data's mean and log sd.

At ``sigma = 0.05`` (``log sigma = -3``, three prior standard deviations out) only one
simulation in about 740 has a sigma that small, so the posterior there is learnt from a handful
of simulations: this script measures how much that costs and how it shrinks with the budget.

``--sequential`` spends the same budget on one observation at a time in truncated-prior
rounds (:func:`pyroflows.amortized.fit_sequential`, ``--rounds`` rounds of ``--epochs``
epochs each, a fresh posterior per data set) and also prints, per data set, the prior volume
of the last region, the largest share of posterior draws outside a round's region and the
last round's SBC p-value on the truncated prior. ``--cases`` picks the ``sigma:n`` cases.

Commands::

    .venv/bin/python benchmarks/narrow_posteriors.py --quick   # ~1 min: 2 000 simulations
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/narrow_posteriors.py   # ~15 min, writes results/
    # the DeepSet that passes the set's mean, log sd and log n on to the flow unchanged:
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/narrow_posteriors.py --skip --budgets 10000 \
        --epochs 300 --out benchmarks/results/narrow_skip
    # sequential rounds at 10 000 simulations, one data set a case (development cases, then
    # the confirmation case)
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/narrow_posteriors.py --sequential \
        --budgets 10000 --epochs 50 --rounds 4 --data-sets 1 --cases 0.05:30 0.05:100 0.2:50
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/narrow_posteriors.py --sequential \
        --budgets 10000 --epochs 50 --rounds 4 --data-sets 1 --cases 0.1:50
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import pyro.distributions as dist
import torch

sys.path.insert(0, str(Path(__file__).parent))
from quality import git_commit  # noqa: E402

from pyroflows.amortized import AmortizedPosterior, fit_sequential  # noqa: E402
from pyroflows.nn import DeepSet  # noqa: E402

RESULTS = Path(__file__).parent / "results"
N_MAX = 100
PRIOR_SD = (3.0, 1.0)
CASES = [(0.05, 30), (0.05, 100), (0.2, 50), (0.5, 10), (1.0, 30), (5.0, 30), (20.0, 30)]


def simulate_sets(theta: torch.Tensor) -> torch.Tensor:
    """Sets of ``n`` draws padded to ``N_MAX`` rows with NaN (notebook 09's simulator)."""
    mu, sigma = theta[:, :1], theta[:, 1:].exp()
    x = mu + sigma * torch.randn(len(theta), N_MAX)
    n = torch.randint(5, N_MAX + 1, (len(theta), 1))
    x[torch.arange(N_MAX) >= n] = float("nan")
    return x[..., None]


def exact_moments(x: torch.Tensor, points: int = 801) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior means and standard deviations of ``(mu, log sigma)`` by quadrature."""
    x = x.double()
    n, mean, sd = len(x), x.mean(), x.std()
    half = 12 * sd / math.sqrt(n)
    mu = torch.linspace(mean - half, mean + half, points, dtype=torch.float64)
    log_sigma = torch.linspace(sd.log() - 2.5, sd.log() + 2.5, points, dtype=torch.float64)
    m, s = torch.meshgrid(mu, log_sigma, indexing="ij")
    log_p = torch.distributions.Normal(0.0, PRIOR_SD[0]).log_prob(m)
    log_p = log_p + torch.distributions.Normal(0.0, PRIOR_SD[1]).log_prob(s)
    log_p = log_p + torch.distributions.Normal(m[..., None], s.exp()[..., None]).log_prob(x).sum(-1)
    w = (log_p - log_p.max()).exp()
    w = w / w.sum()
    means = torch.stack([(w * m).sum(), (w * s).sum()])
    sds = torch.stack([(w * (m - means[0]) ** 2).sum(), (w * (s - means[1]) ** 2).sum()]).sqrt()
    return means, sds


#: the training options of every fit (each round's with --sequential)
TRAIN = dict(patience=None, lr=1e-3, recipe="one_phase", progress=False)


def posterior(skip: bool, flow: str) -> AmortizedPosterior:
    """Notebook 09's posterior, initialised under seed 0."""
    prior = dist.Normal(torch.tensor([0.0, 0.0]), torch.tensor(PRIOR_SD)).to_event(1)
    torch.manual_seed(0)
    return AmortizedPosterior(
        prior=prior,
        simulator=simulate_sets,
        flow=flow,
        summary=DeepSet(1, 16, hidden=64, skip=skip),
        flow_kwargs=dict(context_affine=True),
        param_name="theta",
    )


def observation(sigma: float, n: int, rep: int) -> torch.Tensor:
    """Data set ``rep`` of a case (the same for every mode)."""
    torch.manual_seed(100 * rep + n)
    return 1.0 + sigma * torch.randn(n)


def compare(draws: torch.Tensor, x: torch.Tensor) -> tuple[list[float], list[float]]:
    """The draws' sd ratios and mean errors (in exact sds) against the exact posterior."""
    means, sds = exact_moments(x)
    draws = draws.double()
    return (draws.std(0) / sds).tolist(), ((draws.mean(0) - means) / sds).tolist()


def summarise(sigma: float, n: int, ratios: list, errors: list, log, **extra) -> dict:
    ratio, error = np.median(ratios, 0), np.mean(np.abs(errors), 0)
    log(
        f"  sigma {sigma:5} n {n:3}: sd ratio mu {ratio[0]:.2f}, log sigma {ratio[1]:.2f}; "
        f"|mean error| in sds mu {error[0]:.2f}, log sigma {error[1]:.2f}"
    )
    return dict(sigma=sigma, n=n, sd_ratio=ratio.tolist(), abs_mean_error=error.tolist(), **extra)


def run(budget: int, epochs: int, skip: bool, log, flow: str = "nsf", cases=CASES) -> dict:
    post = posterior(skip, flow)
    start = time.perf_counter()
    post.fit(num_simulations=budget, max_epochs=epochs, seed=0, **TRAIN)
    seconds = time.perf_counter() - start
    log(f"{budget} simulations, {epochs} epochs: {seconds:.0f} s")
    out = []
    for sigma, n in cases:
        ratios, errors = [], []
        for rep in range(3):
            x = observation(sigma, n, rep)
            ratio, error = compare(post.sample(x[:, None], 4000, seed=rep), x)
            ratios.append(ratio)
            errors.append(error)
        out.append(summarise(sigma, n, ratios, errors, log))
    return dict(budget=budget, epochs=epochs, skip=skip, train_s=round(seconds, 1), cases=out)


def run_sequential(
    budget: int, epochs: int, rounds: int, skip: bool, log, flow: str = "nsf", cases=CASES,
    data_sets: int = 3,
) -> dict:  # fmt: skip
    """A fresh posterior per data set, trained in ``rounds`` truncated-prior rounds."""
    out, total = [], 0.0
    for sigma, n in cases:
        ratios, errors, checks = [], [], []
        for rep in range(data_sets):
            x = observation(sigma, n, rep)
            post = posterior(skip, flow)
            start = time.perf_counter()
            result = fit_sequential(
                post, x[:, None], rounds=rounds, simulations=budget, seed=rep,
                max_epochs=epochs, **TRAIN,
            )  # fmt: skip
            seconds = time.perf_counter() - start
            total += seconds
            ratio, error = compare(post.sample(x[:, None], 4000, seed=rep), x)
            ratios.append(ratio)
            errors.append(error)
            last = result.rounds[-1]
            check = dict(
                prior_volume=last.prior_volume,
                max_outside=max(r.outside for r in result.rounds),
                sbc_min_p=None if last.sbc is None else float(np.min(last.sbc.pvalues)),
                seconds=round(seconds, 1),
                sd_ratio=ratio,
            )
            checks.append(check)
            log(f"    data set {rep}: {seconds:.0f} s, {check}")
            log("\n".join("      " + line for line in result.table().splitlines()))
        out.append(summarise(sigma, n, ratios, errors, log, data_sets=checks))
    return dict(budget=budget, epochs=epochs, skip=skip, rounds=rounds, train_s=round(total, 1),
                data_sets=data_sets, cases=out)  # fmt: skip


def markdown(result: dict) -> str:
    if result.get("sequential"):
        return markdown_sequential(result)
    lines = [
        "# Narrow posteriors in the prior's tail (notebook 09's model)",
        "",
        f"Command: `{result['command']}`  ",
        f"Commit: `{result['commit']}`, {result['date']}, torch threads {result['threads']}.",
        "",
        "Median over the data sets of the posterior sd as a ratio of the exact one (1 is "
        "right), and the mean |error| of the posterior mean in exact sds.",
        "",
        "| simulations | epochs | skip | sigma | n | sd ratio mu | sd ratio log sigma "
        "| mean error mu | mean error log sigma |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["runs"]:
        for c in r["cases"]:
            lines.append(
                f"| {r['budget']:,} | {r['epochs']} | {r['skip']} | {c['sigma']} | {c['n']} | "
                f"{c['sd_ratio'][0]:.2f} | {c['sd_ratio'][1]:.2f} | "
                f"{c['abs_mean_error'][0]:.2f} | {c['abs_mean_error'][1]:.2f} |"
            )
    return "\n".join(lines) + "\n"


def markdown_sequential(result: dict) -> str:
    lines = [
        "# Narrow posteriors in the prior's tail: truncated-prior rounds for one observation",
        "",
        f"Command: `{result['command']}`  ",
        f"Commit: `{result['commit']}`, {result['date']}, torch threads {result['threads']}.",
        "",
        f"{result['runs'][0].get('data_sets', 3)} data set(s) a case. "
        "One posterior per data set, trained by `fit_sequential` (round 1 from the prior, each "
        "next round from the prior truncated to the posterior's 1e-4 highest-density region at "
        "the data set; all simulations, the SBC check's held-out rows included, count in the "
        "budget). Median over three data sets of the posterior sd as a ratio of the exact one "
        "(1 is right), the mean |error| of the posterior mean in exact sds; per data set the "
        "prior volume of the last round's region, the largest share of a round's posterior "
        "draws outside its region (warns above 1e-3) and the last round's smallest SBC p-value "
        "on the truncated prior (200 held-out rows).",
        "",
        "| simulations | rounds | epochs a round | sigma | n | sd ratio mu | sd ratio log sigma "
        "| mean error mu | mean error log sigma | prior volume | max outside | SBC min p |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|",
    ]
    for r in result["runs"]:
        for c in r["cases"]:
            sets = c["data_sets"]
            volume = ", ".join(f"{d['prior_volume']:.1e}" for d in sets)
            outside = ", ".join(f"{d['max_outside']:.1e}" for d in sets)
            p = ", ".join("-" if d["sbc_min_p"] is None else f"{d['sbc_min_p']:.2f}" for d in sets)
            lines.append(
                f"| {r['budget']:,} | {r['rounds']} | {r['epochs']} | {c['sigma']} | {c['n']} | "
                f"{c['sd_ratio'][0]:.2f} | {c['sd_ratio'][1]:.2f} | "
                f"{c['abs_mean_error'][0]:.2f} | {c['abs_mean_error'][1]:.2f} | "
                f"{volume} | {outside} | {p} |"
            )
    return "\n".join(lines) + "\n"


def case(text: str) -> tuple[float, int]:
    """``"0.05:30"`` -> ``(0.05, 30)``."""
    sigma, n = text.split(":")
    return float(sigma), int(n)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 000 simulations, 5 epochs")
    parser.add_argument("--budgets", nargs="+", type=int, default=[10_000, 50_000])
    parser.add_argument("--epochs", nargs="+", type=int, default=[300, 100], help="per budget")
    parser.add_argument("--skip", action="store_true", help="DeepSet(skip=True)")
    parser.add_argument("--flow", default="nsf", help="the posterior's flow family, or auto")
    parser.add_argument("--sequential", action="store_true", help="truncated-prior rounds")
    parser.add_argument("--rounds", type=int, default=4, help="rounds with --sequential")
    parser.add_argument("--cases", nargs="+", type=case, default=CASES, help="sigma:n ...")
    parser.add_argument("--data-sets", type=int, default=3, help="data sets a case (sequential)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.budgets, args.epochs = [2000], [5]
    if len(args.epochs) != len(args.budgets):
        parser.error(f"--epochs needs one value per budget ({len(args.budgets)})")
    torch.set_num_threads(args.threads)
    log = lambda text: print(text, flush=True)  # noqa: E731
    result = {
        "command": "benchmarks/narrow_posteriors.py " + " ".join(argv or sys.argv[1:]),
        "commit": git_commit(),
        "date": time.strftime("%Y-%m-%d"),
        "threads": args.threads,
        "sequential": args.sequential,
        "runs": [
            run_sequential(b, e, args.rounds, args.skip, log, args.flow, args.cases, args.data_sets)
            if args.sequential
            else run(b, e, args.skip, log, args.flow, args.cases)
            for b, e in zip(args.budgets, args.epochs, strict=True)
        ],
    }
    text = markdown(result)
    out = args.out or (None if args.quick else RESULTS)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        name = "narrow_sequential" if args.sequential else "narrow"
        (out / f"{name}.json").write_text(json.dumps(result, indent=1))
        (out / f"{name}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
