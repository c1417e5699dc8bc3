"""The distilled sampler against its teacher: C2ST per observation, SBC, time to distil.

Protocol: for each task (the simulators of ``benchmarks/amortized.py``), an ``nsf`` posterior
(the defaults: 5 layers, hidden (64, 64), linear maps) is fitted on ``--simulations``
simulations (seed 0, ``recipe="one_phase"``, ``--teacher-epochs`` epochs) and distilled with
:meth:`~pyroflows.AmortizedPosterior.distil` (``--simulations`` fresh simulations, seed 1,
its defaults unless ``--epochs`` is given; student family ``--family``) for each objective. For each
observation (seed 100; observations 1-3 are the development set the objective was chosen on,
4-5 the confirmation set) ``--draws`` draws of the student and of the teacher are compared by
:func:`pyroflows.diagnostics.c2st` (gradient boosting, 5 folds; 0.5 = indistinguishable).
SBC (:func:`pyroflows.diagnostics.sbc`, 200 simulations x 100 draws) runs on the student.
The divergences are the ones :meth:`~pyroflows.AmortizedPosterior.distil` estimates on its
held-out simulations (``student.divergence``). Sampling time: 1 000 observations x 1 000 draws
from the student and 100 x 1 000 from the teacher (scaled x10), 2 threads, wall-clock and
process CPU seconds, best of 2 (CPU seconds move less with the load of other jobs).

Command::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/fast_sampler.py --tasks linear_gaussian
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from amortized import TASKS  # noqa: E402

import pyroflows as pf  # noqa: E402
from pyroflows.diagnostics import c2st, sbc  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def teacher(task, args):
    torch.manual_seed(0)
    theta = task.prior.sample((args.simulations,))
    post = pf.AmortizedPosterior(prior=task.prior, simulator=task.simulate, flow="nsf")
    start = time.perf_counter()
    post.fit(theta, task.simulate(theta), recipe="one_phase", max_epochs=args.teacher_epochs,
             progress=False, seed=0)  # fmt: skip
    return post, time.perf_counter() - start


def evaluate(post, x_obs, args):
    scores = []
    for i, x in enumerate(x_obs):
        a = post.sample(x, args.draws, sampler="teacher", seed=2 + i).numpy()
        b = post.sample(x, args.draws, sampler="student", seed=50 + i).numpy()
        scores.append(float(c2st(a, b, classifier="hgb", n_bootstrap=0).accuracy))
    result = sbc(post, 200, 100, seed=3)
    return scores, float(np.min(result.pvalues))


def _timed(fn):
    best = None
    for _ in range(2):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        best = (wall, cpu) if best is None or wall < best[0] else best
    return best


def sampling_times(post, task):
    """(student wall, student CPU) for 1 000 x 1 000 draws and the teacher's, per 10^6 draws."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        torch.manual_seed(7)
        x = task.simulate(task.prior.sample((1000,)))
        post.sample(x[:10], 10)
        student = _timed(lambda: post.sample(x, 1000, sampler="student", seed=0))
        teacher = _timed(lambda: post.sample(x[:100], 1000, sampler="teacher", seed=0))
    finally:  # training and scoring of the next task on the threads they had
        torch.set_num_threads(threads)
    return student, (teacher[0] * 10, teacher[1] * 10)


def run(args, log):
    rows = []
    for name in args.tasks:
        task = TASKS[name]()
        post, fit_s = teacher(task, args)
        torch.manual_seed(100)
        x_obs = task.simulate(task.prior.sample((5,)))
        for objective in args.objectives:
            start = time.perf_counter()
            epochs = {} if args.epochs is None else dict(max_epochs=args.epochs)
            post.distil(num_simulations=args.simulations, objective=objective, seed=1,
                        family=args.family, **epochs)  # fmt: skip
            distil_s = time.perf_counter() - start
            scores, sbc_p = evaluate(post, x_obs, args)
            student_s, teacher_s = sampling_times(post, task)
            row = dict(task=name, family=args.family, objective=objective, teacher_fit_s=fit_s,
                       distil_s=distil_s,
                       epochs=len(post.student.history.train_loss), c2st_dev=scores[:3],
                       c2st_confirm=scores[3:], sbc_min_p=sbc_p,
                       divergence=post.student.divergence, student_sample_s=student_s,
                       teacher_sample_s=teacher_s)  # fmt: skip
            rows.append(row)
            log(json.dumps(row))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="+", default=["linear_gaussian", "slcp"])
    parser.add_argument("--objectives", nargs="+", default=["both"])
    parser.add_argument("--simulations", type=int, default=3000)
    parser.add_argument("--teacher-epochs", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=None, help="default: distil's")
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--family", default="affine", help="the student's (distil's family=)")
    parser.add_argument("--name", default="fast_sampler", help="results/NAME.md and .json")
    args = parser.parse_args(argv)
    load = os.getloadavg()[0]
    rows = run(args, lambda line: print(line, flush=True))
    result = dict(command="benchmarks/fast_sampler.py " + " ".join(sys.argv[1:]),
                  date=time.strftime("%Y-%m-%d"), load_average_start=round(load, 1),
                  load_average_end=round(os.getloadavg()[0], 1), rows=rows)  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(result, indent=1))
    lines = ["# Distilled sampler vs its teacher", "", f"Command: `{result['command']}`, "
             f"{result['date']}, load average {result['load_average_start']} -> "
             f"{result['load_average_end']} (2 shared CPUs).", "",
             "Teacher: `nsf` fitted on the simulations; student: `post.distil()` with its "
             "defaults on as many fresh ones. C2ST of 1 000 student draws against 1 000 "
             "teacher draws per observation (0.5 = indistinguishable); KL divergences in nats "
             "on the held-out simulations (`student.divergence`); sampling seconds per 10^6 "
             "draws on 2 threads, best of 2 (teacher on 100 x 1 000, scaled). Variants tried on "
             "the development observations: `fast_sampler_variants.md`.", "",
             "| task | family | objective | teacher fit s | distil s | epochs | "
             "C2ST dev (obs 1-3) | "
             "C2ST confirmation (obs 4-5) | SBC min KS p (student) | KL(student, teacher) | "
             "KL(teacher, student) | 10^6 draws student s (CPU s) | teacher s (CPU s) |",
             "|---|---|---|---:|---:|---:|---|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in rows:
        lines.append(
            f"| {r['task']} | {r['family']} | {r['objective']} | {r['teacher_fit_s']:.0f} "
            f"| {r['distil_s']:.0f} "
            f"| {r['epochs']} | {', '.join(f'{s:.3f}' for s in r['c2st_dev'])} | "
            f"{', '.join(f'{s:.3f}' for s in r['c2st_confirm'])} | {r['sbc_min_p']:.3f} | "
            f"{r['divergence']['student_teacher']:.3f} | {r['divergence']['teacher_student']:.3f} "
            f"| {r['student_sample_s'][0]:.2f} ({r['student_sample_s'][1]:.2f}) | "
            f"{r['teacher_sample_s'][0]:.2f} ({r['teacher_sample_s'][1]:.2f}) |"
        )
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
