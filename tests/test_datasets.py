"""Tests of pyroflows.datasets: exact toy densities against numerical answers, and loaders."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.integrate
import scipy.stats
import torch
from scipy.special import logsumexp

from pyroflows import datasets as ds

MIXTURE_SIZES = [1, 2, 4, 7, 10]


def _grid(lo: float, hi: float, h: float) -> tuple[np.ndarray, float]:
    """Cell centres of a square grid on [lo, hi]^2 with spacing h (midpoint rule)."""
    c = np.arange(lo + h / 2, hi, h)
    xx, yy = np.meshgrid(c, c, indexing="ij")
    return np.stack([xx.ravel(), yy.ravel()], axis=-1), h * h


def _quadrature(p: ds.ToyDistribution, lo: float, hi: float, h: float):
    """Mass, mean and covariance of exp(p.log_prob) by the midpoint rule."""
    x, area = _grid(lo, hi, h)
    w = np.exp(p.log_prob(torch.from_numpy(x)).numpy()) * area
    mass = w.sum()
    mean = w @ x / mass
    cov = (x - mean).T @ ((x - mean) * w[:, None]) / mass
    return mass, mean, cov


def _extent(p: ds.GaussianMixture) -> float:
    return float(np.abs(p.means).max() + 8 * p.scales.max())


# ---------------------------------------------------------------------------- toy densities


@pytest.mark.parametrize("k", MIXTURE_SIZES, ids=lambda k: f"K={k}")
def test_mixture_2d_integrates_to_one_with_analytic_moments(k):
    p = ds.gaussian_mixture_2d(k)
    r = _extent(p)
    mass, mean, cov = _quadrature(p, -r, r, 0.05)
    assert mass == pytest.approx(1.0, abs=1e-3)
    np.testing.assert_allclose(mean, p.mean, atol=1e-6)
    np.testing.assert_allclose(cov, p.covariance, atol=1e-4, rtol=1e-5)


def test_mixture_2d_moments_by_hand():
    # Two components: mean 0, covariance I + 2.5^2 [[1, 1], [1, 1]].
    p = ds.gaussian_mixture_2d(2)
    np.testing.assert_allclose(p.mean, [0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(p.covariance, np.eye(2) + 6.25 * np.ones((2, 2)), atol=1e-12)


@pytest.mark.parametrize("k", MIXTURE_SIZES, ids=lambda k: f"K={k}")
def test_mixture_2d_samples_match_analytic_moments(k):
    p = ds.gaussian_mixture_2d(k, gap=4.0, scale=0.7)
    n = 200_000
    x = p.sample(n, seed=1)
    se = np.sqrt(np.diag(p.covariance) / n)
    np.testing.assert_allclose(x.mean(0), p.mean, atol=5 * float(se.max()))
    np.testing.assert_allclose(np.cov(x.T), p.covariance, atol=0.03 * p.covariance.max())


def test_two_component_mixture_is_the_specified_one():
    p = ds.gaussian_mixture_2d(2)
    order = np.argsort(p.means[:, 0])
    np.testing.assert_allclose(p.means[order], [[-2.5, -2.5], [2.5, 2.5]], atol=1e-12)
    np.testing.assert_allclose(p.weights, [0.5, 0.5])
    x = np.array([[0.3, -1.2], [4.0, 2.0]])
    expected = np.log(
        0.5 * scipy.stats.multivariate_normal([-2.5, -2.5], np.eye(2)).pdf(x)
        + 0.5 * scipy.stats.multivariate_normal([2.5, 2.5], np.eye(2)).pdf(x)
    )
    np.testing.assert_allclose(p.log_prob(x), expected, rtol=1e-12)


@pytest.mark.parametrize("k", [2, 4, 7, 10], ids=lambda k: f"K={k}")
@pytest.mark.parametrize("gap", [1.0, 3.0, 8.0])
def test_mixture_2d_gap_is_neighbour_distance(k, gap):
    means = ds.gaussian_mixture_2d(k, gap=gap).means
    d = np.linalg.norm(means[:, None] - means[None], axis=-1)
    d[np.diag_indices(k)] = np.inf
    np.testing.assert_allclose(d.min(1), gap, rtol=1e-12)


@pytest.mark.parametrize("k", [1, 2, 5, 11], ids=lambda k: f"K={k}")
def test_mixture_10d_matches_scipy(k):
    p = ds.gaussian_mixture(dim=10, n_components=k, gap=3.0, scale=1.3)
    x = p.sample(50, seed=2) + np.random.default_rng(3).normal(scale=2.0, size=(50, 10))
    comps = [scipy.stats.multivariate_normal(m, 1.3**2 * np.eye(10)).logpdf(x) for m in p.means]
    expected = logsumexp(np.stack(comps), axis=0) - np.log(k)
    np.testing.assert_allclose(p.log_prob(x), expected, rtol=1e-10)


@pytest.mark.parametrize("gap", [0.5, 5.0])
def test_mixture_10d_means_are_gap_apart_and_centred(gap):
    p = ds.gaussian_mixture(dim=10, n_components=11, gap=gap)
    d = np.linalg.norm(p.means[:, None] - p.means[None], axis=-1)
    off = ~np.eye(11, dtype=bool)
    np.testing.assert_allclose(d[off], gap, rtol=1e-12)
    np.testing.assert_allclose(p.mean, 0.0, atol=1e-12)


def test_mixture_10d_samples_match_analytic_moments():
    p = ds.gaussian_mixture(dim=10, n_components=6, gap=4.0)
    x = p.sample(100_000, seed=0)
    np.testing.assert_allclose(x.mean(0), p.mean, atol=0.05)
    np.testing.assert_allclose(np.cov(x.T), p.covariance, atol=0.1)


def test_mixture_10d_rejects_too_many_components():
    with pytest.raises(ValueError, match="n_components"):
        ds.gaussian_mixture(dim=3, n_components=5)


@pytest.mark.parametrize("radii", [(1.0, 2.0, 3.0), (0.4,)], ids=["three", "small"])
def test_rings_integrate_to_one(radii):
    p = ds.Rings(radii=radii, width=0.1)
    r = max(radii) + 1.0
    mass, mean, _ = _quadrature(p, -r, r, 0.01)
    assert mass == pytest.approx(1.0, abs=1e-3)
    np.testing.assert_allclose(mean, 0.0, atol=1e-6)


def test_rings_radial_mass_matches_samples():
    # P(|x| < 1.5) is the mass of the inner ring: density and samples must agree on it.
    p = ds.rings(3)
    x, area = _grid(-1.6, 1.6, 0.005)
    inner = np.linalg.norm(x, axis=1) < 1.5
    exact = (np.exp(p.log_prob(x[inner])) * area).sum()
    assert exact == pytest.approx(1.0 / 6.0, abs=1e-3)  # weights proportional to radii 1:2:3
    s = p.sample(60_000, seed=4)
    frac = np.mean(np.linalg.norm(s, axis=1) < 1.5)
    assert frac == pytest.approx(exact, abs=4 * math.sqrt(exact * (1 - exact) / len(s)))


@pytest.mark.parametrize(
    "radius, width, rho", [(2.0, 0.3, 2.4), (0.3, 0.5, 0.2)], ids=["thin", "wide"]
)
def test_rings_density_value_by_hand(radius, width, rho):
    p = ds.Rings(radii=(radius,), width=width)
    x = np.array([[rho / math.sqrt(2), rho / math.sqrt(2)]])
    radial = scipy.stats.norm(radius, width).pdf([rho, -rho]).sum()
    np.testing.assert_allclose(p.prob(x), radial / (2 * math.pi * rho), rtol=1e-12)


def test_wide_ring_integrates_to_one_in_polar_coordinates():
    # Radius N(0.3, 0.5^2) is often negative: the mass reflected through the origin must count.
    p = ds.Rings(radii=(0.3,), width=0.5)
    angle = 0.7

    def radial(rho):
        return 2 * math.pi * rho * float(p.prob(rho * np.array([math.cos(angle), math.sin(angle)])))

    mass, _ = scipy.integrate.quad(radial, 0.0, 10.0)
    assert mass == pytest.approx(1.0, abs=1e-6)


def test_checkerboard_integrates_to_one_and_is_zero_on_white():
    p = ds.checkerboard()
    x, area = _grid(-5.0, 5.0, 0.05)
    dens = np.exp(p.log_prob(x))
    assert (dens * area).sum() == pytest.approx(1.0, abs=1e-3)
    cell = np.floor((x + 4.0) / 2.0)
    on_board = ((cell >= 0) & (cell < 4)).all(1)
    black = on_board & (cell.sum(1) % 2 == 1)
    np.testing.assert_array_equal(dens[~black], 0.0)
    np.testing.assert_allclose(dens[black], 1.0 / 32.0)


def test_checkerboard_samples_cover_black_squares_evenly():
    p = ds.checkerboard()
    x = p.sample(16_000, seed=5)
    assert np.isfinite(p.log_prob(x)).all()
    cell = np.floor((x + 4.0) / 2.0).astype(int)
    counts = np.zeros((4, 4))
    np.add.at(counts, (cell[:, 0], cell[:, 1]), 1)
    assert counts[(np.indices((4, 4)).sum(0) % 2) == 0].sum() == 0
    black_counts = counts[(np.indices((4, 4)).sum(0) % 2) == 1]
    assert scipy.stats.chisquare(black_counts).pvalue > 1e-3


def test_spiral_integrates_to_one():
    # The twist preserves area, so the twisted bar keeps the bar's unit mass.
    p = ds.spiral()
    mass, mean, _ = _quadrature(p, -9.0, 9.0, 0.02)
    assert mass == pytest.approx(1.0, abs=1e-3)
    np.testing.assert_allclose(mean, 0.0, atol=1e-6)  # symmetric under x -> -x


@pytest.mark.parametrize("rho", [0.0, 0.7, 2.5])
def test_spiral_density_value_by_hand(rho):
    # The point at radius rho on the bar's axis, turned by twist * rho, has the bar's density.
    p = ds.Spiral(length=2.0, width=0.3, twist=1.3)
    a = 1.3 * rho
    x = np.array([[rho * math.cos(a), rho * math.sin(a)], [-rho * math.cos(a), -rho * math.sin(a)]])
    bar = scipy.stats.multivariate_normal([0.0, 0.0], np.diag([4.0, 0.09]))
    np.testing.assert_allclose(p.prob(x), bar.pdf([[rho, 0.0], [-rho, 0.0]]), rtol=1e-12)


def test_spiral_samples_match_density():
    # Cell probabilities on a polar grid (radius x angle) by quadrature against sample counts.
    p = ds.spiral()
    edges_r = np.array([0.0, 0.5, 1.0, 1.5, 2.5, 4.0, np.inf])
    x, area = _grid(-9.0, 9.0, 0.01)
    cells = _polar_cells(x, edges_r)
    probs = np.bincount(cells, weights=np.exp(p.log_prob(x)) * area, minlength=6 * 8)
    assert probs.sum() == pytest.approx(1.0, abs=1e-3)
    s = p.sample(50_000, seed=6)
    counts = np.bincount(_polar_cells(s, edges_r), minlength=6 * 8)
    expected = probs / probs.sum() * len(s)
    keep = expected > 5
    assert keep.sum() > 30 and expected[~keep].sum() < 20
    assert (
        scipy.stats.chisquare(
            counts[keep], expected[keep] * counts[keep].sum() / expected[keep].sum()
        ).pvalue
        > 1e-3
    )


def _polar_cells(x: np.ndarray, edges_r: np.ndarray, n_angles: int = 8) -> np.ndarray:
    ring = np.searchsorted(edges_r, np.linalg.norm(x, axis=1), side="right") - 1
    angle = np.floor((np.arctan2(x[:, 1], x[:, 0]) + math.pi) / (2 * math.pi) * n_angles)
    return ring * n_angles + np.minimum(angle, n_angles - 1).astype(int)


def test_moons_samples_but_has_no_density():
    p = ds.moons()
    x = p.sample(2000, seed=0)
    assert x.shape == (2000, 2) and not p.has_density
    assert x[:, 0].min() > -1.6 and x[:, 0].max() < 2.6
    with pytest.raises(NotImplementedError):
        p.log_prob(x)


# ---------------------------------------------------------------------------- toy interface

TOYS = {
    "mixture_2d": lambda: ds.gaussian_mixture_2d(4),
    "mixture_10d": lambda: ds.gaussian_mixture(10, 3),
    "rings": ds.rings,
    "checkerboard": ds.checkerboard,
    "spiral": ds.spiral,
    "moons": ds.moons,
}


@pytest.mark.parametrize("make", TOYS.values(), ids=TOYS.keys())
def test_toy_sampling_is_seeded(make):
    p = make()
    a, b, c = p.sample(100, seed=7), p.sample(100, seed=7), p.sample(100, seed=8)
    assert a.shape == (100, p.dim) and a.dtype == np.float64
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


DENSITIES = {k: v for k, v in TOYS.items() if k != "moons"}


@pytest.mark.parametrize("make", DENSITIES.values(), ids=DENSITIES.keys())
def test_toy_log_prob_numpy_and_tensor_agree(make):
    p = make()
    x = p.sample(64, seed=0)
    lp_np = p.log_prob(x)
    lp64 = p.log_prob(torch.from_numpy(x))
    lp32 = p.log_prob(torch.from_numpy(x).float())
    assert isinstance(lp_np, np.ndarray) and lp_np.shape == (64,)
    assert lp64.dtype == torch.float64 and lp32.dtype == torch.float32
    np.testing.assert_allclose(lp64.numpy(), lp_np, rtol=1e-12)
    np.testing.assert_allclose(lp32.numpy(), lp_np, rtol=1e-4)
    assert p.log_prob(x.reshape(8, 8, p.dim)).shape == (8, 8)
    with pytest.raises(ValueError):
        p.log_prob(np.zeros((3, p.dim + 1)))


def test_mixture_log_prob_is_differentiable():
    p = ds.gaussian_mixture_2d(1, scale=2.0)
    x = torch.tensor([[1.0, -3.0]], dtype=torch.float64, requires_grad=True)
    p.log_prob(x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [[-0.25, 0.75]])  # -x / scale^2


def test_toy_registry():
    assert ds.toy("rings", n_rings=2).radii.tolist() == [1.0, 2.0]
    assert ds.toy("spiral", twist=0.5).twist == 0.5
    with pytest.raises(ValueError, match="unknown toy"):
        ds.toy("spirals")


# ---------------------------------------------------------------------------- splits


def _assert_partition(data: ds.Dataset, full: np.ndarray) -> None:
    """The three splits together are exactly the rows of ``full`` (as a multiset)."""
    joined = np.concatenate([data.train, data.val, data.test])

    def rows(a):
        return a[np.lexsort(a.T[::-1])]

    np.testing.assert_array_equal(rows(joined), rows(np.asarray(full, dtype=np.float64)))


@pytest.mark.parametrize("n", [20, 101, 1000])
def test_split_is_disjoint_complete_and_proportioned(n):
    tr, va, te = ds.split(np.zeros(n), seed=3)
    all_idx = np.concatenate([tr, va, te])
    assert len(all_idx) == n and len(np.unique(all_idx)) == n
    assert len(va) == round(0.15 * n) and len(te) == round(0.15 * n)
    assert abs(len(tr) - 0.7 * n) <= 1


def test_split_is_seeded():
    a = ds.split(np.zeros(50), seed=1)
    b = ds.split(np.zeros(50), seed=1)
    c = ds.split(np.zeros(50), seed=2)
    for u, v in zip(a, b, strict=True):
        np.testing.assert_array_equal(u, v)
    assert not np.array_equal(a[0], c[0])


def test_split_custom_fractions_and_validation():
    tr, va, te = ds.split(np.zeros(100), fractions=(0.5, 0.2, 0.3))
    assert (len(tr), len(va), len(te)) == (50, 20, 30)
    with pytest.raises(ValueError):
        ds.split(np.zeros(10), fractions=(0.5, 0.5, 0.5))


def test_split_is_stratified():
    y = np.repeat([0, 1, 2], [600, 300, 100])
    for idx in ds.split(np.zeros(1000), y, seed=0):
        props = np.bincount(y[idx], minlength=3) / len(idx)
        np.testing.assert_allclose(props, [0.6, 0.3, 0.1], atol=1.5 / len(idx))


# ---------------------------------------------------------------------------- real data


def test_digits_shapes_labels_and_partition():
    from sklearn.datasets import load_digits

    d = ds.load("digits")
    assert (d.train.shape, d.val.shape, d.test.shape) == ((1257, 64), (270, 64), (270, 64))
    assert d.train.dtype == np.float64 and len(d.feature_names) == 64
    _assert_partition(d, load_digits().data)
    for x, y in [(d.train, d.y_train), (d.val, d.y_val), (d.test, d.y_test)]:
        assert len(x) == len(y)
        np.testing.assert_allclose(np.bincount(y, minlength=10) / len(y), 0.1, atol=0.02)


def test_digits_drop_constant_and_dequantize():
    plain = ds.load_digits(seed=1)
    d = ds.load_digits(seed=1, drop_constant=True, dequantize=True)
    keep = plain.train.max(0) > plain.train.min(0)
    assert not keep.all() and "pixel_0_0" not in d.feature_names
    assert d.dim == keep.sum() == len(d.feature_names)
    np.testing.assert_array_equal(np.floor(d.train), plain.train[:, keep])
    np.testing.assert_array_equal(np.floor(d.test), plain.test[:, keep])
    assert (d.train != np.floor(d.train)).all()  # continuous: no value left on the integers
    np.testing.assert_array_equal(d.train, ds.load_digits(1, True, True).train)


def test_breast_cancer_is_stratified_and_labelled():
    from sklearn.datasets import load_breast_cancer

    d = ds.load("breast_cancer", seed=4)
    assert (d.train.shape, d.val.shape, d.test.shape) == ((399, 30), (85, 30), (85, 30))
    assert int(np.sum([(y == 0).sum() for y in (d.y_train, d.y_val, d.y_test)])) == 212
    for y in (d.y_train, d.y_val, d.y_test):
        assert abs(y.mean() - 357 / 569) < 1.5 / len(y)
    _assert_partition(d, load_breast_cancer().data)


def test_airports_load_from_bundled_file():
    from vega_datasets import data

    assert data.airports.is_local
    d = ds.load("airports")
    assert d.feature_names == ("longitude", "latitude")
    assert len(d.train) + len(d.val) + len(d.test) == 3376 and d.y_train is None
    assert (np.abs(d.train) <= [180.0, 90.0]).all()
    _assert_partition(d, data.airports()[["longitude", "latitude"]].to_numpy())
    conus = ds.load_airports(contiguous_us=True)
    assert 3000 < len(conus.train) + len(conus.val) + len(conus.test) < 3376
    assert conus.test[:, 0].min() >= -125 and conus.test[:, 1].max() <= 50


def test_real_loaders_are_seeded():
    a, b, c = (
        ds.load("breast_cancer", seed=0),
        ds.load("breast_cancer", seed=0),
        ds.load("breast_cancer", seed=1),
    )
    np.testing.assert_array_equal(a.train, b.train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert not np.array_equal(a.train, c.train)


def test_standardized_round_trips():
    d = ds.load("breast_cancer")
    s = d.standardized()
    np.testing.assert_allclose(s.train.mean(0), 0.0, atol=1e-10)
    np.testing.assert_allclose(s.train.std(0), 1.0)
    np.testing.assert_allclose(s.test * s.scale + s.loc, d.test, rtol=1e-12, atol=1e-12)
    s2 = s.standardized()
    np.testing.assert_allclose(s2.val * s2.scale + s2.loc, d.val, rtol=1e-12, atol=1e-12)


def test_load_toy_dataset_keeps_distribution():
    d = ds.load("mixture_2d", seed=3, n=2000, n_components=7, gap=3.0)
    assert d.name == "mixture_2d-7" and d.distribution.n_components == 7
    assert (d.train.shape, d.val.shape, d.test.shape) == ((1400, 2), (300, 2), (300, 2))
    _assert_partition(d, d.distribution.sample(2000, seed=3))
    again = ds.load("mixture_2d", seed=3, n=2000, n_components=7, gap=3.0)
    np.testing.assert_array_equal(d.val, again.val)


def test_load_lists_and_rejects_names():
    names = ds.list_datasets()
    assert {"digits", "breast_cancer", "airports", "rings", "moons"} <= set(names)
    with pytest.raises(ValueError, match="unknown data set"):
        ds.load("mnist")
