"""Toy distributions with exact log-densities (and moons, samples only): the KL of a fitted
flow to them is estimated without bias from their own samples."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor

ArrayOrTensor = TypeVar("ArrayOrTensor", np.ndarray, Tensor)

_LOG_2PI = math.log(2.0 * math.pi)
#: Default distance between neighbouring means of the 2-D mixtures: with two components the
#: means are then exactly ``(-2.5, -2.5)`` and ``(2.5, 2.5)``.
DEFAULT_GAP_2D = 5.0 * math.sqrt(2.0)


# --------------------------------------------------------------------------------------------
# Toy distributions
# --------------------------------------------------------------------------------------------


class ToyDistribution(ABC):
    """A distribution on ``R^dim`` that draws seeded samples and (when it can) scores points.

    Subclasses implement :meth:`_sample` (numpy) and, when the density is tractable,
    :meth:`_log_prob` (torch, so that gradients flow and float32 or float64 both work).
    :meth:`log_prob` accepts numpy arrays or tensors and answers in the same kind.

    Attributes:
        name: Short identifier, e.g. ``"mixture_2d-4"``.
        dim: Dimension of a sample.
        has_density: Whether :meth:`log_prob` is exact and implemented.

    Example:
        >>> p = checkerboard()
        >>> p.dim, p.has_density
        (2, True)
        >>> p.log_prob(np.array([[-3.0, 3.0], [-1.0, 3.0]])).round(4)  # black, then white square
        array([-3.4657,    -inf])
    """

    name: str
    dim: int
    has_density: bool = True

    def sample(self, n: int, seed: int | np.random.Generator | None = None) -> np.ndarray:
        """Draw ``n`` independent samples.

        Args:
            n: Number of samples.
            seed: Seed or ``numpy.random.Generator``; the same seed gives the same samples.

        Returns:
            Array of shape ``(n, dim)``, float64.

        Example:
            >>> p = gaussian_mixture_2d(4)
            >>> bool((p.sample(3, seed=1) == p.sample(3, seed=1)).all())
            True
        """
        rng = np.random.default_rng(seed)
        x = self._sample(int(n), rng)
        return np.asarray(x, dtype=np.float64).reshape(int(n), self.dim)

    def log_prob(self, x: ArrayOrTensor) -> ArrayOrTensor:
        """Exact log-density at the rows of ``x``.

        Args:
            x: Points of shape ``(..., dim)``: a numpy array (computed in float64) or a tensor
                (computed in its own dtype and device, differentiable).

        Returns:
            Log-densities of shape ``x.shape[:-1]``, of the same kind as ``x``; ``-inf``
            outside the support.

        Raises:
            NotImplementedError: If the distribution has no tractable density.
            ValueError: If the last dimension of ``x`` is not ``dim``.

        Example:
            >>> p = gaussian_mixture_2d(1)
            >>> p.log_prob(torch.zeros(1, 2, dtype=torch.float64))
            tensor([-1.8379], dtype=torch.float64)
        """
        if isinstance(x, Tensor):
            self._check_dim(x.shape)
            return self._log_prob(x)
        arr = np.asarray(x, dtype=np.float64)
        self._check_dim(arr.shape)
        return self._log_prob(torch.from_numpy(arr)).numpy()

    def prob(self, x: ArrayOrTensor) -> ArrayOrTensor:
        """Density ``exp(log_prob(x))``.

        Args:
            x: Points of shape ``(..., dim)``, numpy array or tensor.

        Returns:
            Densities of shape ``x.shape[:-1]``, of the same kind as ``x``.

        Example:
            >>> float(checkerboard().prob(np.array([-3.0, 3.0])))
            0.03125
        """
        lp = self.log_prob(x)
        return lp.exp() if isinstance(lp, Tensor) else np.exp(lp)

    def _check_dim(self, shape: Sequence[int]) -> None:
        if len(shape) == 0 or shape[-1] != self.dim:
            raise ValueError(f"{self.name}: expected points of size {self.dim}, got {tuple(shape)}")

    @abstractmethod
    def _sample(self, n: int, rng: np.random.Generator) -> np.ndarray: ...

    def _log_prob(self, x: Tensor) -> Tensor:
        raise NotImplementedError(f"{self.name} has no tractable density")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, dim={self.dim})"


class GaussianMixture(ToyDistribution):
    """Mixture of isotropic Gaussians ``sum_k w_k N(means[k], scales[k]^2 I)``.

    Args:
        means: Component means, shape ``(K, D)``.
        scales: Component standard deviations, a scalar or shape ``(K,)``.
        weights: Mixture weights, shape ``(K,)``, normalised here; equal when ``None``.
        name: Identifier.

    Attributes:
        means, scales, weights: The parameters as float64 arrays.
        mean: Analytic mean of the mixture, shape ``(D,)``.
        covariance: Analytic covariance of the mixture, shape ``(D, D)``.

    Example:
        >>> p = GaussianMixture([[0.0, 0.0], [2.0, 0.0]], scales=1.0)
        >>> p.mean
        array([1., 0.])
        >>> p.covariance
        array([[2., 0.],
               [0., 1.]])
    """

    def __init__(
        self,
        means: Sequence[Sequence[float]] | np.ndarray,
        scales: float | Sequence[float] | np.ndarray = 1.0,
        weights: Sequence[float] | np.ndarray | None = None,
        name: str = "gaussian_mixture",
    ):
        self.means = np.atleast_2d(np.asarray(means, dtype=np.float64))
        k, self.dim = self.means.shape
        self.scales = np.broadcast_to(np.asarray(scales, dtype=np.float64), (k,)).copy()
        w = np.ones(k) if weights is None else np.asarray(weights, dtype=np.float64)
        if w.shape != (k,) or (w < 0).any() or (self.scales <= 0).any():
            raise ValueError("need K non-negative weights and K positive scales")
        self.weights = w / w.sum()
        self.name = name

    @property
    def n_components(self) -> int:
        """Number of components ``K``."""
        return len(self.weights)

    @property
    def mean(self) -> np.ndarray:
        """Analytic mean ``sum_k w_k mu_k``."""
        return self.weights @ self.means

    @property
    def covariance(self) -> np.ndarray:
        """Analytic covariance ``sum_k w_k (s_k^2 I + mu_k mu_k^T) - mean mean^T``."""
        second = np.einsum("k,ki,kj->ij", self.weights, self.means, self.means)
        second += np.eye(self.dim) * (self.weights @ self.scales**2)
        return second - np.outer(self.mean, self.mean)

    def _sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        k = rng.choice(self.n_components, size=n, p=self.weights)
        eps = rng.standard_normal((n, self.dim))
        return self.means[k] + self.scales[k, None] * eps

    def _log_prob(self, x: Tensor) -> Tensor:
        means = torch.as_tensor(self.means, dtype=x.dtype, device=x.device)
        scales = torch.as_tensor(self.scales, dtype=x.dtype, device=x.device)
        log_w = torch.as_tensor(np.log(self.weights), dtype=x.dtype, device=x.device)
        sq = (x.unsqueeze(-2) - means).square().sum(-1)  # (..., K)
        log_norm = -0.5 * sq / scales.square() - self.dim * (scales.log() + 0.5 * _LOG_2PI)
        return torch.logsumexp(log_w + log_norm, dim=-1)


def gaussian_mixture_2d(
    n_components: int = 2, gap: float = DEFAULT_GAP_2D, scale: float = 1.0
) -> GaussianMixture:
    """Equal-weight mixture of ``n_components`` isotropic 2-D Gaussians on a circle.

    The means sit on a circle centred at the origin at angles ``pi/4 + 2 pi k / K``, with a
    distance ``gap`` between neighbouring means (the radius is ``gap / (2 sin(pi / K))``).
    With the default gap ``5 sqrt(2)`` the two-component mixture is exactly
    ``N((-2.5, -2.5), I)`` and ``N((2.5, 2.5), I)``, and the four-component one has its means at
    ``(+-3.54, +-3.54)``. A single component is ``N(0, scale^2 I)`` (``gap`` is ignored). The
    separation in standard deviations, ``gap / scale``, is what makes modes hard to fit.

    Args:
        n_components: Number of components ``K >= 1`` (e.g. 1, 2, 4, 7, 10).
        gap: Euclidean distance between neighbouring means.
        scale: Standard deviation of every component.

    Returns:
        A :class:`GaussianMixture` named ``"mixture_2d-K"``.

    Example:
        >>> gaussian_mixture_2d(2).means.round(6)
        array([[ 2.5,  2.5],
               [-2.5, -2.5]])
        >>> p = gaussian_mixture_2d(7, gap=3.0)
        >>> float(np.linalg.norm(p.means[1] - p.means[0]))
        3.0
    """
    if n_components < 1:
        raise ValueError("n_components must be >= 1")
    if n_components == 1:
        means = np.zeros((1, 2))
    else:
        radius = gap / (2.0 * math.sin(math.pi / n_components))
        angles = math.pi / 4 + 2 * math.pi * np.arange(n_components) / n_components
        means = radius * np.stack([np.cos(angles), np.sin(angles)], axis=-1)
    return GaussianMixture(means, scale, name=f"mixture_2d-{n_components}")


def gaussian_mixture(
    dim: int = 10, n_components: int = 4, gap: float = 5.0, scale: float = 1.0
) -> GaussianMixture:
    """Equal-weight mixture of isotropic Gaussians in ``dim`` dimensions, all means ``gap`` apart.

    The means are the vertices of a regular simplex centred at the origin (so the mixture has
    mean zero): the centred basis vectors ``e_k - 1/K`` of ``R^K`` expressed in an orthonormal
    (Helmert) basis of their ``K - 1``-dimensional span, scaled by ``gap / sqrt(2)`` and padded
    with zeros to ``dim`` coordinates. Every pair of means is exactly ``gap`` apart, so ``gap``
    alone sets how separated the modes are. Requires ``n_components <= dim + 1``.

    Args:
        dim: Dimension ``D``.
        n_components: Number of components ``K``, ``1 <= K <= D + 1``.
        gap: Euclidean distance between any two means.
        scale: Standard deviation of every component.

    Returns:
        A :class:`GaussianMixture` named ``"mixture_{D}d-K"``.

    Example:
        >>> p = gaussian_mixture(dim=10, n_components=3, gap=4.0)
        >>> p.means.shape, float(np.linalg.norm(p.means[0] - p.means[2]).round(12))
        ((3, 10), 4.0)
        >>> p.log_prob(np.zeros((1, 10))).shape
        (1,)
    """
    if not 1 <= n_components <= dim + 1:
        raise ValueError(f"need 1 <= n_components <= dim + 1 = {dim + 1}, got {n_components}")
    k = n_components
    helmert = np.zeros((max(k - 1, 0), k))  # rows: orthonormal basis of {v : sum(v) = 0}
    for i in range(1, k):
        helmert[i - 1, :i] = 1.0
        helmert[i - 1, i] = -float(i)
        helmert[i - 1] /= math.sqrt(i * (i + 1))
    means = np.zeros((k, dim))
    means[:, : k - 1] = gap / math.sqrt(2.0) * helmert.T
    return GaussianMixture(means, scale, name=f"mixture_{dim}d-{k}")


class Rings(ToyDistribution):
    """Concentric rings: a radius ``r ~ N(R_k, width^2)`` around ring ``k``, a uniform angle.

    Sampling draws a ring ``k`` with probability ``w_k``, then ``r = R_k + width * eps`` and
    ``theta ~ U[0, 2 pi)``, and returns ``(r cos theta, r sin theta)``. A negative ``r`` lands at
    radius ``|r|`` on the opposite side, so the exact density at a point of radius ``rho > 0`` is

    ``p(x) = sum_k w_k [N(rho; R_k, width^2) + N(-rho; R_k, width^2)] / (2 pi rho)``,

    where ``1 / (2 pi rho)`` combines the uniform angle and the polar Jacobian ``1 / rho``.

    Args:
        radii: Ring radii ``R_k > 0``.
        width: Standard deviation of the radius around each ring.
        weights: Ring probabilities; when ``None`` proportional to the radii (so points are
            about equally dense along every ring).

    Example:
        >>> p = Rings(radii=(1.0,), width=0.1)
        >>> p.sample(1000, seed=0).shape
        (1000, 2)
        >>> float(p.prob(np.array([1.0, 0.0])).round(4))  # ~ N(0; 0, 0.1^2) / (2 pi)
        0.6349
    """

    def __init__(
        self,
        radii: Sequence[float] = (1.0, 2.0, 3.0),
        width: float = 0.1,
        weights: Sequence[float] | None = None,
    ):
        self.radii = np.asarray(radii, dtype=np.float64)
        if (self.radii <= 0).any() or width <= 0:
            raise ValueError("radii and width must be positive")
        w = self.radii if weights is None else np.asarray(weights, dtype=np.float64)
        self.weights = w / w.sum()
        self.width = float(width)
        self.dim = 2
        self.name = "rings"

    def _sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        k = rng.choice(len(self.radii), size=n, p=self.weights)
        r = self.radii[k] + self.width * rng.standard_normal(n)
        theta = rng.uniform(0.0, 2.0 * math.pi, size=n)
        return np.stack([r * np.cos(theta), r * np.sin(theta)], axis=-1)

    def _log_prob(self, x: Tensor) -> Tensor:
        radii = torch.as_tensor(self.radii, dtype=x.dtype, device=x.device)
        log_w = torch.as_tensor(np.log(self.weights), dtype=x.dtype, device=x.device)
        rho = x.square().sum(-1).sqrt().unsqueeze(-1)  # (..., 1)
        s = self.width
        log_n = -0.5 * _LOG_2PI - math.log(s)
        near = -0.5 * ((rho - radii) / s).square()
        far = -0.5 * ((rho + radii) / s).square()
        radial = torch.logsumexp(log_w + log_n + torch.logaddexp(near, far), dim=-1)
        return radial - math.log(2.0 * math.pi) - rho.squeeze(-1).log()


def rings(n_rings: int = 3, spacing: float = 1.0, width: float = 0.1) -> Rings:
    """Concentric rings at radii ``spacing, 2 spacing, ..., n_rings spacing``.

    Args:
        n_rings: Number of rings.
        spacing: Radius of the innermost ring and distance between rings.
        width: Standard deviation of the radius around each ring.

    Returns:
        A :class:`Rings` with weights proportional to the radii.

    Example:
        >>> rings(2).radii
        array([1., 2.])
    """
    return Rings(radii=spacing * np.arange(1, n_rings + 1), width=width)


class Checkerboard(ToyDistribution):
    """Uniform distribution on the black squares of an ``n x n`` board on ``[-bound, bound]^2``.

    Square ``(i, j)`` (column ``i`` along ``x``, row ``j`` along ``y``, counted from the
    lower-left corner) is black when ``i + j`` is odd, so the lower-left square is white, as in
    the usual 4 x 4 toy. The density is ``1 / (black area)`` on black squares and 0 elsewhere
    (squares are half-open ``[a, b)``; the board's right and top edges are excluded).

    Args:
        n_squares: Squares per side (at least 2).
        bound: Half the side of the board.

    Example:
        >>> p = Checkerboard()
        >>> np.exp(p.log_prob(np.array([[-3.0, -1.0], [-3.0, -3.0], [5.0, 0.0]])))
        array([0.03125, 0.     , 0.     ])
    """

    def __init__(self, n_squares: int = 4, bound: float = 4.0):
        if n_squares < 2 or bound <= 0:
            raise ValueError("need n_squares >= 2 and bound > 0")
        self.n_squares = int(n_squares)
        self.bound = float(bound)
        self.side = 2.0 * self.bound / self.n_squares
        self.black = np.array(
            [(i, j) for i in range(n_squares) for j in range(n_squares) if (i + j) % 2 == 1]
        )
        self.log_density = -math.log(len(self.black) * self.side**2)
        self.dim = 2
        self.name = "checkerboard"

    def _sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        cells = self.black[rng.integers(len(self.black), size=n)]
        return -self.bound + self.side * (cells + rng.uniform(size=(n, 2)))

    def _log_prob(self, x: Tensor) -> Tensor:
        cell = torch.floor((x + self.bound) / self.side)
        inside = ((cell >= 0) & (cell < self.n_squares)).all(-1)
        black = inside & (cell.sum(-1).remainder(2) == 1)
        lp = torch.full(x.shape[:-1], -math.inf, dtype=x.dtype, device=x.device)
        return lp.masked_fill(black, self.log_density)


def checkerboard(n_squares: int = 4, bound: float = 4.0) -> Checkerboard:
    """Uniform distribution on the black squares of a checkerboard; see :class:`Checkerboard`.

    Args:
        n_squares: Squares per side.
        bound: The board is ``[-bound, bound]^2``.

    Returns:
        A :class:`Checkerboard`.

    Example:
        >>> p = checkerboard()
        >>> len(p.black), p.side
        (8, 2.0)
    """
    return Checkerboard(n_squares, bound)


class Spiral(ToyDistribution):
    """A two-armed spiral: a Gaussian bar twisted about the origin, with an exact density.

    Sampling draws ``z ~ N(0, diag(length^2, width^2))`` (a bar along the first axis) and
    rotates it by the angle ``twist * |z|``: points farther out turn more, so the two ends of
    the bar wind into two spiral arms. This twist keeps every radius and shifts the polar angle
    by a function of the radius only, so it preserves area (its Jacobian determinant is 1) and
    the exact density is the bar's density at the untwisted point:

    ``p(x) = N(R(-twist |x|) x; 0, diag(length^2, width^2))``,

    with ``R(a)`` the rotation by ``a``. The arms are about ``width`` thick and, along a ray,
    ``pi / twist`` apart.

    Args:
        length: Standard deviation of the bar along its axis (how far the arms reach).
        width: Standard deviation across the bar (how thick the arms are).
        twist: Rotation in radians per unit of radius.

    Example:
        >>> p = Spiral()
        >>> p.sample(1000, seed=0).shape
        (1000, 2)
        >>> float(p.prob(np.zeros(2)).round(4))  # the bar's peak 1 / (2 pi length width)
        0.2653
    """

    def __init__(self, length: float = 2.0, width: float = 0.3, twist: float = 1.0):
        if length <= 0 or width <= 0:
            raise ValueError("length and width must be positive")
        self.length = float(length)
        self.width = float(width)
        self.twist = float(twist)
        self.dim = 2
        self.name = "spiral"

    def _sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        z = rng.standard_normal((n, 2)) * np.array([self.length, self.width])
        angle = self.twist * np.linalg.norm(z, axis=1)
        c, s = np.cos(angle), np.sin(angle)
        return np.stack([c * z[:, 0] - s * z[:, 1], s * z[:, 0] + c * z[:, 1]], axis=-1)

    def _log_prob(self, x: Tensor) -> Tensor:
        angle = -self.twist * torch.linalg.vector_norm(x, dim=-1)
        c, s = angle.cos(), angle.sin()
        u = c * x[..., 0] - s * x[..., 1]
        v = s * x[..., 0] + c * x[..., 1]
        quad = (u / self.length).square() + (v / self.width).square()
        return -0.5 * quad - _LOG_2PI - math.log(self.length * self.width)


def spiral(length: float = 2.0, width: float = 0.3, twist: float = 1.0) -> Spiral:
    """A two-armed spiral with an exact density; see :class:`Spiral`.

    Args:
        length: Standard deviation of the bar along its axis (how far the arms reach).
        width: Standard deviation across the bar (how thick the arms are).
        twist: Rotation in radians per unit of radius.

    Returns:
        A :class:`Spiral`.

    Example:
        >>> spiral(twist=1.5).twist
        1.5
    """
    return Spiral(length, width, twist)


class Moons(ToyDistribution):
    """Two interleaved half circles with isotropic Gaussian noise (like scikit-learn's
    ``make_moons``, but with uniformly drawn positions along the arcs).

    With probability 1/2 a point is ``(cos t, sin t)``, otherwise ``(1 - cos t, 1/2 - sin t)``,
    with ``t ~ U[0, pi]``; then ``noise * N(0, I)`` is added. The density is a Gaussian blur of
    a curve and has no closed form, so :meth:`log_prob` raises ``NotImplementedError``
    (``has_density`` is ``False``).

    Args:
        noise: Standard deviation of the added Gaussian noise.

    Example:
        >>> p = Moons()
        >>> p.has_density, p.sample(5, seed=0).shape
        (False, (5, 2))
    """

    has_density = False

    def __init__(self, noise: float = 0.1):
        self.noise = float(noise)
        self.dim = 2
        self.name = "moons"

    def _sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        upper = rng.uniform(size=n) < 0.5
        t = rng.uniform(0.0, math.pi, size=n)
        x = np.where(upper, np.cos(t), 1.0 - np.cos(t))
        y = np.where(upper, np.sin(t), 0.5 - np.sin(t))
        return np.stack([x, y], axis=-1) + self.noise * rng.standard_normal((n, 2))


def moons(noise: float = 0.1) -> Moons:
    """Two moons with Gaussian noise (sampling only); see :class:`Moons`.

    Args:
        noise: Standard deviation of the added noise.

    Returns:
        A :class:`Moons`.

    Example:
        >>> moons(0.05).noise
        0.05
    """
    return Moons(noise)


_TOYS: dict[str, Callable[..., ToyDistribution]] = {
    "mixture_2d": gaussian_mixture_2d,
    "mixture": gaussian_mixture,
    "rings": rings,
    "checkerboard": checkerboard,
    "spiral": spiral,
    "moons": moons,
}


def toy(name: str, **kwargs: Any) -> ToyDistribution:
    """Build a toy distribution by name.

    Args:
        name: One of ``"mixture_2d"`` (:func:`gaussian_mixture_2d`), ``"mixture"``
            (:func:`gaussian_mixture`), ``"rings"``, ``"checkerboard"``, ``"spiral"``,
            ``"moons"``.
        **kwargs: Passed to the factory, e.g. ``n_components=4, gap=6.0``.

    Returns:
        The distribution.

    Raises:
        ValueError: For an unknown name.

    Example:
        >>> toy("mixture_2d", n_components=4).name
        'mixture_2d-4'
    """
    if name not in _TOYS:
        raise ValueError(f"unknown toy {name!r}; choose from {sorted(_TOYS)}")
    return _TOYS[name](**kwargs)
