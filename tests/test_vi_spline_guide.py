"""Spline layers in :class:`~pyroflows.vi.FlowGuide` (``flow="nsf"``): they start at the
identity, so the untrained guide is exactly its start (the Laplace Gaussian), they follow a
curved target more closely than affine layers of the same size (a banana with an exact log
density), and their options are checked when the guide is built."""

from __future__ import annotations

import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyroflows.vi import FlowGuide

CURVE, NOISE = 1.5, 0.5


def _banana():
    """``a ~ N(0, 1)``, ``b | a ~ N(1.5 a^2, 0.5^2)``: normalised, so KL(q || p) = -ELBO."""
    a = pyro.sample("a", dist.Normal(torch.tensor(0.0, dtype=torch.float64), 1.0))
    pyro.sample("b", dist.Normal(CURVE * a.square(), NOISE))


def _banana_log_p(z: torch.Tensor) -> torch.Tensor:
    a, b = z[..., 0], z[..., 1]
    return dist.Normal(0.0, 1.0).log_prob(a) + dist.Normal(CURVE * a.square(), NOISE).log_prob(b)


def _kl_to_banana(guide: FlowGuide, n: int = 8000) -> float:
    """Monte Carlo KL(q || p) of the trained guide against the exact banana density."""
    with torch.no_grad(), pyro.poutine.block():
        generator_state = torch.get_rng_state()
        torch.manual_seed(1)
        q = guide.get_posterior()
        z = q.sample((n,))
        kl = float((q.log_prob(z) - _banana_log_p(z)).mean())
        torch.set_rng_state(generator_state)
    return kl


def _correlated():
    """A correlated 3-D Gaussian target: its Laplace approximation is the target itself."""
    cov = torch.tensor([[1.0, 0.8, 0.2], [0.8, 2.0, -0.5], [0.2, -0.5, 0.5]], dtype=torch.float64)
    loc = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    pyro.sample("x", dist.MultivariateNormal(loc, cov))


@pytest.mark.parametrize(
    "options",
    [dict(flow="nsf"), dict(flow="nsf", coupling=True), dict(flow="iaf")],
    ids=["nsf-autoregressive", "nsf-coupling", "iaf"],
)
def test_untrained_guide_is_exactly_its_laplace_gaussian(options):
    guide = FlowGuide(_correlated, affine_init="laplace", layers=2, hidden=(8, 8), **options)
    guide()
    assert guide.start_["start"] == "laplace"
    mean, scale_tril = guide.flow.transforms[-1].mean_and_scale_tril
    laplace = dist.MultivariateNormal(mean.detach(), scale_tril=scale_tril.detach())
    x = laplace.sample((200,)) * 1.5  # also where the splines' bins are far from the centre
    with torch.no_grad():
        log_q = guide.get_posterior().log_prob(x)
    assert torch.allclose(log_q, laplace.log_prob(x), rtol=0, atol=1e-6)
    # and the Laplace Gaussian is the target (a Gaussian model), so the start is exact
    assert torch.allclose(mean, torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64), atol=1e-4)


def test_spline_guide_fits_a_curved_target_better_than_the_affine_one():
    """Same start, size, steps and seed: measured KL 0.50 (nsf) against 0.85 (iaf); with
    seeds 1 and 2, 0.49 against 0.75 and 0.52 against 0.85 (at 200 steps the order varies
    with the seed, so the test runs 300)."""
    kls = {}
    for family in ("iaf", "nsf"):
        pyro.clear_param_store()
        guide = FlowGuide(_banana, flow=family, layers=2, hidden=(16, 16))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            guide.fit(steps=300, seed=0, progress=False, check_convergence=False)
        kls[family] = _kl_to_banana(guide)
    assert kls["nsf"] > 0 and kls["iaf"] > 0  # a KL estimate from 8 000 draws
    assert kls["nsf"] < 0.8 * kls["iaf"], kls


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (dict(flow="nsf", bins=0), "bins must be a positive integer"),
        (dict(flow="nsf", bound=-1.0), "bound must be a positive finite number"),
        (dict(flow="nsf", bound=float("inf")), "bound must be a positive finite number"),
        (dict(flow="iaf", bins=8), "affine layers have no bins"),
        (dict(flow="iaf", bound=5.0), "affine layers act on the whole real line"),
        (dict(flow="nsf", coupling=True, order="random"), "coupling layers alternate"),
        (dict(flow="nsf", stl=True), "stl=True is not supported with spline layers"),
    ],
    ids=["bins-zero", "bound-negative", "bound-infinite", "iaf-bins", "iaf-bound",
         "coupling-order", "spline-stl"],
)  # fmt: skip
def test_spline_options_are_refused_when_invalid(options, message):
    with pytest.raises(ValueError, match=message):
        guide = FlowGuide(_correlated, layers=1, hidden=(4,), **options)
        guide()  # stl is checked when the flow exists
