"""Speed of the rational-quadratic spline: the current ``pyroflows.ops.rqs`` against the
previous implementation (kept below as ``old_spline``), and the effect on an NSF flow.

Protocol, the same for every method: float32 on the CPU, ``torch.set_num_threads(--threads)``
(default 1); each timed callable is warmed up once, then the methods of one row are called in
turn (old, new[, zuko]) ``--reps`` times and the median of each is reported, so that load from
other processes hits them alike. Ratios are ``t_new / t_old`` (below 1: faster).

* spline rows: ``N x D`` inputs (default 10^5 x 10) drawn from ``N(0, 2^2)`` (about 2 % in the
  tails of ``[-5, 5]``), raw parameters from ``N(0, 1)``, 8 and 16 bins; forward and inverse,
  ``no_grad`` with the log-derivative, ``no_grad`` without it (what drawing samples calls), and
  the log-derivative's backward (``(y.sum() + ladj.sum()).backward()`` included in the time).
  The new spline is called as the flows call it: with the conditioner's packed parameters.
* flow rows: ``pf.nsf(D, layers=5, hidden=(128, 128), bins=8, bound=5.0)`` with the spline
  swapped for the old one and back (same weights), ``flow.sample((--draws,))`` under
  ``no_grad`` and one training step at batch 512 (``zero_grad``, ``-log_prob(x).mean()``,
  ``backward``, ``Adam.step``); zuko's ``NSF(D, bins=8, transforms=5, hidden_features=(128,
  128))`` in the same loop as in ``benchmarks/speed.py``.

Usage::

    python benchmarks/rqs_speed.py                 # spline rows and the flow rows at D = 10
    python benchmarks/rqs_speed.py --quick         # smaller, fewer repetitions
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

ROOT = str(Path(__file__).resolve().parents[1])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import pyroflows as pf  # noqa: E402
import pyroflows.transforms.univariate as univariate  # noqa: E402
from pyroflows.ops.bins import take  # noqa: E402
from pyroflows.ops.rqs import (  # noqa: E402
    _DERIVATIVE_SHIFT,
    _MIN_BIN,
    _MIN_DERIVATIVE,
    _max_last,
    _offsets,
    rational_quadratic_spline_packed,
)


def bin_index(edges: Tensor, x: Tensor) -> Tensor:
    """The previous bin search for at most 32 edges: the booleans summed into int64."""
    return (edges <= x[..., None]).sum(-1, keepdim=True)


def _knots(raw: Tensor, bound: float, minimum: float) -> Tensor:
    """Bin edges ``(-bound = k_0 < ... < k_K = bound)`` from raw bin sizes ``(..., K)``: bin
    ``j`` gets the fraction ``minimum + (1 - K minimum) softmax(raw)_j`` of the interval.

    The softmax is not formed: edge ``k`` is ``-bound + 2 bound (k minimum + (1 - K minimum)
    C_k / C_K)`` with ``C`` the cumulative sum of ``exp(raw - max raw)``, in one fused
    operation: 6 operations instead of 11 (385 instead of 480 us for 16 000 x 2 x 8 raw
    sizes on 2 CPU threads)."""
    bins = raw.shape[-1]
    e = torch.exp(raw - _max_last(raw.detach()))
    cumulative = torch.cumsum(e, dim=-1)
    offsets = _offsets(bins, bound, minimum, raw.dtype, raw.device)
    scale = 2.0 * bound * (1.0 - minimum * bins)
    edges = torch.addcdiv(offsets, cumulative, cumulative[..., -1:], value=scale)
    return F.pad(edges, (1, 0), value=-bound)


def old_spline(
    x: Tensor,
    widths: Tensor,
    heights: Tensor,
    derivatives: Tensor,
    bound: float = 5.0,
    inverse: bool = False,
    log_det: bool = True,
) -> tuple[Tensor, Tensor | None]:
    """The previous implementation: all knots of both coordinates and the slopes concatenated
    into one ``(..., 3, K + 1)`` table, gathered once; three logarithms for the derivative; the
    previous bin search (booleans summed into int64)."""
    # The widths and heights go through the same steps as one (..., 2, K) tensor: half the
    # operations, each on twice the data (a few microseconds saved per call add up over the
    # many calls of sampling a flow in chunks).
    knots = _knots(torch.stack([widths, heights], dim=-2), bound, _MIN_BIN)
    slopes = F.pad(_MIN_DERIVATIVE + F.softplus(derivatives + _DERIVATIVE_SHIFT), (1, 1), value=1.0)

    inside = (x >= -bound) & (x <= bound)
    u = x.clamp(-bound, bound)
    index = bin_index(knots[..., int(inverse), 1:-1], u)
    # One gather for the six quantities of the bin (its two edges in x and y, and the
    # derivatives there) keeps the backward pass to a single scatter.
    table = torch.cat([knots, slopes[..., None, :]], dim=-2)
    picked = take(
        table, torch.cat([index, index + 1], -1)[..., None, :].expand(*index.shape[:-1], 3, 2)
    )
    (x_k, x_k1), (y_k, y_k1), (d_k, d_k1) = (t.unbind(-1) for t in picked.unbind(-2))
    w_k = x_k1 - x_k
    h_k = y_k1 - y_k
    s_k = h_k / w_k
    curvature = d_k1 + d_k - 2.0 * s_k

    if inverse:
        dy = u - y_k
        a = h_k * (s_k - d_k) + dy * curvature
        b = h_k * d_k - dy * curvature
        c = -s_k * dy
        disc = (b.square() - 4.0 * a * c).clamp_min(0.0)
        # xi lies in [0, 1] in exact arithmetic; with extreme parameters (a conditioner fed a far
        # outlier) rounding can push it out, where the log-derivative below has no real value.
        xi = ((2.0 * c) / (-b - disc.sqrt())).clamp(0.0, 1.0)
        out = x_k + xi * w_k
        if not log_det:
            return torch.where(inside, out, x), None
    else:
        xi = (u - x_k) / w_k
    xi1 = xi * (1.0 - xi)
    denom = s_k + curvature * xi1
    if not inverse:
        out = torch.where(inside, y_k + h_k * (s_k * xi.square() + d_k * xi1) / denom, x)
        if not log_det:
            return out, None
    else:
        out = torch.where(inside, out, x)
    log_deriv = (
        2.0 * torch.log(s_k)
        + torch.log(d_k1 * xi.square() + 2.0 * s_k * xi1 + d_k * (1.0 - xi).square())
        - 2.0 * torch.log(denom)
    )
    if inverse:
        log_deriv = -log_deriv
    return out, torch.where(inside, log_deriv, torch.zeros_like(log_deriv))


def old_packed(
    x: Tensor, params: Tensor, bins: int, bound: float = 5.0, inverse: bool = False, log_det=True
) -> tuple[Tensor, Tensor | None]:
    """``old_spline`` called the way the flows called it (parameters split in three)."""
    w, h, d = params.split([bins, bins, bins - 1], dim=-1)
    return old_spline(x, w, h, d, bound=bound, inverse=inverse, log_det=log_det)


def median_times(calls: dict[str, Callable[[], object]], reps: int) -> dict[str, float]:
    """Median seconds of each callable, called in turn ``reps`` times after one warm-up."""
    for call in calls.values():
        call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(reps):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def spline_rows(n: int, dim: int, reps: int) -> None:
    print(f"\nspline, {n} x {dim} float32 inputs, median of {reps}")
    print("| bins | direction | pass | old ms | new ms | new / old |")
    print("|---:|---|---|---:|---:|---:|")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, dim, generator=g) * 2.0
    for bins in (8, 16):
        params = torch.randn(n, dim, 3 * bins - 1, generator=g)
        for inverse in (False, True):
            ins = x
            if inverse:  # feed the inverse the images of x, as a flow's sampling does
                with torch.no_grad():
                    ins = rational_quadratic_spline_packed(x, params, bins)[0]
            for mode in ("log-det", "value", "backward"):

                def call(fn, mode=mode, ins=ins, inverse=inverse, bins=bins, params=params):
                    if mode == "backward":
                        p = params.detach().requires_grad_(True)
                        y, ladj = fn(ins, p, bins, inverse=inverse)
                        (y.sum() + ladj.sum()).backward()
                        return
                    with torch.no_grad():
                        fn(ins, params, bins, inverse=inverse, log_det=mode == "log-det")

                t = median_times(
                    {
                        "old": lambda c=call: c(old_packed),
                        "new": lambda c=call: c(rational_quadratic_spline_packed),
                    },
                    reps,
                )
                direction = "inverse" if inverse else "forward"
                print(
                    f"| {bins} | {direction} | {mode} | {t['old'] * 1e3:.1f} "
                    f"| {t['new'] * 1e3:.1f} | {t['new'] / t['old']:.2f} |"
                )


def flow_rows(dim: int, draws: int, reps: int, with_zuko: bool = True) -> None:
    import zuko

    torch.manual_seed(0)
    flow = pf.nsf(dim, layers=5, hidden=(128, 128), bins=8, bound=5.0)
    zflow = zuko.flows.NSF(dim, bins=8, transforms=5, hidden_features=(128, 128))
    data = [torch.randn(512, dim) for _ in range(4)]
    opt = torch.optim.Adam(flow.parameters(), lr=1e-4)
    zopt = torch.optim.Adam(zflow.parameters(), lr=1e-4)
    step_count = [0, 0]

    def use(fn):
        def call():
            univariate.rational_quadratic_spline_packed = fn

        return call

    def ours(fn, what):
        def call():
            use(fn)()
            if what == "sample":
                with torch.no_grad():
                    flow.sample((draws,))
                return
            x = data[step_count[0] % 4]
            step_count[0] += 1
            opt.zero_grad()
            (-flow.log_prob(x).mean()).backward()
            opt.step()

        return call

    def theirs(what):
        def call():
            if what == "sample":
                with torch.no_grad():
                    zflow().sample((draws,))
                return
            x = data[step_count[1] % 4]
            step_count[1] += 1
            zopt.zero_grad()
            (-zflow().log_prob(x).mean()).backward()
            zopt.step()

        return call

    print(f"\nNSF flow, D = {dim}, 5 layers, hidden (128, 128), 8 bins, median of {reps}")
    print("| operation | old ms | new ms | zuko ms | new / old | old / zuko | new / zuko |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    try:
        for what, label in (("sample", f"sample {draws}"), ("train", "train step, batch 512")):
            calls = {
                "old": ours(old_packed, what),
                "new": ours(rational_quadratic_spline_packed, what),
            }
            if with_zuko:
                calls["zuko"] = theirs(what)
            t = median_times(calls, reps)
            t.setdefault("zuko", float("nan"))
            print(
                f"| {label} | {t['old'] * 1e3:.1f} | {t['new'] * 1e3:.1f} | {t['zuko'] * 1e3:.1f} "
                f"| {t['new'] / t['old']:.2f} | {t['old'] / t['zuko']:.2f} "
                f"| {t['new'] / t['zuko']:.2f} |"
            )
    finally:
        use(rational_quadratic_spline_packed)()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="rows of spline inputs")
    parser.add_argument("--dim", type=int, default=10, help="columns / flow dimension")
    parser.add_argument("--draws", type=int, default=10_000, help="flow samples per call")
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="n = 10^4, 3 repetitions")
    parser.add_argument("--no-flow", action="store_true", help="spline rows only")
    parser.add_argument("--no-spline", action="store_true", help="flow rows only")
    parser.add_argument("--no-zuko", action="store_true", help="flow rows without zuko")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.reps, args.draws = 10_000, 3, 2_000
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {args.threads} thread(s), load average at start "
        f"{os.getloadavg()[0]:.2f}"
    )
    if not args.no_spline:
        spline_rows(args.n, args.dim, args.reps)
    if not args.no_flow:
        flow_rows(args.dim, args.draws, args.reps, with_zuko=not args.no_zuko)
    print(f"load average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
