"""Protocol (b)'s NUTS run (``benchmarks/vi_wallclock.py``) stops at its wall-clock cap: the
draws it made so far are kept, in each site's constrained space; with no draws it says so."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from vi_wallclock import _nuts_for  # noqa: E402

from pyroflows.datasets.posteriors.load import Posterior  # noqa: E402


def _scale_model():
    pyro.sample("scale", dist.LogNormal(torch.tensor(2.0), torch.tensor(0.1)))


def _post() -> Posterior:
    ref = {"scale": np.exp(2.0 + 0.1 * np.random.default_rng(0).standard_normal(100))}
    return Posterior(name="lognormal", model=_scale_model, kwargs={}, reference=ref,
                     split="development", kind="test", source="exact")  # fmt: skip


def test_nuts_without_a_cap_returns_constrained_draws():
    pyro.set_rng_seed(0)
    samples, seconds, note = _nuts_for(_post(), budget=0.0, n=20, cap=1e6)
    assert note == ""
    assert samples["scale"].shape == (20,)  # warm-up = samples = the minimum of 20
    # constrained (about e^2 = 7.4), not the unconstrained log-scale (about 2)
    assert abs(float(np.log(samples["scale"]).mean()) - 2.0) < 0.15
    assert seconds > 0


def test_nuts_stopped_before_any_draw_has_no_draws_and_says_so():
    pyro.set_rng_seed(0)
    samples, _, note = _nuts_for(_post(), budget=0.0, n=20, cap=0.0)
    assert samples == {}
    assert note == "did not finish in 0 s: no draws"
