"""Has a variational fit converged? The checks :meth:`~pyroflows.vi.FlowGuide.fit` runs at its
end, and the warning it gives when one fails.

Three checks, each with its measured number kept in :class:`FitDiagnostics`:

- **trend**: the ELBO over the last 30 % of the steps, cut into 10 blocks whose means are
  regressed on the block index; the fit is still rising when the fitted rise across the window
  is over 4 standard errors of itself and over ``max(0.5, sd / 4)`` nats (``sd``: the
  step-to-step sd of the ELBO estimates in the window);
- **PSIS k-hat** of the guide as an importance proposal (1000 draws): above 0.7 the guide
  misses mass of the posterior;
- **finite**: every ELBO estimate of the window and every parameter finite.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = ["ConvergenceWarning", "FitDiagnostics", "LossRecorder", "diagnose", "elbo_trend"]

K_HAT_LIMIT = 0.7


class ConvergenceWarning(UserWarning):
    """A variational fit ended before it converged (its ELBO still rising, a high PSIS k-hat
    or non-finite values): its posterior should not be trusted as it stands."""


@dataclass
class FitDiagnostics:
    """What the end-of-fit checks measured.

    Attributes:
        elbo_rise: fitted rise of the ELBO across the last 30 % of the steps (nats).
        elbo_rise_z: that rise over its standard error.
        elbo_sd: step-to-step sd of the ELBO estimates in that window.
        k_hat: PSIS k-hat of the guide (NaN where it could not be computed).
        finite: every ELBO estimate of the window and every parameter finite.
        problems: one sentence per failed check (empty: converged).
    """

    elbo_rise: float
    elbo_rise_z: float
    elbo_sd: float
    k_hat: float
    finite: bool
    problems: list[str] = field(default_factory=list)

    @property
    def converged(self) -> bool:
        """No check failed."""
        return not self.problems


class LossRecorder:
    """A loss that records the value of every call (the per-step ELBO estimates)."""

    def __init__(self, loss):
        self.loss, self.values = loss, []

    def __call__(self, *args, **kwargs) -> Tensor:
        value = self.loss(*args, **kwargs)
        self.values.append(float(value.detach()))
        return value

    def __getattr__(self, name):
        return getattr(self.loss, name)

    def __repr__(self) -> str:
        return repr(self.loss)


def elbo_trend(elbo: list[float], fraction: float = 0.3, blocks: int = 10):
    """``(rise, z, sd)`` of the ELBO over its last ``fraction``: block means regressed on the
    block index; ``rise`` across the window, ``z`` its ratio to its standard error, ``sd`` the
    step-to-step sd. NaN where the window holds fewer than 2 values per block.

    Example:
        >>> rise, z, sd = elbo_trend([0.01 * t for t in range(1000)])
        >>> round(rise, 1), z > 100
        (2.7, True)
    """
    window = torch.tensor(elbo[-int(len(elbo) * fraction) :], dtype=torch.float64)
    size = len(window) // blocks
    if size < 2:
        return math.nan, math.nan, math.nan
    means = window[-size * blocks :].reshape(blocks, size).mean(1)
    t = torch.arange(blocks, dtype=torch.float64)
    t = t - t.mean()
    slope = float((t * means).sum() / (t * t).sum())
    resid = means - means.mean() - slope * t
    se = float(torch.sqrt((resid**2).sum() / (blocks - 2) / (t * t).sum()))
    rise = slope * (blocks - 1)
    z = rise / (se * (blocks - 1)) if se > 0 else math.copysign(math.inf, rise)
    return rise, z, float(window.std())


def _k_hat(guide, args, kwargs) -> float:
    from pyroflows.diagnostics.importance import psis

    try:
        return psis(guide._model_fn, guide, *args, num_particles=1000,
                    max_plate_nesting=guide._nesting, **kwargs).k_hat  # fmt: skip
    except (RuntimeError, ValueError, IndexError, NotImplementedError):
        return math.nan  # a model that does not vectorise, a subsampled plate


def diagnose(guide, losses: list[float], args: tuple, kwargs: dict) -> FitDiagnostics:
    """Run the three checks on a fitted ``guide`` whose per-step losses were ``losses``."""
    elbo = [-v for v in losses]
    rise, z, sd = elbo_trend(elbo)
    window = elbo[-max(1, int(len(elbo) * 0.3)) :]
    finite = all(math.isfinite(v) for v in window) and all(
        bool(torch.isfinite(p).all()) for p in guide.parameters()
    )
    k_hat = _k_hat(guide, args, kwargs) if finite else math.nan
    problems = []
    if not finite:
        problems.append("non-finite ELBO estimates or parameters at the end of the fit")
    elif z > 4 and rise > max(0.5, sd / 4):
        problems.append(
            f"the ELBO is still rising: +{rise:.3g} nats over the last 30 % of the steps "
            f"({z:.1f} standard errors; step-to-step sd {sd:.3g})"
        )
    if k_hat > K_HAT_LIMIT:
        problems.append(f"PSIS k-hat {k_hat:.2f} > {K_HAT_LIMIT}: the guide misses posterior mass")
    return FitDiagnostics(rise, z, sd, k_hat, finite, problems)


def warn_unconverged(diagnostics: FitDiagnostics, stacklevel: int = 3) -> None:
    """A :class:`ConvergenceWarning` naming the failed checks and what to try."""
    if diagnostics.converged:
        return
    warnings.warn(
        "FlowGuide.fit has not converged: " + "; ".join(diagnostics.problems) + ". Try more "
        "steps (fit(..., steps=)), more particles, or a lower final learning rate; with a "
        "high k-hat, a richer flow (more layers, flow='nsf') or objective='iwae'. The "
        "numbers are in guide.diagnostics_",
        ConvergenceWarning,
        stacklevel=stacklevel,
    )
