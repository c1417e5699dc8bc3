"""Neural networks that parametrise flow layers."""

from pyroflows.nn.made import MADE, MLP, MaskedLinear

__all__ = ["MADE", "MLP", "MaskedLinear"]
