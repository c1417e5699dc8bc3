"""The command line: fit -> sample -> score through ``main``, and malformed input files."""

from __future__ import annotations

import numpy as np
import pytest

from pyroflows import DensityEstimator
from pyroflows.cli import main, read_csv


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
