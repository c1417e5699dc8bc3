"""Masked autoregressive layer: MAF, autoregressive NSF and IAF from one class."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from pyroflows.nn import MADE
from pyroflows.transforms.base import FlowTransform
from pyroflows.transforms.univariate import Affine, Univariate


class MaskedAutoregressive(FlowTransform):
    """Autoregressive layer ``x_i = f(z_i; θ_i(·_{<i}, context))`` with a MADE conditioner.

    The univariate transform ``f`` is an argument: :class:`~pyroflows.transforms.Affine` gives
    MAF (Papamakarios et al., 2017), :class:`~pyroflows.transforms.RQS` the autoregressive
    neural spline flow, :class:`~pyroflows.transforms.PiecewiseLinear` a piecewise-linear flow.

    Args:
        dim: number of features.
        univariate: the elementwise transform (default affine).
        context_dim: size of the context (0: unconditional).
        hidden: MADE hidden sizes.
        order: MADE input order (``"natural"``, ``"reversed"``, a seed, or degrees).
        residual: use ResMADE blocks.
        activation: activation module class.
        inverse: ``False`` (MAF): the network reads the data, so ``log_prob`` costs one pass and
            sampling ``dim`` passes. ``True`` (IAF): the network reads the base variable, so
            sampling and scoring one's own samples cost one pass.
        context_every_layer: feed the context to every hidden layer of the MADE, not only the
            first (see :class:`~pyroflows.nn.MLP`).

    Example:
        >>> layer = MaskedAutoregressive(3, context_dim=2)
        >>> z, ladj = layer.inv_and_ladj(torch.randn(10, 3), torch.randn(10, 2))
        >>> z.shape, ladj.shape
        (torch.Size([10, 3]), torch.Size([10]))
    """

    def __init__(
        self,
        dim: int,
        univariate: Univariate | None = None,
        context_dim: int = 0,
        hidden: Sequence[int] = (64, 64),
        order: str | int | Sequence[int] | Tensor = "natural",
        residual: bool = False,
        activation: type[nn.Module] = nn.ReLU,
        inverse: bool = False,
        context_every_layer: bool = False,
    ):
        super().__init__(dim, context_dim)
        self.univariate = univariate if univariate is not None else Affine()
        self.net = MADE(
            dim,
            self.univariate.num_params,
            context_dim,
            hidden,
            order,
            activation,
            residual,
            context_every_layer=context_every_layer,
        ).zero_output_()
        self.iaf = bool(inverse)
        self.inverse_is_fast = not self.iaf

    @property
    def order(self) -> Tensor:
        """Degrees of the features: feature ``i`` depends on features of lower degree."""
        return self.net.degrees

    def one_pass(
        self, u: Tensor, context: Tensor | None = None, inverse: bool = False
    ) -> tuple[Tensor, Tensor, Tensor]:
        """The fast direction's single pass, with the conditioner's output: ``(v, ladj,
        params)`` where the network reads ``u`` itself (the sampling direction of an IAF,
        ``inverse=False``; the density direction of a MAF, ``inverse=True``). Distillation
        matches the ``params`` of a student and its teacher."""
        params = self.net(u, context)
        v, ladj = self.univariate(u.expand(params.shape[:-1]), params, inverse=inverse)
        return v, ladj.sum(-1), params

    def _solve(
        self, u: Tensor, context: Tensor | None, inverse: bool, log_det: bool = True
    ) -> tuple[Tensor, Tensor | None]:
        # The slow direction: one pass per feature, in autoregressive order. The pass for the
        # feature of degree d reads the features already solved and transforms that feature
        # alone. Without autograd (drawing samples) MADE.degree_passes computes each hidden
        # unit once over all the passes; with it (a flow's rsample) every pass runs the part
        # of the network that feeds its feature (MADE.forward_degree), out of place, so that
        # gradients flow through every pass. The first feature reads no feature, only the
        # context: its pass runs once per context row (1 000 rows rather than a million when
        # drawing 1 000 samples for each of 1 000 observations) and its univariate map
        # broadcasts against the draws.
        batch = u.shape[:-1]
        if context is not None:
            batch = torch.broadcast_shapes(batch, context.shape[:-1])
        u = u.expand(batch + u.shape[-1:])
        first = u.new_zeros((() if context is None else context.shape[:-1]) + u.shape[-1:])
        v = u.new_zeros(u.shape)
        ladj = u.new_zeros(batch) if log_det else None
        order = self.net.degrees.argsort()  # the features in solving order
        columns = zip(order.tolist(), order[:, None], strict=True)
        passes = self.net.degree_passes(context, batch)  # without autograd: units once
        weights = self.net.masked_weights() if passes is None else []  # masked once
        for degree, (i, column) in enumerate(columns, start=1):
            if passes is not None:
                params = passes(v, degree)
            else:
                params = self.net.forward_degree(
                    first if degree == 1 else v, context, degree, weights
                )
            if ladj is None:
                v_i = self.univariate.value(u[..., i], params, inverse=inverse)
            else:
                v_i, ladj_i = self.univariate(u[..., i], params, inverse=inverse)
                ladj = ladj + ladj_i
            v = v.index_copy(-1, column, v_i.unsqueeze(-1))
        return v, ladj

    def _params_first(self) -> bool:
        """Whether drawing takes the parameters-first spline: without autograd (it has no
        backward pass), on a univariate map that has it for the sampling direction."""
        first = getattr(self.univariate, "params_first", None)
        return first is not None and not torch.is_grad_enabled() and first(inverse=False)

    def call_and_ladj(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if self.iaf:
            return self.one_pass(z, context, inverse=False)[:2]
        x, ladj = self._solve(z, context, inverse=False)
        assert ladj is not None
        return x, ladj

    def call(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        if self.iaf and self._params_first():
            # a spline over whole slabs: the network's output parameter-first (P, D) + batch
            params = self.net.forward_params_first(z, context)
            u = z.expand(params.shape[2:] + z.shape[-1:]).movedim(-1, 0)
            return self.univariate.value_params_first(u, params).movedim(0, -1)
        if self.iaf:  # one pass, the map without its log-derivative
            params = self.net(z, context)
            return self.univariate.value(z.expand(params.shape[:-1]), params)
        return self._solve(z, context, inverse=False, log_det=False)[0]

    def inv_and_ladj(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if self.iaf:
            z, ladj = self._solve(x, context, inverse=True)
            assert ladj is not None
            return z, ladj
        return self.one_pass(x, context, inverse=True)[:2]

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, univariate={self.univariate}, iaf={self.iaf}"
