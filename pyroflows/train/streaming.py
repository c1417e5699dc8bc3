"""Data larger than memory: memory-mapped ``.npy`` files and CSV files read in chunks.

* :func:`open_rows` opens a ``.npy`` path (memory-mapped, nothing read) or accepts an array;
* :func:`check_rows` validates it chunk by chunk (numeric, 2-D, finite; the first bad row and
  column are named) without holding more than one chunk;
* :class:`Blocks` is a torch ``IterableDataset`` of shuffled, standardised minibatches: each
  epoch visits the blocks of rows in a random order, shuffles the rows of a few blocks at a
  time, and applies a float64 pre-transform to them before the cast, so reading stays
  sequential and memory stays bounded by the buffer;
* :func:`csv_to_npy` converts a large CSV file to a ``.npy`` file in one streaming pass (for the
  command line).

The random block order comes from torch's global generator, which the training loop seeds and
checkpoints, so a streamed fit is reproducible and resumable like an in-memory one.
"""

from __future__ import annotations

import csv
import math
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["Blocks", "check_rows", "csv_to_npy", "is_streamed", "open_rows"]

CHUNK_ROWS = 65_536


def is_streamed(X: Any) -> bool:
    """True for inputs that are read in chunks: a path or a memory-mapped array."""
    return isinstance(X, (str, Path, np.memmap))


def open_rows(X: Any, name: str = "X") -> np.ndarray:
    """The rows of ``X``: a ``.npy`` path is memory-mapped (read lazily), an array is kept."""
    if isinstance(X, (str, Path)):
        path = Path(X)
        if path.suffix != ".npy":
            raise ValueError(f"{name}: only .npy files are read directly, got {path}")
        if not path.is_file():
            raise ValueError(f"{name}: {path}: no such file")
        try:
            X = np.load(path, mmap_mode="r", allow_pickle=False)
        except ValueError as error:
            raise ValueError(f"{name}: {path} is not a numeric .npy file ({error})") from None
    return X


def check_rows(X: np.ndarray, name: str = "X", n_features: int | None = None) -> None:
    """Validate a (possibly memory-mapped) matrix chunk by chunk.

    Raises:
        ValueError: not 2-D, not numeric, empty or too short, wrong width, or a NaN / inf
            (naming the first bad row and column).
    """
    if X.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (rows, features), got shape {X.shape}")
    if X.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be numeric, got dtype {X.dtype}")
    if X.shape[0] < 2:
        raise ValueError(f"{name} has {X.shape[0]} row(s); at least 2 are needed")
    if n_features is not None and X.shape[1] != n_features:
        raise ValueError(f"{name} has {X.shape[1]} features (columns), expected {n_features}")
    for start in range(0, X.shape[0], CHUNK_ROWS):
        chunk = np.asarray(X[start : start + CHUNK_ROWS], dtype=np.float64)
        bad = ~np.isfinite(chunk)
        if bad.any():
            i, j = np.argwhere(bad)[0]
            raise ValueError(
                f"{name} contains NaN or infinite values (first at row {start + i}, column {j})"
            )


def chunks(X: np.ndarray, mask: np.ndarray | None = None) -> Iterator[np.ndarray]:
    """float64 chunks of the rows of ``X`` (only those where ``mask`` is True)."""
    for start in range(0, X.shape[0], CHUNK_ROWS):
        chunk = np.asarray(X[start : start + CHUNK_ROWS], dtype=np.float64)
        yield chunk if mask is None else chunk[mask[start : start + CHUNK_ROWS]]


class Blocks(torch.utils.data.IterableDataset):
    """Shuffled minibatches ``(z,)`` of the selected rows of a memory-mapped matrix.

    Args:
        X: the rows (e.g. ``np.load(path, mmap_mode="r")``).
        mask: which rows to use (e.g. the training rows), boolean of length ``len(X)``.
        transform: maps a float64 block ``(n, D)`` to the tensor the model trains on
            (standardisation in float64, then the cast).
        batch_size: rows per minibatch.
        block_rows: rows read at once (sequential reads).
        buffer_blocks: blocks whose rows are shuffled together.
    """

    def __init__(
        self,
        X: np.ndarray,
        mask: np.ndarray,
        transform: Callable[[np.ndarray], torch.Tensor],
        batch_size: int,
        block_rows: int = CHUNK_ROWS,
        buffer_blocks: int = 4,
    ):
        self.X, self.mask, self.transform = X, mask, transform
        self.batch_size, self.block_rows, self.buffer_blocks = batch_size, block_rows, buffer_blocks
        self.rows = int(mask.sum())

    def __len__(self) -> int:  # an upper bound on the batches of an epoch
        blocks = math.ceil(len(self.X) / self.block_rows)
        return math.ceil(self.rows / self.batch_size) + math.ceil(blocks / self.buffer_blocks)

    def __iter__(self) -> Iterator[tuple[torch.Tensor]]:
        seed = int(torch.randint(0, 2**31 - 1, ()).item())  # from the loop's seeded stream
        rng = np.random.default_rng(seed)
        starts = rng.permutation(np.arange(0, len(self.X), self.block_rows))
        for group in range(0, len(starts), self.buffer_blocks):
            parts = []
            for start in starts[group : group + self.buffer_blocks]:
                block = np.asarray(self.X[start : start + self.block_rows], dtype=np.float64)
                parts.append(block[self.mask[start : start + self.block_rows]])
            rows = np.concatenate(parts)
            if len(rows) == 0:
                continue
            z = self.transform(rows[rng.permutation(len(rows))])
            for i in range(0, len(z), self.batch_size):
                yield (z[i : i + self.batch_size],)


def csv_to_npy(
    path: str | Path,
    out: str | Path,
    parse_row: Callable[[list[str], int], list[float]],
    skip_header: bool,
    chunk_rows: int = CHUNK_ROWS,
) -> tuple[Path, int]:
    """Convert a numeric CSV file to a float64 ``.npy`` file in one pass, ``chunk_rows`` rows
    in memory at a time. ``parse_row(cells, line)`` turns one row into floats (and raises a
    ``ValueError`` naming the line and column of a bad cell).

    Returns:
        The ``.npy`` path and the number of rows.
    """
    path, out = Path(path), Path(out)
    width, rows, buffer = None, 0, []
    tmp = out.with_suffix(".raw")
    with path.open(newline="", encoding="utf-8-sig") as handle, tmp.open("wb") as sink:
        reader = csv.reader(handle)
        for line, cells in enumerate(reader, start=1):
            if not any(cell.strip() for cell in cells):
                continue
            if skip_header:
                skip_header = False
                continue
            values = parse_row(cells, line)
            if width is None:
                width = len(values)
            elif len(values) != width:
                raise ValueError(f"{path}: line {line} has {len(values)} cells, expected {width}")
            buffer.append(values)
            if len(buffer) == chunk_rows:
                np.asarray(buffer, dtype=np.float64).tofile(sink)
                rows, buffer = rows + len(buffer), []
        if buffer:
            np.asarray(buffer, dtype=np.float64).tofile(sink)
            rows += len(buffer)
    if rows == 0:
        tmp.unlink(missing_ok=True)
        raise ValueError(f"{path}: the file has no data rows")
    header = {"descr": np.dtype(np.float64).str, "fortran_order": False, "shape": (rows, width)}
    with out.open("wb") as sink, tmp.open("rb") as raw:
        np.lib.format.write_array_header_1_0(sink, header)
        shutil.copyfileobj(raw, sink, 1 << 20)
    tmp.unlink()
    return out, rows
