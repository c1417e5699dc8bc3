"""Command line: ``pyroflows fit | sample | score``.

Examples::

    pyroflows fit data.csv --flow nsf --out model.pt
    pyroflows fit box.csv --flow piecewise_linear --bounds 0 1 --out model.pt
    pyroflows sample model.pt -n 1000 > samples.csv
    pyroflows score model.pt data.csv            # mean log-likelihood and its standard error
    pyroflows score model.pt data.csv --per-row  # log p(x) of every row

CSV files are comma-separated UTF-8 (a byte-order mark is ignored), one row per sample and one
numeric column per feature; blank lines are skipped. With ``--header auto`` (the default) the
first row is a header if none of its cells is a number, or if its cells are all numbers that
differ in kind from the rows below: distinct integers written without a decimal point above
columns written with decimals (``1990,2000`` above ``0.52,-1.3``), or a row that lies more
than 20 robust standard deviations from the rest in most columns. A first row mixing numbers
and text is reported as a bad data row; ``--header yes`` or ``--header no`` decides it instead.
``fit`` says on stderr which way each file was read (``read data.csv: header row [...], 500
rows x 2 columns``). A header whose first cell is empty (the index column that pandas'
``to_csv`` writes) marks an index, not a feature: that column is dropped, with a message; an
empty name elsewhere is refused. A malformed file is rejected with the line and column of the
first bad cell (columns are named by their header, or numbered from 1).

``fit`` never writes over its input: ``--out``, ``--checkpoint`` and ``--resume`` must not be
the data or ``--val`` file, nor each other (``--checkpoint`` and ``--resume`` may be the same
file), and an existing file that pyroflows did not write is not replaced unless ``--force``.

The header of the training file is saved with the model: ``sample`` writes it as the header
of its output, and ``score`` (like ``fit --val``) rejects a file whose header differs in names
or order. A file without a header is accepted if it has the right number of columns.

``sample`` and ``score`` run on the CPU unless ``--device`` says otherwise, so a model fitted
on a GPU can be used anywhere.

Every failure ends in one line on stderr, ``pyroflows <command>: error: ...``, and exit status
2 (bad arguments or input, an ``--out`` that cannot be written), 1 (training diverged, or
another failure to read or write a file) or 130 (interrupted).
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TextIO, TypeVar

import numpy as np

from pyroflows.builders import FAMILIES
from pyroflows.checkpoint import member_path
from pyroflows.density import PORTFOLIO, DensityEstimator
from pyroflows.estimator import is_pyroflows_file
from pyroflows.preprocess import bounds_array, check_inside
from pyroflows.streaming import csv_to_npy
from pyroflows.train import TrainingDiverged, resolve_device

T = TypeVar("T", int, float)
DEFAULTS = DensityEstimator().get_params()
HEADER_MODES = ("auto", "yes", "no")
DTYPES = ("float32", "float64")
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

    data: np.ndarray
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


def read_table(path: str | Path, header: str = "auto") -> Table:
    """Read a numeric CSV file (see :func:`read_csv`), with the file line of each data row
    and a note of how it was read."""
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
            first = i == 0 and header == "auto" and names is None
            hint = " (use --header yes if the first row is a header)" if first else ""
            raise bad(i, j, f"{cell!r} is not a number{hint}") from None
    if not np.isfinite(data).all():
        i, j = np.argwhere(~np.isfinite(data))[0]
        raise bad(i, j, f"{rows[i][1][j].strip()!r} is NaN or infinite")
    how = f"header row {names}" if names is not None else "no header row"
    note = f"read {path}: {how}{f' ({why})' if why else ''}{dropped}, "
    note += f"{len(rows)} rows x {width} columns"
    return Table(data, names, [line for line, _ in rows], note)


def read_csv(path: str | Path, header: str = "auto") -> tuple[np.ndarray, list[str] | None]:
    """Read a numeric CSV file.

    Args:
        path: the file (UTF-8, with or without a byte-order mark).
        header: ``"auto"``: the first row is a header if none of its cells is a number, or
            if it is a row of numbers unlike the rows below (see the module's docstring);
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


def write_csv(X: np.ndarray, header: Sequence[str] | None, stream: TextIO) -> None:
    """Write the rows of ``X`` (9 significant digits) after an optional header row."""
    writer = csv.writer(stream, lineterminator="\n")
    if header is not None:
        writer.writerow(header)
    writer.writerows([f"{v:.9g}" for v in row] for row in X)


def _check_columns(path: str, found: list[str] | None, expected: Sequence[str] | None) -> None:
    """Reject a file whose header differs from ``expected`` (a missing header is accepted)."""
    if found is not None and expected is not None and list(found) != list(expected):
        kind = "in another order" if sorted(found) == sorted(expected) else "other names"
        raise ValueError(f"{path}: the columns are {found}, expected {list(expected)} ({kind})")


def _check_writable(path: Path, flag: str = "--out") -> None:
    """Raise ValueError unless a file can be written at ``path``: checked before training by
    opening it for appending (a file that did not exist is removed again)."""
    if path.is_dir():
        raise ValueError(f"{flag} {path}: is a directory")
    existed = path.exists()
    try:
        with path.open("ab"):
            pass
    except OSError as error:
        raise ValueError(f"{flag} {path}: cannot write there ({error.strerror})") from None
    if not existed:
        path.unlink()


def _same_file(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name one file (the same resolved path, a link, a hard link)."""
    if Path(a).resolve() == Path(b).resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _check_outputs(args: argparse.Namespace) -> None:
    """Refuse, before any work, a ``fit`` that would write over its input or over a file
    pyroflows did not write (unless ``--force``)."""
    inputs = [("the data file", args.data)] + ([("the --val file", args.val)] if args.val else [])
    writes = [("--out", args.out)]
    if args.checkpoint:
        several = args.flow == "auto"
        writes.append(("--checkpoint", args.checkpoint))
        if several:  # flow auto: one file per member
            writes += [
                ("--checkpoint", str(member_path(args.checkpoint, m.name))) for m in PORTFOLIO
            ]
    outputs = writes + ([("--resume", args.resume)] if args.resume else [])
    for flag, path in outputs:
        for what, source in inputs:
            if _same_file(path, source):
                raise ValueError(f"{flag} {path} is {what}: writing there would destroy it")
    if args.resume and _same_file(args.out, args.resume):
        raise ValueError(f"--out {args.out} is the --resume checkpoint: use another --out")
    if args.checkpoint and _same_file(args.out, args.checkpoint):
        raise ValueError(f"--out {args.out} is the --checkpoint file: use another --out")
    if args.checkpoint_every != 1 and not args.checkpoint:
        raise ValueError("--checkpoint-every needs --checkpoint")
    if args.val and args.validation_fraction != DEFAULTS["validation_fraction"]:
        raise ValueError(
            "--validation-fraction has no effect with --val (the --val rows are the validation "
            "rows): drop one of them"
        )
    for flag, path in writes:
        if not args.force and os.path.lexists(path) and not is_pyroflows_file(path):
            raise ValueError(
                f"{flag} {path} exists and is not a file pyroflows wrote: refusing to overwrite "
                "it (choose another path, or pass --force)"
            )
    for flag, path in writes:
        _check_writable(Path(path), flag)


def _streamed_csv(path: str, header: str, folder: str) -> tuple[str, list[str] | None, str]:
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


def _fit(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="pyroflows-") as folder:
        _fit_from(args, folder)


def _fit_from(args: argparse.Namespace, folder: str) -> None:
    _check_outputs(args)
    notes, table = [], None
    if args.data.endswith(".npy"):  # memory-mapped and streamed by the estimator
        if args.header != "auto":
            raise ValueError("--header does not apply to a .npy data file (it has no header)")
        X, names = args.data, None
    elif args.stream:
        X, names, note = _streamed_csv(args.data, args.header, folder)
        notes.append(note)
    else:
        table = read_table(args.data, args.header)
        X, names = table.data, table.names
        notes.append(table.note)
    X_val = None
    if args.val:
        val = read_table(args.val, args.header)
        X_val = val.data
        _check_columns(args.val, val.names, names)
        notes.append(val.note)
    if args.bounds and table is not None:  # name the file's line, before any work
        low, high = bounds_array(tuple(args.bounds), X.shape[1])
        closed = args.flow == "piecewise_linear"
        for source, rows in ((args.data, table),) + (((args.val, val),) if args.val else ()):
            check_inside(
                rows.data, low, high, source, closed=closed,
                row=lambda i, rows=rows: f"line {rows.lines[i]}",
                column=lambda j: f"column {names[j]!r}" if names else f"column {j + 1}",
            )  # fmt: skip
    est = DensityEstimator(
        flow=args.flow,
        layers=args.layers,
        hidden=tuple(args.hidden),
        bins=args.bins,
        whiten=args.whiten,
        bounds=tuple(args.bounds) if args.bounds else None,
        lr=args.lr,
        batch_size=args.batch_size,
        max_epochs=args.epochs,
        patience=args.patience,
        validation_fraction=args.validation_fraction,
        time_budget=args.time_budget,
        random_state=args.seed,
        device=args.device,
        dtype=args.dtype,
        progress=args.progress,
    )
    est._check_params()  # a bad combination of options is one line, before the notes
    for note in notes:
        print(note, file=sys.stderr)
    if names is not None and not isinstance(X, str):
        import pandas as pd

        X = pd.DataFrame(X, columns=names)
        X_val = None if X_val is None else pd.DataFrame(X_val, columns=names)
    est.fit(
        X, X_val, checkpoint=args.checkpoint, checkpoint_every=args.checkpoint_every,
        resume=args.resume,
    )  # fmt: skip
    if names is not None:
        est.feature_names_in_ = np.asarray(names, dtype=object)
    try:
        est.save(args.out, force=True)  # checked by _check_outputs
    except ValueError as error:  # atomic_save: the folder vanished or refused the write
        raise OSError(str(error)) from None
    except RuntimeError as error:  # torch.save reports some failed writes as a RuntimeError
        raise OSError(f"cannot write {args.out}: {error}") from None
    hist = est.history_
    which = "validation" if any(not math.isnan(v) for v in hist.val_loss) else "training"
    shape = np.load(X, mmap_mode="r").shape if isinstance(X, str) else X.shape
    print(
        f"fitted {est.member_} on {shape[0]} rows x {shape[1]} feature(s): "
        f"{len(hist.train_loss)} epochs ({hist.stop_reason}), "
        f"best {which} loss {hist.best_loss:.4f}; saved to {args.out}",
        file=sys.stderr,
    )


def _sample(args: argparse.Namespace) -> None:
    est = DensityEstimator.load(args.model, device=args.device)
    names = getattr(est, "feature_names_in_", None)
    samples = est.sample(args.n, random_state=args.seed)
    write_csv(samples, None if names is None else list(names), sys.stdout)


def _score(args: argparse.Namespace) -> None:
    from pyroflows.diagnostics import test_log_likelihood

    est = DensityEstimator.load(args.model, device=args.device)
    table = read_table(args.data, args.header)
    X, names = table.data, table.names
    expected = getattr(est, "feature_names_in_", None)
    _check_columns(args.data, names, expected)
    if expected is not None:  # a file without a header: its columns in the model's order
        import pandas as pd

        if len(expected) != X.shape[1]:
            raise ValueError(f"{args.data} has {X.shape[1]} columns, expected {len(expected)}")
        X = pd.DataFrame(X, columns=list(expected))
        if names is None:
            print(
                f"{table.note}; its columns are taken as the model's {list(expected)}",
                file=sys.stderr,
            )
    log_p = est.score_samples(X)
    if args.per_row:
        write_csv(log_p[:, None], ["log_prob"], sys.stdout)
        return
    mean, se = test_log_likelihood(log_p) if len(log_p) > 1 else (float(log_p[0]), math.nan)
    print(f"mean log-likelihood {mean:.6g} ± {se:.2g} (standard error) over {len(X)} rows")


def _checked(kind: Callable[[str], T], ok: Callable[[T], bool], what: str) -> Callable[[str], T]:
    """An argparse ``type=``: ``kind(text)`` if ``ok`` accepts it, else a one-line error."""

    def parse(text: str) -> T:
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not ok(value):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        return value

    return parse


_positive_int = _checked(int, lambda v: v >= 1, "a positive integer")
_seed = _checked(int, lambda v: 0 <= v < 2**32, "an integer from 0 to 2**32 - 1")
_positive_float = _checked(float, lambda v: 0 < v < math.inf, "a positive number")
_bound = _checked(float, lambda v: not math.isnan(v), "a number or -inf / inf")
_fraction = _checked(float, lambda v: 0 <= v < 1, "a number in [0, 1)")


def _device(text: str) -> str:
    """argparse ``type=`` of ``--device``: a torch device that this machine has."""
    try:
        resolve_device(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line: ``<prog>: error: <message>``."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``pyroflows fit | sample | score``; ``fit``'s defaults are those of
    :class:`~pyroflows.density.DensityEstimator`."""
    parser = _Parser(
        prog="pyroflows", description="Normalizing-flow density estimation from the command line."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{fit,sample,score}")
    header = dict(
        choices=HEADER_MODES,
        default="auto",
        help="is the first row a header? auto: if none of its cells is a number, or its "
        "numbers differ in kind from the rows below (integers above decimals, or a far "
        "outlier); a header whose first cell is empty marks an index column, which is dropped "
        "(default: auto)",
    )
    load_device = dict(type=_device, default="cpu", help="torch device (default: cpu)")

    def option(name: str, param: str, text: str, **kwargs: Any) -> None:
        """Add an option of ``fit`` that defaults to the estimator's ``param``."""
        default = DEFAULTS[param]
        shown = " ".join(map(str, default)) if isinstance(default, tuple) else default
        if default is None:
            shown = "chosen by the flow's recipe"
        kwargs.setdefault("type", _positive_int)
        fit.add_argument(name, default=default, help=f"{text} (default: {shown})", **kwargs)

    fit = sub.add_parser("fit", help="fit a flow to the rows of a CSV file")
    fit.add_argument("data", help="training data (CSV)")
    fit.add_argument("--out", required=True, help="where to save the model (.pt)")
    fit.add_argument("--val", help="validation data (CSV); default: held-out training rows")
    fit.add_argument("--header", **header)
    fit.add_argument(
        "--force",
        action="store_true",
        help="let --out and --checkpoint replace an existing file that pyroflows did not write "
        "(never the data or --val file)",
    )
    option(
        "--flow",
        "flow",
        "flow family, or auto (a small portfolio, the best on validation rows is kept)",
        type=str,
        choices=["auto", *sorted(FAMILIES)],
    )
    option("--layers", "layers", "number of flow layers")
    option("--hidden", "hidden", "hidden sizes of each layer's network", nargs="+")
    option("--bins", "bins", "spline bins (nsf, piecewise_linear)")
    fit.add_argument(
        "--bounds",
        type=_bound,
        nargs=2,
        metavar=("LOW", "HIGH"),
        help="the data lie in [LOW, HIGH] in every column (an infinite bound leaves that side "
        "open); piecewise_linear needs finite bounds",
    )
    fit.add_argument(
        "--whiten",
        action="store_true",
        help="standardise with the data covariance instead of per-column scaling",
    )
    fit.add_argument(
        "--stream",
        action="store_true",
        help="data larger than memory: convert the CSV to a temporary .npy file in chunks and "
        "train on streamed blocks (a .npy data file is always streamed)",
    )
    option("--lr", "lr", "learning rate", type=_positive_float)
    option("--batch-size", "batch_size", "rows per minibatch")
    option("--epochs", "max_epochs", "maximum number of epochs")
    option("--patience", "patience", "early-stopping patience (epochs)")
    option(
        "--validation-fraction",
        "validation_fraction",
        "share of the training rows held out for early stopping without --val",
        type=_fraction,
    )
    fit.add_argument(
        "--time-budget", type=_positive_float, help="stop training after this many seconds"
    )
    fit.add_argument(
        "--checkpoint",
        metavar="PATH",
        help="write the training state to PATH every --checkpoint-every epochs (flow auto: "
        "one file per member, e.g. run.nsf.ckpt)",
    )
    fit.add_argument(
        "--checkpoint-every",
        type=_positive_int,
        default=1,
        metavar="N",
        help="epochs between checkpoints (default: 1)",
    )
    fit.add_argument(
        "--resume",
        metavar="PATH",
        help="continue an interrupted fit from its checkpoint (usually the --checkpoint path; "
        "a missing file there starts afresh); a checkpoint written for other data or other "
        "model options is refused",
    )
    option("--seed", "random_state", "seed of the split, initialisation and shuffling", type=_seed)
    option("--device", "device", "torch device: cpu, cuda, cuda:1, mps", type=_device)
    option("--dtype", "dtype", "floating-point type of the flow", type=str, choices=DTYPES)
    option(
        "--progress",
        "progress",
        "progress bar (auto: on a terminal, not in CI)",
        action=argparse.BooleanOptionalAction,
        type=None,
    )
    fit.set_defaults(run=_fit)

    sample = sub.add_parser("sample", help="write samples of a fitted model as CSV")
    sample.add_argument("model")
    sample.add_argument("-n", type=_positive_int, default=1000, help="number of samples")
    sample.add_argument("--seed", type=_seed, help="random seed (default: none)")
    sample.add_argument("--device", **load_device)
    sample.set_defaults(run=_sample)

    score = sub.add_parser("score", help="log-likelihood of the rows of a CSV file")
    score.add_argument("model")
    score.add_argument("data")
    score.add_argument("--header", **header)
    score.add_argument("--per-row", action="store_true", help="print log p(x) of every row")
    score.add_argument("--device", **load_device)
    score.set_defaults(run=_score)
    return parser


def _error(command: str, error: BaseException, status: int) -> int:
    """Print ``error`` as one line on stderr and return ``status``."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    message = "; ".join(lines) or type(error).__name__
    if isinstance(error, TrainingDiverged):
        message = f"training diverged: {message}"
    print(f"pyroflows {command}: error: {message}", file=sys.stderr)
    return status


def _warning_line(command: str) -> Callable[..., None]:
    """``warnings.showwarning`` for the command line: one line on stderr per warning."""

    def show(message: Warning | str, category: type, *args: Any, **kwargs: Any) -> None:
        text = " ".join(str(message).split())
        print(f"pyroflows {command}: warning: {text}", file=sys.stderr)

    return show


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``pyroflows`` with ``argv`` (default: ``sys.argv[1:]``) and return the exit status."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # --help, or a bad argument (already reported)
        return exit_.code if isinstance(exit_.code, int) else 2
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _warning_line(args.command)
            args.run(args)
        sys.stdout.flush()
    except BrokenPipeError:  # the reader went away, e.g. `| head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (ValueError, TypeError) as error:
        return _error(args.command, error, 2)
    except (TrainingDiverged, OSError) as error:
        return _error(args.command, error, 1)
    except KeyboardInterrupt:
        return _error(args.command, KeyboardInterrupt("interrupted"), 130)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
