r"""Why pyroflows' default loses an sbibm cell: one task, one budget, pyroflows alone.

Trains the default ``AmortizedPosterior`` (or a variant: ``--flow``, ``--flow-kwargs``,
``--fit``) on the simulations of ``benchmarks/amortized.py --suite sbibm`` (the same seeds, so
the default reproduces that harness's C2ST row) and prints, per observation of the split:

* ``c2st``: as in the harness (1 000 draws against 1 000 of sbibm's reference draws);
* ``ref_nll``: the mean of ``-log q(theta | x_obs)`` over the C2ST's 1 000 reference draws
  (lower is better; less noisy than C2ST for comparing variants of one fit);
* ``kl``: for the tasks whose posterior is known exactly (``gaussian_linear``,
  ``gaussian_linear_uniform``: ``log_posterior`` in ``sbibm_tasks``), the Monte Carlo
  estimate of ``KL(p || q)`` over the same reference draws, ``mean(log p - log q)``: 0 for a
  perfect posterior, and its noise shared by every variant scored on the same draws;
* ``edge``: for a box prior, the fraction of draws within 0.5 % of the box's width of one of
  its faces, for the flow's draws and for the reference draws (a posterior pressed against
  the prior's bounds lies in the far tails of the unconstrained space the flow works in);
* each training phase: epochs, best epoch, best validation loss, why it stopped.

Command (about 80 CPU-seconds for two moons at 10 000 simulations)::

    OMP_NUM_THREADS=1 python benchmarks/sbibm_diagnose.py two_moons --budget 10000
    # the box prior mapped by the logit instead of its own coordinates:
    OMP_NUM_THREADS=1 python benchmarks/sbibm_diagnose.py two_moons --intervals logit
    # a variant, spline flow only, 16 bins:
    OMP_NUM_THREADS=1 python benchmarks/sbibm_diagnose.py two_moons --flow nsf \
        --flow-kwargs '{"bins": 16}'
    # sbi's NPE-NSF at its defaults (as in the harness) on the same simulations and draws:
    OMP_NUM_THREADS=1 python benchmarks/sbibm_diagnose.py gaussian_linear_uniform --sbi
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
import amortized as harness  # noqa: E402
import sbibm_tasks  # noqa: E402

from pyroflows.amortized import AmortizedPosterior  # noqa: E402
from pyroflows.amortized import recipe as recipe_module  # noqa: E402
from pyroflows.diagnostics import c2st  # noqa: E402

#: a draw within this share of the box's width of one of its faces counts as "at the edge"
EDGE = 0.005


def edge_fraction(draws: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> float:
    """The fraction of ``draws`` (n, d) within :data:`EDGE` of the box's width of a face.

    Example:
        >>> edge_fraction(torch.tensor([[0.999, 0.0], [0.5, 0.5]]), -torch.ones(2), torch.ones(2))
        0.5
    """
    margin = EDGE * (high - low)
    near = (draws - low < margin) | (high - draws < margin)
    return float(near.any(-1).double().mean())


def _box(task: sbibm_tasks.SbibmTask) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The bounds of a box (uniform) prior, None for any other prior."""
    base = getattr(task.prior, "base_dist", task.prior)
    if isinstance(base, torch.distributions.Uniform):
        return base.low, base.high
    return None


def _phases() -> list[dict[str, Any]]:
    """Records each training run of the recipe (one per phase and family)."""
    runs: list[dict[str, Any]] = []
    train = recipe_module._train

    def recorded(post, data, val_data, options, desc, run):
        history = train(post, data, val_data, options, desc, run)
        best_loss = round(history.best_loss, 4)
        runs.append(dict(run=desc, epochs=len(history.train_loss), best=history.best_epoch,
                         best_loss=best_loss, stop=history.stop_reason))  # fmt: skip
        return history

    recipe_module._train = recorded
    return runs


def diagnose(args: argparse.Namespace) -> dict[str, Any]:
    task = harness.SBIBM[args.task]()
    options = argparse.Namespace(split=args.split, observations=5)
    labels, x_obs, refs = harness._observations(options, task, 1000)
    torch.manual_seed(args.budget)  # the harness's simulations
    theta = task.prior.sample((args.budget,))
    x = task.simulate(theta)
    if args.sbi:
        return _score_sbi(args, task, theta, x, labels, x_obs, refs)
    torch.manual_seed(0)
    post = AmortizedPosterior(prior=task.prior, simulator=task.simulate, flow=args.flow,
                              flow_kwargs=json.loads(args.flow_kwargs) or None,
                              **({} if args.intervals is None else
                                 {"intervals": args.intervals}))  # fmt: skip
    runs = _phases()
    load, start, cpu = os.getloadavg()[0], time.perf_counter(), time.process_time()
    post.fit(theta, x, progress=False, seed=args.seed, **json.loads(args.fit))
    result: dict[str, Any] = dict(
        task=args.task, budget=args.budget, flow=args.flow, flow_kwargs=args.flow_kwargs,
        fit=args.fit, seed=args.seed, intervals=args.intervals, kept=post.flow_name,
        train_s=time.perf_counter() - start,
        cpu_s=time.process_time() - cpu, load=(load + os.getloadavg()[0]) / 2, runs=runs,
        observations=[],
    )  # fmt: skip
    box = _box(task)
    for k, label in enumerate(labels):
        torch.manual_seed(3000 + k)  # the harness's draws
        draws = post.sample(x_obs[k], 1000)
        accuracy = _c2st(args, draws, refs[k])
        ref = refs[k]  # a random subset (sbibm's files may hold its draws in some order)
        log_q = post.log_prob(ref, x_obs[k]).double()
        row = _row(task, label, accuracy, log_q, ref, x_obs[k])
        if box is not None:
            row["edge"] = [round(edge_fraction(d, *box), 3) for d in (draws, ref)]
        result["observations"].append(row)
    return _means(result)


def _c2st(args: argparse.Namespace, draws: torch.Tensor, ref: torch.Tensor) -> float:
    """The harness's C2ST of ``draws`` against ``ref`` (NaN with ``--no-c2st``)."""
    if args.no_c2st:
        return float("nan")
    return c2st(draws.numpy(), ref.numpy(), folds=5, n_bootstrap=0).accuracy


def _row(task, label, accuracy, log_q, ref, x_obs) -> dict[str, Any]:
    """One observation's scores: C2ST, reference NLL and, where the task knows its exact
    posterior, the estimate of KL(p || q) on the reference draws."""
    row = dict(observation=label, c2st=round(accuracy, 3), ref_nll=round(float(-log_q.mean()), 3))
    if hasattr(task, "log_posterior"):
        row["kl"] = round(float((task.log_posterior(ref, x_obs) - log_q).mean()), 4)
    return row


def _means(result: dict[str, Any]) -> dict[str, Any]:
    rows = result["observations"]
    for key in ("c2st", "ref_nll", "kl"):
        if all(key in row for row in rows):
            result[key] = float(np.mean([row[key] for row in rows]))
    return result


def _score_sbi(args, task, theta, x, labels, x_obs, refs) -> dict[str, Any]:
    """sbi's NPE-NSF as the harness trains it (``--seed``), scored like pyroflows; its
    ``log_prob`` is normalised for the mass it puts outside the prior (sbi's default)."""
    load, cpu = os.getloadavg()[0], time.process_time()
    post, seconds, epochs = harness.train_sbi(task, theta, x, False, seed=args.seed)
    result: dict[str, Any] = dict(
        task=args.task, budget=args.budget, method="sbi NPE-NSF", seed=args.seed,
        kept="sbi NPE-NSF", train_s=seconds, cpu_s=time.process_time() - cpu,
        load=(load + os.getloadavg()[0]) / 2, epochs=epochs, runs=[], observations=[],
    )  # fmt: skip
    box = _box(task)
    for k, label in enumerate(labels):
        torch.manual_seed(3000 + k)  # the harness's draws
        draws = harness.sample_sbi(post, x_obs[k], 1000)
        accuracy = _c2st(args, draws, refs[k])
        torch.manual_seed(4000 + k)  # sbi's estimate of its mass inside the prior
        log_q = post.log_prob(refs[k], x=x_obs[k]).detach().double()
        row = _row(task, label, accuracy, log_q, refs[k], x_obs[k])
        if box is not None:
            row["edge"] = [round(edge_fraction(d, *box), 3) for d in (draws, refs[k])]
        result["observations"].append(row)
    return _means(result)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("task", choices=sorted(harness.SBIBM))
    parser.add_argument("--budget", type=int, default=10000)
    parser.add_argument("--split", choices=("development", "confirmation"), default="development")
    parser.add_argument("--flow", default="auto")
    parser.add_argument("--flow-kwargs", default="{}", help="JSON, e.g. '{\"bins\": 16}'")
    parser.add_argument(
        "--fit", default="{}", help="JSON options of fit, e.g. '{\"weight_decay\": 1e-3}'"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--intervals", choices=("logit", "box"), default=None,
                        help="AmortizedPosterior(intervals=...): how a box prior reaches "
                        "the flow (default: the library's)")  # fmt: skip
    parser.add_argument("--no-c2st", action="store_true",
                        help="skip the C2ST (its classifiers cost more than the fit's scoring): "
                        "reference NLL and KL only")  # fmt: skip
    parser.add_argument("--sbi", action="store_true",
                        help="sbi's NPE-NSF (the harness's peer) instead of pyroflows")  # fmt: skip
    args = parser.parse_args(argv)
    result = diagnose(args)
    for run in result["runs"]:
        print(f"  {run['run']}: {run['epochs']} epochs, best {run['best']} "
              f"({run['best_loss']}), {run['stop']}")  # fmt: skip
    for row in result["observations"]:
        edge = (
            ""
            if "edge" not in row
            else f", at the edge {row['edge'][0]} (reference {row['edge'][1]})"
        )
        kl = f", KL {row['kl']}" if "kl" in row else ""
        print(
            f"  observation {row['observation']}: C2ST {row['c2st']}, "
            f"reference NLL {row['ref_nll']}{kl}{edge}"
        )
    kl = f", KL {result['kl']:.4f}" if "kl" in result else ""
    print(f"{args.task} {args.budget}: C2ST {result['c2st']:.3f}, reference NLL "
          f"{result['ref_nll']:.3f}{kl}, kept {result['kept']}, {result['cpu_s']:.0f} CPU-s, "
          f"load {result['load']:.1f}")  # fmt: skip
    print(json.dumps(result))


if __name__ == "__main__":
    main()
