"""The default ``DensityEstimator`` against zuko NSF / MAF, KDE and a validated GMM on real
tables that ship inside installed packages (nothing is downloaded).

Tables (continuous columns only; rows with a missing value dropped; constant columns dropped):

* scikit-learn: ``iris`` (150 x 4, values rounded to 0.1), ``wine`` (178 x 13, integer
  columns), ``breast_cancer`` (569 x 30, radius / perimeter / area nearly collinear),
  ``diabetes`` (442 x 10, a two-valued column), ``digits16`` (the 16 pixels of ``load_digits``
  with the largest variance, 1797 x 16, integers 0-16);
* ``vega_datasets`` local files: ``cars`` (392 x 6, integer cylinders, rounded values),
  ``seattle_weather`` (1461 x 4, rounded to 0.1 with many zero-precipitation days);
* ``statsmodels.datasets``: ``macrodata`` (203 x 12, macro series that are nearly linear
  functions of each other), ``star98`` (303 x 20), ``anes96`` (944 x 10, ordinal answers),
  ``modechoice`` (840 x 6), ``fair`` (6366 x 9: ordinal ratings, integer years and children,
  a zero-inflated continuous ``affairs`` column).

Discrete columns are found and handled by ``pyroflows.tabular`` for every method alike:
``fit_columns`` on the whole table (values only: integer counts, rounded measurements, ordinal
codes; a grid's step is a property of how the table was recorded) gives each column's kind and
step, and the default is fitted with ``discrete={column: "integer" or step}`` from it. The
peers get exactly the rows the default trains on: the training and validation rows encoded
with the default's own ``columns_`` (``Columns.encode``: the cell index of a grid value) and
dequantised (``Columns.dequantise``) with the generator the estimator uses
(``numpy.random.default_rng([seed, 1])``, training rows first), so the uniform noise in every
cell is the same numbers for all five methods. Every method is scored the same way: per test
row ``log P(its discrete cells) + log p(its continuous columns)``
(``pyroflows.tabular.mixed_log_prob``), the mass of the cells estimated from the same
``score_draws`` (32) Latin-hypercube draws per row (generator ``default_rng([seed, 2])``, as
the estimator's ``score_samples``); a peer is evaluated on those expanded rows and the
per-row log-mean-exp taken. The benchmark checks that the default's ``columns_`` equal the
peers' and that its ``score_samples`` equals the same computation on the expanded rows.
Tables without a discrete column are plain densities.

Split 70/15/15 (``pyroflows.datasets.split``, seed ``--seed``). Every method fits the
training rows and may use the validation rows; the test log-likelihood per row is reported in
the data's units with its standard error, and the paired difference (default minus the best
peer, per test row) with its paired standard error. Peers (run in the same process, one
after the other, same wall-clock budget ``--budget`` per flow): zuko NSF and MAF as in
``benchmarks/quality.py`` (5 layers, 128 x 128, Adam 1e-3, patience 50, best state kept, data
standardised), KDE (bandwidth on the validation rows), GMM (1-10 components and the covariance
type chosen on the validation rows). Time to quality: the default's wall time (from the start
of ``fit``, pre-transform choice and mixture search included) to first reach zuko NSF's best
validation loss, divided by zuko's time to that loss; a member's validated start counts, at
the time its mixture search and build ended (``candidates_[i]["start_time"]``).

The first table also gives the default's paired margin over the GMM peer with its paired
standard error. The second table reports how the default started: the member kept (best
epoch -1: its untrained start, the mixture, stayed the best), the mixture its ``nsf-gmm``
member started at (covariance type, components, the space it was fitted in: ``flow`` after
the pre-transform, ``data`` in the data's units; the seconds its search took and why it
stopped, ``pyroflows.density_mixture.MIXTURE_STOPS``: ``time share`` (its share of the budget,
``MIXTURE_SHARE``) or ``time budget`` (the whole budget, ``MIXTURE_SHARE = None``) means cut by
the clock, so a faster machine may keep another start) next to the GMM peer's choice, and the
validation loss per row
of that start, of the member kept and of the GMM peer (all in the data's units, on the same
validation rows). ``--mixture-rule`` sets ``pyroflows.density_mixture.MIXTURE_RULE`` (how the
start is chosen on the validation rows).

``--flow`` and ``--splines`` set the estimator measured in place of the default: its ``flow``
(``auto`` or one family) and, for the spline flows, the spline's direction (``spline``); with
two directions (``--splines inverse forward``) the first is the row's "pyroflows default" and
each other one is fitted after it in the same process on the same rows and reported in a third
table with its paired test log-likelihood difference against the first (a positive difference:
the other direction is better).

``--variants`` fits the default again after it, on the same rows in the same process, with
the mixture search's settings changed (:data:`VARIANTS`: ``whole-budget``, the search cut
only once the whole time budget is spent, full covariances first; ``narrow-search``, the
search narrowed to its leading candidate when the share binds
(``density_mixture.MIXTURE_NARROW = True``); ``share=X``, at most the share ``X`` of the
budget; ``min-epochs=N``, the race's pilot at least ``N`` epochs; names joined by ``+``
combine their settings), and reports each in a further table:
test log-likelihood, the paired difference default minus variant with its paired standard
error, the member kept, the mixture start and the variant's time to zuko NSF's best
validation loss (as a ratio of zuko's).

``--full`` also fits the default with racing switched off (every member trained to the end)
and reports the final validation loss of both: what racing costs in quality.

Tables are split into a development list (choices were tuned on it) and a confirmation list
(run once, after the choices were made): ``--tables dev`` / ``--tables confirm``. ggplot2's
``diamonds`` table is reserved for one independent check (``--tables diamonds``): it is read
only from an installed package that ships it (``plotnine``, ``pydataset``), never downloaded.

``--epochs N`` runs a different measurement: the default's plain spline member
(``flow="nsf"``, ``--splines`` sets its direction) against zuko NSF at a fixed number of epochs
(:func:`run_epochs`), to compare the flows apart from the race and the machine's speed.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/density_tables.py --tables dev --budget 20
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
for path in (str(HERE.parent), str(HERE)):
    if path not in sys.path:
        sys.path.insert(0, path)

import quality  # noqa: E402
from _scoring import Fit, attempt, time_to  # noqa: E402
from quality import Settings, fit_classical, fit_zuko  # noqa: E402

from pyroflows import datasets, density_mixture, diagnostics, racing  # noqa: E402
from pyroflows.baselines import GMMDensity  # noqa: E402
from pyroflows.density import DensityEstimator  # noqa: E402
from pyroflows.tabular import Columns, fit_columns, log_mean_exp, mixed_log_prob  # noqa: E402

#: digits16 is a development table: the race's rule (pyroflows.racing.PILOT_RULE) was chosen
#: with it
DEVELOPMENT = ("iris", "wine", "breast_cancer", "macrodata", "cars", "seattle_weather", "digits16")
CONFIRMATION = ("diabetes", "star98", "anes96", "modechoice", "fair")
#: earlier runs of a confirmation table on its own (``--tables NAME --out
#: density_tables_confirm_NAME``), kept below the current tables with what they were run with
EARLIER_RUNS = {
    "fair": "Earlier run: fair on its own, in float32, before dtype='auto' and the mixture "
    "search by component count (the run that found the float32 precision defect)",
    "fair_auto": "Earlier run: fair on its own with dtype='auto', before the mixture search by "
    "component count (re-run after the fix it prompted, so not an independent confirmation)",
}
PEERS = ("zuko NSF", "zuko MAF", "KDE", "GMM")
SCORE_DRAWS = 32  # draws per test row for the mass of its discrete cells (the default's)
#: the estimator measured as "pyroflows default": DensityEstimator's own defaults unless
#: --flow / --splines set them (main)
DEFAULT_PARAMS: dict[str, Any] = {}
#: further spline directions fitted after the default on the same rows (--splines)
OTHER_SPLINES: list[str] = []
#: the module settings of each ``--variants`` name: ``{(module, attribute): value}``
VARIANTS: dict[str, dict[tuple[Any, str], Any]] = {
    "whole-budget": {
        (density_mixture, "MIXTURE_SHARE"): None,
        (density_mixture, "MIXTURE_TYPES"): ("full", "diag", "tied"),
    },
    "narrow-search": {(density_mixture, "MIXTURE_NARROW"): True},
}
#: the variants fitted after the default (--variants)
OTHER_VARIANTS: list[str] = []


def variant_settings(name: str) -> dict[tuple[Any, str], Any]:
    """The module settings of a ``--variants`` name: names of :data:`VARIANTS`, ``share=X``
    or ``min-epochs=N`` (the race's minimum pilot, ``racing._MIN_EPOCHS``), joined by ``+``."""
    settings: dict[tuple[Any, str], Any] = {}
    for part in name.split("+"):
        if part in VARIANTS:
            settings |= VARIANTS[part]
        elif part.startswith("share="):
            settings[(density_mixture, "MIXTURE_SHARE")] = float(part.removeprefix("share="))
        elif part.startswith("min-epochs="):
            settings[(racing, "_MIN_EPOCHS")] = int(part.removeprefix("min-epochs="))
        else:
            raise ValueError(
                f"unknown variant {part!r}: one of {sorted(VARIANTS)}, share=X or "
                "min-epochs=N, joined by +"
            )
    return settings


@contextmanager
def mixture_settings(name: str):
    """The module settings of variant ``name`` while fitting it."""
    settings = variant_settings(name)
    before = {key: getattr(*key) for key in settings}
    for (module, attribute), value in settings.items():
        setattr(module, attribute, value)
    try:
        yield
    finally:
        for (module, attribute), value in before.items():
            setattr(module, attribute, value)


RESULTS = HERE / "results"


# -- tables -------------------------------------------------------------------------------------
def _sklearn(name: str) -> np.ndarray:
    import sklearn.datasets as skd

    return getattr(skd, f"load_{name}")().data


def _digits16() -> np.ndarray:
    import sklearn.datasets as skd

    x = skd.load_digits().data
    return x[:, np.argsort(-x.var(0))[:16]]


def _vega(name: str) -> np.ndarray:
    from vega_datasets import local_data

    frame = getattr(local_data, name)()
    return frame.select_dtypes("number").to_numpy(dtype=float)


def _statsmodels(name: str, drop: tuple[str, ...] = ()) -> np.ndarray:
    import statsmodels.api as sm

    frame = getattr(sm.datasets, name).load_pandas().data
    return frame.select_dtypes("number").drop(columns=list(drop)).to_numpy(dtype=float)


TABLES: dict[str, Callable[[], np.ndarray]] = {
    "iris": lambda: _sklearn("iris"),
    "wine": lambda: _sklearn("wine"),
    "breast_cancer": lambda: _sklearn("breast_cancer"),
    "diabetes": lambda: _sklearn("diabetes"),
    "digits16": _digits16,
    "cars": lambda: _vega("cars"),
    "seattle_weather": lambda: _vega("seattle_weather"),
    "macrodata": lambda: _statsmodels("macrodata", ("year", "quarter")),
    "star98": lambda: _statsmodels("star98"),
    "anes96": lambda: _statsmodels("anes96", ("vote",)),
    "modechoice": lambda: _statsmodels("modechoice", ("individual", "mode", "choice")),
    "fair": lambda: _statsmodels("fair"),
}


def _diamonds() -> np.ndarray:
    """ggplot2's ``diamonds`` (53 940 x 10; cut, color and clarity as ordinal codes), from an
    installed package that ships it; an error naming the packages tried otherwise."""
    frame = None
    for module, attribute in (("plotnine.data", "diamonds"), ("pydataset", None)):
        try:
            package = __import__(module, fromlist=["_"])
        except ImportError:
            continue
        frame = getattr(package, attribute) if attribute else package.data("diamonds")
        break
    if frame is None:
        raise RuntimeError(
            "diamonds: no installed package ships ggplot2's diamonds table (tried plotnine, "
            "pydataset); it is not downloaded"
        )
    ordinal = {c: frame[c].astype("category").cat.codes for c in ("cut", "color", "clarity")}
    return frame.assign(**ordinal).select_dtypes("number").to_numpy(dtype=float)


TABLES["diamonds"] = _diamonds
RESERVED = ("diamonds",)


def prepare(x: np.ndarray) -> np.ndarray:
    """Complete rows and non-constant columns."""
    x = x[~np.isnan(x).any(1)]
    return x[:, x.std(0) > 0]


def discrete_spec(x: np.ndarray) -> dict[int, Any]:
    """``{column: "integer" or step}`` of the columns ``pyroflows.tabular`` finds discrete in
    the whole table, for ``DensityEstimator(discrete=...)``; the others continuous."""
    spec: dict[int, Any] = {}
    for j, column in enumerate(fit_columns(x).columns):
        spec[j] = (
            "continuous"
            if not column.discrete
            else "integer"
            if column.kind == "integer"
            else column.step
        )
    return spec


@dataclass
class Encoded:
    """The rows every method sees: dequantised training and validation codes, the test rows
    expanded with the score's draws (``draws`` consecutive rows per test row), the columns."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    draws: int
    columns: Columns

    def reduce(self, log_prob: np.ndarray) -> np.ndarray:
        """Per test row: log P(discrete cells) + log p(continuous), from the log-densities
        of the expanded rows."""
        return log_mean_exp(log_prob.reshape(-1, self.draws), axis=1)


def encode(
    train: np.ndarray, val: np.ndarray, test: np.ndarray, spec: dict[int, Any], seed: int,
    draws: int,
) -> Encoded:  # fmt: skip
    """The rows of :class:`Encoded`, drawn exactly as ``DensityEstimator(discrete=spec,
    random_state=seed)`` draws its own (:meth:`DensityEstimator.fit`, ``score_samples``)."""
    columns = fit_columns(train, spec)
    rng = np.random.default_rng([seed, 1])
    train_d = columns.dequantise(columns.encode(train), rng)
    val_d = columns.dequantise(columns.encode(val, "X_val"), rng)
    codes = columns.encode(test)
    if not columns.any_discrete:
        return Encoded(train_d, val_d, codes, 1, columns)
    blocks: list[np.ndarray] = []

    def record(rows: np.ndarray) -> np.ndarray:
        blocks.append(rows.copy())
        return np.zeros(len(rows))

    mixed_log_prob(record, codes, columns.discrete, draws, np.random.default_rng([seed, 2]))
    return Encoded(train_d, val_d, np.concatenate(blocks), draws, columns)


# -- methods ------------------------------------------------------------------------------------
def fit_gmm(train: np.ndarray, val: np.ndarray, test: np.ndarray, settings: Settings) -> Fit:
    """The GMM with the best validation likelihood over the covariance types."""
    best = None
    start = time.perf_counter()
    for kind in ("full", "diag", "tied", "spherical"):
        model = GMMDensity(covariance_type=kind, random_state=settings.seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(train, X_val=val)
        score = float(np.mean(model.score_samples(val)))
        if best is None or score > best[0]:
            best = (score, kind, model)
    info = {"covariance_type": best[1], "n_components": best[2].n_components_,
            "val_loss": -best[0]}  # fmt: skip
    return Fit(best[2].score_samples(test), time.perf_counter() - start, info)


def fit_curve(candidates: list[dict[str, Any]], lead: float) -> dict[str, list[float]]:
    """The validation loss against the seconds since the start of ``fit`` of every member of
    a fitted default (its ``candidates_``, whose times count from the start of the portfolio;
    ``lead``: the seconds before it, the pre-transform's choice): each member's validated
    start (at ``start_time``, after its mixture search) and then its epochs."""
    curve: dict[str, list[float]] = {"time": [], "val_loss": []}
    for c in candidates:
        starts = [(c["start_time"], c["start_loss"])] if np.isfinite(c["start_loss"]) else []
        curve["time"] += [lead + t for t, _ in starts] + [lead + t for t in c["history"].time]
        curve["val_loss"] += [v for _, v in starts] + list(c["history"].val_loss)
    return curve


def fit_default(
    raw: tuple[np.ndarray, np.ndarray, np.ndarray], spec: dict[int, Any], rows: Encoded,
    settings: Settings, race: bool = True, params: dict[str, Any] | None = None,
) -> Fit:  # fmt: skip
    """``DensityEstimator`` at its defaults (``discrete`` from the whole table) on the raw
    rows; the validation curve on the clock of ``fit``. Refuses a fit whose columns, or
    whose scores, differ from what the peers get."""
    train, val, test = raw
    racing.RACING = race
    params = DEFAULT_PARAMS if params is None else params
    est = DensityEstimator(random_state=settings.seed, time_budget=settings.budget,
                           discrete=spec, score_draws=rows.draws, **params)  # fmt: skip
    start = time.perf_counter()
    try:
        est.fit(train, X_val=val)
    finally:
        racing.RACING = True
    seconds = time.perf_counter() - start
    if est.columns_ != rows.columns:
        raise RuntimeError(f"the default's columns differ from the peers': {est.columns_}")
    log_p = est.score_samples(test)
    same = rows.reduce(est._score_rows(rows.test))
    if not np.allclose(log_p, same, rtol=0, atol=1e-9):
        raise RuntimeError("the default's score differs from the peers' accounting")
    choice = getattr(est.preprocessor_, "choice_", {}) or {}
    curve = fit_curve(est.candidates_, float(choice.get("seconds", 0.0)))
    kept = next(c for c in est.candidates_ if c["name"] == est.member_)
    gmm = next((c for c in est.candidates_ if c.get("mixture")), None)
    info = {
        "member": est.member_,
        "mixture": None
        if gmm is None
        else "{covariance_type} x {components} ({space}), {seconds:.1f} s, {stopped}".format(
            **gmm["mixture"]
        ),
        "start_loss": None if gmm is None else float(gmm["start_loss"]),
        "best_epoch": kept["history"].best_epoch,
        "pretransform": choice.get("chosen"),
        "pretransform_scores": choice.get("scores"),
        "best_val_loss": float(-np.mean(est._score_rows(rows.val))),
        "curve": curve,
        "candidates": {c["name"]: float(c["best_loss"]) for c in est.candidates_},
    }
    return Fit(log_p, seconds, info)


PEER_FITS: dict[str, Callable[..., Fit]] = {
    "zuko NSF": lambda *a: fit_zuko("nsf", *a),
    "zuko MAF": lambda *a: fit_zuko("maf", *a),
    "KDE": lambda *a: fit_classical("kde", *a),
    "GMM": fit_gmm,
}


def run_table(name: str, table: np.ndarray, settings: Settings, full: bool) -> dict[str, Any]:
    """Every method on one table: test log-likelihoods, paired margins, time to quality."""
    x = prepare(table)
    spec = discrete_spec(x)
    raw = tuple(x[i] for i in datasets.split(x, seed=settings.seed))
    rows = encode(*raw, spec, settings.seed, SCORE_DRAWS)
    notes = [f"col {j}: {c.kind} step {c.step:g}" for j, c in enumerate(rows.columns.columns)
             if c.discrete]  # fmt: skip
    n_test = len(raw[2])  # a failed fit: NaN on each test row
    fits = {"pyroflows default": attempt(n_test, fit_default, raw, spec, rows, settings)}
    for peer, fit_peer in PEER_FITS.items():
        fits[peer] = attempt(n_test, fit_peer, rows.train, rows.val, rows.test, settings)
        if "error" not in fits[peer].info:
            fits[peer].log_prob = rows.reduce(fits[peer].log_prob)
            fits[peer].info.pop("val_log_prob", None)
    for spline in OTHER_SPLINES:
        fits[f"spline={spline}"] = attempt(
            n_test,
            fit_default,
            raw,
            spec,
            rows,
            settings,
            params=DEFAULT_PARAMS | {"spline": spline},
        )
    for variant in OTHER_VARIANTS:
        with mixture_settings(variant):
            fits[f"variant {variant}"] = attempt(n_test, fit_default, raw, spec, rows, settings)
    if full:
        fits["default, no racing"] = attempt(
            n_test, fit_default, raw, spec, rows, settings, race=False
        )
    if "error" in fits["pyroflows default"].info:
        raise RuntimeError(f"{name}: the default failed: {fits['pyroflows default'].info}")
    stats = {
        m: diagnostics.test_log_likelihood(f.log_prob) if np.isfinite(f.log_prob).all() else None
        for m, f in fits.items()
    }
    peers = [p for p in PEERS if stats[p] is not None]
    best_peer = max(peers, key=lambda p: stats[p].value)
    ours = fits["pyroflows default"].log_prob
    paired = diagnostics.test_log_likelihood(ours - fits[best_peer].log_prob)
    gmm = fits["GMM"].log_prob
    vs_gmm = diagnostics.test_log_likelihood(ours - gmm) if stats["GMM"] is not None else None
    zuko = fits["zuko NSF"].info
    zuko_time = zuko["curve"]["time"][zuko["best_epoch"]]
    reached = time_to(fits["pyroflows default"].info["curve"], zuko["best_val_loss"])
    row = {
        "table": name, "shape": [*(len(r) for r in raw), x.shape[1]], "notes": notes,
        "test_ll": {m: None if s is None else [s.value, s.stderr] for m, s in stats.items()},
        "seconds": {m: f.seconds for m, f in fits.items()},
        "best_peer": best_peer, "margin": [paired.value, paired.stderr],
        "margin_gmm": None if vs_gmm is None else [vs_gmm.value, vs_gmm.stderr],
        "zuko_seconds_to_best": zuko_time, "default_seconds_to_zuko_best": reached,
        "time_ratio": None if reached is None else reached / zuko_time,
        "default": quality.summary(fits["pyroflows default"].info),
        "gmm": quality.summary(fits["GMM"].info),
        "errors": {m: f.info["error"] for m, f in fits.items() if "error" in f.info},
    }  # fmt: skip
    row["splines"] = {}
    for spline in OTHER_SPLINES:
        other = fits[f"spline={spline}"]
        if "error" in other.info or not np.isfinite(other.log_prob).all():
            row["splines"][spline] = {"error": other.info.get("error", "non-finite")}
            continue
        diff = diagnostics.test_log_likelihood(other.log_prob - ours)
        row["splines"][spline] = {
            "test_ll": [stats[f"spline={spline}"].value, stats[f"spline={spline}"].stderr],
            "diff": [diff.value, diff.stderr], "member": other.info["member"],
            "best_val_loss": other.info["best_val_loss"],
        }  # fmt: skip
    row["variants"] = {}
    for variant in OTHER_VARIANTS:
        other = fits[f"variant {variant}"]
        if "error" in other.info or not np.isfinite(other.log_prob).all():
            row["variants"][variant] = {"error": other.info.get("error", "non-finite")}
            continue
        diff = diagnostics.test_log_likelihood(ours - other.log_prob)
        reached_v = time_to(other.info["curve"], zuko["best_val_loss"])
        row["variants"][variant] = {
            "test_ll": [stats[f"variant {variant}"].value, stats[f"variant {variant}"].stderr],
            "diff": [diff.value, diff.stderr], "member": other.info["member"],
            "mixture": other.info["mixture"], "best_val_loss": other.info["best_val_loss"],
            "time_ratio": None if reached_v is None else reached_v / zuko_time,
        }  # fmt: skip
    if full:
        row["full_val_loss"] = fits["default, no racing"].info.get("best_val_loss")
        row["full_member"] = fits["default, no racing"].info.get("member")
    quality.log(f"{name}: {json.dumps(quality.jsonable(row))[:600]}")
    return row


def run_epochs(name: str, table: np.ndarray, settings: Settings, epochs: int) -> dict[str, Any]:
    """The default's plain spline member (``flow="nsf"``: its learning rate, patience and
    architecture) against zuko NSF at a fixed number of epochs instead of seconds: each at
    its own loop's settings (patience 50, the best validation state kept), at most
    ``epochs`` epochs, no time budget, on the same encoded, dequantised rows; test
    log-likelihoods per row scored as in :func:`run_table`, with the paired difference."""
    x = prepare(table)
    spec = discrete_spec(x)
    raw = tuple(x[i] for i in datasets.split(x, seed=settings.seed))
    rows = encode(*raw, spec, settings.seed, SCORE_DRAWS)
    est = DensityEstimator(flow="nsf", random_state=settings.seed, discrete=spec,
                           score_draws=rows.draws, max_epochs=epochs, progress=False,
                           **{k: v for k, v in DEFAULT_PARAMS.items() if k != "flow"})  # fmt: skip
    start = time.perf_counter()
    est.fit(raw[0], X_val=raw[1])
    seconds = time.perf_counter() - start
    info = {"best_epoch": est.history_.best_epoch, "epochs": len(est.history_.val_loss)}
    ours = Fit(est.score_samples(raw[2]), seconds, info)
    zuko_settings = Settings(datasets=(), budget=None, seed=settings.seed, zuko_max_epochs=epochs)
    zuko = fit_zuko("nsf", rows.train, rows.val, rows.test, zuko_settings)
    zuko.log_prob = rows.reduce(zuko.log_prob)
    zuko.info["epochs"] = len(zuko.info["curve"]["val_loss"])
    fits = {"pyroflows nsf": ours, "zuko NSF": zuko}
    stats = {m: diagnostics.test_log_likelihood(f.log_prob) for m, f in fits.items()}
    paired = diagnostics.test_log_likelihood(ours.log_prob - zuko.log_prob)
    row = {
        "table": name, "epochs": epochs,
        "test_ll": {m: [s.value, s.stderr] for m, s in stats.items()},
        "best_epoch": {m: f.info["best_epoch"] for m, f in fits.items()},
        "epochs_run": {m: f.info["epochs"] for m, f in fits.items()},
        "seconds": {m: f.seconds for m, f in fits.items()},
        "diff": [paired.value, paired.stderr],
    }  # fmt: skip
    quality.log(f"{name}: {json.dumps(quality.jsonable(row))}")
    return row


def epochs_markdown(rows: list[dict[str, Any]], seed: int) -> str:
    """The table of :func:`run_epochs`."""
    out = [
        f"Protocol: `{' '.join(sys.argv)}`; seed {seed}, torch threads "
        f"{torch.get_num_threads()}, load average at start {quality.LOAD_AT_START:.2f}. The "
        "default's plain spline member (flow nsf) and zuko NSF, each at most "
        f"{rows[0]['epochs']} epochs at its own loop's settings (patience 50, best validation "
        "state kept), no time budget, on the same encoded and dequantised rows, scored as in "
        "the main tables; seconds are indicative (shared machine).",
        "",
        "| table | pyroflows nsf (best epoch / run) | zuko NSF (best epoch / run) | "
        "pyroflows − zuko (paired) | seconds (pyroflows / zuko) |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        cells = [
            f"{r['test_ll'][m][0]:.3f} ± {r['test_ll'][m][1]:.3f} "
            f"({r['best_epoch'][m]} / {r['epochs_run'][m]})"
            for m in ("pyroflows nsf", "zuko NSF")
        ]
        diff = f"{r['diff'][0]:+.3f} ± {r['diff'][1]:.3f}"
        secs = f"{r['seconds']['pyroflows nsf']:.1f} / {r['seconds']['zuko NSF']:.1f}"
        out.append(f"| {r['table']} | {cells[0]} | {cells[1]} | {diff} | {secs} |")
    return "\n".join(out) + "\n"


# -- report -------------------------------------------------------------------------------------
def markdown(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    """One table of log-likelihoods and margins, one of time to quality."""
    methods = ["pyroflows default", *PEERS]
    out = [
        f"Protocol: `{' '.join(sys.argv)}`; budget {args.budget} s per flow, seed {args.seed}, "
        f"torch threads {torch.get_num_threads()}, mixture search share "
        f"{density_mixture.MIXTURE_SHARE} of the budget, load average (1 min) at start "
        f"{quality.LOAD_AT_START:.2f}, at end {os.getloadavg()[0]:.2f}. Every method trains "
        "on the same encoded and dequantised rows and is scored as log P(discrete cells) + "
        f"log p(continuous columns) with the same {SCORE_DRAWS} Latin-hypercube draws per "
        "test row (see the script's docstring); log-likelihoods per test row in those units, "
        "± one standard error.",
        "",
        "| table | rows (train/val/test) x cols | " + " | ".join(methods)
        + " | margin vs best peer (paired) | margin / se | margin vs GMM (paired) / se |",
        "|---" * (len(methods) + 5) + "|",
    ]  # fmt: skip
    for r in rows:
        cells = [
            "—"
            if r["test_ll"][m] is None
            else f"{r['test_ll'][m][0]:.3f} ± {r['test_ll'][m][1]:.3f}"
            for m in methods
        ]
        value, se = r["margin"]
        shape = r["shape"]
        out.append(
            f"| {r['table']} | {shape[0]}/{shape[1]}/{shape[2]} x {shape[3]} | "
            + " | ".join(cells)
            + f" | {value:+.3f} ± {se:.3f} ({r['best_peer']}) | {value / se:+.1f} | "
            + _margin(r.get("margin_gmm"))
            + " |"
        )
    out += [
        "",
        "| table | pre-transform | member | mixture start (GMM peer) | val loss: start / kept "
        "/ GMM peer | zuko NSF s to best | default s to it | ratio |"
        + (" val loss raced / full (member) |" if args.full else ""),
        "|---|---|---|---|---|---|---|---|" + ("---|" if args.full else ""),
    ]
    for r in rows:
        ratio = "not reached" if r["time_ratio"] is None else f"{r['time_ratio']:.2f}"
        reached = r["default_seconds_to_zuko_best"]
        d, g = r["default"], r.get("gmm", {})
        start = "—" if d.get("start_loss") is None else f"{d['start_loss']:.3f}"
        peer = "—" if g.get("val_loss") is None else f"{g['val_loss']:.3f}"
        line = (
            f"| {r['table']} | {d.get('pretransform')} | {d.get('member')} "
            f"(best epoch {d.get('best_epoch')}) | {d.get('mixture')} "
            f"({g.get('covariance_type')} x {g.get('n_components')}) | {start} / "
            f"{d['best_val_loss']:.3f} / {peer} | {r['zuko_seconds_to_best']:.1f} | "
            f"{'—' if reached is None else f'{reached:.1f}'} | {ratio} |"
        )
        if args.full:
            line += (
                f" {r['default']['best_val_loss']:.3f} / {r['full_val_loss']:.3f} "
                f"({r['full_member']}) |"
            )
        out.append(line)
    if OTHER_SPLINES:
        first = DEFAULT_PARAMS.get("spline")
        out += [
            "",
            f"| table | spline | test LL | paired diff vs spline={first} / se | member | "
            "val loss |",
            "|---|---|---|---|---|---|",
        ]
        for r in rows:
            d = r["default"]
            out.append(
                f"| {r['table']} | {first} | {r['test_ll']['pyroflows default'][0]:.3f} | — | "
                f"{d.get('member')} | {d['best_val_loss']:.3f} |"
            )
            for spline, o in r["splines"].items():
                if "error" in o:
                    out.append(f"| {r['table']} | {spline} | failed: {o['error']} | | | |")
                    continue
                value, se = o["diff"]
                out.append(
                    f"| {r['table']} | {spline} | {o['test_ll'][0]:.3f} | {value:+.3f} ± "
                    f"{se:.3f} ({value / se:+.1f}) | {o['member']} | {o['best_val_loss']:.3f} |"
                )
    if OTHER_VARIANTS:
        out += [
            "",
            "| table | variant | test LL | default − variant (paired) / se | member | mixture "
            "start | time ratio |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            for variant, o in r["variants"].items():
                if "error" in o:
                    out.append(f"| {r['table']} | {variant} | failed: {o['error']} | | | | |")
                    continue
                value, se = o["diff"]
                ratio = "not reached" if o["time_ratio"] is None else f"{o['time_ratio']:.2f}"
                out.append(
                    f"| {r['table']} | {variant} | {o['test_ll'][0]:.3f} ± {o['test_ll'][1]:.3f}"
                    f" | {value:+.3f} ± {se:.3f} ({_ratio(value, se)}) | {o['member']} | "
                    f"{o['mixture']} | {ratio} |"
                )
    out += ["", "| table | discrete columns (pyroflows.tabular, whole table) |", "|---|---|"]
    out += [f"| {r['table']} | {'; '.join(r['notes']) or 'none'} |" for r in rows]
    return "\n".join(out) + "\n"


def _margin(margin: list[float] | None) -> str:
    """``value ± se (value / se)`` of a paired margin, ``—`` without one."""
    if margin is None:
        return "—"
    value, se = margin
    return f"{value:+.3f} ± {se:.3f} ({_ratio(value, se)})"


def _ratio(value: float, se: float) -> str:
    """``value / se`` with its sign; a paired difference of standard error 0 is exact."""
    return f"{value / se:+.1f}" if se > 0 else "exactly equal" if value == 0 else "inf"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tables", default="dev", help="dev, confirm, or comma-separated names")
    parser.add_argument("--budget", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--full", action="store_true", help="also fit without racing")
    parser.add_argument(
        "--mixture-rule",
        default=density_mixture.MIXTURE_RULE,
        choices=density_mixture.MIXTURE_RULES,
        help="how the default's mixture start is chosen on validation rows",
    )
    parser.add_argument(
        "--flow", default=None, help="the measured estimator's flow (default: its own)"
    )
    parser.add_argument(
        "--splines", nargs="+", default=None, choices=("inverse", "forward"),
        help="spline directions of the measured estimator; the first is the row's default",
    )  # fmt: skip
    parser.add_argument(
        "--variants", nargs="+", default=[],
        help="also fit the default with these settings: whole-budget, narrow-search, share=X, "
        "min-epochs=N (joined by +)",
    )  # fmt: skip
    parser.add_argument(
        "--epochs", type=int, default=None,
        help="instead: the plain spline member against zuko NSF at this many epochs at most",
    )  # fmt: skip
    parser.add_argument("--out", default=None, help="results stem (default: print only)")
    parser.add_argument(
        "--combine", action="store_true", help="only join the dev and confirm results files"
    )
    args = parser.parse_args(argv)
    if args.combine:
        combine()
        return
    if args.epochs is not None:
        unused = [name for name, used in (
            ("--full", args.full), ("--mixture-rule", args.mixture_rule != "best"),
            ("--flow other than nsf", args.flow not in (None, "nsf")),
            ("a second spline direction", bool(args.splines and len(args.splines) > 1)),
        ) if used]  # fmt: skip
        if unused or args.epochs < 1:
            parser.error(f"--epochs takes a positive count and no {', '.join(unused) or 'other'}")
    density_mixture.MIXTURE_RULE = args.mixture_rule
    DEFAULT_PARAMS.clear()
    OTHER_SPLINES.clear()
    OTHER_VARIANTS.clear()
    for variant in args.variants:
        try:
            variant_settings(variant)
        except ValueError as error:
            parser.error(str(error))
    OTHER_VARIANTS.extend(args.variants)
    if args.flow is not None:
        DEFAULT_PARAMS["flow"] = args.flow
    if args.splines:
        DEFAULT_PARAMS["spline"] = args.splines[0]
        OTHER_SPLINES.extend(args.splines[1:])
    names = {"dev": DEVELOPMENT, "confirm": CONFIRMATION, "diamonds": RESERVED}.get(args.tables)
    names = names or tuple(args.tables.split(","))
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    settings = Settings(datasets=names, budget=args.budget, seed=args.seed)
    tables = {name: TABLES[name]() for name in names}  # a table that cannot load stops here
    warm_up(settings)
    if args.epochs is not None:
        rows = [run_epochs(name, tables[name], settings, args.epochs) for name in names]
        text = epochs_markdown(rows, args.seed)
    else:
        rows = [run_table(name, tables[name], settings, args.full) for name in names]
        text = markdown(rows, args)
    print(text)
    if args.out:
        stem = RESULTS / args.out
        stem.with_suffix(".md").write_text(text)
        stem.with_suffix(".json").write_text(json.dumps(quality.jsonable(rows), indent=1))


def warm_up(settings: Settings) -> None:
    """One tiny fit of each flow first, so that no method's clock pays the one-time imports
    and dispatch set-up of the process."""
    x = np.random.default_rng(0).normal(size=(60, 2))
    DensityEstimator(max_epochs=1, random_state=0, progress=False).fit(x).score_samples(x)
    for family in ("nsf", "maf"):
        fit_zuko(family, x, x, x, Settings(datasets=(), budget=1.0, seed=settings.seed))


def combine() -> None:
    """``density_tables.{md,json}`` from ``density_tables_dev`` and ``density_tables_confirm``
    (10 s per flow), their runs at 3 s per flow and the earlier runs of :data:`EARLIER_RUNS`."""
    parts, data = [], {}
    named = [("dev", "Development tables"), ("confirm", "Confirmation tables")]
    named += [("dev_budget3", "Development tables at 3 s per flow"),
              ("confirm_budget3", "Confirmation tables at 3 s per flow")]  # fmt: skip
    named += [(f"confirm_{name}", title) for name, title in EARLIER_RUNS.items()]
    for part, title in named:
        stem = RESULTS / f"density_tables_{part}"
        if stem.with_suffix(".md").exists():
            parts.append(f"## {title}\n\n" + stem.with_suffix(".md").read_text())
            data[part] = json.loads(stem.with_suffix(".json").read_text())
    head = "# Real tables: the default against zuko NSF / MAF, KDE, GMM\n\n"
    (RESULTS / "density_tables.md").write_text(head + "\n".join(parts))
    (RESULTS / "density_tables.json").write_text(json.dumps(data, indent=1))


if __name__ == "__main__":
    main()
