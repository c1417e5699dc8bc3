"""AmortizedFlowGuide on a linear-Gaussian latent model with an exact posterior per data point,
trained on minibatches (subsampled plate)."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam
from torch import nn

from pyroflows.vi import AmortizedFlowGuide

torch.set_num_threads(1)

A = torch.tensor([[1.0, 0.5], [0.0, 1.0], [1.0, -1.0]])
NOISE = 0.5


def model(x, batch=None):
    with pyro.plate("data", len(x), subsample_size=batch) as idx:
        z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        pyro.sample("x", dist.Normal(z @ A.T, NOISE).to_event(1), obs=x[idx])


def exact_posterior(x):
    precision = torch.eye(2) + A.T @ A / NOISE**2
    cov = torch.linalg.inv(precision)
    return x @ (A / NOISE**2) @ cov, cov


def test_amortized_guide_recovers_exact_posteriors_from_minibatches():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2000, 2, generator=g)
    x = z @ A.T + NOISE * torch.randn(2000, 3, generator=g)
    encoder = nn.Sequential(nn.Linear(3, 32), nn.ReLU(), nn.Linear(32, 8))
    guide = AmortizedFlowGuide(model, "z", encoder, flow="realnvp", layers=2, hidden=(32,))
    svi = SVI(
        model, guide, Adam({"lr": 3e-3}), Trace_ELBO(num_particles=4, vectorize_particles=True)
    )
    for _ in range(1500):
        svi.step(x, 100)
    new = torch.randn(200, 2, generator=g) @ A.T
    mean, cov = exact_posterior(new)
    with torch.no_grad():
        draws = guide.posterior(new).sample((2000,))  # (2000, 200, 2)
    err = (draws.mean(0) - mean).abs().max().item()
    assert err < 0.15, err
    sd = draws.std(0).mean(0)
    assert torch.allclose(sd, cov.diagonal().sqrt(), rtol=0.15), (sd, cov.diagonal().sqrt())


def test_constrained_scalar_local_latent():
    def scale_model(x):
        with pyro.plate("data", len(x)):
            s = pyro.sample("s", dist.LogNormal(0.0, 1.0))
            pyro.sample("x", dist.Normal(0.0, s), obs=x)

    guide = AmortizedFlowGuide(scale_model, "s", nn.Linear(1, 4), data=lambda x: x[:, None].abs(),
                               flow="iaf", layers=1, hidden=(8,))  # fmt: skip
    x = torch.randn(7)
    out = guide(x)
    assert out["s"].shape == (7,) and bool((out["s"] > 0).all())
    svi = SVI(scale_model, guide, Adam({"lr": 1e-2}), Trace_ELBO())
    assert torch.isfinite(torch.tensor(svi.step(x)))


def _plate_model(x):
    with pyro.plate("data", 5):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(z, 0.1), obs=x)


def _nested_model(x):
    with pyro.plate("groups", 3, dim=-2), pyro.plate("data", 5, dim=-1):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(z, 0.1), obs=x)


def _dim2_model(x):
    with pyro.plate("data", 5, dim=-2):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(z, 0.1), obs=x)


@pytest.mark.parametrize(
    "model, x, data, match",
    [  # each ran before: one q(z | x_i) broadcast over the groups or over every data point,
        # or draws of another shape than the model's site
        (_nested_model, torch.randn(3, 5), lambda x: x.reshape(-1, 1)[:5], "2 vectorised plates"),
        (_dim2_model, torch.randn(5, 1), lambda x: x, "at dim -2"),
        (_plate_model, torch.randn(5), lambda x: x[:1, None], "gave 1 rows .* of 5 data points"),
        (_plate_model, torch.randn(5), lambda x: torch.cat([x, x])[:, None], "gave 10 rows"),
    ],
    ids=["nested-plates", "plate-at-dim-2", "one-row-broadcast", "more-rows"],
)
def test_refuses_a_plate_layout_where_rows_and_data_points_disagree(model, x, data, match):
    guide = AmortizedFlowGuide(model, "z", nn.Linear(1, 4), data=data, layers=1, hidden=(8,))
    with pytest.raises(ValueError, match=match):
        guide(x)


def test_vectorised_particles_are_not_a_data_plate():
    guide = AmortizedFlowGuide(_plate_model, "z", nn.Linear(1, 4), data=lambda x: x[:, None],
                               layers=1, hidden=(8,))  # fmt: skip
    elbo = Trace_ELBO(num_particles=3, vectorize_particles=True, max_plate_nesting=1)
    assert math.isfinite(elbo.loss(_plate_model, guide, torch.randn(5)))
