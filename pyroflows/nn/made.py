"""Fully connected conditioners: a plain MLP and MADE (Germain et al., 2015).

Both take an optional context vector. The context enters through its own linear map added to
the first hidden layer, so a context of shape ``(B, C)`` is embedded once and broadcast against
inputs of shape ``(S, B, D)`` instead of being copied ``S`` times. In MADE the context has
degree 0: it feeds every hidden unit without breaking the autoregressive property.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pyroflows.nn.degree_passes import DegreePasses
from pyroflows.nn.layers import INPUT_BOUND, MaskedLinear, _add, _linear, _output_layer

__all__ = ["INPUT_BOUND", "MADE", "MLP", "MaskedLinear", "made_degrees"]


class MLP(nn.Module):
    """Multi-layer perceptron ``x, context -> y`` with optional weight masks and residual blocks.

    All weights and biases live in one flat parameter ``flat_params`` (the masks in one flat
    buffer ``flat_mask``, ones where nothing is masked): a forward pass applies every mask with a
    single product and an optimiser updates one tensor per network instead of two per layer.
    Initialisation is that of ``nn.Linear`` layers created in the order of the layers, so a
    seed gives the same network as separate layers would.

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
        input_bound: ``x`` and the context are clamped to ``[-input_bound, input_bound]``
            before the first layer (``None``: no clamp). A flow's conditioner may be any
            function of the features it reads, so the clamp keeps every layer invertible; it
            only changes the outputs for inputs beyond the bound (far outliers, infinities),
            which would otherwise overflow the hidden units into ``inf`` and ``NaN`` (``0 * inf``
            at masked weights, ``inf - inf`` in a softmax).
        context_every_layer: the context also enters every later hidden layer (in a residual
            block, its inner layer) through a linear map of its own, not only the first. Needs a
            context. The maps are unmasked: the context has degree 0 in MADE.

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
        input_bound: float | None = INPUT_BOUND,
        context_every_layer: bool = False,
    ):
        super().__init__()
        hidden = tuple(int(h) for h in hidden)
        if not hidden:
            raise ValueError("hidden must name at least one layer size")
        if residual and len(set(hidden)) != 1:
            raise ValueError(f"residual=True needs equal hidden sizes, got {hidden}")
        self.in_features, self.out_features, self.context = in_features, out_features, context
        self.residual = residual
        self.input_bound = input_bound
        if context_every_layer and context <= 0:
            raise ValueError("context_every_layer=True needs a context (context > 0)")
        self.context_every_layer = bool(context_every_layer)
        self._n_hidden = len(hidden) - 1
        mask_iter = iter(masks) if masks is not None else None

        def next_mask() -> Tensor | None:
            return next(mask_iter) if mask_iter is not None else None

        # Layers in the order of the flat layout: input, context, hidden, output. The
        # context layer has no bias; residual blocks start at zero (the block is the identity).
        layers: list[nn.Linear] = [_linear(in_features, hidden[0], next_mask())]
        if context > 0:
            layers.append(nn.Linear(context, hidden[0], bias=False))
        for h_in, h_out in zip(hidden[:-1], hidden[1:], strict=True):
            if residual:
                layers.append(_linear(h_in, h_in, next_mask()))
                second = _linear(h_in, h_out, next_mask())
                nn.init.zeros_(second.weight)
                nn.init.zeros_(second.bias)
                layers.append(second)
            else:
                layers.append(_linear(h_in, h_out, next_mask()))
            if self.context_every_layer:  # the context again: into this layer (a block's inner)
                layers.append(nn.Linear(context, h_in if residual else h_out, bias=False))
        layers.append(_linear(hidden[-1], out_features, next_mask()))

        tensors: list[Tensor] = []
        self._shapes: list[tuple[int, ...]] = []
        self._is_context: list[bool] = []  # per layout entry: a context layer's weight
        for layer in layers:
            self._is_context.append(layer.bias is None)
            weight = layer.weight.detach()
            tensors.append(weight.flatten())
            self._shapes.append(tuple(weight.shape))
            if layer.bias is not None:
                self._is_context.append(False)
                tensors.append(layer.bias.detach())
                self._shapes.append(tuple(layer.bias.shape))
        self._sizes = [math.prod(shape) for shape in self._shapes]
        self.flat_params = nn.Parameter(torch.cat(tensors))
        flat_mask = None if masks is None else self._flatten_masks(masks)
        self.register_buffer("flat_mask", flat_mask)
        self.activation = activation()

    def _flatten_masks(self, masks: Sequence[Tensor]) -> Tensor:
        """The flat mask of the layout from the weight masks (in the order of ``masks``):
        ones for the biases and the context layers."""
        weight_masks, dtype = iter(masks), self.flat_params.dtype
        return torch.cat([
            next(weight_masks).flatten().to(dtype) if len(shape) == 2 and not context
            else torch.ones(size, dtype=dtype)
            for shape, size, context in zip(self._shapes, self._sizes, self._is_context,
                                            strict=True)
        ])  # fmt: skip

    def masks(self) -> list[Tensor]:
        """The weight masks, ``(out, in)`` each, in order: input layer, hidden layers, output
        layer (the context layer, never masked, is left out); all ones when unmasked.

        Example:
            >>> [tuple(m.shape) for m in MADE(3, 2, hidden=(8,)).masks()]
            [(8, 3), (6, 8)]
        """
        flat = self.flat_mask if self.flat_mask is not None else torch.ones_like(self.flat_params)
        parts = flat.detach().split(self._sizes)
        return [
            part.view(shape)
            for part, shape, context in zip(parts, self._shapes, self._is_context, strict=True)
            if len(shape) == 2 and not context
        ]

    def masked_weights(self) -> list[Tensor]:
        """Weights and biases (masked) in layout order, as views of one tensor."""
        flat = self.flat_params if self.flat_mask is None else self.flat_params * self.flat_mask
        return [
            part.view(shape)
            for part, shape in zip(flat.split(self._sizes), self._shapes, strict=True)
        ]

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        return self._run(x, context, self.masked_weights())

    def _run(
        self,
        x: Tensor,
        context: Tensor | None,
        weights: Sequence[Tensor],
        head: Callable[[Tensor, Tensor, Tensor], Tensor] = _output_layer,
    ) -> Tensor:
        """The forward pass with the given weights (in layout order); ``head(h, weight,
        bias)`` is the output layer."""
        bound = self.input_bound
        if bound is not None:
            x = x.clamp(-bound, bound)
        params = iter(weights)
        # without autograd (sampling, scoring) the activations are updated in place: on a
        # million rows the network is bound by memory traffic, not by arithmetic. A layer
        # that reads the context gets its bias with the context's term, computed on the
        # context's rows (one per observation) and added once to the product over the draws
        # (a bias in the product would be one more pass over them)
        in_place = not torch.is_grad_enabled()
        weight, bias = next(params), next(params)
        if self.context:
            if context is None:
                raise ValueError(f"this network needs a context of size {self.context}")
            if bound is not None:
                context = context.clamp(-bound, bound)
            h = _add(F.linear(x, weight), F.linear(context, next(params), bias), in_place)
        else:
            h = F.linear(x, weight, bias)
        every = self.context_every_layer
        act = self.activation
        if self.residual:
            # h is read again after act(h), so that one is never in place; the block's own
            # fresh tensors are updated in place when autograd is off
            fresh = torch.relu_ if in_place and type(act) is nn.ReLU else act
            for _ in range(self._n_hidden):
                w1, b1, w2, b2 = next(params), next(params), next(params), next(params)
                if every:
                    embedded = F.linear(context, next(params), b1)
                    inner = _add(F.linear(act(h), w1), embedded, in_place)
                else:
                    inner = F.linear(act(h), w1, b1)
                update = F.linear(fresh(inner), w2, b2)
                h = update.add_(h) if in_place else h + update  # update has h's shape
            h = fresh(h)
        else:
            if in_place and type(act) is nn.ReLU:
                act = torch.relu_  # each h is a fresh tensor read only once
            h = act(h)
            for _ in range(self._n_hidden):
                weight, bias = next(params), next(params)
                if every:
                    h = _add(F.linear(h, weight), F.linear(context, next(params), bias), in_place)
                else:
                    h = F.linear(h, weight, bias)
                h = act(h)
        return head(h, next(params), next(params))

    def zero_output_(self) -> MLP:
        """Set the output layer to zero so the network outputs 0 (flows start as identity)."""
        with torch.no_grad():
            self.flat_params[-(self._sizes[-2] + self._sizes[-1]) :].zero_()
        return self

    def _legacy_names(self) -> list[str]:
        """Parameter names of the layout before the flat one, in layout order."""
        names = ["input.weight", "input.bias"]
        if self.context:
            names.append("context_layer.weight")
        for i in range(self._n_hidden):
            if self.residual:
                names += [f"hidden.{i}.{j}.{kind}" for j in (0, 1) for kind in ("weight", "bias")]
            else:
                names += [f"hidden.{i}.weight", f"hidden.{i}.bias"]
        return names + ["output.weight", "output.bias"]

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args, **kwargs) -> None:
        # Checkpoints from before the flat layout hold a weight and a bias per layer.
        if prefix + "flat_params" not in state_dict and prefix + "input.weight" in state_dict:
            names = self._legacy_names()
            state_dict[prefix + "flat_params"] = torch.cat(
                [state_dict.pop(prefix + name).flatten() for name in names]
            )
            for name in names:  # the old per-layer mask buffers
                state_dict.pop(prefix + name.replace(".weight", ".mask"), None)
            if self.flat_mask is not None:
                state_dict[prefix + "flat_mask"] = self.flat_mask
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


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


def _hidden_degrees(features: int, hidden: Sequence[int], context: bool) -> list[Tensor]:
    """Degrees of the hidden units, spread evenly. With a context they run from 0 to ``D - 1``:
    units of degree 0 read the context alone, so the parameters of the first feature depend on
    the context too. Without one, from 1 to ``D - 1``, and the first feature's parameters are
    constants (``context=False`` also gives the layout that older saves of conditional MADEs
    hold, the one nflows uses, where the first feature ignores the context)."""
    if context and features > 1:
        return [torch.arange(h) % features for h in hidden]
    low = min(1, features - 1)  # 0 when D == 1: hidden units then see the context only
    span = max(features - 1, 1)
    return [torch.arange(h) % span + low for h in hidden]


def _masks(
    degrees: Tensor, hidden_degrees: Sequence[Tensor], params: int, residual: bool
) -> list[Tensor]:
    """The weight masks of a MADE in layout order (see :class:`MLP`)."""
    masks = [hidden_degrees[0][:, None] >= degrees[None, :]]
    for d_in, d_out in zip(hidden_degrees[:-1], hidden_degrees[1:], strict=True):
        if residual:
            masks.append(d_in[:, None] >= d_in[None, :])
        masks.append(d_out[:, None] >= d_in[None, :])
    out_degrees = degrees.repeat_interleave(params)
    masks.append(out_degrees[:, None] > hidden_degrees[-1][None, :])
    return [m.float() for m in masks]


class MADE(MLP):
    """Masked autoencoder for distribution estimation, with context and residual variants.

    Output ``(..., D, P)``: ``P`` parameters for each of the ``D`` inputs, where the parameters
    of input ``i`` depend only on inputs of lower degree (see :func:`made_degrees`) and on the
    context. ``residual=True`` gives the ResMADE of the neural spline flow paper.

    With a context, a share ``1 / D`` of the hidden units has degree 0: they read the context
    alone, and the first input's parameters are computed from them, so every input's
    transform depends on the context (in nflows' MADE, and in pyroflows' before stop 21, the
    first input's parameters are constants; such saves load in their own layout).

    Args:
        features: number of inputs ``D``.
        params: parameters per input ``P``.
        context: size of the context (0: none).
        hidden: hidden layer sizes.
        order: input ordering (``"natural"``, ``"reversed"``, a seed, or explicit degrees).
        activation: activation module class.
        residual: use residual blocks (equal hidden sizes).
        input_bound: clamp of the inputs and context (see :class:`MLP`).

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
        input_bound: float | None = INPUT_BOUND,
        context_every_layer: bool = False,
    ):
        hidden = tuple(int(h) for h in hidden)
        degrees = made_degrees(features, order)
        hidden_degrees = _hidden_degrees(features, hidden, context > 0)
        super().__init__(
            features,
            features * params,
            context,
            hidden,
            activation,
            residual,
            _masks(degrees, hidden_degrees, params, residual),
            input_bound,
            context_every_layer,
        )
        self.features, self.params = features, params
        self.register_buffer("degrees", degrees)
        self._set_hidden_degrees(hidden_degrees)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        return super().forward(x, context).unflatten(-1, (self.features, self.params))

    def forward_params_first(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """``self(x, context)`` in the layout ``(P, D) + batch``: each parameter of each input a
        contiguous slab over the batch (``.movedim((0, 1), (-1, -2))`` gives the usual one).
        The output layer is then one product ``weight @ hidden^T`` with the weight's rows put
        parameter-first: what a spline evaluated over whole slabs reads
        (:func:`pyroflows.ops.rqs.rational_quadratic_spline_params_first`).

        Example:
            >>> made = MADE(3, params=4, context=2, hidden=(8,))
            >>> x, c = torch.randn(5, 3), torch.randn(5, 2)
            >>> first = made.forward_params_first(x, c)
            >>> first.shape, torch.allclose(first.movedim((0, 1), (-1, -2)), made(x, c))
            (torch.Size([4, 3, 5]), True)
        """
        d, p = self.features, self.params

        def head(h: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
            rows = h.reshape(-1, h.shape[-1])
            w = weight.unflatten(0, (d, p)).transpose(0, 1).reshape(d * p, -1)
            # the product, then the bias in place (addmm first copies the broadcast bias into
            # the output: slower on CPU)
            out = torch.mm(w, rows.T).add_(bias.unflatten(0, (d, p)).T.reshape(-1, 1))
            return out.view((p, d) + h.shape[:-1])

        return self._run(x, context, self.masked_weights(), head)

    def forward_degree(
        self,
        x: Tensor,
        context: Tensor | None,
        degree: int,
        weights: Sequence[Tensor] | None = None,
    ) -> Tensor:
        """The parameters of the input of the given degree only, ``(..., P)``: the same
        values as ``self(x, context)[..., i, :]`` for that input ``i``, from the sub-network
        that computes them (hidden units of lower degree, that input's output rows).

        Solving an autoregressive layer in the slow direction takes one pass per degree; with
        this pass the hidden layers are on average half as wide and the output layer ``D``
        times narrower. ``weights`` (the masked weights, :meth:`masked_weights`) may be passed
        in so that a loop over the degrees masks them once.

        Example:
            >>> made = MADE(4, params=3, context=2, hidden=(16, 16))
            >>> x, c = torch.randn(5, 4), torch.randn(5, 2)
            >>> i = int((made.degrees == 3).nonzero())
            >>> torch.allclose(made.forward_degree(x, c, 3), made(x, c)[:, i], atol=1e-6)
            True
        """
        pruned = [
            tensor[rows] if cols is None else tensor[rows][:, cols]
            for tensor, (rows, cols) in zip(
                self.masked_weights() if weights is None else weights,
                self._pruning(degree, x.device),
                strict=True,
            )
        ]
        return self._run(x, context, pruned)

    def degree_passes(self, context: Tensor | None, batch: torch.Size) -> DegreePasses | None:
        """The passes of the slow direction without autograd, each hidden unit computed once
        (see :class:`DegreePasses`); ``None`` where they do not apply (autograd on, residual
        blocks): :meth:`forward_degree` then serves each pass."""
        if torch.is_grad_enabled() or self.residual:
            return None
        return DegreePasses(self, context, batch)

    def _set_hidden_degrees(self, hidden_degrees: Sequence[Tensor]) -> None:
        for i, d in enumerate(hidden_degrees):  # not saved: they follow from the masks
            self.register_buffer(f"_hidden_degrees_{i}", d, persistent=False)
        self._index_cache: dict[tuple[int, str], list[Tensor]] = {}

    def hidden_degrees(self) -> list[Tensor]:
        """Degrees of the hidden units, one tensor per hidden layer: a unit of degree ``k``
        reads the inputs of degree at most ``k`` (degree 0: the context alone)."""
        return [getattr(self, f"_hidden_degrees_{i}") for i in range(self._n_hidden + 1)]

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args, **kwargs) -> None:
        # Older saves have no hidden units of degree 0 (the first feature's parameters ignore
        # the context there): take the layout the saved masks have, before loading them.
        if self.context and self.features > 1:
            units = self._saved_with_context_units(state_dict, prefix)
            if units is not None:
                self._use_layout(units, state_dict.get(prefix + "degrees", self.degrees))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._index_cache.clear()  # the loaded degrees may order the inputs differently

    def _saved_with_context_units(self, state_dict: dict, prefix: str) -> bool | None:
        """Whether the saved output mask connects the first feature to hidden units (of degree
        0); ``None`` when the save holds no mask of this network's size."""
        flat = state_dict.get(prefix + "flat_mask")
        if flat is not None and flat.numel() == sum(self._sizes):
            out = flat.split(self._sizes)[-2].view(self._shapes[-2])
        elif flat is None and prefix + "output.mask" in state_dict:  # the per-layer layout
            out = state_dict[prefix + "output.mask"]
        else:
            return None
        degrees = state_dict.get(prefix + "degrees", self.degrees)
        if degrees.shape != self.degrees.shape or out.shape[0] != self.features * self.params:
            return None
        first = int((degrees == 1).nonzero()[0, 0])
        return bool(out[first * self.params : (first + 1) * self.params].any())

    def _use_layout(self, context_units: bool, degrees: Tensor) -> None:
        """Hidden degrees and masks of the layout with or without units of degree 0."""
        sizes = [len(d) for d in self.hidden_degrees()]
        hidden = _hidden_degrees(self.features, sizes, context_units)
        masks = _masks(degrees.cpu(), hidden, self.params, self.residual)
        assert self.flat_mask is not None
        with torch.no_grad():
            self.flat_mask.copy_(self._flatten_masks(masks))
        self._set_hidden_degrees([d.to(self.degrees.device) for d in hidden])

    def _pruning(self, degree: int, device: torch.device) -> list[tuple[Tensor, Tensor | None]]:
        """``(rows, columns)`` kept of every weight and bias, in layout order (``None``: all
        columns, and a bias has none), for :meth:`forward_degree`."""
        key = (int(degree), str(device))
        if key not in self._index_cache:
            # outside inference mode (a posterior draws in it): passes with autograd index
            # with the same tensors, and autograd cannot save inference tensors
            with torch.inference_mode(False):
                self._index_cache[key] = self._prune(degree, device)
        return self._index_cache[key]

    def _prune(self, degree: int, device: torch.device) -> list[tuple[Tensor, Tensor | None]]:
        units = [(d < degree).nonzero()[:, 0] for d in self.hidden_degrees()]
        (feature,) = (self.degrees == degree).nonzero()[:, 0].tolist() or [None]
        if feature is None:
            raise ValueError(f"no input has degree {degree} (degrees are 1..{self.features})")
        out_rows = torch.arange(self.params) + feature * self.params
        keep = [(units[0], None), (units[0], None)]  # input layer: reads every input
        if self.context:
            keep.append((units[0], None))
        for k in range(self._n_hidden):
            if self.residual:
                keep += [(units[k], units[k]), (units[k], None)]
            keep += [(units[k + 1], units[k]), (units[k + 1], None)]
            if self.context_every_layer:
                keep.append((units[k] if self.residual else units[k + 1], None))
        keep += [(out_rows, units[-1]), (out_rows, None)]
        return [(rows.to(device), None if cols is None else cols.to(device)) for rows, cols in keep]
