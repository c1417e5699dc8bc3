r"""Is the maximum-likelihood objective what costs a box prior's posterior its faces?

With ``intervals="box"`` the flow ``q(z | x)`` lives on the whole real line and is trained
by maximum likelihood on simulations that all lie in the box ``B``; its draws are then
truncated to ``B`` (rejection), so the posterior it reports is ``q_B = q 1_B / Q(B | x)``.
Maximum likelihood minimises ``E[-log q] = E[-log q_B] - E[log Q(B | x)]``: it trades the
shape of ``q_B`` for mass inside the box, and squeezes the density away from the faces. The
likelihood of the truncated model is ``E[-log q + log Q(B | x)]``, whose gradient adds
``E_{q_B}[grad log q]`` (the score of the flow's own draws inside the box).

This probe fits the default spline member (``flow="nsf"``, seed ``--seed``) on the harness's
simulations (``benchmarks/sbibm_diagnose.py``'s), then continues from its best state with
the truncated likelihood for ``--epochs`` epochs (Adam, ``--lr``; ``--draws`` of the flow's
draws per row for the score term; the state with the lowest truncated validation NLL kept,
``Q(B | x)`` counted from 20 draws per validation row) and prints, for both states, the
validation losses, C2ST, KL (``sbibm_diagnose``) and the share of draws at the faces.

Command::

    OMP_NUM_THREADS=1 python benchmarks/box_truncation_probe.py gaussian_linear_uniform
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
import amortized as harness  # noqa: E402
import sbibm_diagnose  # noqa: E402

from pyroflows.amortized import AmortizedPosterior  # noqa: E402
from pyroflows.diagnostics import c2st  # noqa: E402

#: the flow's draws per validation row that count its mass inside the box
VAL_DRAWS = 20


def box_in_flow_space(post: AmortizedPosterior, low: torch.Tensor, high: torch.Tensor):
    """The box's faces in the flow's (standardised) coordinates; an error unless the map is
    the box's own affine standardisation (``intervals="box"``)."""
    eps = 1e-9 * (high - low)
    z_low = post._encode_theta((low + eps)[None].double())[0][0]
    z_high = post._encode_theta((high - eps)[None].double())[0][0]
    if not bool((z_low < z_high).all()):
        raise ValueError("the flow's coordinates are not an increasing map of the box")
    return z_low.float(), z_high.float()


def truncated_loss(est, z, x, z_low, z_high, draws: int):
    """Surrogate whose gradient is that of ``mean(-log q(z | x) + log Q(B | x))``; also returns
    the share of the score draws inside the box."""
    context = est.summary(x)
    log_q = est.flow.log_prob(z, context, check=False)
    with torch.no_grad():
        zs = est.flow.sample((draws,), context)  # (draws, B, D)
        inside = ((zs >= z_low) & (zs <= z_high)).all(-1)
    flat = zs.reshape(-1, zs.shape[-1])
    log_qs = est.flow.log_prob(flat, context.repeat(draws, 1), check=False).reshape(draws, -1)
    weight = inside.float() / inside.float().sum(0).clamp(min=1)  # self-normalised per row
    score = (weight * log_qs).sum(0)
    return (-log_q + score).mean(), float(inside.float().mean())


@torch.no_grad()
def truncated_nll(est, z, x, z_low, z_high) -> tuple[float, float]:
    """(mean -log q_B(z | x) with Q(B | x) counted from VAL_DRAWS draws, mean -log q)."""
    context = est.summary(x)
    log_q = est.flow.log_prob(z, context, check=False)
    zs = est.flow.sample((VAL_DRAWS,), context)
    mass = ((zs >= z_low) & (zs <= z_high)).all(-1).double().mean(0).clamp(min=0.5 / VAL_DRAWS)
    return float((-log_q.double() + mass.log()).mean()), float(-log_q.mean())


def score(post, task, labels, x_obs, refs, box, no_c2st: bool = False) -> dict:
    rows = []
    for k, label in enumerate(labels):
        torch.manual_seed(3000 + k)  # the harness's draws
        draws = post.sample(x_obs[k], 1000)
        accuracy = float("nan")
        if not no_c2st:
            accuracy = c2st(draws.numpy(), refs[k].numpy(), folds=5, n_bootstrap=0).accuracy
        log_q = post.log_prob(refs[k], x_obs[k]).double()
        row = sbibm_diagnose._row(task, label, accuracy, log_q, refs[k], x_obs[k])
        row["edge"] = [round(sbibm_diagnose.edge_fraction(d, *box), 3) for d in (draws, refs[k])]
        rows.append(row)
    out = dict(observations=rows)
    for key in ("c2st", "ref_nll", "kl"):
        out[key] = float(np.mean([r[key] for r in rows]))
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("task", choices=sorted(harness.SBIBM))
    parser.add_argument("--budget", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--draws", type=int, default=4)
    parser.add_argument("--no-c2st", action="store_true", help="KL and faces only")
    args = parser.parse_args(argv)
    task = harness.SBIBM[args.task]()
    box = sbibm_diagnose._box(task)
    if box is None:
        parser.error(f"{args.task} has no box prior")
    labels, x_obs, refs = harness._observations(
        argparse.Namespace(split="development", observations=5), task, 1000
    )
    torch.manual_seed(args.budget)
    theta = task.prior.sample((args.budget,))
    x = task.simulate(theta)
    torch.manual_seed(0)
    post = AmortizedPosterior(prior=task.prior, simulator=task.simulate, flow="nsf",
                              intervals="box")  # fmt: skip
    load, cpu = os.getloadavg()[0], time.process_time()
    post.fit(theta, x, progress=False, seed=args.seed)
    # the fit's split (recipe.fit_offline): the same permutation of the same rows
    n_val = len(theta) // 10
    order = torch.randperm(len(theta), generator=torch.Generator().manual_seed(args.seed))
    val, train = order[:n_val], order[n_val:]
    z, xe = post._training_tensors(theta[train], x[train])
    z_val, x_val = post._training_tensors(theta[val], x[val])
    est = post.estimator
    z_low, z_high = box_in_flow_space(post, *box)
    result = dict(task=args.task, seed=args.seed, epochs=args.epochs, lr=args.lr,
                  draws=args.draws, fit_best_val=post.history.best_loss)  # fmt: skip
    result["before"] = score(post, task, labels, x_obs, refs, box, args.no_c2st)
    torch.manual_seed(args.seed)
    best = truncated_nll(est, z_val, x_val, z_low, z_high)
    best_state = {k: v.detach().clone() for k, v in est.state_dict().items()}
    log = [dict(epoch=0, val_truncated=best[0], val_nll=best[1])]
    optimiser = torch.optim.Adam(est.parameters(), lr=args.lr)
    generator = torch.Generator().manual_seed(args.seed)
    for epoch in range(1, args.epochs + 1):
        est.train()
        shares = []
        for rows in torch.randperm(len(z), generator=generator).split(200):
            loss, share = truncated_loss(est, z[rows], xe[rows], z_low, z_high, args.draws)
            optimiser.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(est.parameters(), 5.0)
            optimiser.step()
            shares.append(share)
        est.eval()
        now = truncated_nll(est, z_val, x_val, z_low, z_high)
        log.append(dict(epoch=epoch, val_truncated=now[0], val_nll=now[1],
                        inside=float(np.mean(shares))))  # fmt: skip
        print(json.dumps(log[-1]), flush=True)
        if now[0] < best[0]:
            best = now
            best_state = {k: v.detach().clone() for k, v in est.state_dict().items()}
    est.load_state_dict(best_state)
    result["log"] = log
    result["after"] = score(post, task, labels, x_obs, refs, box, args.no_c2st)
    result["cpu_s"] = time.process_time() - cpu
    result["load"] = (load + os.getloadavg()[0]) / 2
    for key in ("before", "after"):
        r = result[key]
        print(f"{key}: C2ST {r['c2st']:.3f}, KL {r['kl']:.4f}, per observation "
              + "; ".join(f"{o['c2st']:.3f}/{o['kl']:.3f}/edge {o['edge'][0]} "
                          f"(ref {o['edge'][1]})" for o in r["observations"]))  # fmt: skip
    print(f"cpu {result['cpu_s']:.0f} s, load {result['load']:.1f}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
