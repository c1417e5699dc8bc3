"""``AmortizedFlowGuide``: a conditional flow for a local latent variable inside a data plate,
its context an encoder of each data point (e.g. a VAE with a flow posterior).

The guide mirrors the model's plates (subsampling included, as Pyro's autoguides do): with a
subsampled plate it encodes only the current minibatch rows, so its cost per step does not grow
with the data set. Global latents are left to another guide in an ``AutoGuideList``, e.g.
``FlowGuide(poutine.block(model, hide=["z"]))`` next to ``AmortizedFlowGuide(model, "z", ...)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import ExitStack

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions.transforms import biject_to
from pyro.infer.autoguide import AutoGuide
from torch import Tensor, nn
from torch.distributions.transforms import ComposeTransform, IndependentTransform, ReshapeTransform

from pyroflows.flows import Flow
from pyroflows.vi.guide import guide_flow

__all__ = ["AmortizedFlowGuide"]


#: the plate Pyro's ELBOs add with ``vectorize_particles=True`` (draws, not data points)
_PARTICLES = "num_particles_vectorized"


def _is_identity(t) -> bool:
    while isinstance(t, IndependentTransform):
        t = t.base_transform
    return isinstance(t, ComposeTransform) and not t.parts


def _first_arg(*args, **kwargs) -> Tensor:
    return args[0]


class AmortizedFlowGuide(AutoGuide):
    """Guide ``q(z_i | x_i) = flow(encoder(x_i))`` for the local latent site ``site``.

    Args:
        model: the Pyro model; ``site`` must sit inside one vectorised plate over data points
            (dimension ``-1`` of the batch shape, after the event dimensions).
        site: name of the local latent site.
        encoder: module mapping data rows ``(B, ...)`` to contexts ``(B, context_dim)``.
        data: ``data(*args, **kwargs)`` returns the data tensor whose first dimension is
            indexed by the plate (default: the model's first argument).
        flow: ``"nsf"``, ``"iaf"``, ``"realnvp"`` (conditional, sampling-cheap direction) or a
            callable ``(dim, context_dim) -> Flow``.
        layers, hidden, **flow_kwargs: size of a built flow.

    Example:
        >>> def model(x):
        ...     with pyro.plate("data", len(x)):
        ...         z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        ...         pyro.sample("x", dist.Normal(z.sum(-1), 1.0), obs=x)
        >>> guide = AmortizedFlowGuide(model, "z", nn.Linear(1, 4), data=lambda x: x[:, None],
        ...                            layers=1, hidden=(8,))
        >>> guide(torch.randn(5))["z"].shape
        torch.Size([5, 2])
    """

    def __init__(
        self,
        model: Callable,
        site: str,
        encoder: nn.Module,
        data: Callable[..., Tensor] = _first_arg,
        flow: str | Callable[[int, int], Flow] = "nsf",
        layers: int = 3,
        hidden: Sequence[int] = (64, 64),
        create_plates: Callable | None = None,
        **flow_kwargs,
    ):
        super().__init__(model, create_plates=create_plates)
        self.site = site
        self.encoder = encoder
        self._data = data
        self._flow_spec = flow
        self._flow_kwargs = dict(flow_kwargs, layers=layers, hidden=tuple(hidden))

    def _setup_prototype(self, *args, **kwargs) -> None:
        super()._setup_prototype(*args, **kwargs)
        if self.site not in self.prototype_trace.nodes:
            raise ValueError(f"the model has no latent site {self.site!r}")
        node = self.prototype_trace.nodes[self.site]
        self._support = node["fn"].support
        self._stack = [f for f in node["cond_indep_stack"] if f.vectorized and f.name != _PARTICLES]
        if not self._stack:
            raise ValueError(f"site {self.site!r} is not inside a plate over data points")
        if len(self._stack) > 1:  # q(z | x_i) would be broadcast over the other plates
            names = ", ".join(repr(f.name) for f in self._stack)
            raise ValueError(
                f"site {self.site!r} is inside {len(self._stack)} vectorised plates ({names}); "
                "AmortizedFlowGuide needs exactly one plate over data points: flatten the "
                "plates into one, so that every data point has its own row of data"
            )
        if self._stack[0].dim != -1:
            raise ValueError(
                f"the plate {self._stack[0].name!r} of site {self.site!r} is at dim "
                f"{self._stack[0].dim}; AmortizedFlowGuide needs it at dim -1 (the rightmost "
                "batch dimension)"
            )
        unconstrained = biject_to(self._support).inv(node["value"].detach())
        event_dim = node["fn"].event_dim + unconstrained.dim() - node["value"].dim()
        self._event_shape = unconstrained.shape[unconstrained.dim() - event_dim :]
        self._site_event_dim = node["fn"].event_dim
        dim = max(1, math.prod(self._event_shape))
        with torch.no_grad():
            context_dim = self.encoder(self._data(*args, **kwargs)[:2]).shape[-1]
        if callable(self._flow_spec):
            flow = self._flow_spec(dim, context_dim)
        else:
            flow = guide_flow(self._flow_spec, dim, context_dim=context_dim, **self._flow_kwargs)
        ref = unconstrained
        self.flow = flow.to(device=ref.device, dtype=ref.dtype)

    def _distribution(self, context: Tensor) -> dist.TorchDistribution:
        flow_dist = self.flow(context)
        transforms = []
        if tuple(self._event_shape) != (flow_dist.event_shape[-1],):
            transforms.append(
                ReshapeTransform(flow_dist.event_shape, self._event_shape, cache_size=1)
            )
        to_support = biject_to(self._support)
        if not _is_identity(to_support):
            transforms.append(to_support.with_cache(1))
        if not transforms:
            return flow_dist
        return dist.TransformedDistribution(flow_dist, transforms)

    def posterior(self, x: Tensor) -> dist.TorchDistribution:
        """``q(z | x)`` for data rows ``x`` (batch shape ``(len(x),)``), in the site's support."""
        return self._distribution(self.encoder(x))

    def forward(self, *args, **kwargs) -> dict[str, Tensor]:
        if self.prototype_trace is None:
            self._setup_prototype(*args, **kwargs)
        plates = self._create_plates(*args, **kwargs)
        x = self._data(*args, **kwargs)
        with ExitStack() as stack:
            for frame in self._stack:
                indices = stack.enter_context(plates[frame.name])
                full = frame.full_size or frame.size
                if len(x) != full:  # else one row's posterior broadcast, or rows misaligned
                    raise ValueError(
                        f"data(...) gave {len(x)} rows for the plate {frame.name!r} of {full} "
                        "data points: the guide needs one row per data point"
                    )
                if full != frame.size:
                    x = x.index_select(0, indices)
            return {self.site: pyro.sample(self.site, self.posterior(x))}
