"""The mixture start of ``DensityEstimator``: the full-covariance mixture base, the choice of
the mixture on validation rows, the flow that starts exactly at it, and the loop's validated
start that keeps a member from ending worse than it began."""

from __future__ import annotations

import copy
import math
import time
import warnings

import numpy as np
import pyro.distributions as dist
import pytest
import torch
from sklearn.mixture import GaussianMixture as SkMixture
from torch import nn

import pyroflows as pf
from pyroflows import density_mixture
from pyroflows.baselines import GMMDensity
from pyroflows.bases import FullGaussianMixture
from pyroflows.density_mixture import mixture_base
from pyroflows.train import fit


def _mixture_parameters(k: int = 3, d: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(k, d, d, generator=g, dtype=torch.float64)
    covariances = a @ a.transpose(-1, -2) + 0.2 * torch.eye(d, dtype=torch.float64)
    weights = torch.rand(k, generator=g, dtype=torch.float64) + 0.1
    means = 2 * torch.randn(k, d, generator=g, dtype=torch.float64)
    return weights, means, covariances


def _correlated(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 3))
    z[: n // 2] += 4.0
    return z @ np.array([[1.0, 0.8, 0.3], [0.0, 0.4, 0.5], [0.0, 0.0, 0.2]]) * [1.0, 10.0, 0.1]


# -- the full-covariance base ---------------------------------------------------------------
def test_full_mixture_log_prob_is_torch_mixture_of_multivariate_normals():
    weights, means, covariances = _mixture_parameters()
    base = FullGaussianMixture.from_parameters(weights, means, covariances)
    assert base.loc.dtype == torch.float64
    reference = dist.MixtureSameFamily(
        dist.Categorical(weights / weights.sum()), dist.MultivariateNormal(means, covariances)
    )
    z = torch.randn(5, 4, 3, dtype=torch.float64)
    expected = reference.log_prob(z)
    torch.testing.assert_close(base.log_prob(z), expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(base.distribution().log_prob(z), expected, rtol=0, atol=1e-12)
    assert base.distribution(torch.Size([2])).batch_shape == (2,)


def test_full_mixture_samples_have_the_mixture_mean_and_covariance():
    weights, means, covariances = _mixture_parameters()
    base = FullGaussianMixture.from_parameters(weights, means, covariances)
    torch.manual_seed(0)
    draws = base.sample(torch.Size([200_000]))
    p = weights / weights.sum()
    mean = p @ means
    second = (p[:, None, None] * (covariances + means[:, :, None] * means[:, None, :])).sum(0)
    covariance = second - mean[:, None] * mean[None, :]
    # standard errors of these moments are below 0.02 for these parameters
    torch.testing.assert_close(draws.mean(0), mean, rtol=0, atol=0.05)
    torch.testing.assert_close(draws.T.cov(), covariance, rtol=0.02, atol=0.05)
    with pytest.raises(NotImplementedError, match="reparametrised"):
        base.rsample(torch.Size([2]))


def test_full_mixture_follows_dtype_device_and_state_dict():
    weights, means, covariances = _mixture_parameters()
    base = FullGaussianMixture.from_parameters(weights, means, covariances)
    z = torch.randn(7, 3, dtype=torch.float64)
    fresh = FullGaussianMixture(3, 3).double()
    fresh.load_state_dict(base.state_dict())
    torch.testing.assert_close(fresh.log_prob(z), base.log_prob(z), rtol=0, atol=0)
    single = copy.deepcopy(base).float()  # .float() converts in place
    assert single.log_prob(z.float()).dtype == torch.float32
    assert single.sample(torch.Size([4])).dtype == torch.float32
    meta = FullGaussianMixture(3, 2).to("meta")
    assert meta.log_prob(torch.zeros(5, 3, device="meta")).shape == (5,)
    # the masked upper triangle is no parameter of the density
    with torch.no_grad():
        fresh.off_diag.add_(torch.ones(3, 3).triu(1))
    torch.testing.assert_close(fresh.log_prob(z), base.log_prob(z), rtol=0, atol=0)


def test_full_mixture_refuses_bad_parameters():
    weights, means, covariances = _mixture_parameters()
    with pytest.raises(ValueError, match=r"covariances \(K, D, D\)"):
        FullGaussianMixture.from_parameters(weights, means, covariances[:, :2, :2])
    bad = covariances.clone()
    bad[1] = -torch.eye(3)
    with pytest.raises(ValueError, match="covariance of component 1 is not positive definite"):
        FullGaussianMixture.from_parameters(weights, means, bad)
    with pytest.raises(ValueError, match="weights must be positive"):
        FullGaussianMixture.from_parameters(-weights, means, covariances)


def test_a_flow_on_the_full_mixture_starts_exactly_at_it():
    """The spline layers start at the identity, inside and outside their interval."""
    base = FullGaussianMixture.from_parameters(*_mixture_parameters())
    flow = pf.nsf(3, layers=3, hidden=(16, 16), base=base).double()
    z = 4 * torch.randn(50, 3, dtype=torch.float64)  # reaches beyond the bound 5
    torch.testing.assert_close(flow.log_prob(z).detach(), base.log_prob(z).detach(),
                               rtol=0, atol=1e-12)  # fmt: skip


# -- choosing the mixture -------------------------------------------------------------------
def _sklearn_fits(Z: np.ndarray, up_to: int = 10):
    """Full, diagonal and tied mixtures with 1 to ``up_to`` components, with scikit-learn
    alone."""
    return [
        SkMixture(k, covariance_type=kind, random_state=0, max_iter=200).fit(Z)
        for k in range(1, up_to + 1)
        for kind in ("full", "diag", "tied")
    ]


def test_mixture_base_is_the_best_full_or_diagonal_mixture_on_validation():
    X = _correlated(400)
    Z, Z_val = torch.as_tensor(X[:300]), torch.as_tensor(X[300:])
    base, choice = mixture_base(Z, Z_val, seed=0)
    best = max(_sklearn_fits(X[:300]), key=lambda m: m.score(X[300:]))
    assert (choice.covariance_type, choice.components) == (best.covariance_type,
                                                           best.n_components)  # fmt: skip
    assert choice.covariance_type == "full" and isinstance(base, FullGaussianMixture)
    # the best count is 2: 3 and 4 do not beat it, so the search stops there
    assert len(choice.scores) == 12 and choice.stopped == "patience" and choice.space == "flow"
    np.testing.assert_allclose(base.log_prob(Z_val).detach().numpy(), best.score_samples(X[300:]),
                               rtol=0, atol=1e-9)  # fmt: skip


@pytest.mark.parametrize("kind", ["full", "diag", "tied"])
def test_a_mixture_fitted_in_the_data_units_is_carried_exactly_into_the_flow_space(kind):
    """``x = loc + L z``: a mixture fitted to ``x`` becomes a base whose log-density at ``z``
    is the mixture's at ``x`` plus ``log|det L|``, and its score is ranked in those units."""
    loc = torch.tensor([5.0, -2.0, 100.0], dtype=torch.float64)
    L = torch.tensor([[2.0, 0, 0], [1.5, 0.5, 0], [-3.0, 1.0, 10.0]], dtype=torch.float64)
    Z = torch.as_tensor(_correlated(400, seed=2)) / 4
    X = (loc + Z @ L.T).numpy()
    space = density_mixture._Space.affine(Z[:300], Z[300:], loc, L)
    fitted = SkMixture(2, covariance_type=kind, random_state=0).fit(space.train)
    np.testing.assert_allclose(space.train, X[:300], rtol=1e-12)
    base = space.to_flow(fitted)
    expected = fitted.score_samples(X[300:]) + np.log(np.diag(L.numpy())).sum()
    np.testing.assert_allclose(base.log_prob(Z[300:]).detach().numpy(), expected, atol=1e-9)
    np.testing.assert_allclose(space.score(fitted), expected, atol=1e-12)
    _, choice = mixture_base(Z[:300], Z[300:], seed=0, data_map=(loc, L))
    assert {key.split(" (")[1] for key in choice.scores} == {"flow)", "data)"}


def test_mixture_base_one_se_rule_keeps_the_smallest_close_candidate(monkeypatch):
    """One Gaussian: every larger mixture is within noise of the best on validation, so the
    rule keeps one component (the fewest parameters: diagonal, equal here to full)."""
    monkeypatch.setattr(density_mixture, "MIXTURE_RULE", "one_se")
    rng = np.random.default_rng(3)
    X = torch.as_tensor(rng.normal(size=(300, 2)))
    _, choice = mixture_base(X[:200], X[200:], seed=0)
    assert (choice.covariance_type, choice.components) == ("diag", 1)
    monkeypatch.setattr(density_mixture, "MIXTURE_RULE", "worst")
    with pytest.raises(ValueError, match="MIXTURE_RULE must be one of"):
        mixture_base(X[:200], X[200:], seed=0)


def _six_blobs(n_per: int = 150, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Six unit Gaussians on a circle of radius 6 in 2-D, shuffled: (training, validation)."""
    rng = np.random.default_rng(seed)
    angles = np.arange(6) * np.pi / 3
    centres = 6 * np.stack([np.cos(angles), np.sin(angles)], 1)
    X = np.concatenate([c + rng.normal(size=(n_per, 2)) for c in centres])
    X = torch.as_tensor(X[rng.permutation(len(X))])
    return X[: 2 * len(X) // 3], X[2 * len(X) // 3 :]


class _Clock:
    """A fake clock for the mixture search: every candidate's EM fit takes ``per_fit``
    seconds on it (a slow or a fast machine; times its components with ``by_components``),
    and nothing else moves it."""

    def __init__(self, monkeypatch, per_fit: float, by_components: bool = False):
        self.now, self.per_fit = 0.0, per_fit
        real_fit = density_mixture._fit

        def timed_fit(*args):
            self.now += self.per_fit * (args[1] if by_components else 1)
            return real_fit(*args)

        monkeypatch.setattr(density_mixture, "_fit", timed_fit)
        clock = type("Clock", (), {"perf_counter": staticmethod(lambda: self.now)})
        monkeypatch.setattr(density_mixture, "time", clock)


def test_mixture_start_is_the_same_on_a_slow_and_a_fast_clock_and_the_validated_gmms(
    monkeypatch,
):
    """Six blobs, a 10 s budget: at 1 ms per EM fit and at 0.08 s per fit (0.24 s per count
    of components, the eight counts 1.9 s, inside the search's share of the budget), the
    search keeps the same start, with the validated GMM's six components, and stops by
    validation two counts later (not by time)."""
    train, val = _six_blobs()
    chosen, clock = {}, _Clock(monkeypatch, 0.0)
    for per_fit in (1e-3, 0.08):
        clock.per_fit = per_fit
        base, choice = mixture_base(train, val, seed=0, seconds=10.0)
        chosen[per_fit] = (choice, base.log_prob(val).detach().numpy())
    (fast, fast_log_p), (slow, slow_log_p) = chosen.values()
    assert (slow.name, slow.scores) == (fast.name, fast.scores)
    np.testing.assert_array_equal(slow_log_p, fast_log_p)
    assert slow.stopped == fast.stopped
    gmm = GMMDensity(one_se_rule=False, random_state=0)
    gmm.fit(train.numpy(), X_val=val.numpy())
    assert fast.components == gmm.n_components_ == 6
    assert fast.stopped == "patience"
    assert max(int(key.split(" x ")[1].split()[0]) for key in fast.scores) == 8


def test_mixture_search_cut_by_its_share_of_the_time_budget_says_so(monkeypatch):
    """A search whose first count (always fitted) spends more than its share of the budget
    fits no second count, warns that the start depends on the machine's speed and records
    why it stopped; the estimator reports it in ``candidates_``."""
    train, val = _six_blobs()
    _Clock(monkeypatch, 5.0)  # the first count (three fits) spends 15 s of a 10 s budget
    with pytest.warns(UserWarning, match="mixture start used its share .* after 1 components"):
        _, choice = mixture_base(train, val, seed=0, seconds=10.0)
    assert sorted(choice.scores) == ["diag x 1 (flow)", "full x 1 (flow)", "tied x 1 (flow)"]
    assert choice.stopped == "time share" and choice.as_plain()["stopped"] == "time share"
    est = pf.DensityEstimator(time_budget=5.0, max_epochs=2, random_state=0, progress=False)
    with pytest.warns(UserWarning, match="choosing the Gaussian mixture start"):
        est.fit(train.numpy(), X_val=val.numpy())
    mixture = next(c["mixture"] for c in est.candidates_ if c["mixture"])
    assert mixture["stopped"] == "time share" and mixture["components"] == 1


@pytest.mark.parametrize("budget", [4.0, 8.0])
def test_mixture_search_uses_at_most_its_share_of_the_time_budget(monkeypatch, budget):
    """EM fits of 0.04 s per component on a fake clock (the six blobs' whole search, eight
    counts, takes 4.3 s): the search never passes ``MIXTURE_SHARE`` of the budget (1.6 s
    of 4 s, 3.2 s of 8 s), stops between candidates ("time share"), and keeps the best of the
    candidates it fitted; the count cut short fitted its candidates in the order of their
    scores at the count before, so it keeps the most promising ones."""
    train, val = _six_blobs()
    _Clock(monkeypatch, 0.04, by_components=True)
    with pytest.warns(UserWarning, match="used its share"):
        _, choice = mixture_base(train, val, seed=0, seconds=budget)
    share = density_mixture.MIXTURE_SHARE * budget
    assert 0.6 * share < choice.seconds <= share
    assert choice.stopped == "time share"
    assert choice.scores[choice.name] == max(choice.scores.values())
    # the first count fits the cheapest covariance type first; the count cut short fitted
    # the candidates that scored highest at the count before first
    first = [key.split(" x ")[0] for key in choice.scores if " x 1 (" in key]
    assert first == list(density_mixture.MIXTURE_TYPES) and first[0] == "diag"
    last = max(int(key.split(" x ")[1].split()[0]) for key in choice.scores)
    cut = [key.split(" x ")[0] for key in choice.scores if f" x {last} (" in key]
    before = {key.split(" x ")[0]: v for key, v in choice.scores.items()
              if f" x {last - 1} (" in key}  # fmt: skip
    assert 0 < len(cut) < 3
    assert cut == sorted(before, key=before.get, reverse=True)[: len(cut)]


def _six_blobs_two_spaces():
    """The six blobs in the flow's space with an affine map to data units (two spaces)."""
    train, val = _six_blobs()
    loc = torch.tensor([3.0, -1.0], dtype=torch.float64)
    L = torch.tensor([[2.0, 0.0], [0.7, 0.5]], dtype=torch.float64)
    return train, val, (loc, L)


def _per_count(choice) -> dict[int, list[str]]:
    """The candidates fitted at each count of components, ``"kind (space)"``."""
    out: dict[int, list[str]] = {}
    for key in choice.scores:
        kind, rest = key.split(" x ")
        k, space = rest.split(" ")
        out.setdefault(int(k), []).append(f"{kind} {space}")
    return out


def test_a_search_the_share_binds_goes_on_with_its_leader(monkeypatch):
    """``MIXTURE_NARROW`` (off by default) against the search without it. Two spaces, EM fits
    of 0.02 s per component on a fake clock, a 10 s budget (a 4 s share): with every
    candidate (6 fits, 0.12 s per component) the search is cut in the eighth count (3.36 s
    after seven). Before the seventh count, it and the eighth are predicted to end at 4.32 s,
    past the share, so the narrowed search fits only the leader of the sixth count from then
    on (0.14 s, 0.16 s), ends by validation as the search without a budget does, and keeps
    the same start: six components."""
    train, val, data_map = _six_blobs_two_spaces()
    clock = _Clock(monkeypatch, 0.02, by_components=True)
    monkeypatch.setattr(density_mixture, "MIXTURE_NARROW", False)
    with pytest.warns(UserWarning, match="used its share"):
        _, wide = mixture_base(train, val, seed=0, seconds=10.0, data_map=data_map)
    assert wide.stopped == "time share" and max(_per_count(wide)) == 8
    assert all(len(c) == 6 for k, c in _per_count(wide).items() if k < 8)
    monkeypatch.setattr(density_mixture, "MIXTURE_NARROW", True)
    clock.now = 0.0
    _, narrow = mixture_base(train, val, seed=0, seconds=10.0, data_map=data_map)
    assert narrow.seconds == pytest.approx(0.12 * 21 + 0.02 * (7 + 8))
    _, unbounded = mixture_base(train, val, seed=0, data_map=data_map)
    assert narrow.stopped == unbounded.stopped == "patience"
    assert narrow.name == unbounded.name and narrow.components == 6
    counts = _per_count(narrow)
    assert [len(counts[k]) for k in range(1, 9)] == [6] * 6 + [1, 1]
    sixth = {c: narrow.scores[f"{c.split()[0]} x 6 {c.split()[1]}"] for c in counts[6]}
    assert counts[7] == counts[8] == [max(sixth, key=sixth.get)]


def test_a_search_the_share_does_not_bind_is_not_narrowed(monkeypatch):
    """Two spaces on a fast clock (1 ms per fit): the rest of the search is never predicted
    to pass the share, so the search with a budget fits both spaces at every count and
    keeps exactly the start of the search without one."""
    train, val, data_map = _six_blobs_two_spaces()
    _Clock(monkeypatch, 1e-3)
    monkeypatch.setattr(density_mixture, "MIXTURE_NARROW", True)
    _, budgeted = mixture_base(train, val, seed=0, seconds=10.0, data_map=data_map)
    _, unbounded = mixture_base(train, val, seed=0, data_map=data_map)
    assert (budgeted.name, budgeted.scores, budgeted.stopped) == (
        unbounded.name, unbounded.scores, unbounded.stopped,
    )  # fmt: skip
    assert all(len(c) == 6 for c in _per_count(budgeted).values())


def test_last_count_is_the_components_half_the_rows_and_the_work_cap(monkeypatch):
    assert density_mixture._last_count(10_000) == 9  # 10 000 x 45 within 500 000, x 55 not
    assert density_mixture._last_count(1_000) == 10
    assert density_mixture._last_count(8) == 4
    monkeypatch.setattr(density_mixture, "MIXTURE_WORK", 1)
    assert density_mixture._last_count(1_000) == 1


@pytest.mark.parametrize("share", [0.0, 1.5, -0.2])
def test_a_share_outside_0_1_is_refused_before_any_fit(monkeypatch, share):
    train, val = _six_blobs(n_per=20)
    monkeypatch.setattr(density_mixture, "MIXTURE_SHARE", share)
    monkeypatch.setattr(density_mixture, "_fit", lambda *a: pytest.fail("fitted"))
    with pytest.raises(ValueError, match=r"MIXTURE_SHARE must lie in \(0, 1\]"):
        mixture_base(train, val, seed=0, seconds=10.0)


def test_mixture_search_without_a_budget_does_not_depend_on_the_clock(monkeypatch):
    """No time budget: on a clock where every EM fit takes 100 s, the search makes the same
    choice, with the same scores, as on a fast one (and as a second run), and stops by
    validation."""
    train, val = _six_blobs()
    chosen, clock = [], _Clock(monkeypatch, 0.0)
    for per_fit in (1e-3, 100.0, 1e-3):
        clock.per_fit = per_fit
        _, choice = mixture_base(train, val, seed=0)
        chosen.append((choice.name, choice.scores, choice.stopped))
    assert chosen[0] == chosen[1] == chosen[2]
    assert chosen[0][2] == "patience"


def test_the_plain_member_trains_when_the_mixture_search_is_slow(monkeypatch):
    """EM fits that really take 0.1 s each (0.6 s per count: two spaces, three covariance
    types) on ten well separated blobs, whose search would run past a 3 s budget: the search
    stops at its share of the budget, so the plain member still trains its pilot of at
    least three validation epochs and improves on its first epoch."""
    rng = np.random.default_rng(0)
    centres = 8 * rng.normal(size=(10, 2))
    X = np.concatenate([c + rng.normal(size=(60, 2)) for c in centres])[rng.permutation(600)]
    real_fit = density_mixture._fit

    def slow_fit(*args):
        time.sleep(0.1)
        return real_fit(*args)

    monkeypatch.setattr(density_mixture, "_fit", slow_fit)
    # torch imports its compiler when a process builds its first optimiser (seconds, outside
    # the budget's accounting): done here, so that this test alone times what it means to
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])
    est = pf.DensityEstimator(layers=2, hidden=(16,), time_budget=3.0, random_state=0,
                              progress=False)  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        est.fit(X[:500], X_val=X[500:])
    gmm, plain = (next(c for c in est.candidates_ if c["name"] == n) for n in ("nsf-gmm", "nsf"))
    assert len(plain["history"].val_loss) >= 3
    assert plain["best_loss"] < plain["history"].val_loss[0]
    assert gmm["mixture"]["seconds"] <= 0.4 * 3.0
    assert gmm["mixture"]["stopped"] == "time share"
    assert any("used its share" in str(w.message) for w in caught)


def test_mixture_search_stops_at_the_rows_times_components_cap(monkeypatch):
    """``MIXTURE_WORK``: 600 rows x (1 + 2) components fit under 2000, x (1 + 2 + 3) not."""
    train, val = _six_blobs(n_per=150)
    monkeypatch.setattr(density_mixture, "MIXTURE_WORK", 2000)
    _, choice = mixture_base(train, val, seed=0)
    assert {key.split(" x ")[1].split()[0] for key in choice.scores} == {"1", "2"}
    assert choice.stopped == "work"
    _, choice = mixture_base(train, val, seed=0, seconds=1e9)  # a budget changes nothing
    assert choice.stopped == "work"


# -- the estimator --------------------------------------------------------------------------
def test_an_untrained_gmm_member_scores_as_the_chosen_mixture():
    """``score_samples`` of a member that has not moved from its start is the log-density of
    the best mixture on the validation rows, among those fitted in the flow's space and in
    the data's units, to 1e-5 (computed here with scikit-learn and the fitted pre-transform)."""
    X = _correlated(500)
    est = pf.DensityEstimator(
        flow="nsf", base="gmm", layers=2, hidden=(8,), max_epochs=1, lr=1e-12,
        dtype="float64", progress=False, random_state=0,
    ).fit(X[:400], X_val=X[400:])  # fmt: skip
    with torch.no_grad():
        Z, _ = est.preprocessor_.to_latent(torch.as_tensor(X[:400]))
        Z_val, ladj = est.preprocessor_.to_latent(torch.as_tensor(X[400:]))
    Z, Z_val, ladj = Z.numpy(), Z_val.numpy(), ladj.numpy()
    # log p in the data's units of the validation rows, for every candidate the search
    # tried (it stopped by validation: 2 components best, 3 and 4 not better)
    mixture = est.candidates_[0]["mixture"]
    tried = max(int(key.split(" x ")[1].split()[0]) for key in mixture["scores"])
    assert (tried, mixture["stopped"]) == (4, "patience")
    candidates = [(m, m.score_samples(Z_val) + ladj) for m in _sklearn_fits(Z, tried)]
    candidates += [(m, m.score_samples(X[400:])) for m in _sklearn_fits(X[:400], tried)]
    best, expected = max(candidates, key=lambda c: c[1].mean())
    assert (mixture["covariance_type"], mixture["components"]) == (best.covariance_type,
                                                                   best.n_components)  # fmt: skip
    assert est._build_["components"] == best.n_components
    np.testing.assert_allclose(est.score_samples(X[400:]), expected, rtol=0, atol=1e-5)
    np.testing.assert_allclose(est.history_.start_loss, -expected.mean(), rtol=0, atol=1e-7)


def test_the_kept_member_is_never_worse_on_validation_than_the_mixture_start():
    """A learning rate that wrecks every step: the start (the chosen mixture) stays the best
    state, so the estimator is the mixture and its validation loss is the mixture's."""
    X = _correlated(500, seed=1)
    est = pf.DensityEstimator(
        layers=2, hidden=(8,), max_epochs=3, lr=0.5, clip_grad=None, dtype="float64",
        progress=False, random_state=0,
    ).fit(X[:400], X_val=X[400:])  # fmt: skip
    gmm = next(c for c in est.candidates_ if c["name"] == "nsf-gmm")
    start = gmm["start_loss"]
    assert math.isfinite(start)
    assert gmm["history"].best_epoch == -1 and gmm["best_loss"] == start
    assert min(gmm["history"].val_loss) > start  # training made it worse
    assert est.history_.best_loss <= start
    np.testing.assert_allclose(-est.score_samples(X[400:]).mean(), est.history_.best_loss,
                               rtol=0, atol=1e-9)  # fmt: skip


@pytest.mark.parametrize(
    ("kind", "base"), [("full", FullGaussianMixture), ("tied", FullGaussianMixture),
                       ("diag", pf.GaussianMixture)],
)  # fmt: skip
def test_a_mixture_started_estimator_saves_and_loads(tmp_path, monkeypatch, kind, base):
    monkeypatch.setattr(density_mixture, "MIXTURE_TYPES", (kind,))
    X = _correlated(300)
    est = pf.DensityEstimator(
        flow="nsf", base="gmm", layers=1, hidden=(8,), max_epochs=2, progress=False,
        random_state=0, whiten=False,
    ).fit(X)  # fmt: skip
    assert isinstance(est.flow_.base, base)
    est.save(tmp_path / "m.pt")
    loaded = pf.DensityEstimator.load(tmp_path / "m.pt")
    assert isinstance(loaded.flow_.base, base)
    np.testing.assert_array_equal(loaded.score_samples(X[:20]), est.score_samples(X[:20]))


def test_a_checkpoint_for_another_mixture_is_refused(tmp_path, monkeypatch):
    X = _correlated(300)
    path = tmp_path / "run.ckpt"
    kw = dict(flow="nsf", base="gmm", layers=1, hidden=(8,), max_epochs=2, progress=False,
              random_state=0)  # fmt: skip
    first = pf.DensityEstimator(**kw).fit(X, checkpoint=path)
    assert first._build_["components"] > 1
    monkeypatch.setattr(density_mixture, "MIXTURE_COMPONENTS", (1,))
    refused = r"estimator\.mixture \(checkpoint '\w+ x \d+ \(\w+\)', now '\w+ x 1 "
    with pytest.raises(ValueError, match=refused):
        pf.DensityEstimator(**kw).fit(X, resume=path)


# -- the loop's validated start ---------------------------------------------------------------
class _Scalar(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))


def _squared(model: nn.Module, batch) -> torch.Tensor:
    return (model.w - batch[0]).square().mean()


@pytest.mark.parametrize("validate_start", [True, False])
def test_validate_start_keeps_a_start_that_training_only_worsens(validate_start):
    """Training pulls ``w`` from 0 towards 1; the validation loss ``(w - 0)^2`` is lowest
    at the start. Only a validated start keeps it."""
    model = _Scalar()
    history = fit(model, _squared, torch.ones(8), torch.zeros(4), lr=0.1, max_epochs=5,
                  batch_size=8, seed=0, progress=False,
                  validate_start=validate_start)  # fmt: skip
    if validate_start:
        assert history.start_loss == 0.0 and history.best_epoch == -1
        assert history.best_loss == 0.0 and model.w.item() == 0.0
    else:
        assert math.isnan(history.start_loss) and history.best_epoch == 0
        assert model.w.item() > 0.05


def test_validate_start_is_checked():
    with pytest.raises(TypeError, match="validate_start must be True or False"):
        fit(_Scalar(), _squared, torch.ones(8), torch.zeros(4), validate_start="yes")


@pytest.mark.parametrize("scale", [1.0, 3.0])
def test_equal_weights_give_the_unweighted_mixture_start_and_fit(scale):
    """Equal ``sample_weight`` (of any size) is the unweighted data: the mixture start and the
    trained member are the unweighted fit's, to the last bit."""
    X = _correlated(300, seed=2)
    options = dict(flow="nsf", base="gmm", layers=1, hidden=(8,), max_epochs=2,
                   progress=False, random_state=0)  # fmt: skip
    plain = pf.DensityEstimator(**options).fit(X)
    weighted = pf.DensityEstimator(**options).fit(X, sample_weight=np.full(len(X), scale))
    chosen = [{k: v for k, v in e.candidates_[0]["mixture"].items() if k != "seconds"}
              for e in (weighted, plain)]  # fmt: skip
    assert chosen[0] == chosen[1]
    np.testing.assert_array_equal(weighted.score_samples(X[:20]), plain.score_samples(X[:20]))


def test_integer_weights_start_at_the_mixture_of_the_duplicated_rows():
    """Integer weights stand for duplicated rows: the mixture start is fitted to the rows
    repeated as often as their weights (not to a random resample of them)."""
    from pyroflows.density import _resampled

    Z = torch.arange(4.0)[:, None]
    np.testing.assert_array_equal(
        _resampled(Z, np.array([2.0, 0.0, 1.0, 3.0]), 0).ravel().numpy(), [0, 0, 2, 3, 3, 3]
    )
    # non-integer weights: a weighted resample of the same size, only of rows with weight > 0
    drawn = _resampled(Z, np.array([0.5, 0.0, 1.5, 0.5]), 0).ravel().numpy()
    assert len(drawn) == 4 and 1.0 not in drawn


def test_mixture_candidates_that_em_cannot_fit_are_left_out(monkeypatch):
    """scikit-learn's EM raises when a component collapses onto repeated rows (its covariance
    is singular; e.g. the huge cell codes of a column quantised at its storage precision):
    such a candidate is left out, the start is chosen among the others, and other errors
    still surface."""
    from sklearn.mixture import GaussianMixture as SkMixture

    real_fit = SkMixture.fit

    def failing_fit(self, X, y=None):
        if self.covariance_type in ("diag", "tied") and self.n_components == 2:
            raise ValueError("Fitting the mixture model failed because some components have "
                             "ill-defined empirical covariance (for instance ...)")  # fmt: skip
        return real_fit(self, X, y)

    monkeypatch.setattr(SkMixture, "fit", failing_fit)
    X = _correlated(400, seed=3)
    assert density_mixture._fit(X, 2, "diag", 0) is None
    Z = torch.as_tensor(X)
    base, choice = mixture_base(Z[:300], Z[300:], seed=0)
    assert "diag x 2 (flow)" not in choice.scores and "tied x 2 (flow)" not in choice.scores
    assert "full x 2 (flow)" in choice.scores
    assert torch.isfinite(base.log_prob(Z[300:])).all()

    def broken_fit(self, X, y=None):
        raise ValueError("something else")

    monkeypatch.setattr(SkMixture, "fit", broken_fit)
    with pytest.raises(ValueError, match="something else"):
        density_mixture._fit(X, 2, "full", 0)
    with pytest.raises(ValueError, match="something else"):
        mixture_base(Z[:300], Z[300:], seed=0)


def test_a_members_times_count_its_mixture_search(monkeypatch):
    """The search for the mixture start takes wall time before the member's training loop
    starts: the member's history, and its validated start (``start_time``), are on the clock
    of the whole fit, so they come after that search (a search made 0.5 s longer here)."""
    search = pf.density.mixture_base
    pause = 0.5

    def slow_search(*args, **kwargs):
        began = time.perf_counter()
        out = search(*args, **kwargs)
        time.sleep(max(pause - (time.perf_counter() - began), 0.0))
        return out

    monkeypatch.setattr(pf.density, "mixture_base", slow_search)
    X = _correlated(300)
    est = pf.DensityEstimator(
        layers=1, hidden=(8,), max_epochs=2, progress=False, random_state=0
    ).fit(X[:240], X_val=X[240:])
    gmm, plain = est.candidates_
    assert gmm["name"] == "nsf-gmm"
    assert pause <= gmm["start_time"] <= gmm["history"].time[0]
    # the plain member trains after the mixture member's pilot: later on the same clock
    assert plain["start_time"] >= gmm["start_time"]
    assert plain["history"].time[0] >= plain["start_time"]
