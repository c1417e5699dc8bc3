"""pyroflows' NSF against zuko's NSF with the same architecture, on 2-D Gaussian mixtures.

Notebook 02 fits NSF-5 (two hidden layers of 128, 8 bins) with ``pf.DensityEstimator`` and
zuko's ``NSF`` trained by a plain loop on standardised draws. This script repeats that
comparison on the K = 7 and K = 10 mixtures over several training seeds (paired: every
variant sees the same draws and the same seed) and swaps one difference at a time:

* ``zuko``: the notebook's zuko NSF and loop;
* ``pf estimator``: ``DensityEstimator(flow="nsf", layers=5, spline="inverse")`` as in the
  notebook;
* ``pf estimator, forward spline``: the same with ``spline="forward"``;
* ``pf loop``: the same flow (``pf.nsf(spline="inverse")``) trained by the notebook's zuko
  loop: the density direction (data -> base) applies the inverse rational-quadratic spline;
* ``pf loop, forward spline``: as ``pf loop`` with ``pf.nsf(spline="forward")``: the density
  direction applies the forward spline, as zuko's (and nflows') NSF does;
* ``pf loop, random out``: the conditioners' output layers left at their random
  ``nn.Linear`` initialisation instead of zero (the flow no longer starts at the identity);
* ``zuko, zero out``: zuko's NSF with its conditioners' output layers set to zero;
* ``pf loop, zuko spline params``: the raw spline parameters read as zuko reads them
  (soft-clipped widths and heights, exponentiated soft-clipped derivatives);
  ``pf loop, zuko derivatives``: the derivatives alone; ``pf loop, zuko params, random out``:
  with the random output layers as well.

Protocol (the same for every variant): 2 000 training, 500 validation and 10 000 test draws
per target (the notebook's seeds), Adam at lr 1e-3, batches of 256, gradient norm clipped at
5, at most ``--epochs`` epochs with early stopping after 50 epochs without a better
validation loss, the best validation state kept; KL(p || q) by Monte Carlo on the test draws.
Prints the mean KL +- its standard error over seeds per variant and the paired difference
against ``zuko``.

Run: ``PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/nsf_vs_zuko.py --components 10
--seeds 0 1 2 --variants zuko "pf loop" "pf loop, forward spline"`` (about a minute per fit
on one thread).
"""

from __future__ import annotations

import argparse
import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import zuko

import pyroflows as pf
from pyroflows import datasets, diagnostics
from pyroflows.transforms import RQS, MaskedAutoregressive

N_TRAIN, N_VAL, N_TEST = 2_000, 500, 10_000
PATIENCE = 50
#: the notebook's data seeds: 100 * (position of the target in K = 2, 4, 7, 10, rings)
DATA_SEEDS = {2: 100, 4: 200, 7: 300, 10: 400}


def draws(k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, object]:
    """Training, validation and test draws of the K-component mixture, as in notebook 02."""
    p = datasets.gaussian_mixture_2d(k)
    seed = DATA_SEEDS[k]
    return (
        p.sample(N_TRAIN, seed=seed),
        p.sample(N_VAL, seed=seed + 1),
        p.sample(N_TEST, seed=seed + 2),
        p,
    )


@dataclass(frozen=True)
class ZukoParamRQS(RQS):
    """pyroflows' spline reading its raw parameters as zuko's ``MonotonicRQSTransform`` does:
    raw widths and heights soft-clipped to ``|w| < -log(slope) / 2`` before the softmax, raw
    interior derivatives soft-clipped to ``|d| < -log(slope)`` and exponentiated (pyroflows:
    ``1e-3 + softplus``). The derivative is handed to pyroflows' spline through the inverse of
    its softplus; the least bin (1e-3 of the interval) stays pyroflows'."""

    slope: float = 1e-3
    clip_bins: bool = True  # False: the widths and heights read as pyroflows reads them

    def _raw(self, params: torch.Tensor) -> torch.Tensor:
        log_slope = math.log(self.slope)
        w, h, d = params.split([self.bins, self.bins, self.bins - 1], dim=-1)
        if self.clip_bins:
            w = w / (1 + (2 * w / log_slope).abs())
            h = h / (1 + (2 * h / log_slope).abs())
        target = torch.exp(d / (1 + (d / log_slope).abs())) - 1e-3  # what softplus must give
        target = target.clamp_min(1e-6)
        shift = math.log(math.expm1(1.0 - 1e-3))
        d = target + torch.log(-torch.expm1(-target)) - shift  # softplus^-1(target) - shift
        return torch.cat([w, h, d], dim=-1)

    def __call__(self, x, params, inverse=False):
        return super().__call__(x, self._raw(params), inverse)

    def value(self, x, params, inverse=False):
        return super().value(x, self._raw(params), inverse)


def zero_output(net: torch.nn.Module) -> None:
    """Set the last linear layer of a zuko ``MaskedMLP`` to zero."""
    last = [m for m in net.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()


def zuko_flow(seed: int, zero: bool = False) -> tuple[torch.nn.Module, Callable]:
    torch.manual_seed(seed)
    flow = zuko.flows.NSF(2, transforms=5, hidden_features=(128, 128), bins=8)
    if zero:
        for t in flow.transform.transforms:
            zero_output(t.hyper)
    return flow, lambda x: flow().log_prob(x)


def pf_flow(
    seed: int,
    random_out: bool = False,
    zuko_params: bool = False,
    clip_bins: bool = True,
    spline: str = "inverse",
) -> tuple[torch.nn.Module, Callable]:
    torch.manual_seed(seed)
    flow = pf.nsf(2, layers=5, hidden=(128, 128), bins=8, seed=seed, spline=spline)
    if zuko_params:
        for layer in flow.transforms:
            assert isinstance(layer, MaskedAutoregressive)
            object.__setattr__(
                layer, "univariate", ZukoParamRQS(8, 5.0, spline, clip_bins=clip_bins)
            )
    if random_out:  # redraw every conditioner's output layer as nn.Linear would
        for layer in flow.transforms:
            net = layer.net
            rows, cols = net._shapes[-2]
            fresh = torch.nn.Linear(cols, rows)
            with torch.no_grad():
                size = net._sizes[-2] + net._sizes[-1]
                net.flat_params[-size:] = torch.cat([fresh.weight.flatten(), fresh.bias])
    return flow, flow.log_prob


def loop_fit(make: Callable, seed: int, X: np.ndarray, X_val: np.ndarray, epochs: int):
    """The notebook's zuko loop on standardised draws; returns a scorer of raw rows."""
    loc, scale = X.mean(0), X.std(0)

    def tensor(a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor((a - loc) / scale, dtype=torch.float32)

    flow, log_prob = make(seed)
    train, val = tensor(X), tensor(X_val)
    params = list(flow.parameters())
    optimizer = torch.optim.Adam(params, lr=1e-3)
    generator = torch.Generator().manual_seed(seed)
    best, best_state, waited = np.inf, None, 0
    for _ in range(epochs):
        for index in torch.randperm(len(train), generator=generator).split(256):
            loss = -log_prob(train[index]).mean()
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 5.0)
            optimizer.step()
        with torch.no_grad():
            val_loss = -float(log_prob(val).mean())
        if val_loss < best:
            best, waited, best_state = val_loss, 0, copy.deepcopy(flow.state_dict())
        else:
            waited += 1
            if waited >= PATIENCE:
                break
    flow.load_state_dict(best_state)

    def score(a: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return log_prob(tensor(a)).double().numpy() - np.log(scale).sum()

    return score


def estimator_fit(seed: int, X: np.ndarray, X_val: np.ndarray, epochs: int, **params):
    est = pf.DensityEstimator(
        flow="nsf", layers=5, max_epochs=epochs, patience=PATIENCE, random_state=seed,
        progress=False, **params,
    ).fit(X, X_val)  # fmt: skip
    return est.score_samples


VARIANTS: dict[str, Callable] = {
    "zuko": lambda s, X, V, e: loop_fit(zuko_flow, s, X, V, e),
    "pf estimator": lambda s, X, V, e: estimator_fit(s, X, V, e, spline="inverse"),
    "pf estimator, forward spline": lambda s, X, V, e: estimator_fit(s, X, V, e, spline="forward"),
    "pf loop": lambda s, X, V, e: loop_fit(pf_flow, s, X, V, e),
    "pf loop, random out": lambda s, X, V, e: loop_fit(
        lambda seed: pf_flow(seed, random_out=True), s, X, V, e
    ),
    "pf loop, zuko spline params": lambda s, X, V, e: loop_fit(
        lambda seed: pf_flow(seed, zuko_params=True), s, X, V, e
    ),
    "pf loop, forward spline": lambda s, X, V, e: loop_fit(
        lambda seed: pf_flow(seed, spline="forward"), s, X, V, e
    ),
    "pf loop, zuko derivatives": lambda s, X, V, e: loop_fit(
        lambda seed: pf_flow(seed, zuko_params=True, clip_bins=False), s, X, V, e
    ),
    "pf loop, zuko params, random out": lambda s, X, V, e: loop_fit(
        lambda seed: pf_flow(seed, random_out=True, zuko_params=True), s, X, V, e
    ),
    "zuko, zero out": lambda s, X, V, e: loop_fit(
        lambda seed: zuko_flow(seed, zero=True), s, X, V, e
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--components", type=int, nargs="+", default=[7, 10])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(
        f"protocol: {N_TRAIN} train / {N_VAL} val / {N_TEST} test draws, Adam 1e-3, batch 256, "
        f"clip 5, <= {args.epochs} epochs, patience {PATIENCE}, best validation state; "
        f"seeds {args.seeds}",
        flush=True,
    )
    for k in args.components:
        X, X_val, X_test, p = draws(k)
        log_p = p.log_prob(X_test)
        kl: dict[str, list[float]] = {name: [] for name in args.variants}
        for seed in args.seeds:
            for name in args.variants:
                t0 = time.perf_counter()
                score = VARIANTS[name](seed, X, X_val, args.epochs)
                value = diagnostics.kl_monte_carlo(log_p, score(X_test)).value
                kl[name].append(value)
                print(
                    f"  K={k} seed {seed} {name:28s} KL {value:.4f} "
                    f"({time.perf_counter() - t0:.0f} s)",
                    flush=True,
                )
        print(f"K={k}: KL(p || q) mean +- SE over {len(args.seeds)} seeds; paired vs zuko")
        ref = np.array(kl["zuko"]) if "zuko" in kl else None
        n = len(args.seeds)
        for name, values in kl.items():
            v = np.array(values)
            line = f"  {name:28s} {v.mean():.4f} +- {v.std(ddof=1) / np.sqrt(n):.4f}"
            if ref is not None and name != "zuko":
                d = v - ref
                line += f"   diff {d.mean():+.4f} +- {d.std(ddof=1) / np.sqrt(n):.4f}"
            print(line, flush=True)


if __name__ == "__main__":
    main()
