"""Variants of the distilled sampler on the development observations (1-3) only.

The teacher is the one of ``benchmarks/fast_sampler.py`` (nsf, 3 000 simulations, seed 0, 20
epochs), fitted once and kept in ``$FAST_SAMPLER_TEACHERS`` (default /tmp); the student is
trained on 3 000 fresh simulations (seed 1, 10 % held out) with the options given, and its draws
are compared with the teacher's by C2ST (gradient boosting, 1 000 draws each, the seeds of
``benchmarks/fast_sampler.py``). Also printed: both KL divergences on the held-out contexts and
at the three observations. ``--floor`` compares the teacher with itself (other seeds).
``--uni same`` keeps the teacher's spline networks (copied, read in the sampling direction);
``--uni rqs`` / ``rqs4`` gives new spline networks of 8 / 4 bins (teacher's widths, starting
as the identity);
``--layers`` builds a fresh affine student of that many layers; ``--mixed`` swaps layers for
splines (``rqsK``: K bins). One JSON row per run, e.g.::

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/fast_sampler_variants.py slcp --fixed
"""

import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, "benchmarks")
from amortized import TASKS
from fast_sampler_variant_teacher import load_teacher

from pyroflows.amortized.fast_sampler import OBJECTIVES, _contexts
from pyroflows.amortized.simulate import check_training
from pyroflows.diagnostics import c2st
from pyroflows.train.seeding import seeded
from pyroflows.transforms import RQS, Affine
from pyroflows.vi.distill import distill

p = argparse.ArgumentParser()
p.add_argument("task")
p.add_argument("--uni", default="affine")
p.add_argument("--objective", default="both")
p.add_argument("--hidden", default=None)
p.add_argument("--epochs", type=int, default=30)
p.add_argument("--sims", type=int, default=3000)
p.add_argument("--lr", type=float, default=1e-3)
p.add_argument("--weights", default=None)
p.add_argument("--kl", type=float, default=None)
p.add_argument("--batch", type=int, default=256)
p.add_argument("--time", action="store_true")
p.add_argument("--floor", action="store_true")
p.add_argument("--patience", type=int, default=8)
p.add_argument("--schedule", default=None)
p.add_argument("--layers", type=int, default=None)
p.add_argument("--fixed", action="store_true")
p.add_argument("--mixed", default=None)
p.add_argument(
    "--reference", action="store_true", help="linear_gaussian: C2ST against the exact posterior"
)
a = p.parse_args()
task = TASKS[a.task]()
post = load_teacher(a.task, task)
torch.manual_seed(100)
x_obs = task.simulate(task.prior.sample((5,)))[:3]
load0 = os.getloadavg()[0]


def c2st_against_teacher(sampler: str) -> list[float]:
    """C2ST of the teacher's draws against ``sampler``'s, per development observation."""
    return [
        float(
            c2st(
                post.sample(x, 1000, sampler="teacher", seed=2 + i).numpy(),
                post.sample(x, 1000, sampler=sampler, seed=50 + i).numpy(),
                classifier="hgb",
                n_bootstrap=0,
            ).accuracy
        )
        for i, x in enumerate(x_obs)
    ]


if a.floor:
    s = c2st_against_teacher("teacher")
    print(json.dumps(dict(task=a.task, variant="teacher-vs-teacher", c2st=s)))
    sys.exit()
weights, kl = OBJECTIVES[a.objective]
if a.weights:
    weights = json.loads(a.weights)
if a.kl is not None:
    kl = a.kl
with seeded(1):
    theta, x = post._simulate_many(a.sims)
    theta, x, _ = check_training(theta, x, post.space, post.observations)
    z, ctx = _contexts(post, theta, x)
    n_val = int(round(len(theta) * 0.1))
    uni = {"affine": Affine(), "rqs": RQS(8, 5.0), "rqs4": RQS(4, 5.0), "same": None}[a.uni]
    hidden = tuple(int(h) for h in a.hidden.split(",")) if a.hidden else None
    t = time.perf_counter()
    opts = dict(
        max_epochs=a.epochs,
        batch_size=a.batch,
        lr=a.lr,
        patience=a.patience,
        progress=False,
        seed=1,
    )
    if a.schedule:
        opts["schedule"] = a.schedule
    if a.fixed:
        opts.update(patience=None, schedule="cosine")
    if a.layers:
        import copy

        from pyroflows.builders import autoregressive_flow
        from pyroflows.vi.distill import DistillationLoss

        D = sys.modules["pyroflows.vi.distill"]
        _m = D._mse
        D._mse = lambda u, v: _m(u, v) if len(u) == len(v) else torch.zeros(())
        D._comparable = lambda u, v: False
        from pyroflows.train import fit

        frozen = copy.deepcopy(post.estimator.flow).eval().requires_grad_(False)
        student = autoregressive_flow(
            frozen.dim,
            uni or Affine(),
            frozen.context_dim,
            a.layers,
            hidden or (64, 64),
            inverse=True,
            lu=True,
        )
        if a.mixed:
            from pyroflows.transforms import MaskedAutoregressive

            kinds = a.mixed.split(",")
            k = 0
            for i, tr in enumerate(student.transforms):
                if isinstance(tr, MaskedAutoregressive):
                    if kinds[k].startswith("rqs"):
                        student.transforms[i] = MaskedAutoregressive(
                            tr.dim,
                            RQS(int(kinds[k][3:]), 5.0),
                            tr.context_dim,
                            hidden or (64, 64),
                            tr.net.degrees.clone(),
                            inverse=True,
                        )
                    k += 1
        loss = DistillationLoss(frozen, weights | {"hidden": 0.0, "params": 0.0}, kl)
        student.history = fit(
            student, loss, (z[n_val:], ctx[n_val:]), (z[:n_val], ctx[:n_val]), **opts
        )
    else:
        student = distill(
            post.estimator.flow,
            (z[n_val:], ctx[n_val:]),
            (z[:n_val], ctx[:n_val]),
            weights=weights,
            kl_weight=kl,
            univariate=uni,
            hidden=hidden,
            **opts,
        )
    dt = time.perf_counter() - t
post.student = student.eval().requires_grad_(False)


def kls(teacher, student, context, draws=200):
    with torch.no_grad():
        xs, log_q = student.rsample_and_log_prob((draws,), context)
        rev = (log_q - teacher.log_prob(xs, context)).mean(0)
        y = teacher.sample((draws,), context)
        fwd = (teacher.log_prob(y, context) - student.log_prob(y, context)).mean(0)
    return round(float(rev.mean()), 4), round(float(fwd.mean()), 4), round(float(fwd.max()), 4)


kl_val = kls(post.estimator.flow, student, ctx[:n_val])


def kls_obs():
    c = post._context(post.observations.check(x_obs)[0])
    with torch.no_grad():
        xs, log_q = student.rsample_and_log_prob((2000,), c)
        rev = (log_q - post.estimator.flow.log_prob(xs, c)).mean(0)
        y = post.estimator.flow.sample((2000,), c)
        fwd = (post.estimator.flow.log_prob(y, c) - student.log_prob(y, c)).mean(0)
    return [round(float(v), 4) for v in rev], [round(float(v), 4) for v in fwd]


kl_obs = kls_obs()
s = c2st_against_teacher("student")
row = dict(
    task=a.task,
    variant=vars(a),
    distil_s=round(dt, 1),
    epochs=len(student.history.train_loss),
    val=[round(v, 4) for v in student.history.val_loss[-3:]]
    if getattr(student.history, "val_loss", None)
    else None,
    c2st=[round(v, 3) for v in s],
    kl_rev_fwd_fwdmax=kl_val,
    kl_obs_rev_fwd=kl_obs,
    load=round(load0, 1),
)
if a.reference:  # teacher and student against the exact posterior (linear_gaussian)
    ref = [
        (post.sample(x, 1000, sampler=k, seed=2 + i).numpy(), task.reference(x, 1000).numpy())
        for i, x in enumerate(x_obs)
        for k in ("teacher", "student")
    ]
    acc = [round(float(c2st(u, v, classifier="hgb", n_bootstrap=0).accuracy), 3) for u, v in ref]
    print(json.dumps(dict(teacher_vs_exact=acc[0::2], student_vs_exact=acc[1::2])), flush=True)
if a.time:
    torch.set_num_threads(2)
    torch.manual_seed(7)
    xb = task.simulate(task.prior.sample((1000,)))
    post.sample(xb[:10], 100, sampler="student")
    t = time.perf_counter()
    post.sample(xb, 1000, sampler="student", seed=0)
    row["student_1000x1000_s"] = round(time.perf_counter() - t, 2)
    t = time.perf_counter()
    post.sample(xb[:100], 1000, sampler="teacher", seed=0)
    row["teacher_100x1000_s"] = round(time.perf_counter() - t, 2)
    row["load_end"] = round(os.getloadavg()[0], 1)
print(json.dumps(row), flush=True)
