"""The spline's direction of the neural spline flow (``RQS.data_to_base``, ``nsf(spline=)``,
``DensityEstimator(spline=)``): exact in both directions, honoured by every save and load, and
files written before the option load with the direction they were trained with."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyro.distributions as dist
import pytest
import torch

import pyroflows as pf
from pyroflows.ops.rqs import rational_quadratic_spline_packed
from pyroflows.transforms import RQS, Coupling, MaskedAutoregressive

from conftest import randomize

F64 = torch.float64
DATA = Path(__file__).parent / "data"
TINY = dict(layers=1, hidden=(8,), max_epochs=4, lr=1e-2, progress=False, random_state=0)


def _directions(flow: pf.Flow) -> set[str]:
    """The ``data_to_base`` of every spline layer of ``flow``."""
    return {
        t.univariate.data_to_base
        for t in flow.transforms
        if isinstance(getattr(t, "univariate", None), RQS)
    }


def _x(n: int, dim: int = 3, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed), dtype=F64) * 1.5


# -- the layers ----------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["autoregressive", "coupling"])
def test_the_forward_direction_scores_data_with_the_spline_itself(kind):
    """With ``data_to_base="forward"`` the density direction is the rational-quadratic spline
    of the conditioner's parameters (as zuko's and nflows' NSF), with its log-derivative; the
    default ``"inverse"`` applies the spline's inverse there, a different map."""
    if kind == "autoregressive":
        layer = randomize(MaskedAutoregressive(3, RQS(6, 3.0, "forward"), hidden=(16,)).double())
    else:
        layer = randomize(Coupling(3, RQS(6, 3.0, "forward"), hidden=(16,)).double())
    x = _x(64)
    z, ladj = layer.inv_and_ladj(x)
    if kind == "autoregressive":
        params, changed = layer.net(x), slice(None)
    else:
        params = layer.net(x[..., layer.kept]).unflatten(-1, (len(layer.changed), -1))
        changed = layer.changed
    want, want_ladj = rational_quadratic_spline_packed(x[..., changed], params, 6, bound=3.0)
    assert torch.allclose(z[..., changed], want, rtol=0, atol=1e-12)
    assert torch.allclose(ladj, want_ladj.sum(-1), rtol=0, atol=1e-12)
    inverse = layer.__class__.__new__(layer.__class__)
    inverse.__dict__.update(layer.__dict__)
    object.__setattr__(inverse, "univariate", RQS(6, 3.0, "inverse"))
    assert (inverse.inv_and_ladj(x)[0] - z).abs().max() > 1e-2


def test_a_forward_flow_log_prob_is_the_change_of_variables():
    """``nsf(spline="forward")`` in float64: draws (sampling applies the inverse spline) are
    scored by ``log_prob`` (the forward spline) exactly as drawn, and ``log_prob`` equals the
    base density of ``transform_to_base(x)`` plus the log-determinant of its autograd
    Jacobian."""
    flow = randomize(pf.nsf(3, layers=3, hidden=(16,), bins=6, spline="forward").double())
    assert _directions(flow) == {"forward"}
    x, drawn = flow.rsample_and_log_prob((32,))
    assert torch.allclose(flow.log_prob(x), drawn, rtol=0, atol=1e-10)
    for point in _x(5):
        jac = torch.autograd.functional.jacobian(flow.transform_to_base, point)
        z = flow.transform_to_base(point)
        want = flow.base.log_prob(z) + torch.linalg.slogdet(jac)[1]
        assert abs(float((flow.log_prob(point) - want).detach())) < 1e-10


def test_nsf_builds_the_direction_asked_for_and_refuses_nonsense():
    assert _directions(pf.nsf(2, layers=2, spline="forward")) == {"forward"}
    assert _directions(pf.nsf(2, layers=2, spline="inverse")) == {"inverse"}
    assert _directions(pf.nsf(2, layers=2, coupling=True, spline="forward")) == {"forward"}
    assert _directions(pf.nsf(2, layers=2, inverse=True, spline="forward")) == {"forward"}
    default = pf.builders.spline_direction(None)
    assert _directions(pf.nsf(2, layers=2)) == {default}
    with pytest.raises(ValueError, match="spline must be 'forward' or 'inverse'"):
        pf.nsf(2, spline="sideways")
    with pytest.raises(ValueError, match="data_to_base must be one of"):
        RQS(8, 5.0, "Forward")
    for family in ("maf", "iaf", "realnvp"):
        with pytest.raises(ValueError, match="spline does not apply"):
            pf.build(family, 2, spline="forward")
    with pytest.raises(ValueError, match="spline does not apply"):
        pf.piecewise_linear(2, spline="forward")


def test_the_estimator_refuses_a_spline_it_cannot_honour():
    X = np.random.default_rng(0).normal(size=(50, 2))
    with pytest.raises(ValueError, match="spline must be"):
        pf.DensityEstimator(flow="nsf", spline="both", **TINY).fit(X)
    with pytest.raises(ValueError, match="spline='forward' has no effect with flow='maf'"):
        pf.DensityEstimator(flow="maf", spline="forward", **TINY).fit(X)


# -- saved models ------------------------------------------------------------------------------
@pytest.mark.parametrize("spline", ["forward", "inverse"])
def test_a_saved_estimator_and_its_ensemble_keep_their_direction(spline, tmp_path):
    X = np.random.default_rng(0).normal(size=(200, 2)) * [1.0, 3.0]
    est = pf.DensityEstimator(flow="nsf", spline=spline, ensemble=2, **TINY).fit(X)
    for member in est.ensemble_:
        assert _directions(member.core_flow_) == {spline}
        assert member._build_["spline"] == spline
    est.save(tmp_path / "m.pt")
    loaded = pf.DensityEstimator.load(tmp_path / "m.pt")
    assert loaded.spline == spline
    for member in loaded.ensemble_:
        assert _directions(member.core_flow_) == {spline}
    assert np.array_equal(loaded.score_samples(X[:20]), est.score_samples(X[:20]))
    with pytest.raises(ValueError, match="cannot be changed at load time"):
        pf.DensityEstimator.load(
            tmp_path / "m.pt", spline="forward" if spline == "inverse" else "inverse"
        )


def test_a_checkpoint_is_resumed_only_with_its_direction(tmp_path):
    X = np.random.default_rng(0).normal(size=(200, 2))
    path = tmp_path / "run.ckpt"
    pf.DensityEstimator(flow="nsf", spline="forward", **TINY).fit(X, checkpoint=path)
    with pytest.raises(ValueError, match="spline_direction"):
        pf.DensityEstimator(flow="nsf", spline="inverse", **TINY).fit(X, resume=path)
    # a checkpoint written before the option has no entry: it held the inverse spline
    blob = torch.load(path, weights_only=True)
    assert blob["fingerprint"].pop("estimator.spline_direction") == "forward"
    torch.save(blob, path)
    with pytest.raises(ValueError, match="checkpoint 'inverse', now 'forward'"):
        pf.DensityEstimator(flow="nsf", spline="forward", **TINY).fit(X, resume=path)


@pytest.mark.parametrize("spline", ["forward", "inverse"])
def test_a_saved_posterior_keeps_its_direction(spline, tmp_path):
    prior = dist.Normal(torch.zeros(2), 1.0).to_event(1)
    post = pf.AmortizedPosterior(
        prior=prior, flow="nsf", flow_kwargs=dict(layers=1, hidden=(8,), spline=spline)
    )
    theta = prior.sample((300,))
    post.fit(theta, theta + torch.randn_like(theta), max_epochs=3, progress=False, seed=0,
             recipe="one_phase", lr=1e-2)  # fmt: skip
    assert _directions(post.estimator.flow) == {spline}
    post.save(tmp_path / "p.pt")
    loaded = pf.AmortizedPosterior.load(tmp_path / "p.pt")
    assert loaded.flow_kwargs["spline"] == spline
    assert _directions(loaded.estimator.flow) == {spline}
    x = torch.tensor([[0.3, -0.2]])
    assert torch.equal(loaded.log_prob(theta[:10], x), post.log_prob(theta[:10], x))


def test_an_unspecified_direction_is_resolved_and_stored():
    """A posterior built without ``spline`` records the direction built, so that a save keeps
    it whatever the default becomes."""
    prior = dist.Normal(torch.zeros(2), 1.0).to_event(1)
    post = pf.AmortizedPosterior(prior=prior, flow="nsf", flow_kwargs=dict(layers=1, hidden=(8,)))
    theta = prior.sample((100,))
    post.fit(theta, theta, max_epochs=1, progress=False, seed=0, recipe="one_phase")
    assert post.flow_kwargs["spline"] == pf.builders.spline_direction(None)


# -- files written before the option (tests/data, by make_before_spline_option.py) ---------------
def test_an_estimator_saved_before_the_option_loads_with_its_scores():
    """The float32 scores are bit-for-bit on the kind of CPU that wrote the file; another CPU's
    kernels round differently (about 1e-7 on an AMD EPYC), so they are compared to 1e-5: the
    other spline direction would move them by whole nats."""
    expected = torch.load(DATA / "nsf_scores_before_spline_option.pt", weights_only=True)
    loaded = pf.DensityEstimator.load(DATA / "nsf_density_before_spline_option.pt")
    assert loaded.spline == "inverse"
    points = expected["points"].numpy()
    close = dict(rtol=0, atol=1e-5)
    np.testing.assert_allclose(loaded.score_samples(points), expected["scores"].numpy(), **close)
    for member, scores in zip(loaded.ensemble_, expected["member_scores"], strict=True):
        assert _directions(member.core_flow_) == {"inverse"}
        np.testing.assert_allclose(member.score_samples(points), scores.numpy(), **close)


def test_a_posterior_saved_before_the_option_loads_bit_for_bit():
    expected = torch.load(DATA / "nsf_scores_before_spline_option.pt", weights_only=True)
    loaded = pf.AmortizedPosterior.load(DATA / "nsf_posterior_before_spline_option.pt")
    assert loaded.flow_kwargs["spline"] == "inverse"
    assert _directions(loaded.estimator.flow) == {"inverse"}
    log_prob = loaded.log_prob(expected["theta"], expected["x"])
    assert torch.equal(log_prob, expected["posterior_log_prob"])
