"""Fully connected conditioners: a plain MLP and MADE (Germain et al., 2015).

Both take an optional context vector. The context enters through its own linear map added to
the first hidden layer, so a context of shape ``(B, C)`` is embedded once and broadcast against
inputs of shape ``(S, B, D)`` instead of being copied ``S`` times. In MADE the context has
degree 0: it feeds every hidden unit without breaking the autoregressive property.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class MaskedLinear(nn.Linear):
    """A linear layer whose weight is multiplied by a fixed binary mask (a buffer)."""

    def __init__(self, mask: Tensor, bias: bool = True):
        out_features, in_features = mask.shape
        super().__init__(in_features, out_features, bias=bias)
        self.register_buffer("mask", mask.to(self.weight.dtype))

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


def _linear(in_features: int, out_features: int, mask: Tensor | None) -> nn.Linear:
    if mask is None:
        return nn.Linear(in_features, out_features)
    return MaskedLinear(mask)


class MLP(nn.Module):
    """Multi-layer perceptron ``x, context -> y`` with optional weight masks and residual blocks.

    Args:
        in_features: size of ``x``.
        out_features: size of the output.
        context: size of the context (0: none).
        hidden: hidden layer sizes.
        activation: activation module class.
        residual: with ``residual=True`` every hidden layer after the first becomes a
            pre-activation residual block ``h + W2 act(W1 act(h))`` (all hidden sizes equal).
        masks: optional masks, one per weight matrix ``(out, in)``, in order: input layer,
            then two per residual block or one per plain hidden layer, then the output layer.
            The context layer is never masked.

    Example:
        >>> net = MLP(3, 2, context=4, hidden=(16, 16))
        >>> net(torch.randn(10, 5, 3), torch.randn(5, 4)).shape
        torch.Size([10, 5, 2])
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        context: int = 0,
        hidden: Sequence[int] = (64, 64),
        activation: type[nn.Module] = nn.ReLU,
        residual: bool = False,
        masks: Sequence[Tensor] | None = None,
    ):
        super().__init__()
        hidden = tuple(int(h) for h in hidden)
        if not hidden:
            raise ValueError("hidden must name at least one layer size")
        if residual and len(set(hidden)) != 1:
            raise ValueError(f"residual=True needs equal hidden sizes, got {hidden}")
        self.in_features, self.out_features, self.context = in_features, out_features, context
        self.residual = residual
        mask_iter = iter(masks) if masks is not None else None

        def next_mask() -> Tensor | None:
            return next(mask_iter) if mask_iter is not None else None

        self.input = _linear(in_features, hidden[0], next_mask())
        self.context_layer = nn.Linear(context, hidden[0], bias=False) if context > 0 else None
        self.hidden = nn.ModuleList()
        for h_in, h_out in zip(hidden[:-1], hidden[1:], strict=True):
            if residual:
                block = nn.ModuleList(
                    [_linear(h_in, h_in, next_mask()), _linear(h_in, h_out, next_mask())]
                )
                nn.init.zeros_(block[1].weight)
                nn.init.zeros_(block[1].bias)
                self.hidden.append(block)
            else:
                self.hidden.append(_linear(h_in, h_out, next_mask()))
        self.output = _linear(hidden[-1], out_features, next_mask())
        self.activation = activation()

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        h = self.input(x)
        if self.context_layer is not None:
            if context is None:
                raise ValueError(f"this network needs a context of size {self.context}")
            h = h + self.context_layer(context)
        act = self.activation
        if self.residual:
            for first, second in self.hidden:
                h = h + second(act(first(act(h))))
            h = act(h)
        else:
            h = act(h)
            for layer in self.hidden:
                h = act(layer(h))
        return self.output(h)

    def zero_output_(self) -> MLP:
        """Set the output layer to zero so the network outputs 0 (flows start as identity)."""
        with torch.no_grad():
            self.output.weight.zero_()
            self.output.bias.zero_()
        return self


def made_degrees(features: int, order: str | int | Sequence[int] | Tensor = "natural") -> Tensor:
    """Autoregressive degrees ``1..D`` of the inputs: input ``i`` may depend on inputs with a
    lower degree.

    Args:
        features: number of inputs ``D``.
        order: ``"natural"`` (1..D), ``"reversed"`` (D..1), an integer seed for a random
            order, or an explicit permutation of ``1..D``.
    """
    if isinstance(order, str):
        if order == "natural":
            return torch.arange(1, features + 1)
        if order == "reversed":
            return torch.arange(features, 0, -1)
        raise ValueError(f"order must be 'natural', 'reversed', a seed or degrees, got {order!r}")
    if isinstance(order, int):
        generator = torch.Generator().manual_seed(order)
        return torch.randperm(features, generator=generator) + 1
    degrees = torch.as_tensor(order, dtype=torch.long)
    if sorted(degrees.tolist()) != list(range(1, features + 1)):
        raise ValueError(f"explicit order must be a permutation of 1..{features}, got {order}")
    return degrees


class MADE(MLP):
    """Masked autoencoder for distribution estimation, with context and residual variants.

    Output ``(..., D, P)``: ``P`` parameters for each of the ``D`` inputs, where the parameters
    of input ``i`` depend only on inputs of lower degree (see :func:`made_degrees`) and on the
    context. ``residual=True`` gives the ResMADE of the neural spline flow paper.

    Args:
        features: number of inputs ``D``.
        params: parameters per input ``P``.
        context: size of the context (0: none).
        hidden: hidden layer sizes.
        order: input ordering (``"natural"``, ``"reversed"``, a seed, or explicit degrees).
        activation: activation module class.
        residual: use residual blocks (equal hidden sizes).

    Example:
        >>> made = MADE(3, params=2, hidden=(8, 8))
        >>> made(torch.randn(5, 3)).shape
        torch.Size([5, 3, 2])
    """

    def __init__(
        self,
        features: int,
        params: int,
        context: int = 0,
        hidden: Sequence[int] = (64, 64),
        order: str | int | Sequence[int] | Tensor = "natural",
        activation: type[nn.Module] = nn.ReLU,
        residual: bool = False,
    ):
        hidden = tuple(int(h) for h in hidden)
        degrees = made_degrees(features, order)
        low = min(1, features - 1)  # 0 when D == 1: hidden units then see the context only
        span = max(features - 1, 1)
        hidden_degrees = [torch.arange(h) % span + low for h in hidden]
        masks = [(hidden_degrees[0][:, None] >= degrees[None, :])]
        for d_in, d_out in zip(hidden_degrees[:-1], hidden_degrees[1:], strict=True):
            if residual:
                masks.append(d_in[:, None] >= d_in[None, :])
            masks.append(d_out[:, None] >= d_in[None, :])
        out_degrees = degrees.repeat_interleave(params)
        masks.append(out_degrees[:, None] > hidden_degrees[-1][None, :])
        super().__init__(
            features,
            features * params,
            context,
            hidden,
            activation,
            residual,
            [m.float() for m in masks],
        )
        self.features, self.params = features, params
        self.register_buffer("degrees", degrees)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        return super().forward(x, context).unflatten(-1, (self.features, self.params))
