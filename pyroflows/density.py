"""Density estimation with a flow behind the scikit-learn estimator API.

:class:`DensityEstimator` is a thin composition of shared parts: the float64 pre-transform of
:mod:`pyroflows.preprocess` (per-column standardisation or whitening, after a logit / log map
for bounded data; :func:`~pyroflows.preprocess.to_latent` casts the standardised rows), a flow
from :mod:`pyroflows.builders` trained on them by :func:`pyroflows.train.fit` with
:func:`pyroflows.losses.nll`, and the recipe of :mod:`pyroflows.train.recipe` (the validation
split, the ``flow="auto"`` portfolio on that split). The fitted model is a
:class:`~pyroflows.preprocess.Encoded` (flow + pre-transform): ``log p(x)`` in the user's units,
the pre-transform's Jacobian added in float64, so float32 training on data with a large offset
loses nothing. ``flow_`` is the whole model (flow layers followed by the fixed pre-transform
layers) as a :class:`~pyroflows.flows.Flow`. The input checks and ``save`` / ``load`` are
:class:`~pyroflows.estimator.BaseDensity`'s; a new density estimator subclasses it there (or in
:mod:`pyroflows.baselines` for a classical one).
"""

from __future__ import annotations

import numbers
import time
import warnings
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted

from pyroflows.bases import FullGaussianMixture, GaussianMixture
from pyroflows.builders import FAMILIES, build, spline_direction
from pyroflows.checkpoint import member_path
from pyroflows.density_ensemble import ensemble_log_prob, ensemble_sample, fit_members
from pyroflows.density_mixture import MixtureChoice, mixture_base
from pyroflows.density_recipe import (
    PORTFOLIO,
    Member,
    check_resume,
    checkpoint_files,
    torch_threads,
)  # fmt: skip
from pyroflows.density_rows import RowOptions, Rows, rows_in_memory, rows_streamed, to_data_units
from pyroflows.estimator import BaseDensity, plain, refuse_to_overwrite
from pyroflows.flows import Flow
from pyroflows.losses import nll
from pyroflows.preprocess import (
    Encoded,
    Preprocessor,
    bounds_array,
    box_preprocessor,
    check_inside,
    preprocessor_layout,
    to_latent,
)
from pyroflows.pretransform import choose_preprocessor
from pyroflows.racing import race_portfolio
from pyroflows.streaming import check_rows, is_streamed, open_rows
from pyroflows.tabular import (
    Columns,
    check_discrete,
    continuous_columns,
    fit_columns,
    kept_continuous_advice,
    mixed_log_prob,
)
from pyroflows.train import History, check_options, fit, resolve_device
from pyroflows.train.seeding import forked_streams
from pyroflows.train.weights import (
    check_sample_weight,
    check_weight_pairing,
    effective_sample_size,
)
from pyroflows.transforms import FixedAffine
from pyroflows.validation import check_data, flag, positive_int, warn_awkward_data

_DTYPES = {"float32": torch.float32, "float64": torch.float64}
#: A discrete numeric column with more cells than this between its smallest and largest value
#: is too fine for a float32 flow: once standardised, a cell is narrower than a few float32
#: steps, so the flow cannot resolve the mass of a cell (statsmodels' ``fair`` table, a column
#: stored at 7 decimals: 0.91 nats per row lost in float32, none in float64).
FLOAT32_CELLS = 2**20
#: options that apply only to some families: (option, default, families that use it)
_FAMILY_OPTIONS = (
    ("bins", 8, ("nsf", "piecewise_linear")),
    ("bound", 5.0, ("nsf",)),
    ("coupling", False, ("nsf", "piecewise_linear")),
    ("spline", None, ("nsf",)),
)
#: the options that shape the fitted model: a checkpoint is resumed only with the same values
_SHAPING = (
    "flow", "layers", "hidden", "bins", "bound", "coupling", "residual", "base", "whiten",
    "bounds", "dtype", "validation_fraction",
)  # fmt: skip
_BASES = ("normal", "diag_normal", "mog", "gmm", "uniform")
#: families that live on the unit cube: the box is mapped affinely onto it (closed bounds, a
#: uniform base, no whitening, no streaming yet); every special case of them keys on this
UNIT_CUBE = ("piecewise_linear",)


class DensityEstimator(BaseDensity):
    """A normalizing flow fitted to samples: ``fit`` / ``score_samples`` / ``score`` /
    ``sample`` / ``save`` / ``load`` / ``plot_history``.

    Args:
        flow: ``"auto"`` (default): fit the members of :data:`PORTFOLIO` on the same split
            (a neural spline flow started at the Gaussian mixture with the best validation
            likelihood, ``base="gmm"``, then a plain one), raced by successive halving on the
            validation loss
            (:func:`pyroflows.racing.race_portfolio`: short pilots of every member, then the
            better one trained on, the other only while it may still overtake it), and keep
            the one with the best validation likelihood
            (``candidates_`` reports each: ``best_loss``, ``start_loss``, the validation loss
            of its untrained start, ``start_time``, the seconds from the start of the
            portfolio (after the pre-transform) to that start, its mixture's search
            included, and ``mixture``, the mixture a ``"gmm"`` base was chosen to be; the
            ``history`` times are on the same clock). Every member's untrained start is a
            candidate for its best state, so the kept member's validation loss is at most its
            mixture's. Without validation rows only the plain one. Or one
            family: ``"nsf"``, ``"maf"``, ``"realnvp"``, ``"iaf"`` or ``"piecewise_linear"``
            (needs finite ``bounds``: the box is mapped affinely onto the unit cube).
        layers: number of flow layers.
        hidden: hidden sizes of each layer's network.
        bins: spline bins (``nsf``, ``piecewise_linear``).
        bound: spline interval ``[-bound, bound]`` in standardised units (``nsf``).
        coupling: coupling instead of autoregressive layers (``nsf``, ``piecewise_linear``).
        spline: which rational-quadratic spline maps data to base (``nsf``; sampling applies
            the other): ``"forward"`` or ``"inverse"``; None: the builder's default
            (:func:`pyroflows.builders.spline_direction`). A saved model keeps the direction
            it was fitted with (files written before this option existed: ``"inverse"``).
        residual: residual conditioner blocks.
        base: base distribution: ``"normal"``, ``"diag_normal"``, ``"mog"`` (a learnt mixture)
            or ``"gmm"``: the Gaussian mixture (full, diagonal or tied covariances, 1 to 10
            components, added until the validation score has not risen for two counts in a
            row, fitted in the flow's space and, when the pre-transform is affine, in
            the data's units and carried over exactly) with the best validation
            log-likelihood (the lowest BIC without validation rows), as a trainable base
            (:func:`pyroflows.density_mixture.mixture_base`); the flow's layers start at the
            identity, so training starts at that mixture. None: the member's choice
            (``"normal"`` for a single family).
        whiten: ``"auto"`` (default): per-column standardisation or whitening, whichever
            gives the higher validation likelihood to a diagonal Gaussian mixture fitted in
            its space (:func:`pyroflows.pretransform.choose_preprocessor`; the choice and the
            scores are ``preprocessor_.choice_``; streamed files and fits without validation
            rows are standardised). True: whiten with the mean and the Cholesky factor of the
            covariance; False: per-column means and standard deviations. Either way ``log p``
            is in the data's units.
        bounds: ``(low, high)``, scalars or one per column, when the data lie in a box;
            infinite entries leave a side open (``(0, inf)``: positive data, a log map).
            ``None``: unbounded data. Points outside get ``log p = -inf``.
        lr, patience, schedule: training recipe; None: each member's own (a single family:
            ``1e-3``, ``50``, constant).
        batch_size, max_epochs, clip_grad, weight_decay, time_budget: passed to
            :func:`pyroflows.train.fit` (with ``"auto"`` the time budget is shared out
            between the members). The time budget is the whole fit's: the pre-transform's
            choice and a mixture base's fit are taken out of it (the loop still takes one
            step when they use it all up). The mixture base's search over the number of
            components stops by validation and by a rows x components cap; with a time
            budget it also uses at most
            :data:`~pyroflows.density_mixture.MIXTURE_SHARE` (40 %) of the budget left
            when its member starts, keeping the best mixture fitted by then, so the rest
            goes to training (the plain member included). A search cut by that share makes
            the start depend on the machine's speed: then
            ``candidates_[i]["mixture"]["stopped"]`` is ``"time share"`` and a warning says
            so; without a time budget the same data and seed keep the same start on an idle
            or a busy machine. Torch's one-time import of its compiler when the first
            optimiser of a process is built is not taken out of the budget.
        validation_fraction: share of the training rows held out for early stopping when no
            ``X_val`` is given (0 disables early stopping on validation data).
        random_state: seed of the split, the initialisation and the shuffling (the global
            random state is left untouched).
        device: where to train and evaluate.
        dtype: ``"float32"``, ``"float64"`` for the flow (the pre-transform is float64), or
            ``"auto"`` (default): float32, unless a discrete numeric column has more than
            :data:`FLOAT32_CELLS` cells across its values, which float32 cannot tell apart
            (then float64; ``dtype_`` reports the choice). ``"float32"`` with such a column
            is refused.
        progress: progress bar: ``"auto"`` (notebooks and terminals, not CI), True or False.
        num_threads: torch CPU threads while fitting and scoring (restored afterwards); None
            leaves torch's setting. The default 1 is measured: networks of this size spend
            more on thread hand-offs than they gain, and a second thread on a busy 2-core
            machine made epochs 10x slower (``benchmarks/quality.py``).
        discrete: which columns are discrete (:mod:`pyroflows.tabular`). ``"auto"``
            (default): categorical for pandas ``category`` (ordered: ordinal), ``object``,
            string and ``bool`` columns; integer for integer dtypes; integer or quantised for
            a numeric column whose values sit on a grid ``offset + k * step`` and repeat
            (at most half the rows distinct); every other column continuous. None: every
            column continuous (a non-numeric column is refused). A dict ``{column: kind}``
            (a name of a DataFrame column or a position) fixes the kind of the columns it
            names (``"continuous"``, ``"integer"``, ``"quantised"``, ``"ordinal"``,
            ``"categorical"``, or a positive number: quantised with that step); the others
            are detected as with ``"auto"``. Discrete columns are fitted dequantised
            (uniform noise within each value's cell) and scored by the mass of the cells;
            ``columns_`` reports the kind of every column.
        score_draws: importance-sampling draws per row that ``score_samples`` spends on the
            mass of the cells of the discrete columns (unused without them).
        ensemble: the number of members (:mod:`pyroflows.density_ensemble`): with ``k > 1``,
            ``k`` fits with these settings on seeds ``random_state + m`` (their own splits),
            ``log p`` the log of the mean of their densities, ``sample`` drawing from the
            mixture, and ``score_samples(X, return_std=True)`` the spread of the members'
            ``log p`` as an error bar; ``ensemble_`` holds the members, and ``flow_``,
            ``history_``, ``member_`` describe the first.

    Example:
        >>> import numpy as np
        >>> X = np.random.default_rng(0).normal(size=(400, 2))
        >>> est = DensityEstimator(flow="maf", layers=2, hidden=(16, 16), max_epochs=5).fit(X)
        >>> est.score_samples(X[:3]).shape, est.sample(4, random_state=0).shape
        ((3,), (4, 2))
    """

    FORMAT_VERSION = 2
    _FIXED_BY_FIT = (
        "flow", "layers", "hidden", "bins", "bound", "coupling", "spline", "residual", "base",
        "whiten", "bounds", "discrete", "ensemble",
    )  # fmt: skip

    def __init__(
        self,
        flow: str = "auto",
        layers: int = 5,
        hidden: Sequence[int] = (128, 128),
        bins: int = 8,
        bound: float = 5.0,
        coupling: bool = False,
        spline: str | None = None,
        residual: bool = False,
        base: str | None = None,
        whiten: bool | str = "auto",
        bounds: Any = None,
        lr: float | None = None,
        batch_size: int = 256,
        max_epochs: int = 500,
        patience: int | None = None,
        validation_fraction: float = 0.1,
        clip_grad: float | None = 5.0,
        weight_decay: float = 0.0,
        schedule: str | None = None,
        time_budget: float | None = None,
        random_state: int | None = 0,
        device: str = "cpu",
        dtype: str = "auto",
        progress: bool | str = "auto",
        num_threads: int | None = 1,
        discrete: Any = "auto",
        score_draws: int = 32,
        ensemble: int = 1,
    ):
        self.flow = flow
        self.layers = layers
        self.hidden = hidden
        self.bins = bins
        self.bound = bound
        self.coupling = coupling
        self.spline = spline
        self.residual = residual
        self.base = base
        self.whiten = whiten
        self.bounds = bounds
        self.lr = lr
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.clip_grad = clip_grad
        self.weight_decay = weight_decay
        self.schedule = schedule
        self.time_budget = time_budget
        self.random_state = random_state
        self.device = device
        self.dtype = dtype
        self.progress = progress
        self.num_threads = num_threads
        self.discrete = discrete
        self.score_draws = score_draws
        self.ensemble = ensemble

    # -- checks -----------------------------------------------------------------------------
    def _check_params(self) -> None:
        if self.flow != "auto" and self.flow not in FAMILIES:
            raise ValueError(f"flow must be 'auto' or one of {sorted(FAMILIES)}, got {self.flow!r}")
        if self.base is not None and self.base not in _BASES:
            raise ValueError(f"base must be None or one of {list(_BASES)}, got {self.base!r}")
        if self.whiten not in (True, False, "auto"):
            raise ValueError(f"whiten must be True, False or 'auto', got {self.whiten!r}")
        if self.dtype != "auto" and self.dtype not in _DTYPES:
            raise ValueError(
                f"dtype must be 'auto' or one of {sorted(_DTYPES)}, got {self.dtype!r}"
            )
        if not (
            isinstance(self.validation_fraction, numbers.Real)
            and 0.0 <= self.validation_fraction < 1.0
        ):
            raise ValueError(
                f"validation_fraction must lie in [0, 1), got {self.validation_fraction!r}"
            )
        if self.num_threads is not None and (
            isinstance(self.num_threads, bool)
            or not isinstance(self.num_threads, numbers.Integral)
            or self.num_threads < 1
        ):
            raise ValueError(
                f"num_threads must be a positive integer or None, got {self.num_threads!r}"
            )
        if self.random_state is not None and not isinstance(self.random_state, numbers.Integral):
            raise ValueError(f"random_state must be an int or None, got {self.random_state!r}")
        resolve_device(self.device)
        spline_direction(self.spline)  # a ValueError naming the accepted values
        check_discrete(self.discrete)
        positive_int("score_draws", self.score_draws)
        positive_int("ensemble", self.ensemble)
        if self.base == "uniform" and not self._unit_cube:
            raise ValueError(
                "base='uniform' needs a flow that maps the unit cube onto itself: use "
                "flow='piecewise_linear' with bounds, or base='normal'"
            )
        if self._unit_cube:
            self._check_unit_cube()
        family = "nsf" if self.flow == "auto" else self.flow
        for option, default, families in _FAMILY_OPTIONS:
            if getattr(self, option) != default and family not in families:
                raise ValueError(
                    f"{option}={getattr(self, option)!r} has no effect with flow={self.flow!r}: "
                    f"only {' and '.join(families)} use it (leave it at {default!r})"
                )
        if self.residual and len(tuple(self.hidden)) < 2:
            raise ValueError(
                f"residual=True has no effect with hidden={tuple(self.hidden)}: the residual "
                "blocks replace the hidden layers after the first; give at least two equal "
                "hidden sizes"
            )

    @property
    def _unit_cube(self) -> bool:
        """Whether the flow lives on the unit cube (:data:`UNIT_CUBE`)."""
        return self.flow in UNIT_CUBE

    def _check_unit_cube(self) -> None:
        """The options a flow on the unit cube needs: finite bounds, no whitening, its base."""
        if self.bounds is None:
            raise ValueError(
                f"flow={self.flow!r} lives on the unit cube: pass finite bounds=(low, high)"
            )
        try:
            finite = all(np.isfinite(np.asarray(b, dtype=float)).all() for b in self.bounds)
        except (TypeError, ValueError):
            finite = True  # a malformed pair: bounds_array names the problem later
        if not finite:
            raise ValueError(f"flow={self.flow!r} needs finite bounds on every column")
        if self.whiten is True:
            raise ValueError(
                f"whiten=True has no effect with flow={self.flow!r} (the box is mapped "
                "affinely onto the unit cube); use whiten=False"
            )
        if self.base not in (None, "uniform"):
            raise ValueError(
                f"base={self.base!r} has no effect with flow={self.flow!r} (its base is "
                "uniform on the unit cube); leave base=None"
            )

    # -- construction -----------------------------------------------------------------------
    def _torch_dtype(self) -> torch.dtype:
        """The flow's dtype: the one resolved for the rows of this fit (or of the loaded
        model), else ``dtype`` with ``"auto"`` read as float32."""
        resolved = getattr(self, "_dtype_in_fit", None)
        return _DTYPES[resolved or ("float32" if self.dtype == "auto" else self.dtype)]

    def _dtype_name(self) -> str:
        """The flow's dtype as ``dtype_`` reports it and a saved file stores it."""
        return str(self._torch_dtype()).removeprefix("torch.")

    def _resolve_dtype(self, columns: Columns, codes: np.ndarray) -> str:
        """``dtype`` for these codes (:data:`FLOAT32_CELLS`); refuses float32 where it cannot
        resolve a column's cells."""
        fine = [
            (c.name, float(np.ptp(codes[:, j])))
            for j, c in enumerate(columns.columns)
            if c.kind in ("integer", "quantised") and np.ptp(codes[:, j]) > FLOAT32_CELLS
        ]
        if fine and self.dtype == "float32":
            name, cells = fine[0]
            raise ValueError(
                f"X column {name!r} spans {cells:.3g} cells of its grid, more than a float32 "
                f"flow can tell apart ({FLOAT32_CELLS}): pass dtype='float64' (or 'auto'), or "
                "give the column a coarser step or discrete={column: 'continuous'}"
            )
        if self.dtype == "auto":
            return "float64" if fine else "float32"
        return self.dtype

    def _members(self, validated: bool) -> list[Member]:
        """The flows to fit, with the user's explicit settings applied to each."""
        if self.flow == "auto":
            members = list(PORTFOLIO if validated else PORTFOLIO[-1:])
        else:
            members = [Member(self.flow, self.flow, "normal", 1e-3, None, 50, 1.0)]
        overrides = {
            key: value
            for key, value in (("base", self.base), ("lr", self.lr), ("patience", self.patience))
            if value is not None
        }
        if self.schedule is not None:
            overrides["schedule"] = None if self.schedule == "constant" else self.schedule
        if self._unit_cube:
            overrides["base"] = "uniform"
        return [replace(m, **overrides) for m in members]

    def _architecture(self, family: str) -> dict[str, Any]:
        kwargs: dict[str, Any] = dict(
            layers=self.layers, hidden=self.hidden, residual=self.residual
        )
        for option, _, families in _FAMILY_OPTIONS:
            if family in families:
                kwargs[option] = getattr(self, option)
        return kwargs

    def _check_bounds(self, X: np.ndarray, name: str, offset: int = 0) -> None:
        """Refuse rows outside the bounds, naming the row in the user's data (before any
        split): the open box, or the closed one for ``piecewise_linear``."""
        box = self._box()
        if box is None:
            return
        low, high = bounds_array(box, X.shape[1])
        closed = self._unit_cube
        if closed and not (np.isfinite(low).all() and np.isfinite(high).all()):
            raise ValueError(f"flow={self.flow!r} needs finite bounds on every column")
        check_inside(X, low, high, name, closed=closed, offset=offset)

    def _preprocessor(
        self,
        X: np.ndarray,
        X_val: np.ndarray | None = None,
        weight: np.ndarray | None = None,
        val_weight: np.ndarray | None = None,
    ) -> Preprocessor:
        """The pre-transform fitted to the training rows (already checked against the bounds):
        the box onto the unit cube, or the float64 standardisation (chosen on ``X_val``,
        weighted by the rows' weights when there are any)."""
        if self._unit_cube:
            return box_preprocessor(self._box(), X.shape[1])
        return choose_preprocessor(
            X, X_val, whiten=self.whiten, bounds=self._box(), seed=self.random_state,
            weight=weight, val_weight=val_weight,
        )  # fmt: skip

    def _layout(self, dim: int) -> Preprocessor:
        """A pre-transform of the fitted one's layout, to load saved buffers into."""
        return preprocessor_layout(dim, None if self._unit_cube else self._box())

    def _box(self) -> Any:
        """The bounds of the rows the flow is fitted to: the user's ``bounds``, carried to
        the codes of discrete columns (:meth:`~pyroflows.tabular.Columns.bounds`)."""
        columns = getattr(self, "_columns_in_fit", None)
        if columns is None or not columns.any_discrete:
            return self.bounds
        return columns.bounds(self.bounds, len(columns.columns))

    def _spline(self, family: str) -> str | None:
        """The spline direction a newly built flow of ``family`` gets (None: no spline)."""
        return spline_direction(self.spline) if family == "nsf" else None

    def _build(self, dim: int, family: str, base: Any, spline: str | None = None) -> Any:
        """The flow of ``family`` on the standardised space, on the device in the dtype;
        ``spline``: the spline direction of a saved model (default: :meth:`_spline`)."""
        kwargs = self._architecture(family)
        if family == "nsf":
            kwargs["spline"] = spline or self._spline(family)
        if base != "uniform":  # the unit cube's own base: its family builds it
            kwargs["base"] = base
        core = build(family, dim, **kwargs)
        return core.to(device=self.device, dtype=self._torch_dtype())

    # -- BaseDensity hooks ------------------------------------------------------------------
    def fit(
        self,
        X: Any,
        X_val: Any = None,
        sample_weight: Any = None,
        val_weight: Any = None,
        *,
        checkpoint: str | Path | None = None,
        checkpoint_every: int = 1,
        resume: str | Path | None = None,
    ) -> DensityEstimator:
        """Fit to the rows of ``X``; ``X_val`` (optional) is used for early stopping and to
        choose between the members of ``flow="auto"``.

        Args:
            X: training data ``(n_samples, n_features)``: an array-like, or for data larger
                than memory a path to a ``.npy`` file or a memory-mapped array
                (``np.load(path, mmap_mode="r")``), which is checked, standardised (float64
                statistics in one pass) and trained on in streamed blocks.
                A DataFrame's string column names are kept as ``feature_names_in_``: as in
                scikit-learn, a later ``X`` (``score_samples``, ``score``, ``X_val``) with
                other names or another order is refused, and names on one side only warn.
                Discrete, duplicated or collinear columns and very few rows are warned about
                (:class:`~pyroflows.validation.DataWarning`).
            X_val: validation data with the same columns, or None (a random
                ``validation_fraction`` of ``X`` is held out).
            sample_weight: one non-negative weight per row of ``X`` (1-D, finite, not all
                zero; NaN, infinite or negative weights are refused, naming the first row),
                or None. The flow then minimises the weighted negative log-likelihood
                ``sum w_i nll_i / sum w_i`` (:func:`pyroflows.train.fit`): integer weights
                are the objective of duplicated rows. Rows of weight 0 are removed first, so
                a fit with them is the fit without them. Held-out validation rows keep their
                weights: the validation loss, early stopping and the choice between the
                members of ``flow="auto"`` are weighted too. The pre-transform is fitted to
                the rows unweighted (it is a fixed bijection whose Jacobian is part of
                ``log p``) and chosen (``whiten="auto"``) with the weights
                (:func:`pyroflows.pretransform.choose_preprocessor`); a ``base="gmm"``
                start is fitted to the rows themselves for equal weights, to the rows
                repeated for integer weights, else to a weighted resample of them.
                ``ess_`` reports the weights' effective sample size. In-memory data only.
            val_weight: the weights of the ``X_val`` rows; required with ``sample_weight``
                and ``X_val`` (pass ones for an unweighted validation loss).
            checkpoint: write the state of the training loop to this file every
                ``checkpoint_every`` epochs (atomically, :func:`pyroflows.train.fit`). With
                several members (``flow="auto"``) each member has its own file, named after
                it: ``run.ckpt`` -> ``run.nsf-gmm.ckpt``, ``run.nsf.ckpt``.
            checkpoint_every: the period of the checkpoints, in epochs.
            resume: continue from this checkpoint (usually the same path as ``checkpoint``)
                where it exists; a member whose checkpoint says it finished is not trained
                again. Needs an int ``random_state`` (the split and the preprocessing are
                recomputed from it); with the same data and settings and no
                ``time_budget``, the resumed fit ends bit-identical to an uninterrupted one.
                Every checkpoint records a digest of the training and validation rows and the
                options that shape the model; a checkpoint written for other data (one value
                changed) or other options is refused with a ``ValueError`` naming what
                differs, before any member is trained and with the estimator unchanged. An
                existing ``checkpoint`` path that pyroflows did not write is refused too.

        Returns:
            The fitted estimator.

        Example:
            >>> import numpy as np, tempfile, os
            >>> X = np.random.default_rng(0).normal(size=(300, 2))
            >>> path = os.path.join(tempfile.mkdtemp(), "run.ckpt")
            >>> est = DensityEstimator(flow="maf", layers=2, hidden=(8,), max_epochs=3)
            >>> est = est.fit(X, checkpoint=path, resume=path)
            >>> os.path.exists(path)
            True
        """
        runs = self._check_run_files(checkpoint, checkpoint_every, resume)
        weighted = sample_weight is not None or val_weight is not None
        if self.ensemble != 1:
            if weighted:
                raise ValueError(
                    "sample_weight / val_weight are not available with ensemble > 1 yet; fit "
                    "with ensemble=1"
                )
            return self._fit_ensemble(X, X_val, runs)
        if not is_streamed(X):
            self._check_params()
            columns = fit_columns(X, self.discrete)
            X, X_val = self._dequantised(columns, X, X_val)
            dtype = self._resolve_dtype(columns, np.asarray(X, dtype=np.float64))
            self._columns_in_fit, self._dtype_in_fit = columns, dtype
            runs = runs | {"columns": columns}
            return self._fit_checked(X, X_val, runs=runs, weights=(sample_weight, val_weight))
        if weighted:
            raise ValueError(
                "sample_weight / val_weight are not available for streamed data (a .npy path "
                "or a memory map); load the rows into memory"
            )
        self._check_params()
        rows = open_rows(X)
        check_rows(rows)
        self._refuse_discrete_stream(rows)
        self._columns_in_fit = self._dtype_in_fit = None
        if X_val is not None:
            X_val = check_data(X_val, rows.shape[1], name="X_val")
        if self._unit_cube:
            raise ValueError(f"flow={self.flow!r} is not available for streamed data yet")
        start = time.perf_counter()
        with torch_threads(self.num_threads):
            prep = rows_streamed(rows, X_val, self._rows())
            state = self._fit_portfolio(prep, runs, self._budget_left(start))
        state["columns_"] = continuous_columns(rows.shape[1])
        state["ensemble_"] = None
        state["dtype_"] = self._dtype_name()
        return self._set_fitted(state, rows.shape[1], None)

    def _warn_awkward(self, X: np.ndarray, X_val: np.ndarray | None, names: Any) -> None:
        """:func:`~pyroflows.validation.warn_awkward_data` on the codes, whose discrete
        columns are dequantised: a column with discrete values left continuous is warned
        about with the ``discrete`` option that models it as discrete."""

        def advice(j: int, column: int | str, kind: str) -> str:
            return kept_continuous_advice(self.discrete, j, column, kind)

        warn_awkward_data(X, X_val, names=names, split=X_val is None, advice=advice)

    def _fit_ensemble(self, X: Any, X_val: Any, runs: dict[str, Any]) -> DensityEstimator:
        """Fit the members (:func:`~pyroflows.density_ensemble.fit_members`), then take the
        first one's fitted attributes and keep all of them as ``ensemble_``."""
        self._check_params()
        members = fit_members(self, X, X_val, runs)
        first = members[0]
        state = {k: v for k, v in vars(first).items() if k.endswith("_") and k != "ensemble_"}
        names = state.pop("feature_names_in_", None)
        dim = state.pop("n_features_in_")
        self._columns_in_fit = first._columns_in_fit
        self._dtype_in_fit = first._dtype_in_fit
        return self._set_fitted(state | {"ensemble_": members}, dim, names)

    def _dequantised(self, columns: Columns, X: Any, X_val: Any) -> tuple[Any, Any]:
        """The training (and validation) rows as codes, with uniform noise in the cells of
        the discrete columns (:mod:`pyroflows.tabular`); unchanged without such columns."""
        if not columns.any_discrete:
            return X, X_val
        seed = None if self.random_state is None else [int(self.random_state), 1]
        rng = np.random.default_rng(seed)
        X = columns.dequantise(columns.encode(X), rng)
        if X_val is not None:
            X_val = columns.dequantise(columns.encode(X_val, "X_val"), rng)
        return X, X_val

    def _refuse_discrete_stream(self, rows: np.ndarray) -> None:
        """Streamed rows are modelled as continuous: refuse ``discrete`` when it names a
        column, or when ``"auto"`` finds a discrete one in up to 20 000 rows."""
        if self.discrete is None:
            return
        if self.discrete != "auto":
            raise ValueError("discrete columns are not available for streamed data yet: "
                             "pass discrete=None, or fit in-memory rows")  # fmt: skip
        picked = np.linspace(0, len(rows) - 1, min(len(rows), 20_000)).astype(np.int64)
        found = fit_columns(np.asarray(rows[picked], dtype=np.float64)).kinds
        named = {k: v for k, v in found.items() if v != "continuous"}
        if named:
            raise ValueError(
                f"discrete='auto' found discrete column(s) {named} in the streamed data, which "
                "are modelled as continuous only: pass discrete=None to do so, or fit "
                "in-memory rows"
            )

    def _check_run_files(
        self, checkpoint: Any, checkpoint_every: Any, resume: Any
    ) -> dict[str, Any]:
        """The checkpoint options of one ``fit``, checked before any work."""
        check_options(checkpoint=checkpoint, resume=resume)
        if (
            not isinstance(checkpoint_every, numbers.Integral)
            or isinstance(checkpoint_every, bool)
            or checkpoint_every < 1
        ):
            raise ValueError(f"checkpoint_every must be a positive int, got {checkpoint_every!r}")
        if (checkpoint is not None or resume is not None) and self.random_state is None:
            raise ValueError(
                "checkpoint/resume need an int random_state: a resumed fit recomputes the "
                "validation split and the preprocessing from it"
            )
        if checkpoint is None and checkpoint_every != 1:
            raise ValueError(f"checkpoint_every={checkpoint_every!r} needs a checkpoint path")
        if checkpoint is not None:
            for path in checkpoint_files(checkpoint, PORTFOLIO if self.flow == "auto" else ()):
                refuse_to_overwrite(path, "checkpoint:")
        return {"checkpoint": checkpoint, "checkpoint_every": int(checkpoint_every),
                "resume": resume}  # fmt: skip

    def _fit(
        self,
        X: np.ndarray,
        X_val: np.ndarray | None,
        runs: dict[str, Any],
        weights: tuple = (None, None),
    ) -> dict[str, Any]:
        runs = dict(runs)
        columns = runs.pop("columns")
        start = time.perf_counter()  # the time budget covers the pre-transform's choice too
        X, X_val, w, w_val = _weighted_rows(X, X_val, *weights)
        with torch_threads(self.num_threads):
            prep = rows_in_memory(X, X_val, self._rows(), w, w_val)
            state = self._fit_portfolio(prep, runs, self._budget_left(start))
        return state | {"columns_": columns, "ensemble_": None, "dtype_": self._dtype_name()}

    def _rows(self) -> RowOptions:
        """How this estimator turns data into the rows its flows train on."""
        return RowOptions(
            check=self._check_bounds, fit_pre=self._preprocessor, whiten=self.whiten,
            bounds=self._box(), fraction=self.validation_fraction,
            random_state=self.random_state, batch_size=self.batch_size,
            dtype=self._torch_dtype(), device=self.device,
        )  # fmt: skip

    def _budget_left(self, start: float) -> float | None:
        """What is left of ``time_budget`` since ``start`` (``None`` without a budget); at least
        a millisecond, so the loop still takes its first step."""
        if self.time_budget is None:
            return None
        return max(float(self.time_budget) - (time.perf_counter() - start), 1e-3)

    def _fit_portfolio(
        self, prep: Rows, runs: dict[str, Any], budget: float | None = None
    ) -> dict[str, Any]:
        """Fit every member on the same split, raced by :func:`~pyroflows.racing.race_portfolio`,
        and keep the best; ``runs``: the checkpoint options of this fit
        (:meth:`_check_run_files`); ``budget``: the seconds left of ``time_budget``."""
        members = {m.name: m for m in self._members(prep.Z_val is not None)}
        if prep.Z_val is None and self.patience is not None:
            warnings.warn(
                f"patience={self.patience!r} is not used: there are no validation rows (fewer "
                "than 10 rows, or validation_fraction=0 and no X_val)",
                UserWarning,
                stacklevel=4,
            )
        # every member's checkpoint is checked before any is trained: a refusal leaves the
        # estimator and every file as they were
        for member in members.values():
            resume = runs["resume"]
            if resume is not None and len(members) > 1:
                resume = member_path(resume, member.name)
            check_resume(resume, self._fingerprint(member, prep))
        start = time.perf_counter()

        def fit_member(name: str, run: dict[str, Any]) -> tuple[History, Any]:
            files = runs | {"checkpoint": run["checkpoint"], "resume": run["resume"]}
            files["callback"] = run.get("callback")  # a race's turn (pyroflows.racing)
            model, history, mixture, loop_start = self._fit_member(
                members[name], prep, run["time_budget"], files
            )
            # the loop's clock starts after the mixture search and the build: its times,
            # and the validated start, are put on the clock of the whole fit
            offset = loop_start - start
            to_data_units(history, offset, *prep.shifts)
            return history, (model, mixture, offset)

        best, candidates = race_portfolio(
            list(members), fit_member, time_budget=budget,
            checkpoint=runs["checkpoint"], resume=runs["resume"],
            shares=[m.share for m in members.values()],
        )  # fmt: skip
        model, mixture, _ = best.result
        member = members[best.name]
        return {
            "_encoded_": model,
            "ess_": None if prep.weight is None else effective_sample_size(prep.weight),
            "history_": best.history,
            "member_": best.name,
            "candidates_": [
                {"name": c.name, "history": c.history, "seconds": c.seconds}
                | {"best_loss": c.history.best_loss, "start_loss": c.history.start_loss}
                | {"start_time": c.result[2]}
                | {"mixture": None if c.result[1] is None else c.result[1].as_plain()}
                for c in candidates
            ],
            "_build_": {
                "flow": member.flow,
                "base": "mog" if member.base in ("gmm", "mog") else member.base,
                "components": mixture.components if mixture else 10 * (member.base == "mog"),
                # the form of the base: full covariances (full, tied, or carried from the
                # data's units through whitening) or diagonal ones
                "covariance": "full"
                if isinstance(model.core.base, FullGaussianMixture)
                else "diag",
                "dtype": self._dtype_name(),
            }
            # which spline maps data to base (nsf only; files without it: "inverse")
            | ({"spline": self._spline(member.flow)} if member.flow == "nsf" else {}),
        }

    def _fingerprint(self, member: Member, prep: Rows) -> dict[str, Any]:
        """What a checkpoint of ``member`` must have been written for: the rows (a digest of
        the training and validation rows in data units, after the split) and every option
        that shapes the model or the pre-transform."""
        params = self.get_params(deep=False)
        shaping = {f"estimator.{key}": plain(params[key]) for key in _SHAPING}
        return {
            "estimator.X": prep.data["X"],
            "estimator.X_val": prep.data["X_val"],
            "estimator.member": member.name,
            "estimator.family": member.flow,
            "estimator.member_base": member.base,
            "estimator.sample_weight": prep.data.get("weight"),
            **shaping,
            # the direction built (a checkpoint without it: "inverse", density_recipe)
            **({"estimator.spline_direction": self._spline(member.flow)} if member.flow == "nsf"
               else {}),
        }  # fmt: skip

    def _fit_member(
        self, member: Member, prep: Rows, budget: float | None, files: dict[str, Any]
    ) -> tuple[Encoded, History, MixtureChoice | None, float]:
        """Build and train one flow on the standardised rows; a ``"gmm"`` base is the
        mixture chosen on the validation rows (:func:`~pyroflows.density_mixture.mixture_base`,
        its choice returned), and with validation rows the untrained flow is a candidate for
        the best state (``fit(validate_start=True)``): the member never ends with a higher
        validation loss than its start. The last item returned is the ``perf_counter`` time
        at which the training loop (whose ``history.time`` counts from it) started, after
        the mixture's search and the build."""
        seed = None if self.random_state is None else int(self.random_state)
        base: Any = member.base
        mixture = None
        pre, Z_val = prep.pre, prep.Z_val
        fingerprint = self._fingerprint(member, prep)
        started = time.perf_counter()  # the mixture base's fit counts against the budget
        if base == "gmm":  # the mixture takes no weights: rows repeated or resampled
            base, mixture = mixture_base(
                _resampled(prep.sample, prep.weight, seed),
                None if Z_val is None else _resampled(Z_val, prep.val_weight, seed), seed,
                budget, _affine_map(pre),
            )  # fmt: skip
            # a resumed fit must start from the same mixture (its parameters' shapes)
            fingerprint["estimator.mixture"] = mixture.name
        with forked_streams():
            if seed is not None:
                torch.manual_seed(seed)
            core = self._build(prep.sample.shape[1], member.flow, base)
        loop_start = time.perf_counter()
        if budget is not None:
            budget = max(budget - (loop_start - started), 1e-3)
        history = fit(
            core,
            nll,
            prep.train,
            Z_val,
            prep.weight,
            None if Z_val is None else prep.val_weight,
            max_epochs=self.max_epochs,
            batch_size=self.batch_size,
            lr=member.lr,
            weight_decay=self.weight_decay,
            schedule=member.schedule,
            clip_grad=self.clip_grad,
            patience=member.patience if Z_val is not None else None,
            time_budget=budget,
            seed=seed,
            progress=self.progress,
            desc=f"fit {member.name}",
            **files,
            fingerprint=fingerprint,
            validate_start=Z_val is not None,
        )
        return Encoded(core, pre), history, mixture, loop_start

    def score_samples(self, X: Any, return_std: bool = False) -> Any:
        """``log p(x)`` of each row of ``X``, shape ``(n_samples,)``; with ``return_std=True``
        (an ensemble only) also its error bar, ``(log_p, sd)``: the standard deviation of the
        members' ``log p`` (:func:`~pyroflows.density_ensemble.ensemble_log_prob`). With
        discrete columns
        (``columns_``), the log of the probability mass of the row's cells in those columns
        plus the log-density of the continuous ones, in their units
        (:func:`~pyroflows.tabular.mixed_log_prob`; a stochastic lower bound in expectation,
        over ``score_draws`` draws per row, reproducible for a given ``random_state``). A
        category not seen at fit time, or a value off its column's grid, raises a
        ``ValueError`` naming the column."""
        check_is_fitted(self, "n_features_in_")
        members = getattr(self, "ensemble_", None)
        if members:
            self._check_names(X)
            log_p, sd = ensemble_log_prob(members, X)
            return (log_p, sd) if flag("return_std", return_std) else log_p
        if flag("return_std", return_std):
            raise ValueError("return_std=True needs an ensemble: fit with ensemble=k, k >= 2")
        self._check_names(X)
        X = check_data(self._fitted_columns().encode(X), self.n_features_in_, name="X")
        return self._score_samples(X)

    def sample(self, n: int, random_state: Any = None) -> Any:
        """Draw ``n`` rows: a float64 array ``(n, n_features)``; values of discrete
        columns on their grid or among their categories (a DataFrame with the fitted columns
        and dtypes when fitted on a DataFrame with a discrete column)."""
        members = getattr(self, "ensemble_", None)
        if members:
            positive_int("n", n)
            return ensemble_sample(members, int(n), random_state)
        return self._fitted_columns().decode(super().sample(n, random_state))

    def _fitted_columns(self) -> Columns:
        columns = getattr(self, "columns_", None)
        return columns if columns is not None else continuous_columns(self.n_features_in_)

    def _score_samples(self, X: np.ndarray) -> np.ndarray:
        seed = 0 if self.random_state is None else int(self.random_state)
        rng = np.random.default_rng([seed, 2])
        mask = self._fitted_columns().discrete
        with torch_threads(self.num_threads):
            return mixed_log_prob(self._score_rows, X, mask, self.score_draws, rng)

    def _score_rows(self, X: np.ndarray) -> np.ndarray:
        return self._encoded_.log_prob(X, self._torch_dtype(), self.device)

    def _sample(self, n: int, rng: np.random.RandomState) -> np.ndarray:
        return self._encoded_.sample(n, int(rng.randint(2**31 - 1)), self.device)

    # -- the fitted model -------------------------------------------------------------------
    @property
    def flow_(self) -> Any:
        """The whole fitted model as one :class:`~pyroflows.flows.Flow`: the flow's layers
        followed by the fixed pre-transform layers, ``log_prob`` in the data's units."""
        return self._encoded_.flow

    @property
    def preprocessor_(self) -> Preprocessor:
        """The fitted float64 pre-transform (:mod:`pyroflows.preprocess`)."""
        return self._encoded_.pre

    def _single_continuous(self, name: str) -> None:
        check_is_fitted(self, "n_features_in_")
        if getattr(self, "ensemble_", None):
            raise ValueError(
                f"{name}: an ensemble has one flow per member; use ensemble_[k].{name}"
            )
        if self._fitted_columns().any_discrete:
            raise ValueError(
                f"{name}: this estimator has discrete columns, whose rows are dequantised at "
                "random before the flow sees them; the standardised space is defined for "
                "continuous columns only"
            )

    @property
    def core_flow_(self) -> Flow:
        """The trainable flow in the standardised space: the layers of ``flow_`` before the
        fixed pre-transform (the same modules, not a copy). Training it further on rows of
        :meth:`to_latent` (e.g. :func:`pyroflows.train.fit` with ``sample_weight``) refines the
        estimator in place; :func:`pyroflows.discflow` does that. Refused for ensembles and
        estimators with discrete columns."""
        self._single_continuous("core_flow_")
        return self._encoded_.core

    def to_latent(self, X: Any) -> torch.Tensor:
        """Rows of ``X`` in the standardised space of :attr:`core_flow_`: the fitted float64
        pre-transform, then the flow's dtype on its device
        (:func:`pyroflows.preprocess.to_latent`), so that ``core_flow_.log_prob(to_latent(X))``
        plus the pre-transform's log-Jacobian is ``score_samples(X)``.

        Example:
            >>> X = np.random.default_rng(0).normal(size=(500, 2)) * [1, 10]
            >>> est = DensityEstimator(flow="maf", layers=1, hidden=(8,), max_epochs=2,
            ...                        progress=False).fit(X)
            >>> Z = est.to_latent(X)
            >>> Z.shape, [round(v, 1) for v in Z.std(0).tolist()]
            (torch.Size([500, 2]), [1.0, 1.0])
        """
        self._single_continuous("to_latent")
        self._check_names(X)
        X = check_data(X, self.n_features_in_, name="X")
        core = self._encoded_.core
        return to_latent(self._encoded_.pre, X, next(core.parameters()).dtype, self.device)[0]

    # -- extras -----------------------------------------------------------------------------
    def plot_history(self, ax: Any = None) -> Any:
        """Training and validation loss per epoch (:func:`pyroflows.plotting.plot_loss`)."""
        from pyroflows.plotting import plot_loss

        if not hasattr(self, "history_"):
            raise ValueError("this DensityEstimator is not fitted yet; call fit first")
        return plot_loss(self.history_, ax=ax)

    # -- persistence ------------------------------------------------------------------------
    def _get_state(self) -> dict[str, Any]:
        return {
            "flow": {k: v.detach().cpu() for k, v in self.flow_.state_dict().items()},
            "history": self.history_.as_dict(),
            "build": dict(self._build_),
            "member": self.member_,
            "ess": self.ess_,
            "columns": self._fitted_columns().as_plain(),
        } | self._members_state()

    def _members_state(self) -> dict[str, Any]:
        """The members after the first of an ensemble: their seeds and states."""
        members = getattr(self, "ensemble_", None)
        if not members:
            return {}
        names = [str(n) for n in getattr(self, "feature_names_in_", [])]
        rest = [{"random_state": m.random_state, "state": m._get_state()} for m in members[1:]]
        return {"ensemble": {"members": rest, "feature_names": names}}

    def _load_members(self, state: dict[str, Any], version: int) -> None:
        """Rebuild the members of a saved ensemble (the first from the top-level state)."""
        self.ensemble_ = None
        saved = state.get("ensemble")
        if not saved:
            return
        params = self.get_params(deep=False) | {"ensemble": 1}
        first = {k: v for k, v in state.items() if k != "ensemble"}
        members = []
        for seed, sub in [(self.random_state, first)] + [
            (m["random_state"], m["state"]) for m in saved["members"]
        ]:
            member = type(self)(**params | {"random_state": seed})
            member.n_features_in_ = self.n_features_in_
            if saved["feature_names"]:
                member.feature_names_in_ = np.asarray(saved["feature_names"], dtype=object)
            member._set_state(sub, version)
            members.append(member)
        self.ensemble_ = members

    def _set_state(self, state: dict[str, Any], version: int) -> None:
        if version < 2:
            raise ValueError(f"format version {version} is no longer read: re-fit the model")
        dim = self.n_features_in_
        spec = state["build"]
        columns = state.get("columns")
        self.columns_ = None if columns is None else Columns.from_plain(columns)
        self._columns_in_fit = self.columns_
        # the flow's dtype as fitted (files without it: the dtype parameter, as then)
        self._dtype_in_fit = spec.get("dtype")
        self.dtype_ = self._dtype_name()
        base: Any = spec["base"]
        if base == "mog" and spec.get("covariance") == "full":
            base = FullGaussianMixture(dim, spec["components"])
        elif base == "mog":
            base = GaussianMixture(dim, spec["components"])
        # the saved layout; load_state_dict overwrites the buffers of the pre-transform
        # the spline direction saved (files written before the option: the inverse spline)
        spline = spec.get("spline", "inverse") if spec["flow"] == "nsf" else None
        core = self._build(dim, spec["flow"], base, spline)
        model = Encoded(core, self._layout(dim).to(self.device))
        model.flow.load_state_dict(state["flow"])
        model.flow.eval()
        self._encoded_ = model
        self.history_ = History(**state["history"])
        self.member_ = state["member"]
        self.ess_ = state.get("ess")
        self._build_ = dict(spec)
        self._load_members(state, version)

    @classmethod
    def _params_from_plain(cls, params: dict[str, Any]) -> dict[str, Any]:
        params = dict(params)
        params["hidden"] = tuple(params["hidden"])
        if "spline" not in params and params.get("flow") in ("nsf", "auto"):
            params["spline"] = "inverse"  # saved before the option: what those files hold
        if params.get("bounds") is not None:
            params["bounds"] = tuple(params["bounds"])
        return params


def _weighted_rows(X: np.ndarray, X_val: np.ndarray | None, sample_weight: Any, val_weight: Any):
    """``(X, X_val, w, w_val)``: the weights checked (one per row, finite, >= 0, not all 0)
    and the rows of weight 0 removed; ``(X, X_val, None, None)`` without weights."""
    if sample_weight is None and val_weight is None:
        return X, X_val, None, None
    check_weight_pairing(sample_weight, val_weight, X_val is not None, "X_val")
    w = np.ones(len(X)) if sample_weight is None else check_sample_weight(sample_weight, len(X))
    w_val = None
    if X_val is not None:
        w_val = check_sample_weight(val_weight, len(X_val), "val_weight")
        X_val, w_val = X_val[w_val > 0], w_val[w_val > 0]
    if int((w > 0).sum()) < 2:
        raise ValueError(
            f"sample_weight leaves {int((w > 0).sum())} row(s) of positive weight; at least 2 "
            "are needed"
        )
    return X[w > 0], X_val, w[w > 0], w_val


def _affine_map(pre: Preprocessor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(loc, L)`` of a pre-transform that is one affine map ``x = loc + L z`` (no box),
    else None."""
    layers = pre.layers()
    if len(layers) == 1 and isinstance(layers[0], FixedAffine):
        return layers[0].loc, layers[0].scale_tril
    return None


#: Integer weights summing to more than this many times the rows are resampled, not repeated.
MAX_REPEAT = 10


def _resampled(Z: torch.Tensor, weight: np.ndarray | None, seed: int | None) -> torch.Tensor:
    """The rows ``Z`` as a sample of the weighted data, for fits that take no weights: ``Z``
    itself for no or equal weights, each row repeated ``weight`` times for integer weights
    (the duplicated data a weighted fit stands for; at most ``MAX_REPEAT`` times the rows),
    else as many rows drawn from ``Z`` with probabilities ``weight``.

    Example:
        >>> _resampled(torch.arange(3.0)[:, None], np.array([1.0, 2.0, 1.0]), 0).ravel()
        tensor([0., 1., 1., 2.])
    """
    if weight is None or np.all(weight == weight[0]):
        return Z
    if np.all(weight == np.round(weight)) and weight.sum() <= MAX_REPEAT * len(Z):
        index = np.repeat(np.arange(len(Z)), weight.astype(np.int64))
        return Z[torch.as_tensor(index, device=Z.device)]
    index = np.random.default_rng(seed).choice(len(Z), size=len(Z), p=weight / weight.sum())
    return Z[torch.as_tensor(index, device=Z.device)]


__all__ = ["PORTFOLIO", "UNIT_CUBE", "DensityEstimator", "Member"]
