"""Ensembles of amortized posteriors (``AmortizedPosterior(..., ensemble=k)``): members are
the single fits of their seeds, the mixture's density and draws are the exact equal-weight
mixture, save / load, checkpoints per member, and what an ensemble refuses."""

from __future__ import annotations

import math

import pyro.distributions as dist
import pytest
import torch

from pyroflows.amortized import AmortizedPosterior
from pyroflows.amortized.ensemble import check_redrawable, redrawn
from pyroflows.nn.summary import Conv1dSummary, DeepSet, MLPSummary, RecurrentSummary, SetAttention

torch.set_num_threads(1)

FAST = dict(recipe="one_phase", max_epochs=3, progress=False)


def _post(ensemble: int = 1, flow: str = "maf") -> AmortizedPosterior:
    prior = dist.Normal(torch.zeros(2), 1.0).to_event(1)
    return AmortizedPosterior(prior=prior, simulator=lambda t: t + 0.5 * torch.randn_like(t),
                              flow=flow, flow_kwargs=dict(layers=2, hidden=(16,)),
                              ensemble=ensemble)  # fmt: skip


def _simulations(n: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    theta = torch.randn(n, 2, generator=g)
    return theta, theta + 0.5 * torch.randn(n, 2, generator=g)


@pytest.fixture(scope="module")
def fitted() -> AmortizedPosterior:
    theta, x = _simulations()
    return _post(3).fit(theta, x, seed=5, **FAST)


def test_member_i_is_the_single_fit_with_seed_plus_i(fitted):
    theta, x = _simulations()
    for i in (0, 2):
        single = _post().fit(theta, x, seed=5 + i, **FAST)
        assert fitted.members[i].history.train_loss == single.history.train_loss
        assert fitted.members[i].history.val_loss == single.history.val_loss
    losses = [m.history.val_loss[-1] for m in fitted.members]
    assert len(set(losses)) == 3  # other seeds, other splits


def test_a_simulated_fit_draws_one_set_of_simulations_for_every_member():
    """The simulations a single fit with that seed draws, then member i's tensor fit."""
    from pyroflows.amortized.recipe import seeded

    ensemble = _post(2).fit(num_simulations=150, seed=3, **FAST)
    single = _post()
    with seeded(3):
        theta, x = single._simulate_many(150)
    for i, member in enumerate(ensemble.members):
        alone = _post().fit(theta, x, seed=3 + i, **FAST)
        assert member.history.train_loss == alone.history.train_loss


def test_log_prob_is_the_log_mean_of_the_members_densities(fitted):
    theta = torch.randn(7, 4, 2, generator=torch.Generator().manual_seed(0))
    x = torch.randn(4, 2, generator=torch.Generator().manual_seed(1))
    each = torch.stack([m.log_prob(theta, x) for m in fitted.members])
    expected = torch.log(each.exp().mean(0))
    assert torch.allclose(fitted.log_prob(theta, x), expected, atol=1e-10)
    assert fitted.log_prob(theta, x).shape == (7, 4)


def test_draws_pick_a_member_per_draw():
    """Member 1 moved by +100 in the parameters' standardisation: half of the mixture's draws
    lie near 100 (binomial, 4 sd), and there the mixture density is member 1's minus log 2."""
    theta, x = _simulations()
    post = _post(2).fit(theta, x, seed=0, **FAST)
    affine = post.members[1].theta_pre.transforms[0]
    name = next(k for k, v in affine.state_dict().items() if v.dim() == 1)
    with torch.no_grad():
        getattr(affine, name).add_(100.0)
    draws = post.sample(torch.zeros(2), 4000, seed=1)
    far = (draws[:, 0] > 50).double().mean().item()
    assert abs(far - 0.5) < 4 * math.sqrt(0.25 / 4000)
    near_100 = draws[draws[:, 0] > 50][:5]
    alone = post.members[1].log_prob(near_100, torch.zeros(2))
    assert torch.allclose(post.log_prob(near_100, torch.zeros(2)), alone - math.log(2), atol=1e-6)
    assert torch.equal(draws, post.sample(torch.zeros(2), 4000, seed=1))  # seeded
    assert post.sample(torch.zeros(3, 2), 10).shape == (10, 3, 2)


def test_save_load_round_trip(fitted, tmp_path):
    path = tmp_path / "ensemble.pt"
    fitted.save(path)
    loaded = AmortizedPosterior.load(path)
    assert len(loaded.members) == 3
    theta, x = torch.zeros(5, 2), torch.ones(2)
    assert torch.equal(loaded.log_prob(theta, x), fitted.log_prob(theta, x))
    assert torch.equal(loaded.sample(x, 20, seed=4), fitted.sample(x, 20, seed=4))


def test_a_checkpoint_is_one_file_per_member(tmp_path):
    theta, x = _simulations()
    path = tmp_path / "run.ckpt"
    first = _post(2).fit(theta, x, seed=0, checkpoint=path, **FAST)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.member0.ckpt", "run.member1.ckpt"]
    again = _post(2).fit(theta, x, seed=0, checkpoint=path, resume=path, **FAST)
    for a, b in zip(first.members, again.members, strict=True):
        assert a.history.train_loss == b.history.train_loss
    other = _post(2)
    with pytest.raises(ValueError, match="written with other settings"):
        other.fit(theta + 1, x, seed=0, checkpoint=path, resume=path, **FAST)
    assert all(m.estimator is None for m in other.members)  # all or nothing


@pytest.mark.parametrize("bad", [0, -2, 1.5, "3", True])
def test_a_bad_ensemble_size_is_refused(bad):
    with pytest.raises((ValueError, TypeError), match="ensemble"):
        _post(bad)


def test_what_an_ensemble_does_not_offer_is_refused(fitted):
    for call in (lambda: fitted.distil(num_simulations=10),
                 lambda: fitted.check_observation(torch.zeros(2)),
                 lambda: fitted.calibrate_check(20)):  # fmt: skip
        with pytest.raises(ValueError, match="not available for an ensemble"):
            call()


def test_a_failed_member_leaves_every_member_as_it_was():
    theta, x = _simulations()
    post = _post(2).fit(theta, x, seed=0, **FAST)
    before = [m.history for m in post.members]
    with pytest.raises(ValueError):
        post.fit(theta, x, seed=0, lr=-1.0, **FAST)
    assert [m.history for m in post.members] == before


def _fake_members(post: AmortizedPosterior, device: str) -> None:
    """Members whose draws are float64 on ``device``, each row holding its member's index."""
    for i, member in enumerate(post.members):
        member.sample = lambda x, n, sampler="auto", i=i: torch.full(
            (n, 2), float(i), dtype=torch.float64, device=device
        )


def test_mixture_draws_keep_the_members_dtype_and_rows():
    post = _post(3).fit(*_simulations(50), seed=0, **FAST)
    _fake_members(post, "cpu")
    draws = post.sample(torch.zeros(2), 300, seed=2)
    assert draws.dtype == torch.float64
    with torch.random.fork_rng():
        torch.manual_seed(2)
        pick = torch.randint(3, (300,))
    assert torch.equal(draws, pick.to(torch.float64)[:, None].expand(300, 2))


def test_mixture_draws_stay_on_the_members_device():
    """The members' draws on another device (``meta`` stands in for a GPU on a CPU test):
    the mixture is built there, not on the CPU."""
    post = _post(2).fit(*_simulations(50), seed=0, **FAST)
    _fake_members(post, "meta")
    draws = post.sample(torch.zeros(2), 40, seed=0)
    assert draws.device.type == "meta" and draws.shape == (40, 2)


def _summarised(ensemble: int = 2, summary: torch.nn.Module | None = None) -> AmortizedPosterior:
    prior = dist.Normal(torch.zeros(2), 1.0).to_event(1)
    return AmortizedPosterior(
        prior=prior, simulator=lambda t: t + 0.5 * torch.randn_like(t), flow="maf",
        summary=MLPSummary(2, 3, hidden=(8,)) if summary is None else summary,
        flow_kwargs=dict(layers=1, hidden=(8,)), ensemble=ensemble,
    )  # fmt: skip


def test_each_member_starts_from_its_own_summary_network():
    """A rate of 1e-12 leaves the networks where they started: the members' summary networks
    start apart, and the network passed is left as it was."""
    post = _summarised(2)
    passed = {k: v.clone() for k, v in post.summary.state_dict().items()}
    post.fit(*_simulations(60), seed=0, recipe="one_phase", lr=1e-12, max_epochs=1,
             progress=False)  # fmt: skip
    first, second = (m.estimator.summary.state_dict() for m in post.members)
    for key in first:
        assert (first[key] - second[key]).abs().max() > 1e-3, key
    assert all(torch.equal(v, post.summary.state_dict()[k]) for k, v in passed.items())


def test_an_ensemble_fit_is_reproducible_for_a_seed():
    theta, x = _simulations(60)
    fits = [_summarised(2).fit(theta, x, seed=seed, **FAST) for seed in (4, 4, 5)]
    states = [[m.estimator.state_dict() for m in fit.members] for fit in fits]
    for a, b in zip(states[0], states[1], strict=True):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    key = next(k for k in states[0][0] if k.startswith("summary."))
    assert not torch.equal(states[0][0][key], states[2][0][key])


SMALL_SUMMARIES = {
    "MLPSummary": lambda: MLPSummary(2, 3, hidden=(4,)),
    "DeepSet": lambda: DeepSet(2, 3, hidden=4),
    "SetAttention": lambda: SetAttention(2, 3, dim=4, heads=2, blocks=1),
    "RecurrentSummary": lambda: RecurrentSummary(2, 3, hidden=4),
    "Conv1dSummary": lambda: Conv1dSummary(2, 3, channels=(4,), kernel=3, length=4),
}


@pytest.mark.parametrize("name", sorted(SMALL_SUMMARIES))
def test_every_summary_network_is_drawn_again_whole_and_reproducibly(name):
    net = SMALL_SUMMARIES[name]()
    check_redrawable(net)
    again, same = redrawn(net, 1), redrawn(net, 1)
    for key, value in net.named_parameters():
        assert torch.equal(dict(again.named_parameters())[key], dict(same.named_parameters())[key])
        if value.numel() > 1 and value.std() > 0:  # drawn at random (not LayerNorm's ones)
            assert not torch.equal(dict(again.named_parameters())[key], value), key


class _Bare(torch.nn.Module):
    """A summary network whose parameter no ``reset_parameters`` draws."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(2, 3))

    def forward(self, x):
        return x @ self.w


def test_a_summary_network_that_cannot_be_drawn_again_is_refused_before_simulating():
    calls = []
    post = _summarised(2, _Bare())
    for member in post.members:
        simulate = member.sim.simulator
        member.sim.simulator = lambda t, f=simulate: calls.append(1) or f(t)
    with pytest.raises(ValueError, match=r"reset_parameters.*\['w'\]"):
        post.fit(num_simulations=50, seed=0, **FAST)
    assert calls == [] and all(m.estimator is None for m in post.members)
