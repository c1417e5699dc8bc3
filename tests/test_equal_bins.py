"""The equal-width-bin spline (``pyroflows.ops.equal_bins``): the general spline with zero raw
widths, its bin found by arithmetic; its parameters-first form and its univariate map.

The shared properties (round trip, log-derivative against autograd, broadcasting, identity
tails, far inputs) are in ``tests/test_ops.py`` and, for the layers, ``tests/test_transforms.py``.
"""

from __future__ import annotations

import math

import pytest
import torch

from pyroflows.ops.equal_bins import (
    equal_bin_spline,
    equal_bin_spline_packed,
    equal_bin_spline_params_first,
)
from pyroflows.ops.rqs import rational_quadratic_spline
from pyroflows.transforms import EqualBinRQS, MaskedAutoregressive

F64 = torch.float64


def _inputs(n: int, bound: float, seed: int = 0) -> torch.Tensor:
    """Points inside, on the edges of equal bins, on and outside the bound."""
    g = torch.Generator().manual_seed(seed)
    x = 1.5 * bound * (2 * torch.rand(n, generator=g, dtype=F64) - 1)
    x[:5] = torch.tensor([-bound, bound, 0.0, -bound / 2, bound / 4], dtype=F64)
    return x


@pytest.mark.parametrize("bins", [1, 2, 5, 8])
@pytest.mark.parametrize("inverse", [False, True], ids=["forward", "inverse"])
def test_equal_bin_spline_is_the_general_spline_with_zero_widths(bins, inverse):
    g = torch.Generator().manual_seed(bins)
    h = 3 * torch.randn(500, bins, generator=g, dtype=F64)
    d = 3 * torch.randn(500, bins - 1, generator=g, dtype=F64)
    x = _inputs(500, 2.5, seed=bins)
    y, ladj = equal_bin_spline(x, h, d, bound=2.5, inverse=inverse)
    ref, ladj_ref = rational_quadratic_spline(x, torch.zeros_like(h), h, d, 2.5, inverse)
    assert torch.allclose(y, ref, atol=1e-12, rtol=0)
    assert torch.allclose(ladj, ladj_ref, atol=1e-10, rtol=0)


def test_knots_are_equally_spaced_and_map_to_the_cumulative_heights():
    # at the knot -bound + 2 bound k / K the spline is -bound + 2 bound (k min + (1 - K min)
    # C_k / C_K) with min = 1e-3 the least bin height: the analytic knot values
    h = torch.tensor([[0.0, 1.0, -1.0, 2.0]], dtype=F64)
    d = torch.zeros(1, 3, dtype=F64)
    knots = torch.linspace(-2.0, 2.0, 5, dtype=F64)
    y, _ = equal_bin_spline(knots, h.expand(5, 4), d.expand(5, 3), bound=2.0)
    mass = torch.softmax(h[0], 0)
    cum = torch.cat([torch.zeros(1, dtype=F64), torch.cumsum(mass, 0)])
    k = torch.arange(5, dtype=F64)
    expected = -2.0 + 4.0 * (1e-3 * k + (1 - 4e-3) * cum)
    assert torch.allclose(y, expected, atol=1e-12)


def test_zero_parameters_give_the_identity_and_tails_are_the_identity():
    x = _inputs(200, 3.0)
    y, ladj = equal_bin_spline(
        x, torch.zeros(200, 6, dtype=F64), torch.zeros(200, 5, dtype=F64), 3.0
    )
    assert torch.allclose(y, x, atol=1e-12) and ladj.abs().max() < 1e-12
    g = torch.Generator().manual_seed(1)
    h, d = torch.randn(200, 6, generator=g, dtype=F64), torch.randn(200, 5, generator=g, dtype=F64)
    outside = x.abs() > 3.0
    y, ladj = equal_bin_spline(x, h, d, 3.0)
    assert torch.equal(y[outside], x[outside]) and bool((ladj[outside] == 0).all())


def test_nan_input_gives_nan_without_an_index_error():
    x = torch.tensor([math.nan, 1.0])
    y, ladj = equal_bin_spline(x, torch.randn(2, 4), torch.randn(2, 3))
    assert bool(y[0].isnan()) and not bool(y[1].isnan())
    y_first = equal_bin_spline_params_first(x, torch.randn(7, 2), 4)
    assert bool(y_first[0].isnan()) and not bool(y_first[1].isnan())


@pytest.mark.parametrize("bins", [1, 2, 4, 8, 16])
def test_params_first_spline_is_the_spline(bins):
    g = torch.Generator().manual_seed(bins)
    params = 3.0 * torch.randn(400, 3, 2 * bins - 1, generator=g, dtype=F64)
    x = 4.0 * torch.randn(400, 3, generator=g, dtype=F64)
    x[:4, 0] = torch.tensor([-5.0, 5.0, -7.5, 9.0], dtype=F64)
    expected, _ = equal_bin_spline_packed(x, params, bins)
    got = equal_bin_spline_params_first(x, params.movedim(-1, 0).contiguous(), bins)
    assert torch.allclose(got, expected, atol=1e-12, rtol=0)
    assert torch.equal(got[2:4, 0], x[2:4, 0])


def test_parameters_of_the_wrong_size_are_refused():
    with pytest.raises(ValueError, match="2 \\* 4 - 1 = 7 parameters"):
        equal_bin_spline_packed(torch.zeros(5), torch.zeros(5, 11), 4)
    with pytest.raises(ValueError, match="takes parameters of shape"):
        equal_bin_spline_params_first(torch.zeros(5, 2), torch.zeros(11, 5, 2), 4)
    with pytest.raises(ValueError, match="interior derivatives"):
        equal_bin_spline(torch.zeros(5), torch.zeros(5, 4), torch.zeros(5, 4))


@pytest.mark.parametrize("bad", [0, -2, 2.5, True])
def test_univariate_map_refuses_bad_bins(bad):
    with pytest.raises(ValueError, match="bins must be a positive integer"):
        EqualBinRQS(bad)


@pytest.mark.parametrize("bad", [0.0, -1.0, math.inf, math.nan])
def test_univariate_map_refuses_bad_bounds(bad):
    with pytest.raises(ValueError, match="bound must be a positive finite number"):
        EqualBinRQS(4, bad)


def test_univariate_map_has_fewer_parameters_and_draws_parameters_first():
    spline = EqualBinRQS(8, 3.0)
    assert spline.num_params == 15
    assert spline.params_first(inverse=False) and not spline.params_first(inverse=True)
    with pytest.raises(ValueError, match="not its inverse"):
        spline.value_params_first(torch.zeros(2), torch.zeros(15, 2), inverse=True)


@pytest.mark.parametrize("dim", [1, 3, 6])
def test_equal_bin_iaf_draws_the_same_with_and_without_autograd(dim):
    layer = MaskedAutoregressive(dim, EqualBinRQS(8), context_dim=2, hidden=(16,), inverse=True)
    layer = layer.double()
    with torch.no_grad():
        layer.net.flat_params.normal_()
    z, c = 3.0 * torch.randn(50, 4, dim, dtype=F64), torch.randn(4, 2, dtype=F64)
    with torch.no_grad():
        fast = layer.call(z, c)
    reference, ladj = layer.call_and_ladj(z, c)
    assert torch.allclose(fast, reference, atol=1e-12, rtol=0)
    # the density direction (a search over the learnt heights) undoes it; moderate weights
    # (raw parameters of order 1-10), as a trained layer has
    with torch.no_grad():
        layer.net.flat_params.mul_(0.3)
    x, ladj = layer.call_and_ladj(z, c)
    back, ladj_inv = layer.inv_and_ladj(x, c)
    assert torch.allclose(back, z, atol=1e-9) and torch.allclose(ladj, -ladj_inv, atol=1e-9)
