"""The sbibm ports of ``benchmarks/sbibm_tasks.py`` against sbibm's own files, and the
report's verdicts. Skipped where sbibm's task files are not on this machine (``SBIBM_DIR``)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import sbibm_report  # noqa: E402
import sbibm_tasks  # noqa: E402

try:
    sbibm_tasks.find_sbibm()
    HAVE_FILES = True
except FileNotFoundError:
    HAVE_FILES = False
needs_files = pytest.mark.skipif(not HAVE_FILES, reason="sbibm's task files not found")


@needs_files
def test_glm_summary_maps_raw_observations_onto_summary_observations():
    summary, raw = sbibm_tasks.BernoulliGLM(), sbibm_tasks.BernoulliGLMRaw()
    for i in range(1, 11):
        got = sbibm_tasks.glm_summary(raw.observation(i)[None], summary.stimulus)[0]
        torch.testing.assert_close(got, summary.observation(i), rtol=0, atol=1e-5)


@needs_files
def test_distractor_permutation_places_slcp_observation():
    plain, distract = sbibm_tasks.SLCP(), sbibm_tasks.SLCPDistractors()
    inverse = torch.argsort(distract.permutation)
    for i in range(1, 11):
        torch.testing.assert_close(distract.observation(i)[inverse][:8], plain.observation(i))


@needs_files
@pytest.mark.parametrize("name", list(sbibm_tasks.TASKS))
def test_port_makes_observation_typical_of_reference_predictive(name):
    task = sbibm_tasks.TASKS[name]()
    x = task.simulate(task.prior.sample((7,)))
    assert x.shape == (7, len(task.observation(1)))
    assert task.reference(1).shape == (10000, task.dim)
    pvalue = sbibm_tasks.predictive_pvalue(task, 1, n=500)
    assert pvalue > 0.01, pvalue


@needs_files
def test_predictive_check_rejects_a_wrong_simulator():
    task = sbibm_tasks.TwoMoons()
    right = task.simulate
    task.simulate = lambda theta: right(theta) + torch.tensor([0.0, 0.3])  # shifted crescent
    assert sbibm_tasks.predictive_pvalue(task, 1, n=500) < 0.01


@needs_files
@pytest.mark.parametrize("name", ["gaussian_linear", "gaussian_linear_uniform"])
def test_exact_log_posterior_matches_sbibm_reference_draws(name):
    """The exact posterior that the probe's KL uses: each coordinate's marginal CDF fits
    sbibm's reference draws (KS), and the other task's posterior does not."""
    from scipy import stats

    task = sbibm_tasks.TASKS[name]()
    other = "gaussian_linear" if name == "gaussian_linear_uniform" else "gaussian_linear_uniform"
    x_obs, ref = task.observation(1).double(), task.reference(1).double()[:2000]
    grid = torch.linspace(-2.5, 2.5, 10001, dtype=torch.float64)

    def smallest_pvalue(log_posterior):
        out = []
        for j in range(10):  # coordinate j's marginal from the product density on a grid
            theta = x_obs.clamp(-0.9, 0.9).repeat(len(grid), 1)
            theta[:, j] = grid
            log_p = log_posterior(theta, x_obs)
            pdf = (log_p - log_p.max()).exp()
            cdf = (torch.cumsum(pdf, 0) / pdf.sum()).numpy()
            test = stats.kstest(ref[:, j].numpy(), lambda t, c=cdf: np.interp(t, grid, c))
            out.append(test.pvalue)
        return min(out)

    assert smallest_pvalue(task.log_posterior) > 1e-3 / 10
    wrong = sbibm_tasks.TASKS[other].log_posterior
    assert smallest_pvalue(lambda t, x: wrong(task, t, x)) < 1e-6


@needs_files
def test_exact_log_posterior_is_scipys_truncated_normal():
    """N(x, 0.1 I) truncated to [-1, 1]^10 (normalised on the box, -inf outside): the sum of
    scipy's truncated normal log-densities, one per coordinate."""
    from scipy import stats

    task = sbibm_tasks.GaussianLinearUniform()
    x_obs = task.observation(3).double()  # two coordinates beyond the box: heavy truncation
    torch.manual_seed(0)
    theta = torch.rand(50, 10, dtype=torch.float64) * 2 - 1
    sd = 0.1**0.5
    lo, hi = ((-1 - x_obs) / sd).numpy(), ((1 - x_obs) / sd).numpy()
    expected = stats.truncnorm.logpdf(theta.numpy(), lo, hi, loc=x_obs.numpy(), scale=sd)
    got = task.log_posterior(theta, x_obs).numpy()
    np.testing.assert_allclose(got, expected.sum(-1), rtol=1e-10)
    outside = theta[:1].clone()
    outside[0, 4] = 1.01
    assert task.log_posterior(outside, x_obs).item() == -float("inf")


def test_find_sbibm_names_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr(sbibm_tasks, "_CANDIDATES", ())
    monkeypatch.delenv("SBIBM_DIR", raising=False)
    with pytest.raises(FileNotFoundError, match="SBIBM_DIR"):
        sbibm_tasks.find_sbibm(tmp_path)


def test_verdicts_compare_pyroflows_with_the_best_peer():
    def row(task, method, seed, c):
        return dict(task=task, budget=1000, method=method, seed=seed, c2st=c, split="development")

    rows = [
        row("a", "pyroflows", 0, 0.60), row("a", "pyroflows", 1, 0.70),  # mean 0.65
        row("a", "sbi NPE-NSF", 0, 0.66), row("a", "sbi FMPE", 0, 0.80),
        row("b", "pyroflows", 0, 0.70), row("b", "sbi NPE-NSF", 0, 0.90),
        row("b", "sbi NPSE", 0, 0.55),
    ]  # fmt: skip
    got = {v["task"]: v for v in sbibm_report.verdicts(rows)}
    assert got["a"]["verdict"] == "wins" and got["a"]["best_peer"] == "sbi NPE-NSF"
    assert got["a"]["difference"] == pytest.approx(-0.01)
    assert got["b"]["verdict"] == "loses" and got["b"]["best_peer"] == "sbi NPSE"
    assert got["b"]["difference"] == pytest.approx(0.15)


def test_verdicts_pair_the_observations_and_give_the_standard_error():
    def row(method, seed, per):
        return dict(task="a", budget=1000, method=method, seed=seed, split="development",
                    c2st=sum(per) / len(per), observations=[1, 2, 3],
                    c2st_per_observation=per, train_s=1.0, sample_s=0.1, outside_prior=0.0,
                    epochs=10)  # fmt: skip

    rows = [
        row("pyroflows", 0, [0.60, 0.70, 0.80]), row("pyroflows", 1, [0.62, 0.74, 0.80]),
        row("sbi NPE-NSF", 0, [0.70, 0.80, 0.84]),
    ]  # fmt: skip
    (got,) = sbibm_report.verdicts(rows)
    # per observation over seeds: 0.61, 0.72, 0.80; paired differences -0.09, -0.08, -0.04
    d = torch.tensor([-0.09, -0.08, -0.04], dtype=torch.float64)
    assert got["difference"] == pytest.approx(float(d.mean()))
    assert got["se"] == pytest.approx(float(d.std() / 3**0.5))
    assert got["verdict"] == "wins" and got["clear"]
    rows.append(row("sbi FMPE", 0, [0.50, 0.85, 0.75]))  # best peer by mean, noisy difference
    (got,) = sbibm_report.verdicts(rows)
    assert got["best_peer"] == "sbi FMPE" and got["verdict"] == "loses" and not got["clear"]
    assert "within 2 SE" in sbibm_report.markdown(dict(accuracy=rows, command="c", commit="x",
                                                       date="d"))  # fmt: skip


def test_report_says_whose_validation_losses_a_several_seed_cell_shows():
    def row(seed, losses):
        candidates = [dict(flow="nsf", best_loss=losses[0]),
                      dict(flow="realnvp", best_loss=losses[1])]  # fmt: skip
        return dict(task="a", budget=1000, method="pyroflows", seed=seed, split="development",
                    c2st=0.6, observations=[1], c2st_per_observation=[0.6], train_s=1.0,
                    sample_s=0.1, outside_prior=0.0, epochs=10, family="nsf",
                    candidates=candidates)  # fmt: skip

    result = dict(command="c", commit="x", date="d")
    one = sbibm_report.markdown(dict(result, accuracy=[row(0, (1.0, 2.0))]))
    assert "| nsf (nsf 1.000, realnvp 2.000) |" in one
    two = sbibm_report.markdown(dict(result, accuracy=[row(0, (1.0, 2.0)), row(1, (3.0, 4.0))]))
    assert "| nsf (seed 0: nsf 1.000, realnvp 2.000) |" in two


def test_time_cap_stops_an_sbi_trainer_at_the_best_weights():
    import time

    import amortized

    class Net:
        loaded = None

        def load_state_dict(self, state):
            Net.loaded = state

    class Trainer:
        _best_model_state_dict = {"w": 1}
        _neural_net = Net()

        def _converged(self, epoch, stop_after_epochs):
            return False

    untouched = Trainer()
    assert amortized._cap_sbi_training(untouched, None)["capped"] is False
    assert "_converged" not in vars(untouched)  # no cap: sbi's own stopping rule only
    trainer = Trainer()
    clock = amortized._cap_sbi_training(trainer, 5.0)
    clock["start"] = time.perf_counter()
    assert not trainer._converged(1, 20) and not clock["capped"] and Net.loaded is None
    clock["start"] = time.perf_counter() - 6.0  # past the cap
    assert trainer._converged(2, 20) and clock["capped"] and Net.loaded == {"w": 1}


def test_time_cap_of_pyroflows_is_flagged_when_a_family_used_its_share():
    import types

    import amortized

    def post(*seconds):
        return types.SimpleNamespace(candidates=[dict(seconds=s) for s in seconds])

    # cap 300: the first family's share is 150, the second's 300 minus what the first used
    assert amortized._used_budget(post(149.0, 10.0), 159.0, 300.0)
    assert not amortized._used_budget(post(100.0, 150.0), 250.0, 300.0)
    assert amortized._used_budget(post(100.0, 199.0), 299.0, 300.0)
    assert not amortized._used_budget(post(20.0, 30.0), 50.0, 300.0)


def test_harness_reads_pyroflows_variants_and_refuses_other_names():
    import amortized

    assert amortized.method_entry("sbi NPE-NSF") == amortized.METHODS["sbi NPE-NSF"]
    train, _ = amortized.method_entry(
        "pyroflows flow=nsf, coupling=true, bound=3, fit.batch_size=100, intervals=logit"
    )
    assert train.keywords == dict(
        flow="nsf", flow_kwargs={"coupling": True, "bound": 3},
        fit_options={"batch_size": 100}, intervals="logit",
    )  # fmt: skip
    for bad in ("pyroflows bins", "pyroflows ,", "zuko bins=3", "sbi NPE"):
        with pytest.raises(ValueError, match="unknown method"):
            amortized.method_entry(bad)


def test_harness_variant_options_reach_the_fit():
    """A variant's flow and fit options are honoured (a wrong one is refused by the
    posterior, not dropped): a two-epoch fit of a coupling spline flow."""
    import amortized

    task = sbibm_tasks.TASKS["gaussian_linear"].__new__(sbibm_tasks.GaussianLinear)
    task.prior = torch.distributions.MultivariateNormal(torch.zeros(3), torch.eye(3))
    task.simulate = lambda theta: theta + torch.randn_like(theta)
    theta = task.prior.sample((60,))
    x = task.simulate(theta)
    train, _ = amortized.method_entry(
        "pyroflows flow=nsf, coupling=true, layers=1, hidden=[8], fit.recipe=one_phase"
    )
    post, _, epochs = train(task, theta, x, quick=True)
    assert epochs == 10 and post.flow_kwargs["coupling"] is True and post.flow_name == "nsf"
    wrong, _ = amortized.method_entry("pyroflows flow=realnvp, bins=3")
    with pytest.raises(ValueError, match="bins"):
        wrong(task, theta, x, quick=True)


def test_truncation_probe_surrogate_has_the_truncated_likelihoods_gradient():
    """``box_truncation_probe.truncated_loss``: its gradient is that of
    ``-log q(z | x) + log Q(B | x)`` (Q integrated on a grid), within Monte Carlo error; the
    plain NLL's gradient is not."""
    import box_truncation_probe as probe

    import pyroflows as pf
    from pyroflows.amortized.estimator import PosteriorEstimator
    from pyroflows.nn.summary import IdentitySummary

    torch.manual_seed(0)
    est = PosteriorEstimator(IdentitySummary(1), pf.nsf(1, context_dim=1, layers=1, hidden=(8,)))
    z, x = torch.tensor([[0.3], [-0.5]]), torch.tensor([[0.2], [-1.0]])
    low, high = torch.tensor([-0.8]), torch.tensor([1.0])
    grid = torch.linspace(-0.8, 1.0, 4001)[:, None]

    def grads(loss):
        est.zero_grad()
        loss.backward()
        return torch.cat([p.grad.flatten() for p in est.parameters()])

    nll = -est.flow.log_prob(z, est.summary(x)).mean()
    log_mass = torch.stack([
        torch.logsumexp(est.flow.log_prob(grid, xi.expand(len(grid), 1)), 0)
        + math.log(1.8 / 4000) for xi in x
    ]).mean()  # fmt: skip
    exact = grads(nll + log_mass)
    plain = grads(-est.flow.log_prob(z, est.summary(x)).mean())
    torch.manual_seed(1)
    loss, share = probe.truncated_loss(est, z, x, low, high, draws=40_000)
    got = grads(loss)
    assert 0 < share < 1
    scale = exact.norm()
    assert (got - exact).norm() < 0.05 * scale, ((got - exact).norm(), scale)
    assert (plain - exact).norm() > 0.2 * scale
