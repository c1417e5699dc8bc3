"""Discrete, quantised and categorical columns (:mod:`pyroflows.tabular`) and the mixed
likelihood of :class:`~pyroflows.density.DensityEstimator`, against exact answers."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from pyroflows.density import DensityEstimator
from pyroflows.tabular import (
    Columns,
    fit_columns,
    grid_of,
    log_mean_exp,
    mixed_log_prob,
)

SMALL = dict(flow="nsf", layers=2, hidden=(32, 32), max_epochs=30, progress=False, lr=3e-3)


# -- detection -------------------------------------------------------------------------------
def _frame(n: int = 400, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "count": rng.poisson(3, n),
            "colour": rng.choice(["red", "green", "blue"], n, p=[0.2, 0.5, 0.3]),
            "x": rng.normal(size=n),
            "rounded": np.round(rng.normal(size=n), 1),
            "flag": rng.random(n) < 0.3,
            "size": pd.Categorical(
                rng.choice(["S", "M", "L"], n), categories=["S", "M", "L"], ordered=True
            ),
        }
    )


def test_kinds_come_from_dtypes_and_grids():
    columns = fit_columns(_frame())
    assert columns.kinds == {
        "count": "integer", "colour": "categorical", "x": "continuous",
        "rounded": "quantised", "flag": "categorical", "size": "ordinal",
    }  # fmt: skip
    by_name = {c.name: c for c in columns.columns}
    assert by_name["rounded"].step == 0.1
    assert by_name["count"].step == 1.0 and by_name["count"].offset == 0.0
    # categories coded by decreasing frequency; an ordinal column keeps its declared order
    assert by_name["colour"].categories == ("green", "blue", "red")
    assert by_name["size"].categories == ("S", "M", "L")


def test_grid_detection_guards_continuous_columns():
    rng = np.random.default_rng(1)
    assert grid_of(rng.normal(size=5000)) is None  # distinct values: continuous
    assert grid_of(np.round(rng.normal(size=20), 1)) is None  # too few repeats to tell
    offset, step = grid_of(0.25 + 0.05 * rng.integers(0, 30, 2000))
    assert step == pytest.approx(0.05) and offset == pytest.approx(0.25, abs=0.05)
    # the smallest gap is twice the step: the grid is still found
    assert grid_of(np.array([0.0, 0.2, 0.5, 0.0, 0.2, 0.5, 0.7, 0.7]))[1] == pytest.approx(0.1)
    # values near a grid but off it by more than rounding: no grid
    assert grid_of(np.round(rng.normal(size=400), 1) + 1e-4 * rng.normal(size=400)) is None


def test_a_float_array_of_integers_is_integer_and_normal_columns_stay_continuous():
    rng = np.random.default_rng(2)
    X = np.column_stack([rng.poisson(5, 300).astype(float), rng.normal(size=300)])
    assert fit_columns(X).kinds == {"0": "integer", "1": "continuous"}


def test_overrides_are_honoured_or_refused():
    df = _frame()
    kinds = fit_columns(df, {"x": "continuous", "count": "categorical", 3: 0.05}).kinds
    assert kinds["count"] == "categorical" and kinds["rounded"] == "quantised"
    assert fit_columns(df, {"rounded": 0.05}).columns[3].step == 0.05
    assert set(fit_columns(df[["x", "rounded"]], None).kinds.values()) == {"continuous"}
    bad = [
        ([0, 1], "discrete must be 'auto', None or a dict"),
        ({"nope": "integer"}, "discrete names column 'nope'"),
        ({9: "integer"}, "discrete names column 9"),
        ({"x": "integer"}, "declared 'integer', but its values are not all integers"),
        ({"rounded": 0.3}, "not all on a grid of step 0.3"),
        ({"colour": "continuous"}, "'colour' is not numeric: it cannot be continuous"),
        ({"colour": "integer"}, "can only be categorical or ordinal"),
        ({"x": "spiky"}, "must be one of"),
        ({"x": -1.0}, "a step must be a positive number"),
        ({"x": "quantised"}, "declared quantised, but no grid was found"),
        ({"count": "integer", 0: "integer"}, "names column 'count' twice"),
    ]
    for discrete, message in bad:
        with pytest.raises(ValueError, match=message.replace("(", r"\(")):
            fit_columns(df, discrete)
    with pytest.raises(ValueError, match="'colour' is not numeric"):
        fit_columns(df, None)
    with pytest.raises(ValueError, match="'c' has missing values"):
        fit_columns(pd.DataFrame({"c": ["a", None, "b", "a"]}))


def test_codes_round_trip_with_dtypes_and_refuse_unseen_values():
    df = _frame()
    columns = fit_columns(df)
    codes = columns.encode(df)
    back = columns.decode(columns.dequantise(codes.to_numpy(), np.random.default_rng(0)))
    assert list(back.dtypes) == list(df.dtypes)
    for name in df.columns:
        if name == "x":
            continue  # continuous: the noise of dequantisation is not added there
        if name == "rounded":
            np.testing.assert_allclose(back[name], df[name], atol=1e-12)
        else:
            assert (back[name] == df[name]).all(), name
    assert back["size"].cat.ordered
    new = df.head(3).copy()
    new["colour"] = ["red", "purple", "green"]
    with pytest.raises(ValueError, match=r"column 'colour' has categories not seen .*'purple'"):
        columns.encode(new)
    new = df.head(3).copy()
    new["rounded"] = [0.1, 0.25, 0.3]
    with pytest.raises(ValueError, match="row 1 has 0.25, off the grid"):
        columns.encode(new)
    state = Columns.from_plain(columns.as_plain())
    assert state == columns


def test_decoded_categoricals_keep_the_declared_order_of_their_categories():
    """The model codes an unordered category by frequency; the decoded column (and a saved
    and loaded one) has the frame's own categories in the frame's own order, so its
    ``.cat.codes`` mean what the user's codes mean."""
    rng = np.random.default_rng(1)
    declared = ["a", "b", "c", "unused"]
    df = pd.DataFrame(
        {"kind": pd.Categorical(rng.choice(["a", "b", "c"], 300, p=[0.1, 0.3, 0.6]), declared)}
    )
    columns = fit_columns(df)
    assert columns.columns[0].categories[0] == "c"  # the model's code order: by frequency
    for fitted in (columns, Columns.from_plain(columns.as_plain())):
        back = fitted.decode(fitted.dequantise(fitted.encode(df).to_numpy(), rng))
        assert list(back["kind"].cat.categories) == declared
        np.testing.assert_array_equal(back["kind"].cat.codes, df["kind"].cat.codes)


# -- the likelihood estimator ---------------------------------------------------------------------
def test_mixed_log_prob_is_the_cell_mass_times_the_density():
    """A known density of codes: a standard normal in the discrete column (cell masses
    Phi(k + 1) - Phi(k)) times a Laplace density in the continuous one."""

    def log_prob(Y):
        return stats.norm.logpdf(Y[:, 0]) + stats.laplace.logpdf(Y[:, 1])

    codes = np.array([[-2.0, 0.3], [0.0, -1.0], [1.0, 2.0]])
    mask = np.array([True, False])
    rng = np.random.default_rng(0)
    got = mixed_log_prob(log_prob, codes, mask, 4000, rng)
    k = codes[:, 0]
    exact = np.log(stats.norm.cdf(k + 1) - stats.norm.cdf(k)) + stats.laplace.logpdf(codes[:, 1])
    np.testing.assert_allclose(got, exact, atol=0.01)
    # one draw: the log of the unbiased mass estimate is low on average (Jensen: the exact
    # bias is log P - E log p(u) = 0.0106 for the cell [0, 1) of N(0, 1)); 64 draws: tight
    repeated = np.repeat(codes[1:2], 20_000, axis=0)
    one = mixed_log_prob(log_prob, repeated, mask, 1, rng)
    assert one.mean() < exact[1] - 0.005
    mass = np.exp(exact[1] - stats.laplace.logpdf(-1.0))
    assert np.mean(np.exp(one - stats.laplace.logpdf(-1.0))) == pytest.approx(mass, rel=0.01)
    many = mixed_log_prob(log_prob, repeated[:2000], mask, 64, rng)
    assert abs(many.mean() - exact[1]) < 2e-4
    assert log_mean_exp(np.full((2, 3), -np.inf)).tolist() == [-np.inf, -np.inf]


# -- fitted estimators against exact distributions ------------------------------------------------
def test_poisson_counts_get_masses_that_sum_to_one_and_the_entropy():
    rng = np.random.default_rng(0)
    X = rng.poisson(4.0, (2000, 1)).astype(float)
    est = DensityEstimator(**SMALL).fit(X)
    assert est.columns_.kinds == {"0": "integer"}
    support = np.arange(-10.0, 40.0)[:, None]  # the cells of the integers: the whole line
    mass = np.exp(est.score_samples(support))
    assert mass.sum() == pytest.approx(1.0, abs=0.002)
    assert mass[:10].sum() < 0.01  # what the fit leaves below the smallest count
    np.testing.assert_allclose(mass[10:20], stats.poisson(4.0).pmf(np.arange(10)), atol=0.025)
    test = rng.poisson(4.0, (4000, 1)).astype(float)
    entropy = -stats.poisson(4.0).logpmf(test).mean()
    assert -est.score(test) == pytest.approx(entropy, abs=0.03)
    draws = est.sample(4000, random_state=1)
    assert np.all(draws == np.round(draws))
    freq = np.array([np.mean(draws == k) for k in range(10)])
    np.testing.assert_allclose(freq, stats.poisson(4.0).pmf(np.arange(10)), atol=0.025)


def test_a_category_times_a_gaussian_frame():
    rng = np.random.default_rng(1)
    n, p = 2000, np.array([0.5, 0.3, 0.2])
    frame = pd.DataFrame({"c": rng.choice(["a", "b", "c"], n, p=p), "x": 2.0 + rng.normal(size=n)})
    est = DensityEstimator(**SMALL).fit(frame)
    assert est.columns_.kinds == {"c": "categorical", "x": "continuous"}
    draws = est.sample(4000, random_state=0)
    assert isinstance(draws, pd.DataFrame) and list(draws.dtypes) == list(frame.dtypes)
    freq = draws["c"].value_counts(normalize=True)[["a", "b", "c"]].to_numpy()
    np.testing.assert_allclose(freq, p, atol=0.03)
    # the mass of each category: log p(c, x) - log p(x) at a few x, against log P(c)
    x = np.array([1.0, 2.0, 3.0])
    for code, prob in zip("abc", p, strict=True):
        rows = pd.DataFrame({"c": [code] * 3, "x": x})
        mass = est.score_samples(rows) - stats.norm.logpdf(x, 2.0)
        np.testing.assert_allclose(mass, np.log(prob), atol=0.2)
    test = pd.DataFrame(
        {"c": rng.choice(["a", "b", "c"], 4000, p=p), "x": 2 + rng.normal(size=4000)}
    )
    truth = np.log(p[test["c"].map({"a": 0, "b": 1, "c": 2})]) + stats.norm.logpdf(test["x"], 2)
    assert est.score(test) == pytest.approx(truth.mean(), abs=0.05)
    fitted = est.score_samples(test.head(5))
    bad = test.head(5).copy()
    bad.loc[2, "c"] = "z"
    with pytest.raises(ValueError, match="'c' has categories not seen at fit time: \\['z'\\]"):
        est.score_samples(bad)
    np.testing.assert_array_equal(est.score_samples(test.head(5)), fitted)


def test_rounded_values_get_a_mass_not_a_spike_density():
    """Values rounded to 0.1 with few distinct values: a continuous fit puts a spike on each
    and reports log p far above 0; the discrete fit reports masses (log <= 0) close to the
    true log-probabilities."""
    rng = np.random.default_rng(3)
    X = np.round(rng.normal(0.0, 0.08, (2000, 1)), 1)
    cells = np.arange(-0.4, 0.41, 0.1)
    pmf = stats.norm.cdf(cells + 0.05, 0, 0.08) - stats.norm.cdf(cells - 0.05, 0, 0.08)
    truth = np.log(pmf[np.round((X[:, 0] + 0.4) * 10).astype(int)]).mean()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        spiky = DensityEstimator(**SMALL, discrete=None).fit(X)
    assert spiky.score(X) > truth + 1.0  # "wins" by spikes: not a probability
    est = DensityEstimator(**SMALL).fit(X)
    assert est.columns_.columns[0].kind == "quantised" and est.columns_.columns[0].step == 0.1
    scores = est.score_samples(cells[:, None].round(1))
    assert scores.max() <= 1e-6  # a mass: at most one per cell
    assert np.exp(scores).sum() == pytest.approx(1.0, abs=0.02)
    assert est.score(X) == pytest.approx(truth, abs=0.03)


def test_bounds_carry_to_the_cells_of_a_count_column():
    """bounds=(0, inf) on a count column: the cells of 0, 1, ... fill (0, inf) (a log map of
    the codes), so draws are never negative and the masses of k >= 0 sum to one, whatever the
    quality of the fit."""
    X = np.random.default_rng(5).poisson(2.0, (500, 1)).astype(float)
    est = DensityEstimator(**(SMALL | {"max_epochs": 3}), bounds=(0, np.inf)).fit(X)
    assert est.sample(2000, random_state=0).min() == 0.0
    mass = np.exp(est.score_samples(np.arange(0.0, 60.0)[:, None]))
    assert mass.sum() == pytest.approx(1.0, abs=0.005)
    assert est.score_samples(np.array([[-1.0]]))[0] == -np.inf


def test_save_load_and_streamed_refusal(tmp_path):
    frame = _frame(300)
    est = DensityEstimator(**(SMALL | {"max_epochs": 3})).fit(frame)
    path = tmp_path / "model.pt"
    est.save(path)
    back = DensityEstimator.load(path)
    assert back.columns_ == est.columns_
    np.testing.assert_array_equal(back.score_samples(frame), est.score_samples(frame))
    pd.testing.assert_frame_equal(back.sample(50, random_state=0), est.sample(50, random_state=0))
    npy = tmp_path / "rows.npy"
    np.save(npy, np.column_stack([frame["count"], frame["x"]]).astype(float))
    with pytest.raises(ValueError, match=r"found discrete column\(s\) \{'0': 'integer'\}"):
        DensityEstimator(**SMALL).fit(str(npy))
    with pytest.raises(ValueError, match="not available for streamed data"):
        DensityEstimator(**SMALL, discrete={0: "integer"}).fit(str(npy))
    with pytest.raises(ValueError, match="score_draws must be a positive integer"):
        DensityEstimator(score_draws=0).fit(frame)


# -- the command line ---------------------------------------------------------------------------
def test_cli_reads_text_and_integer_columns_and_declared_kinds(tmp_path, capsys):
    from pyroflows.cli import main

    rng = np.random.default_rng(4)
    frame = pd.DataFrame(
        {
            "count": rng.poisson(3, 300),
            "colour": rng.choice(["red", "green"], 300),
            "x": rng.normal(size=300).round(6),
        }
    )
    data, model = tmp_path / "d.csv", tmp_path / "m.pt"
    frame.to_csv(data, index=False)
    quick = ["--flow", "maf", "--layers", "1", "--hidden", "8", "--epochs", "2", "--no-progress"]
    assert main(["fit", str(data), "--out", str(model), *quick]) == 0
    err = capsys.readouterr().err
    assert "text (categorical) column(s) ['colour']" in err
    assert "discrete column(s): {'count': 'integer', 'colour': 'categorical'}" in err
    assert main(["sample", str(model), "-n", "20", "--seed", "0"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "count,colour,x"
    rows = [line.split(",") for line in out[1:]]
    assert {r[1] for r in rows} <= {"red", "green"} and all(
        r[0].lstrip("-").isdigit() for r in rows
    )
    assert main(["score", str(model), str(data)]) == 0
    assert "mean log-likelihood" in capsys.readouterr().out
    frame.loc[5, "colour"] = "blue"
    frame.to_csv(tmp_path / "new.csv", index=False)
    assert main(["score", str(model), str(tmp_path / "new.csv")]) == 2
    assert "'colour' has categories not seen at fit time: ['blue']" in capsys.readouterr().err
    # declared kinds: count as categorical (read as text), x refused as a grid
    argv = ["fit", str(data), "--out", str(tmp_path / "c.pt"), *quick]
    assert main([*argv, "--discrete", "count=categorical"]) == 0
    assert "'count': 'categorical'" in capsys.readouterr().err
    assert main([*argv, "--discrete", "x=0.5", "--force"]) == 2
    assert "not all on a grid of step 0.5" in capsys.readouterr().err
    assert main([*argv, "--discrete", "none", "--force"]) == 2
    assert "'red' is not a number" in capsys.readouterr().err
    assert main([*argv, "--discrete", "weight=integer", "--force"]) == 2
    assert "--discrete: no column 'weight'" in capsys.readouterr().err


def test_a_grid_too_fine_for_float32_fits_in_float64_or_is_refused(tmp_path):
    """A column of values stored at 7 decimals, two of them 1e-7 apart (as in statsmodels'
    ``fair``), is quantised at 1e-7: some 10^8 cells that a float32 flow cannot tell apart
    once standardised. ``dtype="auto"`` fits it in float64
    (and keeps it through save / load); ``dtype="float32"`` is refused before any state
    changes; an ordinary table stays float32."""
    rng = np.random.default_rng(0)
    levels = np.round(rng.normal(size=40) * 3, 7)
    levels = np.r_[levels, levels[0] + 1e-7]
    X = np.c_[rng.choice(levels, 400), rng.normal(size=400)]
    options = dict(flow="maf", layers=1, hidden=(8,), max_epochs=2, progress=False)
    est = DensityEstimator(**options).fit(X)
    assert est.columns_.kinds == {"0": "quantised", "1": "continuous"}
    assert est.dtype_ == "float64"
    assert next(est.flow_.parameters()).dtype == torch.float64
    path = tmp_path / "fine.pt"
    est.save(path)
    back = DensityEstimator.load(path)
    assert back.dtype_ == "float64" and next(back.flow_.parameters()).dtype == torch.float64
    np.testing.assert_array_equal(back.score_samples(X[:20]), est.score_samples(X[:20]))
    refused = DensityEstimator(**options, dtype="float32")
    with pytest.raises(ValueError, match=r"column '0' spans .* cells .* dtype='float64'"):
        refused.fit(X)
    assert not hasattr(refused, "dtype_") and not hasattr(refused, "n_features_in_")
    plain = DensityEstimator(**options).fit(np.c_[rng.integers(0, 9, 400), X[:, 1]])
    assert plain.dtype_ == "float32"
