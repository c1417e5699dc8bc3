"""Data larger than memory: fitting from a memory-mapped .npy file in streamed blocks, with
the statistics of one streaming pass, and CSV files converted in chunks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import pyroflows as pf
from pyroflows.preprocess import fit_preprocessor
from pyroflows.streaming import Blocks, check_rows, csv_to_npy

TINY = dict(flow="maf", layers=2, hidden=(16, 16), max_epochs=3, patience=5, batch_size=512)


@pytest.fixture(scope="module")
def npy(tmp_path_factory):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(80_000, 3)) * [1.0, 1e-3, 50.0] + [1e8, 0.0, -7.0]
    path = tmp_path_factory.mktemp("data") / "x.npy"
    np.save(path, X)
    return path, X


def test_a_streamed_fit_matches_an_in_memory_fit(npy):
    path, X = npy
    streamed = pf.DensityEstimator(**TINY).fit(path)
    mapped = pf.DensityEstimator(**TINY).fit(np.load(path, mmap_mode="r"))
    memory = pf.DensityEstimator(**TINY).fit(X[:20_000])
    test = X[-5000:]
    truth = -0.5 * (((test - [1e8, 0.0, -7.0]) / [1.0, 1e-3, 50.0]) ** 2).sum(1) - np.log(
        np.sqrt(2 * np.pi) ** 3 * 1e-3 * 50.0
    )
    for est in (streamed, mapped, memory):
        assert abs(np.mean(truth - est.score_samples(test))) < 0.02
    # the same seed streams the same blocks in the same order: identical models
    for key, value in streamed.flow_.state_dict().items():
        assert torch.equal(value, mapped.flow_.state_dict()[key]), key


def test_streamed_statistics_equal_the_in_memory_ones(npy):
    path, X = npy
    est = pf.DensityEstimator(**{**TINY, "max_epochs": 1}, validation_fraction=0.0).fit(path)
    reference = fit_preprocessor(X)
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(est.preprocessor_.state_dict()[key], value, rtol=1e-12, atol=0)


def test_blocks_visit_every_selected_row_once_per_epoch():
    X = np.arange(1000.0).reshape(-1, 1)
    mask = np.arange(1000) % 3 != 0
    blocks = Blocks(X, mask, lambda rows: torch.from_numpy(rows), batch_size=64, block_rows=100)
    seen = torch.cat([b[0] for b in blocks]).flatten().numpy()
    assert sorted(seen.tolist()) == X[mask, 0].tolist()
    assert not np.array_equal(seen, np.sort(seen))  # shuffled
    assert len(list(blocks)) <= len(blocks)


def test_bad_files_are_named_with_the_first_bad_row(tmp_path):
    X = np.zeros((70_000, 2))
    X[:, 0] = np.arange(70_000.0)
    X[68_001, 1] = np.nan
    path = tmp_path / "bad.npy"
    np.save(path, X)
    with pytest.raises(ValueError, match="row 68001, column 1"):
        pf.DensityEstimator(**TINY).fit(path)
    with pytest.raises(ValueError, match="only .npy"):
        pf.DensityEstimator(**TINY).fit(tmp_path / "x.csv")
    with pytest.raises(ValueError, match="no such file"):
        pf.DensityEstimator(**TINY).fit(tmp_path / "missing.npy")
    np.save(tmp_path / "flat.npy", np.zeros(10))
    with pytest.raises(ValueError, match="2-D"):
        check_rows(np.load(tmp_path / "flat.npy", mmap_mode="r"))
    const = np.column_stack([np.arange(100.0), np.ones(100)])
    np.save(tmp_path / "const.npy", const)
    with pytest.raises(ValueError, match="constant"):
        pf.DensityEstimator(**TINY).fit(tmp_path / "const.npy")


def test_csv_is_converted_in_chunks(tmp_path):
    rows = np.random.default_rng(1).normal(size=(1000, 3))
    src = tmp_path / "d.csv"
    src.write_text("a,b,c\n" + "\n".join(",".join(f"{v:.17g}" for v in r) for r in rows) + "\n")
    out, n = csv_to_npy(
        src, tmp_path / "d.npy", lambda cells, line: [float(c) for c in cells], True, 128
    )
    assert n == 1000
    np.testing.assert_array_equal(np.load(out), rows)
