"""Monotonic rational-quadratic spline (Durkan et al., 2019, "Neural Spline Flows").

The spline maps ``[-bound, bound]`` onto itself with ``K`` bins; outside that interval it is the
identity. The derivative at both ends is fixed to 1, so the map and its derivative are
continuous everywhere and every real input has a finite image and log-derivative.
"""

from __future__ import annotations

import functools
import math
from typing import Literal, overload

import torch
import torch.nn.functional as F
from torch import Tensor

from pyroflows.ops.bins import bin_index, take

_MIN_BIN = 1e-3  # the least width and height of a bin, as a fraction of the interval
_MIN_DERIVATIVE = 1e-3
# Added inside the softplus so that raw derivative parameters of 0 give a derivative of 1:
# with all raw parameters at 0 the spline is the identity.
_DERIVATIVE_SHIFT = math.log(math.expm1(1.0 - _MIN_DERIVATIVE))


def softmax_last(x: Tensor) -> Tensor:
    """Softmax over the last dimension, written out: several times faster than
    ``torch.softmax`` on CPU for the short last dimensions (bins) used here."""
    e = torch.exp(x - x.amax(-1, keepdim=True).detach())
    return e / e.sum(-1, keepdim=True)


def _max_last(t: Tensor) -> Tensor:
    """``t.amax(-1, keepdim=True)`` by halving: elementwise maxima of the two halves until one
    column is left. A reduction over a last dimension of a few bins is 2-2.5x slower on CPU
    (16 384 x 2 x 8: 0.13-0.17 ms vs 0.33 ms on one thread); the result is the same."""
    while t.shape[-1] > 1:
        half = t.shape[-1] // 2
        top = torch.maximum(t[..., :half], t[..., half : 2 * half])
        if t.shape[-1] % 2:
            top[..., :1] = torch.maximum(top[..., :1], t[..., -1:])
        t = top
    return t


@functools.lru_cache(maxsize=64)
def _offsets(bins: int, bound: float, minimum: float, dtype: torch.dtype, device: torch.device):
    """``-bound + 2 bound minimum k`` for ``k = 1..bins``: the part of the edges that does not
    depend on the parameters, made once per shape instead of three operations per call (3 %
    of a training step of a two-parameter posterior). Made outside inference mode, so that
    passes with autograd may use it too."""
    with torch.inference_mode(False), torch.no_grad():
        k = torch.arange(1, bins + 1, dtype=dtype, device=device)
        return k * (2.0 * bound * minimum) - bound


@overload
def rational_quadratic_spline(
    x: Tensor,
    widths: Tensor,
    heights: Tensor,
    derivatives: Tensor,
    bound: float = ...,
    inverse: bool = ...,
    log_det: Literal[True] = ...,
) -> tuple[Tensor, Tensor]: ...


@overload
def rational_quadratic_spline(
    x: Tensor,
    widths: Tensor,
    heights: Tensor,
    derivatives: Tensor,
    bound: float = ...,
    inverse: bool = ...,
    *,
    log_det: Literal[False],
) -> tuple[Tensor, None]: ...


def rational_quadratic_spline(
    x: Tensor,
    widths: Tensor,
    heights: Tensor,
    derivatives: Tensor,
    bound: float = 5.0,
    inverse: bool = False,
    log_det: bool = True,
) -> tuple[Tensor, Tensor | None]:
    """Apply a monotonic rational-quadratic spline (or its inverse) elementwise.

    Args:
        x: input of shape ``S``.
        widths: raw bin widths, shape ``S + (K,)`` (softmax-normalised here).
        heights: raw bin heights, shape ``S + (K,)``.
        derivatives: raw derivatives at the ``K - 1`` interior knots, shape ``S + (K - 1,)``
            (softplus-transformed here; 0 gives a derivative of 1). The derivative at both
            ends of the interval is 1.
        bound: the spline acts on ``[-bound, bound]``; it is the identity outside.
        inverse: apply the inverse spline.
        log_det: ``False`` skips the log-derivative (drawing samples needs none) and returns
            ``None`` in its place.

    The parameters' batch shape may also be any shape that broadcasts with ``S`` (one spline
    shared by many inputs); the outputs then have the broadcast shape.

    Returns:
        ``(output, log|d output / d x|)``, both of shape ``S`` (the second ``None`` when
        ``log_det=False``).

    Example:
        >>> x = torch.linspace(-6, 6, 5)
        >>> w, h, d = torch.randn(5, 4), torch.randn(5, 4), torch.randn(5, 3)
        >>> y, ladj = rational_quadratic_spline(x, w, h, d, bound=5.0)
        >>> back, ladj_inv = rational_quadratic_spline(y, w, h, d, bound=5.0, inverse=True)
        >>> torch.allclose(back, x, atol=1e-5), torch.allclose(ladj, -ladj_inv, atol=1e-5)
        (True, True)
    """
    # The widths and heights go through the same steps as one (..., 2, K) tensor: half the
    # operations, each on twice the data (a few microseconds saved per call add up over the
    # many calls of sampling a flow in chunks).
    return _spline(x, torch.stack([widths, heights], dim=-2), derivatives, bound, inverse, log_det)


@overload
def rational_quadratic_spline_packed(
    x: Tensor,
    params: Tensor,
    bins: int,
    bound: float = ...,
    inverse: bool = ...,
    log_det: Literal[True] = ...,
) -> tuple[Tensor, Tensor]: ...


@overload
def rational_quadratic_spline_packed(
    x: Tensor,
    params: Tensor,
    bins: int,
    bound: float = ...,
    inverse: bool = ...,
    *,
    log_det: Literal[False],
) -> tuple[Tensor, None]: ...


def rational_quadratic_spline_packed(
    x: Tensor,
    params: Tensor,
    bins: int,
    bound: float = 5.0,
    inverse: bool = False,
    log_det: bool = True,
) -> tuple[Tensor, Tensor | None]:
    """:func:`rational_quadratic_spline` with its raw parameters packed in one tensor
    ``params`` of shape ``S + (3 bins - 1,)``: widths, heights, then interior derivatives (a
    conditioner's output as it comes). The widths and heights are made one contiguous
    ``(..., 2, bins)`` tensor in a single copy.

    Example:
        >>> p = torch.randn(5, 11)
        >>> x = torch.linspace(-6, 6, 5)
        >>> y, _ = rational_quadratic_spline_packed(x, p, bins=4)
        >>> w, h, d = p.split([4, 4, 3], dim=-1)
        >>> torch.allclose(y, rational_quadratic_spline(x, w, h, d)[0])
        True
    """
    if params.shape[-1] != 3 * bins - 1:
        raise ValueError(
            f"a spline of {bins} bins takes 3 * {bins} - 1 = {3 * bins - 1} parameters per "
            f"input, got {params.shape[-1]}"
        )
    # split, not two slices: the backward pass then concatenates two gradients instead of
    # adding two zero-filled ones of the parameters' size. One contiguous copy of the sizes:
    # the maximum, the shift and the gathers on a strided view of one feature's parameters
    # (an autoregressive layer's sampling) cost more than the copy.
    sizes, derivatives = params.split([2 * bins, bins - 1], dim=-1)
    sizes = sizes.unflatten(-1, (2, bins)).contiguous()
    return _spline(x, sizes, derivatives, bound, inverse, log_det)


def _end_slopes(derivatives: Tensor, index: Tensor, bins: int) -> Tensor:
    """The derivatives ``(d_k, d_{k+1})`` at both edges of bin ``k = index``, shape ``(..., 2)``:
    the two raw values are gathered first and only they go through the softplus; the derivative
    at the ends of the interval (knots 0 and ``K``) is exactly 1."""
    at_end = torch.cat([index == 0, index == bins - 1], -1)
    if bins == 1:
        return torch.ones(at_end.shape, dtype=derivatives.dtype, device=derivatives.device)
    # knot j > 0 has raw derivative j - 1; the clamped indices at the ends are overwritten below
    raw = take(derivatives, torch.cat([index - 1, index], -1).clamp_(0, bins - 2))
    slopes = F.softplus(raw + _DERIVATIVE_SHIFT).add_(_MIN_DERIVATIVE)
    return slopes.masked_fill(at_end, 1.0)


def _spline(
    x: Tensor,
    sizes: Tensor,
    derivatives: Tensor,
    bound: float,
    inverse: bool,
    log_det: bool,
) -> tuple[Tensor, Tensor | None]:
    """:func:`rational_quadratic_spline` with the raw widths and heights as one ``(..., 2, K)``
    tensor ``sizes``.

    Bin ``j`` of a coordinate gets the fraction ``minimum + (1 - K minimum) softmax(raw)_j`` of
    the interval, so edge ``k`` is ``-bound + 2 bound (k minimum + (1 - K minimum) C_k / C_K)``
    with ``C`` the cumulative sum of ``exp(raw - max raw)`` (the softmax is not formed). Only
    the searched coordinate's interior edges are formed in full; for the bin ``k`` found, its
    left edges and sizes in both coordinates come from three gathered numbers per coordinate,
    ``C_{k+1}``, ``C_K`` and ``e_k = C_{k+1} - C_k``, so no per-input table of all knots is
    made (a third to 45 % less time than such a table, ``benchmarks/rqs_speed.py``)."""
    bins = sizes.shape[-1]
    e = (sizes - _max_last(sizes.detach())).exp_()  # in place: one buffer fewer
    cumulative = torch.cumsum(e, dim=-1)
    offsets = _offsets(bins, bound, _MIN_BIN, sizes.dtype, sizes.device)
    scale = 2.0 * bound * (1.0 - _MIN_BIN * bins)
    step = 2.0 * bound * _MIN_BIN  # the least size of a bin

    inside = x.abs() <= bound
    u = x.clamp(-bound, bound)
    # the interior edges of the searched coordinate (no gradient flows through the search)
    searched = cumulative.detach()[..., int(inverse), :]
    edges = torch.addcdiv(offsets[:-1], searched[..., :-1], searched[..., -1:], value=scale)
    index = bin_index(edges, u)
    # C_{k+1} and the total C_K of both coordinates in one gather, and the bin's own e_k
    # (= C_{k+1} - C_k): one scatter each in the backward pass
    batch = index.shape[:-1]
    last = torch.full_like(index, bins - 1)
    right, total = take(
        cumulative, torch.cat([index, last], -1)[..., None, :].expand(*batch, 2, 2)
    ).unbind(-1)
    own = take(e, index[..., None, :].expand(*batch, 2, 1)).squeeze(-1)
    per_total = scale / total
    size = torch.addcmul(torch.full_like(own, step), own, per_total)
    start = torch.addcmul(index.to(sizes.dtype) * step - bound, right - own, per_total)
    (x_k, y_k), (w_k, h_k) = start.unbind(-1), size.unbind(-1)
    d_k, d_k1 = _end_slopes(derivatives, index, bins).unbind(-1)
    s_k = h_k / w_k
    curvature = d_k1 + d_k - 2.0 * s_k

    if inverse:
        dy = u - y_k
        a = h_k * (s_k - d_k) + dy * curvature
        b = h_k * d_k - dy * curvature
        c = -s_k * dy
        disc = (b.square() - 4.0 * a * c).clamp_min(0.0)
        # xi lies in [0, 1] in exact arithmetic; with extreme parameters (a conditioner fed a far
        # outlier) rounding can push it out, where the log-derivative below has no real value.
        xi = ((2.0 * c) / (-b - disc.sqrt())).clamp(0.0, 1.0)
        out = torch.where(inside, x_k + xi * w_k, x)
        if not log_det:
            return out, None
    else:
        xi = (u - x_k) / w_k
    xi1 = xi * (1.0 - xi)
    denom = s_k + curvature * xi1
    if not inverse:
        out = torch.where(inside, y_k + h_k * (s_k * xi.square() + d_k * xi1) / denom, x)
        if not log_det:
            return out, None
    # the derivative s^2 (d_{k+1} xi^2 + 2 s xi (1 - xi) + d_k (1 - xi)^2) / denom^2 under one
    # logarithm; s / denom first, so that no factor overflows where the derivative does not
    numerator = d_k1 * xi.square() + 2.0 * s_k * xi1 + d_k * (1.0 - xi).square()
    log_deriv = torch.log(numerator * (s_k / denom).square())
    if inverse:
        log_deriv = -log_deriv
    return out, log_deriv.masked_fill(~inside, 0.0)


def rational_quadratic_spline_params_first(
    x: Tensor, params: Tensor, bins: int, bound: float = 5.0
) -> Tensor:
    """The spline's value (forward direction, no log-derivative) with its raw parameters
    first: ``params`` of shape ``(3 bins - 1,) + x.shape`` (widths, heights, interior
    derivatives), each parameter a contiguous slab over the inputs. The same map as
    :func:`rational_quadratic_spline_packed` with ``params.movedim(0, -1)``.

    With the bins first, every step over the bins (the maxima, the cumulative sums, the
    count of edges below ``x``) is an elementwise operation between whole slabs, and the bin's
    numbers come from one gather; with the bins last those steps run over rows of a few
    numbers. An autoregressive layer's network gives its output in this layout at no cost
    (:meth:`pyroflows.nn.MADE.forward_params_first`), which is how an inverse autoregressive
    layer of splines draws (``benchmarks/fast_sampler_variant_timing.py``).

    Example:
        >>> x, p = torch.linspace(-6, 6, 5), torch.randn(11, 5)
        >>> y = rational_quadratic_spline_params_first(x, p, bins=4)
        >>> torch.allclose(y, rational_quadratic_spline_packed(x, p.T, bins=4)[0], atol=1e-6)
        True
    """
    if params.shape != (3 * bins - 1,) + x.shape:
        raise ValueError(
            f"a spline of {bins} bins on inputs of shape {tuple(x.shape)} takes parameters of "
            f"shape {(3 * bins - 1,) + tuple(x.shape)}, got {tuple(params.shape)}"
        )
    sizes = params[: 2 * bins].unflatten(0, (2, bins))  # (2, K) + S: widths, heights
    top = sizes[:, 0].clone()
    for k in range(1, bins):
        torch.maximum(top, sizes[:, k], out=top)
    # one table (3, K + 1) + S: the cumulative sums C_0 = 0, C_1..C_K of exp(raw - max) of
    # the widths and the heights, and the raw derivatives at knots 0..K (0 at both ends: a
    # raw value of 0 is a derivative of 1)
    table = x.new_empty((3, bins + 1) + x.shape)
    cumulative = table[:2]
    cumulative[:, 0].zero_()
    torch.sub(sizes, top.unsqueeze(1), out=cumulative[:, 1:]).exp_()
    for k in range(2, bins + 1):
        cumulative[:, k].add_(cumulative[:, k - 1])
    table[2, 0].zero_()
    table[2, bins].zero_()
    table[2, 1:bins] = params[2 * bins :]
    total = cumulative[:, bins]  # (2,) + S
    scale = 2.0 * bound * (1.0 - _MIN_BIN * bins)
    step = 2.0 * bound * _MIN_BIN  # the least size of a bin
    u = x.clamp(-bound, bound)
    # edge j = -bound + step j + scale C_j / C_K is <= u  <=>  C_j + (step j / scale) C_K <= r
    r = (u + bound).mul_(total[0]).div_(scale)
    small = bins <= 256  # the count (at most bins - 1) fits in 8 bits
    count = torch.zeros(x.shape, dtype=torch.uint8 if small else torch.int32, device=x.device)
    below = torch.empty(x.shape, dtype=torch.bool, device=x.device)
    for j in range(1, bins):
        edge = torch.add(cumulative[0, j], total[0], alpha=step * j / scale)
        torch.le(edge, r, out=below)
        count.add_(below.view(torch.uint8) if small else below)  # 8 bits: no cast
    # C_k, C_{k+1} of both coordinates and the raw derivatives d_k, d_{k+1}: one gather
    both = torch.empty((2,) + x.shape, dtype=torch.long, device=x.device)
    both[0] = count
    torch.add(both[0], 1, out=both[1])
    left, right = torch.gather(table, 1, both.expand((3, 2) + x.shape)).unbind(1)  # (3,) + S
    per_total = scale / total
    start = torch.addcmul(count.to(x.dtype).mul_(step).sub_(bound), left[:2], per_total)
    size = (right[:2] - left[:2]).mul_(per_total).add_(step)
    (x_k, y_k), (w_k, h_k) = start.unbind(0), size.unbind(0)
    slopes = F.softplus(torch.stack([left[2], right[2]]) + _DERIVATIVE_SHIFT)
    d_k, d_k1 = slopes.add_(_MIN_DERIVATIVE).unbind(0)
    s_k = h_k / w_k
    xi = (u - x_k).div_(w_k)
    xi1 = xi * (1.0 - xi)
    denom = (d_k1 + d_k - 2.0 * s_k).mul_(xi1).add_(s_k)
    out = (s_k * xi.square()).add_(d_k * xi1).mul_(h_k).div_(denom).add_(y_k)
    return torch.where(x.abs() <= bound, out, x)
