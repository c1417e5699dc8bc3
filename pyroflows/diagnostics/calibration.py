"""Calibration of amortized posteriors, over many simulated data sets.

A posterior fitted on simulations can be checked on fresh simulations ``(theta_i, x_i)``
without knowing the true posterior:

* :func:`sbc` — simulation-based calibration (Talts et al., 2018): the rank of ``theta_i``
  among draws of ``q(theta | x_i)`` is uniform for a calibrated posterior. Uniformity is tested
  per parameter with a Kolmogorov–Smirnov test on randomised PIT values (exact under the null),
  Bonferroni-corrected; :meth:`SBCResult.plot` draws the ECDF-difference plot with
  simultaneous bands (Säilynoja et al., 2022) through ArviZ.
* :func:`expected_coverage` — how often the level-``a`` highest-density region of
  ``q(theta | x_i)`` contains ``theta_i`` (``a`` for a calibrated posterior).
* :func:`tarp` — tests of accuracy with random points (Lemos et al., 2023): coverage of balls
  around random reference points; necessary and sufficient for calibration.
* :func:`z_score_contraction` — posterior z-scores and contraction (BayesFlow's plot).
* :func:`posterior_predictive` — data simulated from posterior draws (through the Pyro model
  when the posterior has one).

``posterior`` is any object with ``sample(x_batch, num_samples) -> (S, B, dim)``; diagnostics
that simulate also need ``simulate(n) -> (theta, x)``, :func:`expected_coverage` needs
``log_prob(theta (S, B, dim), x_batch) -> (S, B)``; :class:`pyroflows.amortized.AmortizedPosterior`
has all three.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import stats
from torch import Tensor

from pyroflows.train.seeding import seeded_draws

__all__ = [
    "CoverageResult",
    "SBCResult",
    "TARPResult",
    "ZScoreResult",
    "expected_coverage",
    "mean_z2",
    "posterior_predictive",
    "sbc",
    "sbc_ranks",
    "tarp",
    "z_score_contraction",
]


def _names(posterior: Any, dim: int) -> list[str]:
    space = getattr(posterior, "space", None)
    if space is not None and space.dim == dim:
        return [
            name if size == 1 else f"{name}[{i}]"
            for name, size in zip(space.names, space.sizes, strict=True)
            for i in range(size)
        ]
    return [f"theta[{i}]" for i in range(dim)]


def _simulations(
    posterior: Any, num_simulations: int, theta: Any, x: Any, seed: int | None
) -> tuple[Tensor, Tensor]:
    """Given ``(theta, x)`` or ``num_simulations`` fresh ones (invalid rows skipped)."""
    if (theta is None) != (x is None):
        raise ValueError("pass both theta and x, or neither (then they are simulated)")
    if theta is None:
        if not hasattr(posterior, "simulate"):
            raise ValueError("this posterior cannot simulate: pass theta and x")
        with seeded_draws(seed):
            theta, x = posterior.simulate(num_simulations)
        from pyroflows.amortized.simulate import drop_invalid

        padding = bool(getattr(getattr(posterior, "summary", None), "nan_padding", False))
        theta, x, _ = drop_invalid(theta, x, padding)
    theta, x = torch.as_tensor(theta), torch.as_tensor(x)
    if theta.dim() != 2:
        theta = theta.reshape(len(theta), -1)
    if len(theta) != len(x):
        raise ValueError(f"theta has {len(theta)} rows but x has {len(x)}")
    _refuse_nan(theta, "theta")
    return theta, x


def _draws(posterior: Any, x: Tensor, num_samples: int, seed: int | None, chunk: int = 1000):
    """Posterior draws ``(S, N, dim)`` for a batch of observations, in chunks of ``chunk``."""
    with seeded_draws(seed):
        parts = [posterior.sample(x[i : i + chunk], num_samples) for i in range(0, len(x), chunk)]
    samples = torch.cat([torch.as_tensor(p) for p in parts], 1)
    _refuse_nan(samples, "the posterior's draws")
    return samples


def _refuse_nan(values: Tensor, what: str) -> None:
    """NaN compares false with everything: a rank, a coverage or an HPD level computed over it
    would be silently wrong."""
    if values.is_floating_point() and bool(torch.isnan(values).any()):
        rows = torch.isnan(values.reshape(-1, values.shape[-1])).any(-1).sum()
        raise ValueError(f"{what} contain NaN ({int(rows)} rows)")


# -- SBC -------------------------------------------------------------------------------------
def sbc_ranks(samples: Any, theta: Any, rng: np.random.Generator | None = None) -> np.ndarray:
    """Ranks ``(N, dim)``: how many of the ``S`` draws ``samples (S, N, dim)`` lie below
    ``theta (N, dim)``, per coordinate (0 ... S). With ``rng`` (a NumPy generator), ties (draws
    equal to ``theta``, as a discrete parameter has) are broken at random: the rank is the count
    below plus a uniform integer from 0 to the count of ties, so a calibrated posterior's ranks
    stay uniform (:func:`sbc` does this). NaN is refused.

    Example:
        >>> sbc_ranks(torch.arange(4.0).reshape(4, 1, 1), torch.tensor([[2.5]]))
        array([[3]])
    """
    samples, theta = torch.as_tensor(samples), torch.as_tensor(theta)
    if samples.dim() != 3 or samples.shape[1:] != theta.shape:
        raise ValueError(
            f"samples must be (S, N, dim) with theta (N, dim); got {tuple(samples.shape)} and "
            f"{tuple(theta.shape)}"
        )
    theta = theta.to(samples.dtype)
    _refuse_nan(samples, "samples")
    _refuse_nan(theta, "theta")
    below = (samples < theta).sum(0).numpy()
    if rng is None:
        return below
    ties = (samples == theta).sum(0).numpy()
    return below + rng.integers(0, ties + 1) if ties.any() else below


@dataclass
class SBCResult:
    """Outcome of :func:`sbc`.

    Attributes:
        ranks: ``(N, dim)`` ranks of the true parameters among ``num_posterior_samples`` draws.
        pit: ``(N, dim)`` randomised PIT values ``(rank + U) / (S + 1)``, uniform on (0, 1)
            exactly when the posterior is calibrated.
        pvalues: ``(dim,)`` Kolmogorov–Smirnov p-values of the PIT values against U(0, 1).
        names: parameter names.
        num_posterior_samples: draws per simulation.
        mean_z2: ``(dim,)`` the mean over the simulations of the squared z-score
            ``((mean of the draws - theta) / sd of the draws)^2``. For the exact posterior
            it is 1 whatever the posterior's shape (the posterior variance is the expected
            squared error of the posterior mean), up to the Monte Carlo error of the draws'
            moments, which pushes it above 1 for heavy-tailed posteriors. Far below 1: the
            draws spread much wider than their mean's error, a posterior too wide or with
            outlying draws that inflate its standard deviation (a defect the ranks hardly
            see when the outlying draws are rare).
    """

    ranks: np.ndarray
    pit: np.ndarray
    pvalues: np.ndarray
    names: list[str]
    num_posterior_samples: int
    mean_z2: np.ndarray | None = None

    def rejected(self, alpha: float = 0.01) -> bool:
        """Uniformity rejected at level ``alpha`` for some parameter (Bonferroni over the
        parameters)."""
        return bool((self.pvalues < alpha / len(self.pvalues)).any())

    def plot(self, axes: Any = None, **kwargs: Any) -> Any:
        """ECDF-difference plot of the PIT values with simultaneous 95 % bands (ArviZ's
        ``plot_ecdf(difference=True, confidence_bands=True)``), one panel per parameter.

        The x axis is the PIT value (the fractional rank of the true parameter among the
        draws), the y axis the ECDF of the PIT values minus the uniform CDF; a calibrated
        posterior stays inside the band. The randomised PIT values are continuous, so the
        band is calibrated with uniform draws (``rvs``).
        """
        import arviz as az
        import matplotlib.pyplot as plt

        dim = self.pit.shape[1]
        if axes is None:
            _, axes = plt.subplots(1, dim, figsize=(3.2 * dim, 2.8), squeeze=False)
            axes = axes[0]
        axes = np.atleast_1d(axes)
        for j, ax in enumerate(axes[:dim]):
            az.plot_ecdf(
                self.pit[:, j],
                eval_points=np.linspace(0, 1, 101),
                cdf=stats.uniform().cdf,
                rvs=stats.uniform().rvs,
                difference=True,
                confidence_bands=True,
                ax=ax,
                **kwargs,
            )
            ax.set_title(f"{self.names[j]} (p = {self.pvalues[j]:.2g})", fontsize=9)
            ax.set(xlabel="PIT value (fractional rank)", ylabel="ECDF − uniform CDF")
        return axes


def sbc(
    posterior: Any,
    num_simulations: int = 500,
    num_posterior_samples: int = 100,
    *,
    theta: Any = None,
    x: Any = None,
    seed: int | None = 0,
) -> SBCResult:
    """Simulation-based calibration: ranks, a uniformity test and the ECDF-difference plot.

    Args:
        posterior: has ``sample`` (and ``simulate`` unless ``theta`` and ``x`` are given).
        num_simulations: fresh prior-predictive simulations to check.
        num_posterior_samples: draws per simulation (``S``; ranks take ``S + 1`` values).
        theta, x: pre-simulated ``(N, dim)`` parameters and their data instead.
        seed: seed of the simulations, the draws and the PIT randomisation.

    Example:
        >>> class Exact:  # x ~ N(theta, 1), theta ~ N(0, 1): posterior N(x / 2, 1 / 2)
        ...     def simulate(self, n):
        ...         theta = torch.randn(n, 1)
        ...         return theta, theta + torch.randn(n, 1)
        ...     def sample(self, x, n):
        ...         return x / 2 + torch.randn(n, *x.shape) * 0.5**0.5
        >>> result = sbc(Exact(), 300, 50)
        >>> result.ranks.shape, result.rejected(0.01)
        ((300, 1), False)
    """
    theta, x = _simulations(posterior, num_simulations, theta, x, seed)
    samples = _draws(posterior, x, num_posterior_samples, seed)
    rng = np.random.default_rng(seed)
    ranks = sbc_ranks(samples, theta, rng)
    pit = (ranks + rng.uniform(size=ranks.shape)) / (num_posterior_samples + 1)
    pvalues = np.array([stats.kstest(pit[:, j], "uniform").pvalue for j in range(pit.shape[1])])
    names = _names(posterior, theta.shape[1])
    return SBCResult(ranks, pit, pvalues, names, num_posterior_samples, mean_z2(samples, theta))


def mean_z2(samples: Any, theta: Any) -> np.ndarray:
    """``(dim,)`` mean over the ``N`` simulations of ``((mean - theta) / sd)^2``, ``mean`` and
    ``sd`` those of the draws ``samples (S, N, dim)`` for each ``theta (N, dim)``
    (:attr:`SBCResult.mean_z2`; about 1 for a calibrated posterior, far below 1 for an
    inflated spread). A parameter whose draws do not vary for some simulation gets inf.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> theta = torch.randn(2000, 1, generator=g)  # posterior N(0, 1) for every x
        >>> exact = torch.randn(100, 2000, 1, generator=g)
        >>> bool(0.9 < mean_z2(exact, theta)[0] < 1.2)  # 1 + O(1 / draws)
        True
        >>> bool(mean_z2(10 * exact, theta)[0] < 0.03)  # ten times too wide: about 1 / 100
        True
    """
    samples = torch.as_tensor(samples, dtype=torch.float64)
    theta = torch.as_tensor(theta, dtype=torch.float64)
    if samples.dim() != 3 or samples.shape[1:] != theta.shape or len(samples) < 2:
        raise ValueError(
            f"samples must be (S >= 2, N, dim) with theta (N, dim); got {tuple(samples.shape)} "
            f"and {tuple(theta.shape)}"
        )
    sd = samples.std(0)
    z2 = torch.where(sd > 0, (samples.mean(0) - theta) / sd, torch.inf) ** 2
    return z2.mean(0).numpy()


# -- coverage --------------------------------------------------------------------------------
@dataclass
class CoverageResult:
    """Outcome of :func:`expected_coverage` and :func:`tarp`: nominal levels and empirical
    coverage (equal for a calibrated posterior; below the diagonal: over-confident)."""

    levels: np.ndarray
    coverage: np.ndarray
    credibility: np.ndarray

    @property
    def max_deviation(self) -> float:
        """Largest ``|coverage - level|`` over the levels."""
        return float(np.abs(self.coverage - self.levels).max())

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(levels={len(self.levels)}, "
            f"max_deviation={self.max_deviation:.3f}, simulations={len(self.credibility)}"
            f"{self._extra()})"
        )

    def _extra(self) -> str:
        return ""

    def plot(self, ax: Any = None, label: str | None = None) -> Any:
        """Coverage against the nominal level, with the diagonal and a 95 % binomial band."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(3.4, 3.2))
        n = len(self.credibility)
        band = 1.96 * np.sqrt(self.levels * (1 - self.levels) / n)
        ax.fill_between(self.levels, self.levels - band, self.levels + band, color="0.85")
        ax.plot([0, 1], [0, 1], "k--", lw=0.8)
        ax.plot(self.levels, self.coverage, label=label)
        ax.set(xlabel="credibility level", ylabel="empirical coverage", xlim=(0, 1), ylim=(0, 1))
        return ax


def _coverage(f: np.ndarray, levels: Any) -> CoverageResult:
    levels = np.linspace(0, 1, 21) if levels is None else np.asarray(levels, dtype=float)
    coverage = np.array([(f < a).mean() for a in levels])
    return CoverageResult(levels, coverage, f)


def expected_coverage(
    posterior: Any,
    num_simulations: int = 500,
    num_posterior_samples: int = 200,
    *,
    theta: Any = None,
    x: Any = None,
    levels: Any = None,
    seed: int | None = 0,
) -> CoverageResult:
    """Expected coverage of highest-density regions: for each simulation, the share of
    posterior draws with a higher density than the true parameter (``credibility``); the
    level-``a`` region contains the truth when that share is below ``a``.

    Needs ``posterior.log_prob(theta (S, B, dim), x (B, ...))``.
    """
    theta, x = _simulations(posterior, num_simulations, theta, x, seed)
    samples = _draws(posterior, x, num_posterior_samples, seed)
    f = []
    for i in range(0, len(x), 1000):
        xb, tb, sb = x[i : i + 1000], theta[i : i + 1000], samples[:, i : i + 1000]
        log_true = torch.as_tensor(posterior.log_prob(tb, xb))
        log_draws = torch.as_tensor(posterior.log_prob(sb, xb))
        f.append((log_draws > log_true).double().mean(0))
    return _coverage(torch.cat(f).numpy(), levels)


@dataclass(repr=False)
class TARPResult(CoverageResult):
    """:class:`CoverageResult` of :func:`tarp`, with the area between the coverage curve and
    the diagonal (``atc``: positive means under-confident) and a KS p-value of the
    credibilities against U(0, 1)."""

    atc: float = 0.0
    pvalue: float = 1.0

    def _extra(self) -> str:
        return f", atc={self.atc:.4f}, pvalue={self.pvalue:.3g}"


def tarp(
    posterior: Any,
    num_simulations: int = 500,
    num_posterior_samples: int = 200,
    *,
    theta: Any = None,
    x: Any = None,
    samples: Any = None,
    levels: Any = None,
    seed: int | None = 0,
) -> TARPResult:
    """Tests of accuracy with random points (Lemos et al., 2023).

    Parameters are scaled to [0, 1] with the range of the true parameters; for each simulation a
    reference point is drawn uniformly in that box, and ``credibility`` is the share of
    posterior draws closer to it than the true parameter. The coverage curve is the diagonal
    if and only if the posterior is calibrated.

    Args:
        samples: posterior draws ``(S, N, dim)`` already made for ``theta`` and ``x``.
    """
    theta, x = _simulations(posterior, num_simulations, theta, x, seed)
    if samples is None:
        samples = _draws(posterior, x, num_posterior_samples, seed)
    samples = torch.as_tensor(samples).double()
    _refuse_nan(samples, "samples")
    theta = theta.double()
    low, high = theta.min(0).values, theta.max(0).values
    scale = torch.where(high > low, high - low, torch.ones_like(high))
    samples, theta = (samples - low) / scale, (theta - low) / scale
    generator = torch.Generator().manual_seed(0 if seed is None else seed)
    refs = torch.rand(theta.shape, generator=generator, dtype=torch.float64)
    d_draws = (samples - refs).norm(dim=-1)
    d_true = (theta - refs).norm(dim=-1)
    f = (d_draws < d_true).double().mean(0).numpy()
    base = _coverage(f, levels)
    grid = np.linspace(0, 1, 101)
    curve = np.array([(f < a).mean() for a in grid])
    atc = float(np.trapezoid(curve[grid >= 0.5] - grid[grid >= 0.5], grid[grid >= 0.5]))
    atc -= float(np.trapezoid(curve[grid <= 0.5] - grid[grid <= 0.5], grid[grid <= 0.5]))
    pvalue = float(stats.kstest(f, "uniform").pvalue)
    return TARPResult(base.levels, base.coverage, f, atc=atc, pvalue=pvalue)


# -- z-score and contraction -------------------------------------------------------------------
@dataclass
class ZScoreResult:
    """Posterior z-scores ``(mean - theta) / std`` and contractions ``1 - var / prior var``,
    each ``(N, dim)``. Good posteriors: z-scores near N(0, 1), contraction near 1."""

    z_score: np.ndarray
    contraction: np.ndarray
    names: list[str]

    def plot(self, axes: Any = None) -> Any:
        """Contraction (x) against z-score (y), one panel per parameter (BayesFlow's plot)."""
        import matplotlib.pyplot as plt

        dim = self.z_score.shape[1]
        if axes is None:
            _, axes = plt.subplots(1, dim, figsize=(3.2 * dim, 2.8), squeeze=False)
            axes = axes[0]
        for j, ax in enumerate(np.atleast_1d(axes)[:dim]):
            ax.scatter(self.contraction[:, j], self.z_score[:, j], s=4, alpha=0.4)
            ax.axhline(0, color="k", lw=0.6)
            ax.set(xlim=(-0.05, 1.05), xlabel="contraction", ylabel="z-score", title=self.names[j])
        return axes


def z_score_contraction(
    posterior: Any,
    num_simulations: int = 500,
    num_posterior_samples: int = 500,
    *,
    theta: Any = None,
    x: Any = None,
    prior_var: Any = None,
    seed: int | None = 0,
) -> ZScoreResult:
    """Posterior z-scores and contraction for simulated data sets.

    Args:
        prior_var: prior variances ``(dim,)``; by default the variance of the true parameters.
    """
    theta, x = _simulations(posterior, num_simulations, theta, x, seed)
    samples = _draws(posterior, x, num_posterior_samples, seed).double()
    theta = theta.double()
    mean, var = samples.mean(0), samples.var(0)
    prior_var = theta.var(0) if prior_var is None else torch.as_tensor(prior_var).double()
    z = (mean - theta) / var.sqrt()
    contraction = 1 - var / prior_var
    return ZScoreResult(z.numpy(), contraction.numpy(), _names(posterior, theta.shape[1]))


# -- predictive ------------------------------------------------------------------------------
def posterior_predictive(
    posterior: Any, x_obs: Any, num_samples: int = 100, seed: int | None = 0
) -> tuple[Tensor, Tensor]:
    """``(theta (S, dim), x_rep (S, ...))``: posterior draws for one observation and data
    simulated from them (``posterior.simulate_data``: the Pyro model conditioned on the draws,
    vectorised, or the simulator; with ``sizes``, data sets of the observation's size).

    Compare a statistic of ``x_rep`` with that of ``x_obs`` (posterior predictive check).
    """
    with seeded_draws(seed):
        theta = posterior.sample(x_obs, num_samples)
        # with sizes: data sets as large as the observation (None otherwise)
        x_rep = posterior.simulate_data(theta, size=posterior.size_of(x_obs))
    return theta, x_rep
