"""A calorimeter-like shower generator (a toy of our own: nothing is downloaded).

An electromagnetic shower of incident energy ``E`` (log-uniform over two decades) deposits
energy in three sampling layers, each a square grid of voxels (5x5, 7x7 and 5x5: 99 voxels):

* **Longitudinal profile.** The energy deposited per radiation length follows the gamma
  profile ``dE/dt ~ t^(a-1) exp(-b t)`` (Longo & Sestili), ``b = 0.5``, with the shower
  maximum ``t_max = ln(E / E_c) + 0.5`` (``E_c`` the critical energy) jittered from shower to
  shower; layer ``l`` collects the profile between its depth boundaries (0-3, 3-12, 12-25
  radiation lengths), the rest leaks out of the back. A sampling fraction with a stochastic
  resolution ``10 % / sqrt(E)`` scales the visible energy.
* **Lateral spread.** Within each layer the energy is spread around a jittered shower axis by a
  core plus halo of Gaussians whose width grows with depth, and is then carried by discrete
  "hits" (Poisson in the layer energy), so each voxel fluctuates.
* **Noise and zero suppression.** Every voxel gets Gaussian electronics noise; voxels below the
  threshold are set to exactly 0 (so exact zeros and sparsity, more at low energy, are part of
  the problem).

Example:
    >>> from pyroflows.datasets import calo_showers
    >>> s = calo_showers(100, seed=0)
    >>> s.energy.shape, s.layer_energies.shape, s.voxels.shape
    ((100,), (100, 3), (100, 99))
    >>> bool((s.voxels == 0).any()), bool((s.voxels >= 0).all())
    (True, True)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import gammainc
from scipy.stats import norm

from pyroflows.validation import positive_int

__all__ = ["CaloShowers", "calo_showers"]

LAYER_SIDES = (5, 7, 5)  # voxels per side of each layer's square grid
LAYER_DEPTHS = (0.0, 3.0, 12.0, 25.0)  # layer boundaries in radiation lengths
LAYER_WIDTHS = (0.35, 0.6, 0.9)  # core width of the lateral profile, in voxel units


@dataclass(frozen=True)
class CaloShowers:
    """Showers from :func:`calo_showers`.

    Attributes:
        energy: incident energies (GeV), ``(n,)``.
        layer_energies: the sum of each layer's voxels (GeV), ``(n, 3)``.
        voxels: voxel energies (GeV) after noise and zero suppression, ``(n, 99)``: layer 0's
            5x5 grid, then layer 1's 7x7, then layer 2's 5x5, each row-major.
        deposited: visible energy per layer before noise and suppression, ``(n, 3)``.
        layer_sizes: voxels per layer, ``(25, 49, 25)``.
        threshold: the zero-suppression threshold (GeV).
    """

    energy: np.ndarray
    layer_energies: np.ndarray
    voxels: np.ndarray
    deposited: np.ndarray
    layer_sizes: tuple[int, ...]
    threshold: float

    def layer(self, index: int) -> np.ndarray:
        """The voxels of one layer as images, ``(n, side, side)``."""
        start = sum(self.layer_sizes[:index])
        side = LAYER_SIDES[index]
        return self.voxels[:, start : start + side * side].reshape(-1, side, side)


def _cell_fractions(centre: np.ndarray, side: int, width: float) -> np.ndarray:
    """Expected fraction of a layer's energy in each voxel: a core Gaussian (80 %) and a halo
    three times wider (20 %), integrated over the cells; ``centre`` is ``(n, 2)`` in voxels."""
    edges = np.arange(side + 1) - side / 2  # cell edges, the grid centred on 0

    def along(c: np.ndarray, w: float) -> np.ndarray:  # (n, side) mass per column
        return np.diff(norm.cdf((edges[None, :] - c[:, None]) / w), axis=1)

    frac = 0.0
    for share, w in ((0.8, width), (0.2, 3 * width)):
        frac = frac + share * np.einsum(
            "ni,nj->nij", along(centre[:, 0], w), along(centre[:, 1], w)
        )
    return frac.reshape(len(centre), side * side)


def calo_showers(
    n: int,
    seed: int | np.random.Generator | None = 0,
    energy_range: tuple[float, float] = (1.0, 100.0),
    noise: float = 0.002,
    threshold: float = 0.01,
    hit_energy: float = 0.01,
) -> CaloShowers:
    """Draw ``n`` calorimeter-like showers (see the module docstring for the physics).

    Args:
        n: number of showers.
        seed: seed or generator (the same seed gives the same showers).
        energy_range: incident energies are log-uniform on this range (GeV).
        noise: standard deviation of the per-voxel electronics noise (GeV).
        threshold: voxels below it are set to exactly 0 (GeV).
        hit_energy: mean energy carried by one hit (GeV): smaller means smoother showers.

    Returns:
        A :class:`CaloShowers`.
    """
    n = positive_int("n", n)
    lo, hi = energy_range
    if not (0 < lo < hi and np.isfinite(hi)):
        raise ValueError(f"energy_range must satisfy 0 < low < high < inf, got {energy_range}")
    if not (np.isfinite([noise, threshold, hit_energy]).all() and noise >= 0
            and threshold >= 0 and hit_energy > 0):  # fmt: skip
        raise ValueError(
            "noise and threshold must be finite and >= 0, hit_energy finite and > 0; got "
            f"noise={noise!r}, threshold={threshold!r}, hit_energy={hit_energy!r}"
        )
    rng = np.random.default_rng(seed)
    energy = np.exp(rng.uniform(np.log(lo), np.log(hi), n))

    # longitudinal: gamma profile with a jittered shower maximum, integrated over each layer
    b, critical = 0.5, 0.02
    t_max = np.log(energy / critical) + 0.5 + rng.normal(0, 0.4, n)
    a = b * np.clip(t_max, 0.5, None) + 1
    cdf = gammainc(a[:, None], b * np.asarray(LAYER_DEPTHS)[None, :])
    fractions = np.diff(cdf, axis=1)  # (n, 3); 1 - sum leaks out of the back
    sampling = 0.9 * (1 + rng.normal(0, 0.1, n) / np.sqrt(energy))
    deposited = np.clip(energy * sampling, 0, None)[:, None] * fractions

    # lateral: hits drawn from the cell fractions around a jittered axis
    axis = rng.normal(0, 0.25, (n, 2))
    tilt = rng.normal(0, 0.1, (n, 2))  # the axis drifts with depth
    layers = []
    for index, side in enumerate(LAYER_SIDES):
        centre = axis + tilt * (index + 0.5) * 3
        probs = _cell_fractions(centre, side, LAYER_WIDTHS[index])
        contained = probs.sum(1, keepdims=True)  # the rest falls outside the grid
        hits = rng.poisson(np.maximum(deposited[:, index] * contained[:, 0] / hit_energy, 0))
        counts = rng.multinomial(hits, probs / contained)
        per_hit = np.divide(deposited[:, index] * contained[:, 0], hits, where=hits > 0,
                            out=np.zeros(n))  # fmt: skip
        layers.append(counts * per_hit[:, None])
    voxels = np.concatenate(layers, axis=1)
    deposited_in_grid = np.stack([v.sum(1) for v in layers], axis=1)
    voxels = voxels + rng.normal(0, noise, voxels.shape)
    voxels[voxels < threshold] = 0.0
    sizes = tuple(side * side for side in LAYER_SIDES)
    bounds = np.cumsum((0,) + sizes)
    layer_energies = np.stack(
        [voxels[:, bounds[i] : bounds[i + 1]].sum(1) for i in range(len(sizes))], axis=1
    )
    return CaloShowers(energy, layer_energies, voxels, deposited_in_grid, sizes, float(threshold))
