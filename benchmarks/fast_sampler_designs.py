"""Student designs for the fast sampler: fidelity on the development observations and
sampling time against the affine student, for the teachers of ``benchmarks/fast_sampler.py``.

Designs (``DESIGN``, new networks of hidden sizes ``H``, comma separated, unless said):

* ``affine:H``: affine IAF (``affine:t``: the teacher's widths, ``distil()``'s affine family);
* ``iaf:K:H``: spline IAF of ``K``-bin splines in every layer (``iaf:t:t``: the teacher's
  networks and splines read in the sampling direction, the spline family);
* ``eq:K:H``: IAF of ``K``-bin equal-width-bin splines (:class:`~pyroflows.transforms.EqualBinRQS`:
  the bin found by arithmetic) in every layer, new networks;
* ``pat:K:H:P``: one letter of ``P`` per autoregressive layer of the teacher, ``s`` a
  ``K``-bin spline, ``e`` a ``K``-bin equal-width-bin spline, ``a`` affine
  (``pat:8:32:aaaas``: ``distil(family="mixed")``);
* ``coupling:K:H`` (timing only): spline coupling layers with alternating halves in place of
  the autoregressive ones.

Fidelity (``--train``): the student is distilled on 3 000 fresh simulations (seed 1, 10 % held
out) with ``distil()``'s objective (``both``: MSE terms + reverse KL; the per-layer value term
kept where the student has the teacher's layers, the parameter term dropped where its maps
differ), ``--epochs`` epochs with a cosine decay, batch 256, lr 1e-3, no early stopping; then
C2ST (gradient boosting, 5 folds) of 1 000 student against 1 000 teacher draws at the
development observations 1-3 (the seeds of ``benchmarks/fast_sampler.py``), and both KL
divergences on 256 held-out contexts. Prints one JSON row. The trained student is kept next
to the teachers (``$FAST_SAMPLER_TEACHERS``) for ``--confirm``: C2ST at the confirmation
observations 4-5 (seeds as in ``benchmarks/fast_sampler.py``), to be run once, for the design
chosen on the development ones.

Timing (``--time``): every design untrained (the cost does not depend on the weights), 1 000
observations x 1 000 draws in one call, 2 threads, best of 2 rounds (each design once per
round), wall-clock and process CPU seconds and both ratios to the affine student of the
teacher's widths measured in the same round.

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/fast_sampler_designs.py slcp --train \\
        pat:8:32:saaas --epochs 80
    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/fast_sampler_designs.py slcp --time \\
        affine:t iaf:t:t pat:8:32:saaas
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from amortized import TASKS  # noqa: E402
from fast_sampler_variant_teacher import load_teacher  # noqa: E402

from pyroflows.amortized.estimator import sample_chunks  # noqa: E402
from pyroflows.amortized.fast_sampler import OBJECTIVES, _contexts, divergences  # noqa: E402
from pyroflows.amortized.simulate import check_training  # noqa: E402
from pyroflows.diagnostics import c2st  # noqa: E402
from pyroflows.flows import Flow  # noqa: E402
from pyroflows.train import fit  # noqa: E402
from pyroflows.train.seeding import seeded  # noqa: E402
from pyroflows.transforms import (  # noqa: E402
    RQS,
    Affine,
    Coupling,
    EqualBinRQS,
    MaskedAutoregressive,
)
from pyroflows.transforms.coupling import alternating_mask  # noqa: E402
from pyroflows.vi.distill import DistillationLoss, student_of  # noqa: E402


def build(teacher: Flow, design: str) -> Flow:
    """The untrained student of ``design`` (see the module's docstring)."""
    kind, *rest = design.split(":")
    sizes = rest[0] if kind == "affine" else rest[1]
    hidden = None if sizes == "t" else tuple(int(v) for v in sizes.split(","))
    if kind == "affine":
        return student_of(teacher, hidden, Affine())
    bins = rest[0]
    spline = None if bins == "t" else RQS(int(bins), 5.0)
    if kind == "iaf":
        return student_of(teacher, hidden, spline)
    if kind == "eq":
        return student_of(teacher, hidden, EqualBinRQS(int(bins), 5.0))
    if kind == "pat":
        letters = {"s": spline, "a": Affine(), "e": EqualBinRQS(int(bins), 5.0)}
        return student_of(teacher, hidden, [letters[c] for c in rest[2]])
    if kind == "coupling":
        layers, k = [], 0
        for t in teacher.transforms:
            if isinstance(t, MaskedAutoregressive):
                layers.append(Coupling(t.dim, spline, t.context_dim, hidden or (64, 64),
                                       alternating_mask(t.dim, k)))  # fmt: skip
                k += 1
            else:
                layers.append(copy.deepcopy(t))
        return Flow(layers, copy.deepcopy(teacher.base), teacher.context_dim)
    raise ValueError(f"unknown design {design!r}")


def _kept(task_name: str, design: str, epochs: int) -> Path:
    folder = Path(os.environ.get("FAST_SAMPLER_TEACHERS", "/tmp"))
    return folder / f"fast_sampler_student_{task_name}_{design.replace(':', '_')}_{epochs}.pt"


def _c2st(post, task, which: slice) -> list[float]:
    """C2ST of 1 000 student against 1 000 teacher draws at the observations ``which`` of
    the five of ``benchmarks/fast_sampler.py`` (seed 100), with its seeds."""
    torch.manual_seed(100)
    x_obs = task.simulate(task.prior.sample((5,)))
    return [
        round(float(c2st(post.sample(x_obs[i], 1000, sampler="teacher", seed=2 + i).numpy(),
                         post.sample(x_obs[i], 1000, sampler="student", seed=50 + i).numpy(),
                         classifier="hgb", n_bootstrap=0).accuracy), 3)
        for i in range(5)[which]
    ]  # fmt: skip


def confirm(post, task, task_name: str, design: str, epochs: int) -> dict:
    """C2ST at the confirmation observations 4-5 of the student ``--train`` kept."""
    path = _kept(task_name, design, epochs)
    if not path.exists():
        raise SystemExit(f"no trained student at {path}: run --train {design} first")
    teacher = copy.deepcopy(post.estimator.flow).eval().requires_grad_(False)
    student = build(teacher, design)
    student.load_state_dict(torch.load(path, weights_only=True))
    post.student = student.eval().requires_grad_(False)
    load = os.getloadavg()[0]
    scores = _c2st(post, task, slice(3, 5))
    return dict(design=design, epochs=epochs, c2st_confirm=scores, mean=round(sum(scores) / 2, 3),
                load=f"{load:.1f} -> {os.getloadavg()[0]:.1f}")  # fmt: skip


def train(post, task, design: str, epochs: int, task_name: str = "") -> dict:
    teacher = copy.deepcopy(post.estimator.flow).eval().requires_grad_(False)
    student = build(teacher, design).requires_grad_(True)
    weights, kl = OBJECTIVES["both"]
    weights = dict(weights)
    if design.startswith("coupling"):  # other layers than the teacher's: no per-layer terms
        weights |= {"hidden": 0.0, "params": 0.0}
    maps_differ = not design.startswith("iaf:t:")
    if maps_differ:
        weights["params"] = 0.0
    load = os.getloadavg()[0]
    with seeded(1):
        theta, x = post._simulate_many(3000)
        theta, x, _ = check_training(theta, x, post.space, post.observations)
        z, ctx = _contexts(post, theta, x)
        n = int(round(len(theta) * 0.1))
        wall, cpu = time.perf_counter(), time.process_time()
        student.history = fit(student, DistillationLoss(teacher, weights, kl),
                              (z[n:], ctx[n:]), (z[:n], ctx[:n]), max_epochs=epochs,
                              batch_size=256, lr=1e-3, patience=None, schedule="cosine",
                              progress=False, seed=1)  # fmt: skip
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    post.student = student.eval().requires_grad_(False)
    if task_name:
        torch.save(post.student.state_dict(), _kept(task_name, design, epochs))
    div = divergences(teacher, post.student, ctx[:n][:256])
    scores = _c2st(post, task, slice(0, 3))  # the development observations
    return dict(design=design, epochs=epochs, c2st_dev=scores,
                mean=round(sum(scores) / 3, 3), divergence={k: round(v, 4) for k, v in div.items()},
                distil_wall_s=round(wall, 1), distil_cpu_s=round(cpu, 1),
                load=f"{load:.1f} -> {os.getloadavg()[0]:.1f}")  # fmt: skip


def draw(flow: Flow, context) -> None:
    with torch.inference_mode():
        sample_chunks(flow, context, 1000, lambda t: t)


def timing(post, task, designs: list[str]) -> list[dict]:
    teacher = post.estimator.flow
    torch.manual_seed(7)
    x = task.simulate(task.prior.sample((1000,)))
    context = post._context(post.observations.check(x)[0])
    flows = {"affine:t": build(teacher, "affine:t")}
    for d in designs:
        flows[d] = build(teacher, d)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for f in flows.values():
            draw(f.eval(), context[:10])  # warm-up
        load = os.getloadavg()[0]
        best: dict[str, tuple[float, float]] = {}
        for _ in range(2):
            for key, f in flows.items():
                wall, cpu = time.perf_counter(), time.process_time()
                draw(f, context)
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                if key not in best or wall < best[key][0]:
                    best[key] = (wall, cpu)
    finally:
        torch.set_num_threads(threads)
    ref = best["affine:t"]
    return [dict(design=k, wall_s=round(w, 2),
                 cpu_s=round(c, 2), wall_ratio=round(w / ref[0], 2), cpu_ratio=round(c / ref[1], 2),
                 load=f"{load:.1f} -> {os.getloadavg()[0]:.1f}")
            for k, (w, c) in best.items()]  # fmt: skip


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("task", choices=["slcp", "linear_gaussian"])
    p.add_argument("designs", nargs="+")
    p.add_argument("--train", action="store_true")
    p.add_argument("--time", action="store_true")
    p.add_argument("--confirm", action="store_true", help="observations 4-5: run once")
    p.add_argument("--epochs", type=int, default=40)
    args = p.parse_args(argv)
    task = TASKS[args.task]()
    post = load_teacher(args.task, task)
    if args.train:
        for d in args.designs:
            row = train(post, task, d, args.epochs, args.task)
            print(json.dumps(dict(task=args.task, **row)), flush=True)
    if args.confirm:
        for d in args.designs:
            row = confirm(post, task, args.task, d, args.epochs)
            print(json.dumps(dict(task=args.task, **row)), flush=True)
    if args.time:
        for row in timing(post, task, args.designs):
            print(json.dumps(dict(task=args.task, **row)), flush=True)


if __name__ == "__main__":
    main()
