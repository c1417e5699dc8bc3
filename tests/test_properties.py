"""Property-based tests (hypothesis): the spline and affine maps, every layer and the
preprocessing are monotone, invertible and finite over random parameters and inputs, float32
edge cases included (very narrow bins, inputs at bin edges and bounds, beyond float32's range),
and the float64 preprocessing is exact for offsets up to 1e8 and scales from 1e-8 to 1e8."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import pyroflows as pf
from pyroflows.ops import affine, piecewise_linear, rational_quadratic_spline
from pyroflows.preprocess import fit_preprocessor

SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
    database=None,
)
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def raw(draw, shape, scale):
    """Raw network outputs: moderate values mixed with extreme ones (very narrow bins)."""
    values = draw(
        arrays(
            np.float64,
            shape,
            elements=st.one_of(
                st.floats(-scale, scale), st.sampled_from([-50.0, 50.0, 0.0, -1e3, 1e3])
            ),
        )
    )
    return values


@st.composite
def spline_case(draw):
    bins = draw(st.integers(1, 12))
    n = draw(st.integers(1, 16))
    bound = draw(st.sampled_from([1.0, 3.0, 5.0]))
    x = draw(
        arrays(
            np.float64,
            (n,),
            elements=st.one_of(
                st.floats(-2 * bound, 2 * bound),
                st.sampled_from([-bound, bound, 0.0, bound * (1 - 1e-7), 1e30, -1e30]),
            ),
        )
    )
    w, h = raw(draw, (n, bins), 8.0), raw(draw, (n, bins), 8.0)
    d = raw(draw, (n, bins - 1), 8.0)
    return x, w, h, d, bound, draw(st.sampled_from(list(DTYPES)))


@SETTINGS
@given(spline_case())
def test_spline_is_monotone_invertible_with_a_finite_log_det(case):
    x, w, h, d, bound, dtype_name = case
    dtype = DTYPES[dtype_name]
    t = lambda a: torch.tensor(a, dtype=dtype)  # noqa: E731
    if dtype == torch.float32:
        x = np.clip(x, -3e38, 3e38)
    y, ladj = rational_quadratic_spline(t(x), t(w), t(h), t(d), bound=bound)
    assert torch.isfinite(y).all() and torch.isfinite(ladj).all()
    back, ladj_inv = rational_quadratic_spline(y, t(w), t(h), t(d), bound=bound, inverse=True)
    assert torch.isfinite(back).all() and torch.isfinite(ladj_inv).all()
    inside = np.abs(x) <= bound
    tol = 1e-3 if dtype == torch.float32 else 1e-8
    # Round trip inside the interval (identity outside, exactly). Where a bin is nearly flat
    # (slope ~1e-5 next to knots of slope 50) float32 cannot tell nearby x apart, so the
    # invariant checked there is the image: f(f^-1(y)) = y.
    again, _ = rational_quadratic_spline(back, t(w), t(h), t(d), bound=bound)
    torch.testing.assert_close(again[inside], y[inside], atol=tol * bound, rtol=0)
    if dtype == torch.float64:
        torch.testing.assert_close(back[inside], t(x)[inside], atol=1e-6 * bound, rtol=0)
    assert torch.equal(y[~inside], t(x)[~inside])
    # The log-determinants of both directions agree to rounding in float64. In float32 with the
    # narrowest bins next to the steepest knots (slope ratios ~1e5) a rounding of the bin
    # position moves the log-derivative by up to ~0.5: only finiteness is required there.
    if dtype == torch.float64:
        torch.testing.assert_close(ladj + ladj_inv, torch.zeros_like(ladj), atol=1e-6, rtol=0)
    # monotone: sorting the inputs sorts the outputs (per row of parameters: one row each)
    if len(x) > 1:
        xs = torch.linspace(-bound, bound, 64, dtype=dtype)
        ys, _ = rational_quadratic_spline(
            xs,
            t(w[:1]).expand(64, -1),
            t(h[:1]).expand(64, -1),
            t(d[:1]).expand(64, -1),
            bound=bound,
        )
        assert bool((ys[1:] >= ys[:-1]).all())


@SETTINGS
@given(
    st.integers(1, 10),
    arrays(np.float64, (8,), elements=st.floats(-0.5, 1.5)),
    st.data(),
    st.sampled_from(list(DTYPES)),
)
def test_piecewise_linear_is_monotone_and_invertible(bins, x, data, dtype_name):
    dtype = DTYPES[dtype_name]
    logits = torch.tensor(raw(data.draw, (8, bins), 10.0), dtype=dtype)
    xt = torch.tensor(x, dtype=dtype)
    y, ladj = piecewise_linear(xt, logits)
    back, ladj_inv = piecewise_linear(y, logits, inverse=True)
    assert torch.isfinite(y).all() and torch.isfinite(ladj).all() and torch.isfinite(back).all()
    tol = 1e-4 if dtype == torch.float32 else 1e-9
    # the inverse divides the rounding error of y by a bin's mass times the bin count, so a
    # bin at the mass floor amplifies it by 1 / (1e-4 K): the round trip can do no better
    conditioning = 2 * torch.finfo(dtype).eps / (1e-4 * bins)
    torch.testing.assert_close(back, xt, atol=max(tol, conditioning), rtol=0)
    torch.testing.assert_close(ladj, -ladj_inv, atol=100 * tol, rtol=0)
    grid = torch.linspace(0, 1, 50, dtype=dtype)
    gy, _ = piecewise_linear(grid, logits[:1].expand(50, -1))
    assert bool((gy[1:] >= gy[:-1]).all()) and 0 <= float(gy[0]) and float(gy[-1]) <= 1 + tol


@SETTINGS
@given(
    arrays(np.float64, (6,), elements=st.floats(-1e6, 1e6)),
    arrays(np.float64, (6,), elements=st.floats(-1e3, 1e3)),
    arrays(np.float64, (6,), elements=st.floats(-30, 30)),
)
def test_affine_inverts_with_opposite_log_det(x, shift, log_scale):
    t = torch.from_numpy
    y, ladj = affine(t(x), t(shift), t(log_scale))
    back, ladj_inv = affine(y, t(shift), t(log_scale), inverse=True)
    # cancellation in y - shift: a few ulps of |y|, magnified by exp(-log_scale)
    atol = 8 * np.finfo(np.float64).eps * (np.abs(y.numpy()) + np.abs(shift)) * np.exp(-log_scale)
    assert (np.abs(back.numpy() - x) <= atol + 1e-12 * np.abs(x)).all()
    torch.testing.assert_close(ladj, -ladj_inv)


FLOWS = {
    "maf": lambda: pf.maf(3, layers=2, hidden=(8,)),
    "nsf": lambda: pf.nsf(3, layers=2, hidden=(8,), bins=4),
    "nsf-coupling": lambda: pf.nsf(3, layers=2, hidden=(8,), bins=4, coupling=True),
    "realnvp": lambda: pf.realnvp(3, layers=2, hidden=(8,)),
    "iaf": lambda: pf.iaf(3, layers=2, hidden=(8,)),
}


@pytest.mark.parametrize("name", FLOWS)
@settings(max_examples=25, deadline=None, derandomize=True, database=None)
@given(
    weights=st.integers(0, 2**16),
    rows=arrays(
        np.float64,
        (5, 3),
        elements=st.one_of(st.floats(-6, 6), st.sampled_from([1e4, -1e6, 3e38, 0.0])),
    ),
    dtype_name=st.sampled_from(list(DTYPES)),
)
def test_every_flow_round_trips_with_finite_log_density(name, weights, rows, dtype_name):
    from conftest import randomize

    dtype = DTYPES[dtype_name]
    flow = randomize(FLOWS[name](), std=0.4, seed=weights).to(dtype).eval()
    x = torch.tensor(rows, dtype=dtype)
    with torch.no_grad():
        log_p = flow.log_prob(x)
        assert not torch.isnan(log_p).any()
        ordinary = (x.abs() <= 6).all(-1)
        assert torch.isfinite(log_p[ordinary]).all()
        z = flow.transform_to_base(x[ordinary])
        back = x[ordinary]
        for t in flow.transforms:
            z, _ = t.call_and_ladj(z)
        tol = 2e-3 if dtype == torch.float32 else 1e-8
        torch.testing.assert_close(z, back, atol=tol, rtol=tol)


@SETTINGS
@given(
    offset=st.sampled_from([0.0, 1.0, -3e4, 1e8, -1e8]),
    log_scale=st.floats(-8, 8),
    seed=st.integers(0, 1000),
    whiten=st.booleans(),
)
def test_preprocessing_is_exact_for_any_offset_and_scale(offset, log_scale, seed, whiten):
    scale = 10.0**log_scale
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(300, 2))
    X = base * scale + offset
    pre = fit_preprocessor(X, whiten=whiten)
    z, ladj = pre.to_latent(torch.from_numpy(X))
    z = z.numpy()
    expected = (base - base.mean(0)) / base.std(0)
    if not whiten:  # exactly the standardised sample, up to the rounding of X itself
        resolution = np.spacing(np.abs(X).max()) / (scale * base.std(0).min())
        np.testing.assert_allclose(z, expected, atol=10 * resolution + 1e-10)
    assert np.isfinite(ladj.numpy()).all()
    exact = X.astype(np.longdouble)  # reference statistics in extended precision
    std = np.sqrt(((exact - exact.mean(0)) ** 2).mean(0)).astype(np.float64)
    if not whiten:
        assert float(ladj[0]) == pytest.approx(-np.log(std).sum(), abs=1e-6)
    back = pre.from_latent(torch.from_numpy(z)).numpy()
    np.testing.assert_allclose(back, X, rtol=1e-12, atol=1e-12 * (abs(offset) + scale))


def test_piecewise_linear_round_trip_at_a_bin_on_the_mass_floor():
    # the case a property run found: float32, x at the upper edge, the last bin at the floor
    logits = torch.tensor([[0.0, -50.0]] + [[-50.0, -50.0]] * 7)
    x = torch.ones(8)
    y, _ = piecewise_linear(x, logits)
    back, _ = piecewise_linear(y, logits, inverse=True)
    bound = 2 * torch.finfo(torch.float32).eps / (1e-4 * 2)
    assert float((back - x).abs().max()) <= bound
