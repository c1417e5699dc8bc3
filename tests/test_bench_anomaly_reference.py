"""The data hand-over of ``benchmarks/anomaly_reference.py`` to the reference CATHODE code:
every observed event goes to exactly one of its files in its row format, the test events it
keeps are found exactly (its domain cut), and a directory that is not a checkout is refused
before anything runs."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import anomaly_reference as R  # noqa: E402

from pyroflows.anomaly import SignalRegion  # noqa: E402
from pyroflows.datasets import bump_hunt  # noqa: E402
from pyroflows.datasets.bumphunt import Events  # noqa: E402


@pytest.fixture(scope="module")
def hunt():
    return bump_hunt(5000, 0.05, n_test_background=300, n_test_signal=30,
                     n_extra_background=10, n_extra_signal=10, seed=0)  # fmt: skip


def test_every_event_goes_to_one_file_in_the_reference_row_format(hunt, tmp_path):
    region = SignalRegion(*hunt.sr)
    sizes = R.write_reference_data(hunt, region, tmp_path, seed=0)
    files = {p.stem: np.load(p) for p in tmp_path.glob("*.npy")}
    assert set(files) == {"innerdata_train", "innerdata_val", "innerdata_test",
                          "outerdata_train", "outerdata_test"}  # fmt: skip
    for name, rows in files.items():
        assert rows.dtype == np.float32 and rows.shape[1] == 6, name  # m, 4 features, label
    inner = np.concatenate([files["innerdata_train"], files["innerdata_val"]])
    outer = np.concatenate([files["outerdata_train"], files["outerdata_test"]])
    d = hunt.data
    expected = R.rows(d)
    # the SR and the sidebands partition the observed events, each event once, unchanged
    for rows, mask in ((inner, region.inside(d.m)), (outer, region.sidebands(d.m))):
        got = rows[np.lexsort(rows.T[::-1])]
        want = expected[mask][np.lexsort(expected[mask].T[::-1])]
        np.testing.assert_array_equal(got, want)
    n_inner = int(region.inside(d.m).sum())
    assert sizes["inner_train"] == round(R.SR_TRAIN_FRACTION * n_inner)
    assert sizes["outer_train"] == round(R.SB_TRAIN_FRACTION * len(outer))
    np.testing.assert_array_equal(files["innerdata_test"], R.rows(hunt.test))


def test_the_test_events_the_reference_keeps_are_those_inside_its_training_range():
    # SR training rows (m, x0, x1, label): feature ranges [0, 1] and [-2, 2]
    train = np.array([[3.4, 0.0, -2.0, 0], [3.5, 1.0, 2.0, 0], [3.6, 0.5, 0.0, 1]], np.float32)
    test = Events(
        m=np.array([3.31, 3.42, 3.53, 3.64, 3.69]),
        x=np.array([[0.5, 0.0], [1.0, 0.0], [0.2, 1.9], [0.7, -2.5], [0.3, 0.3]]),
        label=np.array([0, 0, 1, 1, 0]),
    )
    # on the edge (x0 = 1.0) or outside (x1 = -2.5) is dropped, as its strict cut does
    kept_m = np.array([3.69, 3.31, 3.53], np.float32)  # in its shuffled order
    np.testing.assert_array_equal(R.kept_by_reference(test, train, kept_m), [0, 2, 4])
    with pytest.raises(RuntimeError, match="domain cut"):
        R.kept_by_reference(test, train, np.array([3.69, 3.31, 3.42], np.float32))


def test_a_directory_without_the_reference_code_is_refused(tmp_path):
    (tmp_path / "run_all.py").write_text("")
    with pytest.raises(SystemExit, match="missing data_handler.py"):
        R.check_reference(tmp_path)
