"""Flow layers as Pyro ``TransformModule`` / ``ConditionalTransformModule`` subclasses."""

from pyroflows.transforms.autoregressive import MaskedAutoregressive
from pyroflows.transforms.base import ConditionedTransform, FlowTransform
from pyroflows.transforms.context_affine import ContextAffine
from pyroflows.transforms.coupling import Coupling, alternating_mask
from pyroflows.transforms.elementwise import Box, ElementwiseAffine, FixedAffine
from pyroflows.transforms.normalization import ActNorm, BatchNorm
from pyroflows.transforms.permutation import LULinear, Permutation
from pyroflows.transforms.univariate import (
    RQS,
    Affine,
    EqualBinRQS,
    PiecewiseLinear,
    Univariate,
)

__all__ = [
    "RQS",
    "ActNorm",
    "Affine",
    "BatchNorm",
    "Box",
    "ConditionedTransform",
    "ContextAffine",
    "Coupling",
    "ElementwiseAffine",
    "FixedAffine",
    "FlowTransform",
    "LULinear",
    "MaskedAutoregressive",
    "Permutation",
    "EqualBinRQS",
    "PiecewiseLinear",
    "Univariate",
    "alternating_mask",
]
