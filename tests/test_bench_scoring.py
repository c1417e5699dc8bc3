"""The helpers that ``benchmarks/quality.py`` and ``benchmarks/density_tables.py`` share
(``benchmarks/_scoring.py``): a fit's result passes through unchanged, a failed fit becomes one
NaN per evaluation row with its error, and the time to a loss is the earliest one."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from _scoring import Fit, attempt, time_to  # noqa: E402


def test_attempt_returns_the_fit_itself_with_its_arguments():
    seen = {}

    def fit(a, b, *, race=True):
        seen.update(a=a, b=b, race=race)
        return Fit(np.array([-1.5, -2.5]), 0.25, {"member": "nsf"})

    result = attempt(5, fit, 1, 2, race=False)
    assert seen == {"a": 1, "b": 2, "race": False}
    np.testing.assert_array_equal(result.log_prob, [-1.5, -2.5])  # not NaN-padded to 5
    assert (result.seconds, result.info) == (0.25, {"member": "nsf"})


def test_a_failed_fit_is_one_nan_per_evaluation_row_with_its_error():
    def fit(train, val, test):
        raise RuntimeError(f"diverged on {len(train)} rows")

    result = attempt(7, fit, np.zeros(3), None, None)
    assert result.log_prob.shape == (7,) and np.isnan(result.log_prob).all()
    assert result.info == {"error": "RuntimeError: diverged on 3 rows"}
    assert 0 <= result.seconds < 1


@pytest.mark.parametrize(("target", "expected"), [(0.6, 2.0), (0.45, 2.0), (0.3, 4.0), (0.1, None)])
def test_time_to_is_the_earliest_time_at_or_below_the_target(target, expected):
    # two members' curves joined, each on the fit's clock: times not sorted
    curve = {"time": [1.0, 3.0, 5.0, 2.0, 4.0], "val_loss": [0.9, 0.5, 0.45, 0.4, 0.3]}
    assert time_to(curve, target) == expected


def test_time_to_without_a_curve_is_none():
    assert time_to(None, 1.0) is None
    assert time_to({"time": [], "val_loss": []}, 1.0) is None
