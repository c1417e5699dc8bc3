"""The guides compared by ``benchmarks/vi_posteriors.py``, each built for one model.

The guides that take an initial location start from the same one (:func:`init_loc`: the prior
median, or a feasible point for a flat prior, which has no median); ``AutoIAFNormal``, the BNAF
and the zuko NSF start at their base ``N(0, I)`` in the unconstrained space.
"""

from __future__ import annotations

from functools import partial

import torch
from pyro.contrib.zuko import ZukoToPyro
from pyro.distributions import constraints
from pyro.distributions.transforms import block_autoregressive, iterated
from pyro.infer.autoguide import (
    AutoContinuous,
    AutoIAFNormal,
    AutoLowRankMultivariateNormal,
    AutoMultivariateNormal,
    AutoNormal,
    AutoNormalizingFlow,
)
from pyro.infer.autoguide.initialization import init_to_median

import pyroflows as pf


def init_loc(site=None):
    """The prior median (``init_to_median``: 15 prior draws; a flat prior gives its fixed
    point, see :class:`pyroflows.datasets.posteriors.flat.Flat`)."""
    return init_to_median(site)


class _ZukoVector(ZukoToPyro):
    """``ZukoToPyro`` with the support, ``sample`` and ``rsample`` that Pyro's autoguide
    machinery calls (``init_to_sample``, support checks)."""

    support = constraints.real_vector

    def rsample(self, sample_shape=torch.Size()):
        return self(sample_shape)

    def sample(self, sample_shape=torch.Size()):
        with torch.no_grad():
            return self(sample_shape)

    def expand(self, *args, **kwargs):
        return _ZukoVector(self.dist.expand(*args, **kwargs))


class AutoZukoNSF(AutoContinuous):
    """A zuko neural spline flow over the packed unconstrained latent vector (zuko's defaults:
    3 transforms, hidden (64, 64)), inverted so that a draw is one pass per layer, wrapped by
    :class:`pyro.contrib.zuko.ZukoToPyro`."""

    def __init__(self, model, transforms: int = 3, hidden=(64, 64), **kwargs):
        self._zuko_options = {"transforms": transforms, "hidden_features": tuple(hidden)}
        super().__init__(model, **kwargs)

    def _setup_prototype(self, *args, **kwargs):
        import zuko

        super()._setup_prototype(*args, **kwargs)
        flow = zuko.flows.NSF(self.latent_dim, **self._zuko_options)
        flow.transform = flow.transform.inv
        self._zuko = flow

    def get_posterior(self, *args, **kwargs):
        return _ZukoVector(self._zuko())


def _bnaf(model, init_loc_fn):
    del init_loc_fn  # AutoNormalizingFlow starts at its base N(0, I) in the unconstrained space
    return AutoNormalizingFlow(model, partial(iterated, 2, block_autoregressive))


#: name -> constructor(model, init_loc_fn); library defaults except where a choice is needed
GUIDES = {
    "FlowGuide": lambda m, init: pf.FlowGuide(m, init_loc_fn=init),
    # candidates measured against the default on both splits (benchmarks/results/
    # vi_posteriors_default.md): wider conditioners
    "FlowGuide (hidden 64)": lambda m, init: pf.FlowGuide(m, init_loc_fn=init, hidden=(64, 64)),
    # the multi-start start (benchmarks/vi_multistart.py, results/vi_guide_candidates.md)
    "FlowGuide (multistart)": lambda m, init: pf.FlowGuide(
        m, init_loc_fn=init, affine_init="multistart"
    ),
    "AutoNormal": lambda m, init: AutoNormal(m, init_loc_fn=init),
    "AutoMultivariateNormal": lambda m, init: AutoMultivariateNormal(m, init_loc_fn=init),
    "AutoLowRankMVN": lambda m, init: AutoLowRankMultivariateNormal(m, init_loc_fn=init),
    "AutoIAFNormal": lambda m, init: AutoIAFNormal(m),  # starts at its base N(0, I)
    "BNAF (2 blocks)": _bnaf,
    "zuko NSF": lambda m, init: AutoZukoNSF(m, init_loc_fn=init),
}
