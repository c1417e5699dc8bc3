"""The one pre-transform between the user's units and the space a flow is trained in.

:func:`fit_preprocessor` learns, in float64 and before any cast, an optional box map (logit for
a bounded coordinate, log for a half-open one) followed by a standardisation: per-column mean
and standard deviation, or whitening with the Cholesky factor of the covariance
(:func:`box_preprocessor`: the affine map of a finite box onto the unit cube, for a flow that
lives there). The result is a :class:`Preprocessor`: fixed flow layers
(:class:`~pyroflows.transforms.Box`, :class:`~pyroflows.transforms.FixedAffine`) that compute in
float64 whatever the dtype of the flow they sit in, so

* training data are standardised in float64 and only then cast, by :func:`to_latent` (the one
  clamp-cast: a float32 flow fitted to ``1e8 + N(0, 1)`` sees ``N(0, 1)``);
* an :class:`Encoded` model (a flow trained on the standardised rows, and this pre-transform)
  gives ``log p`` exactly in the data's units (``-inf`` outside the box) and draws in them;
  its ``flow`` is the whole model as one :class:`~pyroflows.flows.Flow`.

Density estimation uses it for ``x``; amortized posteriors use it for ``theta`` (in the
unconstrained space) and for the observations. A new pre-transform is a fixed float64 layer in
:mod:`pyroflows.transforms` and a ``fit_*`` function here that returns a :class:`Preprocessor`
(and a layout in :func:`preprocessor_layout`, so that saved models load).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from pyroflows.flows import Flow
from pyroflows.transforms import Box, FixedAffine, FlowTransform

__all__ = [
    "CHUNK",
    "Encoded",
    "Moments",
    "Preprocessor",
    "bounds_array",
    "box_preprocessor",
    "check_inside",
    "fit_preprocessor",
    "fit_preprocessor_chunks",
    "preprocessor_layout",
    "to_latent",
]

#: rows per chunk when an encoded model scores or samples (bounded memory, cache-sized work)
CHUNK = 8192


def bounds_array(bounds: Any, dim: int) -> tuple[np.ndarray, np.ndarray] | None:
    """``(low, high)`` float64 arrays of shape ``(dim,)`` from scalars or sequences; infinite
    entries mean no bound on that side. ``None`` stays ``None``.

    Example:
        >>> bounds_array((0, float("inf")), 2)
        (array([0., 0.]), array([inf, inf]))
    """
    if bounds is None:
        return None
    try:
        low, high = bounds
    except (TypeError, ValueError):
        raise ValueError(f"bounds must be a pair (low, high), got {bounds!r}") from None
    try:
        low = np.broadcast_to(np.asarray(low, dtype=np.float64), (dim,)).copy()
        high = np.broadcast_to(np.asarray(high, dtype=np.float64), (dim,)).copy()
    except ValueError:
        raise ValueError(
            f"bounds: low and high must be scalars or have {dim} entries (one per column)"
        ) from None
    if np.isnan(low).any() or np.isnan(high).any():
        raise ValueError("bounds must not contain NaN")
    bad = np.flatnonzero(~(high > low))
    if bad.size:
        raise ValueError(
            f"bounds: the upper bound must exceed the lower bound (column {int(bad[0])}: "
            f"low={low[bad[0]]}, high={high[bad[0]]})"
        )
    return low, high


class Moments:
    """Mean and covariance in float64, accumulated over chunks of rows (Chan et al.'s pairwise
    update), so statistics of data larger than memory take one streaming pass.

    Example:
        >>> m = Moments()
        >>> for chunk in np.array_split(np.arange(10.0).reshape(5, 2), 3):
        ...     _ = m.update(chunk)
        >>> m.mean, m.count
        (array([4., 5.]), 5)
    """

    def __init__(self) -> None:
        self.count = 0
        self._shift: np.ndarray | None = None  # a data row: moments of x - shift are O(spread)
        self._mean: np.ndarray | None = None  # of x - shift
        self._scatter: np.ndarray | None = None  # sum of outer products of deviations

    @property
    def mean(self) -> np.ndarray:
        if self.count == 0:
            raise ValueError("no rows were seen")
        return self._shift + self._mean

    def update(self, chunk: np.ndarray) -> Moments:
        chunk = np.asarray(chunk, dtype=np.float64)
        n = len(chunk)
        if n == 0:
            return self
        if self._shift is None:
            self._shift = chunk[0].copy()
        # Working relative to a data row keeps the chunk means exact to the data's spread even
        # with an offset of 1e8 standard deviations (the merge term needs precise means).
        chunk = chunk - self._shift
        mean = chunk.mean(0)
        dev = chunk - mean
        scatter = dev.T @ dev
        if self.count == 0:
            self.count, self._mean, self._scatter = n, mean, scatter
            return self
        total = self.count + n
        delta = mean - self._mean
        self._scatter = self._scatter + scatter + np.outer(delta, delta) * self.count * n / total
        self._mean = self._mean + delta * n / total
        self.count = total
        return self

    @property
    def covariance(self) -> np.ndarray:
        """The maximum-likelihood covariance (divided by the count)."""
        if self.count == 0:
            raise ValueError("no rows were seen")
        return self._scatter / self.count

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(np.diag(self.covariance))


class Preprocessor(nn.Module):
    """Fixed map between data units and the standardised space, in float64.

    ``to_latent(x) -> (z, log|dz/dx|)`` is the density direction, ``from_latent(z)`` the
    sampling direction; both return the input's dtype and compute in float64 inside.

    Args:
        transforms: fixed layers in sampling order (standardised space -> data).
    """

    def __init__(self, transforms: Sequence[FlowTransform]):
        super().__init__()
        if not transforms:
            raise ValueError("a Preprocessor needs at least one layer")
        self.transforms = nn.ModuleList(transforms)
        self.dim = transforms[0].dim

    def to_latent(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Data -> standardised space, with ``log|dz/dx|`` (``-inf`` outside the box)."""
        ladj = torch.zeros(x.shape[:-1], dtype=torch.float64, device=x.device)
        z = x.to(torch.float64)
        for t in reversed(self.transforms):
            z, part = t.inv_and_ladj(z)
            ladj = ladj + part
        return z.to(x.dtype), ladj.to(x.dtype)

    def from_latent(self, z: Tensor) -> Tensor:
        """Standardised space -> data."""
        x = z.to(torch.float64)
        for t in self.transforms:
            x, _ = t.call_and_ladj(x)
        return x.to(z.dtype)

    def layers(self) -> list[FlowTransform]:
        """The fixed layers, to append to a flow's layers (sampling order)."""
        return list(self.transforms)


def _as_float64(X: Any, name: str) -> np.ndarray:
    if isinstance(X, Tensor):
        X = X.detach().cpu().numpy()
    arr = np.asarray(X, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D array, got shape {arr.shape}")
    return arr


def check_inside(
    X: np.ndarray,
    low: np.ndarray,
    high: np.ndarray,
    name: str = "X",
    *,
    closed: bool = False,
    offset: int = 0,
    row: Any = None,
    column: Any = None,
) -> None:
    """Raise a ``ValueError`` naming the first value of ``X`` outside the open box
    ``(low, high)`` (the closed one with ``closed``), with a remedy for values exactly on a
    bound. Changes nothing.

    Args:
        X: float64 rows ``(n, d)``.
        low, high: per-column bounds ``(d,)``.
        name: how the data are called.
        closed: values on a bound are allowed.
        offset: the index of ``X``'s first row in the user's data (a chunk of a file).
        row: ``row(i) -> str`` names row ``i`` of ``X`` (e.g. ``"line 7"`` of a file);
            default ``"row {offset + i}"``.
        column: ``column(j) -> str`` names column ``j`` (default ``"column {j}"``).

    Example:
        >>> try:
        ...     check_inside(np.array([[0.5], [1.0]]), np.zeros(1), np.ones(1))
        ... except ValueError as error:
        ...     print(str(error).split("; ")[1][:58])
        1 lie exactly on a bound, where the density is not defined
    """
    inside = (X >= low) & (X <= high) if closed else (X > low) & (X < high)
    if inside.all():
        return
    bad = ~inside
    i, j = np.argwhere(bad)[0]
    where = row(int(i)) if row is not None else f"row {offset + int(i)}"
    kind = "outside" if closed else "on or outside"
    interval = f"[{low[j]}, {high[j]}]" if closed else f"({low[j]}, {high[j]})"
    named = column(int(j)) if column is not None else f"column {int(j)}"
    message = (
        f"{name} has {int(bad.sum())} value(s) {kind} the bounds (first at {where}, {named}: "
        f"{float(X[i, j])} not in {interval})"
    )
    on = (X == low) | (X == high)
    if not closed and on.any():
        k = int(np.argwhere(on)[0][1])
        finite = [b for b in (low[k], high[k]) if np.isfinite(b)]
        width = high[k] - low[k] if len(finite) == 2 else max(1.0, abs(finite[0]))
        wider = (float(low[k] - 1e-6 * width), float(high[k] + 1e-6 * width))
        message += (
            f"; {int(on.sum())} lie exactly on a bound, where the density is not defined (it "
            f"lives inside the open box): widen the bounds slightly, e.g. to "
            f"({wider[0]:.7g}, {wider[1]:.7g}), or move those values inside"
        )
    raise ValueError(message)


def _box_latent(
    X: np.ndarray, low: np.ndarray, high: np.ndarray, name: str, offset: int = 0
) -> np.ndarray:
    check_inside(X, low, high, name, offset=offset)
    box = Box(torch.from_numpy(low), torch.from_numpy(high))
    with torch.no_grad():
        return box.inv_and_ladj(torch.from_numpy(X))[0].numpy()


def fit_preprocessor(
    X: Any,
    *,
    whiten: bool = False,
    bounds: Any = None,
    name: str = "X",
    eigen_floor: float | None = None,
) -> Preprocessor:
    """Learn the pre-transform of the rows of ``X`` in float64.

    Args:
        X: data ``(n, dim)`` (array-like or tensor; converted to float64 first).
        whiten: standardise with the Cholesky factor of the covariance (decorrelates) instead
            of per-column standard deviations.
        bounds: ``(low, high)``, scalars or per-column, infinite entries for open sides;
            the data must lie strictly inside.
        name: how the data are called in error messages.
        eigen_floor: with ``whiten``, raise the eigenvalues of the correlation matrix below
            ``eigen_floor`` times the largest to that value before the factorisation, so
            nearly or exactly collinear columns give a finite, well-conditioned map (the
            whitened data then have unit variance except along those directions). None:
            refuse linearly dependent columns.

    Returns:
        A :class:`Preprocessor` whose density direction maps ``X`` to mean 0 and unit
        (co)variance. Constant columns keep scale 1 (they are the caller's to reject).

    Raises:
        ValueError: data outside the bounds, or linearly dependent columns with ``whiten``
            and no ``eigen_floor``.

    Example:
        >>> X = 1e8 + np.random.default_rng(0).normal(size=(1000, 2))
        >>> z, ladj = fit_preprocessor(X).to_latent(torch.tensor(X))
        >>> round(float(z.std()), 2), z.dtype
        (1.0, torch.float64)
    """
    X = _as_float64(X, name)
    return fit_preprocessor_chunks(
        [X], X.shape[1], whiten=whiten, bounds=bounds, name=name, eigen_floor=eigen_floor
    )


def fit_preprocessor_chunks(
    chunks: Iterable[np.ndarray],
    dim: int,
    *,
    whiten: bool = False,
    bounds: Any = None,
    name: str = "X",
    eigen_floor: float | None = None,
) -> Preprocessor:
    """:func:`fit_preprocessor` from an iterable of float64 row chunks, in one streaming pass
    (data larger than memory); the same result as on the concatenated rows."""
    box = bounds_array(bounds, dim)
    moments = Moments()
    offset = 0
    for chunk in chunks:
        latent = chunk if box is None else _box_latent(chunk, box[0], box[1], name, offset)
        moments.update(latent)
        offset += len(chunk)
    if moments.count == 0:
        raise ValueError(f"{name} has no rows")
    std = moments.std
    loc = moments.mean
    if not whiten:
        scale_tril = np.diag(np.where(std > 0, std, 1.0))
    else:
        safe = np.where(std > 0, std, 1.0)
        corr = np.atleast_2d(moments.covariance) / np.outer(safe, safe)
        scale_tril = safe[:, None] * _correlation_factor(corr, name, eigen_floor)
    layers: list[FlowTransform] = [FixedAffine(torch.from_numpy(loc), torch.from_numpy(scale_tril))]
    if box is not None:
        layers.append(Box(torch.from_numpy(box[0]), torch.from_numpy(box[1])))
    pre = Preprocessor(layers)
    pre.std_ = std  # per-column standard deviations in the fitted space (0: constant)
    return pre


def _correlation_factor(corr: np.ndarray, name: str, eigen_floor: float | None) -> np.ndarray:
    """The lower Cholesky factor of a correlation matrix, its eigenvalues floored at
    ``eigen_floor`` times the largest first when given; a singular one is refused without."""
    if eigen_floor is not None:
        values, vectors = np.linalg.eigh((corr + corr.T) / 2)
        values = np.maximum(values, eigen_floor * values.max())
        corr = (vectors * values) @ vectors.T
    try:
        chol = np.linalg.cholesky(corr)
    except np.linalg.LinAlgError:
        chol = None
    # A squared pivot of the correlation's Cholesky factor is the share of a column's variance
    # not explained by the columns before it: near 0 means a singular covariance.
    if chol is None or (eigen_floor is None and np.diag(chol).min() ** 2 < 1e-10):
        raise ValueError(
            f"the columns of {name} are linearly dependent (singular covariance); "
            "drop redundant columns or use whiten=False"
        )
    return chol


def box_preprocessor(bounds: Any, dim: int) -> Preprocessor:
    """The affine map of the finite box ``bounds`` onto the unit cube (sampling direction:
    ``x = low + (high - low) z``), the pre-transform of a flow that lives on the cube.

    Example:
        >>> pre = box_preprocessor((0.0, 4.0), 1)
        >>> pre.to_latent(torch.tensor([[1.0]], dtype=torch.float64))[0]
        tensor([[0.2500]], dtype=torch.float64)
    """
    low, high = bounds_array(bounds, dim)
    return Preprocessor(
        [FixedAffine(torch.from_numpy(low), torch.diag(torch.from_numpy(high - low)))]
    )


def preprocessor_layout(dim: int, bounds: Any = None) -> Preprocessor:
    """An identity pre-transform with the layers of a fitted one (a standardisation, then the
    box map when ``bounds`` is given): the module a saved pre-transform is loaded into with
    ``load_state_dict`` (its buffers are overwritten). Without ``bounds`` it is also the
    identity pre-transform of an estimator that does not standardise."""
    # the loaded factor may be full (whitening) or diagonal: loading sets the layer's products
    standardise = FixedAffine(torch.zeros(dim), torch.eye(dim))
    layers: list[FlowTransform] = [standardise]
    if bounds is not None:
        low, high = bounds_array(bounds, dim)
        layers.append(Box(torch.from_numpy(low), torch.from_numpy(high)))
    return Preprocessor(layers)


def to_latent(
    pre: Preprocessor, X: Any, dtype: torch.dtype, device: Any = "cpu"
) -> tuple[Tensor, Tensor]:
    """Rows of ``X`` in the standardised space, as ``dtype`` on ``device``: computed in float64,
    clamped to the dtype's finite range and only then cast (the one clamp-cast); with the
    float64 ``log|dz/dx|`` of the pre-transform (``-inf`` outside the box).

    Example:
        >>> pre = fit_preprocessor(1e8 + np.arange(4.0)[:, None])
        >>> z, ladj = to_latent(pre, 1e8 + np.arange(4.0)[:, None], torch.float32)
        >>> z.dtype, [round(v, 3) for v in z[:, 0].tolist()]
        (torch.float32, [-1.342, -0.447, 0.447, 1.342])
    """
    with torch.no_grad():
        z, ladj = pre.to_latent(torch.as_tensor(X, dtype=torch.float64, device=device))
    limit = torch.finfo(dtype).max
    return z.clamp(-limit, limit).to(dtype), ladj


class Encoded:
    """A flow trained in the standardised space (``core``) together with its pre-transform
    (``pre``): ``log_prob`` and ``sample`` in the data's units, without taking the model apart.

    ``flow`` is the whole model as one :class:`~pyroflows.flows.Flow`: the core's layers
    followed by the pre-transform's (the same modules, no copy), the layout that
    ``DensityEstimator.flow_`` shows and saves.

    Args:
        core: the flow on standardised rows.
        pre: the fixed pre-transform (float64 buffers).
    """

    def __init__(self, core: Flow, pre: Preprocessor):
        self.core = core
        self.pre = pre
        self.flow = Flow(list(core.transforms) + pre.layers(), core.base)

    def log_prob(self, X: np.ndarray, dtype: torch.dtype, device: Any = "cpu") -> np.ndarray:
        """``log p(x)`` of the rows of ``X`` in float64, in chunks of :data:`CHUNK`: the core's
        ``log q(z)`` plus the pre-transform's float64 log-Jacobian; ``-inf`` outside the box
        (also where the core gives NaN)."""
        core, out = self.core.eval(), []
        with torch.no_grad():
            for start in range(0, len(X), CHUNK):
                z, ladj = to_latent(self.pre, X[start : start + CHUNK], dtype, device)
                log_q = core.log_prob(z, check=False).to(torch.float64)
                # -inf from the pre-transform (outside the box) wins over any core value
                out.append(torch.where(torch.isfinite(ladj), log_q + ladj, ladj))
        log_p = torch.cat(out).cpu().numpy()
        return np.where(np.isnan(log_p), -np.inf, log_p)

    def sample(self, n: int, seed: int, device: Any = "cpu") -> np.ndarray:
        """``n`` float64 draws in the data's units from torch's generator seeded with ``seed``
        (in a forked random state: the global one is left as it was), in chunks of
        :data:`CHUNK`."""
        core = self.core.eval()
        generator_devices = [device] if str(device).startswith("cuda") else []
        out = np.empty((n, self.pre.dim))
        with torch.random.fork_rng(devices=generator_devices), torch.no_grad():
            torch.manual_seed(seed)
            for start in range(0, n, CHUNK):
                z = core.sample((min(CHUNK, n - start),))
                x = self.pre.from_latent(z.to(torch.float64))
                out[start : start + len(x)] = x.cpu().numpy()
        return out
