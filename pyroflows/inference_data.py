"""The one place that talks to ArviZ: draws of named parameters -> ``arviz.InferenceData``.

Written against the ArviZ 0.2x API (``az.from_dict``), which is what pip resolves on Python
3.11; a move to ArviZ 1.x (``xarray.DataTree``) touches only this module. ArviZ is imported
when a conversion is asked for, not when pyroflows is imported.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from pyroflows.train.seeding import seeded_draws

__all__ = ["from_posterior", "to_inference_data"]


def _array(value: Any, name: str) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    arr = np.asarray(value)
    if arr.ndim < 2:
        raise ValueError(
            f"draws of {name!r} must have shape (chain, draw, ...), got shape {arr.shape}"
        )
    return arr


def to_inference_data(
    posterior: Mapping[str, Any],
    *,
    chains: int | None = None,
    observed_data: Mapping[str, Any] | None = None,
    posterior_predictive: Mapping[str, Any] | None = None,
    sample_stats: Mapping[str, Any] | None = None,
    dims: Mapping[str, list[str]] | None = None,
    coords: Mapping[str, Any] | None = None,
):
    """Build an ``arviz.InferenceData`` from draws keyed by parameter name.

    Args:
        posterior: ``{name: draws}``; each array is ``(chain, draw, *event)``, or
            ``(draw, *event)`` together with ``chains`` (the draws are split into that many
            chains of equal length; a flow's independent draws make every split valid).
        chains: split flat ``(draw, ...)`` arrays into this many chains.
        observed_data, posterior_predictive, sample_stats: optional groups, same layout as
            ``posterior`` (observed data without chain/draw dimensions).
        dims, coords: passed to ``az.from_dict``.

    Example:
        >>> idata = to_inference_data({"mu": np.zeros((1000, 2))}, chains=4)
        >>> dict(idata.posterior.sizes)["draw"], dict(idata.posterior.sizes)["chain"]
        (250, 4)
    """
    import arviz as az

    def group(values: Mapping[str, Any] | None, split: bool) -> dict[str, np.ndarray] | None:
        if values is None:
            return None
        out = {}
        for name, value in values.items():
            if hasattr(value, "detach"):
                value = value.detach().cpu().numpy()
            arr = np.asarray(value)
            if split and chains is not None:
                if arr.ndim < 1 or arr.shape[0] % chains:
                    raise ValueError(
                        f"{arr.shape[0] if arr.ndim else 0} draws of {name!r} do not split "
                        f"into {chains} chains of equal length"
                    )
                arr = arr.reshape(chains, arr.shape[0] // chains, *arr.shape[1:])
            out[name] = _array(arr, name) if split else arr
        return out

    if chains is not None and (not isinstance(chains, int) or chains < 1):
        raise ValueError(f"chains must be a positive integer, got {chains!r}")
    if not posterior:
        raise ValueError("posterior has no parameters")
    return az.from_dict(
        posterior=group(posterior, True),
        posterior_predictive=group(posterior_predictive, True),
        sample_stats=group(sample_stats, True),
        observed_data=group(observed_data, False),
        dims=dict(dims) if dims else None,
        coords=dict(coords) if coords else None,
    )


def from_posterior(
    post: Any,
    x: Any,
    num_samples: int,
    chains: int,
    seed: int,
    posterior_predictive: bool,
):
    """The body of ``AmortizedPosterior.to_inference_data`` (see there): draws for one
    observation ``x`` under the model's site names, the observation (its real rows in the
    model's layout), and with ``posterior_predictive`` data simulated at every draw. Reads
    the posterior through its public methods and its ``observations`` (no import of
    :mod:`pyroflows.amortized`: this module stays below it)."""

    observations = post.observations
    batch, single = observations.check(x)
    if not single:
        raise ValueError("to_inference_data takes one observation, not a batch")
    if posterior_predictive and post.sim is None:
        raise ValueError(
            "posterior_predictive=True needs a simulator: construct with a Pyro model or "
            "prior + simulator"
        )
    draws = post.sample(batch[0], num_samples, seed=seed)
    observed = observations.real_rows(batch[0])  # with sizes: padding dropped
    predictive = None
    if posterior_predictive:
        with seeded_draws(seed):
            if observations.sizes is not None:  # the observation's size, the model's layout
                n = len(observed)
                replicated = post.simulate_data(draws, size=n)[:, :n]
                replicated = observations.to_model_layout(replicated)
            else:
                replicated = post.simulate_data(draws)
        predictive = {post.observed: replicated.detach().cpu().numpy()}
    observed = observations.to_model_layout(observed)
    return to_inference_data(
        {k: v.numpy() for k, v in post.space.unflatten(draws).items()},
        chains=chains,
        observed_data={post.observed: observed.numpy()},
        posterior_predictive=predictive,
    )
