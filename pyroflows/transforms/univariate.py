"""One-dimensional bijections that autoregressive and coupling layers apply to each feature.

A univariate transform maps raw parameters (the conditioner network's output, shape
``x.shape + (num_params,)``) to an elementwise monotonic map. Layers take one as an argument:
``MaskedAutoregressive(dim, Affine())`` is MAF, ``MaskedAutoregressive(dim, RQS(bins=8))`` is
the autoregressive neural spline flow, ``Coupling(dim, Affine())`` is RealNVP.
With all raw parameters 0 each of them is the identity. Called, each returns the map and its
log-derivative; ``value`` returns the map alone (what drawing samples needs).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from pyroflows.ops import affine, piecewise_linear, soft_clamp
from pyroflows.ops.equal_bins import equal_bin_spline_packed, equal_bin_spline_params_first
from pyroflows.ops.rqs import (
    rational_quadratic_spline_packed,
    rational_quadratic_spline_params_first,
)


class _Map:
    """What the univariate maps share: ``value``, the map without its log-derivative."""

    def __call__(self, x: Tensor, params: Tensor, inverse: bool = False) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def value(self, x: Tensor, params: Tensor, inverse: bool = False) -> Tensor:
        """The map alone, without its log-derivative."""
        return self(x, params, inverse)[0]


@dataclass(frozen=True)
class Affine(_Map):
    """``y = x * exp(s) + t`` with ``s`` soft-clamped to ``(-scale_bound, scale_bound)``."""

    scale_bound: float = 5.0

    @property
    def num_params(self) -> int:
        return 2

    def __call__(self, x: Tensor, params: Tensor, inverse: bool = False) -> tuple[Tensor, Tensor]:
        shift, raw_scale = params.unbind(-1)
        return affine(x, shift, soft_clamp(raw_scale, self.scale_bound), inverse=inverse)


#: the values of :attr:`RQS.data_to_base`
SPLINE_DIRECTIONS = ("inverse", "forward")


@dataclass(frozen=True)
class RQS(_Map):
    """Monotonic rational-quadratic spline with ``bins`` bins on ``[-bound, bound]``, identity
    outside (Durkan et al., 2019).

    ``data_to_base`` says which of the spline and its inverse a layer applies in its density
    direction (data -> base; its sampling direction applies the other): ``"inverse"`` (the
    default here) scores data with the spline's inverse and samples with the spline;
    ``"forward"`` scores data with the spline itself and samples with its inverse, as zuko's
    and nflows' spline flows do. Both are exact bijections with exact log-determinants; they
    are different families of maps for the same parameters, so a trained layer's parameters
    mean something only with the direction they were trained with.

    Example:
        >>> import torch
        >>> x, params = torch.linspace(-2, 2, 3), torch.randn(3, 23)
        >>> z, _ = RQS(8, data_to_base="forward")(x, params, inverse=True)
        >>> torch.allclose(z, RQS(8)(x, params)[0])
        True
    """

    bins: int = 8
    bound: float = 5.0
    data_to_base: str = "inverse"

    def __post_init__(self) -> None:
        if self.data_to_base not in SPLINE_DIRECTIONS:
            raise ValueError(
                f"data_to_base must be one of {SPLINE_DIRECTIONS} (which spline maps data to "
                f"base), got {self.data_to_base!r}"
            )

    @property
    def num_params(self) -> int:
        return 3 * self.bins - 1

    def _spline_inverse(self, inverse: bool) -> bool:
        """Whether the spline's inverse computes this map's direction ``inverse``: a layer
        asks for ``inverse=True`` in its density direction."""
        return inverse if self.data_to_base == "inverse" else not inverse

    def __call__(self, x: Tensor, params: Tensor, inverse: bool = False) -> tuple[Tensor, Tensor]:
        return rational_quadratic_spline_packed(
            x, params, self.bins, bound=self.bound, inverse=self._spline_inverse(inverse)
        )

    def params_first(self, inverse: bool = False) -> bool:
        """Whether :meth:`value_params_first` computes direction ``inverse``: where it is the
        spline itself (the sampling direction for ``data_to_base="inverse"``)."""
        return not self._spline_inverse(inverse)

    def value_params_first(self, x: Tensor, params: Tensor, inverse: bool = False) -> Tensor:
        """:meth:`value` with the parameters first, ``(num_params,) + x.shape``
        (:func:`~pyroflows.ops.rqs.rational_quadratic_spline_params_first`); only where
        :meth:`params_first` says so."""
        if not self.params_first(inverse):
            raise ValueError("the parameters-first spline computes the spline, not its inverse")
        return rational_quadratic_spline_params_first(x, params, self.bins, bound=self.bound)

    def value(self, x: Tensor, params: Tensor, inverse: bool = False) -> Tensor:
        """The map alone: the spline skips its log-derivative (about a tenth of its cost)."""
        return rational_quadratic_spline_packed(
            x, params, self.bins, bound=self.bound, inverse=self._spline_inverse(inverse),
            log_det=False,
        )[0]  # fmt: skip


@dataclass(frozen=True)
class PiecewiseLinear(_Map):
    """Monotonic piecewise-linear map of ``[0, 1]`` with ``bins`` equal-width bins
    (Müller et al., 2018); identity outside the unit interval."""

    bins: int = 8

    @property
    def num_params(self) -> int:
        return self.bins

    def __call__(self, x: Tensor, params: Tensor, inverse: bool = False) -> tuple[Tensor, Tensor]:
        return piecewise_linear(x, params, inverse=inverse)


@dataclass(frozen=True)
class EqualBinRQS(_Map):
    """Monotonic rational-quadratic spline on ``bins`` equal-width bins of ``[-bound, bound]``
    with learnt heights and interior derivatives, identity outside
    (:func:`~pyroflows.ops.equal_bins.equal_bin_spline`): :class:`RQS` with every raw width 0.

    A layer samples with the spline (its bin found by arithmetic, no search) and scores data
    with its inverse (a search over the learnt heights), the direction of
    ``RQS(data_to_base="inverse")``. It takes ``2 bins - 1`` parameters per feature against the
    general spline's ``3 bins - 1``.

    Example:
        >>> import torch
        >>> x, p = torch.linspace(-6, 6, 5), torch.randn(5, 15)
        >>> y, ladj = EqualBinRQS(8)(x, p)
        >>> torch.allclose(EqualBinRQS(8)(y, p, inverse=True)[0], x, atol=1e-5)
        True
    """

    bins: int = 8
    bound: float = 5.0

    def __post_init__(self) -> None:
        if isinstance(self.bins, bool) or not isinstance(self.bins, int) or self.bins < 1:
            raise ValueError(f"bins must be a positive integer, got {self.bins!r}")
        if not float(self.bound) > 0 or self.bound == float("inf"):
            raise ValueError(f"bound must be a positive finite number, got {self.bound!r}")

    @property
    def num_params(self) -> int:
        return 2 * self.bins - 1

    def __call__(self, x: Tensor, params: Tensor, inverse: bool = False) -> tuple[Tensor, Tensor]:
        return equal_bin_spline_packed(x, params, self.bins, self.bound, inverse)

    def params_first(self, inverse: bool = False) -> bool:
        """Whether :meth:`value_params_first` computes direction ``inverse``: the spline
        itself (``inverse=False``, the sampling direction)."""
        return not inverse

    def value_params_first(self, x: Tensor, params: Tensor, inverse: bool = False) -> Tensor:
        """:meth:`value` with the parameters first, ``(num_params,) + x.shape``
        (:func:`~pyroflows.ops.equal_bins.equal_bin_spline_params_first`); the spline only."""
        if inverse:
            raise ValueError("the parameters-first spline computes the spline, not its inverse")
        return equal_bin_spline_params_first(x, params, self.bins, self.bound)

    def value(self, x: Tensor, params: Tensor, inverse: bool = False) -> Tensor:
        """The map alone, without its log-derivative."""
        return equal_bin_spline_packed(x, params, self.bins, self.bound, inverse, False)[0]


Univariate = Affine | RQS | PiecewiseLinear | EqualBinRQS
