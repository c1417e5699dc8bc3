r"""Amortized posteriors: pyroflows' ``AmortizedPosterior`` against sbi's NPE with an NSF.

Measures the targets of issue 9 in one run and writes ``benchmarks/results/amortized.md`` and
``amortized.json`` (full run):

1. **Accuracy at a fixed simulation budget** (1 000 and 10 000 simulations) on three standard
   SBI problems, simulators written here after the sbibm definitions:

   * ``two_moons``: prior U(-1, 1)^2; ``a ~ U(-pi/2, pi/2)``, ``r ~ N(0.1, 0.01^2)``,
     ``p = (r cos a + 0.25, r sin a)``, ``x = p + (-|t1 + t2| / sqrt 2, (-t1 + t2) / sqrt 2)``.
     Reference: **exact** sampling. Given ``x``, draw ``p`` from its distribution; the map
     ``t -> (|t1 + t2|, t2 - t1) / sqrt 2`` is two-to-one with a constant Jacobian, so choose one
     of the two preimages of ``x - p`` at random and reject it when it leaves the prior box.
   * ``linear_gaussian``: 10-D, prior N(0, 0.1 I), ``x ~ N(t, 0.1 I)``. Reference: the
     analytic posterior N(x / 2, 0.05 I).
   * ``slcp``: prior U(-3, 3)^5, four i.i.d. 2-D draws from N((t1, t2), S) with standard
     deviations ``t3^2, t4^2`` and correlation ``tanh(t5)`` (x is 8-D). Reference: random-walk
     Metropolis on the exact log-posterior (256 chains started around the data-generating
     parameter, scale adapted during 2 000 burn-in steps, 4 000 kept steps thinned by 4),
     then the exact symmetry of the posterior (the likelihood depends on ``t3, t4`` only
     through their squares) is applied by flipping their signs at random, which covers the
     four modes that a local sampler cannot cross. The split R-hat of the chains is recorded.

   Both methods get the same simulations. ``sbi NPE-NSF``: ``posterior_nn("nsf",
   hidden_features=50, num_transforms=5, num_bins=10)`` with sbi's default z-scoring and
   ``train()`` defaults (batch 200, lr 5e-4, 10 % validation, stop after 20 epochs without
   improvement, clip 5); its draws outside the prior are rejected (sbi's default).
   ``pyroflows``: ``AmortizedPosterior(prior=..., simulator=...).fit(theta=..., x=...)`` with
   the library's defaults (``flow="auto"``: an autoregressive NSF, 5 layers, hidden (64, 64),
   8 bins, and an affine coupling flow of the same size trained on the same split, the one
   with the lower validation loss kept; parameters with a box (uniform) prior in the box's own
   coordinates, draws outside it rejected (``intervals="box"``), the others mapped to the
   unconstrained space with ``biject_to``, all standardised; sbi's batch size, clipping and
   validation split, each family in two phases: lr 2e-3 until 10 epochs without progress,
   then 5e-4 decayed by a cosine over 100 epochs with a patience of 50). ``pyroflows nsf`` /
   ``pyroflows realnvp``: one family alone. ``pyroflows intervals=logit`` /
   ``pyroflows intervals=box``: the default with the box prior's parameters mapped by the
   logit or in the box's coordinates. The family kept and each family's validation loss are
   recorded. Accuracy: C2ST accuracy (:func:`pyroflows.diagnostics.c2st`, MLP classifier,
   5 folds) between 2 000 posterior draws and 2 000 reference draws, averaged over
   ``--observations`` observations per task (their parameters drawn from the prior with a
   fixed seed). 0.5 is perfect. Training time: wall time of the training call.

2. **Vectorised sampling**: posterior draws for 1 000 observations x 1 000 draws in one call
   (``post.sample(x (1000, ...), 1000)``), best of 3, with 2 threads and 1 thread, for the
   two-moons and linear-Gaussian posteriors trained on 10 000 simulations. sbi's
   ``sample_batched`` is timed the same way for comparison.

3. **SBC** of the two-moons and SLCP posteriors (10 000 simulations), pyroflows and sbi on
   the same 500 simulations, 100 draws each, the KS uniformity test of
   :func:`pyroflows.diagnostics.sbc` at the 1 % level (Bonferroni over the parameters), and
   the mean PIT per parameter (0.5 when calibrated).

4. **The sbibm suite** (``--suite sbibm``, accuracy only, writes ``results/sbibm.{md,json}``):
   the eight sbibm tasks without Julia simulators (``benchmarks/sbibm_tasks.py``: simulators
   and priors written after sbibm 1.1, observations and reference draws read from sbibm's
   files, each port checked against them by ``tests/test_sbibm_tasks.py``). Observations 1-5
   are the development split, 6-10 the confirmation split (``--split confirmation``, run
   once). Reference: ``--c2st-draws`` of sbibm's 10 000 reference draws per observation
   (a fixed random subset). Methods at their defaults on the same simulations: ``pyroflows``,
   ``sbi NPE-NSF`` (above), ``sbi FMPE`` and ``sbi NPSE`` (``FMPE(prior)`` / ``NPSE(prior)``,
   ``train()`` defaults, ``build_posterior()``; sbi rejects draws outside the prior as for
   NPE). Per row: C2ST, training time, the time of one ``sample`` call for one observation,
   and the fraction of returned draws where the prior's log-density is not finite.
   ``--time-cap SECONDS`` caps every method's training the same way (sbi's trainers stop at
   the first epoch end past it, pyroflows gets it as ``fit(time_budget=...)``; each keeps
   its best validation weights; the row says ``time_capped``).
   ``--export DIR`` writes each budget's simulations and observations to
   ``DIR/{task}_{budget}.npz``, for peers that need their own environment (BayesFlow 2.1
   requires Python >= 3.12).

Commands::

    .venv/bin/python benchmarks/amortized.py --quick   # < 1 min: one budget, one observation
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/amortized.py   # full run, writes results/
    # the spread over training seeds of one task and budget, accuracy only:
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/amortized.py --tasks two_moons \
        --budgets 10000 --methods pyroflows "sbi NPE-NSF" --seeds 0 1 2 3 4 --accuracy-only \
        --out benchmarks/results/seeds
    # sbibm, development observations 1-5, pyroflows against sbi NPE, FMPE and NPSE:
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/amortized.py --suite sbibm --budgets 1000 \
        --methods pyroflows "sbi NPE-NSF" "sbi FMPE" "sbi NPSE" --c2st-draws 1000 --merge
    # several result files into one report:
    .venv/bin/python benchmarks/sbibm_report.py a/sbibm.json b/sbibm.json \
        --out benchmarks/results/sbibm

Timings depend on the machine's load (recorded in the JSON); the load average at the start is
printed.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import platform
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pyroflows.amortized import AmortizedPosterior  # noqa: E402
from pyroflows.diagnostics import c2st, sbc  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sbibm_report  # noqa: E402
import sbibm_tasks  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


# -- tasks ----------------------------------------------------------------------------------
class TwoMoons:
    name, dim = "two_moons", 2

    def __init__(self):
        self.prior = dist.Uniform(-torch.ones(2), torch.ones(2)).to_event(1)

    @staticmethod
    def _p(n, shape=()):
        a = (torch.rand(n, *shape) - 0.5) * math.pi
        r = 0.1 + 0.01 * torch.randn(n, *shape)
        return torch.stack([r * torch.cos(a) + 0.25, r * torch.sin(a)], -1)

    def simulate(self, theta):
        p = self._p(len(theta))
        t1, t2 = theta[:, 0], theta[:, 1]
        shift = torch.stack([-(t1 + t2).abs(), -t1 + t2], -1) / math.sqrt(2)
        return p + shift

    def reference(self, x_obs, n):
        out, total = [], 0
        while total < n:
            u = x_obs - self._p(20 * n)  # u = (-|t1 + t2|, t2 - t1) / sqrt 2
            s = -u[:, 0] * math.sqrt(2)  # |t1 + t2|, must be >= 0
            d = u[:, 1] * math.sqrt(2)  # t2 - t1
            sign = torch.where(torch.rand(len(u)) < 0.5, -1.0, 1.0)
            t1, t2 = (sign * s - d) / 2, (sign * s + d) / 2
            theta = torch.stack([t1, t2], -1)
            keep = (s >= 0) & (theta.abs() < 1).all(-1)
            out.append(theta[keep])
            total += int(keep.sum())
        return torch.cat(out)[:n]


class LinearGaussian:
    name, dim = "linear_gaussian", 10

    def __init__(self):
        self.prior = dist.Normal(torch.zeros(10), 0.1**0.5).to_event(1)

    def simulate(self, theta):
        return theta + 0.1**0.5 * torch.randn_like(theta)

    def reference(self, x_obs, n):
        return x_obs / 2 + 0.05**0.5 * torch.randn(n, 10)


class SLCP:
    name, dim = "slcp", 5

    def __init__(self):
        self.prior = dist.Uniform(-3 * torch.ones(5), 3 * torch.ones(5)).to_event(1)
        self.rhat = None

    @staticmethod
    def _gaussian(theta):
        m = theta[..., :2]
        s1, s2 = theta[..., 2] ** 2, theta[..., 3] ** 2
        rho = torch.tanh(theta[..., 4])
        cov = torch.stack(
            [torch.stack([s1**2, rho * s1 * s2], -1), torch.stack([rho * s1 * s2, s2**2], -1)], -2
        )
        return dist.MultivariateNormal(m, cov + 1e-6 * torch.eye(2))

    def simulate(self, theta):
        return self._gaussian(theta).sample((4,)).transpose(0, 1).reshape(len(theta), 8)

    def log_post(self, theta, x_obs):
        inside = (theta.abs() < 3).all(-1)
        safe = torch.where(inside[..., None], theta, torch.ones_like(theta))
        lik = self._gaussian(safe).log_prob(x_obs.reshape(4, 1, 2)).sum(0)
        return torch.where(inside, lik, torch.full_like(lik, -math.inf))

    def reference(self, x_obs, n, theta_true, chains=256, burn=2000, keep=4000, thin=4):
        x_obs, theta_true = x_obs.double(), theta_true.double()
        theta = theta_true + 0.01 * torch.randn(chains, 5, dtype=torch.float64)
        theta = theta.clamp(-2.999, 2.999)
        lp = self.log_post(theta, x_obs)
        scale = torch.full((chains, 1), 0.05, dtype=torch.float64)
        draws = []
        for step in range(burn + keep):
            prop = theta + scale * torch.randn_like(theta)
            lp_prop = self.log_post(prop, x_obs)
            accept = torch.rand(chains, dtype=torch.float64).log() < lp_prop - lp
            theta = torch.where(accept[:, None], prop, theta)
            lp = torch.where(accept, lp_prop, lp)
            if step < burn:  # Robbins-Monro adaptation towards 30 % acceptance per chain
                scale = scale * torch.exp((accept.double()[:, None] - 0.3) / (1 + step) ** 0.6)
            elif (step - burn) % thin == 0:
                draws.append(theta.clone())
        chain_draws = torch.stack(draws, 1)  # (chains, kept, 5)
        self.rhat = _split_rhat(chain_draws.abs())  # |t3|, |t4| remove the exact symmetry
        flat = chain_draws.reshape(-1, 5)
        flat = flat[torch.randperm(len(flat))[:n]].clone()
        signs = torch.where(torch.rand(len(flat), 2) < 0.5, -1.0, 1.0).double()
        flat[:, 2:4] = flat[:, 2:4].abs() * signs
        return flat.float()


def _split_rhat(draws):
    half = draws.shape[1] // 2
    chains = torch.cat([draws[:, :half], draws[:, half : 2 * half]])
    m = chains.mean(1)
    w = chains.var(1).mean(0)
    b = half * m.var(0)
    var = (half - 1) / half * w + b / half
    return float((var / w).sqrt().max())


TASKS = {"two_moons": TwoMoons, "linear_gaussian": LinearGaussian, "slcp": SLCP}
SBIBM = sbibm_tasks.TASKS  # --suite sbibm: sbibm's observations and reference draws


# -- methods ----------------------------------------------------------------------------------
def train_pyroflows(task, theta, x, quick, seed=0, flow="auto", flow_kwargs=None, time_cap=None,
                    intervals=None, fit_options=None):  # fmt: skip
    """pyroflows' default posterior; ``time_cap`` (seconds) is passed as the fit's
    ``time_budget`` (shared between the families of ``flow="auto"``: the first gets half,
    the second what is left; each keeps its best validation state). The posterior carries
    ``time_capped = True`` when a family used up its share. ``fit_options``: more keyword
    arguments of ``fit`` (a variant's ``fit.KEY=VALUE``)."""
    options = {} if intervals is None else {"intervals": intervals}
    post = AmortizedPosterior(
        prior=task.prior, simulator=task.simulate, flow=flow, flow_kwargs=flow_kwargs, **options
    )
    extra = {"max_epochs": 10} if quick else {}
    extra.update(fit_options or {})
    if time_cap is not None:
        extra["time_budget"] = time_cap
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:  # the held-out calibration warning
        warnings.simplefilter("always")
        post.fit(theta, x, progress=False, seed=seed, **extra)
    seconds = time.perf_counter() - start
    post.fit_warnings = [f"{w.category.__name__}: {w.message}" for w in caught]
    post.time_capped = time_cap is not None and _used_budget(post, seconds, time_cap)
    return post, seconds, len(post.history.train_loss)


def _used_budget(post, seconds, time_cap, tolerance=0.98):
    """Whether a fit with ``time_budget=time_cap`` ran into it: the families of
    ``flow="auto"`` are trained in turn, each with an equal share of what is left, so a
    family was stopped by the budget when its seconds reached its share."""
    spent, left = 0.0, time_cap
    candidates = getattr(post, "candidates", None) or [dict(seconds=seconds)]
    for k, candidate in enumerate(candidates):
        share = left / (len(candidates) - k)
        if candidate["seconds"] >= tolerance * share:
            return True
        spent += candidate["seconds"]
        left = max(time_cap - spent, 1e-3)
    return seconds >= tolerance * time_cap


def sample_pyroflows(post, x_obs, n):
    return post.sample(x_obs, n)


def sbi_prior(task):
    from sbi.utils import BoxUniform

    if isinstance(task, sbibm_tasks.SbibmTask):
        prior = task.sbi_prior()
        if isinstance(prior, dist.Independent) and isinstance(prior.base_dist, dist.Uniform):
            return BoxUniform(prior.base_dist.low, prior.base_dist.high)
        return torch.distributions.MultivariateNormal(prior.loc, prior.covariance_matrix)
    if isinstance(task, LinearGaussian):
        return torch.distributions.MultivariateNormal(torch.zeros(10), 0.1 * torch.eye(10))
    return BoxUniform(task.prior.base_dist.low, task.prior.base_dist.high)


def train_sbi(task, theta, x, quick, seed=0, time_cap=None):
    """sbi's NPE with an NSF at sbi's defaults; ``time_cap`` as for
    :func:`train_sbi_vector_field`."""
    from sbi.inference import NPE
    from sbi.neural_nets import posterior_nn

    estimator = posterior_nn("nsf", hidden_features=50, num_transforms=5, num_bins=10)
    inference = NPE(prior=sbi_prior(task), density_estimator=estimator, show_progress_bars=False)
    extra = {"max_num_epochs": 10} if quick else {}
    clock = _cap_sbi_training(inference, time_cap)
    torch.manual_seed(seed)  # sbi draws its initialisation and batches from torch's stream
    clock["start"] = start = time.perf_counter()
    net = inference.append_simulations(theta, x).train(**extra)
    seconds = time.perf_counter() - start
    epochs = inference._summary["epochs_trained"][-1]
    post = inference.build_posterior(net)
    post.time_capped = clock["capped"]
    return post, seconds, int(epochs)


def _cap_sbi_training(trainer, time_cap):
    """Make an sbi trainer stop at the first epoch end after ``time_cap`` seconds from
    ``clock["start"]`` (set it just before ``train``), keeping the weights of the best
    validation loss so far as sbi's own early stopping does; ``clock["capped"]`` says
    whether the cap stopped it. Without a cap the trainer is left as it is."""
    clock = {"start": None, "capped": False}
    if time_cap is None:
        return clock
    converged = trainer._converged

    def _converged_or_capped(epoch, stop_after_epochs):
        if converged(epoch, stop_after_epochs):
            return True
        if time.perf_counter() - clock["start"] > time_cap and trainer._best_model_state_dict:
            trainer._neural_net.load_state_dict(trainer._best_model_state_dict)
            clock["capped"] = True
            return True
        return False

    trainer._converged = _converged_or_capped
    return clock


def sample_sbi(post, x_obs, n):
    return post.sample((n,), x=x_obs, show_progress_bars=False)


def train_sbi_vector_field(task, theta, x, quick, seed=0, kind="FMPE", time_cap=None):
    """sbi's flow-matching (``FMPE``) or score-based (``NPSE``) estimator at its defaults.

    ``time_cap`` (seconds): training stops at the first epoch end after that much wall time
    and keeps the weights of the best validation loss so far, as sbi's own early stopping
    does; the posterior then carries ``time_capped = True``.
    """
    from sbi import inference

    trainer = getattr(inference, kind)(prior=sbi_prior(task), show_progress_bars=False)
    extra = {"max_num_epochs": 10} if quick else {}
    clock = _cap_sbi_training(trainer, time_cap)
    torch.manual_seed(seed)
    clock["start"] = start = time.perf_counter()
    net = trainer.append_simulations(theta, x).train(**extra)
    seconds = time.perf_counter() - start
    epochs = trainer._summary["epochs_trained"][-1]
    post = trainer.build_posterior(net)
    post.time_capped = clock["capped"]
    return post, seconds, int(epochs)


METHODS = {
    "pyroflows": (train_pyroflows, sample_pyroflows),
    "pyroflows nsf": (
        lambda *args, **kwargs: train_pyroflows(*args, flow="nsf", **kwargs),
        sample_pyroflows,
    ),
    # the spline's direction (nsf(spline=...)): which spline maps parameters to base
    **{
        f"pyroflows nsf, spline={spline}": (
            lambda *args, spline=spline, **kwargs: train_pyroflows(
                *args, flow="nsf", flow_kwargs={"spline": spline}, **kwargs
            ),
            sample_pyroflows,
        )
        for spline in ("inverse", "forward")
    },
    "pyroflows realnvp": (
        lambda *args, **kwargs: train_pyroflows(*args, flow="realnvp", **kwargs),
        sample_pyroflows,
    ),
    # how a box prior's parameters reach the flow (AmortizedPosterior(intervals=...))
    **{
        f"pyroflows intervals={intervals}": (
            lambda *args, intervals=intervals, **kwargs: train_pyroflows(
                *args, intervals=intervals, **kwargs
            ),
            sample_pyroflows,
        )
        for intervals in ("logit", "box")
    },
    "sbi NPE-NSF": (train_sbi, sample_sbi),
    "sbi FMPE": (lambda *a, **k: train_sbi_vector_field(*a, kind="FMPE", **k), sample_sbi),
    "sbi NPSE": (lambda *a, **k: train_sbi_vector_field(*a, kind="NPSE", **k), sample_sbi),
}


def method_entry(name):
    """``(train, sample)`` of a method: one of :data:`METHODS`, or a variant of pyroflows'
    default written ``"pyroflows KEY=VALUE, KEY=VALUE"``: ``flow`` and ``intervals`` go to
    ``AmortizedPosterior``, ``fit.OPTION`` to ``fit`` (e.g. ``fit.batch_size=100``), any other
    key to ``flow_kwargs`` (e.g. ``bins=16``, ``coupling=true``); a value is read as JSON
    where it parses (numbers, ``true``, ``null``, lists), else as a string. A key the
    posterior does not take is refused by it when the method trains, never dropped.

    Example:
        >>> method_entry("pyroflows bins=16, fit.batch_size=100")[0].keywords
        {'flow_kwargs': {'bins': 16}, 'fit_options': {'batch_size': 100}}
    """
    if name in METHODS:
        return METHODS[name]
    head, _, rest = name.partition(" ")
    pairs = [p.strip() for p in rest.split(",") if p.strip()]
    if head != "pyroflows" or not pairs or not all("=" in p for p in pairs):
        raise ValueError(
            f"unknown method {name!r}: one of {list(METHODS)} or 'pyroflows KEY=VALUE, ...'"
        )
    kwargs = {}
    for pair in pairs:
        key, _, text = (t.strip() for t in pair.partition("="))
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        if key in ("flow", "intervals"):
            kwargs[key] = value
        elif key.startswith("fit."):
            kwargs.setdefault("fit_options", {})[key[4:]] = value
        else:
            kwargs.setdefault("flow_kwargs", {})[key] = value
    return functools.partial(train_pyroflows, **kwargs), sample_pyroflows


# -- parts ------------------------------------------------------------------------------------
def _observations(args, task, n_draws):
    """(observation labels, x_obs (k, ...), reference draws per observation)."""
    if isinstance(task, sbibm_tasks.SbibmTask):  # sbibm's files; reference draws subsampled
        ids = {"development": sbibm_tasks.DEVELOPMENT[: args.observations],
               "confirmation": sbibm_tasks.CONFIRMATION[: args.observations]}  # fmt: skip
        ids = ids[args.split] if args.split in ids else ids["development"] + ids["confirmation"]
        refs = []
        for i in ids:
            ref = task.reference(i)
            generator = torch.Generator().manual_seed(2000 + i)
            refs.append(ref[torch.randperm(len(ref), generator=generator)[:n_draws]])
        return list(ids), torch.stack([task.observation(i) for i in ids]), refs
    torch.manual_seed(1000)
    theta_obs = task.prior.sample((args.observations,))
    x_obs = task.simulate(theta_obs)
    refs = []
    for i in range(args.observations):
        torch.manual_seed(2000 + i)
        if isinstance(task, SLCP):
            refs.append(task.reference(x_obs[i], n_draws, theta_obs[i]))
        else:
            refs.append(task.reference(x_obs[i], n_draws))
    return list(range(args.observations)), x_obs, refs


def _score(args, task, post, sample, labels, x_obs, refs, ids, n_draws):
    """C2ST, draw time and outside-prior fraction of ``post`` at observations ``ids``
    (positions in ``labels``); each observation's draws seeded by its position in the
    split."""
    scores, outside, sample_s = [], [], []
    for k, i in enumerate(ids):
        torch.manual_seed(3000 + k)
        start = time.perf_counter()
        draws = sample(post, x_obs[i], n_draws)
        sample_s.append(time.perf_counter() - start)
        outside.append(_outside(task, draws))
        folds = 3 if args.quick else 5
        scores.append(c2st(draws.numpy(), refs[i].numpy(), folds=folds, n_bootstrap=0).accuracy)
    return dict(
        c2st=float(np.mean(scores)), observations=[labels[i] for i in ids],
        c2st_per_observation=[round(s, 4) for s in scores],
        sample_s=float(np.mean(sample_s)), draws=n_draws,
        outside_prior=float(np.mean(outside)),
    )  # fmt: skip


def _join(values):
    return ", ".join(f"{v:.3f}" for v in values)


def _heldout(post):
    """The held-out SBC p-values of a pyroflows posterior (None for the peers)."""
    result = getattr(post, "heldout_sbc_", None)
    return None if result is None else [float(p) for p in result.pvalues]


def _outside(task, draws):
    """Fraction of draws where the prior's log-density is not finite."""
    return float((~torch.isfinite(task.prior.log_prob(draws))).double().mean())


def accuracy(args, log, task_name, on_row=None):
    """The C2ST rows of one task; ``on_row(row)`` is called as each cell finishes."""
    rows, posteriors = [], {}
    budgets = args.budgets or ([1000] if args.quick else [1000, 10000])
    n_draws = 500 if args.quick else args.c2st_draws
    for name in [task_name]:
        task = (SBIBM if args.suite == "sbibm" else TASKS)[name]()
        labels, x_obs, refs = _observations(args, task, n_draws)
        if isinstance(task, sbibm_tasks.SbibmTask):  # labels are sbibm's observation numbers
            splits = {s: [labels.index(i) for i in ids if i in labels]
                      for s, ids in (("development", sbibm_tasks.DEVELOPMENT),
                                     ("confirmation", sbibm_tasks.CONFIRMATION))}  # fmt: skip
            splits = {s: ids for s, ids in splits.items() if ids}
        else:
            splits = {args.split: list(range(len(labels)))}
        rhat = getattr(task, "rhat", None)
        for budget in budgets:
            torch.manual_seed(budget)
            theta = task.prior.sample((budget,))
            x = task.simulate(theta)
            if args.export is not None:  # the same simulations for peers in other venvs
                _export(args.export, name, budget, theta, x, x_obs, labels)
            for method in args.methods:
                for seed in args.seeds:
                    torch.manual_seed(0)
                    train, sample = method_entry(method)
                    cap = {} if args.time_cap is None else {"time_cap": args.time_cap}
                    load_start = os.getloadavg()[0]
                    post, seconds, epochs = train(task, theta, x, args.quick, seed=seed, **cap)
                    load_end = os.getloadavg()[0]
                    for split, ids in splits.items():
                        row = _score(args, task, post, sample, labels, x_obs, refs, ids,
                                     n_draws)  # fmt: skip
                        row.update(
                            task=name, budget=budget, method=method, seed=seed, split=split,
                            train_s=seconds, epochs=epochs, reference_rhat=rhat,
                            family=getattr(post, "flow_name", "nsf"),
                            candidates=_plain_candidates(post),
                            load_average=round((load_start + load_end) / 2, 2),
                            time_capped=getattr(post, "time_capped", False),
                            fit_warnings=getattr(post, "fit_warnings", []),
                            heldout_sbc_pvalues=_heldout(post),
                        )  # fmt: skip
                        rows.append(row)
                        if on_row is not None:
                            on_row(row)
                        chosen = " ".join(
                            f"{c['flow']} {c['best_loss']:.4f} ({c['seconds']:.1f} s)"
                            for c in row["candidates"]
                        )
                        log(
                            f"{name:16s} {budget:6d} {method:12s} seed {seed} {split[:3]} C2ST "
                            f"{row['c2st']:.3f} ({_join(row['c2st_per_observation'])}) "
                            f"train {seconds:6.1f} s (load {row['load_average']}), {epochs} "
                            f"epochs, draw {row['sample_s']:.2f} s, outside "
                            f"{row['outside_prior']:.3f}, {row['family']}"
                            f"{f' [validation loss: {chosen}]' if chosen else ''}"
                            f"{' [time-capped]' if row['time_capped'] else ''}"
                            + "".join(f"\n    {w}" for w in row["fit_warnings"])
                        )
                    if seed == args.seeds[0]:  # timed and calibrated
                        posteriors[(name, budget, method)] = (post, task)
    return rows, posteriors


def _export(folder, name, budget, theta, x, x_obs, labels):
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / f"{name}_{budget}.npz", theta=theta.numpy(), x=x.numpy(),
             x_obs=x_obs.numpy(), observations=np.array(labels))  # fmt: skip


def _plain_candidates(post) -> list[dict]:
    """The families ``flow="auto"`` compared (best validation loss, seconds); [] otherwise."""
    return [
        dict(flow=c["flow"], best_loss=float(c["best_loss"]), seconds=float(c["seconds"]))
        for c in getattr(post, "candidates", [])
    ]


def timing(posteriors, args, log, name):
    """Draws for 1 000 observations x 1 000 draws; an autoregressive NSF on more than two
    parameters samples one coordinate per network pass (50 passes per draw in 10-D) and is
    timed on 100 observations (``observations`` column)."""
    rows = []
    budget = 1000 if args.quick else 10000
    if name not in ("two_moons", "linear_gaussian"):
        return rows
    for method in METHODS:
        if (name, budget, method) not in posteriors:
            continue
        post, task = posteriors[(name, budget, method)]
        if args.quick and method.startswith("sbi"):
            continue
        # an autoregressive posterior (and sbi's) on more than two parameters: 100 observations
        slow = task.dim > 2 and getattr(post, "flow_name", "nsf") in ("nsf", "maf")
        torch.manual_seed(0)
        x = task.simulate(task.prior.sample((100 if args.quick or slow else 1000,)))
        for threads in (1,) if args.quick else (2, 1):
            if method.startswith("sbi") and threads == 1:
                continue  # sbi's batched sampler (with rejection) is slow; timed once
            torch.set_num_threads(threads)
            times = []
            while len(times) < 3 and sum(times) < 10:
                start = time.perf_counter()
                if method.startswith("pyroflows"):
                    draws = post.sample(x, 1000)
                else:
                    draws = post.sample_batched((1000,), x=x, show_progress_bars=False)
                times.append(time.perf_counter() - start)
            assert draws.shape == (1000, len(x), task.dim)
            best = min(times)
            rows.append(dict(task=name, method=method, threads=threads, seconds=best,
                             observations=len(x), repeats=len(times)))  # fmt: skip
            log(f"sampling {len(x)} obs x 1000 draws  {name:16s} {method:17s} "
                f"{threads} thread(s): {best:.3f} s")  # fmt: skip
    torch.set_num_threads(args.threads)
    return rows


class _BatchedSbi:
    """sbi's posterior with the ``sample(x (N, ...), S) -> (S, N, dim)`` that ``sbc`` calls."""

    def __init__(self, posterior):
        self.posterior = posterior

    def sample(self, x, num_samples):
        return self.posterior.sample_batched((num_samples,), x=x, show_progress_bars=False)


def calibration(posteriors, args, log, task_name):
    """SBC at 10 000 simulations for pyroflows and sbi on the same 500 simulations."""
    rows = []
    if args.quick or task_name not in ("two_moons", "slcp"):
        return rows
    task = TASKS[task_name]()
    torch.manual_seed(0)
    theta = task.prior.sample((500,))
    x = task.simulate(theta)
    for method in ("pyroflows", "sbi NPE-NSF"):
        if (task_name, 10000, method) not in posteriors:
            continue
        post, _ = posteriors[(task_name, 10000, method)]
        sampler = post if method == "pyroflows" else _BatchedSbi(post)
        result = sbc(sampler, 500, 100, theta=theta, x=x, seed=0)
        rows.append(dict(task=task_name, method=method, pvalues=result.pvalues.tolist(),
                         mean_pit=result.pit.mean(0).tolist(),
                         rejected_at_1pct=result.rejected(0.01)))  # fmt: skip
        log(f"SBC {task_name} {method}: KS p-values {np.round(result.pvalues, 3).tolist()}, "
            f"mean PIT {np.round(result.pit.mean(0), 3).tolist()}, rejected at 1 %: "
            f"{result.rejected(0.01)}")  # fmt: skip
    return rows


# -- report -----------------------------------------------------------------------------------
def markdown(result):
    lines = [
        "# Amortized posteriors: pyroflows vs sbi NPE-NSF",
        "",
        f"Command: `{result['command']}`  ",
        f"Commit: `{result['commit']}`, {result['date']}, load average at start "
        f"{result['load_average']}, torch threads {result['threads']}.",
        "",
        "## C2ST accuracy against reference posteriors (0.5 is perfect), training time",
        "",
        "| task | simulations | method | training seed | C2ST (mean over observations) "
        "| per observation | train s | epochs | flow kept (validation loss of each) |",
        "|---|---:|---|---:|---:|---|---:|---:|---|",
    ]
    groups = {}
    for r in result["accuracy"]:
        per = ", ".join(f"{s:.3f}" for s in r["c2st_per_observation"])
        kept = r.get("family", "") if r["method"].startswith("pyroflows") else ""
        if r.get("candidates"):
            kept += " (" + ", ".join(f"{c['flow']} {c['best_loss']:.4f}"
                                     for c in r["candidates"]) + ")"  # fmt: skip
        lines.append(
            f"| {r['task']} | {r['budget']:,} | {r['method']} | {r.get('seed', 0)} | "
            f"{r['c2st']:.3f} | {per} | {r['train_s']:.1f} | {r['epochs']} | {kept} |"
        )
        groups.setdefault((r["task"], r["budget"], r["method"]), []).append(r)
    if any(len(g) > 1 for g in groups.values()):
        lines += ["", "## Over the training seeds", "",
                  "| task | simulations | method | seeds | C2ST mean | sd | min | max | train s "
                  "| flow kept |",
                  "|---|---:|---|---:|---:|---:|---:|---:|---:|---|"]  # fmt: skip
        for (task, budget, method), g in groups.items():
            c = np.array([r["c2st"] for r in g])
            t = np.mean([r["train_s"] for r in g])
            families = [r.get("family", "") for r in g] if method.startswith("pyroflows") else []
            kept = ", ".join(f"{f} {families.count(f)}/{len(g)}" for f in dict.fromkeys(families))
            lines.append(f"| {task} | {budget:,} | {method} | {len(g)} | {c.mean():.3f} | "
                         f"{c.std(ddof=1) if len(c) > 1 else 0:.3f} | {c.min():.3f} | "
                         f"{c.max():.3f} | {t:.1f} | {kept} |")  # fmt: skip
    if result["timing"]:
        lines += ["", "## Observations x 1 000 draws in one call (best of up to 3 runs in 10 s)",
                  "", "| task | method | observations | threads | seconds |",
                  "|---|---|---:|---:|---:|"]  # fmt: skip
    for r in result["timing"]:
        lines.append(f"| {r['task']} | {r['method']} | {r['observations']} | {r['threads']} | "
                     f"{r['seconds']:.3f} |")  # fmt: skip
    if result["sbc"]:
        lines += ["", "## SBC at 10 000 simulations (the same 500 simulations for both)", "",
                  "| task | method | KS p-values | mean PIT | rejected at 1 % (Bonferroni) |",
                  "|---|---|---|---|---|"]  # fmt: skip
        for r in result["sbc"]:
            p = ", ".join(f"{v:.3f}" for v in r["pvalues"])
            m = ", ".join(f"{v:.3f}" for v in r["mean_pit"])
            lines.append(f"| {r['task']} | {r['method']} | {p} | {m} | "
                         f"{r['rejected_at_1pct']} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one budget and observation")
    parser.add_argument(
        "--suite",
        choices=["amortized", "sbibm"],
        default="amortized",
        help="sbibm: the eight sbibm tasks, observations and reference draws "
        "read from sbibm's files (accuracy only; writes results/sbibm.*)",
    )
    parser.add_argument(
        "--split",
        choices=["development", "confirmation", "both"],
        default="development",
        help="sbibm observations 1-5 (development), 6-10 (confirmation) or both, scored "
        "on the same trained posteriors (one row per split)",
    )
    parser.add_argument(
        "--export",
        type=Path,
        default=None,
        help="write each budget's simulations and observations to DIR/{task}_{budget}.npz "
        "(for peers that run in another environment)",
    )
    parser.add_argument(
        "--merge",
        action="store_true",
        help="keep the rows of the existing results file that this run "
        "does not replace (same task, budget, method, seed, split)",
    )
    parser.add_argument("--observations", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--c2st-draws", type=int, default=2000, help="per set, per observation")
    parser.add_argument("--tasks", nargs="+", default=None, choices=[*TASKS, *SBIBM])
    parser.add_argument("--methods", nargs="+", default=None,
                        help=f"{list(METHODS)} or variants of pyroflows' default written "
                        "'pyroflows KEY=VALUE, ...' (method_entry); default: every "
                        "in-process method (amortized suite), pyroflows and sbi NPE-NSF "
                        "(sbibm suite)")  # fmt: skip
    parser.add_argument("--budgets", nargs="+", type=int, default=None, help="simulations")
    parser.add_argument(
        "--seeds",
        nargs="+",
        type=int,
        default=[0],
        help="training seeds; the first one's posteriors are timed and checked",
    )
    parser.add_argument("--accuracy-only", action="store_true", help="no timing, no SBC")
    parser.add_argument(
        "--time-cap",
        type=float,
        default=None,
        help="seconds of training for every method: sbi's stop at the first epoch end "
        "after it, pyroflows gets it as its fit's time_budget; each keeps its best "
        "validation weights and the row says time_capped",
    )
    args = parser.parse_args(argv)
    registry = SBIBM if args.suite == "sbibm" else TASKS
    if args.tasks is None:
        args.tasks = ["two_moons", "linear_gaussian"] if args.quick else list(registry)
    unknown = [t for t in args.tasks if t not in registry]
    if unknown:
        parser.error(f"tasks {unknown} are not in the {args.suite} suite: {list(registry)}")
    if args.methods is None:
        args.methods = ["pyroflows", "sbi NPE-NSF"] if args.suite == "sbibm" else [
            m for m in METHODS if not m.startswith("sbi ") or m == "sbi NPE-NSF"]  # fmt: skip
    for name in args.methods:
        try:
            method_entry(name)
        except ValueError as error:
            parser.error(str(error))
    if args.time_cap is not None and args.time_cap <= 0:
        parser.error(f"--time-cap must be positive, got {args.time_cap}")
    if args.suite == "sbibm":
        args.accuracy_only = True  # timing and SBC are the amortized suite's parts
    if args.observations is None:
        args.observations = 1 if args.quick else (5 if args.suite == "sbibm" else 3)
    torch.set_num_threads(args.threads)
    pyro.set_rng_seed(0)
    warnings.filterwarnings("ignore", category=UserWarning)  # sbi / nflows / sklearn chatter
    warnings.filterwarnings("ignore", module="sklearn")
    load = os.getloadavg()[0]
    print(f"load average {load:.2f}; torch threads {args.threads}", flush=True)
    log = lambda text: print(text, flush=True)  # noqa: E731
    start = time.perf_counter()
    result = {
        "command": "benchmarks/amortized.py " + " ".join(argv or sys.argv[1:]),
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip(),  # fmt: skip
        "date": time.strftime("%Y-%m-%d"),
        "load_average": round(load, 2),
        "threads": args.threads,
        "machine": platform.processor() or platform.machine(),
        "accuracy": [],
        "timing": [],
        "sbc": [],
    }
    out = args.out or (None if args.quick else RESULTS)
    stem = args.suite
    kept = []
    if args.merge and out is not None and (out / f"{stem}.json").exists():
        kept = json.loads((out / f"{stem}.json").read_text())["accuracy"]

    def write():
        result["total_s"] = time.perf_counter() - start
        if args.suite == "sbibm":
            key = lambda r: (r["task"], r["budget"], r["method"], r["seed"], r["split"])  # noqa: E731
            new = {key(r) for r in result["accuracy"]}
            merged = dict(result, accuracy=[r for r in kept if key(r) not in new]
                          + result["accuracy"])  # fmt: skip
            text = sbibm_report.markdown(merged)
        else:
            merged, text = result, markdown(result)
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            (out / f"{stem}.json").write_text(json.dumps(merged, indent=1))
            (out / f"{stem}.md").write_text(text)
        return text

    def record(row):  # results written as each cell finishes
        row.update(command=result["command"])
        result["accuracy"].append(row)
        write()

    for name in args.tasks:
        rows, posteriors = accuracy(args, log, name, on_row=record)
        if not args.accuracy_only:
            result["timing"] += timing(posteriors, args, log, name)
            result["sbc"] += calibration(posteriors, args, log, name)
        text = write()
    print(text)


if __name__ == "__main__":
    main()
