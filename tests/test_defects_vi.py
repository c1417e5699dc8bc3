"""Issue 23, variational inference: each test fails on the code before the fix.

H1 model parameters, H4/H5 the one check of a user's log-density or integrand (property-based,
every entry point), H9 enumerated discrete latents, H10 exactly ``steps`` optimiser steps,
H7 resuming a guide for other data, M6 messages that name the cause, M8 ``dist.LKJ`` with
particles, L1 deterministic sites, L2 clear input errors, and options that are not honoured.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyro import poutine
from torch.distributions import constraints

import pyroflows as pf
from pyroflows import losses
from pyroflows.losses import Chi2, ForwardKL, ReverseKL
from pyroflows.vi.density_fit import WeightedKL

SETTINGS = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    derandomize=True,
    database=None,
)


# -- H1: the model's own parameters train with the guide -------------------------------------
def test_model_param_reaches_maximum_likelihood():
    """The report's reproducer: sigma stayed 1.0; SVI reaches the ML value 2.89."""
    x = 2.0 + 3.0 * torch.randn(200, generator=torch.Generator().manual_seed(0))

    def model(x):
        sigma = pyro.param("sigma", torch.tensor(1.0), constraint=constraints.positive)
        mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
        with pyro.plate("n", len(x)):
            pyro.sample("x", dist.Normal(mu, sigma), obs=x)

    guide = pf.FlowGuide(model, layers=1, hidden=(8,))
    guide.fit(x, steps=1000, progress=False, seed=0, lr=1e-2)
    ml = float(x.std(unbiased=False))  # 2.895; the ELBO optimum adds var_q(mu) = sigma^2/200
    assert abs(float(pyro.param("sigma").detach()) - ml * math.sqrt(1 + 1 / 200)) < 0.03


def test_empirical_bayes_prior_mean_is_the_sample_mean():
    """mu ~ N(loc, 1), x_i ~ N(mu, 1): the marginal likelihood is maximal at loc = mean(x), and
    the ELBO with the exact (Gaussian) posterior has the same optimum; a pyro.module's
    parameters (here the bias of a Linear giving loc) train too."""
    x = torch.tensor([3.1, 2.4, 4.0, 3.3, 2.7, 3.8, 3.0, 2.2, 3.6, 2.9])
    net = torch.nn.Linear(1, 1)
    torch.nn.init.zeros_(net.weight)
    torch.nn.init.zeros_(net.bias)

    def model(x):
        pyro.module("net", net)
        loc = net(torch.ones(1)).squeeze()
        mu = pyro.sample("mu", dist.Normal(loc, 1.0))
        with pyro.plate("n", len(x)):
            pyro.sample("x", dist.Normal(mu, 1.0), obs=x)

    guide = pf.FlowGuide(model, layers=1, hidden=(8,))
    guide.fit(x, steps=800, num_particles=8, progress=False, seed=0, lr=2e-2, schedule="cosine")
    loc = float(net(torch.ones(1)))
    assert abs(loc - float(x.mean())) < 0.05
    # the posterior given that loc: N((loc + sum x) / (n + 1), 1 / (n + 1))
    draws = guide.sample_posterior(20_000)["mu"]
    exact_mean = (loc + float(x.sum())) / 11
    assert abs(float(draws.mean()) - exact_mean) < 0.02
    assert abs(float(draws.std()) - 11**-0.5) < 0.02


# -- H10: exactly ``steps`` optimiser steps -----------------------------------------------------
def _model():
    pyro.sample("a", dist.Normal(0.0, 1.0))


@pytest.mark.parametrize("steps", [1, 50, 150, 250, 1001])
def test_flowguide_and_fit_to_density_run_exactly_steps(steps):
    guide = pf.FlowGuide(_model, layers=1, hidden=(4,))
    assert guide.fit(steps=steps, progress=False, seed=0).steps == steps
    q = pf.fit_to_density(
        lambda z: -0.5 * (z**2).sum(-1), 1, steps=steps, num_samples=8, layers=1, hidden=(4,),
        progress=False, seed=0,
    )  # fmt: skip
    assert q.history.steps == steps
    assert q.history.stop_reason == "max_steps"


def test_integrate_trains_on_the_evaluations_asked_for():
    """200 000 evaluations, batch 512, train_fraction 0.4: 156 training steps (79 872
    evaluations; 100 steps ran before), and the annealing reaches beta = 1."""
    sizes = []

    def f(x):
        sizes.append(len(x))
        return 3 * x[:, 0] ** 2

    betas = []
    original = WeightedKL.__call__

    def spy(self, model, batch=()):
        if model.training:
            betas.append(self.beta)
        return original(self, model, batch)

    WeightedKL.__call__ = spy
    try:
        r = pf.integrate(f, 2, max_evals=200_000, batch_size=512, layers=1, hidden=(4,))
    finally:
        WeightedKL.__call__ = original
    assert sizes[:156] == [512] * 156 and len(betas) == 156
    assert betas[-1] == 1.0 and betas[int(0.8 * 156)] == 1.0 and betas[int(0.8 * 156) - 1] < 1
    assert r.num_evals == 200_000


# -- H4/H5: one check of what a user's callable returned, at every entry point ------------------
def _flow():
    return pf.realnvp(2, layers=1, hidden=(4,))


def _entry_points(log_f):
    """Every public entry point that calls a user's log-density (or integrand ``exp``)."""
    return {
        "ReverseKL": lambda: ReverseKL(log_f, 16)(_flow(), ()),
        "ForwardKL": lambda: ForwardKL(log_f, 16)(_flow(), ()),
        "Chi2": lambda: Chi2(log_f, 16)(_flow(), ()),
        "WeightedKL": lambda: WeightedKL(log_f, 16)(_flow(), ()),
        "fit_to_density(reverse_kl)": lambda: pf.fit_to_density(
            log_f, 2, steps=1, num_samples=16, layers=1, hidden=(4,), progress=False
        ),
        "fit_to_density(forward_kl)": lambda: pf.fit_to_density(
            log_f,
            2,
            loss="forward_kl",
            steps=1,
            num_samples=16,
            layers=1,
            hidden=(4,),
            progress=False,
        ),  # fmt: skip
        "fit_to_density(chi2)": lambda: pf.fit_to_density(
            log_f,
            2,
            loss="chi2",
            steps=1,
            num_samples=16,
            layers=1,
            hidden=(4,),
            progress=False,
        ),  # fmt: skip
        "importance_sample": lambda: pf.importance_sample(log_f, _flow(), n=64),
        "integrate": lambda: pf.integrate(
            lambda x: torch.exp(log_f(x)),
            2,
            max_evals=400,
            batch_size=32,
            layers=1,
            hidden=(4,),
        ),  # fmt: skip
    }


@st.composite
def wrong_shape(draw):
    kind = draw(st.sampled_from(["keepdim", "row", "scalar", "short", "extra", "transposed"]))
    return kind


def _reshape(values, kind):
    return {
        "keepdim": lambda v: v[:, None],
        "row": lambda v: v[None, :],
        "scalar": lambda v: v.sum(),
        "short": lambda v: v[:-1],
        "extra": lambda v: torch.stack([v, v], -1),
        "transposed": lambda v: v[None, :].expand(2, -1),
    }[kind](values)


@SETTINGS
@given(kind=wrong_shape(), entry=st.sampled_from(sorted(_entry_points(None))))
def test_wrong_shape_is_refused_everywhere(kind, entry):
    def log_f(z):
        return _reshape(-0.5 * (z**2).sum(-1), kind)

    with pytest.raises(ValueError, match=r"returned shape .* expected shape"):
        _entry_points(log_f)[entry]()


@SETTINGS
@given(
    fraction=st.floats(0.01, 1.0),
    value=st.sampled_from([math.nan, math.inf]),
    entry=st.sampled_from(sorted(_entry_points(None))),
)
def test_nan_and_plus_inf_are_refused_everywhere(fraction, value, entry):
    """NaN (anywhere) and +inf are refused with a count; -inf (a zero) stays legitimate."""

    def log_f(z):
        out = -0.5 * (z**2).sum(-1)
        bad = torch.arange(len(z)) < max(1, int(fraction * len(z)))
        return torch.where(bad, torch.full_like(out, value), out)

    kind = "NaN" if math.isnan(value) else r"\+inf"
    with pytest.raises(ValueError, match=rf"returned {kind} at \d+ of \d+ evaluations"):
        _entry_points(log_f)[entry]()


def test_check_names_the_count_and_the_first_point():
    z = torch.tensor([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]])
    with pytest.raises(ValueError, match=r"NaN at 2 of 3 evaluations \(first at x = \[2.0, 3.0\]"):
        losses.check_values(torch.tensor([0.0, math.nan, math.nan]), z)
    values = torch.tensor([0.0, -math.inf, 1.0])
    assert losses.check_values(values, z) is values  # zero density is allowed
    with pytest.raises(ValueError, match="negative values at 1 of 3"):
        losses.check_values(torch.tensor([0.0, -1.0, 1.0]), z, "f", log=False)


def test_zero_density_still_fine_for_weighted_losses():
    """log f = -inf on half the line (a half-normal) is legitimate for the forward KL."""

    def log_f(z):
        out = -0.5 * (z**2).sum(-1)
        return torch.where(z[:, 0] > 0, out, torch.full_like(out, -math.inf))

    r = pf.importance_sample(log_f, pf.maf(1, layers=1, hidden=(4,)), n=20_000)
    assert abs(r.estimate - math.sqrt(2 * math.pi) / 2) < 4 * r.stderr


def test_nan_integrand_is_refused_not_counted_as_zero():
    """The report: f = 1 with NaN on 20 % of the cube gave 0.798 +- 0.003."""

    def f(x):
        v = torch.ones(len(x), dtype=x.dtype)
        v[x[:, 0] > 0.8] = math.nan
        return v

    with pytest.raises(ValueError, match=r"f returned NaN at \d+ of 512 evaluations"):
        pf.integrate(f, 2, max_evals=4000, batch_size=512, layers=1, hidden=(4,))


# -- M6: the cause, not the learning rate ------------------------------------------------------
def test_reverse_kl_with_minus_inf_names_forward_kl():
    def log_f(z):
        out = -0.5 * (z**2).sum(-1)
        return torch.where(z[:, 0] > 0, out, torch.full_like(out, -math.inf))

    with pytest.raises(ValueError, match=r"-inf at \d+ of 256 draws.*loss='forward_kl'"):
        pf.fit_to_density(log_f, 1, steps=5, layers=1, hidden=(4,), progress=False)


def test_guide_refuses_data_with_inf():
    def model(x):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        with pyro.plate("n", len(x)):
            pyro.sample("x", dist.Normal(mu, 1.0), obs=x)

    with pytest.raises(ValueError, match="model argument 0 contains inf"):
        pf.FlowGuide(model, layers=1).fit(torch.tensor([0.0, math.inf]), steps=2, progress=False)


# -- H9: enumerated discrete latents are marginalised -------------------------------------------
LOCS = torch.tensor([-1.0, 0.0, 1.0])


@pyro.infer.config_enumerate
def mixture_model(x):
    mu = pyro.sample("mu", dist.Normal(0.0, 3.0))
    z = pyro.sample("z", dist.Categorical(torch.ones(3) / 3))
    with pyro.plate("n", len(x)):
        pyro.sample("x", dist.Normal(mu + LOCS[z], 1.0), obs=x)


def _log_lik_per_z(mu, x):
    """log p(x, z | mu) for each z: shape (len(mu), 3)."""
    return torch.stack(
        [dist.Normal(mu[:, None] + loc, 1.0).log_prob(x).sum(-1) for loc in LOCS.double()], -1
    ) + math.log(1 / 3)


def test_enumerated_site_is_marginalised_and_drawn_from_its_posterior():
    x = 1.5 + torch.randn(4, generator=torch.Generator().manual_seed(0))
    grid = torch.linspace(-15, 15, 20001, dtype=torch.float64)
    log_post = dist.Normal(0.0, 3.0).log_prob(grid) + torch.logsumexp(
        _log_lik_per_z(grid, x.double()), -1
    )
    w = torch.softmax(log_post, 0)
    mean = float((w * grid).sum())
    sd = float((w * (grid - mean) ** 2).sum().sqrt())  # exact: 1.275, 0.925

    guide = pf.FlowGuide(mixture_model, layers=2, hidden=(16, 16))
    guide.fit(x, steps=1000, num_particles=4, progress=False, seed=0, schedule="cosine")
    draws = guide.sample_posterior(20_000)
    assert abs(float(draws["mu"].mean()) - mean) < 0.1
    assert abs(float(draws["mu"].std()) / sd - 1) < 0.15
    # z given each draw of mu: its conditional posterior (infer_discrete), within 4 sd
    expected = torch.softmax(_log_lik_per_z(draws["mu"].double(), x.double()), -1).mean(0)
    freq = torch.bincount(draws["z"].reshape(-1), minlength=3).double() / 20_000
    assert draws["z"].shape == (20_000,)
    assert ((freq - expected).abs() < 4 * (expected * (1 - expected) / 20_000).sqrt()).all()


def test_blocked_discrete_site_is_refused_with_the_fix():
    x = torch.tensor([1.0, 2.0])
    guide = pf.FlowGuide(poutine.block(mixture_model, hide=["z"]), layers=1)
    with pytest.raises(ValueError, match=r"site 'z' is discrete.*config_enumerate"):
        guide.fit(x, steps=2, progress=False)


# -- H7: a guide's checkpoint is never resumed for other data or another model -----------------
def test_guide_resume_refuses_other_data(tmp_path):
    def model(x):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        with pyro.plate("n", len(x)):
            pyro.sample("x", dist.Normal(mu, 1.0), obs=x)

    path = tmp_path / "guide.pt"
    kw = dict(steps=20, progress=False, seed=0, checkpoint=path, resume=path)
    pf.FlowGuide(model, layers=1, hidden=(4,)).fit(torch.zeros(5), **kw)
    with pytest.raises(ValueError, match="model_args"):
        pf.FlowGuide(model, layers=1, hidden=(4,)).fit(torch.ones(5), **kw)
    with pytest.raises(ValueError, match="flow_options"):
        pf.FlowGuide(model, layers=2, hidden=(4,)).fit(torch.zeros(5), **kw)
    # the same data and options resume
    pf.FlowGuide(model, layers=1, hidden=(4,)).fit(torch.zeros(5), **kw)


def test_fit_to_density_resume_refuses_other_options(tmp_path):
    path = tmp_path / "q.pt"
    kw = dict(steps=20, layers=1, hidden=(4,), progress=False, seed=0, checkpoint=path)
    pf.fit_to_density(lambda z: -0.5 * (z**2).sum(-1), 1, resume=path, **kw)
    with pytest.raises(ValueError, match="loss"):
        pf.fit_to_density(lambda z: -0.5 * (z**2).sum(-1), 1, loss="chi2", resume=path, **kw)


# -- M8: dist.LKJ with several particles ------------------------------------------------------
def test_lkj_with_particles_falls_back_with_a_warning():
    y = torch.randn(20, 2, generator=torch.Generator().manual_seed(0))

    def model(y):
        corr = pyro.sample("corr", dist.LKJ(2, 1.0))
        with pyro.plate("n", len(y)):
            pyro.sample("y", dist.MultivariateNormal(torch.zeros(2), corr), obs=y)

    guide = pf.FlowGuide(model, layers=1, hidden=(4,))
    with pytest.warns(UserWarning, match="LKJ"):
        history = guide.fit(y, steps=3, num_particles=2, progress=False, seed=0)
    assert history.steps == 3


# -- L1 / L2 ----------------------------------------------------------------------------------
def test_deterministic_sites_appear_in_draws_and_inference_data():
    def model(x):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        pyro.deterministic("mu2", 2 * mu)
        with pyro.plate("n", len(x)):
            pyro.sample("x", dist.Normal(mu, 1.0), obs=x)

    guide = pf.FlowGuide(model, layers=1, hidden=(4,))
    guide.fit(torch.zeros(3), steps=2, progress=False)
    draws = guide.sample_posterior(50)
    assert torch.equal(draws["mu2"], 2 * draws["mu"])
    assert "mu2" in guide.to_inference_data(40, chains=2).posterior


def test_quantile_and_setup_errors_are_clear():
    guide = pf.FlowGuide(_model, layers=1, hidden=(4,))
    q = guide.quantiles(0.5)["a"]  # a scalar is accepted
    assert q.shape == (1,)
    with pytest.raises(ValueError, match=r"quantiles must lie in \[0, 1\]"):
        guide.quantiles([1.5])

    def model(x):
        pyro.sample("mu", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match=r"not fitted or set up yet.*guide.fit"):
        pf.FlowGuide(model, layers=1).sample_posterior(5)


# -- options accepted and not honoured ---------------------------------------------------------
def test_options_that_cannot_apply_are_refused():
    guide = pf.FlowGuide(_model, layers=1, hidden=(4,))
    with pytest.raises(ValueError, match="num_particles and objective configure the default"):
        guide.fit(steps=2, num_particles=8, elbo=pyro.infer.Trace_ELBO(), progress=False)
    with pytest.raises(ValueError, match="max_steps is set by steps="):
        guide.fit(steps=2, max_steps=5, progress=False)


# -- H3: psis on a subsampled model evaluates the full plate -----------------------------------
def test_psis_on_a_subsampled_model_gives_the_exact_log_evidence():
    """The report: -55 to -100 over five calls (one random minibatch each); exact -77.0."""
    xs = 0.5 + torch.randn(50, generator=torch.Generator().manual_seed(0))

    def model(x, batch=10):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        with pyro.plate("n", 50, subsample_size=batch) as idx:
            pyro.sample("x", dist.Normal(mu, 1.0), obs=x[idx])

    exact = float(
        dist.MultivariateNormal(torch.zeros(50), torch.eye(50) + torch.ones(50, 50)).log_prob(xs)
    )
    guide = pf.FlowGuide(model, layers=1, hidden=(8,))
    guide.fit(xs, steps=300, progress=False, seed=0)
    for _ in range(3):
        r = pf.diagnostics.psis(model, guide, xs, num_particles=500)
        assert abs(r.log_evidence - exact) < 0.1
        assert r.k_hat < 0.5
    # the subsampling is back once psis returns
    assert len(poutine.trace(model).get_trace(xs).nodes["n"]["value"]) == 10


# -- L6: short reprs ----------------------------------------------------------------------------
def test_result_reprs_are_summaries():
    import numpy as np

    from pyroflows.diagnostics.calibration import CoverageResult, TARPResult
    from pyroflows.diagnostics.importance import PSISResult

    r = PSISResult(0.31, 812.4, -77.02, torch.zeros(1000))
    assert repr(r) == (
        "PSISResult(k_hat=0.310, ess=812.4, log_evidence=-77.0200, num_particles=1000)"
    )
    levels = np.linspace(0, 1, 21)
    c = CoverageResult(levels, levels, np.random.default_rng(0).uniform(size=500))
    assert repr(c) == "CoverageResult(levels=21, max_deviation=0.000, simulations=500)"
    t = TARPResult(levels, levels, np.zeros(500), atc=0.01, pvalue=0.5)
    assert len(repr(t)) < 120 and "atc=0.0100" in repr(t)


# -- L9: distill ----------------------------------------------------------------------------
def test_distill_refuses_wrong_width_and_coupling_teachers():
    from pyroflows.vi.distill import distill

    with pytest.raises(ValueError, match=r"data must be \(n, 2\) .* got shape \(64, 3\)"):
        distill(pf.maf(2, layers=1, hidden=(4,)), torch.randn(64, 3), max_epochs=1)
    with pytest.raises(ValueError, match="coupling layers .* nothing to distil"):
        distill(pf.realnvp(2, layers=1, hidden=(4,)), torch.randn(64, 2), max_epochs=1)


@pytest.mark.parametrize("part", ["x", "context"])
def test_distill_refuses_non_finite_rows_before_training(part):
    # NaN rows used to reach the loop, which gave up with TrainingDiverged after its retries
    from pyroflows.vi.distill import distill

    teacher = pf.maf(2, layers=1, hidden=(4,), context_dim=1)
    x, c = torch.randn(64, 2), torch.randn(64, 1)
    (x if part == "x" else c)[5, 0] = float("nan")
    before = [p.detach().clone() for p in teacher.parameters()]
    with pytest.raises(ValueError, match=rf"data \({part}\) has 1 NaN .* row 5"):
        distill(teacher, (x, c), max_epochs=1)
    assert all(torch.equal(a, b) for a, b in zip(before, teacher.parameters(), strict=True))


# -- M5: integrate's proposal has a density floor -----------------------------------------------
def test_integrate_weights_are_bounded_by_the_defensive_floor():
    r = pf.integrate(
        lambda x: 3 * x[:, 0] ** 2, 2, max_evals=20_000, layers=1, hidden=(8,), batch_size=500,
        keep=True,
    )  # fmt: skip
    # f <= 3 and q >= 0.1 on the cube: every weight f / q is at most 30
    assert float(r.log_weights.max()) <= math.log(30) + 1e-9
    assert abs(r.estimate - 1) < 4 * r.stderr
    with pytest.raises(ValueError, match=r"defensive must lie in \[0, 1\)"):
        pf.integrate(lambda x: x[:, 0], 1, max_evals=1000, defensive=1.0)


# -- class: an option is accepted and honoured, or refused -----------------------------------
@settings(max_examples=12, deadline=None, derandomize=True, database=None)
@given(
    steps=st.integers(1, 130),
    num_samples=st.integers(1, 40),
    loss=st.sampled_from(["reverse_kl", "forward_kl", "chi2"]),
)
def test_fit_to_density_honours_steps_and_num_samples(steps, num_samples, loss):
    calls = []

    def log_f(z):
        calls.append(len(z))
        return -0.5 * (z**2).sum(-1)

    q = pf.fit_to_density(
        log_f, 2, loss=loss, steps=steps, num_samples=num_samples, layers=1, hidden=(4,),
        progress=False, seed=0,
    )  # fmt: skip
    assert q.history.steps == steps and calls == [num_samples] * steps


@settings(max_examples=10, deadline=None, derandomize=True, database=None)
@given(
    max_evals=st.integers(300, 3000),
    batch_size=st.integers(8, 200),
    fraction=st.floats(0.0, 0.6),
)
def test_integrate_honours_its_budget_and_batch(max_evals, batch_size, fraction):
    sizes = []

    def f(x):
        sizes.append(len(x))
        return torch.ones(len(x), dtype=x.dtype)

    r = pf.integrate(
        f, 2, max_evals=max_evals, batch_size=batch_size, train_fraction=fraction, layers=1,
        hidden=(4,),
    )  # fmt: skip
    steps = int(fraction * max_evals) // batch_size
    assert sizes[:steps] == [batch_size] * steps
    assert sum(sizes) == r.num_evals == max_evals
    assert abs(r.estimate - 1) < 5 * r.stderr + 1e-9  # f = 1: the estimate is unbiased


def test_options_that_do_not_apply_are_refused():
    with pytest.raises(ValueError, match="with a callable flow they do not apply"):
        pf.FlowGuide(_model, flow=lambda d: pf.iaf(d, layers=1), hidden=(4,))
    with pytest.raises(ValueError, match="map_steps is the length of the Laplace start"):
        pf.FlowGuide(_model, affine_init=None, map_steps=50)
    with pytest.raises(ValueError, match="with a Flow passed they do not apply"):
        pf.fit_to_density(lambda z: -(z**2).sum(-1), 2, flow=_flow(), layers=2)
    with pytest.raises(ValueError, match="num_samples must be a positive integer"):
        WeightedKL(lambda z: -(z**2).sum(-1), 0)


def test_expectation_checks_what_g_returned():
    r = pf.importance_sample(lambda z: -0.5 * (z**2).sum(-1), _flow(), n=500)
    with pytest.raises(ValueError, match=r"one value .* per draw: \(500, ...\), got \(\)"):
        r.expectation(lambda x: x.sum())
    with pytest.raises(ValueError, match="g returned NaN at 500 of 500 draws"):
        r.expectation(lambda x: x[:, 0] * math.nan)
    # E[z_0^2] under N(0, I) with the exact proposal: 1 within Monte Carlo error
    assert abs(float(r.expectation(lambda x: x[:, 0] ** 2)) - 1) < 0.2


def test_a_support_that_depends_on_another_site_is_refused():
    """``b ~ Uniform(0, a)`` with a latent ``a``: the guide maps ``b`` through the bijection
    of the prototype's support, so its draws leave the true one. With Pyro's validation on
    the fit failed inside Pyro's log-density check; with it off the Uniform's density is
    constant outside its support and the fit ran to a wrong posterior silently."""

    def model():
        a = pyro.sample("a", dist.Gamma(2.0, 1.0))
        b = pyro.sample("b", dist.Uniform(0.0, a))
        pyro.sample("y", dist.Normal(b, 0.1), obs=torch.tensor(0.5))

    bound = torch.tensor(3.0)

    def fixed():
        a = pyro.sample("a", dist.Gamma(2.0, 1.0))
        b = pyro.sample("b", dist.Uniform(0.0, bound))  # data-fixed bounds are fine
        pyro.sample("y", dist.Normal(a + b, 0.1), obs=torch.tensor(0.5))

    with pytest.raises(ValueError, match="site 'b' has a support that depends on other sites"):
        pf.FlowGuide(model).fit(steps=2, progress=False)
    guide = pf.FlowGuide(fixed)
    guide.fit(steps=2, progress=False)
    assert guide.latent_dim == 2


def _local_latent_model(y):
    mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
    with pyro.plate("rows", len(y)):
        z = pyro.sample("z", dist.Normal(mu, 1.0))
        pyro.sample("y", dist.Normal(z, 0.5), obs=y)


@pytest.mark.parametrize(
    "use",
    [
        lambda g, y: g(y),
        lambda g, y: g.fit(y, steps=2, check_convergence=False),
        lambda g, y: g.quantiles([0.5], y),
        lambda g, y: g.sample_posterior(10, y),
        lambda g, y: pf.diagnostics.psis(_local_latent_model, g, y, num_particles=20),
    ],
    ids=["call", "fit", "quantiles", "sample_posterior", "psis"],
)
def test_guide_refuses_data_whose_latents_have_other_shapes(use):
    # a guide set up for 8 rows held one latent z per row; with 5 rows it drew 8 z's
    guide = pf.FlowGuide(_local_latent_model)
    guide.fit(torch.randn(8), steps=2, check_convergence=False, seed=0)
    before = [p.detach().clone() for p in guide.parameters()]
    with pytest.raises(ValueError, match=r"site 'z' of shape \(8,\).*shape \(5,\)"):
        use(guide, torch.randn(5))
    assert all(torch.equal(a, b) for a, b in zip(before, guide.parameters(), strict=True))
    # data of the same shape (new values) and a global-only model with other lengths pass
    assert guide(torch.randn(8))["z"].shape == (8,)


def test_guide_with_only_global_latents_takes_data_of_any_length():
    def model(y):
        mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
        with pyro.plate("rows", len(y)):
            pyro.sample("y", dist.Normal(mu, 1.0), obs=y)

    guide = pf.FlowGuide(model)
    guide.fit(torch.randn(8), steps=2, check_convergence=False, seed=0)
    assert guide(torch.randn(5))["mu"].shape == ()
