"""The pure maths in ``pyroflows.ops``: round trips, derivatives against autograd, tails."""

import math

import pytest
import torch

from pyroflows.ops import (
    affine,
    equal_bin_spline,
    piecewise_linear,
    rational_quadratic_spline,
    soft_clamp,
)

F64 = torch.float64


def _rqs(x, params, inverse=False, bound=3.0):
    w, h, d = params
    return rational_quadratic_spline(x, w, h, d, bound=bound, inverse=inverse)


def _eq(x, params, inverse=False, bound=3.0):
    return equal_bin_spline(x, params[0], params[1], bound=bound, inverse=inverse)


def _pl(x, params, inverse=False):
    return piecewise_linear(x, params[0], inverse=inverse)


def _affine(x, params, inverse=False):
    return affine(x, params[0], params[1], inverse=inverse)


def _params(kind, n, bins=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    if kind == "rqs":
        return (
            torch.randn(n, bins, generator=g, dtype=F64) * 2,
            torch.randn(n, bins, generator=g, dtype=F64) * 2,
            torch.randn(n, bins - 1, generator=g, dtype=F64) * 2,
        )
    if kind == "equal":  # heights and interior derivatives
        return (
            torch.randn(n, bins, generator=g, dtype=F64) * 2,
            torch.randn(n, bins - 1, generator=g, dtype=F64) * 2,
        )
    if kind == "linear":
        return (torch.randn(n, bins, generator=g, dtype=F64) * 2,)
    return (torch.randn(n, generator=g, dtype=F64), torch.randn(n, generator=g, dtype=F64))


CASES = {
    "affine": (_affine, "affine", lambda n: torch.randn(n, dtype=F64) * 3),
    "rqs": (_rqs, "rqs", lambda n: torch.linspace(-4.0, 4.0, n, dtype=F64)),
    "equal-bins": (_eq, "equal", lambda n: torch.linspace(-4.0, 4.0, n, dtype=F64)),
    "piecewise-linear": (_pl, "linear", lambda n: torch.linspace(0.001, 0.999, n, dtype=F64)),
}


@pytest.mark.parametrize("name", CASES)
def test_round_trip_and_inverse_log_derivative(name):
    fn, kind, inputs = CASES[name]
    x = inputs(257)
    params = _params(kind, 257)
    y, ladj = fn(x, params)
    back, ladj_inv = fn(y, params, inverse=True)
    assert (back - x).abs().max() < 1e-10
    assert (ladj + ladj_inv).abs().max() < 1e-10


@pytest.mark.parametrize("name", CASES)
def test_log_derivative_matches_autograd(name):
    fn, kind, inputs = CASES[name]
    x = inputs(101).requires_grad_(True)
    params = _params(kind, 101, seed=1)
    y, ladj = fn(x, params)
    (grad,) = torch.autograd.grad(y.sum(), x)
    assert torch.allclose(grad.log(), ladj, atol=1e-9)
    assert bool((grad > 0).all()), "the map must be increasing"


@pytest.mark.parametrize("inverse", [False, True], ids=["forward", "inverse"])
@pytest.mark.parametrize("name", CASES)
def test_parameters_shared_by_many_inputs_broadcast(name, inverse):
    # (7,) parameter sets, each shared by 5 inputs (x of shape (5, 7)): the same values and
    # parameter gradients as with the parameters copied out to (5, 7)
    fn, kind, inputs = CASES[name]
    x = inputs(35).reshape(5, 7)
    params = [p.requires_grad_(True) for p in _params(kind, 7, seed=2)]
    copied = [p.expand(5, *p.shape) for p in params]
    y, ladj = fn(x, params, inverse=inverse)
    y_ref, ladj_ref = fn(x, copied, inverse=inverse)
    assert y.shape == ladj.shape == (5, 7)
    assert torch.equal(y, y_ref) and torch.equal(ladj, ladj_ref)
    grads = torch.autograd.grad((y + ladj).sum(), params)
    grads_ref = torch.autograd.grad((y_ref + ladj_ref).sum(), params)
    for g, g_ref in zip(grads, grads_ref, strict=True):
        assert torch.allclose(g, g_ref, atol=1e-12)


def test_rqs_is_identity_with_unit_derivative_outside_and_continuous_at_bound():
    params = _params("rqs", 6)
    x = torch.tensor([-1e6, -50.0, -3.0 - 1e-9, 3.0 + 1e-9, 50.0, 1e6], dtype=F64)
    y, ladj = _rqs(x, params)
    assert torch.equal(y, x) or (y - x).abs().max() < 1e-6
    assert ladj.abs().max() < 1e-6
    # Derivative at the bound from inside equals 1 (no kink), so log-derivative -> 0.
    inside = torch.tensor([-3.0 + 1e-7, 3.0 - 1e-7], dtype=F64)
    params2 = tuple(p[:2] for p in params)
    _, ladj_in = _rqs(inside, params2)
    assert ladj_in.abs().max() < 1e-5


def test_rqs_zero_parameters_give_identity():
    x = torch.linspace(-4, 4, 33, dtype=F64)
    zeros = tuple(torch.zeros(33, k, dtype=F64) for k in (8, 8, 7))
    y, ladj = _rqs(x, zeros)
    assert (y - x).abs().max() < 1e-12 and ladj.abs().max() < 1e-12


def test_rqs_bins_cover_interval_monotonically():
    params = _params("rqs", 1)
    x = torch.linspace(-3.0, 3.0, 2001, dtype=F64)
    y, _ = _rqs(x, tuple(p.expand(2001, -1) for p in params))
    assert bool((y.diff() > 0).all())
    assert abs(y[0].item() + 3.0) < 1e-12 and abs(y[-1].item() - 3.0) < 1e-12


def test_piecewise_linear_is_cdf_of_bin_masses():
    logits = torch.tensor([[0.0, 1.0, 2.0]], dtype=F64)
    mass = torch.softmax(logits, -1)
    # At the bin edges 1/3 and 2/3 the map equals the cumulative masses.
    y, _ = piecewise_linear(torch.tensor([1 / 3, 2 / 3], dtype=F64), logits.expand(2, 3))
    expected = torch.cumsum(mass[0], 0)[:2]
    assert torch.allclose(y, expected, atol=1e-3)  # small floor on the masses


def test_soft_clamp_bounds_and_gradient():
    x = torch.tensor([-100.0, -1.0, 0.0, 100.0], requires_grad=True)
    y = soft_clamp(x, 2.0)
    assert bool((y.abs() < 2.0).all())
    (g,) = torch.autograd.grad(y.sum(), x)
    # d/dx x / (1 + |x|/b) = 1 / (1 + |x|/b)^2
    assert torch.allclose(g, 1.0 / (1.0 + x.detach().abs() / 2.0) ** 2)
    assert bool((y.diff() > 0).all())


@pytest.mark.parametrize("dtype", [torch.float32, F64], ids=["float32", "float64"])
@pytest.mark.parametrize("name", CASES)
def test_far_and_infinite_inputs_map_without_nan(name, dtype):
    """Huge and infinite inputs give huge or infinite outputs and finite log-derivatives, in both
    directions; the spline tails are the identity."""
    fn, kind, _ = CASES[name]
    big = torch.finfo(dtype).max
    x = torch.tensor([1e6, -1e6, big, -big, math.inf, -math.inf], dtype=dtype)
    params = tuple(p.to(dtype) for p in _params(kind, len(x)))
    for inverse in (False, True):
        y, ladj = fn(x, params, inverse=inverse)
        assert not bool(y.isnan().any()) and bool(torch.isfinite(ladj).all())
        assert bool((y.sign() == x.sign()).all()) and bool((y.abs() > 1e3).all())
        if name != "affine":
            assert torch.equal(y, x) and bool((ladj == 0).all())


def test_soft_clamp_of_infinities_and_huge_values():
    x = torch.tensor([-math.inf, -3e38, 3e38, math.inf])
    assert torch.equal(soft_clamp(x, 2.0), torch.tensor([-2.0, -2.0, 2.0, 2.0]))
    assert bool(soft_clamp(torch.tensor([math.nan]), 2.0).isnan().all())


def test_rqs_with_huge_raw_parameters_is_finite():
    """A conditioner fed a far outlier can output raw parameters of order 1e5."""
    g = torch.Generator().manual_seed(3)
    w, h, d = (torch.randn(64, k, generator=g) * 1e5 for k in (6, 6, 5))
    x = torch.linspace(-3.5, 3.5, 64)
    y, ladj = rational_quadratic_spline(x, w, h, d, bound=3.0)
    back, ladj_inv = rational_quadratic_spline(y, w, h, d, bound=3.0, inverse=True)
    assert bool(torch.isfinite(y).all() and torch.isfinite(ladj).all())
    assert bool(torch.isfinite(back).all() and torch.isfinite(ladj_inv).all())


@pytest.mark.parametrize("edges_count", [7, 40], ids=["counted", "binary-search"])
def test_bin_index_counts_the_edges_at_or_below_each_point(edges_count):
    """Both ways of finding the bin (counting few edges, a binary search for many) give the
    number of edges ``<= x``, ties included, with edges shared across a batch (broadcast)."""
    from pyroflows.ops.bins import bin_index

    g = torch.Generator().manual_seed(0)
    edges = torch.randn(5, 1, edges_count, generator=g).sort(-1).values
    x = torch.randn(5, 8, generator=g)
    x[0, 0] = edges[0, 0, 3]  # a tie counts as below (the bin to the right)
    x[1, 1], x[2, 2] = -1e30, 1e30
    expected = torch.tensor(
        [[[sum(e <= v for e in edges[i, 0].tolist())] for v in x[i].tolist()] for i in range(5)]
    )
    found = bin_index(edges, x)
    assert found.shape == (5, 8, 1) and found.dtype == torch.long
    assert torch.equal(found, expected)
    assert found[0, 0, 0] == 4 and found[1, 1, 0] == 0 and found[2, 2, 0] == edges_count


@pytest.mark.parametrize("bins", [1, 2, 3, 7, 8, 10, 17])
def test_max_by_halving_equals_amax(bins):
    """The spline's overflow guard (maximum over the bins by halving) is ``amax`` exactly,
    for odd and even bin counts, with infinities and NaN propagated."""
    from pyroflows.ops.rqs import _max_last

    t = torch.randn(40, 3, bins, generator=torch.Generator().manual_seed(bins))
    t[0, 0, -1], t[1, 1, 0] = math.inf, -math.inf
    t[2, 2, bins // 2] = math.nan
    assert torch.equal(_max_last(t).isnan(), t.amax(-1, keepdim=True).isnan())
    assert torch.allclose(_max_last(t), t.amax(-1, keepdim=True), equal_nan=True, atol=0)
