"""Density-estimation quality of pyroflows' default ``DensityEstimator`` against zuko, KDE, GMM.

Measures the targets of issue 7 (sections 3 and 4) in one run and prints Markdown tables with
ratios (written to ``benchmarks/results/quality.md`` and ``quality.json`` in a full run):

1. **2-D Gaussian mixtures** (``datasets.load("mixture_2d", n_components=K, n=5000, seed)``,
   K = 2, 4, 7, 10, unit components with neighbouring means 5 sqrt(2) apart, 3500/750/750
   train/validation/test rows): ``KL(p || q) = E_p[log p - log q]`` estimated on 20 000 fresh
   draws of ``p`` with the exact ``log p`` (:func:`pyroflows.diagnostics.kl_monte_carlo`),
   ± its Monte-Carlo standard error, for the default estimator, KDE and GMM, and the ratio
   default / KDE. Target: KL <= 0.015 nats and below KDE for every K.

2. **Real data** (70/15/15 train/validation/test): ``breast_cancer`` (569 x 30), ``digits``
   (1797 x 64; ``dequantize=True`` adds U[0, 1) noise to the integer pixels and
   ``drop_constant=True`` drops the pixels constant on the training split, leaving 60 columns
   with seed 0; the numbers are then a lower bound of the discrete log-likelihood),
   ``airports`` (``contiguous_us=True``, 2-D longitude/latitude) and ``china_pixels``
   (:func:`load_china_pixels`: 30 000 RGB pixels drawn without replacement from the
   ``china.jpg`` sample image that ships inside scikit-learn, dequantised with U[0, 1) noise;
   21 000/4 500/4 500 rows x 3; nothing is downloaded). Every method fits the training split,
   may use the validation split for early stopping or model selection, and is scored on the
   test split: mean test log-likelihood per row in the data's units ± its standard error over
   the test rows (:func:`pyroflows.diagnostics.test_log_likelihood`). Methods:

   * ``pyroflows default``: ``DensityEstimator(random_state=seed, time_budget=budget)``, with
     no other argument: whatever the library's defaults are, untouched, on every data set.
   * ``zuko NSF`` / ``zuko MAF``: ``zuko.flows.NSF`` / ``MAF`` with ``ZUKO_LAYERS`` layers,
     ``ZUKO_HIDDEN`` hidden units and ``ZUKO_BINS`` bins (NSF), trained by :func:`train_zuko`
     with ``ZUKO_TRAINING`` (Adam 1e-3, batch 256, global-norm clipping 5, patience 50, at most
     500 epochs, best validation state restored: the loop settings this benchmark has always
     given zuko, frozen here so that a change of the library's defaults does not change the
     peer) on the same data standardised with the training mean and standard deviation, and
     the same wall-time budget. Its log-density is reported in the data's units:
     ``log q_std((x - m) / s) - sum(log s)``.
   * ``KDE``: :class:`pyroflows.baselines.KDEDensity`, bandwidth chosen on the validation
     split. ``GMM``: :class:`pyroflows.baselines.GMMDensity` (full covariances, 1 to 10
     components chosen on the validation split). ``Gaussian``:
     :class:`pyroflows.baselines.GaussianDensity`.

   Target: the default's test log-likelihood above the best of zuko NSF, zuko MAF, KDE and GMM
   by at least one standard error. The margin table gives the paired difference (default minus
   the best peer, on the same test rows) ± its standard error, and the margin in units of that
   paired standard error and of the default's own (unpaired) test standard error.

3. **Time to quality** on ``mixture_2d-4``, ``airports`` and ``breast_cancer``: zuko NSF's best
   validation loss (mean negative log-likelihood in the data's units), the wall time zuko took
   to reach it, and the wall time the default estimator took to first reach a validation loss
   at least as good (from ``est.history_.time`` / ``est.history_.val_loss``, seconds since the
   start of training against the validation loss after each epoch, in the data's units); the
   ratio pyroflows / zuko. Target: ratio <= 0.5. The fits are those of parts 1 and 2 (a zuko NSF
   is added for the mixture), so the race costs one extra zuko fit.

Timings depend on the machine and its load (the load average at the start is recorded); on a
shared machine they are noisy, and a loaded machine also changes results where a fit is
stopped by the time budget (marked †). Threads: ``torch.set_num_threads(--threads)``, default 1
(these small networks gain nothing from a second thread and suffer badly from
oversubscription).

Usage::

    python benchmarks/quality.py                    # full run, writes benchmarks/results/
    python benchmarks/quality.py --quick            # smoke check (tiny sizes, < 1 min), prints only
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
from dataclasses import dataclass
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

from _scoring import Fit, attempt, time_to  # noqa: E402

from pyroflows import datasets, diagnostics  # noqa: E402
from pyroflows.baselines import GaussianDensity, GMMDensity, KDEDensity  # noqa: E402
from pyroflows.density import DensityEstimator  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
REAL_DATASETS = ("breast_cancer", "digits", "airports", "china_pixels")
LOADER_OPTIONS: dict[str, dict[str, Any]] = {
    "breast_cancer": {},
    "digits": {"dequantize": True, "drop_constant": True},
    "airports": {"contiguous_us": True},
}
MIXTURE_COMPONENTS = (2, 4, 7, 10)
MIXTURE_N = 5000
KL_DRAWS = 20_000
KL_TARGET = 0.015
RACE_DATA = ("mixture_2d-4", "airports", "breast_cancer")
RACE_TARGET = 0.5
PEERS = ("zuko NSF", "zuko MAF", "KDE", "GMM")  # the default must beat the best of these
ZUKO_LAYERS = 5
ZUKO_HIDDEN = (128, 128)
ZUKO_BINS = 8
ZUKO_TRAINING: dict[str, Any] = {
    "lr": 1e-3,
    "weight_decay": 0.0,
    "batch_size": 256,
    "clip_grad": 5.0,
    "patience": 50,
    "max_epochs": 500,
}
LOAD_AT_START = os.getloadavg()[0]


@dataclass
class Settings:
    """Sizes of one run (``--quick`` shrinks them)."""

    datasets: Sequence[str]
    budget: float
    seed: int
    mixture_n: int = MIXTURE_N
    kl_draws: int = KL_DRAWS
    components: Sequence[int] = MIXTURE_COMPONENTS
    race_data: Sequence[str] = RACE_DATA
    zuko_max_epochs: int = ZUKO_TRAINING["max_epochs"]
    gmm_max_components: int = 10
    china_rows: int = 30_000


def load_china_pixels(seed: int = 0, n: int = 30_000) -> datasets.Dataset:
    """``n`` RGB pixels of scikit-learn's bundled ``china.jpg`` (427 x 640), drawn without
    replacement with ``seed``, dequantised with U[0, 1) noise (so the data lie in [0, 256)^3),
    split 70/15/15 with ``seed``. Offline: the image ships inside scikit-learn."""
    from sklearn.datasets import load_sample_image

    pixels = load_sample_image("china.jpg").reshape(-1, 3).astype(np.float64)
    rng = np.random.default_rng(seed)
    x = pixels[rng.choice(len(pixels), size=n, replace=False)] + rng.uniform(size=(n, 3))
    train, val, test = datasets.split(x, seed=seed)
    return datasets.Dataset(
        "china_pixels", x[train], x[val], x[test], feature_names=("red", "green", "blue")
    )


# -- method families: each returns log-densities on the evaluation points ------------------------
def default_estimator(settings: Settings) -> DensityEstimator:
    """``DensityEstimator`` at the library's defaults, plus the seed and the time budget."""
    return DensityEstimator(random_state=settings.seed, time_budget=settings.budget)


def history_curve(est: Any) -> dict[str, list[float]] | None:
    """Validation loss (data units) against wall time since the start of ``fit``, from the
    estimator's ``candidates_`` (every member of the portfolio, in the order they were
    trained, on one clock) or its ``history_``; None if it has none."""
    histories = [c["history"] for c in getattr(est, "candidates_", [])]
    if not histories and getattr(est, "history_", None) is not None:
        histories = [est.history_]
    t = [float(x) for h in histories for x in h.time]
    v = [float(x) for h in histories for x in h.val_loss]
    if not t or len(t) != len(v):
        return None
    return {"time": t, "val_loss": v}


def fit_pyroflows(train: np.ndarray, val: np.ndarray, test: np.ndarray, settings: Settings) -> Fit:
    """The default ``DensityEstimator``: library defaults only."""
    est = default_estimator(settings)
    start = time.perf_counter()
    est.fit(train, X_val=val)
    seconds = time.perf_counter() - start
    h = getattr(est, "history_", None)
    val_log_prob = est.score_samples(val)
    info = {
        "epochs": len(getattr(h, "val_loss", []) or []),
        "best_epoch": getattr(h, "best_epoch", None),
        "best_val_loss": float(-np.mean(val_log_prob)),
        "stop": getattr(h, "stop_reason", None),
        "curve": history_curve(est),
        "val_log_prob": val_log_prob,
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
    opt = {**ZUKO_TRAINING, "max_epochs": settings.zuko_max_epochs}
    info = train_zuko(flow, tensor(train), tensor(val), opt, settings.budget, settings.seed)
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
MIXTURE_METHODS: dict[str, Callable[..., Fit]] = {
    "pyroflows default": fit_pyroflows,
    "KDE": lambda *a: fit_classical("kde", *a),
    "GMM": lambda *a: fit_classical("gmm", *a),
}


# -- the three measurements ---------------------------------------------------------------------
def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def load_real(name: str, settings: Settings) -> datasets.Dataset:
    if name == "china_pixels":
        return load_china_pixels(settings.seed, settings.china_rows)
    return datasets.load(name, seed=settings.seed, **LOADER_OPTIONS.get(name, {}))


def load_mixture(k: int, settings: Settings) -> datasets.Dataset:
    return datasets.load("mixture_2d", seed=settings.seed, n=settings.mixture_n, n_components=k)


def summary(info: dict[str, Any]) -> dict[str, Any]:
    """What a table row keeps of a fit's ``info``: no curves, no per-row arrays."""
    return {k: v for k, v in info.items() if k not in ("curve", "val_log_prob")}


def estimate(values: np.ndarray, fn: Callable[[np.ndarray], Any]) -> tuple[float, float]:
    """``fn`` (a diagnostics estimator) of ``values``; NaN when a fit failed."""
    if np.isnan(values).any():
        return math.nan, math.nan
    return tuple(float(v) for v in fn(values))


def real_data(settings: Settings, curves: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Test log-likelihood of every method on every real data set, and the paired margin of
    the default over each method. Curves of the default and of zuko NSF go into ``curves``."""
    rows = []
    for name in settings.datasets:
        data = load_real(name, settings)
        reference = None
        for method, fit in REAL_METHODS.items():
            result = attempt(len(data.test), fit, data.train, data.val, data.test, settings)
            ll, se = estimate(result.log_prob, diagnostics.test_log_likelihood)
            if reference is None:  # the default estimator comes first
                reference = result.log_prob
            diff, diff_se = estimate(reference - result.log_prob, diagnostics.test_log_likelihood)
            if method in ("pyroflows default", "zuko NSF") and "error" not in result.info:
                curves.setdefault(name, {})[method] = result.info
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


def mixtures(settings: Settings, curves: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Monte-Carlo KL(p || q) of the default estimator, KDE and GMM on the 2-D mixtures."""
    rows = []
    for k in settings.components:
        data = load_mixture(k, settings)
        p = data.distribution
        draws = p.sample(settings.kl_draws, seed=10_000 + settings.seed)  # not the training draws
        log_p = p.log_prob(draws)
        for label, fit in MIXTURE_METHODS.items():
            result = attempt(len(draws), fit, data.train, data.val, draws, settings)
            kl, se = estimate(result.log_prob, partial(diagnostics.kl_monte_carlo, log_p))
            if label == "pyroflows default" and "error" not in result.info:
                curves.setdefault(f"mixture_2d-{k}", {})[label] = result.info
            rows.append(
                {
                    "components": k,
                    "model": label,
                    "kl": kl,
                    "stderr": se,
                    "seconds": result.seconds,
                    **summary(result.info),
                }
            )
            log(f"mixture K={k:2d} {label:18s} KL {kl:.4g} ± {se:.2g}  ({result.seconds:.1f} s)")
    return rows


def race(settings: Settings, curves: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Wall time of the default estimator to reach zuko NSF's best validation loss, against
    zuko's time to it; fits of parts 1 and 2 are reused, missing ones are made here."""
    rows = []
    for name in settings.race_data:
        have = curves.setdefault(name, {})
        missing = [m for m in ("pyroflows default", "zuko NSF") if m not in have]
        if missing:
            if name.startswith("mixture_2d-"):
                data = load_mixture(int(name.split("-")[1]), settings)
            else:
                data = load_real(name, settings)
            for method in missing:
                result = attempt(
                    len(data.test), REAL_METHODS[method], data.train, data.val, data.test, settings
                )
                if "error" not in result.info:
                    have[method] = result.info
        if len(have) < 2:
            log(f"race on {name}: a fit failed, skipped")
            continue
        ours, zuko = have["pyroflows default"], have["zuko NSF"]
        target = zuko["best_val_loss"]
        zuko_time = zuko["curve"]["time"][zuko["best_epoch"]]
        reached = time_to(ours["curve"], target)
        # Paired over the validation rows: zuko's loss minus the default's, both final states.
        gap = diagnostics.test_log_likelihood(ours["val_log_prob"] - zuko["val_log_prob"])
        rows.append(
            {
                "data": name,
                "zuko_best_val_loss": target,
                "zuko_best_epoch": zuko["best_epoch"],
                "zuko_seconds_to_best": zuko_time,
                "pyroflows_final_val_loss": ours["best_val_loss"],
                "pyroflows_seconds_to_zuko_best": reached,
                "ratio": None if reached is None else reached / zuko_time,
                "pyroflows_minus_zuko_val_ll": gap.value,
                "pyroflows_minus_zuko_val_ll_stderr": gap.stderr,
                "has_curve": ours["curve"] is not None,
                "zuko_curve": zuko["curve"],
                "pyroflows_curve": ours["curve"],
            }
        )
        log(f"race on {name}: zuko best {target:.4f} at {zuko_time:.1f} s; default at {reached}")
    return rows


# -- report -------------------------------------------------------------------------------------
def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]], align: str = "") -> str:
    """A Markdown table; ``align`` holds one of ``l``/``r`` per column (default: first left)."""
    align = align or "l" + "r" * (len(header) - 1)
    rule = ["---" if a == "l" else "---:" for a in align]
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "|".join(rule) + "|"]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return "\n".join(lines)


def pm(value: float, stderr: float, digits: int = 3) -> str:
    if value is None or math.isnan(value):
        return "failed"
    return f"{value:.{digits}f} ± {stderr:.{digits}f}"


def seconds(row: dict[str, Any]) -> str:
    """Fit wall time; ``†`` marks a fit stopped by the time budget."""
    stop = str(row.get("stop") or "")
    return f"{row['seconds']:.1f}" + (" †" if "budget" in stop else "")


def yes_no(ok: bool) -> str:
    return "**yes**" if ok else "no"


def real_tables(rows: list[dict[str, Any]]) -> str:
    names = list(dict.fromkeys(r["dataset"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    cell = {(r["dataset"], r["method"]): r for r in rows}
    shapes = {r["dataset"]: r["shape"] for r in rows}
    header = ["method"] + [
        f"{n} ({shapes[n][0]}/{shapes[n][1]}/{shapes[n][2]} × {shapes[n][3]})" for n in names
    ]
    ll = [[m] + [pm(cell[n, m]["test_ll"], cell[n, m]["stderr"]) for n in names] for m in methods]
    margin = []
    met = 0
    for n in names:
        ours = cell[n, "pyroflows default"]
        peers = [
            cell[n, m] for m in PEERS if (n, m) in cell and not math.isnan(cell[n, m]["test_ll"])
        ]
        if not peers or math.isnan(ours["test_ll"]):
            margin.append([n, "-", "-", "-", "-", "-"])
            continue
        best = max(peers, key=lambda r: r["test_ll"])
        diff, diff_se = best["default_minus_method"], best["default_minus_method_stderr"]
        ok = diff >= diff_se
        met += ok
        margin.append(
            [
                n,
                best["method"],
                pm(diff, diff_se),
                f"{diff / diff_se:.1f}" if diff_se > 0 else "-",
                f"{diff / ours['stderr']:.2f}" if ours["stderr"] > 0 else "-",
                yes_no(ok),
            ]
        )
    diff = [
        [m]
        + [
            pm(cell[n, m]["default_minus_method"], cell[n, m]["default_minus_method_stderr"])
            for n in names
        ]
        for m in methods[1:]
    ]
    secs = [[m] + [seconds(cell[n, m]) for n in names] for m in methods]
    ratio = [
        [m]
        + [
            f"{cell[n, m]['seconds'] / max(cell[n, 'pyroflows default']['seconds'], 1e-9):.2f}"
            for n in names
        ]
        for m in methods[1:]
    ]
    return (
        "Test log-likelihood per row (nats, higher is better), mean ± standard error over the "
        "test rows; train/validation/test rows × columns in the header.\n\n"
        + markdown_table(header, ll)
        + "\n\nMargin of the default over the best peer (of "
        + ", ".join(PEERS)
        + "): paired difference on the same test rows ± its standard error, the margin in paired "
        "standard errors and in the default's own test standard errors. Target: margin ≥ 1 "
        f"paired standard error (met on {met} of {len(names)}).\n\n"
        + markdown_table(
            ["data", "best peer", "default − best peer", "in paired SE", "in test SE", "target"],
            margin,
        )
        + "\n\nPaired difference, default estimator minus each method, on the same test rows "
        "(positive: the default estimator is better).\n\n"
        + markdown_table(header, diff)
        + "\n\nFit wall time (s; † stopped by the time budget).\n\n"
        + markdown_table(header, secs)
        + "\n\nFit wall time relative to the default estimator's.\n\n"
        + markdown_table(header, ratio)
    )


def mixture_table(rows: list[dict[str, Any]]) -> str:
    models = list(dict.fromkeys(r["model"] for r in rows))
    ks = list(dict.fromkeys(r["components"] for r in rows))
    cell = {(r["components"], r["model"]): r for r in rows}
    ours = "pyroflows default"
    body, met = [], 0
    for k in ks:
        kl = cell[k, ours]["kl"]
        kde = cell.get((k, "KDE"), {}).get("kl", math.nan)
        ok = bool(kl <= KL_TARGET and kl < kde)
        met += ok
        body.append(
            [f"{k}"]
            + [pm(cell[k, m]["kl"], cell[k, m]["stderr"], 4) for m in models]
            + [f"{kl / kde:.2f}" if kde > 0 else "-", yes_no(ok)]
        )
    secs = [[f"{k}"] + [seconds(cell[k, m]) for m in models] for k in ks]
    return (
        "KL(p || q) in nats (lower is better), Monte-Carlo mean ± standard error on fresh draws "
        f"of p. Target for the default: KL ≤ {KL_TARGET} and below KDE (met on {met} of "
        f"{len(ks)}).\n\n"
        + markdown_table(["components"] + models + ["default / KDE", "target"], body)
        + "\n\nFit wall time (s; † stopped by the time budget).\n\n"
        + markdown_table(["components"] + models, secs)
    )


def race_table(rows: list[dict[str, Any]]) -> str:
    def when(value: float | None) -> str:
        return "not reached" if value is None else f"{value:.1f}"

    body, met = [], 0
    for r in rows:
        ok = r["ratio"] is not None and r["ratio"] <= RACE_TARGET
        met += ok
        body.append(
            [
                r["data"],
                f"{r['zuko_best_val_loss']:.4f}",
                f"{r['zuko_seconds_to_best']:.1f} ({r['zuko_best_epoch'] + 1})",
                when(r["pyroflows_seconds_to_zuko_best"])
                + ("" if r["has_curve"] else " (no history)"),
                "-" if r["ratio"] is None else f"{r['ratio']:.2f}",
                f"{r['pyroflows_final_val_loss']:.4f}",
                pm(r["pyroflows_minus_zuko_val_ll"], r["pyroflows_minus_zuko_val_ll_stderr"], 4),
                yes_no(ok),
            ]
        )
    return (
        "Validation loss = mean negative log-likelihood on the validation split, data units. "
        "zuko NSF: "
        f"{ZUKO_LAYERS} layers, hidden {ZUKO_HIDDEN}, {ZUKO_BINS} bins, "
        f"{json.dumps(ZUKO_TRAINING)}. Time to zuko's best = first epoch of the default whose "
        f"validation loss is at most zuko's best. Target: ratio ≤ {RACE_TARGET} (met on {met} "
        f"of {len(rows)}).\n\n"
        + markdown_table(
            [
                "data",
                "zuko best val loss",
                "zuko time to it (s; epoch)",
                "default time to it (s)",
                "ratio default / zuko",
                "default final val loss",
                "default − zuko val LL (paired)",
                "target",
            ],
            body,
        )
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


def jsonable(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)


def report(info: dict[str, Any], settings: Settings, results: dict[str, Any]) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items())
    defaults = {
        k: v
        for k, v in jsonable(DensityEstimator().get_params()).items()
        if k not in ("progress", "device", "random_state", "time_budget")
    }
    parts = [
        "# Quality: density estimation, pyroflows' default vs zuko, KDE, GMM\n",
        f"{info['date']} · {info['platform']} · {info['processor']} · Python {info['python']} · "
        f"{info['threads']} torch thread(s) · pyroflows commit {info['pyroflows_commit']} · "
        f"load average {info['load_avg_1min_at_start']:.1f} "
        f"at start · {versions}. Seed {settings.seed}, budget {settings.budget:g} s per fit, "
        f"total {results['seconds']:.0f} s. Method: see the docstring of "
        "`benchmarks/quality.py`.\n",
        f"Default estimator: `{json.dumps(defaults)}`.\n",
    ]
    if results.get("mixtures"):
        parts += ["## 2-D Gaussian mixtures\n", mixture_table(results["mixtures"]) + "\n"]
    if results.get("real"):
        parts += ["## Real data\n", real_tables(results["real"]) + "\n"]
    if results.get("race"):
        parts += [
            "## Time to quality: time to zuko NSF's best\n",
            race_table(results["race"]) + "\n",
        ]
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
        help="real data sets (default: all four)",
    )
    parser.add_argument("--budget", type=float, default=None, help="seconds per fit (120)")
    parser.add_argument("--seed", type=int, default=0, help="seed of splits, draws and fits")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (1)")
    parser.add_argument(
        "--parts",
        nargs="+",
        default=["mixtures", "real", "race"],
        choices=["mixtures", "real", "race"],
        help="which measurements to run",
    )
    parser.add_argument(
        "--race-data",
        nargs="+",
        default=list(RACE_DATA),
        help="data of the race: mixture_2d-K or real names",
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
            datasets=args.datasets if "--datasets" in sys.argv else ["breast_cancer", "airports"],
            budget=args.budget or 1.5,
            seed=args.seed,
            mixture_n=600,
            kl_draws=1000,
            components=(4,),
            race_data=[d for d in args.race_data if d in ("mixture_2d-4", "airports")],
            zuko_max_epochs=3,
            gmm_max_components=3,
            china_rows=3000,
        )
    return Settings(
        datasets=args.datasets,
        budget=args.budget or 120.0,
        seed=args.seed,
        race_data=args.race_data,
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    settings = make_settings(args)
    info = machine(args.threads)
    start = time.perf_counter()
    results: dict[str, Any] = {}
    curves: dict[str, dict[str, Any]] = {}
    if "mixtures" in args.parts:
        results["mixtures"] = mixtures(settings, curves)
    if "real" in args.parts:
        results["real"] = real_data(settings, curves)
    if "race" in args.parts:
        results["race"] = race(settings, curves)
    results["seconds"] = time.perf_counter() - start
    text = report(info, settings, results)
    print(text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "quality.md").write_text(text)
        payload = {"machine": info, "settings": settings.__dict__, "results": results}
        (args.out / "quality.json").write_text(json.dumps(jsonable(payload), indent=2) + "\n")


if __name__ == "__main__":
    main()
