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


def _scripted_fit(losses, **options):
    flow = pf.maf(2, layers=1, hidden=H)
    scripted = iter(losses)
    hist = fit(
        flow, nll, torch.randn(64, 2), val_fn=lambda m: next(scripted),
        max_epochs=len(losses), seed=0, **options,
    )  # fmt: skip
    return hist


def test_overfit_window_stops_a_loss_that_has_risen_away_from_its_best():
    # best (1.0) at epoch 2, then a steady rise of 0.1 per epoch: the first window of 4
    # epochs that all exceed the best by more than twice their step (0.2) is epochs 5-8
    rising = [3.0, 2.0, 1.0] + [1.0 + 0.1 * k for k in range(1, 20)]
    hist = _scripted_fit(rising, patience=50, overfit_window=4)
    assert hist.stop_reason == "overfitting" and hist.best_epoch == 2
    assert len(hist.val_loss) == 9 and min(hist.val_loss[-4:]) > 1.0 + 2 * 0.1
    # without the option, or without a patience, only the patience (or nothing) stops it
    assert _scripted_fit(rising, patience=50).stop_reason == "max_epochs"
    assert _scripted_fit(rising, patience=None, overfit_window=4).stop_reason == "max_epochs"


def test_overfit_window_lets_a_plateau_wander_and_improve_later():
    # above the best (1.0) for 12 epochs, but by less than its epoch-to-epoch change (0.4)
    # twice over: not a rise away from the best; the late improvement is found
    plateau = [1.3 + 0.2 * (-1.0) ** k for k in range(12)]
    losses = [2.0, 1.0] + plateau + [0.5, 0.6]
    hist = _scripted_fit(losses, patience=50, overfit_window=8)
    assert hist.stop_reason == "max_epochs" and hist.best_loss == 0.5


def test_overfit_window_is_checked():
    with pytest.raises(ValueError, match="overfit_window must be at least 2"):
        pf.train.check_options(overfit_window=1)
    with pytest.raises(ValueError, match="overfit_window must be a positive integer"):
        pf.train.check_options(overfit_window=2.5)


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
    # options that were ignored: val_data beside val_fn, a checkpoint period without a path
    with pytest.raises(ValueError, match="val_data or val_fn, not both"):
        fit(flow, nll, torch.randn(5, 2), torch.randn(5, 2), val_fn=lambda m: 0.0)
    with pytest.raises(ValueError, match="checkpoint_every=5 needs a checkpoint path"):
        fit(flow, nll, torch.randn(5, 2), checkpoint_every=5)


# -- issue 7: the loop in parts ---------------------------------------------------------------
def _failing_every_epoch_once():
    """A loss that fails on the first step of every epoch and succeeds on the retry."""
    state = {"fail": True}

    def loss(flow, batch):
        value = nll(flow, batch)
        if state["fail"]:
            state["fail"] = False
            return value * math.nan
        return value

    def rearm(epoch, history):
        state["fail"] = True

    return loss, rearm


def test_the_guard_counts_consecutive_failures_only():
    """Defect: a failure in every epoch, each followed by a successful retry, is not a
    divergence (the old guard counted all failures and gave up after max_retries)."""
    flow = pf.maf(2, layers=1, hidden=H)
    loss, rearm = _failing_every_epoch_once()
    hist = fit(flow, loss, torch.randn(64, 2), max_epochs=5, max_retries=1, callback=rearm)
    assert hist.stop_reason == "max_epochs" and hist.restarts == 5
    # the learning rate was halved at every retry
    assert hist.lr[-1] == pytest.approx(1e-3 * 0.5**5)


def test_a_diverged_fit_leaves_the_model_in_eval_mode():
    flow = pf.maf(2, layers=1, hidden=H)
    with pytest.raises(TrainingDiverged):
        fit(flow, lambda f, b: nll(f, b) * math.nan, torch.randn(64, 2), max_retries=1)
    assert not flow.training


def test_validation_respects_the_time_budget():
    """Defect: validation of a large set ran past the budget."""
    import time

    flow = pf.maf(2, layers=1, hidden=H)

    def slow_when_validating(f, batch):
        if not f.training:
            time.sleep(0.05)
        return nll(f, batch)

    start = time.perf_counter()
    hist = fit(
        flow,
        slow_when_validating,
        torch.randn(256, 2),
        torch.randn(200 * 1024, 2),  # 200 validation batches: 10 s if the budget were ignored
        max_epochs=50,
        time_budget=0.5,
    )
    assert time.perf_counter() - start < 2.0
    assert hist.stop_reason == "time_budget"


def test_fit_leaves_the_global_random_state_alone():
    flow = pf.maf(2, layers=1, hidden=H)
    torch.manual_seed(5)
    expected = torch.rand(2)
    x = torch.randn(64, 2)
    torch.manual_seed(5)
    fit(flow, nll, x, max_epochs=2, seed=0)
    assert torch.equal(torch.rand(2), expected)


def test_warmup_cosine_schedule_rises_then_decays():
    from pyroflows.train import SCHEDULES

    opt = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=1e-2)
    scheduler = SCHEDULES["warmup_cosine"](opt, 200)
    lrs = []
    for _ in range(200):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step()
    peak = max(range(200), key=lambda i: lrs[i])
    assert peak == 9 and lrs[0] == pytest.approx(1e-3) and lrs[peak] == pytest.approx(1e-2)
    assert all(a >= b for a, b in zip(lrs[peak:], lrs[peak + 1 :], strict=False))
    assert lrs[-1] < 1e-5


@pytest.mark.parametrize(
    "option, value",
    [
        ("lr", 0.0),
        ("clip_grad", 0.0),
        ("patience", 0),
        ("max_epochs", 2.5),
        ("batch_size", 0),
        ("lr_backoff", 1.0),
        ("time_budget", -1.0),
        ("max_retries", -1),
        ("weight_decay", -1.0),
        ("schedule", "cyclic"),
        ("progress", "yes"),
    ],
)
def test_options_out_of_range_are_named(option, value):
    with pytest.raises(ValueError, match=option):
        fit(pf.maf(2, layers=1, hidden=H), nll, torch.randn(8, 2), **{option: value})


def test_progress_auto_is_silent_in_ci_and_without_a_terminal(monkeypatch):
    from pyroflows.train import show_progress

    monkeypatch.setenv("CI", "true")
    assert show_progress("auto") is False
    monkeypatch.delenv("CI")
    monkeypatch.setattr("sys.stderr", open("/dev/null", "w"))  # not a TTY
    assert show_progress("auto") is False
    assert show_progress(True) is True and show_progress(False) is False


# -- check_options: the loop's validation, on its own -------------------------------------------
@pytest.mark.parametrize(
    "options, error, message",
    [
        ({"lr": -1}, ValueError, "lr must be a positive number, got -1"),
        ({"batch_size": 0}, ValueError, "batch_size must be a positive integer, got 0"),
        ({"max_epochs": 0}, ValueError, "max_epochs must be a positive integer, got 0"),
        ({"schedule": "linear"}, ValueError, "schedule must be one of"),
        ({"lr": "fast"}, TypeError, "lr must be a number, got 'fast'"),
        ({"callback": 3}, TypeError, "callback must be callable or None, got 3"),
        ({"device": "warp-drive"}, ValueError, "'warp-drive' is not a valid torch device"),
    ],
    ids=["negative-lr", "zero-batch", "zero-epochs", "bad-schedule", "string-lr",
         "callback-not-callable", "invalid-device"],
)  # fmt: skip
def test_check_options_raises_what_fit_raises(options, error, message):
    from pyroflows.train import check_options

    with pytest.raises(error, match=message) as checked:
        check_options(**options)
    # fit runs the same check, before any work: the same error, word for word
    with pytest.raises(error) as fitted:
        fit(pf.maf(2, layers=1, hidden=H), nll, torch.randn(8, 2), **{"max_epochs": 1, **options})
    assert str(fitted.value) == str(checked.value)


def test_check_options_names_an_unknown_option_and_accepts_good_ones():
    from pyroflows.train import check_options

    with pytest.raises(TypeError, match="unknown training option 'max_epoch'.*'max_epochs'"):
        check_options(max_epoch=10)
    with pytest.raises(TypeError, match="unknown training option 'data'"):
        check_options(data=torch.randn(8, 2))  # an argument of fit, not an option
    assert check_options() is None
    good = dict(lr=3e-3, batch_size=64, max_epochs=5, schedule="warmup_cosine", seed=0,
                patience=None, clip_grad=None, checkpoint="run.ckpt", device="cpu")  # fmt: skip
    assert check_options(**good) is None


@pytest.mark.parametrize("steps", [1, 7, 50, 151, 250])
@pytest.mark.parametrize("with_data", [True, False], ids=["data", "data-free"])
def test_max_steps_runs_exactly_that_many_steps(steps, with_data):
    flow = pf.maf(2, layers=1, hidden=H)
    calls = {"n": 0}

    def counted(model, batch):
        calls["n"] += 1
        if batch:
            return nll(model, batch)
        return -model.log_prob(model.sample((8,))).mean()

    data = torch.randn(640, 2) if with_data else None  # 10 batches of 64 an epoch
    hist = fit(
        flow, counted, data, max_epochs=10_000, max_steps=steps, batch_size=64,
        steps_per_epoch=None if with_data else 100, schedule="cosine", lr=1e-3, seed=0,
    )  # fmt: skip
    assert hist.steps == steps == calls["n"]
    assert hist.stop_reason == "max_steps"
    # the cosine schedule ends at its minimum exactly at the last step
    assert hist.lr[-1] == pytest.approx(0.0, abs=1e-12)


def test_max_steps_or_max_epochs_whichever_first():
    hist = fit(pf.maf(2, layers=1, hidden=H), nll, torch.randn(128, 2), max_epochs=2,
               max_steps=100, batch_size=64, seed=0)  # fmt: skip
    assert hist.steps == 4 and hist.stop_reason == "max_epochs"


def test_a_retried_epoch_does_not_count_its_lost_steps():
    flow = pf.maf(2, layers=1, hidden=H)
    calls = {"n": 0}

    def flaky(model, batch):
        calls["n"] += 1
        loss = nll(model, batch)
        return loss * math.nan if calls["n"] == 6 else loss

    hist = fit(flow, flaky, torch.randn(64, 2), max_epochs=100, max_steps=10, batch_size=16,
               seed=0)  # fmt: skip
    assert hist.restarts == 1 and hist.steps == 10


def test_simulations_are_a_data_source_of_the_loop(tmp_path):
    from pyroflows.train.sources import Simulations

    def draw():
        return (3.0 + 0.5 * torch.randn(128, 1),)

    def run(**kw):
        torch.manual_seed(1)
        flow = pf.maf(1, layers=1, hidden=H)
        source = Simulations(draw, steps=20)
        return flow, fit(flow, nll, source, max_epochs=1000, max_steps=300, lr=1e-2, seed=0, **kw)

    flow, hist = run()
    assert hist.steps == 300 and hist.stop_reason == "max_steps"
    x = flow.sample((20_000,))
    assert float(x.mean()) == pytest.approx(3.0, abs=0.05)
    assert float(x.std()) == pytest.approx(0.5, abs=0.05)
    again, _ = run()  # seeded: the same simulations, the same network
    assert all(
        torch.equal(a, b) for a, b in zip(flow.parameters(), again.parameters(), strict=True)
    )
    with pytest.raises(RuntimeError, match="no usable rows"):
        fit(pf.maf(1, layers=1, hidden=H), nll, Simulations(lambda: (torch.zeros(0, 1),), 2))


@pytest.mark.parametrize("validate_start", [False, True])
def test_validation_rows_with_nan_are_refused_and_the_model_is_left_as_it_was(validate_start):
    torch.manual_seed(0)
    x = torch.randn(300, 3)
    val = torch.randn(50, 3)
    val[7, 1] = math.nan  # one NaN value: every epoch's validation loss is NaN
    flow = pf.maf(3, layers=2, hidden=(16,))
    before = {k: v.clone() for k, v in flow.state_dict().items()}
    with pytest.raises(ValueError, match="validation loss is NaN after epoch 0"):
        fit(flow, pf.losses.nll, x, val_data=val, max_epochs=3, validate_start=validate_start)
    assert all(torch.equal(before[k], v) for k, v in flow.state_dict().items())


def test_a_validation_loss_that_turns_nan_later_is_the_model_not_the_data():
    torch.manual_seed(0)
    x = torch.randn(300, 2)
    flow = pf.maf(2, layers=1, hidden=(8,))
    calls = []

    def val_fn(model):  # finite first, then NaN: early stopping keeps the best state
        calls.append(1)
        return 1.0 if len(calls) == 1 else math.nan

    hist = fit(flow, pf.losses.nll, x, val_fn=val_fn, max_epochs=4, patience=2)
    assert hist.best_epoch == 0 and hist.stop_reason == "early_stopping"
