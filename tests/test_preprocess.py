"""The float64 pre-transform: exact statistics, exact box maps, dtype pinning."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pyroflows.preprocess import Moments, bounds_array, fit_preprocessor
from pyroflows.transforms import Box, FixedAffine


def test_streaming_moments_equal_the_one_pass_statistics():
    X = np.random.default_rng(0).normal(size=(1001, 3)) * [1.0, 1e-4, 1e4] + 1e8
    m = Moments()
    for chunk in np.array_split(X, 7):
        m.update(chunk)
    assert m.count == 1001
    # reference in extended precision (np.cov itself is off by ~1e-6 on the tiny column)
    exact = X.astype(np.longdouble)
    centred = exact - exact.mean(0)
    reference = (centred.T @ centred / len(X)).astype(np.float64)
    np.testing.assert_allclose(m.mean, exact.mean(0).astype(np.float64), rtol=1e-15)
    np.testing.assert_allclose(m.covariance, reference, rtol=1e-12)


@pytest.mark.parametrize("whiten", [False, True], ids=["per-column", "whiten"])
def test_latent_is_standardised_and_the_map_inverts(whiten):
    rng = np.random.default_rng(1)
    X = rng.multivariate_normal([1e8, -3.0], [[4.0, 1.5], [1.5, 1.0]], size=5000)
    pre = fit_preprocessor(X, whiten=whiten)
    z, ladj = pre.to_latent(torch.from_numpy(X))
    z = z.numpy()
    np.testing.assert_allclose(z.mean(0), 0.0, atol=1e-6)
    cov = np.cov(z.T, bias=True)
    if whiten:
        np.testing.assert_allclose(cov, np.eye(2), atol=1e-6)
    else:
        np.testing.assert_allclose(np.diag(cov), 1.0, atol=1e-6)
    back = pre.from_latent(torch.from_numpy(z)).numpy()
    np.testing.assert_allclose(back, X, rtol=1e-13)
    # the log-Jacobian is minus the log-determinant of the scale
    expected = (
        -np.log(np.linalg.det(np.cov(X.T, bias=True))) / 2 if whiten else -np.log(X.std(0)).sum()
    )
    assert float(ladj[0]) == pytest.approx(expected, rel=1e-9)


def test_fixed_layers_stay_float64_when_the_flow_moves_to_float32():
    pre = fit_preprocessor(1e8 + np.random.default_rng(0).normal(size=(500, 2)))
    pre.to(torch.float32)
    layer = pre.transforms[0]
    assert isinstance(layer, FixedAffine) and layer.loc.dtype == torch.float64
    z, _ = pre.to_latent(torch.tensor([[1e8 + 0.5, 1e8 - 0.5]], dtype=torch.float64))
    assert z.dtype == torch.float64 and abs(float(z[0, 0]) - float(z[0, 1])) > 0.9


def test_box_is_exact_near_the_edges_and_minus_inf_outside():
    box = Box(torch.tensor([0.0, 0.0, -np.inf]), torch.tensor([1.0, np.inf, 2.0]))
    x = torch.tensor(
        [[1e-12, 1e-300, 2.0 - 1e-12], [1 - 1e-12, 5.0, -7.0], [0.5, 1.0, 1.0]],
        dtype=torch.float64,
    )
    z, ladj = box.inv_and_ladj(x)
    assert torch.isfinite(z).all() and torch.isfinite(ladj).all()
    # exact logit / log maps
    assert float(z[0, 0]) == pytest.approx(np.log(1e-12) - np.log1p(-1e-12), rel=1e-12)
    assert float(z[0, 1]) == pytest.approx(np.log(1e-300))
    assert float(z[1, 2]) == pytest.approx(-np.log(9.0))
    # round trip and log-det against autograd
    back, ladj_fwd = box.call_and_ladj(z)
    torch.testing.assert_close(back, x, rtol=1e-10, atol=0)
    torch.testing.assert_close(ladj_fwd, -ladj)
    for row in range(3):
        jac = torch.autograd.functional.jacobian(lambda v: box.inv_and_ladj(v[None])[0][0], x[row])
        assert float(torch.log(torch.diagonal(jac).abs()).sum()) == pytest.approx(
            float(ladj[row]), rel=1e-9
        )
    outside = torch.tensor(
        [[1.5, 1.0, 0.0], [0.5, -1.0, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64
    )
    _, ladj_out = box.inv_and_ladj(outside)
    assert torch.isneginf(ladj_out).all()


def test_draws_reach_the_edges_without_rounding_onto_them():
    box = Box(torch.zeros(1), torch.ones(1))
    x, _ = box.call_and_ladj(torch.tensor([[-30.0], [30.0]], dtype=torch.float64))
    assert 0.0 < float(x[0, 0]) < 1e-12 and 1.0 - 1e-12 < float(x[1, 0]) < 1.0


def test_bad_bounds_and_data_outside_are_named():
    with pytest.raises(ValueError, match="upper bound must exceed"):
        bounds_array((1.0, 0.0), 2)
    with pytest.raises(ValueError, match="pair"):
        bounds_array(3.0, 2)
    with pytest.raises(ValueError, match="row 1, column 0"):
        fit_preprocessor(np.array([[0.5, 0.5], [1.5, 0.5]]), bounds=(0.0, 1.0))
    with pytest.raises(ValueError, match="linearly dependent"):
        x = np.random.default_rng(0).normal(size=(50, 1))
        fit_preprocessor(np.hstack([x, 2 * x]), whiten=True)
