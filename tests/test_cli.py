"""The command line through ``main``: fit -> sample -> score, every fit option reaching the
model, CSV parsing (header detection, BOM, malformed files), column names checked against the
model, and failures reported as one line on stderr (a broken pipe in a real subprocess)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pyroflows import DensityEstimator, TrainingDiverged
from pyroflows.builders import FAMILIES
from pyroflows.cli import build_parser, main, read_csv

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def data_csv(tmp_path):
    x = np.random.default_rng(0).normal(size=(300, 2)) * [1.0, 3.0] + [0.0, 5.0]
    path = tmp_path / "data.csv"
    np.savetxt(path, x, delimiter=",", header="alpha,beta", comments="")
    return path, x


def test_fit_sample_score_round_trip(data_csv, tmp_path, capsys):
    path, x = data_csv
    model = tmp_path / "model.pt"
    argv = [
        "fit",
        str(path),
        "--flow",
        "maf",
        "--layers",
        "2",
        "--hidden",
        "16",
        "16",
        "--epochs",
        "5",
        "--out",
        str(model),
    ]
    assert main(argv) == 0
    assert "saved to" in capsys.readouterr().err
    assert main(["sample", str(model), "-n", "50", "--seed", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "alpha,beta" and len(lines) == 51
    samples = np.array([[float(v) for v in line.split(",")] for line in lines[1:]])
    expected = DensityEstimator.load(model).sample(50, random_state=3)
    assert np.allclose(samples, expected, rtol=1e-6)
    assert main(["score", str(model), str(path), "--per-row"]) == 0
    per_row = np.array(capsys.readouterr().out.strip().splitlines()[1:], dtype=float)
    assert np.allclose(per_row, DensityEstimator.load(model).score_samples(x), rtol=1e-6)
    assert main(["score", str(model), str(path)]) == 0
    out = capsys.readouterr().out
    assert f"{per_row.mean():.4g}"[:5] in out and "300 rows" in out


@pytest.mark.parametrize(
    "content, match",
    [
        ("a,b\n1,2\n3,x\n", "line 3, column 'b': 'x' is not a number"),
        ("1,2\n3\n", "line 2 has 1 cells, expected 2"),
        ("", "no data rows"),
        ("a,b\n", "header but no data rows"),
        ("a,b\n1,nan\n2,3\n", "NaN or infinite"),
        ("a,b\n1,2\n", "at least 2"),
    ],
)
def test_bad_csv_is_reported_with_its_place(tmp_path, capsys, content, match):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    assert main(["fit", str(path), "--out", str(tmp_path / "m.pt"), "--epochs", "1"]) == 2
    assert match in capsys.readouterr().err
    assert not (tmp_path / "m.pt").exists()


def test_missing_or_foreign_model_file(tmp_path, data_csv, capsys):
    assert main(["sample", str(tmp_path / "none.pt")]) == 2
    assert "no such file" in capsys.readouterr().err
    foreign = tmp_path / "foreign.pt"
    foreign.write_bytes(b"not a model")
    assert main(["score", str(foreign), str(data_csv[0])]) == 2
    assert "is not a saved pyroflows DensityEstimator" in capsys.readouterr().err


def test_read_csv_without_header(tmp_path):
    path = tmp_path / "plain.csv"
    path.write_text("1,2\n3,4\n\n")
    X, header = read_csv(path)
    assert header is None and X.tolist() == [[1.0, 2.0], [3.0, 4.0]]


# -- helpers for the tests below ------------------------------------------------------------------
TINY = ["--layers", "2", "--hidden", "8", "8", "--epochs", "2"]


def fit_argv(data, model, *extra: str) -> list[str]:
    """``pyroflows fit`` with a tiny model; later flags override earlier ones."""
    return ["fit", str(data), "--out", str(model), *TINY, *extra]


def one_line_error(err: str, command: str) -> str:
    """The single error line of a failed command (asserting there is exactly one, after at
    most the notes of how the files were read and one-line warnings)."""
    lines = err.strip().splitlines()
    notes = [line for line in lines[:-1] if not line.startswith(f"pyroflows {command}: error")]
    assert all(line.startswith(("read ", f"pyroflows {command}: warning: ")) for line in notes), err
    lines = lines[len(notes) :]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"pyroflows {command}: error: "), err
    return lines[0]


@pytest.fixture
def no_training(monkeypatch):
    """Fail the test if the estimator is fitted."""

    def fit(*args, **kwargs):
        raise AssertionError("fit must not be called")

    monkeypatch.setattr(DensityEstimator, "fit", fit)


@pytest.fixture
def model_pt(data_csv, tmp_path):
    """A tiny model fitted on ``data_csv`` (columns alpha, beta)."""
    model = tmp_path / "model.pt"
    assert main(fit_argv(data_csv[0], model)) == 0
    return model


# -- every fit option reaches the estimator --------------------------------------------------------
FIT_OPTIONS = [
    (["--flow", "realnvp"], "flow", "realnvp"),
    (["--flow", "iaf"], "flow", "iaf"),
    (["--flow", "piecewise_linear", "--bounds", "-20", "20"], "flow", "piecewise_linear"),
    (["--layers", "3"], "layers", 3),
    (["--hidden", "8", "4"], "hidden", (8, 4)),
    (["--bins", "4"], "bins", 4),
    (["--bounds", "-20", "20"], "bounds", [-20.0, 20.0]),
    (["--epochs", "3"], "max_epochs", 3),
    (["--patience", "7"], "patience", 7),
    (["--whiten"], "whiten", True),
    (["--time-budget", "60"], "time_budget", 60.0),
    (["--seed", "5"], "random_state", 5),
    (["--progress"], "progress", True),
    (["--lr", "0.01"], "lr", 0.01),
    (["--batch-size", "32"], "batch_size", 32),
    (["--validation-fraction", "0.25"], "validation_fraction", 0.25),
    (["--device", "cpu:0"], "device", "cpu:0"),
    (["--dtype", "float64"], "dtype", "float64"),
    (["--discrete", "none"], "discrete", None),
]
# fit() arguments, not estimator parameters: tested below and in tests/test_checkpoint.py
FIT_ARGUMENTS = {"checkpoint", "checkpoint_every", "resume", "weights"}  # weights: test_weights
NOT_ESTIMATOR_PARAMS = {
    "command", "run", "data", "out", "val", "header", "stream", "force", *FIT_ARGUMENTS
}  # fmt: skip


@pytest.mark.parametrize("flags, param, value", FIT_OPTIONS, ids=lambda v: str(v))
def test_fit_option_reaches_the_saved_model(data_csv, tmp_path, flags, param, value):
    model = tmp_path / "model.pt"
    assert main(fit_argv(data_csv[0], model, *flags)) == 0
    params = DensityEstimator.load(model).get_params()
    actual = params[param]
    if param == "bounds":  # saved as given or with one bound per column
        actual = np.asarray(actual, dtype=float).reshape(2, -1)[:, 0].tolist()
    assert actual == value and params[param] != DensityEstimator().get_params()[param]


def test_every_fit_option_is_tested():
    parsed = vars(build_parser().parse_args(["fit", "data.csv", "--out", "m.pt"]))
    tested = {flags[0].lstrip("-").replace("-", "_") for flags, _, _ in FIT_OPTIONS}
    assert set(parsed) - NOT_ESTIMATOR_PARAMS == tested


@pytest.mark.parametrize("every, writes", [(1, 3), (2, 2)])
def test_checkpoint_every_sets_the_period(data_csv, tmp_path, monkeypatch, every, writes):
    import pyroflows.train.loop

    saved = []
    real = pyroflows.train.loop.atomic_save
    monkeypatch.setattr(
        pyroflows.train.loop, "atomic_save", lambda obj, path: saved.append(path) or real(obj, path)
    )
    ckpt = tmp_path / "run.ckpt"
    argv = ["--flow", "maf", "--epochs", "3", "--checkpoint", str(ckpt)]
    argv += ["--checkpoint-every", str(every), "--patience", "10"]
    assert main(fit_argv(data_csv[0], tmp_path / "m.pt", *argv)) == 0
    assert [Path(p) for p in saved] == [ckpt] * writes  # every N epochs, and at the end


def test_an_unwritable_checkpoint_is_refused_before_training(
    data_csv, tmp_path, no_training, capsys
):
    argv = fit_argv(data_csv[0], tmp_path / "m.pt", "--checkpoint", str(tmp_path / "no" / "c"))
    assert main(argv) == 2
    assert "--checkpoint" in one_line_error(capsys.readouterr().err, "fit")


# -- flow families ---------------------------------------------------------------------------------
def test_flow_choices_are_the_builder_families(tmp_path, capsys):
    assert main(["fit", "x.csv", "--out", "m.pt", "--flow", "nope"]) == 2
    err = one_line_error(capsys.readouterr().err, "fit")
    assert all(repr(name) in err for name in sorted(FAMILIES))


@pytest.mark.parametrize("bounds", [[], ["--bounds", "-20", "inf"]])
def test_piecewise_linear_needs_finite_bounds(data_csv, tmp_path, capsys, bounds):
    argv = fit_argv(data_csv[0], tmp_path / "m.pt", "--flow", "piecewise_linear", *bounds)
    assert main(argv) == 2
    assert "bounds" in one_line_error(capsys.readouterr().err, "fit")


# -- header detection, --header, BOM ---------------------------------------------------------------
def test_first_row_with_a_typo_is_a_bad_row_not_a_header(tmp_path, capsys, no_training):
    path = tmp_path / "typo.csv"
    path.write_text("1.0,2.x\n3,4\n5,6\n")
    with pytest.raises(ValueError, match=r"line 1, column 2: '2.x' is not a number"):
        read_csv(path)
    assert main(["fit", str(path), "--out", str(tmp_path / "m.pt")]) == 2
    assert "line 1, column 2" in one_line_error(capsys.readouterr().err, "fit")


def test_header_option(tmp_path):
    path = tmp_path / "numeric_header.csv"
    path.write_text("1,2\n3,4\n5,6\n")
    X, header = read_csv(path, header="yes")
    assert header == ["1", "2"] and X.tolist() == [[3, 4], [5, 6]]
    assert read_csv(path, header="no")[1] is None and len(read_csv(path, header="no")[0]) == 3
    path.write_text("alpha,beta\n3,4\n")
    with pytest.raises(ValueError, match="line 1, column 1: 'alpha' is not a number"):
        read_csv(path, header="no")
    args = build_parser().parse_args(["score", "m.pt", "d.csv", "--header", "no"])
    assert args.header == "no"
    assert build_parser().parse_args(["fit", "d.csv", "--out", "m.pt"]).header == "auto"


@pytest.mark.parametrize(
    "content, header, rows",
    [
        ("\ufeffalpha,beta\n1,2\n3,4\n", ["alpha", "beta"], [[1, 2], [3, 4]]),
        ("\ufeff1,2\n3,4\n", None, [[1, 2], [3, 4]]),
    ],
)
def test_utf8_bom_is_ignored(tmp_path, content, header, rows):
    path = tmp_path / "bom.csv"
    path.write_text(content, encoding="utf-8")
    X, names = read_csv(path)
    assert names == header and X.tolist() == rows


# -- edges of the CSV format -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "content, header, rows",
    [
        ('"alpha","beta"\n"1","2.5"\n', ["alpha", "beta"], [[1, 2.5]]),
        ("alpha,beta\r\n1,2\r\n3,4\r\n", ["alpha", "beta"], [[1, 2], [3, 4]]),
        ("x\n1\n2\n", ["x"], [[1], [2]]),
        ("1\n2\n", None, [[1], [2]]),
        (" alpha , beta \n 1 , 2 \n\n\n3,4\n", ["alpha", "beta"], [[1, 2], [3, 4]]),
        ("1e3,-2.5E-1\n", None, [[1000, -0.25]]),
    ],
)
def test_read_csv_accepts(tmp_path, content, header, rows):
    path = tmp_path / "ok.csv"
    path.write_bytes(content.encode())
    X, names = read_csv(path)
    assert names == header and X.tolist() == rows


@pytest.mark.parametrize(
    "content, match",
    [
        ("\n\n  \n", "no data rows"),
        ("a,b\n\n1,2\n\n3,x\n", "line 5, column 'b': 'x' is not a number"),
        ("1,2,\n3,4,\n", "line 1, column 3: empty cell (a trailing comma?)"),
        ("a,b\n1,2,\n", "line 2 has 3 cells, expected 2"),
        ("1;2\n3;4\n", "line 2, column '1;2': '3;4' is not a number (use commas between cells)"),
        ("1,2\n3,inf\n", "line 2, column 2: 'inf' is NaN or infinite"),
        ("a,b\n1,2\n\n3, NaN\n", "line 4, column 'b': 'NaN' is NaN or infinite"),
        ("alpha,2020\n1,2\n", "'alpha' is not a number (use --header yes if"),
        ("1,2\n1.5.2,3\n", "line 2, column 1: '1.5.2' is not a number"),
    ],
)
def test_read_csv_rejects(tmp_path, content, match):
    path = tmp_path / "bad.csv"
    path.write_bytes(content.encode())
    with pytest.raises(ValueError, match=re.escape(match)):
        read_csv(path)


def test_non_utf8_file_is_one_line(tmp_path, capsys):
    path = tmp_path / "utf16.csv"
    path.write_text("a,b\n1,2\n", encoding="utf-16")
    assert main(["fit", str(path), "--out", str(tmp_path / "m.pt")]) == 2
    assert "UTF-8" in one_line_error(capsys.readouterr().err, "fit")


# -- failures are one line on stderr, never a traceback --------------------------------------------
@pytest.mark.parametrize(
    "flags",
    [
        ["--hidden", "-3"],
        ["--hidden", "8", "0"],
        ["--bins", "0"],
        ["--layers", "0"],
        ["--epochs", "0"],
        ["--time-budget", "-1"],
        ["--patience", "0"],
        ["--lr", "0"],
        ["--lr", "nan"],
        ["--batch-size", "0"],
        ["--validation-fraction", "1"],
        ["--seed", "-1"],
        ["--bounds", "nan", "1"],
        ["--device", "nonsense"],
        ["--dtype", "float16"],
    ],
)
def test_bad_fit_argument_is_one_line(data_csv, tmp_path, capsys, no_training, flags):
    assert main(fit_argv(data_csv[0], tmp_path / "m.pt", *flags)) == 2
    assert flags[0] in one_line_error(capsys.readouterr().err, "fit")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_unavailable_device_is_one_line(data_csv, tmp_path, capsys, no_training):
    assert main(fit_argv(data_csv[0], tmp_path / "m.pt", "--device", "cuda")) == 2
    assert "not available" in one_line_error(capsys.readouterr().err, "fit")


@pytest.mark.parametrize("n", ["0", "-5", "2.5"])
def test_bad_sample_size_is_one_line(model_pt, capsys, n):
    assert main(["sample", str(model_pt), "-n", n]) == 2
    assert "-n" in one_line_error(capsys.readouterr().err, "sample")


def test_diverged_training_is_one_line(data_csv, tmp_path, capsys, monkeypatch):
    def fit(self, X, X_val=None, **checkpointing):
        raise TrainingDiverged("the loss became non-finite")

    monkeypatch.setattr(DensityEstimator, "fit", fit)
    model = tmp_path / "m.pt"
    assert main(fit_argv(data_csv[0], model, "--lr", "1e6")) == 1
    assert "non-finite" in one_line_error(capsys.readouterr().err, "fit")
    assert not model.exists()


def test_interrupted_training_is_one_line(data_csv, tmp_path, capsys, monkeypatch):
    def fit(self, X, X_val=None, **checkpointing):
        raise KeyboardInterrupt

    monkeypatch.setattr(DensityEstimator, "fit", fit)
    assert main(fit_argv(data_csv[0], tmp_path / "m.pt")) == 130
    assert "interrupted" in one_line_error(capsys.readouterr().err, "fit")


@pytest.mark.parametrize("out", ["missing/m.pt", ".", "data.csv/m.pt"])
def test_unwritable_out_is_rejected_before_training(data_csv, tmp_path, capsys, no_training, out):
    assert main(fit_argv(data_csv[0], tmp_path / out)) == 2
    assert "--out" in one_line_error(capsys.readouterr().err, "fit")


@pytest.mark.parametrize(
    "error",
    [OSError(28, "No space left on device"), TypeError("bad"), RuntimeError("open file failed")],
)
def test_library_errors_are_one_line(data_csv, tmp_path, capsys, monkeypatch, error):
    def save(self, path, force=False):
        raise error

    monkeypatch.setattr(DensityEstimator, "save", save)
    assert main(fit_argv(data_csv[0], tmp_path / "m.pt")) != 0
    assert str(error) in one_line_error(capsys.readouterr().err, "fit")


def test_broken_pipe_is_quiet(model_pt):
    command = f"{sys.executable} -m pyroflows.cli sample {model_pt} -n 200000 | head -1"
    done = subprocess.run(command, shell=True, capture_output=True, text=True, cwd=ROOT)
    assert done.stdout == "alpha,beta\n"
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr, done.stderr


# -- column names are stored and checked -----------------------------------------------------------
def test_column_names_are_stored_and_checked(data_csv, model_pt, tmp_path, capsys):
    path, x = data_csv
    assert list(DensityEstimator.load(model_pt).feature_names_in_) == ["alpha", "beta"]
    swapped = tmp_path / "swapped.csv"
    np.savetxt(swapped, x[:, ::-1], delimiter=",", header="beta,alpha", comments="")
    assert main(["score", str(model_pt), str(swapped)]) == 2
    err = one_line_error(capsys.readouterr().err, "score")
    assert "['beta', 'alpha']" in err and "['alpha', 'beta']" in err
    renamed = tmp_path / "renamed.csv"
    np.savetxt(renamed, x, delimiter=",", header="alpha,gamma", comments="")
    assert main(["score", str(model_pt), str(renamed)]) == 2
    assert "'gamma'" in one_line_error(capsys.readouterr().err, "score")
    headerless = tmp_path / "headerless.csv"
    np.savetxt(headerless, x, delimiter=",")
    assert main(["score", str(model_pt), str(headerless)]) == 0
    assert "300 rows" in capsys.readouterr().out
    np.savetxt(headerless, x[:, :1], delimiter=",")
    assert main(["score", str(model_pt), str(headerless)]) == 2
    assert "expected 2" in one_line_error(capsys.readouterr().err, "score")


def test_validation_file_columns_are_checked(data_csv, tmp_path, capsys, no_training):
    path, x = data_csv
    val = tmp_path / "val.csv"
    np.savetxt(val, x, delimiter=",", header="beta,alpha", comments="")
    assert main(fit_argv(path, tmp_path / "m.pt", "--val", str(val))) == 2
    assert "['beta', 'alpha']" in one_line_error(capsys.readouterr().err, "fit")


def test_fit_without_validation_reports_the_training_loss(data_csv, tmp_path, capsys):
    argv = fit_argv(data_csv[0], tmp_path / "m.pt", "--validation-fraction", "0")
    assert main(argv) == 0
    assert "best training loss" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["sample", "m.pt"], ["score", "m.pt", "d.csv"]])
def test_sample_and_score_load_on_the_cpu_by_default(command):
    assert build_parser().parse_args(command).device == "cpu"


# -- data larger than memory -------------------------------------------------------------------
def test_npy_data_and_streamed_csv_fit_like_an_in_memory_csv(data_csv, tmp_path, capsys):
    path, x = data_csv
    npy = tmp_path / "data.npy"
    np.save(npy, x)
    small = ["--flow", "maf", "--layers", "2", "--hidden", "8", "8", "--epochs", "3"]
    models = {}
    for name, argv in {
        "csv": [str(path)],
        "npy": [str(npy)],
        "stream": [str(path), "--stream"],
    }.items():
        models[name] = tmp_path / f"{name}.pt"
        assert main(["fit", *argv, "--out", str(models[name]), *small]) == 0, capsys.readouterr()
        assert "300 rows x 2 feature(s)" in capsys.readouterr().err
    scores = {k: DensityEstimator.load(m).score_samples(x) for k, m in models.items()}
    assert np.isfinite(scores["npy"]).all() and np.isfinite(scores["stream"]).all()
    # the streamed fits see the same rows, in blocks: the same quality, not the same numbers
    assert abs(scores["npy"].mean() - scores["csv"].mean()) < 0.3
    np.testing.assert_array_equal(scores["npy"], scores["stream"])


def test_a_bad_cell_in_a_streamed_csv_is_one_line(tmp_path, capsys):
    path = tmp_path / "bad.csv"
    path.write_text("a,b\n1,2\n3,4\n5,x\n")
    assert main(["fit", str(path), "--stream", "--out", str(tmp_path / "m.pt")]) == 2
    err = one_line_error(capsys.readouterr().err, "fit")
    assert "line 4, column 2: 'x' is not a number" in err
