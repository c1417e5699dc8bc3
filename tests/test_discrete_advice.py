"""The :class:`~pyroflows.validation.DataWarning` about a column with discrete values that a fit
models as continuous: it names the column, says that its log-likelihood is a density, and gives
the exact ``discrete`` option (``--discrete`` on the command line) that models it as discrete;
each test follows that advice literally and checks that the warning is gone."""

from __future__ import annotations

import ast
import re
import warnings

import numpy as np
import pandas as pd
import pytest

from pyroflows import DensityEstimator
from pyroflows.baselines import GaussianDensity
from pyroflows.cli import main
from pyroflows.validation import DataWarning

TINY = dict(flow="maf", layers=1, hidden=(8,), max_epochs=1, progress=False)
N = 300


def _caught(fit) -> list[DataWarning]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit()
    return [w.message for w in caught if issubclass(w.category, DataWarning)]


def _advised(message: str) -> dict:
    """The ``discrete={...}`` option that a warning advises, read from its text."""
    found = re.findall(r"pass discrete=(\{[^}]*\})", message)
    assert len(found) == 1, message
    return ast.literal_eval(found[0])


def _table() -> pd.DataFrame:
    """``count``: integer values, almost all distinct, so ``discrete="auto"`` keeps it
    continuous; ``coin``: two values, found discrete by ``"auto"``."""
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "x": rng.normal(size=N),
            "count": rng.integers(0, 10**6, N).astype(float),
            "coin": rng.integers(0, 2, N).astype(float),
        }
    )


def test_an_integer_column_left_continuous_by_auto_is_named_with_the_option():
    frame = _table()
    (warning,) = _caught(lambda: DensityEstimator(**TINY).fit(frame))
    text = str(warning)
    assert text.startswith(
        "X column 1 ('count') takes only integer values but is modelled as continuous: its "
        "log-likelihood is a density, not a probability"
    )
    assert "not comparable with that of a model that treats the column as discrete" in text
    assert "discrete='auto' finds a float column discrete only when its values sit on a" in text
    assert (warning.column, warning.kind) == ("count", "integer")
    assert _advised(text) == {"count": "integer"}
    est = DensityEstimator(**TINY, discrete=_advised(text))
    assert _caught(lambda: est.fit(frame)) == []
    assert est.columns_.kinds == {"x": "continuous", "count": "integer", "coin": "integer"}


def test_an_array_column_is_advised_by_its_position():
    X = _table().to_numpy()
    (warning,) = _caught(lambda: DensityEstimator(**TINY).fit(X))
    assert str(warning).startswith("X column 1 takes only integer values")
    assert _advised(str(warning)) == {1: "integer"}
    assert _caught(lambda: DensityEstimator(**TINY, discrete=_advised(str(warning))).fit(X)) == []


@pytest.mark.parametrize(
    ("discrete", "why"),
    [
        (None, "discrete=None models every column as continuous"),
        ({"count": "integer", "coin": "continuous"}, "discrete names it 'continuous'"),
    ],
    ids=["none", "named-continuous"],
)
def test_the_advice_keeps_the_other_columns_of_the_option(discrete, why):
    frame = _table()[["x", "count", "coin"]]
    warned = _caught(lambda: DensityEstimator(**TINY, discrete=discrete).fit(frame))
    coin = [w for w in warned if w.column == "coin"]
    assert len(coin) == 1 and str(coin[0]).startswith("X column 2 ('coin') takes only 2 distinct")
    assert why in str(coin[0])
    advised = _advised(str(coin[0]))
    kept = {} if discrete is None else {"count": "integer"}
    assert advised == kept | {"coin": "integer"}
    rest = _caught(lambda: DensityEstimator(**TINY, discrete=advised).fit(frame))
    assert [w.column for w in rest] == ([] if discrete else ["count"])


def test_off_grid_values_are_advised_categorical():
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"x": rng.normal(size=N), "level": rng.choice([0.0, 1.0, np.pi], N)})
    (warning,) = _caught(lambda: DensityEstimator(**TINY).fit(frame))
    assert (warning.column, warning.kind) == ("level", "categorical")
    advised = _advised(str(warning))
    assert advised == {"level": "categorical"}
    assert _caught(lambda: DensityEstimator(**TINY, discrete=advised).fit(frame)) == []


def test_an_estimator_without_discrete_columns_points_to_one_that_has_them():
    warned = _caught(lambda: GaussianDensity().fit(_table()))
    (warning,) = [w for w in warned if w.column == "count"]
    assert "this estimator models every column as continuous" in str(warning)
    assert "pyroflows.DensityEstimator(discrete={'count': 'integer'})" in str(warning)


@pytest.mark.parametrize("header", [True, False], ids=["header", "no-header"])
def test_the_command_line_spells_the_advice_as_its_option(tmp_path, capsys, header):
    frame = _table()[["x", "count"]]
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False, header=header)
    argv = ["fit", str(path), "--out", str(tmp_path / "m.pt"), "--flow", "maf", "--layers",
            "1", "--hidden", "8", "--epochs", "1", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    err = capsys.readouterr().err
    option = "count=integer" if header else "2=integer"
    assert "--discrete auto finds a float column discrete only when" in err
    assert f"pass --discrete {option} to score it by the probability of its values" in err
    assert main([*argv, "--discrete", option]) == 0
    assert "warning" not in capsys.readouterr().err
