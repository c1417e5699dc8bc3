"""Monotonic piecewise-linear map of the unit interval (Müller et al., 2018,
"Neural Importance Sampling").

``K`` bins of equal width ``1/K`` on ``[0, 1]``; the probability mass of bin ``k`` is
``softmax(logits)_k`` (kept above a small floor), so the map is the CDF of a piecewise-constant
density. Outside ``[0, 1]`` the map is the identity.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from pyroflows.ops.bins import bin_index, take
from pyroflows.ops.rqs import softmax_last

_MIN_MASS = 1e-4


def piecewise_linear(x: Tensor, logits: Tensor, inverse: bool = False) -> tuple[Tensor, Tensor]:
    """Apply the piecewise-linear CDF map (or its inverse) elementwise.

    Args:
        x: input of shape ``S`` (the map acts on ``[0, 1]`` and is the identity elsewhere).
        logits: raw bin masses of shape ``S + (K,)``, or of a batch shape that broadcasts
            with ``S``.
        inverse: apply the inverse map.

    Returns:
        ``(output, log|d output / d x|)``, both of shape ``S``.

    Example:
        >>> x = torch.tensor([0.0, 0.3, 1.0])
        >>> y, ladj = piecewise_linear(x, torch.zeros(3, 4))  # equal masses: identity
        >>> torch.allclose(y, x), torch.allclose(ladj, torch.zeros(3))
        (True, True)
    """
    bins = logits.shape[-1]
    mass = _MIN_MASS + (1.0 - _MIN_MASS * bins) * softmax_last(logits)
    cdf = F.pad(torch.cumsum(mass, dim=-1), (1, 0))
    inside = (x >= 0.0) & (x <= 1.0)
    u = x.clamp(0.0, 1.0)
    if inverse:
        index = bin_index(cdf[..., 1:-1], u)
    else:
        index = (u * bins).floor().long().clamp(max=bins - 1)[..., None]
    q = take(mass, index).squeeze(-1)
    c = take(cdf, index).squeeze(-1)
    k = index[..., 0].to(x.dtype)
    if inverse:
        out = (k + (u - c) / q) / bins
        log_deriv = -torch.log(q * bins)
    else:
        out = c + (u * bins - k) * q
        log_deriv = torch.log(q * bins)
    out = torch.where(inside, out, x)
    return out, torch.where(inside, log_deriv, torch.zeros_like(log_deriv))
