"""Rational-quadratic spline on equal-width bins: the bin of an input is found by arithmetic.

The map is :func:`~pyroflows.ops.rqs.rational_quadratic_spline` with every raw width 0 (``K``
bins of width ``2 bound / K`` on ``[-bound, bound]``), learnt heights and interior derivatives,
identity outside the interval. In its forward direction the bin of ``x`` is
``floor((x + bound) K / (2 bound))``: no search over edges and no softmax or cumulative sum
over widths. The inverse has learnt bin edges in its input (the heights) and searches them
like the general spline; it is the general spline's inverse with zero widths.

A flow that draws with the forward direction (an IAF student of the fast sampler) gets the
cheap direction where it draws; its density direction pays the search.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from pyroflows.ops.bins import take
from pyroflows.ops.rqs import (
    _DERIVATIVE_SHIFT,
    _MIN_BIN,
    _MIN_DERIVATIVE,
    _end_slopes,
    _max_last,
    _spline,
)


def _check_packed(params: Tensor, bins: int, axis: int) -> None:
    if params.shape[axis] != 2 * bins - 1:
        raise ValueError(
            f"an equal-width spline of {bins} bins takes 2 * {bins} - 1 = {2 * bins - 1} "
            f"parameters per input (heights, interior derivatives), got {params.shape[axis]}"
        )


def equal_bin_spline(
    x: Tensor,
    heights: Tensor,
    derivatives: Tensor,
    bound: float = 5.0,
    inverse: bool = False,
    log_det: bool = True,
) -> tuple[Tensor, Tensor | None]:
    """Apply the equal-width-bin rational-quadratic spline (or its inverse) elementwise.

    Args:
        x: input of shape ``S``.
        heights: raw bin heights, shape ``S + (K,)`` (softmax-normalised here, each bin at
            least ``1e-3`` of the interval), or a batch shape that broadcasts with ``S``.
        derivatives: raw derivatives at the ``K - 1`` interior knots, shape ``S + (K - 1,)``
            (softplus-transformed, 0 gives 1); the derivative at both ends is 1.
        bound: the spline acts on ``[-bound, bound]``; it is the identity outside.
        inverse: apply the inverse spline (a search over the learnt heights).
        log_det: ``False`` skips the log-derivative and returns ``None`` in its place.

    Returns:
        ``(output, log|d output / d x|)`` of the broadcast shape.

    Example:
        >>> x = torch.linspace(-6, 6, 5)
        >>> h, d = torch.randn(5, 4), torch.randn(5, 3)
        >>> y, ladj = equal_bin_spline(x, h, d)
        >>> back, ladj_inv = equal_bin_spline(y, h, d, inverse=True)
        >>> torch.allclose(back, x, atol=1e-5), torch.allclose(ladj, -ladj_inv, atol=1e-5)
        (True, True)
    """
    if heights.shape[-1] != derivatives.shape[-1] + 1:
        raise ValueError(
            f"{heights.shape[-1]} bin heights need {heights.shape[-1] - 1} interior "
            f"derivatives, got {derivatives.shape[-1]}"
        )
    if inverse:  # the general spline's inverse with equal widths (raw widths 0)
        sizes = torch.stack([torch.zeros_like(heights), heights], dim=-2)
        return _spline(x, sizes, derivatives, bound, True, log_det)
    return _forward(x, heights, derivatives, bound, log_det)


def equal_bin_spline_packed(
    x: Tensor,
    params: Tensor,
    bins: int,
    bound: float = 5.0,
    inverse: bool = False,
    log_det: bool = True,
) -> tuple[Tensor, Tensor | None]:
    """:func:`equal_bin_spline` with its raw parameters packed in one tensor of shape
    ``S + (2 bins - 1,)``: heights, then interior derivatives (a conditioner's output).

    Example:
        >>> p, x = torch.randn(5, 7), torch.linspace(-6, 6, 5)
        >>> y, _ = equal_bin_spline_packed(x, p, bins=4)
        >>> torch.allclose(y, equal_bin_spline(x, p[:, :4], p[:, 4:])[0])
        True
    """
    _check_packed(params, bins, -1)
    heights, derivatives = params.split([bins, bins - 1], dim=-1)
    return equal_bin_spline(x, heights, derivatives, bound, inverse, log_det)


def _forward(
    x: Tensor, heights: Tensor, derivatives: Tensor, bound: float, log_det: bool
) -> tuple[Tensor, Tensor | None]:
    """The forward spline, bins last: the bin by arithmetic, the heights' cumulative sums
    gathered at it (``_spline``'s formulas with every width ``2 bound / K``)."""
    bins = heights.shape[-1]
    width = 2.0 * bound / bins
    e = (heights - _max_last(heights.detach())).exp()
    cumulative = torch.cumsum(e, dim=-1)
    scale = 2.0 * bound * (1.0 - _MIN_BIN * bins)
    step = 2.0 * bound * _MIN_BIN

    inside = x.abs() <= bound
    # outside the interval (and NaN) the map is x itself: the arithmetic runs on 0 there
    t = (torch.where(inside, x, 0.0) + bound) / width
    k = t.detach().floor().clamp_(max=bins - 1)
    xi = t - k
    index = k.long()[..., None]
    right = take(cumulative, index).squeeze(-1)
    own = take(e, index).squeeze(-1)
    per_total = scale / cumulative[..., -1]
    h_k = own * per_total + step
    y_k = (right - own) * per_total + (k * step - bound)
    d_k, d_k1 = _end_slopes(derivatives, index, bins).unbind(-1)
    s_k = h_k / width
    xi1 = xi * (1.0 - xi)
    denom = s_k + (d_k1 + d_k - 2.0 * s_k) * xi1
    out = torch.where(inside, y_k + h_k * (s_k * xi.square() + d_k * xi1) / denom, x)
    if not log_det:
        return out, None
    numerator = d_k1 * xi.square() + 2.0 * s_k * xi1 + d_k * (1.0 - xi).square()
    log_deriv = torch.log(numerator * (s_k / denom).square())
    return out, log_deriv.masked_fill(~inside, 0.0)


def equal_bin_spline_params_first(
    x: Tensor, params: Tensor, bins: int, bound: float = 5.0
) -> Tensor:
    """The forward spline's value (no log-derivative) with its raw parameters first:
    ``params`` of shape ``(2 bins - 1,) + x.shape`` (heights, interior derivatives), each a
    contiguous slab over the inputs; the same map as :func:`equal_bin_spline_packed` with
    ``params.movedim(0, -1)``. What an inverse autoregressive layer draws with
    (:meth:`pyroflows.nn.MADE.forward_params_first` gives its network's output so).

    Example:
        >>> x, p = torch.linspace(-6, 6, 5), torch.randn(7, 5)
        >>> y = equal_bin_spline_params_first(x, p, bins=4)
        >>> torch.allclose(y, equal_bin_spline_packed(x, p.T, bins=4)[0], atol=1e-6)
        True
    """
    if params.shape != (2 * bins - 1,) + x.shape:
        raise ValueError(
            f"an equal-width spline of {bins} bins on inputs of shape {tuple(x.shape)} takes "
            f"parameters of shape {(2 * bins - 1,) + tuple(x.shape)}, got {tuple(params.shape)}"
        )
    raw = params[:bins]
    top = raw[0].clone()
    for j in range(1, bins):
        torch.maximum(top, raw[j], out=top)
    # one table (2, K + 1) + S: C_0 = 0, C_1..C_K of exp(raw - max), and the raw derivatives
    # at knots 0..K (0 at both ends: a raw value of 0 is a derivative of 1)
    table = x.new_empty((2, bins + 1) + x.shape)
    cumulative = table[0]
    cumulative[0].zero_()
    torch.sub(raw, top, out=cumulative[1:]).exp_()
    for j in range(2, bins + 1):
        cumulative[j].add_(cumulative[j - 1])
    table[1, 0].zero_()
    table[1, bins].zero_()
    table[1, 1:bins] = params[bins:]
    width = 2.0 * bound / bins
    scale = 2.0 * bound * (1.0 - _MIN_BIN * bins)
    step = 2.0 * bound * _MIN_BIN
    inside = x.abs() <= bound
    t = torch.where(inside, x, 0.0).add_(bound).mul_(1.0 / width)  # NaN: bin 0, then x
    k = t.floor().clamp_(max=bins - 1)
    xi = t.sub_(k)
    both = torch.empty((2,) + x.shape, dtype=torch.long, device=x.device)
    both[0].copy_(k)
    torch.add(both[0], 1, out=both[1])
    left, right = torch.gather(table, 1, both.expand((2, 2) + x.shape)).unbind(1)  # (2,) + S
    per_total = scale / cumulative[bins]
    h_k = (right[0] - left[0]).mul_(per_total).add_(step)
    y_k = torch.addcmul(k.mul_(step).sub_(bound), left[0], per_total)
    slopes = F.softplus(torch.stack([left[1], right[1]]) + _DERIVATIVE_SHIFT)
    d_k, d_k1 = slopes.add_(_MIN_DERIVATIVE).unbind(0)
    s_k = h_k / width
    xi1 = xi * (1.0 - xi)
    denom = (d_k1 + d_k - 2.0 * s_k).mul_(xi1).add_(s_k)
    out = (s_k * xi.square()).add_(d_k * xi1).mul_(h_k).div_(denom).add_(y_k)
    return torch.where(inside, out, x)
