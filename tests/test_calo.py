"""The calorimeter-like shower generator: seeded, energy conserved up to noise and
suppression, exact zeros (more at low energy), a longitudinal profile that moves deeper with
energy, lateral spread that widens with depth."""

from __future__ import annotations

import numpy as np
import pytest

from pyroflows.datasets import calo_showers


@pytest.fixture(scope="module")
def showers():
    return calo_showers(4000, seed=0)


def test_shapes_and_seeding(showers):
    assert showers.voxels.shape == (4000, 99) and showers.layer_sizes == (25, 49, 25)
    again = calo_showers(50, seed=3)
    assert np.array_equal(again.voxels, calo_showers(50, seed=3).voxels)
    assert not np.array_equal(again.voxels, calo_showers(50, seed=4).voxels)
    e = showers.energy
    assert 1 <= e.min() and e.max() <= 100
    assert abs(np.mean(np.log10(e) < 1) - 0.5) < 0.03  # log-uniform over two decades


def test_energy_is_conserved_up_to_noise_and_zero_suppression(showers):
    assert np.allclose(showers.layer_energies.sum(1), showers.voxels.sum(1))
    lost = np.abs(showers.voxels.sum(1) - showers.deposited.sum(1))
    assert (lost <= 99 * (showers.threshold + 0.01)).all()  # at most every voxel suppressed
    visible = showers.deposited.sum(1) / showers.energy
    assert 0.6 < visible.mean() < 0.95 and (visible < 1.2).all()  # sampling, leakage


def test_exact_zeros_and_sparsity(showers):
    v = showers.voxels
    assert (v >= 0).all() and ((v > 0) & (v < showers.threshold)).sum() == 0
    low, high = showers.energy < 3, showers.energy > 30
    zeros_low, zeros_high = (v[low] == 0).mean(), (v[high] == 0).mean()
    assert 0.2 < (v == 0).mean() < 0.8 and zeros_low > zeros_high + 0.2


def test_longitudinal_profile_moves_deeper_with_energy(showers):
    f = showers.layer_energies / showers.layer_energies.sum(1, keepdims=True)
    low, high = showers.energy < 3, showers.energy > 30
    assert f[low, 0].mean() > f[high, 0].mean() and f[low, 2].mean() < f[high, 2].mean()
    assert (f[high].mean(0).argmax()) == 1  # the middle layer holds the shower maximum


def test_lateral_spread_widens_with_depth(showers):
    def spread(index):
        img = showers.layer(index)[showers.energy > 10]
        side = img.shape[1]
        r2 = ((np.arange(side) - (side - 1) / 2) ** 2)[:, None] + (
            (np.arange(side) - (side - 1) / 2) ** 2
        )[None, :]
        return ((img * r2).sum((1, 2)) / img.sum((1, 2))).mean()

    assert spread(0) < spread(1) < spread(2)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="energy_range"):
        calo_showers(10, energy_range=(10.0, 1.0))
    with pytest.raises(ValueError, match="hit_energy"):
        calo_showers(10, hit_energy=0.0)
