"""The building blocks of the conditioner networks: masked linear layers and the output
product (padded to a multiple of 8 on large CPU batches)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: Default bound on the inputs of conditioner networks: 1e4 standard deviations of
#: standardised data, far beyond any ordinary value, small enough that hidden units stay finite.
INPUT_BOUND = 1e4


class MaskedLinear(nn.Linear):
    """A linear layer whose weight is multiplied by a fixed binary mask (a buffer)."""

    def __init__(self, mask: Tensor, bias: bool = True):
        out_features, in_features = mask.shape
        super().__init__(in_features, out_features, bias=bias)
        self.register_buffer("mask", mask.to(self.weight.dtype))

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


#: rows from which :func:`_output_layer` pads an output width that is not a multiple of 8
_PAD_FROM_ROWS = 4096


def _output_layer(h: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``F.linear(h, weight, bias)``, computed with the output width rounded up to a multiple
    of 8 on large CPU batches and sliced back. CPU matrix kernels are much slower for widths
    that are not (16 384 rows x 64 inputs, two threads: 23 outputs 0.54 ms, 24 outputs
    0.31 ms; 46 vs 48 outputs 0.70 vs 0.50 ms), and a spline's parameter count rarely is
    (``3 K - 1``)."""
    width = weight.shape[0]
    pad = -width % 8
    if pad == 0 or width <= 6 or h.device.type != "cpu" or h.numel() < _PAD_FROM_ROWS * h.shape[-1]:
        return F.linear(h, weight, bias)
    padded = None if bias is None else F.pad(bias, (0, pad))
    return F.linear(h, F.pad(weight, (0, 0, 0, pad)), padded)[..., :width]


def _add(h: Tensor, embedded: Tensor, in_place: bool) -> Tensor:
    """``h + embedded`` (a context's embedding, with a batch shape that may be smaller), in
    place when autograd is off and the sum has ``h``'s shape."""
    if in_place and h.shape == torch.broadcast_shapes(h.shape, embedded.shape):
        return h.add_(embedded)
    return h + embedded


def _linear(in_features: int, out_features: int, mask: Tensor | None) -> nn.Linear:
    if mask is None:
        return nn.Linear(in_features, out_features)
    return MaskedLinear(mask)
