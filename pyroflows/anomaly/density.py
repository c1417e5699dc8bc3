"""Conditional densities ``p(x | m)`` for the flow-based detectors: an ensemble of conditional
flows trained with the shared loop on preprocessed features, and a KDE of the SR's ``m``.

:class:`ConditionalDensity` preprocesses ``x`` in float64 with
:func:`pyroflows.preprocess.fit_preprocessor` (a logit for bounded columns, then standardise)
and standardises ``m``; each member is a conditional flow from :func:`pyroflows.build` trained by
:func:`pyroflows.train.fit` (early stopping keeps the best state; the divergence guard catches a
member that blows up; optional checkpoints). ``best_epochs > 1`` also keeps the next best
epochs' states as extra members (CATHODE's "ensemble of the best epochs"). The mixture of the
members is the density; sampling draws one ``x`` per given ``m`` in one vectorised pass per member.

:func:`cathode_background` is the measured recipe for CATHODE's sideband flow (the default
background of :class:`~pyroflows.anomaly.CATHODE`); see its docstring for what was measured.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pyroflows.builders import build
from pyroflows.losses import nll
from pyroflows.preprocess import fit_preprocessor
from pyroflows.train import fit
from pyroflows.train.checkpoint import restore_on_error
from pyroflows.train.options import SCHEDULES
from pyroflows.train.recipe import validation_rows
from pyroflows.train.seeding import seeded_draws
from pyroflows.validation import positive_int

__all__ = ["CATHODE_FLOW", "ConditionalDensity", "cathode_background", "kde_sample"]


#: draws per sample asked for after which :func:`kde_sample` gives up (an acceptance rate of
#: 1 / _KDE_BUDGET inside the window: the values of m lie elsewhere)
_KDE_BUDGET = 1000


def kde_sample(
    m: Any, n: int, low: float, high: float, seed: int = 0, bandwidth: float | None = None
) -> np.ndarray:
    """``n`` draws from a Gaussian KDE of ``m`` (Silverman's bandwidth unless given), redrawn
    until they fall inside ``(low, high)`` (the SR: no sample leaks out of it); a
    ``ValueError`` when fewer than one draw in ``_KDE_BUDGET`` (1000) falls inside.

    Example:
        >>> m = np.random.default_rng(0).uniform(3.3, 3.7, 1000)
        >>> s = kde_sample(m, 5000, 3.3, 3.7)
        >>> s.shape, bool(s.min() > 3.3 and s.max() < 3.7)
        ((5000,), True)
    """
    m = np.asarray(m, float).reshape(-1)
    if len(m) < 2:
        raise ValueError("the KDE needs at least two values of m")
    if not low < high:
        raise ValueError(f"the window needs low < high, got ({low}, {high})")
    rng = np.random.default_rng(seed)
    if bandwidth is None:
        iqr = np.subtract(*np.percentile(m, [75, 25]))
        spread = min(m.std(), iqr / 1.349) if iqr > 0 else m.std()
        bandwidth = 0.9 * spread * len(m) ** -0.2
    out, tried = np.empty(0), 0
    while len(out) < n:
        if tried > _KDE_BUDGET * n:
            raise ValueError(
                f"only {len(out)} of {tried} draws of the KDE of m fell inside ({low}, {high}): "
                f"the values of m (from {m.min():.6g} to {m.max():.6g}) put almost no mass in "
                "the window (are they the window's events, in its units?)"
            )
        k = n - len(out)
        draw = rng.choice(m, k) + bandwidth * rng.standard_normal(k)
        tried += k
        out = np.concatenate([out, draw[(draw > low) & (draw < high)]])
    return out[:n]


# CATHODE's sideband flow: the settings measured in ``benchmarks/anomaly_fidelity.py``.
CATHODE_FLOW: dict[str, Any] = {
    "family": "maf", "layers": 4, "hidden": (32, 32), "max_epochs": 30, "batch_size": 1024,
    "lr": 2e-3, "schedule": "cosine", "patience": None, "best_epochs": 5,
}  # fmt: skip


def cathode_background(bounds: Any = None, seed: int = 0, **overrides: Any) -> ConditionalDensity:
    """The background density :class:`~pyroflows.anomaly.CATHODE` uses unless given one: a MAF
    of 4 layers of (32, 32) units, Adam at 2e-3 with a cosine decay over 30 epochs of batch
    1024 (no early stopping), and the states of the 5 epochs with the lowest validation loss
    as an ensemble (CATHODE's samples are drawn from them in turn).

    Measured on the development bump hunt (100 000 background events, strong correlation,
    data seeds 0 and 1; ``benchmarks/results/anomaly_fidelity.md``): CATHODE's max SIC is 0.98
    and 1.01 of the idealized detector's (0.92 and 0.75 with the best state of an 8-epoch flow
    without the schedule), the exact ``KL(true || flow)`` in the SR 0.004 nats per event, and a
    classifier tells the flow's SR samples from true SR background with an AUC of 0.507 and
    0.503 (30 000 events each; :func:`~pyroflows.anomaly.background_fidelity`). 400 000
    samples, one ``m`` each, take 3-7 s on one busy CPU core.

    Args:
        bounds: ``(low, high)`` per column for the logit preprocessing (None: standardise).
        seed: seed of the split and the flow.
        overrides: any other :class:`ConditionalDensity` argument, replacing the recipe's.

    Example:
        >>> density = cathode_background(bounds=([-np.inf, 0.0], [np.inf, 1.0]))
        >>> density.best_epochs, density.schedule, density.max_epochs
        (5, 'cosine', 30)
    """
    return ConditionalDensity(**{**CATHODE_FLOW, "bounds": bounds, "seed": seed, **overrides})


class ConditionalDensity:
    """An ensemble of conditional flows ``p(x | m)`` in data units.

    Args:
        family: flow family for :func:`pyroflows.build` (``"maf"``, ``"nsf"``, ...).
        layers, hidden: the flow's size; ``flow_options`` go to the builder.
        ensemble: independently seeded flows (the mixture is the density).
        best_epochs: states kept per flow: the epochs with the ``best_epochs`` lowest
            validation losses, each a member (fewer when early stopping ends the run first);
            at most ``max_epochs``.
        bounds: ``(low, high)`` per column for the logit preprocessing (infinite entries for
            unbounded columns); None: standardise only.
        max_epochs, batch_size, lr, schedule, patience, time_budget: the loop's settings
            (:func:`pyroflows.train.fit`; ``schedule`` one of its learning-rate schedules,
            ``patience`` None for no early stopping).
        validation_fraction: rows held out for early stopping (one seeded split).
        checkpoint_dir: write each member's loop checkpoint there (and resume from it). A
            checkpoint keeps one state per flow, so with ``best_epochs > 1`` a fit into a
            folder that already holds a member's checkpoint is refused (resuming would keep
            one state of that flow instead of its best epochs).
        seed: seed of the split and of the first member.
    """

    def __init__(
        self,
        family: str = "maf",
        layers: int = 5,
        hidden: Sequence[int] = (64, 64),
        ensemble: int = 1,
        best_epochs: int = 1,
        bounds: Any = None,
        max_epochs: int = 100,
        batch_size: int = 512,
        lr: float = 1e-3,
        schedule: str | None = None,
        patience: int = 10,
        time_budget: float | None = None,
        validation_fraction: float = 0.2,
        checkpoint_dir: str | Path | None = None,
        seed: int = 0,
        **flow_options,
    ):
        positive_int("ensemble", ensemble)
        positive_int("best_epochs", best_epochs)
        positive_int("max_epochs", max_epochs)
        if best_epochs > max_epochs:
            raise ValueError(
                f"best_epochs ({best_epochs}) cannot exceed max_epochs ({max_epochs}): "
                "a flow cannot keep more epochs than it runs"
            )
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {list(SCHEDULES)}, got {schedule!r}")
        self.family, self.layers, self.hidden = family, layers, tuple(hidden)
        self.ensemble, self.best_epochs, self.bounds = ensemble, best_epochs, bounds
        self.max_epochs, self.batch_size, self.lr = max_epochs, batch_size, lr
        self.schedule = schedule
        self.patience, self.time_budget = patience, time_budget
        self.validation_fraction, self.checkpoint_dir = validation_fraction, checkpoint_dir
        self.seed, self.flow_options = seed, flow_options
        self.members_: list[torch.nn.Module] = []
        self.histories_: list = []

    @property
    def m_range_(self) -> tuple[float, float]:
        """The range of the training events' ``m``: where the flow is not extrapolating."""
        return float(self.m_train_[0]), float(self.m_train_[-1])

    # -- coordinates --------------------------------------------------------------------------
    def _context(self, m: Any) -> torch.Tensor:
        m = np.asarray(m, np.float64).reshape(-1, 1)
        return torch.as_tensor((m - self.m_mean_) / self.m_std_, dtype=torch.float32)

    @staticmethod
    def _finite_m(m: Any) -> np.ndarray:
        """``m`` as a float64 vector, or a ``ValueError`` naming its NaN or infinite values
        (a density or a sample at such an ``m`` would be NaN, or a number it is not)."""
        m = np.asarray(m, np.float64).reshape(-1)
        bad = ~np.isfinite(m)
        if bad.any():
            raise ValueError(
                f"m has {int(bad.sum())} NaN or infinite value(s) (first at event "
                f"{int(np.flatnonzero(bad)[0])})"
            )
        return m

    def fit(self, x: Any, m: Any) -> ConditionalDensity:
        """Train the members on events ``x`` ``(n, d)`` with resonant feature ``m`` ``(n,)``
        (a fit that raises leaves a fitted density as it was)."""
        with restore_on_error(self):
            return self._fit(x, m)

    def _fit(self, x: Any, m: Any) -> ConditionalDensity:
        x = np.asarray(x, np.float64)
        m = np.asarray(m, np.float64).reshape(-1)
        if x.ndim != 2 or len(x) != len(m) or not (np.isfinite(x).all() and np.isfinite(m).all()):
            raise ValueError(f"need finite x (n, d) and m (n,), got {x.shape} and {m.shape}")
        self.dim_ = x.shape[1]
        self.preprocessor_ = fit_preprocessor(x, bounds=self.bounds, name="x")
        self.m_mean_, self.m_std_ = float(m.mean()), float(m.std() or 1.0)
        self.m_train_ = np.sort(m)  # where it was trained: a detector sharing it checks its SR
        with torch.no_grad():
            z = self.preprocessor_.to_latent(torch.as_tensor(x))[0].float()
        c = self._context(m)
        order = np.random.default_rng(self.seed).permutation(len(x))
        n_val = validation_rows(len(x), self.validation_fraction)
        val, train = order[:n_val], order[n_val:]
        self._refuse_partial_resume()
        self.members_, self.histories_ = [], []
        for k in range(self.ensemble):
            self._fit_member(k, (z[train], c[train]), (z[val], c[val]))
        return self

    def _checkpoint(self, k: int) -> Path | None:
        """Member ``k``'s loop checkpoint (None without ``checkpoint_dir``)."""
        if self.checkpoint_dir is None:
            return None
        return Path(self.checkpoint_dir) / f"member{k}.pt"

    def _refuse_partial_resume(self) -> None:
        """A checkpoint keeps the best epoch's state only: resuming it with ``best_epochs >
        1`` would give one member where the best epochs were asked for."""
        if self.best_epochs == 1:
            return
        found = [p for p in map(self._checkpoint, range(self.ensemble)) if p and p.exists()]
        if found:
            raise ValueError(
                f"{found[0]} exists, and a checkpoint keeps one state per flow: resuming it "
                f"would keep 1 member of that flow instead of its {self.best_epochs} best "
                "epochs; use an empty checkpoint_dir (or delete the file), or best_epochs=1"
            )

    def _fit_member(self, k: int, train: tuple, val: tuple) -> None:
        seed = self.seed + k
        torch.manual_seed(seed)
        flow = build(self.family, self.dim_, context_dim=1, layers=self.layers,
                     hidden=self.hidden, **self.flow_options)  # fmt: skip
        kept: list[tuple[float, dict]] = []

        def keep(epoch: int, history) -> None:
            if self.best_epochs > 1 and history.val_loss:
                kept.append((history.val_loss[-1], copy.deepcopy(flow.state_dict())))
                kept.sort(key=lambda item: item[0])
                del kept[self.best_epochs :]

        checkpoint = self._checkpoint(k)
        if checkpoint is not None:
            checkpoint.parent.mkdir(parents=True, exist_ok=True)
        history = fit(
            flow, nll, train, val, max_epochs=self.max_epochs, batch_size=self.batch_size,
            lr=self.lr, schedule=self.schedule, patience=self.patience,
            time_budget=self.time_budget, seed=seed,
            progress=False, desc=f"flow {k}", callback=keep if self.best_epochs > 1 else None,
            checkpoint=checkpoint, resume=checkpoint,
        )  # fmt: skip
        self.histories_.append(history)
        self.members_.append(flow.eval())  # the best state (the loop loaded it)
        for _, state in kept[1:]:  # the next best epochs
            extra = copy.deepcopy(flow)
            extra.load_state_dict(state)
            self.members_.append(extra.eval())

    def _check_fitted(self) -> None:
        if not self.members_:
            raise RuntimeError("the density is not fitted: call fit(x, m) first")

    # -- density and sampling -----------------------------------------------------------------
    @torch.no_grad()
    def log_prob(self, x: Any, m: Any) -> np.ndarray:
        """``log p(x | m)`` in data units (the preprocessing's Jacobian included), float64;
        ``-inf`` for ``x`` outside the bounds, never dropped; NaN in ``x`` or a non-finite
        ``m`` is refused."""
        self._check_fitted()
        x = np.asarray(x, np.float64)
        m = self._finite_m(m)
        if x.ndim != 2 or x.shape[1] != self.dim_ or len(x) != len(m):
            raise ValueError(
                f"x must be (n, {self.dim_}) with one m per row, got {x.shape} and {m.shape}"
            )
        if np.isnan(x).any():  # outside the bounds is -inf; a NaN is no value at all
            raise ValueError(
                f"x has {int(np.isnan(x).sum())} NaN value(s) (first at event "
                f"{int(np.argwhere(np.isnan(x))[0][0])}): no density there"
            )
        x64 = torch.as_tensor(x)
        z, ladj = self.preprocessor_.to_latent(x64)
        bad = ~torch.isfinite(z).all(-1)
        z = torch.where(bad[:, None], torch.zeros_like(z), z).float()
        c = self._context(m)
        parts = torch.stack([f.log_prob(z, c, check=False).double() for f in self.members_])
        log_p = torch.logsumexp(parts, 0) - np.log(len(self.members_)) + ladj
        return torch.where(bad, torch.full_like(log_p, -np.inf), log_p).numpy()

    @torch.no_grad()
    def sample(self, m: Any, seed: int = 0, chunk: int = 1_000_000) -> np.ndarray:
        """One ``x`` per value of ``m`` ``(n,)`` -> ``(n, d)`` in data units: event ``i`` comes
        from member ``i mod K``; each member draws all its events in one vectorised pass."""
        self._check_fitted()
        m = self._finite_m(m)
        c = self._context(m)
        out = torch.empty(len(m), self.dim_, dtype=torch.float64)
        with seeded_draws(seed):
            for k, flow in enumerate(self.members_):
                idx = torch.arange(k, len(m), len(self.members_))
                for start in range(0, len(idx), chunk):
                    part = idx[start : start + chunk]
                    z = flow.sample((), context=c[part])
                    out[part] = self.preprocessor_.from_latent(z.double())
        return out.numpy()
