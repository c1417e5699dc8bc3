"""The shared training loop: convergence to known answers, early stopping, the divergence
guard, the time budget, reproducibility and sample-based (data-free) losses."""

from __future__ import annotations

import math

import pytest
import torch

import pyroflows as pf
from pyroflows.train import TrainingDiverged, fit

H = (16, 16)


def nll(flow, batch):
    return -flow.log_prob(batch[0]).mean()


def test_one_dimensional_fit_reaches_the_gaussian_mle():
    x = torch.randn(2000, 1, dtype=torch.float64) * 2.5 + 4.0
    flow = pf.maf(1, layers=1, hidden=H).double()
    hist = fit(flow, nll, x, max_epochs=150, batch_size=500, lr=3e-2, patience=None, seed=0)
    # A 1-D MAF is an affine map of a standard normal: the optimum is the Gaussian MLE.
    mle = torch.distributions.Normal(x.mean(), x.std(unbiased=False)).log_prob(x).mean()
    assert flow.log_prob(x).mean().item() == pytest.approx(mle.item(), abs=2e-3)
    assert hist.stop_reason == "max_epochs" and len(hist.train_loss) == 150
    assert hist.steps == 150 * 4


def test_early_stopping_restores_the_best_state():
    flow = pf.maf(2, layers=1, hidden=H)
    x = torch.randn(64, 2)
    scripted = iter([3.0, 2.0, 1.0, 1.5, 2.5, 3.5, 4.5])
    states = []

    def remember(epoch, history):
        states.append({k: v.clone() for k, v in flow.state_dict().items()})

    hist = fit(
        flow,
        nll,
        x,
        val_fn=lambda m: next(scripted),
        max_epochs=7,
        patience=3,
        callback=remember,
        seed=0,
    )
    assert hist.best_epoch == 2 and hist.best_loss == 1.0
    assert hist.stop_reason == "early_stopping" and len(hist.val_loss) == 6
    for key, value in flow.state_dict().items():
        assert torch.equal(value, states[2][key])


def test_a_transient_nan_is_retried_with_a_lower_learning_rate():
    flow = pf.maf(2, layers=1, hidden=H)
    x = torch.randn(64, 2)
    calls = {"n": 0}

    def flaky(model, batch):
        calls["n"] += 1
        loss = nll(model, batch)
        return loss * math.nan if calls["n"] in (5, 9) else loss

    hist = fit(flow, flaky, x, max_epochs=5, batch_size=16, lr=1e-3, seed=0)
    assert hist.restarts == 2 and len(hist.train_loss) == 5
    assert hist.lr[-1] == pytest.approx(1e-3 * 0.25)
    assert all(torch.isfinite(p).all() for p in flow.parameters())


def test_persistent_divergence_raises_and_keeps_the_last_good_state():
    flow = pf.maf(2, layers=1, hidden=H)
    x = torch.randn(64, 2)
    epoch_one = {}

    def poisoned(model, batch):
        loss = nll(model, batch)
        return loss if not epoch_one.get("done") else loss + math.inf

    def after_epoch(epoch, history):
        epoch_one["state"] = {k: v.clone() for k, v in flow.state_dict().items()}
        epoch_one["done"] = True

    with pytest.raises(TrainingDiverged, match="non-finite"):
        fit(flow, poisoned, x, max_epochs=5, callback=after_epoch, max_retries=2, seed=0)
    for key, value in flow.state_dict().items():
        assert torch.equal(value, epoch_one["state"][key])


def test_non_finite_gradient_counts_as_divergence():
    flow = pf.maf(2, layers=1, hidden=H)
    x = torch.randn(32, 2)
    bad = torch.tensor(math.inf)

    def loss_with_bad_gradient(model, batch):
        return nll(model, batch) + 0.0 * next(model.parameters()).sum() * bad

    with pytest.raises(TrainingDiverged):
        fit(flow, loss_with_bad_gradient, x, max_epochs=2, max_retries=1)


def test_time_budget_stops_training():
    flow = pf.maf(2, layers=1, hidden=H)
    hist = fit(flow, nll, torch.randn(4096, 2), max_epochs=1000, batch_size=8, time_budget=0.0)
    assert hist.stop_reason == "time_budget" and hist.steps == 1


def test_same_seed_same_result():
    x = torch.randn(256, 2)
    results = []
    for _ in range(2):
        torch.manual_seed(123)
        flow = pf.nsf(2, layers=2, hidden=H)
        fit(flow, nll, x, max_epochs=3, batch_size=64, seed=7)
        results.append(torch.cat([p.flatten() for p in flow.parameters()]))
    assert torch.equal(results[0], results[1])


def test_data_free_reverse_kl_fits_a_known_gaussian():
    target = torch.distributions.MultivariateNormal(
        torch.tensor([1.0, -2.0]), torch.tensor([[1.0, 0.8], [0.8, 1.0]])
    )
    flow = pf.iaf(2, layers=2, hidden=H)

    def reverse_kl(model, _):
        z, log_q = model.rsample_and_log_prob((256,))
        return (log_q - target.log_prob(z)).mean()

    hist = fit(flow, reverse_kl, None, steps_per_epoch=50, max_epochs=12, lr=1e-2, seed=0)
    z, log_q = flow.rsample_and_log_prob((20000,))
    kl = (log_q - target.log_prob(z)).mean().item()
    assert kl < 0.02, hist.train_loss[-3:]


def test_bad_arguments_raise():
    flow = pf.maf(2, layers=1, hidden=H)
    with pytest.raises(ValueError, match="same number of rows"):
        fit(flow, nll, (torch.randn(5, 2), torch.randn(4, 1)))
    with pytest.raises(ValueError, match="empty"):
        fit(flow, nll, torch.randn(0, 2))
    with pytest.raises(ValueError, match="steps_per_epoch"):
        fit(flow, nll, None)
    with pytest.raises(ValueError, match="schedule"):
        fit(flow, nll, torch.randn(5, 2), schedule="linear")
