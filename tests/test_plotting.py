"""Plotting: the drawn data must equal the inputs (Agg backend, no display needed)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from scipy import stats

from pyroflows.baselines import GaussianDensity
from pyroflows.diagnostics import cap_curve
from pyroflows.plotting import density_grid, plot_cap, plot_density_2d, plot_loss, plot_samples
from pyroflows.train import History


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _axes():
    return plt.subplots()[1]


# -- plot_density_2d --------------------------------------------------------------------------
def test_density_image_is_exp_log_prob_at_pixel_centres():
    # an asymmetric log-density, so swapped axes or a flipped origin would show
    def log_prob(X):
        return 0.3 * X[:, 0] - 0.7 * X[:, 1] ** 2

    bounds = ((-2.0, 4.0), (1.0, 2.0))
    ax = plot_density_2d(log_prob, bounds, resolution=(6, 4), ax=_axes())
    image = ax.images[0]
    xc = np.array([-1.5, -0.5, 0.5, 1.5, 2.5, 3.5])
    yc = np.array([1.125, 1.375, 1.625, 1.875])
    expected = np.exp(0.3 * xc[None, :] - 0.7 * yc[:, None] ** 2)
    np.testing.assert_allclose(np.asarray(image.get_array()), expected, rtol=1e-12)
    assert image.origin == "lower"
    assert tuple(image.get_extent()) == (-2.0, 4.0, 1.0, 2.0)
    assert ax.get_xlim() == (-2.0, 4.0) and ax.get_ylim() == (1.0, 2.0)


def test_density_image_of_a_gaussian_integrates_to_one():
    X = np.random.default_rng(0).normal([1.0, -1.0], [0.5, 1.0], size=(2000, 2))
    model = GaussianDensity().fit(X)
    bounds = ((-3.0, 5.0), (-7.0, 5.0))
    ax = plot_density_2d(model.score_samples, bounds, resolution=200, ax=_axes())
    density = np.asarray(ax.images[0].get_array())
    x, y, grid = density_grid(model.score_samples, bounds, resolution=200)
    np.testing.assert_array_equal(density, grid)
    gx, gy = np.meshgrid(x, y)
    exact = stats.multivariate_normal(model.mean_, model.covariance_).pdf(np.dstack([gx, gy]))
    np.testing.assert_allclose(density, exact, rtol=1e-9, atol=1e-300)
    pixel_area = (8.0 / 200) * (12.0 / 200)
    assert density.sum() * pixel_area == pytest.approx(1.0, abs=1e-3)


def test_density_accepts_torch_output_and_minus_infinity():
    def log_prob(X):
        out = torch.zeros(len(X), dtype=torch.float64)
        out[torch.as_tensor(X[:, 0] < 0)] = -torch.inf
        return out

    ax = plot_density_2d(log_prob, ((-1, 1), (-1, 1)), resolution=4, ax=_axes())
    expected = np.tile([0.0, 0.0, 1.0, 1.0], (4, 1))
    np.testing.assert_array_equal(np.asarray(ax.images[0].get_array()), expected)


def test_density_passes_imshow_options_and_uses_current_axes():
    fig, ax = plt.subplots()
    out = plot_density_2d(lambda X: np.zeros(len(X)), ((0, 1), (0, 1)), 5, cmap="magma")
    assert out is ax and out.figure is fig
    assert out.images[0].get_cmap().name == "magma"


@pytest.mark.parametrize(
    "log_prob, bounds, match",
    [
        (lambda X: np.full(len(X), np.nan), ((0, 1), (0, 1)), "NaN"),
        (lambda X: np.zeros((len(X), 2)), ((0, 1), (0, 1)), "one value per row"),
        (lambda X: np.zeros(len(X)), ((1, 0), (0, 1)), "min < max"),
    ],
    ids=["nan", "wrong-shape", "empty-bounds"],
)
def test_density_rejects_bad_input(log_prob, bounds, match):
    with pytest.raises(ValueError, match=match):
        plot_density_2d(log_prob, bounds, resolution=3, ax=_axes())


# -- plot_samples -----------------------------------------------------------------------------
def test_samples_offsets_equal_the_points():
    X = np.random.default_rng(1).normal(size=(50, 2))
    ax = plot_samples(torch.as_tensor(X), ax=_axes(), s=10, color="red")
    points = ax.collections[0]
    np.testing.assert_allclose(np.asarray(points.get_offsets()), X)
    assert points.get_sizes().tolist() == [10.0]
    np.testing.assert_allclose(points.get_facecolor()[0, :3], [1.0, 0.0, 0.0])


def test_samples_reject_other_than_two_columns():
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        plot_samples(np.zeros((5, 3)), ax=_axes())


# -- plot_cap ---------------------------------------------------------------------------------
def test_cap_lines_equal_the_curves_and_the_diagonal():
    rng = np.random.default_rng(2)
    scores, counts = rng.normal(size=(10, 10)), rng.poisson(1.0, size=(10, 10))
    curves = {"model": cap_curve(scores, counts), "constant": cap_curve(np.ones(100), counts)}
    ax = plot_cap(curves, ax=_axes())
    assert [line.get_label() for line in ax.lines] == ["model", "constant", "random"]
    for line, (area, events) in zip(ax.lines, curves.values(), strict=False):
        np.testing.assert_array_equal(line.get_xdata(), area)
        np.testing.assert_array_equal(line.get_ydata(), events)
    np.testing.assert_array_equal(ax.lines[2].get_xydata(), [[0.0, 0.0], [1.0, 1.0]])
    assert ax.get_xlim() == (0.0, 1.0) and ax.get_ylim() == (0.0, 1.0)


def test_cap_rejects_curves_of_unequal_length():
    with pytest.raises(ValueError, match="differ in length"):
        plot_cap({"bad": ([0.0, 1.0], [0.0, 0.5, 1.0])}, ax=_axes())


# -- plot_loss --------------------------------------------------------------------------------
def test_loss_lines_equal_the_history():
    history = History(train_loss=[3.0, 2.0, 1.5, 1.2], val_loss=[3.2, 2.5, 2.4, 2.6], best_epoch=2)
    ax = plot_loss(history, ax=_axes())
    train, val, best = ax.lines
    np.testing.assert_array_equal(train.get_xdata(), [1, 2, 3, 4])
    np.testing.assert_array_equal(train.get_ydata(), history.train_loss)
    np.testing.assert_array_equal(val.get_ydata(), history.val_loss)
    assert list(best.get_xdata()) == [3, 3]  # best_epoch is 0-based, the axis counts from 1


def test_loss_without_validation_draws_the_training_curve_only():
    history = History(train_loss=[2.0, 1.0], val_loss=[float("nan")] * 2, best_epoch=-1)
    ax = plot_loss(history, ax=_axes())
    assert [line.get_label() for line in ax.lines] == ["train"]


def test_loss_accepts_a_mapping_and_rejects_an_empty_history():
    ax = plot_loss({"train_loss": [1.0, 0.5]}, ax=_axes())
    np.testing.assert_array_equal(ax.lines[0].get_ydata(), [1.0, 0.5])
    with pytest.raises(ValueError, match="no training loss"):
        plot_loss(History(), ax=_axes())
