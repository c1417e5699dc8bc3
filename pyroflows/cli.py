"""Command line: ``pyroflows fit | sample | score``.

Examples::

    pyroflows fit data.csv --flow nsf --out model.pt
    pyroflows sample model.pt -n 1000 > samples.csv
    pyroflows score model.pt data.csv            # mean log-likelihood and its standard error
    pyroflows score model.pt data.csv --per-row  # log p(x) of every row

CSV files hold one row per sample and one numeric column per feature, with an optional header
row. A malformed file is rejected with the row and column of the first bad cell.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def read_csv(path: str | Path) -> tuple[np.ndarray, list[str] | None]:
    """Read a numeric CSV file into ``(X, header)``; ``header`` is None when the first row is
    numeric.

    Raises:
        ValueError: naming the file, row and column of the first problem.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    with path.open(newline="") as handle:
        rows = [row for row in csv.reader(handle) if any(cell.strip() for cell in row)]
    if not rows:
        raise ValueError(f"{path}: the file has no data rows")
    header = None

    def numeric(cell: str) -> bool:
        try:
            float(cell)
        except ValueError:
            return False
        return True

    if not all(numeric(cell) for cell in rows[0]):
        header, rows = [cell.strip() for cell in rows[0]], rows[1:]
        if not rows:
            raise ValueError(f"{path}: the file has a header but no data rows")
    width = len(header) if header is not None else len(rows[0])
    data = np.empty((len(rows), width))
    first_line = 2 if header is not None else 1
    for i, row in enumerate(rows):
        line = i + first_line
        if len(row) != width:
            raise ValueError(f"{path}: line {line} has {len(row)} cells, expected {width}")
        for j, cell in enumerate(row):
            try:
                data[i, j] = float(cell)
            except ValueError:
                column = header[j] if header is not None else str(j)
                raise ValueError(
                    f"{path}: line {line}, column {column!r}: {cell.strip()!r} is not a number"
                ) from None
    return data, header


def write_csv(X: np.ndarray, header: Sequence[str] | None, stream) -> None:
    writer = csv.writer(stream, lineterminator="\n")
    if header is not None:
        writer.writerow(header)
    writer.writerows([f"{v:.9g}" for v in row] for row in X)


def _fit(args: argparse.Namespace) -> None:
    from pyroflows.density import DensityEstimator

    X, header = read_csv(args.data)
    X_val = read_csv(args.val)[0] if args.val else None
    bounds = tuple(args.bounds) if args.bounds else None
    est = DensityEstimator(
        flow=args.flow,
        layers=args.layers,
        hidden=tuple(args.hidden),
        bins=args.bins,
        bounds=bounds,
        max_epochs=args.epochs,
        time_budget=args.time_budget,
        random_state=args.seed,
        progress=args.progress,
    )
    est.fit(X, X_val)
    if header is not None:
        est.feature_names_in_ = np.asarray(header, dtype=object)
    est.save(args.out)
    hist = est.history_
    print(
        f"fitted {args.flow} on {len(X)} rows x {X.shape[1]} features: "
        f"{len(hist.train_loss)} epochs ({hist.stop_reason}), "
        f"best validation loss {hist.best_loss:.4f}; saved to {args.out}",
        file=sys.stderr,
    )


def _sample(args: argparse.Namespace) -> None:
    from pyroflows.density import DensityEstimator

    est = DensityEstimator.load(args.model)
    if args.n < 1:
        raise ValueError(f"-n must be a positive integer, got {args.n}")
    header = getattr(est, "feature_names_in_", None)
    write_csv(
        est.sample(args.n, random_state=args.seed),
        None if header is None else list(header),
        sys.stdout,
    )


def _score(args: argparse.Namespace) -> None:
    from pyroflows.density import DensityEstimator
    from pyroflows.diagnostics import test_log_likelihood

    est = DensityEstimator.load(args.model)
    X, _ = read_csv(args.data)
    log_p = est.score_samples(X)
    if args.per_row:
        write_csv(log_p[:, None], ["log_prob"], sys.stdout)
        return
    mean, se = test_log_likelihood(log_p) if len(log_p) > 1 else (float(log_p[0]), math.nan)
    print(f"mean log-likelihood {mean:.6g} ± {se:.2g} (standard error) over {len(X)} rows")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pyroflows", description="Normalizing-flow density estimation from the command line."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    fit = sub.add_parser("fit", help="fit a flow to the rows of a CSV file")
    fit.add_argument("data", help="training data (CSV)")
    fit.add_argument("--out", required=True, help="where to save the model (.pt)")
    fit.add_argument("--val", help="validation data (CSV); default: 10%% of the training rows")
    fit.add_argument("--flow", default="nsf", choices=["nsf", "maf", "realnvp"])
    fit.add_argument("--layers", type=int, default=5)
    fit.add_argument("--hidden", type=int, nargs="+", default=[128, 128])
    fit.add_argument("--bins", type=int, default=8)
    fit.add_argument(
        "--bounds",
        type=float,
        nargs=2,
        metavar=("LOW", "HIGH"),
        help="data lie in the box [LOW, HIGH]^D (logit pre-transform)",
    )
    fit.add_argument("--epochs", type=int, default=500, help="maximum number of epochs")
    fit.add_argument("--patience", type=int, default=50, help="early-stopping patience (epochs)")
    fit.add_argument(
        "--whiten",
        action="store_true",
        help="whiten with the data covariance instead of per-column scaling",
    )
    fit.add_argument("--time-budget", type=float, help="stop training after this many seconds")
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--progress", action="store_true", help="show a progress bar")
    fit.set_defaults(run=_fit)
    sample = sub.add_parser("sample", help="write samples of a fitted model as CSV")
    sample.add_argument("model")
    sample.add_argument("-n", type=int, default=1000, help="number of samples")
    sample.add_argument("--seed", type=int, default=None)
    sample.set_defaults(run=_sample)
    score = sub.add_parser("score", help="log-likelihood of the rows of a CSV file")
    score.add_argument("model")
    score.add_argument("data")
    score.add_argument("--per-row", action="store_true", help="print log p(x) of every row")
    score.set_defaults(run=_score)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except ValueError as error:
        print(f"pyroflows {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
