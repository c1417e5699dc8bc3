"""Racing the members of a portfolio (pyroflows.racing): successive halving by turns."""

import numpy as np
import pytest
import torch

import pyroflows as pf
from pyroflows import racing
from pyroflows.racing import race_portfolio
from pyroflows.train import History


def loop(curves, log, steps_per_epoch=10, epochs=60):
    """A stand-in for the training loop: validation loss ``curves[name](epoch)`` (epoch from
    0), the race's callback after each epoch with the number of epochs trained so far, as
    :func:`pyroflows.train.fit` calls it; ``log`` records (name, epoch) in the order they ran."""

    def fit_member(name, run):
        h = History()
        for epoch in range(epochs):
            log.append((name, epoch))
            h.val_loss.append(curves[name](epoch))
            h.steps, h.best_loss = steps_per_epoch * (epoch + 1), min(h.val_loss)
            if run.get("callback") and run["callback"](epoch + 1, h):
                break
        return h, len(h.val_loss)

    return fit_member


def test_the_worse_member_stops_after_its_pilot_and_one_trains_at_a_time():
    log = []
    curves = {"a": lambda e: 2.0 + 1 / (e + 1), "b": lambda e: 1.0 + 1 / (e + 1)}
    best, every = race_portfolio(["a", "b"], loop(curves, log), pilot_steps=50)
    assert best.name == "b"
    assert [c.result for c in every] == [5, 60]  # a: 50 steps; b: to its end
    # strictly by turns: a's pilot, b's pilot, then b alone
    assert log == [("a", e) for e in range(5)] + [("b", e) for e in range(60)]


def test_successive_halving_keeps_the_better_half_and_doubles_the_rung():
    log = []
    curves = {"a": lambda e: 3.0 - 0.01 * e, "b": lambda e: 1.0, "c": lambda e: 2.0 - 0.03 * e}
    best, every = race_portfolio(["a", "b", "c"], loop(curves, log), pilot_steps=30)
    # rung 1 (3 epochs each): a is dropped; rung 2 (6 epochs): b 1.0 vs c 1.85, c is dropped
    assert [c.result for c in every] == [3, 60, 6]
    assert best.name == "b"


def test_a_member_ahead_late_is_kept_when_the_pilot_shows_it():
    curves = {"a": lambda e: 1.5, "b": lambda e: 2.0 - 0.2 * e}  # b passes a at epoch 3
    best, every = race_portfolio(["a", "b"], loop(curves, []), pilot_steps=50)
    assert best.name == "b" and every[0].result == 5


def late_winner():
    """``a`` flat at 1.5; ``b`` at 1.64 after the pilot's 5 epochs but falling by 0.8 every
    doubling of the epochs (linear in log epochs): it passes ``a`` at epoch 5."""
    return {"a": lambda e: 1.5, "b": lambda e: 3.5 - 0.8 * np.log2(e + 1)}


@pytest.mark.parametrize(("rule", "winner"), [("best", "a"), ("slope", "b")])
def test_the_slope_rule_keeps_a_late_winner_that_the_best_loss_drops(monkeypatch, rule, winner):
    monkeypatch.setattr(racing, "PILOT_RULE", rule)
    best, every = race_portfolio(["a", "b"], loop(late_winner(), []), pilot_steps=50)
    assert best.name == winner
    loser = every[0 if winner == "b" else 1]
    assert loser.result == 5  # stopped after its pilot
    if winner == "b":  # kept: it ends far below a
        assert every[1].history.best_loss < 1.5 - 2


def test_projected_loss_is_the_last_doubling_fall_again():
    curve = [3.5 - 0.5 * np.log2(e + 1) for e in range(8)]  # linear in log2 epochs
    # best 2.0 after 8 epochs, 2.5 after 4: projected 1.5, the value at 16 epochs
    assert racing.projected_loss(curve) == pytest.approx(3.5 - 0.5 * np.log2(16))
    assert racing.projected_loss([2.0, 2.0, 2.0]) == 2.0


def test_an_unknown_pilot_rule_is_refused(monkeypatch):
    monkeypatch.setattr(racing, "PILOT_RULE", "guess")
    with pytest.raises(ValueError, match="PILOT_RULE"):
        race_portfolio(["a", "b"], loop({"a": lambda e: 1.0, "b": lambda e: 1.0}, []))


def test_a_failing_member_stops_the_race_and_raises():
    def fit_member(name, run):
        if name == "b":
            raise RuntimeError("boom")
        return loop({"a": lambda e: 1.0}, [])(name, run)

    with pytest.raises(RuntimeError, match="boom"):
        race_portfolio(["a", "b"], fit_member, pilot_steps=20)


def test_checkpoints_and_the_switch_run_the_members_one_after_the_other(monkeypatch):
    curves = {"a": lambda e: 2.0, "b": lambda e: 1.0}
    _, every = race_portfolio(["a", "b"], loop(curves, []), checkpoint="run.ckpt")
    assert [c.result for c in every] == [60, 60]
    monkeypatch.setattr(racing, "RACING", False)
    _, every = race_portfolio(["a", "b"], loop(curves, []), pilot_steps=20)
    assert [c.result for c in every] == [60, 60]


def test_the_default_estimator_races_deterministically_and_leaves_the_global_rng(monkeypatch):
    monkeypatch.setattr(racing, "PILOT_STEPS", 20)
    X = np.random.default_rng(0).normal(size=(300, 2)) * [1.0, 3.0]
    kw = dict(layers=1, hidden=(8,), max_epochs=40, progress=False, random_state=0)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    est = pf.DensityEstimator(**kw).fit(X)
    assert torch.equal(torch.get_rng_state(), before)
    epochs = {c["name"]: len(c["history"].val_loss) for c in est.candidates_}
    dropped = [name for name in epochs if name != est.member_]
    # 270 training rows, batch 256: 2 steps per epoch, a pilot of 20 steps is 10 epochs and
    # the next rung ends at 20 (the member dropped there was kept after the pilot by its
    # bound); the kept member trains to its own end (early stopping or max_epochs)
    assert epochs[dropped[0]] in (10, 20) and epochs[est.member_] > epochs[dropped[0]]
    assert est.history_.stop_reason in ("early_stopping", "max_epochs")
    again = pf.DensityEstimator(**kw).fit(X)
    np.testing.assert_array_equal(est.score_samples(X[:20]), again.score_samples(X[:20]))
    assert again.member_ == est.member_


def test_with_a_time_budget_a_pilot_also_ends_by_time():
    import time

    def slow(name, run):
        h = History()
        for epoch in range(30):
            time.sleep(0.02)
            h.val_loss.append({"a": 2.0, "b": 1.0}[name])
            h.steps, h.best_loss = epoch + 1, min(h.val_loss)
            if run["callback"](epoch + 1, h):
                break
        return h, len(h.val_loss)

    # a pilot of 10**6 steps, but a tenth of a 1-second budget: a few 0.02-second epochs
    best, every = race_portfolio(["a", "b"], slow, time_budget=1.0, pilot_steps=10**6)
    assert best.name == "b" and 3 <= every[0].result <= 8 and every[1].result == 30


def test_a_validated_start_counts_in_the_halving():
    """``a`` starts at a validation loss of 0.5 (``fit(validate_start=True)`` records it as
    ``best_loss`` before the first epoch) and its epochs are worse than ``b``'s; the halving
    ranks it by that start and keeps it."""

    def fit_member(name, run):
        h = History(best_loss=0.5 if name == "a" else float("inf"))
        for epoch in range(60):
            h.val_loss.append({"a": 2.0, "b": 1.0}[name])
            h.steps, h.best_loss = 10 * (epoch + 1), min(h.best_loss, h.val_loss[-1])
            if run["callback"](epoch + 1, h):
                break
        return h, len(h.val_loss)

    best, every = race_portfolio(["a", "b"], fit_member, pilot_steps=50)
    assert best.name == "a" and [c.result for c in every] == [60, 5]


def slow_starter():
    """``a`` flat at 1.5; ``b`` starts at 3.5 and falls by 0.3 per epoch: behind ``a`` after
    the 5 epochs of a 50-step pilot (2.3), far ahead by the end (its floor, -5)."""
    return {"a": lambda e: 1.5, "b": lambda e: max(3.5 - 0.3 * e, -5.0)}


@pytest.mark.parametrize(("rule", "winner"), [("best", "a"), ("bound", "b")])
def test_the_bound_rule_keeps_a_slow_starter_that_would_overtake(monkeypatch, rule, winner):
    monkeypatch.setattr(racing, "PILOT_RULE", rule)
    best, every = race_portfolio(["a", "b"], loop(slow_starter(), []), pilot_steps=50)
    assert best.name == winner
    if winner == "b":
        # b's bound after the pilot: 2.3 - 0.03 per step x 50 steps = 0.8 < a's 1.5, so b
        # stays; after the second rung (10 epochs) b leads at 0.8 and a, flat, is dropped
        assert [c.result for c in every] == [10, 60]
        assert every[1].history.best_loss == -5.0  # its floor
    else:
        assert [c.result for c in every] == [60, 5]


def test_the_bound_rule_still_drops_a_member_that_cannot_catch_up():
    curves = {"a": lambda e: 2.0 + 1 / (e + 1), "b": lambda e: 1.0 + 1 / (e + 1)}
    assert racing.PILOT_RULE == "bound"  # the default
    best, every = race_portfolio(["a", "b"], loop(curves, []), pilot_steps=50)
    # a's bound after 5 epochs: 2.2 - 0.3 / 30 steps x 50 steps = 1.7, above b's 1.2
    assert best.name == "b" and [c.result for c in every] == [5, 60]


def test_optimistic_loss_is_the_mean_fall_of_the_last_doubling_carried_on():
    curve = [5.0, 4.0, 3.0, 2.9, 2.8, 2.7]  # 60 steps: 3.0 -> 2.7 over the last 30
    assert racing.optimistic_loss(curve, 60, 50) == pytest.approx(2.7 - 0.01 * 50)
    assert racing.optimistic_loss(curve, 60, 0) == 2.7
    assert racing.optimistic_loss([2.0, 2.5, 2.4], 30, 1000) == 2.0  # no fall since the best
    assert racing.optimistic_loss([2.0], 10, 1000) == 2.0
    assert racing.optimistic_loss([4.0, 3.0, float("nan")], 20, 10) == pytest.approx(2.0)
    assert racing.optimistic_loss([float("nan")], 10, 10) == float("inf")


class Clock:
    """A fake ``time`` for the race: one second per epoch of the stand-in loop."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        return self.now


@pytest.mark.parametrize(("budget", "kept"), [(100.0, True), (30.0, False)])
def test_the_bound_looks_as_far_as_the_time_left(monkeypatch, budget, kept):
    """``b`` falls 0.04 per epoch (10 steps, 1 s) from 3.0 and passes the flat ``a`` at epoch
    38: with 100 s it is kept and wins; with 30 s (a 3-epoch pilot, 24 s left: 240 steps, a
    bound of 2.92 - 0.96 = 1.96 above 1.5) it is dropped after its pilot."""
    clock = Clock()
    monkeypatch.setattr(racing, "time", clock)
    curves = {"a": lambda e: 1.5, "b": lambda e: 3.0 - 0.04 * e}
    log = []
    inner = loop(curves, log)

    def fit_member(name, run):
        def callback(epochs, h):
            clock.now += 1.0
            return run["callback"](epochs, h)

        return inner(name, {**run, "callback": callback})

    best, every = race_portfolio(["a", "b"], fit_member, time_budget=budget, pilot_steps=50)
    assert (best.name == "b") == kept
    assert every[1].result == (60 if kept else 3)
    if kept:  # the member kept for its bound trains first in the next rung
        assert log[10:12] == [("b", 5), ("b", 6)]


def test_a_pilot_on_the_real_training_loop_lasts_the_minimum_epochs():
    """With the real loop (:func:`pyroflows.train.fit`, one step per epoch) and a pilot of one
    step, the minimum of :data:`racing._MIN_EPOCHS` epochs binds: the member behind (a flat
    validation loss of 2.0 against 1.0, so its bound cannot pass the leader) is dropped after
    exactly that many epochs, and the leader trains to ``max_epochs``."""
    from pyroflows.losses import nll
    from pyroflows.train import fit

    x = torch.randn(16, 2)

    def fit_member(name, run):
        flow = pf.maf(2, layers=1, hidden=(4,))
        h = fit(
            flow, nll, x, val_fn=lambda m: {"a": 2.0, "b": 1.0}[name], max_epochs=8,
            batch_size=16, seed=0, progress=False, callback=run["callback"],
        )  # fmt: skip
        return h, len(h.val_loss)

    best, every = race_portfolio(["a", "b"], fit_member, pilot_steps=1)
    assert racing._MIN_EPOCHS == 3
    assert best.name == "b" and [c.result for c in every] == [3, 8]
    assert every[0].history.stop_reason == "callback"
