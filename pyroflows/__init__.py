"""pyroflows: normalizing flows built on Pyro's transform framework.

Example:
    >>> import torch, pyroflows as pf
    >>> flow = pf.nsf(2, layers=2, hidden=(16, 16))
    >>> flow.log_prob(torch.randn(5, 2)).shape
    torch.Size([5])
"""

from pyroflows import amortized, bases, diagnostics, losses, nn, ops, preprocess, transforms, vi
from pyroflows import anomaly as anomaly  # weakly supervised anomaly detection
from pyroflows.amortized import AmortizedPosterior
from pyroflows.bases import (
    DiagNormal,
    FullGaussianMixture,
    GaussianMixture,
    StandardNormal,
    UniformBox,
)
from pyroflows.builders import (
    autoregressive_flow,
    build,
    coupling_flow,
    iaf,
    maf,
    nsf,
    piecewise_linear,
    realnvp,
)
from pyroflows.calo import GeneratedShowers, TwoStepGenerator
from pyroflows.density import DensityEstimator
from pyroflows.discflow import DiscFlow, discflow
from pyroflows.estimator import BaseDensity
from pyroflows.flows import Flow, FlowDistribution
from pyroflows.preprocess import Preprocessor, fit_preprocessor
from pyroflows.reweight import Reweighting, resample, reweight
from pyroflows.train import History, TrainingDiverged, fit
from pyroflows.vi import (
    AmortizedFlowGuide,
    FlowGuide,
    ImportanceResult,
    distill,
    fit_to_density,
    importance_sample,
    integrate,
)

__version__ = "0.1.0"

__all__ = [
    "AmortizedPosterior",
    "amortized",
    "AmortizedFlowGuide",
    "FlowGuide",
    "ImportanceResult",
    "distill",
    "fit_to_density",
    "importance_sample",
    "integrate",
    "vi",
    "BaseDensity",
    "Preprocessor",
    "diagnostics",
    "fit_preprocessor",
    "losses",
    "preprocess",
    "DensityEstimator",
    "DiscFlow",
    "discflow",
    "DiagNormal",
    "Flow",
    "FlowDistribution",
    "FullGaussianMixture",
    "GaussianMixture",
    "History",
    "StandardNormal",
    "TrainingDiverged",
    "UniformBox",
    "autoregressive_flow",
    "bases",
    "build",
    "coupling_flow",
    "fit",
    "iaf",
    "maf",
    "nn",
    "nsf",
    "ops",
    "piecewise_linear",
    "realnvp",
    "Reweighting",
    "GeneratedShowers",
    "TwoStepGenerator",
    "resample",
    "reweight",
    "transforms",
]
