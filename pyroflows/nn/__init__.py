"""Neural networks that parametrise flow layers."""

from pyroflows.nn.made import MADE, MLP, MaskedLinear
from pyroflows.nn.summary import (
    Conv1dSummary,
    DeepSet,
    IdentitySummary,
    MLPSummary,
    RecurrentSummary,
    SetAttention,
    Summary,
)

__all__ = [
    "MADE",
    "MLP",
    "Conv1dSummary",
    "DeepSet",
    "IdentitySummary",
    "MLPSummary",
    "MaskedLinear",
    "RecurrentSummary",
    "SetAttention",
    "Summary",
]
