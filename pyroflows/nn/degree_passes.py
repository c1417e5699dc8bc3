"""The slow direction of a masked autoregressive layer: :class:`DegreePasses` solves it one
degree at a time, computing every hidden unit of a :class:`~pyroflows.nn.made.MADE` once over
all passes, in a per-thread workspace reused between calls."""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pyroflows.nn.layers import _output_layer

#: the buffers of the last :class:`DegreePasses` of each thread, kept for the next one
_WORKSPACE = threading.local()
#: largest workspace kept between calls; larger ones are allocated for each call
_WORKSPACE_BYTES = 1 << 26


def _workspace(shapes: Sequence[torch.Size], like: Tensor) -> list[Tensor]:
    """Empty tensors of the given shapes, reused by the next call with the same shapes (in
    the same thread). The passes of every layer and every chunk of a draw write their hidden
    units into the same memory: freshly allocated blocks of a few MB cost page faults on
    first touch each time (glibc returns them to the system when they are freed), about
    half of a layer's first product on a chunk of 16 384 draws."""
    key = (tuple(shapes), like.dtype, like.device, torch.is_inference_mode_enabled())
    cached = getattr(_WORKSPACE, "entry", None)
    if cached is not None and cached[0] == key:
        return cached[1]
    buffers = [like.new_empty(shape) for shape in shapes]
    if sum(math.prod(shape) for shape in shapes) * like.element_size() <= _WORKSPACE_BYTES:
        _WORKSPACE.entry = (key, buffers)
    return buffers


class DegreePasses:
    """The passes of a MADE that solve an autoregressive layer in its slow direction, one per
    degree, computing every hidden unit once over all of them (without autograd).

    A hidden unit of degree ``k`` reads the inputs of degree at most ``k``, so once the
    features of degree ``< d`` are solved the units of degree ``< d - 1`` have their final
    values already: the pass for degree ``d`` computes only the units of degree ``d - 1`` and
    keeps them for the later passes. Over the ``D`` passes the hidden layers cost one full
    pass instead of about ``D / 2`` (:meth:`MADE.forward_degree` recomputes the units of lower
    degree every time). The units of degree 0 read the context alone: they are computed once
    per context row, before the first pass, and enter the later layers like the context.

    Calling the object with the features solved so far and a degree returns that degree's
    parameters, ``(..., P)``, the values ``made(x, context)[..., i, :]`` would give (up to the
    summation order); the first degree's have the context's batch shape.

    Example:
        >>> from pyroflows.nn import MADE
        >>> made = MADE(3, params=2, context=2, hidden=(8, 8))
        >>> x, c = torch.randn(5, 3), torch.randn(5, 2)
        >>> with torch.no_grad():
        ...     passes = made.degree_passes(c, x.shape[:-1])
        ...     p = [passes(x, d) for d in (1, 2, 3)]
        ...     full = made(x, c)
        >>> i = int((made.degrees == 3).nonzero())
        >>> torch.allclose(p[2], full[:, i], atol=1e-6)
        True
    """

    def __init__(self, made: nn.Module, context: Tensor | None, batch: torch.Size):
        weights = iter(made.masked_weights())
        bound = made.input_bound
        if made.context:
            if context is None:
                raise ValueError(f"this network needs a context of size {made.context}")
            if bound is not None:
                context = context.clamp(-bound, bound)
        self.made, self.bound, self.batch = made, bound, torch.Size(batch)
        self.act = made.activation
        self.relu = type(self.act) is nn.ReLU
        self.solving_order = made.degrees.argsort().tolist()  # the feature of each degree
        # units sorted by degree: those of degree <= g are a prefix of each layer
        hidden = made.hidden_degrees()
        orders = [d.argsort(stable=True) for d in hidden]
        # ends[j][g]: the units of degree <= g of layer j (degrees 0..D-1)
        self.ends = [torch.bincount(d, minlength=made.features).cumsum(0).tolist() for d in hidden]
        self.zero = [ends[0] for ends in self.ends]  # units of degree 0 in each layer
        # per layer: the weight, rows and columns in degree order, and the term computed on the
        # context's rows (bias, context, units of degree 0), broadcast against the draws
        self.layers: list[Tensor] = []
        terms: list[Tensor] = []
        previous: Tensor | None = None  # the previous layer's order
        units0: Tensor | None = None  # the previous layer's units of degree 0
        for j, order in enumerate(orders):
            weight, bias = next(weights), next(weights)
            weight = weight[order] if previous is None else weight[order][:, previous]
            term = bias[order]
            if made.context and (j == 0 or made.context_every_layer):
                term = term + F.linear(context, next(weights)[order])
            if units0 is not None and units0.shape[-1]:
                term = term + F.linear(units0, weight[:, : units0.shape[-1]])
            units0 = self.act(term[..., : self.zero[j]])
            self.layers.append(weight)
            terms.append(term)
            previous = order
        out_weight, out_bias = next(weights), next(weights)
        assert previous is not None and units0 is not None
        out_weight = out_weight[:, previous]
        out_term = out_bias
        if units0.shape[-1]:
            out_term = out_term + F.linear(units0, out_weight[:, : units0.shape[-1]])
        self.terms = terms
        self.out_weight, self.out_term = out_weight, out_term
        self.buffers: list[Tensor] | None = None

    def _buffers(self, like: Tensor) -> list[Tensor]:
        if self.buffers is None:  # the units of degree >= 1 of every row, in degree order
            shapes = [
                self.batch + (ends[-1] - zero,)
                for ends, zero in zip(self.ends, self.zero, strict=True)
            ]
            self.buffers = _workspace(shapes, like)
        return self.buffers

    def __call__(self, x: Tensor, degree: int) -> Tensor:
        made = self.made
        if not 1 <= degree <= made.features:
            raise ValueError(f"no input has degree {degree} (degrees are 1..{made.features})")
        feature = self.solving_order[degree - 1]
        rows = slice(feature * made.params, (feature + 1) * made.params)
        g = degree - 1  # the units of this degree are new in this pass
        if g == 0:
            return self.out_term[..., rows]
        if self.bound is not None:
            x = x.clamp(-self.bound, self.bound)
        buffers = self._buffers(x)
        inputs = x.expand(self.batch + x.shape[-1:]).reshape(-1, x.shape[-1])
        for j, (weight, term, buffer) in enumerate(
            zip(self.layers, self.terms, buffers, strict=True)
        ):
            ends, zero = self.ends[j], self.zero[j]
            start, end = ends[g - 1], ends[g]
            if start < end:
                flat = buffer.view(-1, buffer.shape[-1])
                if j == 0:
                    block = weight[start:end]
                else:  # the previous layer's units of degree 1..g
                    block = weight[start:end, self.zero[j - 1] : self.ends[j - 1][g]]
                new = flat[:, start - zero : end - zero]
                torch.mm(inputs, block.T, out=new)
                view = buffer[..., start - zero : end - zero]
                view.add_(term[..., start:end])
                if self.relu:
                    view.relu_()
                else:
                    view.copy_(self.act(view))
            inputs = buffer.view(-1, buffer.shape[-1])[:, : ends[g] - zero]
        zero = self.zero[-1]
        weight = self.out_weight[rows, zero : self.ends[-1][g]]
        params = _output_layer(inputs, weight, None)
        return params.view(self.batch + params.shape[-1:]) + self.out_term[..., rows]
