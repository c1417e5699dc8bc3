"""The data side of an amortized posterior: what one observation ``x`` looks like, and how it
becomes the networks' input.

* :class:`ObservationSpace` — the shape contract of ``x`` (one observation or a batch, sets of
  a varying number of rows padded with all-NaN rows when ``sizes=`` is given), its checks,
  and the encoder: float64 standardisation (fitted on the training simulations) clamped to the
  networks' dtype before the cast;
* row helpers shared with the simulators: :func:`valid_rows`, :func:`missing_rows`,
  :func:`drop_invalid`, :func:`set_to_model_layout`; and :func:`warn_if_swamped` (a
  standardisation set by a few extreme values), used for the parameters too.

A new data layout (a new kind of observation a summary network reads) goes here.
"""

from __future__ import annotations

import operator
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from pyroflows.amortized.weights import standardisation
from pyroflows.preprocess import Preprocessor
from pyroflows.validation import as_real_tensor

__all__ = [
    "ObservationSpace",
    "check_sizes",
    "drop_invalid",
    "missing_rows",
    "set_to_model_layout",
    "valid_rows",
    "warn_if_swamped",
]

#: a column whose standard deviation exceeds this many median absolute deviations is
#: standardised by a few extreme values: the rest vary below float32 resolution after it
_SWAMPED = 1e6


def valid_rows(x: Tensor, nan_padding: bool = False) -> Tensor:
    """Boolean ``(N,)``: which simulations ``x[i]`` are usable.

    Without ``nan_padding`` every entry must be finite. With ``nan_padding`` (set data of shape
    ``(N, n, d)`` padded with all-NaN rows) the all-NaN rows after the last real row are
    padding; every other row must be finite (an all-NaN row followed by real rows is a missing
    observation, not padding) and at least one row must be real.

    Example:
        >>> nan = float("nan")
        >>> x = torch.tensor([[[1.0], [nan]], [[float("inf")], [0.0]], [[nan], [0.0]]])
        >>> valid_rows(x, nan_padding=True)
        tensor([ True, False, False])
    """
    flat = x.reshape(len(x), -1)
    if not nan_padding:
        return torch.isfinite(flat).all(-1)
    return (torch.isfinite(_rows(x)).all(-1) | _padding(x)).all(-1) & (~_padding(x)).any(-1)


def _rows(x: Tensor) -> Tensor:
    return x.reshape(len(x), -1, x.shape[-1])


def _padding(x: Tensor) -> Tensor:
    """Boolean ``(N, rows)``: the all-NaN rows after the last row that is not all NaN."""
    nan = torch.isnan(_rows(x)).all(-1)
    # a row is trailing padding when it and every row after it are all NaN
    return nan.flip(-1).cumprod(-1).flip(-1).bool()


def missing_rows(x: Tensor) -> Tensor:
    """Boolean ``(N, rows)``: all-NaN rows followed by a real row (missing observations)."""
    return torch.isnan(_rows(x)).all(-1) & ~_padding(x)


def drop_invalid(
    theta: Tensor, x: Tensor, nan_padding: bool = False, what: str = "simulations"
) -> tuple[Tensor, Tensor, int]:
    """Remove simulations whose ``theta`` or ``x`` is not finite; warn once with the count.

    Returns:
        ``(theta, x, dropped)``.

    Raises:
        ValueError: when nothing valid is left.
    """
    keep = torch.isfinite(theta.reshape(len(theta), -1)).all(-1) & valid_rows(x, nan_padding)
    dropped = int((~keep).sum())
    if dropped:
        if dropped == len(keep):
            raise ValueError(f"all {dropped} {what} contain NaN or infinite values")
        warnings.warn(
            f"{dropped} of {len(keep)} {what} ({dropped / len(keep):.1%}) contain NaN or "
            "infinite values and were skipped (not trained on). Where these failures depend "
            "on the parameters, the posterior is trained on the prior truncated to the "
            f"parameters that simulate ({dropped / len(keep):.1%} of its draws dropped): fix "
            "the simulator if that is not intended",
            RuntimeWarning,
            stacklevel=3,
        )
        theta, x = theta[keep], x[keep]
    return theta, x, dropped


def set_to_model_layout(x: Tensor, axis: int = 0, row_shape: Sequence[int] = ()) -> Tensor:
    """Sets ``(..., n, features)`` (the summary's layout) back to the model's data layout:
    the ``n`` rows move to dimension ``axis`` of one data set and the features take
    ``row_shape`` again. Padding rows are kept (drop them first for one data set).

    Example:
        >>> set_to_model_layout(torch.zeros(3, 7, 1)).shape  # a plate of scalar observations
        torch.Size([3, 7])
        >>> set_to_model_layout(torch.zeros(7, 6), axis=1, row_shape=(2, 3)).shape
        torch.Size([2, 7, 3])
    """
    lead = x.shape[:-2]
    x = x.reshape(*lead, x.shape[-2], *row_shape)
    return x.movedim(len(lead), len(lead) + axis)


def warn_if_swamped(rows: Tensor, name: str) -> None:
    """Warn when a column's standardisation is set by a few extreme values (e.g. one 1e30
    among values of order 1): the other values then differ by less than float32 can resolve,
    so the networks cannot see them vary (the posterior ignores that column). Robust to heavy
    tails: a Cauchy sample of a million draws has a std of a few hundred MADs."""
    if len(rows) < 3:
        return
    median = rows.median(0).values
    mad = (rows - median).abs().median(0).values
    swamped = (mad > 0) & (rows.std(0) > _SWAMPED * mad)
    if bool(swamped.any()):
        j = int(swamped.nonzero()[0])
        extreme = float(rows[(rows[:, j] - median[j]).abs().argmax(), j])
        warnings.warn(
            f"{name} column {j}: a few extreme values (e.g. {extreme:.3g}) dominate its "
            "standardisation; after it the other values differ by less than float32 can "
            "resolve, so the posterior cannot use their variation. Drop or clip those "
            "simulations",
            RuntimeWarning,
            stacklevel=5,
        )


def check_sized(model: Any, summary: Any, sizes: Any, size_arg: Any) -> None:
    """``sizes`` / ``size_arg`` go together, with a Pyro model and a NaN-padding summary
    (the values themselves are checked by the variable-size simulator)."""
    if sizes is None or size_arg is None:
        given, missing = ("sizes", "size_arg") if size_arg is None else ("size_arg", "sizes")
        raise ValueError(
            f"{given}= needs {missing}= too: sizes are the possible numbers of "
            "observations and size_arg the model's argument that sets it"
        )
    if model is None:
        raise ValueError(
            "sizes= and size_arg= vary the number of observations of a Pyro model; with a "
            "prior + simulator the simulator pads its own sets with all-NaN rows"
        )
    if not bool(getattr(summary, "nan_padding", False)):
        name = "None" if summary is None else type(summary).__name__
        raise ValueError(
            f"sizes= gives data sets of different sizes, padded with all-NaN rows: the "
            f"summary network must read such padding (nan_padding=True, e.g. "
            f"pyroflows.nn.DeepSet or SetAttention), got summary={name}"
        )


def check_sizes(sizes: Any) -> tuple[int, ...]:
    """``sizes`` as sorted distinct positive ints, or a ValueError."""
    message = f"sizes must be a non-empty collection of positive integers, got {sizes!r}"
    if isinstance(sizes, str | bytes | Mapping) or not isinstance(sizes, Iterable):
        raise ValueError(message)
    out = set()
    for value in sizes:
        if isinstance(value, bool) or (isinstance(value, Tensor) and value.is_floating_point()):
            raise ValueError(message)
        try:
            value = operator.index(value)
        except TypeError:
            raise ValueError(message) from None
        if value < 1:
            raise ValueError(message)
        out.add(value)
    if not out:
        raise ValueError(message)
    return tuple(sorted(out))


@dataclass(frozen=True)
class ObservationSpace:
    """What one observation is and how it is encoded for the networks.

    The summary network's traits (``event_dims``, ``variable_size``, ``nan_padding``) say how
    it reads data; ``sizes`` / ``size_arg`` / ``axis`` / ``row_shape`` describe sets of a
    varying number of rows (``sizes=`` of the posterior); ``shape`` (one simulation's shape)
    and ``pre`` (the float64 standardisation per entry of the last dimension) are set by the
    first fit (:meth:`fitted`). Immutable: a fit that fails leaves the posterior's as it was.

    Example:
        >>> space = ObservationSpace().fitted(torch.randn(100, 3))
        >>> batch, single = space.check(torch.zeros(3))
        >>> tuple(batch.shape), single, space.encode(batch, torch.float32).dtype
        ((1, 3), True, torch.float32)
    """

    event_dims: int = 1
    variable_size: bool = False
    nan_padding: bool = False
    sizes: tuple[int, ...] | None = None
    size_arg: str | None = None
    axis: int = 0
    row_shape: torch.Size = torch.Size()
    shape: torch.Size | None = None
    pre: Preprocessor | None = None

    @classmethod
    def of(cls, summary: Any, **sets: Any) -> ObservationSpace:
        """The space of data read by ``summary`` (None: flattened), with the set options."""
        return cls(
            event_dims=getattr(summary, "event_dims", 1),
            variable_size=bool(getattr(summary, "variable_size", False)),
            nan_padding=bool(getattr(summary, "nan_padding", False)),
            **sets,
        )

    def fitted(self, x: Tensor, weight: Tensor | None = None) -> ObservationSpace:
        """A copy with ``shape`` and ``pre`` fitted on the training data ``x (N, ...)`` (in
        float64, over the finite rows; weighted by the simulations' ``weight (N,)`` when
        given, see :func:`pyroflows.amortized.weights.standardisation`). Warns when a few
        extreme values dominate a column."""
        shape = x.shape[1:]
        rows = x.to(torch.float64).reshape(-1, self.features(shape))
        finite = torch.isfinite(rows).all(-1)
        if weight is not None:  # each simulation's weight on each of its rows
            weight = weight.repeat_interleave(len(rows) // len(x))[finite]
        rows = rows[finite]
        warn_if_swamped(rows, "x")
        return replace(self, shape=shape, pre=standardisation(rows, weight, "x"))

    def features(self, shape: Sequence[int] | None = None) -> int:
        """Entries per standardised row of one simulation of ``shape`` (default ``shape``)."""
        shape = self.shape if shape is None else shape
        return shape[-1] if len(shape) >= max(self.event_dims, 1) else 1

    def feature_axis(self, shape: Sequence[int] | None = None) -> bool:
        """Whether one simulation of ``shape`` (default ``shape``) is a 1-D set of scalar
        observations read by a summary of sets / sequences (``event_dims == 2``): the
        networks then get it with a feature axis of size 1, as ``sizes=`` does."""
        shape = self.shape if shape is None else shape
        return self.event_dims == 2 and len(shape) == 1

    def encode(self, x: Tensor, dtype: torch.dtype) -> Tensor:
        """Standardised data (per entry of the last dimension) in the networks' ``dtype``.

        Standardised in float64 and clamped to the finite range of ``dtype`` before the cast:
        a huge but finite observation (say 1e300) stays a huge finite input, which the
        conditioner networks bound, instead of overflowing to ``inf`` (NaN padding stays NaN).
        """
        flat = x.to(torch.float64).reshape(-1, self.features())
        z, _ = self.pre.to_latent(flat)
        limit = torch.finfo(dtype).max
        z = z.reshape(x.shape).clamp(-limit, limit).to(dtype)
        if self.feature_axis():  # a set of scalars (n,) -> (n, 1) for a set summary
            z = z[..., None]
        return z

    def size_of(self, x: Any) -> int | None:
        """The number of real (non-padding) rows of one observation; None without ``sizes``."""
        if self.sizes is None:
            return None
        batch, single = self.check(x)
        if not single:
            raise ValueError("size_of takes one observation, not a batch")
        return int((~torch.isnan(batch[0]).all(-1)).sum())

    def real_rows(self, observation: Tensor) -> Tensor:
        """One observation's rows without the padding (with ``sizes``; else as it is)."""
        if self.sizes is None:
            return observation
        return observation[~torch.isnan(observation).all(-1)]

    def to_model_layout(self, x: Tensor) -> Tensor:
        """Sets ``(..., n, features)`` in the model's layout (with ``sizes``; else as they are)."""
        if self.sizes is None:
            return x
        return set_to_model_layout(x, self.axis, self.row_shape)

    # -- checks -------------------------------------------------------------------------------
    def check(self, x: Any, name: str = "x", values: bool = True) -> tuple[Tensor, bool]:
        """``(x as a batch (B, *event), single)``; ValueError naming the problem. With
        ``values`` also NaN / infinite entries outside padding rows (and a warning for sets
        of a size outside ``sizes``)."""
        x = as_real_tensor(x, name)
        if not x.is_floating_point():
            x = x.to(torch.float64)
        batch, single = self._as_batch(x, name)
        if values and self.nan_padding and batch.dim() >= 3:
            missing = missing_rows(batch)
            if bool(missing.any()):
                b, r = (int(i) for i in missing.nonzero()[0])
                where = "" if single else f" of observation {b}"
                raise ValueError(
                    f"{name}: row {r}{where} is all NaN but real rows follow it: only trailing "
                    "all-NaN rows are padding, a NaN row elsewhere is a missing observation "
                    "(drop the row, or impute it)"
                )
        bad = ~valid_rows(batch, self.nan_padding)
        if values and bool(bad.any()):
            where = "" if single else f" (observation {int(bad.nonzero()[0])})"
            extra = " outside all-NaN padding rows" if self.nan_padding else ""
            raise ValueError(f"{name} contains NaN or infinite values{extra}{where}")
        if values and self.sizes is not None:
            self._warn_outside_sizes(batch, name, single)
        return batch, single

    def _as_batch(self, x: Tensor, name: str) -> tuple[Tensor, bool]:
        """``x`` as a batch and whether it was one observation; ValueError for a shape that
        is neither one observation nor a batch of them."""
        shape, k = self.shape, len(self.shape)
        if self.sizes is not None and x.dim() == 1 and not self.row_shape:
            x = x[:, None]  # one data set of scalar observations in the model's layout
        if x.dim() == k:
            single, batch = True, x[None]
        elif x.dim() == k + 1:
            single, batch = False, x
        else:
            raise ValueError(
                f"{name} must have shape {tuple(shape)} (one observation) or (B, "
                f"{', '.join(map(str, shape))}) (a batch), got {tuple(x.shape)}"
            )
        event = batch.shape[1:]
        if self.variable_size:
            ok = k == 0 or event[-1] == shape[-1] or (k == 1 and self.features() == 1)
        else:
            ok = event == shape
        if not ok:
            hint = ""
            if self.sizes is not None:
                hint = (
                    f" (one data set is (n, {shape[-1]}) with n rows, any padding rows all NaN"
                    f"{', or (n,)' if not self.row_shape else ''}; a batch is "
                    f"(B, n, {shape[-1]}))"
                )
            raise ValueError(
                f"{name} must have event shape {tuple(shape)}"
                f"{' (leading sizes may vary)' if self.variable_size else ''}, got "
                f"{tuple(x.shape)}{hint}"
            )
        return batch, single

    def _warn_outside_sizes(self, batch: Tensor, name: str, single: bool) -> None:
        rows = (~torch.isnan(batch).all(-1)).sum(-1)
        low, high = self.sizes[0], self.sizes[-1]
        outside = (rows < low) | (rows > high)
        if bool(outside.any()):
            warnings.warn(
                f"{name} has {int(rows[outside][0])} observations"
                f"{'' if single else f' (observation {int(outside.nonzero()[0])})'}, "
                f"outside the {low} to {high} trained on: the posterior extrapolates",
                RuntimeWarning,
                stacklevel=4,
            )

    def sets_state(self) -> dict[str, Any]:
        """The saved configuration's entries of a varying number of observations."""
        return {
            "sizes": None if self.sizes is None else list(self.sizes),
            "size_arg": self.size_arg,
            "size_axis": self.axis,
            "row_shape": list(self.row_shape),
        }
