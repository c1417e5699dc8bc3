"""Density estimation with a flow behind the scikit-learn estimator API.

:class:`DensityEstimator` standardises each column (or whitens the data with its mean and
covariance, with ``whiten=True``; for data on a box, it first maps the box to the real line
with a logit), trains a flow with :func:`pyroflows.train.fit`,
and reports ``log p(x)`` in the user's units: the preprocessing is part of the flow as fixed
layers, so its Jacobian is included exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pyroflows.baselines import BaseDensity
from pyroflows.builders import build
from pyroflows.flows import Flow
from pyroflows.train import History, fit
from pyroflows.transforms import FixedAffine, SigmoidBox

FORMAT = "pyroflows.DensityEstimator"
FORMAT_VERSION = 1
_DTYPES = {"float32": torch.float32, "float64": torch.float64}


class DensityEstimator(BaseDensity):
    """A normalizing flow fitted to samples: ``fit`` / ``score_samples`` / ``score`` /
    ``sample`` / ``save`` / ``load``.

    Args:
        flow: family: ``"nsf"`` (default), ``"maf"``, ``"realnvp"``, ``"iaf"``.
        layers: number of flow layers.
        hidden: hidden sizes of each layer's network.
        bins: spline bins (NSF).
        coupling: coupling instead of autoregressive layers (NSF).
        residual: residual conditioner blocks.
        base: base distribution name (``"normal"``, ``"diag_normal"``, ``"mog"``).
        whiten: pre-transform the data with its mean and the Cholesky factor of its covariance
            (True), or with its mean and per-column standard deviations (False, default).
            Whitening helped on small, strongly correlated data (breast cancer per class) and
            hurt on dequantised digits; either way ``log p`` is in the data's units.
        bounds: ``(low, high)`` arrays (or scalars) when the data lie on a box: a logit
            pre-transform maps the box to the real line. None: unbounded data.
        lr, batch_size, max_epochs, patience, clip_grad, weight_decay, schedule, time_budget:
            passed to :func:`pyroflows.train.fit`.
        validation_fraction: share of the training rows held out for early stopping when no
            ``X_val`` is given (0 disables early stopping on validation data).
        random_state: seed of the split, the initialisation and the shuffling.
        device: where to train and evaluate.
        dtype: ``"float32"`` or ``"float64"``.
        progress: show a progress bar while fitting.

    Example:
        >>> import numpy as np
        >>> X = np.random.default_rng(0).normal(size=(400, 2))
        >>> est = DensityEstimator(flow="maf", layers=2, hidden=(16, 16), max_epochs=5).fit(X)
        >>> est.score_samples(X[:3]).shape, est.sample(4, random_state=0).shape
        ((3,), (4, 2))
    """

    def __init__(
        self,
        flow: str = "nsf",
        layers: int = 5,
        hidden: Sequence[int] = (128, 128),
        bins: int = 8,
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
        progress: bool = False,
    ):
        self.flow = flow
        self.layers = layers
        self.hidden = hidden
        self.bins = bins
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

    # -- construction -------------------------------------------------------------------------
    def _torch_dtype(self) -> torch.dtype:
        if self.dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {self.dtype!r}")
        return _DTYPES[self.dtype]

    def _box(self, dim: int) -> tuple[np.ndarray, np.ndarray] | None:
        if self.bounds is None:
            return None
        low, high = self.bounds
        low = np.broadcast_to(np.asarray(low, dtype=np.float64), (dim,)).copy()
        high = np.broadcast_to(np.asarray(high, dtype=np.float64), (dim,)).copy()
        if not np.all(high > low):
            raise ValueError("bounds: every upper bound must exceed its lower bound")
        return low, high

    def _build(self, dim: int, loc: np.ndarray, scale_tril: np.ndarray) -> Flow:
        kwargs: dict[str, Any] = dict(
            layers=self.layers, hidden=tuple(self.hidden), residual=self.residual, base=self.base
        )
        if self.flow == "nsf":
            kwargs.update(bins=self.bins, coupling=self.coupling)
        core = build(self.flow, dim, **kwargs)
        pre = [FixedAffine(torch.as_tensor(loc), torch.as_tensor(scale_tril))]
        box = self._box(dim)
        if box is not None:
            pre.append(SigmoidBox(torch.as_tensor(box[0]), torch.as_tensor(box[1])))
        flow = Flow(list(core.transforms) + pre, core.base)
        return flow.to(device=self.device, dtype=self._torch_dtype())

    def _affine(self, latent: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean and scale factor of the fixed pre-transform: the Cholesky factor of the
        covariance (whitening) or the diagonal of standard deviations."""
        loc = latent.mean(0)
        if not self.whiten:
            scale = latent.std(0)
            return loc, np.diag(np.where(scale > 0, scale, 1.0))
        std = latent.std(0)
        corr = np.atleast_2d(np.cov(latent.T, bias=True)) / np.outer(std, std)
        try:
            chol = np.linalg.cholesky(corr)
        except np.linalg.LinAlgError:
            chol = None
        # A squared pivot of the correlation's Cholesky factor is the share of a column's
        # variance not explained by the columns before it: near 0 means a singular covariance.
        if chol is None or np.diag(chol).min() ** 2 < 1e-10:
            raise ValueError(
                "the columns of X are linearly dependent (singular covariance); "
                "drop redundant columns or use whiten=False"
            )
        scale_tril = std[:, None] * chol
        return loc, scale_tril

    def _tensor(self, X: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(X, dtype=self._torch_dtype(), device=self.device)

    # -- BaseDensity hooks ----------------------------------------------------------------------
    def _fit(self, X: np.ndarray, X_val: np.ndarray | None) -> dict[str, Any]:
        dim = X.shape[1]
        box = self._box(dim)
        if box is not None:
            for name, data in (("X", X), ("X_val", X_val)):
                if data is not None and not np.all((data > box[0]) & (data < box[1])):
                    raise ValueError(f"{name} has values on or outside the bounds")
        rng = np.random.default_rng(self.random_state)
        if X_val is None and self.validation_fraction > 0 and len(X) >= 10:
            order = rng.permutation(len(X))
            n_val = max(1, int(round(self.validation_fraction * len(X))))
            X, X_val = X[order[n_val:]], X[order[:n_val]]
        # Standardise in the space the flow is trained in (after the logit, for a box).
        latent = X
        if box is not None:
            u = (X - box[0]) / (box[1] - box[0])
            latent = np.log(u) - np.log1p(-u)
        loc, scale_tril = self._affine(latent)
        flow = self._build(dim, loc, scale_tril)
        seed = None if self.random_state is None else int(self.random_state)
        if seed is not None:
            torch.manual_seed(seed)
            flow = self._build(dim, loc, scale_tril)  # initialisation under the seed
        history = fit(
            flow,
            lambda f, batch: -f._log_prob(batch[0]).mean(),
            self._tensor(X),
            None if X_val is None else self._tensor(X_val),
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
        return {"flow_": flow, "history_": history}

    def _score_samples(self, X: np.ndarray) -> np.ndarray:
        self.flow_.eval()
        out = []
        with torch.no_grad():
            for start in range(0, len(X), 8192):
                out.append(self.flow_._log_prob(self._tensor(X[start : start + 8192])))
        log_p = torch.cat(out).double().cpu().numpy()
        box = self._box(X.shape[1])
        if box is not None:
            inside = np.all((X > box[0]) & (X < box[1]), axis=1)
            log_p = np.where(inside, log_p, -np.inf)
        return log_p

    def _sample(self, n: int, rng: np.random.RandomState) -> np.ndarray:
        self.flow_.eval()
        seed = int(rng.randint(2**31 - 1))
        devices = [self.device] if str(self.device).startswith("cuda") else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            x = self.flow_.sample((n,))
        return x.double().cpu().numpy()

    # -- persistence ----------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Save configuration, weights, preprocessing and history to one file, loadable with
        ``torch.load(path, weights_only=True)``."""
        if not hasattr(self, "flow_"):
            raise ValueError("this DensityEstimator is not fitted yet; call fit first")
        params = self.get_params(deep=False)
        params["hidden"] = list(params["hidden"])
        if params["bounds"] is not None:
            params["bounds"] = [
                np.broadcast_to(b, (self.n_features_in_,)).tolist() for b in params["bounds"]
            ]
        state = {k: v.detach().cpu() for k, v in self.flow_.state_dict().items()}
        torch.save(
            {
                "format": FORMAT,
                "version": FORMAT_VERSION,
                "params": params,
                "n_features": int(self.n_features_in_),
                "state_dict": state,
                "history": self.history_.as_dict(),
                "feature_names": [str(n) for n in getattr(self, "feature_names_in_", [])],
            },
            path,
        )

    @classmethod
    def load(cls, path: str | Path, device: str | None = None) -> DensityEstimator:
        """Load an estimator saved by :meth:`save` (safe: ``weights_only=True``)."""
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise ValueError(f"{path}: no such file") from None
        except Exception as error:  # corrupt file, or a pickle that is not plain data
            reason = (
                str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            )
            raise ValueError(
                f"{path} is not a saved pyroflows DensityEstimator ({reason})"
            ) from None
        if not isinstance(blob, dict) or blob.get("format") != FORMAT:
            raise ValueError(f"{path} is not a saved pyroflows DensityEstimator")
        if blob["version"] > FORMAT_VERSION:
            raise ValueError(
                f"{path} has format version {blob['version']}; this pyroflows "
                f"reads up to {FORMAT_VERSION}: upgrade pyroflows"
            )
        params = dict(blob["params"])
        params["hidden"] = tuple(params["hidden"])
        if device is not None:
            params["device"] = device
        est = cls(**params)
        dim = blob["n_features"]
        flow = est._build(dim, np.zeros(dim), np.eye(dim))
        flow.load_state_dict(blob["state_dict"])
        flow.eval()
        est.flow_ = flow
        est.history_ = History(**blob["history"])
        est.n_features_in_ = dim
        if blob.get("feature_names"):
            est.feature_names_in_ = np.asarray(blob["feature_names"], dtype=object)
        return est
