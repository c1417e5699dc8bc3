"""Datasets for density estimation: toy distributions with exact densities, and real data that
ships inside installed packages (nothing is downloaded).

Toy distributions (:class:`ToyDistribution`) can both draw samples and evaluate their exact
log-density, so that the divergence ``KL(p || q) = E_p[log p(x) - log q(x)]`` between a toy ``p``
and a learned flow ``q`` can be estimated without bias from samples of ``p``:

* :func:`gaussian_mixture_2d` -- 1 to many isotropic Gaussians on a circle, ``gap`` apart;
* :func:`gaussian_mixture` -- Gaussians in ``dim`` dimensions at the vertices of a regular
  simplex, every pair of means ``gap`` apart;
* :func:`rings` -- concentric rings (exact density, polar Jacobian included);
* :func:`checkerboard` -- uniform on the black squares of a checkerboard (exact density);
* :func:`spiral` -- a Gaussian bar twisted into two spiral arms (exact density: the twist
  preserves area);
* :func:`moons` -- two interleaved half circles with Gaussian noise (samples only).

Real data sets come back as a :class:`Dataset` with a seeded train/validation/test split
(:func:`split`, 70/15/15 by default, stratified when there are labels):
:func:`load_digits`, :func:`load_breast_cancer` (scikit-learn) and :func:`load_airports`
(``vega_datasets``, bundled file). :func:`load` dispatches on a name, toy names included.

A calorimeter-like shower generator (:func:`calo_showers`: incident energy, layer energies,
99 voxels with noise and exact zeros) for two-step conditional generation.

A Pyro model with its data for the variational-inference examples: :func:`eight_schools`;
twenty-five posteriors with reference draws to measure guides on
(:mod:`pyroflows.datasets.posteriors`: posteriordb ports and synthetic targets).

Example:
    >>> from pyroflows import datasets
    >>> p = datasets.gaussian_mixture_2d(2)
    >>> x = p.sample(4, seed=0)
    >>> x.shape, p.log_prob(x).shape
    ((4, 2), (4,))
    >>> data = datasets.load("breast_cancer")
    >>> data.train.shape, data.val.shape, data.test.shape
    ((399, 30), (85, 30), (85, 30))
"""

from pyroflows.datasets import posteriors
from pyroflows.datasets.bumphunt import BumpHunt, BumpHuntGenerator, Events, bump_hunt
from pyroflows.datasets.calo import CaloShowers, calo_showers
from pyroflows.datasets.models import eight_schools
from pyroflows.datasets.tables import (
    Dataset,
    list_datasets,
    load,
    load_airports,
    load_breast_cancer,
    load_digits,
    split,
)
from pyroflows.datasets.toys import (
    Checkerboard,
    GaussianMixture,
    Moons,
    Rings,
    Spiral,
    ToyDistribution,
    checkerboard,
    gaussian_mixture,
    gaussian_mixture_2d,
    moons,
    rings,
    spiral,
    toy,
)

__all__ = [
    "BumpHunt",
    "BumpHuntGenerator",
    "CaloShowers",
    "Events",
    "bump_hunt",
    "Checkerboard",
    "Dataset",
    "GaussianMixture",
    "Moons",
    "Rings",
    "Spiral",
    "ToyDistribution",
    "calo_showers",
    "checkerboard",
    "eight_schools",
    "gaussian_mixture",
    "gaussian_mixture_2d",
    "list_datasets",
    "load",
    "load_airports",
    "load_breast_cancer",
    "load_digits",
    "moons",
    "posteriors",
    "rings",
    "spiral",
    "split",
    "toy",
]
