"""CSV files for the command line: :func:`read_table` / :func:`read_csv` (header
detection, an index column dropped, the line and column of the first bad cell; with
``text=True`` a column none of whose cells is a number, or one named in ``text_columns``, is
read as text, for a categorical column),
:func:`write_csv`, :func:`check_columns` (a header against the model's), and
:func:`csv_to_streamed` (a large file converted to a ``.npy`` file in chunks, for streaming).
The rules are described in :mod:`pyroflows.cli`; a new input format goes in a module beside
this one.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from pyroflows.streaming import csv_to_npy

__all__ = [
    "HEADER_MODES",
    "OUTLIER_SDS",
    "Table",
    "check_columns",
    "csv_to_streamed",
    "read_csv",
    "read_table",
    "write_csv",
]

HEADER_MODES = ("auto", "yes", "no")
#: a first row further than this many robust standard deviations from the rows below, in most
#: columns, is a header of numbers (``--header auto``)
OUTLIER_SDS = 20.0
_INTEGER = re.compile(r"\s*[+-]?\d+\s*")
_DETECT_ROWS = 1000  # rows below the first one that header detection looks at


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


@dataclass
class Table:
    """A CSV file as read: the data, the header's names (None without a header), the file
    line of each data row, and how the file was read (one line for stderr)."""

    data: Any  # a float array, or a DataFrame when text columns were read
    names: list[str] | None
    lines: list[int]
    note: str


def _numeric_header(first: list[str], below: list[list[str]]) -> str | None:
    """Why a first row of numbers is a header rather than data (``--header auto``), or None.

    It is one when its cells are distinct integers written without a decimal point while
    every cell below them has one (``1990,2000`` above ``0.52,-1.3``), or when it lies more
    than :data:`OUTLIER_SDS` robust standard deviations (median absolute deviation, or the
    standard deviation where that is 0) from the rows below in most columns.
    """
    below = [row for row in below[:_DETECT_ROWS] if len(row) == len(first)]
    if len(below) < 2:
        return None
    cells = [c.strip() for c in first]
    if (
        all(_INTEGER.fullmatch(c) for c in cells)
        and len(set(cells)) == len(cells)
        and all(not _INTEGER.fullmatch(c) for row in below for c in row)
    ):
        return "its cells are integers without a decimal point, unlike the rows below"
    try:
        values = np.array([[float(c) for c in row] for row in below])
        head = np.array([float(c) for c in cells])
    except ValueError:
        return None
    if not (np.isfinite(values).all() and np.isfinite(head).all()):
        return None
    median = np.median(values, axis=0)
    scale = 1.4826 * np.median(np.abs(values - median), axis=0)
    scale = np.where(scale > 0, scale, values.std(axis=0))
    with np.errstate(divide="ignore", invalid="ignore"):
        far = np.abs(head - median) > OUTLIER_SDS * scale
    far &= scale > 0
    if far.sum() * 2 > len(cells):
        return (
            f"it lies more than {OUTLIER_SDS:g} robust standard deviations from the rows "
            f"below in {int(far.sum())} of {len(cells)} column(s)"
        )
    return None


def _has_header(rows: list[list[str]], header: str) -> tuple[bool, str]:
    """Whether the first of ``rows`` is a header, and why (for the message)."""
    if header != "auto":
        return header == "yes", f"--header {header}"
    if not any(map(_is_number, rows[0])):
        return True, ""
    if not all(map(_is_number, rows[0])):
        return False, ""
    reason = _numeric_header(rows[0], rows[1:])
    if reason is None:
        return False, ""
    return True, f"{reason}; --header no reads it as data"


def _index_column(path: Path, names: list[str]) -> bool:
    """True when the header's first cell is empty (pandas' index column: dropped); an empty
    name elsewhere is refused."""
    empty = [j for j, name in enumerate(names) if not name]
    if any(j > 0 for j in empty):
        j = next(j for j in empty if j > 0)
        raise ValueError(
            f"{path}: line 1, column {j + 1} has no name in the header: name every column"
        )
    return bool(empty) and len(names) > 1


def read_table(
    path: str | Path, header: str = "auto", text: bool = False, text_columns: Any = ()
) -> Table:
    """Read a CSV file (see :func:`read_csv`), with the file line of each data row and a note
    of how it was read. ``text``: a column none of whose cells is a number, and the columns
    of ``text_columns`` (header names, or positions from 0), are kept as text (stripped; an
    empty cell is still refused), and ``data`` is then a pandas DataFrame (its other columns
    float64); a column mixing numbers and text is refused at its first text cell."""
    if header not in HEADER_MODES:
        raise ValueError(f"header must be one of {HEADER_MODES}, got {header!r}")
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: " + ("not a file" if path.exists() else "no such file"))
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            rows = [(reader.line_num, row) for row in reader if any(c.strip() for c in row)]
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not a UTF-8 text file ({error.reason})") from None
    except csv.Error as error:
        raise ValueError(f"{path}: line {reader.line_num}: {error}") from None
    if not rows:
        raise ValueError(f"{path}: the file has no data rows")
    names = None
    is_header, why = _has_header([row for _, row in rows], header)
    dropped = ""
    if is_header:
        names, rows = [cell.strip() for cell in rows[0][1]], rows[1:]
        if not rows:
            raise ValueError(f"{path}: the file has a header but no data rows")
        if _index_column(path, names):
            names = names[1:]
            rows = [(line, row[1:]) for line, row in rows]
            dropped = "; dropped its first column (an empty header cell: an index column)"
    width = len(names) if names is not None else len(rows[0][1])
    texts = _text_columns(rows, width, names, text_columns) if text else []
    data = _numbers(path, _blank(rows, texts), names, width, bool(dropped), header == "auto")
    how = f"header row {names}" if names is not None else "no header row"
    note = f"read {path}: {how}{f' ({why})' if why else ''}{dropped}, "
    note += f"{len(rows)} rows x {width} columns"
    if texts:
        data = _with_text(path, data, rows, names, texts)
        shown = [names[j] if names else j + 1 for j in texts]
        note += f"; text (categorical) column(s) {shown}"
    return Table(data, names, [line for line, _ in rows], note)


def _numbers(
    path: Path, rows: list[tuple[int, list[str]]], names: list[str] | None, width: int,
    dropped: bool, auto: bool,
) -> np.ndarray:  # fmt: skip
    """The cells of the data rows ``(line, cells)`` as a float matrix, or a ``ValueError``
    naming the line and column of the first bad cell."""

    def bad(i: int, j: int, problem: str) -> ValueError:
        column = repr(names[j]) if names and names[j] else str(j + 1)
        return ValueError(f"{path}: line {rows[i][0]}, column {column}: {problem}")

    data = np.empty((len(rows), width))
    for i, (line, row) in enumerate(rows):
        if len(row) != width:
            extra = 1 if dropped else 0
            raise ValueError(
                f"{path}: line {line} has {len(row) + extra} cells, expected {width + extra}"
            )
        try:
            data[i] = [float(cell) for cell in row]
        except ValueError:
            j, cell = next((j, c.strip()) for j, c in enumerate(row) if not _is_number(c))
            if not cell:
                hint = " (a trailing comma?)" if j == width - 1 else ""
                raise bad(i, j, f"empty cell{hint}") from None
            if ";" in cell or "\t" in cell:
                raise bad(i, j, f"{cell!r} is not a number (use commas between cells)") from None
            first = i == 0 and auto and names is None
            hint = " (use --header yes if the first row is a header)" if first else ""
            raise bad(i, j, f"{cell!r} is not a number{hint}") from None
    if not np.isfinite(data).all():
        i, j = np.argwhere(~np.isfinite(data))[0]
        raise bad(i, j, f"{rows[i][1][j].strip()!r} is NaN or infinite")
    return data


def _text_columns(
    rows: list[tuple[int, list[str]]], width: int, names: list[str] | None, named: Any
) -> list[int]:
    """The columns none of whose cells is a number, and those ``named``."""
    chosen = {names.index(c) if names and c in names else c for c in named}
    full = [r for _, r in rows if len(r) == width]
    return [
        j
        for j in range(width)
        if j in chosen or not any(_is_number(r[j]) for r in full if r[j].strip())
    ]


def _blank(rows: list[tuple[int, list[str]]], texts: list[int]) -> list[tuple[int, list[str]]]:
    """The rows with a placeholder number in the text columns (read by :func:`_with_text`)."""
    if not texts:
        return rows
    return [(line, [("0" if j in texts else c) for j, c in enumerate(r)]) for line, r in rows]


def _with_text(
    path: Path, data: np.ndarray, rows: list[tuple[int, list[str]]], names: list[str] | None,
    texts: list[int],
) -> Any:  # fmt: skip
    """A DataFrame of the numeric columns and the text ones (object dtype)."""
    import pandas as pd

    frame = pd.DataFrame(data, columns=names if names is not None else range(data.shape[1]))
    for j in texts:
        cells = [r[j].strip() for _, r in rows]
        if "" in cells:
            i = cells.index("")
            column = repr(names[j]) if names else str(j + 1)
            raise ValueError(f"{path}: line {rows[i][0]}, column {column}: empty cell")
        frame[frame.columns[j]] = pd.Series(cells, dtype=object)
    return frame


def read_csv(path: str | Path, header: str = "auto") -> tuple[np.ndarray, list[str] | None]:
    """Read a numeric CSV file.

    Args:
        path: the file (UTF-8, with or without a byte-order mark).
        header: ``"auto"``: the first row is a header if none of its cells is a number, or
            if it is a row of numbers unlike the rows below (see :mod:`pyroflows.cli`);
            ``"yes"``: it is a header; ``"no"``: it is data. A header whose first cell is
            empty marks an index column, which is dropped.

    Returns:
        ``(X, names)``: the data, shape ``(rows, columns)``, and the header's cells (stripped),
        or None without a header.

    Raises:
        ValueError: naming the file, line and column of the first problem.
    """
    table = read_table(path, header)
    return table.data, table.names


def write_csv(X: Any, header: Sequence[str] | None, stream: TextIO) -> None:
    """Write the rows of ``X`` (numbers with 9 significant digits; the cells of a DataFrame's
    non-numeric columns as text) after an optional header row."""
    writer = csv.writer(stream, lineterminator="\n")
    if header is not None:
        writer.writerow(header)
    if hasattr(X, "itertuples"):
        writer.writerows([_cell(v) for v in row] for row in X.itertuples(index=False))
        return
    writer.writerows([f"{v:.9g}" for v in row] for row in X)


def _cell(value: Any) -> str:
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | float | np.number):
        return str(value)
    return f"{value:.9g}"


def check_columns(path: str, found: list[str] | None, expected: Sequence[str] | None) -> None:
    """Reject a file whose header differs from ``expected`` (a missing header is accepted)."""
    if found is not None and expected is not None and list(found) != list(expected):
        kind = "in another order" if sorted(found) == sorted(expected) else "other names"
        raise ValueError(f"{path}: the columns are {found}, expected {list(expected)} ({kind})")


def csv_to_streamed(path: str, header: str, folder: str) -> tuple[str, list[str] | None, str]:
    """Convert a large CSV file to a ``.npy`` file in ``folder``, one chunk at a time."""
    with Path(path).open(newline="", encoding="utf-8-sig") as handle:
        first = []
        for row in csv.reader(handle):
            if any(c.strip() for c in row):
                first.append(row)
            if len(first) > _DETECT_ROWS:
                break
    if not first:
        raise ValueError(f"{path}: the file has no data rows")
    has_header, why = _has_header(first, header)
    names = [c.strip() for c in first[0]] if has_header else None
    index = has_header and _index_column(Path(path), names)
    if index:
        names = names[1:]

    def parse(cells: list[str], line: int) -> list[float]:
        cells = cells[1:] if index else cells
        try:
            return [float(c) for c in cells]
        except ValueError:
            j, cell = next((j, c.strip()) for j, c in enumerate(cells) if not _is_number(c))
            raise ValueError(
                f"{path}: line {line}, column {j + 1 + index}: {cell!r} is not a number"
            ) from None

    out, rows = csv_to_npy(path, Path(folder) / "data.npy", parse, has_header)
    how = f"header row {names}" if names is not None else "no header row"
    dropped = "; dropped its first column (an empty header cell: an index column)" if index else ""
    width = np.load(out, mmap_mode="r").shape[1]
    note = f"read {path}: {how}{f' ({why})' if why else ''}{dropped}, {rows} rows x {width} columns"
    return str(out), names, note
