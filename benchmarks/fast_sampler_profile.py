"""Where a student's sampling time goes: one call of 1 000 observations x 1 000 draws
(10^6), split into the conditioner networks' products (matrix products), the rest of the
networks (input clamp, context bias, activations), the univariate maps (spline or affine
arithmetic) and everything else (base draws, learnt linear maps, chunking, decoding).

Students of the teacher of ``benchmarks/fast_sampler.py`` (``$FAST_SAMPLER_TEACHERS``),
untrained (the cost does not depend on the weights): the affine student (teacher's widths),
the spline student (the teacher's networks read in the sampling direction) and, with
``--hidden``, spline students of narrower new networks (``--equal-bins``: of
:class:`~pyroflows.transforms.EqualBinRQS` splines too, their bin found by arithmetic). One
thread, chunks in the calling thread (``workers=1``), so that the profiler's operator times
add up to the call; the fractions are those of the profiled call, the seconds are the same
call timed without the profiler (best of 2).

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/fast_sampler_profile.py --tasks slcp
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

sys.path.insert(0, str(Path(__file__).parent))
from amortized import TASKS  # noqa: E402
from fast_sampler_variant_teacher import load_teacher  # noqa: E402

from pyroflows.amortized.estimator import sample_chunks  # noqa: E402
from pyroflows.nn import MADE  # noqa: E402
from pyroflows.transforms import RQS, Affine, EqualBinRQS  # noqa: E402
from pyroflows.vi.distill import student_of  # noqa: E402

PRODUCTS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::matmul"}


def _scoped(fn, name):
    def wrapped(*args, **kwargs):
        with record_function(name):
            return fn(*args, **kwargs)

    return wrapped


def draw(flow, context):
    with torch.inference_mode():
        sample_chunks(flow, context, 1000, lambda t: t, workers=1)


def split(flow, context) -> dict[str, float]:
    """Fractions of the profiled call's CPU time: products, rest of the networks, maps,
    other."""
    patches = {
        (MADE, "forward_params_first"): MADE.forward_params_first,
        (MADE, "forward"): MADE.forward,
        (RQS, "value_params_first"): RQS.value_params_first,
        (RQS, "value"): RQS.value,
        (EqualBinRQS, "value_params_first"): EqualBinRQS.value_params_first,
        (Affine, "value"): Affine.value,
    }
    for (cls, name), fn in patches.items():
        setattr(cls, name, _scoped(fn, "network" if cls is MADE else "map"))
    try:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            with record_function("call"):
                draw(flow, context)
    finally:
        for (cls, name), fn in patches.items():
            setattr(cls, name, fn)
    events = prof.events()
    total = sum(e.cpu_time_total for e in events if e.name == "call")
    scope = {e.id: e.name for e in events if e.name in ("network", "map")}
    times: dict[str, float] = defaultdict(float)
    for e in events:  # self time of every operator, charged to its innermost scope
        if e.name in ("call", "network", "map") or not e.name.startswith("aten::"):
            continue
        parent, owner = e.cpu_parent, "other"
        while parent is not None:
            if parent.id in scope:
                owner = scope[parent.id]
                break
            parent = parent.cpu_parent
        if owner == "network":
            owner = "products" if e.name in PRODUCTS else "network rest"
        times[owner] += e.self_cpu_time_total
    times["other"] += total - sum(times.values())  # python, allocation outside aten ops
    return {k: times[k] / total for k in ("products", "network rest", "map", "other")}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tasks", nargs="+", default=["slcp", "linear_gaussian"])
    p.add_argument("--hidden", nargs="*", default=["32,32", "32"])
    p.add_argument("--equal-bins", action="store_true", help="EqualBinRQS(8) students too")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    print("| task | student | s per 10^6 draws (1 thread) | products | network rest | map | "
          "other | load |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for name in args.tasks:
        task = TASKS[name]()
        post = load_teacher(name, task)
        teacher = post.estimator.flow
        torch.manual_seed(7)
        x = task.simulate(task.prior.sample((1000,)))
        context = post._context(post.observations.check(x)[0])
        flows = {"affine, teacher's widths": student_of(teacher, None, Affine()),
                 "spline, teacher's networks": student_of(teacher)}  # fmt: skip
        for h in args.hidden:
            sizes = tuple(int(v) for v in h.split(","))
            flows[f"spline, new networks {sizes}"] = student_of(teacher, sizes, RQS(8, 5.0))
            if args.equal_bins:
                flows[f"equal-bin spline, new networks {sizes}"] = student_of(
                    teacher, sizes, EqualBinRQS(8, 5.0)
                )
        for key, flow in flows.items():
            flow.eval()
            draw(flow, context[:10])
            load = os.getloadavg()[0]
            best = float("inf")
            for _ in range(2):
                start = time.process_time()
                draw(flow, context)
                best = min(best, time.process_time() - start)
            f = split(flow, context)
            print(f"| {name} | {key} | {best:.2f} | {f['products']:.0%} | "
                  f"{f['network rest']:.0%} | {f['map']:.0%} | {f['other']:.0%} | "
                  f"{load:.1f} -> {os.getloadavg()[0]:.1f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
