"""Posterior summaries of :class:`~pyroflows.vi.FlowGuide`, as a mixin: joint draws with the
model's enumerated and deterministic sites (as ``pyro.infer.Predictive`` gives them), Monte
Carlo quantiles and medians with a fixed seed, and ArviZ ``InferenceData``. A new summary of a
fitted guide goes here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pyro
import torch
from pyro import poutine
from pyro.distributions.transforms import biject_to
from pyro.infer import infer_discrete
from torch import Tensor

from pyroflows.train.seeding import seeded_draws
from pyroflows.validation import positive_int
from pyroflows.vi.sites import unvectorise, vectorise

__all__ = ["PosteriorSummaries"]


class PosteriorSummaries:
    """The summaries of a set-up :class:`~pyroflows.vi.FlowGuide` (its ``flow``, prototype
    trace, model and the sites found in it)."""

    def _require_setup(self, args, kwargs) -> None:
        if self.prototype_trace is not None:
            if args or kwargs:
                self._check_latent_shapes(args, kwargs)
            return
        try:
            self._setup_prototype(*args, **kwargs)
        except TypeError as error:
            if args or kwargs:
                raise
            raise ValueError(
                "this FlowGuide is not fitted or set up yet, and running the model without "
                f"arguments failed ({error}); call guide.fit(*model_args) first, or pass the "
                "model's arguments: guide.sample_posterior(num_samples, *model_args)"
            ) from None

    def _with_model_sites(self, result: dict[str, Tensor], args, kwargs) -> dict[str, Tensor]:
        """Add the enumerated discrete sites (drawn from their conditional posterior given each
        continuous draw, Pyro's ``infer_discrete``) and the deterministic sites."""
        if not self._full_sites:
            return result
        if not args and not kwargs and self._model_args is not None:
            args, kwargs = self._model_args
        num = len(next(iter(result.values())))
        nesting = self._nesting
        data = {}
        for name, site in self.prototype_trace.iter_stochastic_nodes():
            data[name] = vectorise(result[name], site["fn"].event_dim, nesting)

        def vectorised(*a, **k):
            with pyro.plate("_num_samples", num, dim=-(nesting + 1)):
                return self._model_fn(*a, **k)

        model = poutine.condition(vectorised, data=data)
        if self._enumerated_sites:
            model = infer_discrete(model, first_available_dim=-(nesting + 2), temperature=1)
        with poutine.block():
            trace = poutine.trace(model).get_trace(*args, **kwargs)
        result = dict(result)
        for name, (shape, _) in self._full_sites.items():
            result[name] = unvectorise(trace.nodes[name]["value"].detach(), num, shape)
        return result

    @torch.no_grad()
    def sample_posterior(self, num_samples: int = 1000, *args, **kwargs) -> dict[str, Tensor]:
        """``num_samples`` joint posterior draws: ``{site: tensor (num_samples, *shape)}``
        (full plates), drawn in one vectorised pass. Enumerated discrete sites are drawn from
        their conditional posterior given each draw (``infer_discrete``) and deterministic
        sites are computed, as ``pyro.infer.Predictive`` gives them; both run the model, with
        the arguments given here or else those of the last :meth:`fit`.

        Raises:
            ValueError: ``num_samples`` not a positive integer, or the guide is not set up
                and the model needs arguments.
        """
        num_samples = positive_int("num_samples", num_samples)
        self._require_setup(args, kwargs)
        latent = self.flow.sample((int(num_samples),))
        result, pos = {}, 0
        for name, site in self.prototype_trace.iter_stochastic_nodes():
            shape = self._unconstrained_shapes[name]
            u = latent[:, pos : pos + math.prod(shape)].reshape(len(latent), *shape)
            result[name] = biject_to(site["fn"].support)(u)
            pos += math.prod(shape)
        return self._with_model_sites(result, args, kwargs)

    @torch.no_grad()
    def quantiles(
        self, quantiles: Sequence[float] | Tensor, *args, num_samples: int = 4096, seed: int = 0,
        **kwargs,
    ) -> dict[str, Tensor]:  # fmt: skip
        """Elementwise posterior quantiles of each site, ``{site: (len(quantiles), *shape)}``:
        Monte Carlo estimates from ``num_samples`` draws with a fixed ``seed`` (reproducible)."""
        q = torch.as_tensor(quantiles, dtype=torch.float64).reshape(-1)
        if not len(q) or not bool(((q >= 0) & (q <= 1)).all()):
            raise ValueError(f"quantiles must lie in [0, 1], got {quantiles!r}")
        self._require_setup(args, kwargs)
        with seeded_draws(seed):
            draws = self.sample_posterior(num_samples, *args, **kwargs)
        result = {}
        for name, value in draws.items():
            value = value if value.is_floating_point() else value.double()
            q = torch.as_tensor(quantiles, dtype=value.dtype, device=value.device).reshape(-1)
            result[name] = torch.quantile(value.reshape(len(value), -1), q, dim=0).reshape(
                len(q), *value.shape[1:]
            )
        return result

    @torch.no_grad()
    def median(self, *args, num_samples: int = 4096, seed: int = 0, **kwargs) -> dict[str, Tensor]:
        """Elementwise posterior medians ``{site: tensor}`` (Monte Carlo, fixed ``seed``)."""
        return {
            name: q[0]
            for name, q in self.quantiles(
                [0.5], *args, num_samples=num_samples, seed=seed, **kwargs
            ).items()
        }

    def to_inference_data(self, num_samples: int = 1000, chains: int = 4, *args, **kwargs):
        """Posterior draws as an ``arviz.InferenceData`` (``chains`` x ``num_samples /
        chains`` independent draws, site names as variables)."""
        from pyroflows.inference_data import to_inference_data

        return to_inference_data(self.sample_posterior(num_samples, *args, **kwargs), chains=chains)
