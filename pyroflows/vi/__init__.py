"""Variational inference with flows.

- :class:`FlowGuide` (:mod:`~pyroflows.vi.guide`): a Pyro autoguide, one flow over all latents;
  its ``fit`` is the one training loop with :class:`~pyroflows.train.losses.ELBOLoss`. Beside
  it: :mod:`~pyroflows.vi.sites` (what it reads from the model: argument checks, enumerated
  and hidden discrete sites, particles), :mod:`~pyroflows.vi.laplace` (the MAP and Laplace
  covariance),
  :mod:`~pyroflows.vi.start` (the whitened Laplace start or the plain one, chosen by ELBO),
  :mod:`~pyroflows.vi.convergence` (the end-of-fit checks and :class:`ConvergenceWarning`),
  :mod:`~pyroflows.vi.divergence` (what ``fit`` says about steps with a non-finite ELBO:
  :class:`NonFiniteELBOWarning`),
  :mod:`~pyroflows.vi.summaries` (posterior draws, quantiles, ArviZ).
- :class:`AmortizedFlowGuide` (:mod:`~pyroflows.vi.amortized_guide`): a conditional flow per
  data point for local latents (e.g. a VAE with a flow posterior).
- :func:`fit_to_density` (:mod:`~pyroflows.vi.density_fit`): a flow fitted to an unnormalized
  density (reverse KL, weighted forward KL, chi-square: the losses of
  :mod:`pyroflows.train.losses`).
- :func:`importance_sample`, :func:`integrate` (:mod:`~pyroflows.vi.importance`): estimates,
  log Z, standard errors, ESS and Pareto k-hat.
- :func:`distill` (:mod:`~pyroflows.vi.distill`): a fast-sampling IAF student of a MAF teacher.

A new variational objective is a loss in :mod:`pyroflows.train.losses`; a new VI job builds
its flow and calls :func:`pyroflows.train.fit` with it.
"""

from pyroflows.vi.affine import AffineTril, PreconditionedAffine
from pyroflows.vi.amortized_guide import AmortizedFlowGuide
from pyroflows.vi.convergence import ConvergenceWarning, FitDiagnostics
from pyroflows.vi.density_fit import WeightedKL, fit_to_density, make_flow
from pyroflows.vi.distill import DistillationLoss, distill, student_of
from pyroflows.vi.divergence import NonFiniteELBOWarning
from pyroflows.vi.guide import FlowGuide, STLFlowDistribution, guide_flow
from pyroflows.vi.importance import ImportanceResult, importance_sample, integrate

__all__ = [
    "AffineTril",
    "AmortizedFlowGuide",
    "ConvergenceWarning",
    "DistillationLoss",
    "FlowGuide",
    "FitDiagnostics",
    "ImportanceResult",
    "NonFiniteELBOWarning",
    "PreconditionedAffine",
    "STLFlowDistribution",
    "WeightedKL",
    "distill",
    "fit_to_density",
    "guide_flow",
    "importance_sample",
    "integrate",
    "make_flow",
    "student_of",
]
