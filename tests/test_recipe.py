"""The shared recipe: validation rows, the portfolio (budget shares, member files, the best
kept, ties to the first) and the history of a fit in two phases."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyroflows.train import History
from pyroflows.train.recipe import run_portfolio, validation_rows


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(st.integers(2, 10**7), st.floats(1e-6, 0.999))
def test_validation_rows_keep_a_row_on_each_side(n, fraction):
    k = validation_rows(n, fraction)
    assert 1 <= k <= n - 1
    assert abs(k - fraction * n) <= max(0.5, 1 - fraction * n, fraction * n - (n - 1)) + 1e-9


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5])
def test_validation_fraction_out_of_range_is_refused(fraction):
    with pytest.raises(ValueError, match="validation_fraction"):
        validation_rows(100, fraction)


def test_the_portfolio_shares_the_budget_and_names_each_members_file():
    runs = {}

    def fit_member(name, run):
        runs[name] = run
        time.sleep(0.05)
        return History(best_loss={"a": 1.0, "b": 0.5, "c": 0.5}[name]), None

    best, every = run_portfolio(
        ["a", "b", "c"], fit_member, time_budget=3.0, checkpoint="x/run.ckpt", resume="r.ckpt",
        shares=[2, 1, 1],
    )  # fmt: skip
    assert best.name == "b"  # the first of the tied best
    assert [c.name for c in every] == ["a", "b", "c"]
    assert runs["a"]["time_budget"] == pytest.approx(1.5, abs=0.01)
    left_for_b = 3.0 - every[0].seconds
    assert runs["b"]["time_budget"] == pytest.approx(left_for_b / 2, abs=0.01)
    assert runs["c"]["time_budget"] == pytest.approx(3.0 - every[0].seconds - every[1].seconds,
                                                     abs=0.02)  # fmt: skip
    assert runs["a"]["checkpoint"] == Path("x/run.a.ckpt")
    assert runs["c"]["resume"] == Path("r.c.ckpt")
    assert all(c.seconds >= 0.05 for c in every)


def test_a_portfolio_of_one_uses_the_paths_as_given():
    runs = {}
    run_portfolio(["a"], lambda n, r: (runs.setdefault(n, r), History())[1:] + (None,),
                  checkpoint="run.ckpt")  # fmt: skip
    assert runs["a"] == {"time_budget": None, "checkpoint": "run.ckpt", "resume": None}


@pytest.mark.parametrize("shares", [[1.0], [1.0, 0.0], [1.0, -1.0]])
def test_bad_shares_are_refused(shares):
    with pytest.raises(ValueError, match="shares"):
        run_portfolio(["a", "b"], lambda n, r: (History(), None), shares=shares)
