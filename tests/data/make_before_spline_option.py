"""Saved NSF models and the scores they give, for tests/test_spline_direction.py: the files
in this folder were written by this script run on pyroflows main at 451ff06 (before the
spline option), ``git checkout 451ff06 && python tests/data/make_before_spline_option.py``.
Importing it (as ``pytest --doctest-modules`` does) writes nothing."""

from pathlib import Path

import numpy as np
import pyro.distributions as dist
import torch

import pyroflows
from pyroflows import AmortizedPosterior, DensityEstimator


def main() -> None:
    print(pyroflows.__file__)
    out = str(Path(__file__).parent) + "/"
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 2)) @ np.array([[1.0, 0.8], [0.0, 0.6]]) + np.sin(
        rng.normal(size=(300, 2)) * 2
    )
    est = DensityEstimator(
        flow="nsf",
        layers=2,
        hidden=(8,),
        lr=1e-2,
        max_epochs=8,
        ensemble=2,
        progress=False,
        random_state=0,
    ).fit(X)
    est.save(out + "nsf_density_before_spline_option.pt", force=True)
    points = rng.normal(size=(16, 2))
    scores = est.score_samples(points)
    per_member = np.stack([m.score_samples(points) for m in est.ensemble_])

    torch.manual_seed(0)
    prior = dist.Normal(torch.zeros(2), 1.0).to_event(1)
    post = AmortizedPosterior(prior=prior, flow="nsf", flow_kwargs=dict(layers=2, hidden=(8,)))
    theta = prior.sample((400,))
    x = theta + 0.5 * torch.randn_like(theta)
    post.fit(theta, x, max_epochs=5, progress=False, seed=0, recipe="one_phase", lr=1e-2)
    post.save(out + "nsf_posterior_before_spline_option.pt")
    theta_q = torch.randn(8, 2, generator=torch.Generator().manual_seed(3))
    x_q = torch.tensor([[0.3, -0.2]])
    post_lp = post.log_prob(theta_q, x_q)
    torch.save(
        {
            "points": torch.as_tensor(points),
            "scores": torch.as_tensor(scores),
            "member_scores": torch.as_tensor(per_member),
            "theta": theta_q,
            "x": x_q,
            "posterior_log_prob": post_lp.detach(),
        },
        out + "nsf_scores_before_spline_option.pt",
    )
    print(scores[:3], post_lp[:3])


if __name__ == "__main__":
    main()
