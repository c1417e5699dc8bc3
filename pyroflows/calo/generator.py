"""A two-step conditional shower generator in the style of CaloFlow (Krause & Shih,
arXiv:2106.05285 and 2110.11377), with a distilled fast sampler.

* **Flow I** learns ``p(layer energies | incident energy)`` (default: an autoregressive spline
  flow, :func:`pyroflows.nsf`) on the encoded layer energies of
  :mod:`pyroflows.calo.encoding`;
* **flow II**, the teacher, learns ``p(voxel shares | layer energies, incident energy)``
  (default: an autoregressive spline flow, :func:`pyroflows.nsf`) on the logits of the
  dequantised voxels' shares of their layer;
* :meth:`TwoStepGenerator.distill` trains the **students**, IAF-direction copies of flow II and
  of flow I (:func:`pyroflows.distill` with the same ``(x, context)`` rows), which sample in
  one network pass per layer instead of one per feature.

Both flows are trained by the one loop (:func:`pyroflows.train.fit`, negative log-likelihood)
on standardised inputs and contexts (:func:`pyroflows.preprocess.fit_preprocessor`, float64
before the cast). Sampling runs flow I, then flow II at the generated layer
energies (or the two students), decodes (:meth:`TwoStepGenerator.decode`) and thresholds:
voxels below the threshold come out exactly 0, and the returned layer energies are the sums of
the returned voxels.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pyroflows.builders import nsf
from pyroflows.calo import encoding as enc
from pyroflows.calo.redequantise import Redequantised
from pyroflows.flows import Flow
from pyroflows.preprocess import Preprocessor, fit_preprocessor, to_latent
from pyroflows.train import check_options, fit
from pyroflows.train.checkpoint import restore_on_error
from pyroflows.train.losses import nll
from pyroflows.train.seeding import seeded_draws
from pyroflows.validation import flag, positive_int
from pyroflows.vi.distill import distill, distillable

__all__ = ["GeneratedShowers", "TwoStepGenerator"]

_CHUNK = 8192


@dataclass(frozen=True)
class GeneratedShowers:
    """Draws of :meth:`TwoStepGenerator.sample`.

    Attributes:
        energy: the incident energies asked for, ``(n,)``.
        layer_energies: sums of each layer's voxels, ``(n, L)``.
        voxels: voxel energies, exactly 0 below the threshold, ``(n, sum(layer_sizes))``.
    """

    energy: np.ndarray
    layer_energies: np.ndarray
    voxels: np.ndarray


#: energies within this fraction of the training range's width (in log E) beyond its edges
#: are not extrapolation
_RANGE_MARGIN = 0.01


def _energy(energy: Any, name: str = "energy") -> np.ndarray:
    e = np.asarray(energy, dtype=np.float64)
    if e.ndim != 1 or not len(e):
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {e.shape}")
    if not np.isfinite(e).all() or (e <= 0).any():
        raise ValueError(f"{name} must be finite and > 0")
    return e


def _pair(name: str, value: Any) -> tuple[Any, Any]:
    """An option for both flows, or a pair ``(flow I, flow II)`` (a tuple of two)."""
    if not isinstance(value, tuple):
        return value, value
    if len(value) != 2:
        raise ValueError(f"{name} must be one value or a pair (flow I, flow II), got {value!r}")
    return value


class TwoStepGenerator:
    """Flow I (layer energies | incident energy) + flow II (voxels | layer energies, incident
    energy) + optional distilled students of both.

    Args:
        layer_sizes: voxels per layer, in the column order of the voxel arrays.
        threshold: the zero-suppression threshold of the data (voxels are 0 or ``>=`` it).
        energy_flow: flow I, a conditional :class:`~pyroflows.flows.Flow` on ``L`` dimensions
            with context size 1 (default: ``nsf(L, 1, layers=4, hidden=(64, 64))``).
        shower_flow: flow II, a conditional flow on ``sum(layer_sizes)`` dimensions with
            context size ``L + 1`` and MAF-direction autoregressive layers, so that it can be
            distilled (default: an autoregressive spline flow, ``nsf(D, L + 1, layers=4,
            hidden=(128, 128))``: it models the two-part distribution of a voxel, the
            dequantised zeros below the threshold and the deposits above it, far better than
            an affine MAF; ``benchmarks/results/calo.md``).
        floor: zeros are dequantised to ``threshold * u``, ``u`` on ``(floor, 1)``.
        log_dequantise: ``u`` log-uniform (default) rather than uniform. In the flows'
            log-like units a log-uniform ``u`` spreads the zeros evenly over
            ``log(1 / floor)`` nats below the threshold; a uniform ``u`` piles them up just
            below it, where a flow's smooth density then carries part of them over the
            threshold and the generated showers have too few zeros
            (``benchmarks/results/calo.md``).

    Example:
        >>> from pyroflows.datasets import calo_showers
        >>> s = calo_showers(300, seed=0)
        >>> gen = TwoStepGenerator(s.layer_sizes, s.threshold,
        ...                        shower_flow=nsf(99, 4, layers=1, hidden=(16,)))
        >>> _ = gen.fit(s.energy, s.voxels, max_epochs=1, progress=False)
        >>> out = gen.sample([2.0, 50.0], seed=0)
        >>> out.voxels.shape, bool(((out.voxels == 0) | (out.voxels >= s.threshold)).all())
        ((2, 99), True)
    """

    def __init__(
        self,
        layer_sizes: Sequence[int],
        threshold: float,
        energy_flow: Flow | None = None,
        shower_flow: Flow | None = None,
        floor: float = 0.05,
        log_dequantise: bool = True,
    ):
        self.layer_sizes = tuple(positive_int("layer size", s) for s in layer_sizes)
        if len(self.layer_sizes) < 2:
            raise ValueError("layer_sizes needs at least two layers")
        if not (np.isfinite(threshold) and threshold > 0):
            raise ValueError(f"threshold must be a finite number > 0, got {threshold!r}")
        if not 0 < floor < 1 - 2 * enc.ROUNDING:
            raise ValueError(f"floor must lie in (0, {1 - 2 * enc.ROUNDING}), got {floor!r}")
        self.threshold, self.floor = float(threshold), float(floor)
        self.log_dequantise = flag("log_dequantise", log_dequantise)
        L, D = len(self.layer_sizes), sum(self.layer_sizes)
        self.energy_flow = energy_flow if energy_flow is not None else nsf(
            L, 1, layers=4, hidden=(64, 64))  # fmt: skip
        self.shower_flow = shower_flow if shower_flow is not None else nsf(
            D, L + 1, layers=4, hidden=(128, 128))  # fmt: skip
        for name, flow, dim, ctx in (("energy_flow", self.energy_flow, L, 1),
                                     ("shower_flow", self.shower_flow, D, L + 1)):  # fmt: skip
            if not isinstance(flow, Flow):
                raise TypeError(f"{name} must be a pyroflows Flow, got {type(flow).__name__}")
            if (flow.dim, flow.context_dim) != (dim, ctx):
                raise ValueError(
                    f"{name} must have dim {dim} and context_dim {ctx}, got "
                    f"{flow.dim} and {flow.context_dim}"
                )
        self.student_: Flow | None = None
        self.energy_student_: Flow | None = None
        self.history_: dict[str, Any] = {}

    # -- encoding ---------------------------------------------------------------------------
    def _check(self, energy: Any, voxels: Any) -> tuple[np.ndarray, np.ndarray]:
        e = _energy(energy)
        v = np.asarray(voxels, dtype=np.float64)
        D = sum(self.layer_sizes)
        if v.shape != (len(e), D):
            raise ValueError(f"voxels must be ({len(e)}, {D}), got shape {v.shape}")
        if not np.isfinite(v).all():
            raise ValueError("voxels must be finite")
        return e, v

    def encode(
        self, energy: Any, voxels: Any, seed: int = 0
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Dequantise and encode showers: ``(context I, features I, features II)`` in the
        flows' units before standardisation (``log E_inc``, :func:`~pyroflows.calo.encoding.
        encode_layer_energies`, :func:`~pyroflows.calo.encoding.encode_voxels`)."""
        e, v = self._check(energy, voxels)
        d = enc.dequantise(
            v, self.threshold, np.random.default_rng(seed), self.floor, self.log_dequantise
        )
        layers = enc.layer_sums(d, self.layer_sizes)
        return (np.log(e)[:, None], enc.encode_layer_energies(layers, e),
                enc.encode_voxels(d, self.layer_sizes))  # fmt: skip

    # -- training ---------------------------------------------------------------------------
    def fit(
        self,
        energy: Any,
        voxels: Any,
        val_fraction: float = 0.1,
        max_epochs: int | tuple[int, int] = 50,
        time_budget: float | tuple[float, float] | None = None,
        seed: int = 0,
        redequantise: bool = False,
        **fit_kwargs: Any,
    ) -> TwoStepGenerator:
        """Train flow I, then flow II, by negative log-likelihood (:func:`pyroflows.train.fit`).

        Args:
            energy: incident energies ``(n,)``.
            voxels: zero-suppressed voxels ``(n, sum(layer_sizes))``: 0 or ``>= threshold``.
            val_fraction: share of showers held out for early stopping (and distillation).
            max_epochs, time_budget: for both flows, or a pair ``(flow I, flow II)``.
            seed: seed of the dequantisation, the split and the training.
            redequantise: draw the dequantisation noise of the training showers afresh for
                every epoch (:class:`~pyroflows.calo.redequantise.Redequantised`) instead of
                once: the flows then cannot learn the particular noise values below the
                threshold. The validation rows, the standardisation and the rows that
                :meth:`distill` uses keep the draw of ``seed``.
            **fit_kwargs: other options of :func:`pyroflows.train.fit` (``lr``,
                ``batch_size``, ``patience``, ``progress``...), for both flows
                (``checkpoint`` and ``resume`` name one flow's file and are refused).

        Returns:
            ``self``; ``history_`` holds both training histories.

        Every option is checked before anything is trained, and a fit that raises (a bad
        option, a diverged flow, an interrupt) leaves the generator as it was: its flows,
        standardisations, energy range and students.
        """
        if not 0 <= val_fraction < 1:
            raise ValueError(f"val_fraction must lie in [0, 1), got {val_fraction!r}")
        redequantise = flag("redequantise", redequantise)
        epochs, budgets = _pair("max_epochs", max_epochs), _pair("time_budget", time_budget)
        shared = sorted({"checkpoint", "resume"} & set(fit_kwargs))
        if shared:
            raise ValueError(
                f"{' and '.join(shared)} name one flow's checkpoint file, and fit trains two "
                "flows (the second would overwrite or resume the first's): leave them out"
            )
        for i in (0, 1):
            check_options(max_epochs=epochs[i], time_budget=budgets[i], **fit_kwargs)
        with restore_on_error(self, self.energy_flow, self.shower_flow):
            return self._fit(energy, voxels, val_fraction, epochs, budgets, seed, redequantise,
                             fit_kwargs)  # fmt: skip

    def _fit(
        self, energy: Any, voxels: Any, val_fraction: float, epochs: tuple, budgets: tuple,
        seed: int, redequantise: bool, fit_kwargs: dict[str, Any],
    ) -> TwoStepGenerator:  # fmt: skip
        """:meth:`fit` after its options were checked."""
        c1, f1, f2 = self.encode(energy, voxels, seed)
        n = len(c1)
        n_val = int(round(val_fraction * n))
        if n - n_val < 2:
            raise ValueError(f"{n} showers leave too few training rows")
        perm = np.random.default_rng(seed).permutation(n)
        train, val = perm[n_val:], perm[:n_val]
        self.log_energy_range_ = (float(c1[train].min()), float(c1[train].max()))
        self.pre_ = {
            "c1": fit_preprocessor(c1[train], name="log energy"),
            "f1": fit_preprocessor(f1[train], name="layer-energy features"),
            "f2": fit_preprocessor(f2[train], name="voxel features"),
        }
        c2 = np.column_stack([c1, f1])
        self.pre_["c2"] = fit_preprocessor(c2[train], name="flow II context")
        t1 = self._tensors(self.energy_flow, ("f1", f1), ("c1", c1))
        t2 = self._tensors(self.shower_flow, ("f2", f2), ("c2", c2))
        self._rows = {key: ((t[0][train], t[1][train]), (t[0][val], t[1][val]) if n_val else None)
                      for key, t in (("energy_flow", t1), ("shower_flow", t2))}  # fmt: skip
        jobs = (("energy_flow", self.energy_flow, t1, 0), ("shower_flow", self.shower_flow, t2, 1))
        self.history_ = {}  # a new dict: a failed fit restores the old one
        for key, flow, t, i in jobs:
            val_data = (t[0][val], t[1][val]) if n_val else None
            train_data: Any = (t[0][train], t[1][train])
            if redequantise:
                train_data = Redequantised(
                    self._training_rows(key, energy, voxels, train),
                    fit_kwargs.get("batch_size", 256), seed, t[0].dtype,
                )  # fmt: skip
            self.history_[key] = fit(
                flow, nll, train_data, val_data, max_epochs=epochs[i],
                time_budget=budgets[i], seed=seed, **fit_kwargs,
            )  # fmt: skip
            flow.eval()
        self.student_ = self.energy_student_ = None
        return self

    def _training_rows(
        self, key: str, energy: Any, voxels: Any, train: np.ndarray
    ) -> Callable[[int], tuple[torch.Tensor, torch.Tensor]]:
        """``seed -> (features, context)`` of flow I (``key="energy_flow"``) or flow II for
        the training showers, dequantised with ``seed`` and standardised as in :meth:`fit`."""
        e, v = self._check(energy, voxels)
        e, v = e[train], v[train]
        flow = getattr(self, key)

        def rows(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
            c1, f1, f2 = self.encode(e, v, seed)
            if key == "energy_flow":
                x, c = self._tensors(flow, ("f1", f1), ("c1", c1))
            else:
                x, c = self._tensors(flow, ("f2", f2), ("c2", np.column_stack([c1, f1])))
            return x, c

        return rows

    def _tensors(self, flow: Flow, *named: tuple[str, np.ndarray]) -> list[torch.Tensor]:
        dtype = next(flow.parameters()).dtype
        return [to_latent(self.pre_[k], a, dtype)[0] for k, a in named]

    def distill(
        self, energy: bool = True, energy_options: dict[str, Any] | None = None, **options: Any
    ) -> Flow:
        """Distil flow II (and flow I) into IAF-direction students.

        :func:`pyroflows.distill` runs on the training rows of :meth:`fit`, validated on its
        held-out rows. :meth:`sample` with ``sampler="student"`` then draws with the students
        only: one network pass per layer in both steps.

        Args:
            energy: also distil flow I (``energy_student_``); flow I must then be a
                MAF-direction autoregressive flow (e.g. :func:`pyroflows.nsf`), else this is
                refused. With ``False`` the student path samples flow I itself.
            energy_options: :func:`pyroflows.distill` options for flow I (default: flow II's
                ``max_epochs``, ``time_budget``, ``seed`` and ``progress``, where given).
            **options: :func:`pyroflows.distill`'s options for flow II (``max_epochs``,
                ``hidden``, ``kl_weight``, ``time_budget``...).

        Returns:
            The student of flow II (``student_``).
        """
        if not hasattr(self, "pre_"):
            raise RuntimeError("fit the generator before distilling it")
        if energy_options is not None and not energy:
            raise ValueError("energy_options given with energy=False: flow I is not distilled")
        if energy and not distillable(self.energy_flow):
            raise ValueError(
                "flow I has coupling layers and already samples in one pass per layer: call "
                "distill(energy=False) to keep it in the student path"
            )
        energy_student = None
        if energy:
            shared = {k: options[k] for k in ("max_epochs", "time_budget", "seed", "progress")
                      if k in options}  # fmt: skip
            opts1 = {**shared, **(energy_options or {})}
            energy_student = distill(self.energy_flow, *self._rows["energy_flow"], **opts1)
        student = distill(self.shower_flow, *self._rows["shower_flow"], **options)
        # both trained: only now is the generator's state changed
        self.energy_student_, self.student_ = energy_student, student
        self.history_.pop("energy_student", None)
        if energy_student is not None:
            self.history_["energy_student"] = energy_student.history
        self.history_["student"] = student.history
        return student

    # -- sampling ---------------------------------------------------------------------------
    def _sample_flow(self, flow: Flow, pre: Preprocessor, context: torch.Tensor) -> np.ndarray:
        out = []
        with torch.no_grad():
            for start in range(0, len(context), _CHUNK):
                z = flow.sample((), context[start : start + _CHUNK])
                out.append(pre.from_latent(z.to(torch.float64)).numpy())
        return np.concatenate(out)

    def sample(
        self, energy: Any, seed: int = 0, sampler: str = "teacher", extrapolate: bool = False
    ) -> GeneratedShowers:
        """One shower per incident energy.

        Args:
            energy: incident energies ``(n,)`` (> 0), within the training showers' range
                (widened by 1 % of its width in ``log E`` each side).
            seed: seed of the draws (torch's generator in a forked state: the global one is
                left as it was).
            sampler: ``"teacher"`` (flows I and II) or ``"student"`` (the distilled flows;
                flow I itself where :meth:`distill` ran with ``energy=False``).
            extrapolate: allow energies outside that range (the flows' conditioning is then
                an extrapolation; a warning counts them). False: such energies raise a
                ``ValueError`` naming how many and the range.

        Returns:
            :class:`GeneratedShowers`: voxels exactly 0 below the threshold, ``>=`` it
            elsewhere, layer energies the sums of the voxels.
        """
        if not hasattr(self, "pre_"):
            raise RuntimeError("fit the generator before sampling")
        if sampler not in ("teacher", "student"):
            raise ValueError(f"sampler must be 'teacher' or 'student', got {sampler!r}")
        if sampler == "student" and self.student_ is None:
            raise RuntimeError("no student: call distill() first, or use sampler='teacher'")
        flow1, flow2 = self.energy_flow, self.shower_flow
        if sampler == "student":
            flow1, flow2 = self.energy_student_ or flow1, self.student_
        e = _energy(energy)
        c1 = np.log(e)[:, None]
        self._check_range(c1[:, 0], extrapolate)
        with seeded_draws(seed):
            ctx1 = self._tensors(flow1, ("c1", c1))[0]
            f1 = self._sample_flow(flow1.eval(), self.pre_["f1"], ctx1)
            ctx2 = self._tensors(flow2, ("c2", np.column_stack([c1, f1])))[0]
            f2 = self._sample_flow(flow2.eval(), self.pre_["f2"], ctx2)
        return self.decode(e, f1, f2)

    def _check_range(self, log_e: np.ndarray, extrapolate: bool) -> None:
        low, high = self.log_energy_range_
        margin = _RANGE_MARGIN * (high - low)
        outside = int(((log_e < low - margin) | (log_e > high + margin)).sum())
        if not outside:
            return
        message = (
            f"{outside} incident energies lie outside the training showers' range "
            f"[{math.exp(low):.4g}, {math.exp(high):.4g}] (widened by {_RANGE_MARGIN:.0%} of "
            "its width in log E): the flows never saw such energies"
        )
        if not extrapolate:
            raise ValueError(message + "; pass extrapolate=True to sample there anyway")
        warnings.warn(message + " (sampled by extrapolation)", RuntimeWarning, stacklevel=3)

    def decode(self, energy: Any, features1: Any, features2: Any) -> GeneratedShowers:
        """Showers from the flows' features (the inverse of :meth:`encode` up to the
        dequantisation noise): layer energies from ``features1``, voxel shares from
        ``features2`` renormalised per layer, then every voxel below the threshold set to
        exactly 0 (the dequantised zeros of :meth:`encode` lie below it, the kept voxels at
        or above it).

        Example:
            >>> from pyroflows.datasets import calo_showers
            >>> s = calo_showers(50, seed=0)
            >>> gen = TwoStepGenerator(s.layer_sizes, s.threshold)
            >>> _, f1, f2 = gen.encode(s.energy, s.voxels)
            >>> out = gen.decode(s.energy, f1, f2)
            >>> bool(np.array_equal(out.voxels == 0, s.voxels == 0))
            True
            >>> bool(np.allclose(out.voxels, s.voxels, rtol=1e-9))
            True
        """
        e = _energy(energy)
        f1, f2 = np.asarray(features1, np.float64), np.asarray(features2, np.float64)
        L, D = len(self.layer_sizes), sum(self.layer_sizes)
        if f1.shape != (len(e), L) or f2.shape != (len(e), D):
            raise ValueError(
                f"features must be ({len(e)}, {L}) and ({len(e)}, {D}), got {f1.shape} and "
                f"{f2.shape}"
            )
        for name, f in (("features1", f1), ("features2", f2)):
            bad = ~np.isfinite(f).all(1)
            if bad.any():
                raise ValueError(
                    f"{name} has NaN or infinite values in {int(bad.sum())} shower(s) (first "
                    f"{int(np.flatnonzero(bad)[0])}): no shower decodes from them"
                )
        with np.errstate(over="ignore", invalid="ignore"):
            layers = enc.decode_layer_energies(f1, e)
        bad = ~np.isfinite(layers).all(1)
        if bad.any():  # exp overflow of the total energy: never returned as inf voxels
            raise ValueError(
                f"{int(bad.sum())} shower(s) decode to infinite layer energies (first "
                f"{int(np.flatnonzero(bad)[0])}): their total-energy feature overflows"
            )
        voxels = enc.threshold(enc.decode_voxels(f2, layers, self.layer_sizes), self.threshold)
        return GeneratedShowers(e, enc.layer_sums(voxels, self.layer_sizes), voxels)
