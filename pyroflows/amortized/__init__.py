"""Amortized posterior estimation: simulations -> summary network + conditional flow -> p(θ | x).

- :mod:`~pyroflows.amortized.parameters`: :class:`ParameterSpace` (site names, shapes, supports
  and the bijection to the unconstrained space).
- :mod:`~pyroflows.amortized.simulate`: :class:`ModelSimulator` (a Pyro model, vectorised),
  :class:`VariableSizeSimulator` (a Pyro model with a varying number of observations, padded
  sets), :class:`PriorSimulator` (a prior and a batched simulator), :func:`drop_invalid`.
- :mod:`~pyroflows.amortized.posterior`: :class:`AmortizedPosterior` (fit offline or online,
  sample, log_prob, ArviZ, save / load) and its estimator module.
"""

from pyroflows.amortized.parameters import ParameterSpace
from pyroflows.amortized.posterior import AmortizedPosterior, PosteriorEstimator
from pyroflows.amortized.simulate import (
    ModelSimulator,
    PriorSimulator,
    VariableSizeSimulator,
    drop_invalid,
)

__all__ = [
    "AmortizedPosterior",
    "ModelSimulator",
    "ParameterSpace",
    "PosteriorEstimator",
    "PriorSimulator",
    "VariableSizeSimulator",
    "drop_invalid",
]
