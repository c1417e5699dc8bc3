"""Density-estimation quality of pyroflows' default ``DensityEstimator`` against zuko, KDE, GMM.

Three measurements in one run, printed as Markdown tables (and written to
``benchmarks/results/quality.md`` and ``quality.json``):

1. **Real data** (``pyroflows.datasets.load(name, seed)``, 70/15/15 train/validation/test):
   ``breast_cancer`` (569 x 30), ``digits`` (1797 x 64; ``dequantize=True`` adds U[0, 1) noise
   to the integer pixels so that a density is defined, and ``drop_constant=True`` drops the
   pixels that are constant on the training split, leaving 60 columns with seed 0; the numbers are
   then a lower bound of the discrete log-likelihood), ``airports`` (``contiguous_us=True``,
   2-D longitude/latitude). Every method fits the training split, may use the validation split
   for early stopping or model selection, and is scored on the test split: mean test
   log-likelihood per row in the data's own units, ± its standard error over the test rows
   (:func:`pyroflows.diagnostics.test_log_likelihood`). Methods:

   * ``pyroflows default``: ``DensityEstimator(random_state=seed, time_budget=budget)``, with
     no other argument: whatever the library's defaults are, untouched, on every data set.
   * ``zuko NSF`` / ``zuko MAF``: ``zuko.flows.NSF`` / ``MAF`` with ``ZUKO_LAYERS`` layers,
     ``ZUKO_HIDDEN`` hidden units and ``ZUKO_BINS`` bins (NSF), trained by the small loop
     :func:`train_zuko` below with the optimiser and early-stopping settings of the default
     estimator (Adam, learning rate, weight decay, batch size, gradient clipping, patience,
     maximum epochs; best validation state restored) on the same data standardised with the
     training mean and standard deviation, and the same wall-time budget. Its log-density is
     reported in the data's units: ``log q_std((x - m) / s) - sum(log s)``.
   * ``KDE``: :class:`pyroflows.baselines.KDEDensity`, bandwidth chosen on the validation
     split. ``GMM``: :class:`pyroflows.baselines.GMMDensity` (full covariances, 1 to 10
     components chosen on the validation split). ``Gaussian``:
     :class:`pyroflows.baselines.GaussianDensity`.

2. **2-D Gaussian mixtures** (``datasets.gaussian_mixture_2d(K)``, K = 1, 2, 4, 7, 10, unit
   components with neighbouring means 5 sqrt(2) apart; ``n`` = 10 000 draws split 70/15/15):
   ``KL(p || q) = E_p[log p - log q]`` estimated on fresh draws of ``p`` with the exact
   ``log p`` (:func:`pyroflows.diagnostics.kl_monte_carlo`), ± its Monte-Carlo standard error,
   for the default estimator (NSF) and for ``DensityEstimator(flow="maf", layers=L)`` with
   L = 1, 3, 5, 7 (every other argument at its default). Project target: KL <= 0.02 nats for
   the default NSF.

3. **Time to zuko's best**: pyroflows' NSF (``DensityEstimator`` with zuko's architecture) and
   zuko's NSF trained on the same data with the same settings (per-column standardisation for
   both), validation loss (mean negative log-likelihood in the data's units) recorded after
   every epoch against wall time since the start of training. Reported: zuko's best validation
   loss, when zuko reached it, and when pyroflows first reached a validation loss at least as
   good ("not reached" otherwise).

Timings depend on the machine and its load (the load average at the start is recorded); on a
shared machine they are noisy, and a loaded machine also changes results where a fit is
stopped by the time budget (marked in the tables). Threads: ``torch.set_num_threads(--threads)``,
default 1. On the 2-core development machine, with other jobs running, one epoch of the default
NSF took 0.9-1.3 s with 1 thread and 12-14 s with 2 threads (4-mixture, 7 000 rows; 0.8 s vs
3.5-8.5 s on digits): these small networks gain nothing from a second thread and suffer badly
from oversubscription.

Usage::

    python benchmarks/quality.py                    # full run, writes benchmarks/results/
    python benchmarks/quality.py --quick            # smoke check (tiny sizes), prints only
    python benchmarks/quality.py --datasets breast_cancer airports --budget 60 --seed 1
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import math
import os
import platform
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

# Benchmark the checkout this script lives in, whatever the installed copy of pyroflows.
ROOT = str(Path(__file__).resolve().parents[1])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from pyroflows import datasets, diagnostics  # noqa: E402
from pyroflows.baselines import GaussianDensity, GMMDensity, KDEDensity  # noqa: E402
from pyroflows.density import DensityEstimator  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
REAL_DATASETS = ("breast_cancer", "digits", "airports")
LOADER_OPTIONS: dict[str, dict[str, Any]] = {
    "breast_cancer": {},
    "digits": {"dequantize": True, "drop_constant": True},
    "airports": {"contiguous_us": True},
}
MIXTURE_COMPONENTS = (1, 2, 4, 7, 10)
MAF_DEPTHS = (1, 3, 5, 7)
KL_TARGET = 0.02
ZUKO_LAYERS = 5
ZUKO_HIDDEN = (128, 128)
ZUKO_BINS = 8
LOAD_AT_START = os.getloadavg()[0]


@dataclass
class Settings:
    """Sizes of one run (``--quick`` shrinks them)."""

    datasets: Sequence[str]
    budget: float
    seed: int
    mixture_n: int = 10_000
    kl_draws: int = 20_000
    components: Sequence[int] = MIXTURE_COMPONENTS
    maf_depths: Sequence[int] = MAF_DEPTHS
    race_data: str = "mixture_2d-4"
    max_epochs: int | None = None  # None: the estimator's default
    gmm_max_components: int = 10


@dataclass
class Fit:
    """Log-densities of one method on test points, with what the fit cost."""

    log_prob: np.ndarray
    seconds: float
    info: dict[str, Any] = field(default_factory=dict)


# -- training settings shared by pyroflows and zuko ---------------------------------------------
def optimiser_settings(settings: Settings) -> dict[str, Any]:
    """The default estimator's optimiser and early-stopping settings (so zuko gets the same)."""
    p = DensityEstimator().get_params()
    return {
        "lr": p["lr"],
        "weight_decay": p["weight_decay"],
        "batch_size": p["batch_size"],
        "clip_grad": p["clip_grad"],
        "patience": p["patience"],
        "max_epochs": settings.max_epochs or p["max_epochs"],
    }


def default_estimator(settings: Settings, **overrides: Any) -> DensityEstimator:
    """``DensityEstimator`` at its defaults, plus the seed, the budget and ``overrides``."""
    kwargs: dict[str, Any] = {"random_state": settings.seed, "time_budget": settings.budget}
    if settings.max_epochs is not None:
        kwargs["max_epochs"] = settings.max_epochs
    return DensityEstimator(**{**kwargs, **overrides})


# -- method families: each returns log-densities on the test points ------------------------------
def fit_pyroflows(
    train: np.ndarray, val: np.ndarray, test: np.ndarray, settings: Settings, **overrides: Any
) -> Fit:
    """Default ``DensityEstimator`` (``overrides`` only for the MAF depths and the race)."""
    est = default_estimator(settings, **overrides)
    start = time.perf_counter()
    est.fit(train, X_val=val)
    seconds = time.perf_counter() - start
    h = est.history_
    info = {
        "epochs": len(h.val_loss),
        "best_epoch": h.best_epoch,
        "best_val_loss": h.best_loss,
        "stop": h.stop_reason,
        "curve": {"time": list(h.time), "val_loss": list(h.val_loss)},
        "val_log_prob": est.score_samples(val),
    }
    return Fit(est.score_samples(test), seconds, info)


def build_zuko(family: str, dim: int) -> torch.nn.Module:
    """zuko's ``NSF`` or ``MAF`` with the benchmark's architecture."""
    import zuko

    kwargs = {"transforms": ZUKO_LAYERS, "hidden_features": ZUKO_HIDDEN}
    if family == "nsf":
        return zuko.flows.NSF(dim, bins=ZUKO_BINS, **kwargs)
    if family == "maf":
        return zuko.flows.MAF(dim, **kwargs)
    raise ValueError(f"unknown zuko family {family!r}")


def train_zuko(
    flow: torch.nn.Module,
    train: torch.Tensor,
    val: torch.Tensor,
    opt: dict[str, Any],
    budget: float | None,
    seed: int,
) -> dict[str, Any]:
    """Minimal fair training loop for a zuko flow: Adam, shuffled minibatches, global-norm
    gradient clipping, validation after every epoch, early stopping with ``patience``, the best
    validation state restored, and a wall-time budget checked at every step (as
    :func:`pyroflows.train.fit` does). A non-finite loss stops training (best state kept)."""
    params = list(flow.parameters())
    optimizer = torch.optim.Adam(params, lr=opt["lr"], weight_decay=opt["weight_decay"])
    generator = torch.Generator().manual_seed(seed)
    best, best_epoch, best_state, waited = math.inf, -1, None, 0
    times, val_losses, stop = [], [], "max_epochs"
    start = time.perf_counter()
    for epoch in range(opt["max_epochs"]):
        flow.train()
        out_of_time = False
        for index in torch.randperm(len(train), generator=generator).split(opt["batch_size"]):
            loss = -flow().log_prob(train[index]).mean()
            if not torch.isfinite(loss):
                stop = "diverged"
                break
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if opt["clip_grad"] is not None:
                torch.nn.utils.clip_grad_norm_(params, opt["clip_grad"])
            optimizer.step()
            if budget is not None and time.perf_counter() - start > budget:
                out_of_time = True
                break
        if stop == "diverged":
            break
        flow.eval()
        with torch.no_grad():
            val_loss = -float(flow().log_prob(val).mean())
        times.append(time.perf_counter() - start)
        val_losses.append(val_loss)
        if val_loss < best:
            best, best_epoch, waited = val_loss, epoch, 0
            best_state = copy.deepcopy(flow.state_dict())
        else:
            waited += 1
        if out_of_time:
            stop = "time_budget"
            break
        if waited >= opt["patience"]:
            stop = "early_stopping"
            break
    if best_state is not None:
        flow.load_state_dict(best_state)
    flow.eval()
    return {
        "epochs": len(val_losses),
        "best_epoch": best_epoch,
        "best_val_loss": best,
        "stop": stop,
        "curve": {"time": times, "val_loss": val_losses},
    }


def fit_zuko(
    family: str, train: np.ndarray, val: np.ndarray, test: np.ndarray, settings: Settings
) -> Fit:
    """zuko's NSF or MAF on standardised data; log-densities in the data's units."""
    loc, scale = train.mean(0), train.std(0)
    scale = np.where(scale > 0, scale, 1.0)
    log_jac = float(np.log(scale).sum())

    def tensor(x: np.ndarray) -> torch.Tensor:
        return torch.as_tensor((x - loc) / scale, dtype=torch.float32)

    torch.manual_seed(settings.seed)
    flow = build_zuko(family, train.shape[1])
    start = time.perf_counter()
    info = train_zuko(
        flow,
        tensor(train),
        tensor(val),
        optimiser_settings(settings),
        settings.budget,
        settings.seed,
    )
    seconds = time.perf_counter() - start
    # Validation losses in the data's units, comparable with pyroflows' history.
    info["best_val_loss"] += log_jac
    info["curve"]["val_loss"] = [v + log_jac for v in info["curve"]["val_loss"]]
    with torch.no_grad():
        log_q = flow().log_prob(tensor(test)).double().numpy() - log_jac
        info["val_log_prob"] = flow().log_prob(tensor(val)).double().numpy() - log_jac
    return Fit(log_q, seconds, info)


def fit_classical(
    kind: str, train: np.ndarray, val: np.ndarray, test: np.ndarray, settings: Settings
) -> Fit:
    """KDE, GMM or a single Gaussian; the validation split selects bandwidth / components."""
    models: dict[str, Callable[[], Any]] = {
        "kde": lambda: KDEDensity(random_state=settings.seed),
        "gmm": lambda: GMMDensity(
            max_components=settings.gmm_max_components, random_state=settings.seed
        ),
        "gaussian": lambda: GaussianDensity(),
    }
    model = models[kind]()
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(train, X_val=val)
    seconds = time.perf_counter() - start
    info: dict[str, Any] = {"warnings": sorted({str(w.message) for w in caught})}
    if kind == "kde":
        info["bandwidth"] = model.bandwidth_
    if kind == "gmm":
        info["n_components"] = model.n_components_
    return Fit(model.score_samples(test), seconds, info)


REAL_METHODS: dict[str, Callable[..., Fit]] = {
    "pyroflows default": fit_pyroflows,
    "zuko NSF": lambda *a: fit_zuko("nsf", *a),
    "zuko MAF": lambda *a: fit_zuko("maf", *a),
    "KDE": lambda *a: fit_classical("kde", *a),
    "GMM": lambda *a: fit_classical("gmm", *a),
    "Gaussian": lambda *a: fit_classical("gaussian", *a),
}


# -- the three measurements ---------------------------------------------------------------------
def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def load_real(name: str, seed: int) -> datasets.Dataset:
    return datasets.load(name, seed=seed, **LOADER_OPTIONS.get(name, {}))


def attempt(fit: Callable[..., Fit], *args: Any, **kwargs: Any) -> Fit:
    """Run one fit; a failure is recorded (NaN log-densities and the error) instead of raised,
    so that one broken method does not end the run."""
    start = time.perf_counter()
    try:
        return fit(*args, **kwargs)
    except Exception as err:  # noqa: BLE001 - reported in the table
        n = len(args[2])
        seconds = time.perf_counter() - start
        return Fit(np.full(n, np.nan), seconds, {"error": f"{type(err).__name__}: {err}"})


def summary(info: dict[str, Any]) -> dict[str, Any]:
    """What a table row keeps of a fit's ``info``: no curves, no per-row arrays."""
    return {k: v for k, v in info.items() if k not in ("curve", "val_log_prob")}


def estimate(values: np.ndarray, fn: Callable[[np.ndarray], Any]) -> tuple[float, float]:
    """``fn`` (a diagnostics estimator) of ``values``; NaN when a fit failed."""
    if np.isnan(values).any():
        return math.nan, math.nan
    return tuple(fn(values))


def real_data(settings: Settings) -> list[dict[str, Any]]:
    """Test log-likelihood of every method on every real data set."""
    rows = []
    for name in settings.datasets:
        data = load_real(name, settings.seed)
        reference = None
        for method, fit in REAL_METHODS.items():
            result = attempt(fit, data.train, data.val, data.test, settings)
            ll, se = estimate(result.log_prob, diagnostics.test_log_likelihood)
            if reference is None:  # the default estimator comes first
                reference = result.log_prob
            diff, diff_se = estimate(reference - result.log_prob, diagnostics.test_log_likelihood)
            info = summary(result.info)
            rows.append(
                {
                    "dataset": name,
                    "shape": [len(data.train), len(data.val), len(data.test), data.dim],
                    "method": method,
                    "test_ll": ll,
                    "stderr": se,
                    "default_minus_method": diff,
                    "default_minus_method_stderr": diff_se,
                    "seconds": result.seconds,
                    **info,
                }
            )
            log(f"{name:14s} {method:18s} {ll:.4g} ± {se:.2g}  ({result.seconds:.1f} s, {info})")
    return rows


def load_mixture(k: int, settings: Settings) -> datasets.Dataset:
    return datasets.load("mixture_2d", seed=settings.seed, n=settings.mixture_n, n_components=k)


def mixtures(settings: Settings) -> list[dict[str, Any]]:
    """Monte-Carlo KL(p || q) of the default NSF and of MAF by depth on the 2-D mixtures."""
    models: dict[str, dict[str, Any]] = {"NSF (default)": {}}
    models.update(
        {f"MAF-{depth}": {"flow": "maf", "layers": depth} for depth in settings.maf_depths}
    )
    rows = []
    for k in settings.components:
        data = load_mixture(k, settings)
        p = data.distribution
        draws = p.sample(settings.kl_draws, seed=10_000 + settings.seed)  # not the training draws
        log_p = p.log_prob(draws)
        for label, overrides in models.items():
            result = attempt(fit_pyroflows, data.train, data.val, draws, settings, **overrides)
            kl, se = estimate(result.log_prob, partial(diagnostics.kl_monte_carlo, log_p))
            info = summary(result.info)
            rows.append(
                {
                    "components": k,
                    "model": label,
                    "kl": kl,
                    "stderr": se,
                    "seconds": result.seconds,
                    **info,
                }
            )
            log(f"mixture K={k:2d} {label:14s} KL {kl:.4g} ± {se:.2g}  ({result.seconds:.1f} s)")
    return rows


def load_race_data(settings: Settings) -> datasets.Dataset:
    if settings.race_data.startswith("mixture_2d-"):
        return load_mixture(int(settings.race_data.split("-")[1]), settings)
    return load_real(settings.race_data, settings.seed)


def first_time_at_or_below(curve: dict[str, list[float]], target: float) -> float | None:
    """Wall time of the first epoch whose validation loss is at most ``target``."""
    for t, v in zip(curve["time"], curve["val_loss"], strict=True):
        if v <= target:
            return t
    return None


def race(settings: Settings) -> dict[str, Any]:
    """Validation loss against wall time for pyroflows' NSF and zuko's NSF (same settings)."""
    data = load_race_data(settings)
    arch = {"flow": "nsf", "layers": ZUKO_LAYERS, "hidden": ZUKO_HIDDEN, "bins": ZUKO_BINS}
    matched = {**arch, **optimiser_settings(settings)}
    matched["validation_fraction"] = 0.0  # the validation split is passed explicitly
    if "whiten" in DensityEstimator().get_params():
        matched["whiten"] = False  # zuko's input is standardised per column, not whitened
    zuko = fit_zuko("nsf", data.train, data.val, data.test, settings)
    ours = fit_pyroflows(data.train, data.val, data.test, settings, **matched)
    target = zuko.info["best_val_loss"]
    reached = first_time_at_or_below(ours.info["curve"], target)
    zuko_time = zuko.info["curve"]["time"][zuko.info["best_epoch"]]
    ours_best = ours.info["best_val_loss"]
    # Paired over the validation rows: pyroflows' loss minus zuko's, both at their best state.
    gap = diagnostics.test_log_likelihood(zuko.info["val_log_prob"] - ours.info["val_log_prob"])
    result = {
        "data": settings.race_data,
        "settings": matched,
        "zuko_best_val_loss": target,
        "zuko_best_epoch": zuko.info["best_epoch"],
        "zuko_seconds_to_best": zuko_time,
        "zuko_total_seconds": zuko.seconds,
        "pyroflows_minus_zuko_val_loss": gap.value,
        "pyroflows_minus_zuko_val_loss_stderr": gap.stderr,
        "pyroflows_best_val_loss": ours_best,
        "pyroflows_best_epoch": ours.info["best_epoch"],
        "pyroflows_seconds_to_best": ours.info["curve"]["time"][ours.info["best_epoch"]],
        "pyroflows_seconds_to_zuko_best": reached,
        "zuko_seconds_to_pyroflows_best": first_time_at_or_below(zuko.info["curve"], ours_best),
        "pyroflows_total_seconds": ours.seconds,
        "pyroflows_epochs_per_second": ours.info["epochs"] / ours.info["curve"]["time"][-1],
        "zuko_epochs_per_second": zuko.info["epochs"] / zuko.info["curve"]["time"][-1],
        "zuko_curve": zuko.info["curve"],
        "pyroflows_curve": ours.info["curve"],
    }
    log(
        f"race on {settings.race_data}: zuko best {target:.4f} at {zuko_time:.1f} s; "
        f"pyroflows reached it at {reached}"
    )
    return result


# -- report -------------------------------------------------------------------------------------
def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]], align: str = "") -> str:
    """A Markdown table; ``align`` holds one of ``l``/``r`` per column (default: first left)."""
    align = align or "l" + "r" * (len(header) - 1)
    rule = ["---" if a == "l" else "---:" for a in align]
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "|".join(rule) + "|"]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return "\n".join(lines)


def pm(value: float, stderr: float, digits: int = 3) -> str:
    if math.isnan(value):
        return "failed"
    return f"{value:.{digits}f} ± {stderr:.{digits}f}"


def seconds(row: dict[str, Any]) -> str:
    """Fit wall time; ``†`` marks a fit stopped by the time budget."""
    return f"{row['seconds']:.1f}" + (" †" if row.get("stop") == "time_budget" else "")


def real_tables(rows: list[dict[str, Any]]) -> str:
    names = list(dict.fromkeys(r["dataset"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    cell = {(r["dataset"], r["method"]): r for r in rows}
    shapes = {r["dataset"]: r["shape"] for r in rows}
    header = ["method"] + [
        f"{n} ({shapes[n][0]}/{shapes[n][1]}/{shapes[n][2]} × {shapes[n][3]})" for n in names
    ]
    ll = [[m] + [pm(cell[n, m]["test_ll"], cell[n, m]["stderr"]) for n in names] for m in methods]
    diff = [
        [m]
        + [
            pm(cell[n, m]["default_minus_method"], cell[n, m]["default_minus_method_stderr"])
            for n in names
        ]
        for m in methods[1:]
    ]
    secs = [[m] + [seconds(cell[n, m]) for n in names] for m in methods]
    return (
        "Test log-likelihood per row (nats, higher is better), mean ± standard error over the "
        "test rows; train/validation/test rows × columns in the header.\n\n"
        + markdown_table(header, ll)
        + "\n\nPaired difference, default estimator minus each method, on the same test rows "
        "(positive: the default estimator is better).\n\n"
        + markdown_table(header, diff)
        + "\n\nFit wall time (s; † stopped by the time budget).\n\n"
        + markdown_table(header, secs)
    )


def mixture_table(rows: list[dict[str, Any]]) -> str:
    models = list(dict.fromkeys(r["model"] for r in rows))
    ks = list(dict.fromkeys(r["components"] for r in rows))
    cell = {(r["components"], r["model"]): r for r in rows}
    body = [[f"{k}"] + [pm(cell[k, m]["kl"], cell[k, m]["stderr"], 4) for m in models] for k in ks]
    secs = [[f"{k}"] + [seconds(cell[k, m]) for m in models] for k in ks]
    passed = sum(cell[k, models[0]]["kl"] <= KL_TARGET for k in ks)
    return (
        "KL(p || q) in nats (lower is better), Monte-Carlo mean ± standard error on fresh draws "
        f"of p. Target for the default NSF: KL <= {KL_TARGET} (met on {passed} of {len(ks)}).\n\n"
        + markdown_table(["components"] + models, body)
        + "\n\nFit wall time (s; † stopped by the time budget).\n\n"
        + markdown_table(["components"] + models, secs)
    )


def race_table(r: dict[str, Any]) -> str:
    def when(seconds: float | None) -> str:
        return "not reached" if seconds is None else f"{seconds:.1f}"

    rows = [
        ["zuko's best validation loss (nats)", f"{r['zuko_best_val_loss']:.4f}"],
        [
            "wall time zuko took to reach it (s; epoch)",
            f"{r['zuko_seconds_to_best']:.1f} ({r['zuko_best_epoch'] + 1})",
        ],
        ["wall time pyroflows took to reach it (s)", when(r["pyroflows_seconds_to_zuko_best"])],
        ["pyroflows' best validation loss (nats)", f"{r['pyroflows_best_val_loss']:.4f}"],
        [
            "pyroflows minus zuko at their best states (nats; paired ± standard error)",
            pm(r["pyroflows_minus_zuko_val_loss"], r["pyroflows_minus_zuko_val_loss_stderr"], 4),
        ],
        [
            "wall time pyroflows took to reach its best (s; epoch)",
            f"{r['pyroflows_seconds_to_best']:.1f} ({r['pyroflows_best_epoch'] + 1})",
        ],
        [
            "wall time zuko took to reach pyroflows' best (s)",
            when(r["zuko_seconds_to_pyroflows_best"]),
        ],
        [
            "epochs per second, pyroflows / zuko",
            f"{r['pyroflows_epochs_per_second']:.2f} / {r['zuko_epochs_per_second']:.2f}",
        ],
    ]
    return (
        f"Data: {r['data']}. Both NSF with {ZUKO_LAYERS} layers, hidden {ZUKO_HIDDEN}, "
        f"{ZUKO_BINS} bins; settings {json.dumps(r['settings'])}. A difference of best "
        "validation losses within about two paired standard errors is a tie: which epoch "
        "lands lowest is then largely chance.\n\n" + markdown_table(["", "value"], rows)
    )


def git_commit() -> str | None:
    """The checkout's commit, with ``+dirty`` when pyroflows/ has uncommitted changes."""
    try:
        run = partial(subprocess.run, cwd=ROOT, capture_output=True, text=True, check=True)
        commit = run(["git", "rev-parse", "--short", "HEAD"]).stdout.strip()
        dirty = run(["git", "status", "--porcelain", "--", "pyroflows"]).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("+dirty" if dirty else "")


def machine(threads: int) -> dict[str, Any]:
    versions = {}
    for package in ("torch", "pyro-ppl", "zuko", "scikit-learn", "pyroflows"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "versions": versions,
        "threads": threads,
        "cpus": os.cpu_count(),
        "pyroflows_commit": git_commit(),
        "load_avg_1min_at_start": LOAD_AT_START,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def report(info: dict[str, Any], settings: Settings, results: dict[str, Any]) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items())
    defaults = {
        k: list(v) if isinstance(v, tuple) else v
        for k, v in DensityEstimator().get_params().items()
        if k not in ("progress", "device", "random_state", "time_budget")
    }
    parts = [
        "# Quality: density estimation, pyroflows vs zuko, KDE, GMM\n",
        f"{info['date']} · {info['platform']} · {info['processor']} · Python {info['python']} · "
        f"{info['threads']} torch thread(s) · pyroflows commit {info['pyroflows_commit']} · "
        f"load average {info['load_avg_1min_at_start']:.1f} "
        f"at start · {versions}. Seed {settings.seed}, budget {settings.budget:g} s per fit, "
        f"total {results['seconds']:.0f} s. Method: see the docstring of "
        "`benchmarks/quality.py`.\n",
        f"Default estimator: `{json.dumps(defaults)}`.\n",
    ]
    if "real" in results:
        parts += ["## Real data\n", real_tables(results["real"]) + "\n"]
    if "mixtures" in results:
        parts += ["## 2-D Gaussian mixtures\n", mixture_table(results["mixtures"]) + "\n"]
    if "race" in results:
        parts += ["## Time to zuko's best\n", race_table(results["race"]) + "\n"]
    failures = [
        f"- {r.get('dataset', r.get('components'))} / {r.get('method', r.get('model'))}: "
        f"{r['error']}"
        for part in ("real", "mixtures")
        for r in results.get(part, [])
        if "error" in r
    ]
    if failures:
        parts += ["## Failed fits\n", "\n".join(failures) + "\n"]
    return "\n".join(parts)


# -- command line -------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="smoke check with tiny sizes; prints only"
    )
    parser.add_argument(
        "--datasets",
        nargs="+",
        default=list(REAL_DATASETS),
        choices=REAL_DATASETS,
        help="real data sets (default: all three)",
    )
    parser.add_argument("--budget", type=float, default=None, help="seconds per fit (90)")
    parser.add_argument("--seed", type=int, default=0, help="seed of splits, draws and fits")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (1)")
    parser.add_argument(
        "--parts",
        nargs="+",
        default=["real", "mixtures", "race"],
        choices=["real", "mixtures", "race"],
        help="which measurements to run",
    )
    parser.add_argument(
        "--race-data", default="mixture_2d-4", help="data of the race: mixture_2d-K or a real name"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="folder for quality.md and quality.json (default benchmarks/results; "
        "with --quick nothing is written unless given)",
    )
    args = parser.parse_args(argv)
    if args.out is None and not args.quick:
        args.out = RESULTS
    return args


def make_settings(args: argparse.Namespace) -> Settings:
    if args.quick:
        return Settings(
            datasets=args.datasets,
            budget=args.budget or 3.0,
            seed=args.seed,
            mixture_n=600,
            kl_draws=1000,
            components=(1, 4),
            maf_depths=(1, 3),
            race_data=args.race_data,
            max_epochs=5,
            gmm_max_components=3,
        )
    return Settings(
        datasets=args.datasets, budget=args.budget or 90.0, seed=args.seed, race_data=args.race_data
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    settings = make_settings(args)
    info = machine(args.threads)
    start = time.perf_counter()
    results: dict[str, Any] = {}
    if "real" in args.parts:
        results["real"] = real_data(settings)
    if "mixtures" in args.parts:
        results["mixtures"] = mixtures(settings)
    if "race" in args.parts:
        results["race"] = race(settings)
    results["seconds"] = time.perf_counter() - start
    text = report(info, settings, results)
    print(text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "quality.md").write_text(text)
        payload = {"machine": info, "settings": settings.__dict__, "results": results}
        (args.out / "quality.json").write_text(json.dumps(payload, indent=2, default=list) + "\n")


if __name__ == "__main__":
    main()
