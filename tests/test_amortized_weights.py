"""Weighted simulations in ``AmortizedPosterior.fit(theta, x, sample_weight=w)``: integer
weights against repeated simulations, zero weights against left-out simulations, bad weights
refused before any change of state, the effective sample size, and checkpoints that refuse
other weights."""

from __future__ import annotations

import pyro.distributions as dist
import pytest
import torch

from pyroflows.amortized import AmortizedPosterior
from pyroflows.train.weights import effective_sample_size

torch.set_num_threads(1)

#: one full batch, no validation split: the weighted objective is the repeated one exactly
FULL = dict(validation_fraction=0, recipe="one_phase", batch_size=10**6, max_epochs=8,
            seed=0, progress=False)  # fmt: skip


@pytest.fixture(autouse=True)
def _float64():
    """Networks in float64 (built under the default dtype): in float32 the rounding of two
    equal sums in another order grows through Adam's steps to ~1e-4 in 15 steps."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


def _post(flow: str = "maf") -> AmortizedPosterior:
    prior = dist.Normal(torch.zeros(2), 1.0).to_event(1)
    return AmortizedPosterior(prior=prior, flow=flow, flow_kwargs=dict(layers=2, hidden=(16,)))


def _simulations(n: int = 40) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    theta = torch.randn(n, 2, generator=g)
    x = theta + 0.5 * torch.randn(n, 2, generator=g)
    k = torch.randint(1, 6, (n,), generator=g)
    return theta, x, k


def _losses(post: AmortizedPosterior) -> torch.Tensor:
    return torch.tensor(post.history.train_loss, dtype=torch.float64)


@pytest.mark.parametrize("flow", ["maf", "realnvp"])
def test_integer_weights_are_repeated_simulations(flow):
    theta, x, k = _simulations()
    weighted = _post(flow).fit(theta, x, sample_weight=k, **FULL)
    repeated = _post(flow).fit(theta.repeat_interleave(k, 0), x.repeat_interleave(k, 0), **FULL)
    plain = _post(flow).fit(theta, x, **FULL)
    assert (_losses(weighted) - _losses(repeated)).abs().max() < 1e-6
    probe = torch.tensor([[0.3, -0.2]])
    at = [post.log_prob(probe, x[:1]).item() for post in (weighted, repeated, plain)]
    assert at[0] == pytest.approx(at[1], abs=1e-6)
    assert abs(at[0] - at[2]) > 1e-2  # the weights count
    assert weighted.ess_ == pytest.approx(effective_sample_size(k.numpy()))
    assert plain.ess_ is None


def test_zero_weights_are_simulations_left_out():
    theta, x, _ = _simulations()
    far = torch.full((5, 2), 40.0)  # would move the standardisation and the loss if counted
    w = torch.cat([torch.ones(len(theta)), torch.zeros(5)])
    weighted = _post().fit(torch.cat([theta, far]), torch.cat([x, far]), sample_weight=w, **FULL)
    subset = _post().fit(theta, x, **FULL)
    assert (_losses(weighted) - _losses(subset)).abs().max() < 1e-6
    assert weighted.ess_ == pytest.approx(len(theta))


def test_weights_ride_with_their_simulations_through_the_validation_split():
    """With a split, the weighted validation loss is the mean over the repeated held-out
    simulations: all-equal weights give the unweighted fit exactly."""
    theta, x, _ = _simulations(80)
    options = dict(recipe="one_phase", max_epochs=3, seed=0, progress=False)
    equal = _post().fit(theta, x, sample_weight=torch.full((80,), 2.5), **options)
    plain = _post().fit(theta, x, **options)
    assert equal.history.val_loss == pytest.approx(plain.history.val_loss, abs=1e-6)
    assert equal.history.train_loss == pytest.approx(plain.history.train_loss, abs=1e-6)


@pytest.mark.parametrize(
    "weight, message",
    [
        (-1.0, "negative"),
        (float("nan"), "NaN or infinite"),
        (0.0, "all zero"),
        ("short", "one weight per row"),
        ("matrix", "one weight per row"),
    ],
    ids=["negative", "nan", "all-zero", "wrong-length", "2-d"],
)
def test_bad_weights_are_refused_before_any_change(weight, message):
    theta, x, k = _simulations()
    post = _post().fit(theta, x, **FULL)
    before = {key: v.clone() for key, v in post.estimator.state_dict().items()}
    history = post.history
    if weight == "short":
        w = torch.ones(len(theta) - 1)
    elif weight == "matrix":
        w = torch.ones(len(theta), 1)
    elif weight == 0.0:
        w = torch.zeros(len(theta))
    else:
        w = torch.ones(len(theta))
        w[7] = weight
    with pytest.raises(ValueError, match=message):
        post.fit(theta, x, sample_weight=w, **FULL)
    assert post.history is history
    assert all(torch.equal(before[key], v) for key, v in post.estimator.state_dict().items())


def test_zero_weight_on_every_finite_simulation_is_refused():
    theta, x, _ = _simulations(10)
    x[:5] = float("nan")
    w = torch.cat([torch.ones(5), torch.zeros(5)])  # positive only where x is NaN
    post = _post()
    with pytest.raises(ValueError, match="zero on every simulation with finite values"):
        post.fit(theta, x, sample_weight=w, **FULL)
    assert post.estimator is None


def test_weights_of_simulations_with_nan_are_dropped_with_them():
    theta, x, k = _simulations()
    x_bad = x.clone()
    x_bad[3] = float("nan")
    keep = torch.arange(len(theta)) != 3
    with pytest.warns(RuntimeWarning, match="1 of 40 simulations"):
        weighted = _post().fit(theta, x_bad, sample_weight=k, **FULL)
    clean = _post().fit(theta[keep], x[keep], sample_weight=k[keep], **FULL)
    assert (_losses(weighted) - _losses(clean)).abs().max() < 1e-6
    assert weighted.dropped == 1


@pytest.mark.parametrize("mode", ["num_simulations", "simulate_online"])
def test_weights_for_simulations_drawn_by_the_fit_are_refused(mode):
    prior = dist.Normal(torch.zeros(2), 1.0).to_event(1)
    post = AmortizedPosterior(prior=prior, simulator=lambda t: t + torch.randn_like(t))
    call = dict(num_simulations=50) if mode == "num_simulations" else dict(
        simulate_online=True, steps=2)  # fmt: skip
    with pytest.raises(ValueError, match="sample_weight= weighs a fixed set of simulations"):
        post.fit(sample_weight=torch.ones(50), progress=False, **call)
    assert post.estimator is None


def test_val_weight_is_not_a_training_option():
    theta, x, k = _simulations()
    with pytest.raises(TypeError, match="val_weight"):
        _post().fit(theta, x, val_weight=k, progress=False)


def test_a_checkpoint_is_not_resumed_with_other_weights(tmp_path):
    theta, x, k = _simulations()
    path = tmp_path / "run.ckpt"
    options = dict(FULL, max_epochs=2, checkpoint=path)
    _post().fit(theta, x, sample_weight=k, **options)
    other = k.clone()
    other[0] += 1
    post = _post()
    with pytest.raises(ValueError, match="written with other settings"):
        post.fit(theta, x, sample_weight=other, resume=path, **options)
    assert post.estimator is None
    resumed = _post().fit(theta, x, sample_weight=k, resume=path, **options)  # the same: fine
    assert len(resumed.history.train_loss) == 2
