"""Pyro models with their data, for the variational-inference examples."""

from __future__ import annotations

from collections.abc import Callable

import torch


# -- a Pyro model with its data -------------------------------------------------------------------
def eight_schools() -> tuple[Callable[..., None], tuple[torch.Tensor, torch.Tensor]]:
    """Rubin's eight schools: the non-centred hierarchical model and its data.

    ``mu ~ N(0, 5)``, ``tau ~ HalfCauchy(5)``, ``eta_j ~ N(0, 1)``,
    ``y_j ~ N(mu + tau eta_j, sigma_j)`` for the estimated treatment effects ``y`` and their
    standard errors ``sigma``.

    Returns:
        ``(model, (y, sigma))``; the model is called as ``model(y, sigma)``.

    Example:
        >>> model, (y, sigma) = eight_schools()
        >>> y.shape, sigma.shape
        (torch.Size([8]), torch.Size([8]))
    """
    import pyro
    import pyro.distributions as dist

    def model(y: torch.Tensor, sigma: torch.Tensor) -> None:
        mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
        tau = pyro.sample("tau", dist.HalfCauchy(5.0))
        with pyro.plate("school", len(y)):
            eta = pyro.sample("eta", dist.Normal(0.0, 1.0))
            pyro.sample("y", dist.Normal(mu + tau * eta, sigma), obs=y)

    y = torch.tensor([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
    sigma = torch.tensor([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])
    return model, (y, sigma)
