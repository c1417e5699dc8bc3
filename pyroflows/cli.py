"""Command line: ``pyroflows fit | sample | score``.

Examples::

    pyroflows fit data.csv --flow nsf --out model.pt
    pyroflows fit box.csv --flow piecewise_linear --bounds 0 1 --out model.pt
    pyroflows fit events.csv --weights weight --out model.pt  # a weighted fit
    pyroflows sample model.pt -n 1000 > samples.csv
    pyroflows score model.pt data.csv            # mean log-likelihood and its standard error
    pyroflows score model.pt data.csv --per-row  # log p(x) of every row

CSV files are comma-separated UTF-8 (a byte-order mark is ignored), one row per sample and one
column per feature; blank lines are skipped. A column with a cell that is not a number is a
text column, modelled as categorical (``--discrete none`` refuses it instead); integer columns
and columns of values on a grid are found as ``DensityEstimator(discrete="auto")`` finds them,
or declared with ``--discrete count=integer,colour=categorical,height=0.5`` (a column by its
header name, or by its number from 1 in a file without a header; a number as the kind is the
step of a quantised column). ``fit`` prints the kind of every discrete column, ``sample``
writes their values on the grid or as categories, and ``score`` gives log-probabilities of
their cells (see :mod:`pyroflows.tabular`). With ``--header auto`` (the default) the
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

``fit --weights COLUMN`` trains on weighted rows: ``COLUMN`` (a header name, or a column number
counted from 1 in a file without a header) holds one non-negative weight per row and is not a
feature; the ``--val`` file, if any, has the same column for its rows' weights. NaN, infinite,
negative or all-zero weights are refused (see
:meth:`pyroflows.density.DensityEstimator.fit`).

The header of the training file (less a ``--weights`` column) is saved with the model:
``sample`` writes it as the header of its output, and ``score`` (like ``fit --val``) rejects a
file whose header differs in names or order. A file without a header is accepted if it has the
right number of columns.

``sample`` and ``score`` run on the CPU unless ``--device`` says otherwise, so a model fitted
on a GPU can be used anywhere.

Every failure ends in one line on stderr, ``pyroflows <command>: error: ...``, and exit status
2 (bad arguments or input, an ``--out`` that cannot be written), 1 (training diverged, or
another failure to read or write a file) or 130 (interrupted).

Where things live: CSV reading and writing in :mod:`pyroflows.csvio`; ``fit``'s options in the
table :data:`FIT_OPTIONS` (one row each, mapped onto the estimator's parameters); a new
command is a ``_<command>(args)`` function and a sub-parser in :func:`build_parser`.
"""

from __future__ import annotations

import argparse
import ast
import math
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import numpy as np

from pyroflows.builders import FAMILIES
from pyroflows.checkpoint import member_path
from pyroflows.csvio import (
    HEADER_MODES,
    OUTLIER_SDS,
    Table,
    check_columns,
    csv_to_streamed,
    read_csv,
    read_table,
    write_csv,
)
from pyroflows.density import PORTFOLIO, UNIT_CUBE, DensityEstimator
from pyroflows.estimator import is_pyroflows_file, refuse_to_overwrite
from pyroflows.preprocess import bounds_array, check_inside
from pyroflows.train import TrainingDiverged, resolve_device
from pyroflows.validation import DataWarning

__all__ = [
    "HEADER_MODES", "OUTLIER_SDS", "Table", "build_parser", "main", "read_csv", "read_table",
    "write_csv",
]  # fmt: skip

T = TypeVar("T", int, float)
DEFAULTS = DensityEstimator().get_params()
DTYPES = ("auto", "float32", "float64")


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


def _checkpoints(args: argparse.Namespace) -> list[str]:
    """The files ``--checkpoint`` writes (flow auto: also one per member)."""
    if not args.checkpoint:
        return []
    paths = [args.checkpoint]
    if args.flow == "auto":
        paths += [str(member_path(args.checkpoint, m.name)) for m in PORTFOLIO]
    return paths


def _check_outputs(args: argparse.Namespace) -> None:
    """Refuse, before any work, a ``fit`` that would write over its input or over a file
    pyroflows did not write (unless ``--force``)."""
    inputs = [("the data file", args.data)] + ([("the --val file", args.val)] if args.val else [])
    writes = [("--out", args.out)] + [("--checkpoint", path) for path in _checkpoints(args)]
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
        if not args.force:
            refuse_to_overwrite(path, flag, "--force")
    for flag, path in writes:
        _check_writable(Path(path), flag)


def _fit(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="pyroflows-") as folder:
        _fit_from(args, folder)


def _fit_from(args: argparse.Namespace, folder: str) -> None:
    _check_outputs(args)
    X, X_val, names, notes, weights = _read_inputs(args, folder)
    params = _estimator_params(args) | {"discrete": _discrete_option(args.discrete, names)}
    est = DensityEstimator(**params)
    est._check_params()  # a bad combination of options is one line, before the notes
    for note in notes:
        print(note, file=sys.stderr)
    if names is not None and not isinstance(X, str):
        X, X_val = _frame(X, names), None if X_val is None else _frame(X_val, names)
    if args.force:  # asked to replace them: the training loop refuses a foreign file itself
        for path in _checkpoints(args):
            if os.path.lexists(path) and not is_pyroflows_file(path):
                os.remove(path)
    weighting = {}  # only a weighted fit passes weights
    if args.weights is not None:
        weighting = {"sample_weight": weights[0], "val_weight": weights[1]}
    est.fit(
        X, X_val, checkpoint=args.checkpoint, checkpoint_every=args.checkpoint_every,
        resume=args.resume, **weighting,
    )  # fmt: skip
    if names is not None:
        est.feature_names_in_ = np.asarray(names, dtype=object)
    try:
        est.save(args.out, force=True)  # checked by _check_outputs
    except ValueError as error:  # atomic_save: the folder vanished or refused the write
        raise OSError(str(error)) from None
    except RuntimeError as error:  # torch.save reports some failed writes as a RuntimeError
        raise OSError(f"cannot write {args.out}: {error}") from None
    found = {k: v for k, v in est.columns_.kinds.items() if v != "continuous"}
    if found:
        print(f"discrete column(s): {found}", file=sys.stderr)
    hist = est.history_
    which = "validation" if any(not math.isnan(v) for v in hist.val_loss) else "training"
    shape = np.load(X, mmap_mode="r").shape if isinstance(X, str) else X.shape
    print(
        f"fitted {est.member_} on {shape[0]} rows x {shape[1]} feature(s): "
        f"{len(hist.train_loss)} epochs ({hist.stop_reason}), "
        f"best {which} loss {hist.best_loss:.4f}; saved to {args.out}"
        + ("" if est.ess_ is None else f"; weights' effective sample size {est.ess_:.1f}"),
        file=sys.stderr,
    )


def _read_inputs(args: argparse.Namespace, folder: str) -> tuple[Any, Any, Any, list[str], tuple]:
    """The training data of ``fit`` (an array, or the path of a ``.npy`` file to stream), the
    ``--val`` rows, the header's names, how each file was read and the ``--weights`` of the
    two files (``(None, None)`` without); rows outside ``--bounds`` are refused naming the
    file's line, before any work."""
    if args.weights is not None and (args.data.endswith(".npy") or args.stream):
        raise ValueError("--weights needs a CSV data file read into memory (not --stream or .npy)")
    notes, table, val, texts = [], None, None, []
    if args.data.endswith(".npy"):  # memory-mapped and streamed by the estimator
        if args.header != "auto":
            raise ValueError("--header does not apply to a .npy data file (it has no header)")
        X, names = args.data, None
    elif args.stream:
        X, names, note = csv_to_streamed(args.data, args.header, folder)
        notes.append(note)
    else:
        texts = _declared_text(args.discrete)
        table = read_table(args.data, args.header, args.discrete != "none", texts)
        X, names = table.data, table.names
        notes.append(table.note)
    X_val = None
    if args.val:
        val = read_table(args.val, args.header, args.discrete != "none", texts)
        X_val = val.data
        check_columns(args.val, val.names, names)
        notes.append(val.note)
    weights: tuple = (None, None)
    if args.weights is not None:
        X, w, kept = _weight_column(X, names, args.weights, args.data)
        X_val, w_val, _ = (None, None, None) if X_val is None else _weight_column(
            X_val, names, args.weights, args.val
        )  # fmt: skip
        names, weights = kept, (w, w_val)
    numeric = table is not None and not hasattr(table.data, "columns")
    if args.bounds and numeric:  # text columns: the estimator checks the bounds
        low, high = bounds_array(tuple(args.bounds), X.shape[1])
        inputs = ((args.data, table, X),) + (((args.val, val, X_val),) if args.val else ())
        for source, rows, data in inputs:
            check_inside(
                data, low, high, source, closed=args.flow in UNIT_CUBE,
                row=lambda i, rows=rows: f"line {rows.lines[i]}",
                column=lambda j: f"column {names[j]!r}" if names else f"column {j + 1}",
            )  # fmt: skip
    return X, X_val, names, notes, weights


def _weight_column(
    X: np.ndarray, names: list[str] | None, column: str, path: str
) -> tuple[np.ndarray, np.ndarray, list[str] | None]:
    """``(features, weights, feature names)``: the ``--weights`` column taken out of ``X``."""
    if names is not None:
        if column not in names:
            raise ValueError(f"--weights {column!r}: {path} has no such column (has {names})")
        j = names.index(column)
    else:
        if not column.isdigit() or not 1 <= int(column) <= X.shape[1]:
            raise ValueError(
                f"--weights {column!r}: {path} has no header, so name the column by its number "
                f"from 1 to {X.shape[1]}"
            )
        j = int(column) - 1
    if X.shape[1] < 2:
        raise ValueError(f"--weights {column!r} is the only column of {path}: no feature left")
    kept = None if names is None else names[:j] + names[j + 1 :]
    if hasattr(X, "columns"):  # a table with text columns
        try:
            weights = X.iloc[:, j].to_numpy(dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"--weights {column!r}: {path} has text in that column") from None
        return X.drop(columns=X.columns[j]), weights, kept
    return np.delete(X, j, axis=1), X[:, j].copy(), kept


def _frame(X: Any, names: list[str]) -> Any:
    """The rows as a DataFrame with the header's names (a DataFrame of text columns renamed)."""
    import pandas as pd

    if hasattr(X, "columns"):
        return X.set_axis(names, axis=1)
    return pd.DataFrame(X, columns=names)


def _declared_text(text: str) -> list[Any]:
    """The columns ``--discrete`` declares categorical or ordinal (names, or positions from 0
    for numbers): read as text even where their cells are numbers."""
    if text in ("auto", "none"):
        return []
    columns: list[Any] = []
    for item in text.split(","):
        column, _, kind = (part.strip() for part in item.partition("="))
        if kind in ("categorical", "ordinal"):
            columns.append(column)
            if column.isdigit() and int(column) >= 1:
                columns.append(int(column) - 1)
    return columns


def _discrete_option(text: str, names: list[str] | None) -> Any:
    """``--discrete``: ``auto``, ``none``, or ``COLUMN=KIND,...`` as the estimator's
    ``discrete`` (a column by header name, or by its number from 1; a number as the kind is a
    step)."""
    if text in ("auto", "none"):
        return None if text == "none" else "auto"
    spec: dict[Any, Any] = {}
    for item in text.split(","):
        column, sep, kind = (part.strip() for part in item.partition("="))
        if not sep or not column or not kind:
            raise ValueError(
                f"--discrete {text!r}: give auto, none or COLUMN=KIND[,COLUMN=KIND...] "
                "(KIND: integer, quantised, ordinal, categorical, continuous or a step)"
            )
        if names is not None and column in names:
            key: Any = column
        elif column.isdigit() and int(column) >= 1:
            key = names[int(column) - 1] if names and int(column) <= len(names) else int(column) - 1
        else:
            raise ValueError(f"--discrete: no column {column!r} (columns: {names})")
        try:
            spec[key] = float(kind)
        except ValueError:
            spec[key] = kind
    return spec


def _estimator_params(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`~pyroflows.density.DensityEstimator` parameters that ``fit``'s options
    set (:data:`FIT_OPTIONS`)."""
    params = {}
    for flag, param, *_ in FIT_OPTIONS:
        if param is None:
            continue
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        params[param] = tuple(value) if isinstance(value, list) else value
    return params


def _sample(args: argparse.Namespace) -> None:
    est = DensityEstimator.load(args.model, device=args.device)
    names = getattr(est, "feature_names_in_", None)
    samples = est.sample(args.n, random_state=args.seed)
    write_csv(samples, None if names is None else list(names), sys.stdout)


def _score(args: argparse.Namespace) -> None:
    from pyroflows.diagnostics import test_log_likelihood

    est = DensityEstimator.load(args.model, device=args.device)
    table = read_table(args.data, args.header, text=True)
    X, names = table.data, table.names
    expected = getattr(est, "feature_names_in_", None)
    check_columns(args.data, names, expected)
    if expected is not None:  # a file without a header: its columns in the model's order
        if len(expected) != X.shape[1]:
            raise ValueError(f"{args.data} has {X.shape[1]} columns, expected {len(expected)}")
        X = _frame(X, list(expected))
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


_HEADER_HELP = (
    "is the first row a header? auto: if none of its cells is a number, or its numbers differ "
    "in kind from the rows below (integers above decimals, or a far outlier); a header whose "
    "first cell is empty marks an index column, which is dropped (default: auto)"
)
_CHECKPOINT_HELP = (
    "write the training state to PATH every --checkpoint-every epochs (flow auto: one file per "
    "member, e.g. run.nsf.ckpt)"
)
_RESUME_HELP = (
    "continue an interrupted fit from its checkpoint (usually the --checkpoint path; a missing "
    "file there starts afresh); a checkpoint written for other data or other model options is "
    "refused"
)
_BOUNDS_HELP = (
    "the data lie in [LOW, HIGH] in every column (an infinite bound leaves that side open); "
    "piecewise_linear needs finite bounds"
)
_STREAM_HELP = (
    "data larger than memory: convert the CSV to a temporary .npy file in chunks and train on "
    "streamed blocks (a .npy data file is always streamed)"
)
_WEIGHTS_HELP = (
    "weighted fit: the column (its header name, or its number from 1 without a header) that "
    "holds each row's weight (>= 0); it is not a feature, and the --val file has it too"
)
_DISCRETE_HELP = (
    "discrete columns: auto (text columns categorical, integer columns and values on a grid "
    "found from the data), none (every column continuous), or COL=KIND,... with COL a header "
    "name or a column number from 1 and KIND integer, quantised, ordinal, categorical, "
    "continuous or a step (default: auto)"
)
_FORCE_HELP = (
    "let --out and --checkpoint replace an existing file that pyroflows did not write (never "
    "the data or --val file)"
)
_ESTIMATOR = object()  #: in FIT_OPTIONS: the default is the estimator's, shown in the help

#: The options of ``fit`` in the order of ``--help``: ``(flag, estimator parameter or None,
#: help, argparse keywords)``. With ``default=_ESTIMATOR`` the default is
#: :class:`~pyroflows.density.DensityEstimator`'s (shown in the help; the type a positive int
#: unless given). A new option of ``fit`` is one row here.
FIT_OPTIONS: tuple[tuple[str, str | None, str, dict[str, Any]], ...] = (
    ("--out", None, "where to save the model (.pt)", dict(required=True)),
    ("--val", None, "validation data (CSV); default: held-out training rows", {}),
    ("--header", None, _HEADER_HELP, dict(choices=HEADER_MODES, default="auto")),
    ("--force", None, _FORCE_HELP, dict(action="store_true")),
    ("--flow", "flow", "flow family, or auto (a small portfolio, the best on validation rows "
     "is kept)", dict(default=_ESTIMATOR, type=str, choices=["auto", *sorted(FAMILIES)])),
    ("--layers", "layers", "number of flow layers", dict(default=_ESTIMATOR)),
    ("--hidden", "hidden", "hidden sizes of each layer's network",
     dict(default=_ESTIMATOR, nargs="+")),
    ("--bins", "bins", "spline bins (nsf, piecewise_linear)", dict(default=_ESTIMATOR)),
    ("--bounds", "bounds", _BOUNDS_HELP, dict(type=_bound, nargs=2, metavar=("LOW", "HIGH"))),
    ("--whiten", "whiten", "whiten with the data covariance (--no-whiten: per-column scaling; "
     "auto: the one a mixture fits better on validation rows)",
     dict(default=_ESTIMATOR, action=argparse.BooleanOptionalAction, type=None)),
    ("--stream", None, _STREAM_HELP, dict(action="store_true")),
    ("--weights", None, _WEIGHTS_HELP, dict(metavar="COLUMN")),
    ("--discrete", None, _DISCRETE_HELP, dict(default="auto", metavar="auto|none|COL=KIND,...")),
    ("--lr", "lr", "learning rate", dict(default=_ESTIMATOR, type=_positive_float)),
    ("--batch-size", "batch_size", "rows per minibatch", dict(default=_ESTIMATOR)),
    ("--epochs", "max_epochs", "maximum number of epochs", dict(default=_ESTIMATOR)),
    ("--patience", "patience", "early-stopping patience (epochs)", dict(default=_ESTIMATOR)),
    ("--validation-fraction", "validation_fraction", "share of the training rows held out for "
     "early stopping without --val", dict(default=_ESTIMATOR, type=_fraction)),
    ("--time-budget", "time_budget", "stop training after this many seconds",
     dict(type=_positive_float)),
    ("--checkpoint", None, _CHECKPOINT_HELP, dict(metavar="PATH")),
    ("--checkpoint-every", None, "epochs between checkpoints (default: 1)",
     dict(type=_positive_int, default=1, metavar="N")),
    ("--resume", None, _RESUME_HELP, dict(metavar="PATH")),
    ("--seed", "random_state", "seed of the split, initialisation and shuffling",
     dict(default=_ESTIMATOR, type=_seed)),
    ("--device", "device", "torch device: cpu, cuda, cuda:1, mps",
     dict(default=_ESTIMATOR, type=_device)),
    ("--dtype", "dtype", "floating-point type of the flow",
     dict(default=_ESTIMATOR, type=str, choices=DTYPES)),
    ("--progress", "progress", "progress bar (auto: on a terminal, not in CI)",
     dict(default=_ESTIMATOR, action=argparse.BooleanOptionalAction, type=None)),
)  # fmt: skip


def _add_option(parser: argparse.ArgumentParser, flag: str, param: str | None, text: str,
                kwargs: dict[str, Any]) -> None:  # fmt: skip
    """Add a row of :data:`FIT_OPTIONS`; an estimator default is given and shown."""
    kwargs = dict(kwargs)
    if kwargs.get("default") is _ESTIMATOR:
        default = kwargs["default"] = DEFAULTS[param]
        shown = " ".join(map(str, default)) if isinstance(default, tuple) else default
        if default is None:
            shown = "chosen by the flow's recipe"
        kwargs.setdefault("type", _positive_int)
        text = f"{text} (default: {shown})"
    parser.add_argument(flag, help=text, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``pyroflows fit | sample | score``; ``fit``'s defaults are those of
    :class:`~pyroflows.density.DensityEstimator` (:data:`FIT_OPTIONS`)."""
    parser = _Parser(
        prog="pyroflows", description="Normalizing-flow density estimation from the command line."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{fit,sample,score}")
    fit = sub.add_parser("fit", help="fit a flow to the rows of a CSV file")
    fit.add_argument("data", help="training data (CSV)")
    for flag, param, text, kwargs in FIT_OPTIONS:
        _add_option(fit, flag, param, text, kwargs)
    fit.set_defaults(run=_fit)

    load_device = dict(type=_device, default="cpu", help="torch device (default: cpu)")
    sample = sub.add_parser("sample", help="write samples of a fitted model as CSV")
    sample.add_argument("model")
    sample.add_argument("-n", type=_positive_int, default=1000, help="number of samples")
    sample.add_argument("--seed", type=_seed, help="random seed (default: none)")
    sample.add_argument("--device", **load_device)
    sample.set_defaults(run=_sample)

    score = sub.add_parser("score", help="log-likelihood of the rows of a CSV file")
    score.add_argument("model")
    score.add_argument("data")
    score.add_argument("--header", choices=HEADER_MODES, default="auto", help=_HEADER_HELP)
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
        if isinstance(message, DataWarning) and message.column is not None:
            text = _as_option(text)
        print(f"pyroflows {command}: warning: {text}", file=sys.stderr)

    return show


def _as_option(text: str) -> str:
    """A :class:`~pyroflows.validation.DataWarning`'s advice with the estimator's
    ``discrete=...`` spelt as the ``--discrete`` option (a column without a header name by
    its number from 1)."""

    def spelt(match: re.Match[str]) -> str:
        value = ast.literal_eval(match.group(1))
        if not isinstance(value, dict):
            return f"--discrete {str(value).lower()}"
        items = (f"{k + 1 if isinstance(k, int) else k}={v}" for k, v in value.items())
        return "--discrete " + ",".join(items)

    text = re.sub(r"\bdiscrete=(None|'auto'|\{[^}]*\})", spelt, text)
    return text.replace("; discrete names it", "; --discrete names it")


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
