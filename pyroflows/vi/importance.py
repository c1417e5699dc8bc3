"""Importance sampling with a flow proposal, and integration on the unit hypercube.

:func:`importance_sample` estimates ``Z = ∫ f`` (and self-normalised expectations under
``f / Z``) from draws of a proposal ``q``; :func:`integrate` trains the proposal (chi-square
loss, Müller et al. 2019 "Neural importance sampling") and estimates ``∫_[0,1]^D f`` within a
fixed budget of integrand evaluations, training evaluations included. Both return an
:class:`ImportanceResult` with the estimate, its standard error, ``log Z``, the effective sample
size and the Pareto k-hat of the weights (the reliability signal: below 0.5 the standard error
can be trusted, above 0.7 it cannot).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from pyroflows.diagnostics.importance import ess, pareto_k
from pyroflows.flows import Flow
from pyroflows.train.losses import check_values
from pyroflows.train.seeding import forked_streams
from pyroflows.validation import positive_int
from pyroflows.vi.density_fit import built_or_given, fit_to_density

__all__ = ["DefensiveMixture", "ImportanceResult", "importance_sample", "integrate"]


@dataclass
class ImportanceResult:
    """An importance-sampling estimate of ``Z = E_q[f / q]``.

    Attributes:
        estimate: ``Z`` (the integral of ``f``).
        stderr: its standard error, ``sd(w) / sqrt(n)``.
        log_z: ``log Z``.
        log_z_stderr: standard error of ``log Z`` (delta method, ``stderr / Z``).
        ess: effective sample size of the weights.
        pareto_k: Pareto k-hat of the weights.
        n: number of weighted draws.
        num_evals: evaluations of ``f`` in all (training included, for :func:`integrate`).
        samples: the draws ``(n, dim)`` (when kept).
        log_weights: ``log f - log q`` of the draws (when kept).
    """

    estimate: float
    stderr: float
    log_z: float
    log_z_stderr: float
    ess: float
    pareto_k: float
    n: int
    num_evals: int
    samples: Tensor | None = field(default=None, repr=False)
    log_weights: Tensor | None = field(default=None, repr=False)

    @property
    def relative_error(self) -> float:
        """``stderr / estimate``."""
        return self.stderr / self.estimate if self.estimate else math.inf

    def expectation(self, g: Callable[[Tensor], Tensor]) -> Tensor:
        """Self-normalised estimate of ``E_p[g(x)]`` with ``p = f / Z`` (kept draws only)."""
        weights = torch.softmax(self._kept()[1], 0)
        values = g(self.samples)
        if not isinstance(values, Tensor) or values.dim() < 1 or len(values) != len(weights):
            got = tuple(values.shape) if isinstance(values, Tensor) else type(values).__name__
            raise ValueError(
                f"g must return one value (or one array) per draw: ({len(weights)}, ...), got {got}"
            )
        nan = torch.isnan(values.reshape(len(values), -1)).any(-1)
        if bool(nan.any()):
            raise ValueError(f"g returned NaN at {int(nan.sum())} of {len(values)} draws")
        return (weights.reshape(-1, *([1] * (values.dim() - 1))) * values.double()).sum(0)

    def resample(self, num: int, seed: int | None = None) -> Tensor:
        """``num`` draws approximately from ``f / Z`` by multinomial resampling (SIR)."""
        samples, log_w = self._kept()
        generator = None if seed is None else torch.Generator().manual_seed(seed)
        idx = torch.multinomial(torch.softmax(log_w, 0).cpu(), num, True, generator=generator)
        return samples[idx.to(samples.device)]

    def _kept(self) -> tuple[Tensor, Tensor]:
        if self.samples is None or self.log_weights is None:
            raise ValueError("draws were not kept: pass keep=True")
        return self.samples, self.log_weights


def _draw(q, num: int) -> tuple[Tensor, Tensor]:
    if hasattr(q, "rsample_and_log_prob"):
        with torch.no_grad():
            return q.rsample_and_log_prob((num,))
    x = q.sample((num,))
    return x, q.log_prob(x)


def _summarise(log_w: Tensor, n_evals: int, samples: Tensor | None, keep: bool):
    log_w = log_w.double()
    n = len(log_w)
    m = log_w.max()
    if not bool(torch.isfinite(m)):
        raise ValueError("every importance weight is zero or infinite")
    w = torch.exp(log_w - m)  # weights scaled by exp(-m)
    mean = w.mean()
    sd = w.std() if n > 1 else torch.zeros(())
    scale = math.exp(float(m))
    estimate = float(mean) * scale
    stderr = float(sd) * scale / math.sqrt(n)
    log_z = float(torch.log(mean) + m)
    finite = log_w[torch.isfinite(log_w)]
    k = pareto_k(finite) if len(finite) >= 20 else math.nan
    return ImportanceResult(
        estimate, stderr, log_z, float(sd / mean) / math.sqrt(n), ess(log_w), k, n, n_evals,
        samples if keep else None, log_w if keep else None,
    )  # fmt: skip


def importance_sample(
    log_f: Callable[[Tensor], Tensor],
    q: Flow,
    n: int = 100_000,
    *,
    batch_size: int = 65_536,
    keep: bool = True,
) -> ImportanceResult:
    """Importance sampling of the unnormalized density ``exp(log_f)`` with proposal ``q``.

    Args:
        log_f: ``(N, dim) -> (N,)``; called on draws of ``q`` in ``q``'s dtype, its output is
            used in float64.
        q: a flow (or any distribution with ``sample`` and ``log_prob``).
        n: number of draws.
        batch_size: draws per chunk (bounds memory).
        keep: keep the draws and log-weights (for :meth:`ImportanceResult.resample`).

    Example:
        >>> import pyroflows as pf
        >>> q = pf.realnvp(2, layers=1, hidden=(8,))  # starts as N(0, I)
        >>> r = importance_sample(lambda z: -0.5 * (z**2).sum(-1), q, n=1000)
        >>> round(r.log_z, 4)  # log of (2 pi)
        1.8379
    """
    if not callable(log_f):
        raise TypeError("log_f must be a callable mapping (N, dim) points to (N,) values")
    n, batch_size = positive_int("n", n), positive_int("batch_size", batch_size)
    samples, log_ws = [], []
    for start in range(0, int(n), batch_size):
        x, log_q = _draw(q, min(batch_size, int(n) - start))
        with torch.no_grad():
            log_ws.append(check_values(log_f(x), x, "log_f").double() - log_q.double())
        if keep:
            samples.append(x)
    log_w = torch.cat(log_ws)
    return _summarise(log_w, int(n), torch.cat(samples) if keep else None, keep)


class DefensiveMixture:
    """``(1 - weight) q + weight * U([0, 1]^dim)``: a proposal whose density is at least
    ``weight`` everywhere on the cube, so the importance weights ``f / q`` are bounded by
    ``max f / weight`` (a flow ending in a sigmoid has a density that vanishes at the faces,
    which gives heavy-tailed weights, k-hat > 0.7, for integrands that are not zero there).

    Example:
        >>> from pyroflows.vi.density_fit import make_flow
        >>> q = DefensiveMixture(make_flow(2, "unit", layers=1, hidden=(4,)), 0.1)
        >>> x = q.sample((5,))
        >>> bool((q.log_prob(x) >= math.log(0.1)).all())
        True
    """

    def __init__(self, q: Flow, weight: float):
        self.q, self.weight, self.dim = q, float(weight), q.dim

    @torch.no_grad()
    def sample(self, shape: tuple[int, ...]) -> Tensor:
        x = self.q.sample(shape)
        uniform = torch.rand(*shape, device=x.device) < self.weight
        # uniform on the open cube: an integrand singular on a face stays finite at the draws
        u = torch.rand_like(x).clamp_(min=torch.finfo(x.dtype).tiny)
        return torch.where(uniform[..., None], u, x)

    @torch.no_grad()
    def log_prob(self, x: Tensor) -> Tensor:
        log_q = torch.nan_to_num(self.q.log_prob(x), nan=-math.inf)
        if self.weight == 0:
            return log_q
        return torch.logaddexp(log_q + math.log1p(-self.weight), torch.full_like(log_q, 0.0)
                               + math.log(self.weight))  # fmt: skip


class _Counted:
    """Wraps the integrand: float64 inputs, ``log f``, and a count of evaluations."""

    def __init__(self, f: Callable[[Tensor], Tensor]):
        self.f, self.evals = f, 0

    def __call__(self, x: Tensor) -> Tensor:
        self.evals += len(x)
        with torch.no_grad():
            values = self.f(x.detach().double())
        values = check_values(values, x, "f", log=False)
        return torch.log(values).to(x.dtype)


def integrate(
    f: Callable[[Tensor], Tensor],
    dim: int,
    max_evals: int = 1_000_000,
    *,
    train_fraction: float = 0.4,
    batch_size: int = 1024,
    flow: str | Flow = "nsf",
    layers: int = 4,
    hidden: Sequence[int] = (64, 64),
    bins: int = 16,
    loss: str = "forward_kl",
    lr: float = 3e-3,
    anneal: float = 0.8,
    beta0: float = 0.05,
    seed: int | None = 0,
    keep: bool = False,
    defensive: float = 0.1,
    **fit_kwargs,
) -> ImportanceResult:
    """``∫_[0,1]^dim f(x) dx`` by neural importance sampling within ``max_evals`` evaluations.

    A flow on the unit cube is trained with the weighted forward-KL loss on a tempered
    integrand ``f^beta`` (``beta`` rising to 1 over the first 80 % of the steps) on
    ``train_fraction * max_evals`` evaluations (``batch_size`` per step); the remaining
    evaluations give the estimate. On the camel integrand (two narrow peaks on the diagonal)
    in 16 dimensions this finds both peaks for seeds 0, 1 and 2 (errors <= 0.003 at 10^6
    evaluations); the chi-square loss with half the steps annealed found one peak for one of
    the three seeds and gave standard errors of 0.17 for the others. ``r.num_evals`` counts
    every evaluation and never exceeds ``max_evals``.

    Args:
        f: ``(N, dim)`` float64 points ``-> (N,)`` values ``>= 0``.
        dim: dimension.
        max_evals: budget of integrand evaluations.
        train_fraction: share of the budget spent on training.
        batch_size: draws per training step.
        flow: ``"nsf"`` (coupling splines + sigmoid), ``"piecewise_linear"`` or a unit-cube
            :class:`Flow`.
        layers, hidden, bins: size of a built flow.
        loss: ``"forward_kl"`` (mass-covering) or ``"chi2"`` (the variance of ``f / q``).
        lr: Adam learning rate (cosine schedule).
        anneal, beta0: the target is tempered as ``f^beta``, ``beta`` rising from ``beta0`` to 1
            over the first ``anneal`` share of the training steps, so that narrow peaks far
            apart are all found (0: no annealing).
        seed: seed of training and sampling (None: the global random state).
        keep: keep the final draws and weights.
        defensive: weight of the uniform distribution in the final proposal
            (:class:`DefensiveMixture`): the importance weights are then bounded by
            ``max f / defensive``. Measured on ``3 x^2`` in 2-D, 40 000 evaluations, 20 seeds:
            ``sd((estimate - 1) / stderr)`` 1.27 without it (0), 1.21 with 0.1, 0.99 with 0.3;
            the k-hat stays 0.6-1.6 (the flow's density still falls steeply at the faces, so
            the bounded weights have a long tail below their bound). 0 turns it off.

    Example:
        >>> f = lambda x: 3 * x[:, 0] ** 2  # integral 1
        >>> r = integrate(f, 2, max_evals=20_000, layers=1, hidden=(8,), batch_size=500)
        >>> abs(r.estimate - 1) < 4 * r.stderr, r.num_evals <= 20_000
        (True, True)
    """
    if not 0 <= train_fraction < 1:
        raise ValueError(f"train_fraction must lie in [0, 1), got {train_fraction}")
    if not 0 <= defensive < 1:
        raise ValueError(f"defensive must lie in [0, 1), got {defensive}")
    if not 0 <= anneal <= 1:
        raise ValueError(f"anneal must lie in [0, 1], got {anneal}")
    if not callable(f):
        raise TypeError("f must be a callable mapping (N, dim) points to (N,) values")
    dim, max_evals = positive_int("dim", dim), positive_int("max_evals", max_evals)
    batch_size = positive_int("batch_size", batch_size)
    counted = _Counted(f)
    steps = int(train_fraction * max_evals) // batch_size
    with forked_streams():
        if seed is not None:
            torch.manual_seed(seed)
        q = built_or_given(flow, dim, "unit", layers, hidden, bins, default_bins=16)
        if steps > 0:
            fit_kwargs.setdefault("progress", False)
            q = fit_to_density(counted, dim, loss=loss, flow=q, steps=steps,
                               num_samples=batch_size, lr=lr, anneal_steps=int(anneal * steps),
                               beta0=beta0, **fit_kwargs)  # fmt: skip
        q.eval()
        n = max_evals - counted.evals
        if n < 20:
            raise ValueError(f"training used {counted.evals} of {max_evals} evaluations")
        proposal = DefensiveMixture(q, defensive) if defensive > 0 else q
        result = importance_sample(counted, proposal, n, keep=keep)
    result.num_evals = counted.evals
    return result
