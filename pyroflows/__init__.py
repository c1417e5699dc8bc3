"""pyroflows: normalizing flows built on Pyro's transform framework.

Example:
    >>> import torch, pyroflows as pf
    >>> flow = pf.nsf(2, layers=2, hidden=(16, 16))
    >>> flow.log_prob(torch.randn(5, 2)).shape
    torch.Size([5])
"""

from pyroflows import bases, nn, ops, transforms
from pyroflows.bases import DiagNormal, GaussianMixture, StandardNormal, UniformBox
from pyroflows.builders import (
    autoregressive_flow,
    coupling_flow,
    iaf,
    maf,
    nsf,
    piecewise_linear,
    realnvp,
)
from pyroflows.flows import Flow, FlowDistribution

__version__ = "0.1.0"

__all__ = [
    "DiagNormal",
    "Flow",
    "FlowDistribution",
    "GaussianMixture",
    "StandardNormal",
    "UniformBox",
    "autoregressive_flow",
    "bases",
    "coupling_flow",
    "iaf",
    "maf",
    "nn",
    "nsf",
    "ops",
    "piecewise_linear",
    "realnvp",
    "transforms",
]
