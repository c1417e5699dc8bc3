"""Density estimation with a flow behind the scikit-learn estimator API.

:class:`DensityEstimator` learns the pre-transform of :mod:`pyroflows.preprocess` in float64
(per-column standardisation or whitening, after a logit / log map for bounded data), trains a
flow on the standardised rows with :func:`pyroflows.train.fit` and :func:`pyroflows.losses.nll`,
and reports ``log p(x)`` in the user's units: the pre-transform's Jacobian is added in float64,
so float32 training on data with a large offset loses nothing. ``flow_`` is the whole model
(flow layers followed by the fixed pre-transform layers) as a :class:`~pyroflows.flows.Flow`.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from pyroflows.builders import FAMILIES, build
from pyroflows.estimator import BaseDensity, split_validation
from pyroflows.flows import Flow
from pyroflows.losses import nll
from pyroflows.preprocess import Preprocessor, bounds_array, fit_preprocessor
from pyroflows.train import History, fit, resolve_device
from pyroflows.transforms import Box, FixedAffine

_DTYPES = {"float32": torch.float32, "float64": torch.float64}
_CHUNK = 8192


class DensityEstimator(BaseDensity):
    """A normalizing flow fitted to samples: ``fit`` / ``score_samples`` / ``score`` /
    ``sample`` / ``save`` / ``load`` / ``plot_history``.

    Args:
        flow: family: ``"nsf"`` (default), ``"maf"``, ``"realnvp"``, ``"iaf"`` or
            ``"piecewise_linear"`` (needs finite ``bounds``: the box is mapped affinely onto
            the unit cube, where the flow lives).
        layers: number of flow layers.
        hidden: hidden sizes of each layer's network.
        bins: spline bins (``nsf``, ``piecewise_linear``).
        bound: spline interval ``[-bound, bound]`` in standardised units (``nsf``).
        coupling: coupling instead of autoregressive layers (``nsf``, ``piecewise_linear``).
        residual: residual conditioner blocks.
        base: base distribution name (``"normal"``, ``"diag_normal"``, ``"mog"``).
        whiten: standardise with the mean and the Cholesky factor of the covariance (True),
            or with per-column means and standard deviations (False, default). Either way
            ``log p`` is in the data's units.
        bounds: ``(low, high)``, scalars or one per column, when the data lie in a box;
            infinite entries leave a side open (``(0, inf)``: positive data, a log map).
            ``None``: unbounded data. Points outside get ``log p = -inf``.
        lr, batch_size, max_epochs, patience, clip_grad, weight_decay, schedule, time_budget:
            passed to :func:`pyroflows.train.fit`.
        validation_fraction: share of the training rows held out for early stopping when no
            ``X_val`` is given (0 disables early stopping on validation data).
        random_state: seed of the split, the initialisation and the shuffling (the global
            random state is left untouched).
        device: where to train and evaluate.
        dtype: ``"float32"`` or ``"float64"`` for the flow (the pre-transform is float64).
        progress: progress bar: ``"auto"`` (notebooks and terminals, not CI), True or False.

    Example:
        >>> import numpy as np
        >>> X = np.random.default_rng(0).normal(size=(400, 2))
        >>> est = DensityEstimator(flow="maf", layers=2, hidden=(16, 16), max_epochs=5).fit(X)
        >>> est.score_samples(X[:3]).shape, est.sample(4, random_state=0).shape
        ((3,), (4, 2))
    """

    FORMAT_VERSION = 2

    def __init__(
        self,
        flow: str = "nsf",
        layers: int = 5,
        hidden: Sequence[int] = (128, 128),
        bins: int = 8,
        bound: float = 5.0,
        coupling: bool = False,
        residual: bool = False,
        base: str = "normal",
        whiten: bool = False,
        bounds: Any = None,
        lr: float = 1e-3,
        batch_size: int = 256,
        max_epochs: int = 500,
        patience: int = 50,
        validation_fraction: float = 0.1,
        clip_grad: float | None = 5.0,
        weight_decay: float = 0.0,
        schedule: str | None = None,
        time_budget: float | None = None,
        random_state: int | None = 0,
        device: str = "cpu",
        dtype: str = "float32",
        progress: bool | str = "auto",
    ):
        self.flow = flow
        self.layers = layers
        self.hidden = hidden
        self.bins = bins
        self.bound = bound
        self.coupling = coupling
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

    # -- checks -----------------------------------------------------------------------------
    def _check_params(self) -> None:
        if self.flow not in FAMILIES:
            raise ValueError(f"flow must be one of {sorted(FAMILIES)}, got {self.flow!r}")
        if self.dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {self.dtype!r}")
        if not (
            isinstance(self.validation_fraction, numbers.Real)
            and 0.0 <= self.validation_fraction < 1.0
        ):
            raise ValueError(
                f"validation_fraction must lie in [0, 1), got {self.validation_fraction!r}"
            )
        if self.random_state is not None and not isinstance(self.random_state, numbers.Integral):
            raise ValueError(f"random_state must be an int or None, got {self.random_state!r}")
        resolve_device(self.device)
        if self.base == "uniform" and self.flow != "piecewise_linear":
            raise ValueError(
                "base='uniform' needs a flow that maps the unit cube onto itself: use "
                "flow='piecewise_linear' with bounds, or base='normal'"
            )
        if self.flow == "piecewise_linear" and self.bounds is None:
            raise ValueError(
                "flow='piecewise_linear' lives on the unit cube: pass finite bounds=(low, high)"
            )

    # -- construction -----------------------------------------------------------------------
    def _torch_dtype(self) -> torch.dtype:
        return _DTYPES[self.dtype]

    def _architecture(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = dict(
            layers=self.layers, hidden=self.hidden, residual=self.residual, base=self.base
        )
        if self.flow in ("nsf", "piecewise_linear"):
            kwargs.update(bins=self.bins, coupling=self.coupling)
        if self.flow == "nsf":
            kwargs["bound"] = self.bound
        if self.flow == "piecewise_linear":
            del kwargs["base"]  # always the uniform base
        return kwargs

    def _preprocessor(self, X: np.ndarray) -> Preprocessor:
        if self.flow != "piecewise_linear":
            return fit_preprocessor(X, whiten=self.whiten, bounds=self.bounds)
        low, high = bounds_array(self.bounds, X.shape[1])
        if not (np.isfinite(low).all() and np.isfinite(high).all()):
            raise ValueError("flow='piecewise_linear' needs finite bounds on every column")
        outside = ~((X >= low) & (X <= high))
        if outside.any():
            i, j = np.argwhere(outside)[0]
            raise ValueError(f"X has values outside the bounds (first at row {i}, column {j})")
        return Preprocessor(
            [FixedAffine(torch.from_numpy(low), torch.diag(torch.from_numpy(high - low)))]
        )

    def _build(self, dim: int, pre: Preprocessor) -> Flow:
        core = build(self.flow, dim, **self._architecture())
        flow = Flow(list(core.transforms) + pre.layers(), core.base)
        return flow.to(device=self.device, dtype=self._torch_dtype())

    # -- BaseDensity hooks ------------------------------------------------------------------
    def _fit(self, X: np.ndarray, X_val: np.ndarray | None) -> dict[str, Any]:
        if X_val is None:
            X, X_val = split_validation(X, self.validation_fraction, self.random_state)
        pre = self._preprocessor(X)
        if X_val is not None:
            with torch.no_grad():
                _, ladj = pre.to_latent(torch.from_numpy(X_val))
            if not bool(torch.isfinite(ladj).all()):
                raise ValueError("X_val has values on or outside the bounds")
        seed = None if self.random_state is None else int(self.random_state)
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            flow = self._build(X.shape[1], pre)
        dtype, pre = self._torch_dtype(), pre.to(self.device)
        history = fit(
            _core(flow, pre),
            nll,
            _to_latent(pre, X, dtype, self.device)[0],
            None if X_val is None else _to_latent(pre, X_val, dtype, self.device)[0],
            max_epochs=self.max_epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            weight_decay=self.weight_decay,
            schedule=self.schedule,
            clip_grad=self.clip_grad,
            patience=self.patience if X_val is not None else None,
            time_budget=self.time_budget,
            seed=seed,
            progress=self.progress,
            desc=f"fit {self.flow}",
        )
        return {"flow_": flow, "preprocessor_": pre, "history_": history}

    def _score_samples(self, X: np.ndarray) -> np.ndarray:
        core = _core(self.flow_, self.preprocessor_).eval()
        dtype, out = self._torch_dtype(), []
        with torch.no_grad():
            for start in range(0, len(X), _CHUNK):
                z, ladj = _to_latent(
                    self.preprocessor_, X[start : start + _CHUNK], dtype, self.device
                )
                log_q = core.log_prob(z, check=False).to(torch.float64)
                # -inf from the pre-transform (outside the box) wins over any core value
                out.append(torch.where(torch.isfinite(ladj), log_q + ladj, ladj))
        log_p = torch.cat(out).cpu().numpy()
        return np.where(np.isnan(log_p), -np.inf, log_p)

    def _sample(self, n: int, rng: np.random.RandomState) -> np.ndarray:
        core = _core(self.flow_, self.preprocessor_).eval()
        seed = int(rng.randint(2**31 - 1))
        generator_devices = [self.device] if str(self.device).startswith("cuda") else []
        with torch.random.fork_rng(devices=generator_devices), torch.no_grad():
            torch.manual_seed(seed)
            z = core.sample((n,))
            x = self.preprocessor_.from_latent(z.to(torch.float64))
        return x.cpu().numpy()

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
        }

    def _set_state(self, state: dict[str, Any], version: int) -> None:
        if version < 2:
            raise ValueError(f"format version {version} is no longer read: re-fit the model")
        dim = self.n_features_in_
        # a pre-transform of the saved layout; load_state_dict overwrites its buffers
        layers: list = [FixedAffine(torch.zeros(dim), torch.eye(dim))]
        if self.bounds is not None and self.flow != "piecewise_linear":
            low, high = bounds_array(self.bounds, dim)
            layers.append(Box(torch.from_numpy(low), torch.from_numpy(high)))
        pre = Preprocessor(layers)
        flow = self._build(dim, pre)
        flow.load_state_dict(state["flow"])
        flow.eval()
        self.flow_ = flow
        self.preprocessor_ = Preprocessor(list(flow.transforms)[-len(layers) :])
        self.history_ = History(**state["history"])

    @classmethod
    def _params_from_plain(cls, params: dict[str, Any]) -> dict[str, Any]:
        params = dict(params)
        params["hidden"] = tuple(params["hidden"])
        if params.get("bounds") is not None:
            params["bounds"] = tuple(params["bounds"])
        return params


def _core(flow: Flow, pre: Preprocessor) -> Flow:
    """The flow on standardised data: ``flow`` without its pre-transform layers (shared
    modules, no copy)."""
    return Flow(list(flow.transforms)[: -len(pre.transforms)], flow.base)


def _to_latent(
    pre: Preprocessor, X: np.ndarray, dtype: torch.dtype, device: Any
) -> tuple[torch.Tensor, torch.Tensor]:
    """Standardised rows in ``dtype`` (computed in float64, clamped to the dtype's finite
    range) and the float64 log-Jacobian of the pre-transform."""
    with torch.no_grad():
        z, ladj = pre.to_latent(torch.as_tensor(X, dtype=torch.float64, device=device))
    limit = torch.finfo(dtype).max
    return z.clamp(-limit, limit).to(dtype), ladj


__all__ = ["DensityEstimator"]
