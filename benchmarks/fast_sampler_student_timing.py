"""Sampling time of the affine student against RealNVP of the same widths, same process, 2
threads: 1 000 observations x 1 000 draws, best of 3, wall-clock and CPU seconds (untrained
flows; the cost does not depend on the weights). The ratio to RealNVP carries over to an idle
machine, where ``benchmarks/results/sampling.md`` has RealNVP's own time.

    OMP_NUM_THREADS=1 PYTHONPATH=.:benchmarks python benchmarks/fast_sampler_student_timing.py
"""

import os
import sys
import time

import torch

sys.path.insert(0, "benchmarks")
from amortized import TASKS
from fast_sampler_variant_teacher import load_teacher

import pyroflows as pf
from pyroflows.amortized.estimator import sample_chunks
from pyroflows.transforms import Affine
from pyroflows.vi.distill import student_of


def best_of(flow, context, repeats=3):
    best = None
    with torch.inference_mode():
        sample_chunks(flow, context[:10], 100, lambda t: t)
        for _ in range(repeats):
            wall, cpu = time.perf_counter(), time.process_time()
            sample_chunks(flow, context, 1000, lambda t: t)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            best = (wall, cpu) if best is None or wall < best[0] else best
    return best


torch.set_num_threads(2)
for name in ("slcp", "linear_gaussian"):
    task = TASKS[name]()
    post = load_teacher(name, task)
    teacher = post.estimator.flow
    torch.manual_seed(7)
    x = task.simulate(task.prior.sample((1000,)))
    context = post._context(post.observations.check(x)[0])
    flows = {
        "affine64": student_of(teacher, None, Affine()),
        "affine32": student_of(teacher, (32, 32), Affine()),
        "realnvp64": pf.realnvp(teacher.dim, teacher.context_dim),
    }
    for key, flow in flows.items():
        wall, cpu = best_of(flow.eval(), context)
        print(f"{name} {key} wall {wall:.2f} cpu {cpu:.2f} load {os.getloadavg()[0]:.1f}")
