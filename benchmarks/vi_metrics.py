"""Metrics of a guide's draws against a posterior's reference draws, shared by the VI
benchmark scripts (``vi_posteriors.py``, ``vi_wallclock.py``, ``vi_fit_defaults.py``)."""

from __future__ import annotations

import numpy as np
import torch
from pyro.infer import Predictive, Trace_ELBO

from pyroflows.datasets import posteriors
from pyroflows.diagnostics import c2st
from pyroflows.diagnostics.importance import psis


def guide_draws(post, guide, n: int) -> dict[str, np.ndarray]:
    with torch.no_grad():
        pred = Predictive(post.model, guide=guide, num_samples=n, parallel=True,
                          return_sites=list(post.reference))(**post.kwargs)  # fmt: skip
    return {k: pred[k].reshape((n,) + post.reference[k].shape[1:]).numpy() for k in post.reference}


def draw_metrics(post, draws: dict, n: int) -> dict:
    """C2ST and moment errors of ``draws`` against the reference (unconstrained space)."""
    ref = posteriors.unconstrain(post)
    q = posteriors.unconstrain(post, draws)
    m, s = ref.mean(0), ref.std(0)
    if not torch.isfinite(q).all():
        return {"c2st": 1.0, "mean_err": float("inf"), "sd_err": float("inf")}
    ref_z, q_z = ((ref - m) / s).numpy(), ((q - m) / s).numpy()
    acc = c2st(q_z[:n], ref_z[:n], "mlp", folds=3, n_bootstrap=0).accuracy
    return {
        "c2st": float(acc),
        "mean_err": float((q.mean(0) - m).abs().div(s).max()),
        "sd_err": float((q.std(0) / s - 1).abs().max()),
    }


def guide_metrics(post, guide) -> dict:
    """Final ELBO (500 particles) and PSIS k-hat (1000 particles) of a trained guide."""
    with torch.no_grad():
        elbo = -Trace_ELBO(num_particles=500, vectorize_particles=True).loss(
            post.model, guide, **post.kwargs
        )
    try:
        k_hat = psis(post.model, guide, num_particles=1000, **post.kwargs).k_hat
    except ValueError:
        k_hat = float("nan")
    return {"elbo": float(elbo), "k_hat": float(k_hat)}


def evaluate(post, guide, n: int) -> dict:
    return {**draw_metrics(post, guide_draws(post, guide, n), n), **guide_metrics(post, guide)}


def failed_row(error: Exception) -> dict:
    return {"c2st": float("nan"), "mean_err": float("nan"), "sd_err": float("nan"),
            "elbo": float("nan"), "k_hat": float("nan"), "error": repr(error)[:200]}  # fmt: skip
