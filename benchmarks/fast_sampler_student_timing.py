"""Sampling time of the student families against the affine student, same process, 2
threads: 1 000 observations x 1 000 draws (10^6), best of 2, wall-clock and CPU seconds
(untrained flows of the teacher of ``benchmarks/fast_sampler.py``: the cost does not depend on
the weights), and each flow's ratio to the affine student measured in the same round. On a
loaded machine the CPU seconds and their ratios move less than the wall-clock ones; the
affine student's idle time (``benchmarks/results/sampling_student_idle.md``) times the
ratio estimates a flow's idle time.

Flows: the affine student (``distil()``'s default), the spline student (``family="spline"``:
the teacher's networks read in the sampling direction) drawing with the parameters-first
spline and with the bins-last one (``--old-kernel``-style comparison, same weights), a
student of new 4-bin spline networks, and RealNVP of the same widths.

    OMP_NUM_THREADS=1 PYTHONPATH=.:benchmarks python benchmarks/fast_sampler_student_timing.py
"""

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, "benchmarks")
from amortized import TASKS
from fast_sampler_variant_teacher import load_teacher

import pyroflows as pf
from pyroflows.amortized.estimator import sample_chunks
from pyroflows.transforms import RQS, Affine, MaskedAutoregressive
from pyroflows.vi.distill import student_of

PARAMS_FIRST = MaskedAutoregressive._params_first


def timed(flow, context, params_first=True):
    """(wall, CPU) seconds of 1 000 draws for each row of ``context``."""
    MaskedAutoregressive._params_first = PARAMS_FIRST if params_first else lambda self: False
    try:
        with torch.inference_mode():
            wall, cpu = time.perf_counter(), time.process_time()
            sample_chunks(flow, context, 1000, lambda t: t)
            return time.perf_counter() - wall, time.process_time() - cpu
    finally:
        MaskedAutoregressive._params_first = PARAMS_FIRST


p = argparse.ArgumentParser()
p.add_argument("--tasks", nargs="+", default=["slcp", "linear_gaussian"])
p.add_argument("--repeats", type=int, default=2)
args = p.parse_args()
torch.set_num_threads(2)
for name in args.tasks:
    task = TASKS[name]()
    post = load_teacher(name, task)
    teacher = post.estimator.flow
    torch.manual_seed(7)
    x = task.simulate(task.prior.sample((1000,)))
    context = post._context(post.observations.check(x)[0])
    flows = {
        "affine": (student_of(teacher, None, Affine()), True),
        "spline": (student_of(teacher), True),
        "spline, bins-last kernel": (student_of(teacher), False),
        "spline 4 bins, new networks": (student_of(teacher, None, RQS(4, 5.0)), True),
        "realnvp": (pf.realnvp(teacher.dim, teacher.context_dim), True),
    }
    for flow, first in flows.values():
        timed(flow.eval(), context[:10], first)  # warm-up
    best = {}
    load = os.getloadavg()[0]
    for _ in range(args.repeats):  # rounds: every flow once per round, in the same conditions
        for key, (flow, first) in flows.items():
            wall, cpu = timed(flow, context, first)
            if key not in best or wall < best[key][0]:
                best[key] = (wall, cpu)
    for key, (wall, cpu) in best.items():
        ratio_wall, ratio_cpu = wall / best["affine"][0], cpu / best["affine"][1]
        print(f"{name} | {key} | {wall:.2f} | {cpu:.2f} | {ratio_wall:.2f} | {ratio_cpu:.2f} | "
              f"{load:.1f} -> {os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
