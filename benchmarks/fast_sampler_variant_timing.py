"""Sampling cost of student architectures for the teacher of ``benchmarks/fast_sampler.py``:
1 000 observations x 1 000 draws (the teacher 100 x 1 000, scaled), one thread, wall-clock and
CPU seconds per 10^6 draws; untrained students (the cost does not depend on the weights).

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/fast_sampler_variant_timing.py slcp
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
from pyroflows.transforms import RQS, Affine
from pyroflows.vi.distill import student_of

name = sys.argv[1]
n_obs = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
task = TASKS[name]()
post = load_teacher(name, task)
teacher = post.estimator.flow
torch.manual_seed(7)
xb = task.simulate(task.prior.sample((n_obs,)))
ctx = post._context(post.observations.check(xb)[0])
flows = {
    "teacher": teacher,
    "affine64": student_of(teacher, None, Affine()),
    "affine32": student_of(teacher, (32, 32), Affine()),
    "rqs64": student_of(teacher),
    "rqs32": student_of(teacher, (32, 32), RQS(8, 5.0)),
    "rqs32b4": student_of(teacher, (32, 32), RQS(4, 5.0)),
    "realnvp64": pf.realnvp(teacher.dim, teacher.context_dim),
}
torch.set_num_threads(1)
print(name, "load", os.getloadavg()[0])
for k, f in flows.items():
    f.eval()
    with torch.inference_mode():
        sample_chunks(f, ctx[:10], 100, lambda t: t, workers=1)
        w, c = time.perf_counter(), time.process_time()
        sample_chunks(f, ctx, 1000 if k != "teacher" else 100, lambda t: t, workers=1)
        w, c = time.perf_counter() - w, time.process_time() - c
    s = 10 if k == "teacher" else 1
    print(f"{k:10s} wall {w * s:6.2f} cpu {c * s:6.2f} (per 1e6 draws)", flush=True)
