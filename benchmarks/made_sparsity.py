"""How much of a MAF / NSF training step the structural zeros of the MADE masks could save.

For D = 10 and 50 (5 layers, hidden (128, 128), batch 512, float32, one thread; the
architecture of ``benchmarks/speed.py``):

1. **FLOP count**: the share of zeros in each masked weight matrix of pyroflows' MADE, and the
   multiply-adds of one forward product of a batch, dense against nonzeros only.
2. **Profile**: one training step (zero_grad, ``-log_prob(x).mean()``, backward, Adam) of
   pyroflows and zuko under ``torch.profiler``; the share of the step's CPU time spent in matrix
   products (``aten::mm``, ``aten::addmm``, ``aten::bmm``, ``aten::matmul``, self time).
3. **Skipping the zeros**: each masked product ``x @ (W * M).T`` of one network against a
   block product in the degree-sorted layout (inputs sorted so that every output sees a prefix
   of them; one dense product per group of outputs with the same prefix, then one
   concatenation; the same values, checked), forward only, timed in alternation (median of
   ``--reps``).
4. **What skipping could give**: pyroflows' step time relative to zuko's, scaled by
   ``1 - share * saving`` with the products' share of the step and the saving of the products
   (backward products shrink alike): ideally the share of zeros (time proportional to
   multiply-adds), and as measured with the block products.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/made_sparsity.py --reps 30 --out made_sparsity
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
for path in (str(HERE.parent), str(HERE)):
    if path not in sys.path:
        sys.path.insert(0, path)

from speed import BATCH, LIBRARIES, make_data, operations, time_interleaved, train_step  # noqa: E402

from pyroflows.nn.made import MLP  # noqa: E402

PRODUCTS = ("aten::mm", "aten::addmm", "aten::bmm")
RESULTS = HERE / "results"


def block_plan(mask: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, list]:
    """The degree-sorted layout of a nested (MADE) mask: inputs sorted so that every output
    sees a prefix of them, outputs grouped by that prefix's length; returns the input order
    and ``(output rows, prefix length, contiguous weight block)`` per group (the layout a
    degree-sorted implementation would store, so no gather is timed)."""
    cols = torch.argsort(mask.sum(0), descending=True, stable=True)
    sorted_mask = mask[:, cols]
    seen = sorted_mask.sum(1).long()
    prefix = (torch.arange(mask.shape[1])[None, :] < seen[:, None]).to(mask.dtype)
    assert torch.equal(sorted_mask, prefix), "mask not nested"
    groups = []
    for k in seen.unique().tolist():
        rows = torch.nonzero(seen == k).flatten()
        groups.append((rows, k, weight[rows][:, cols[:k]].contiguous()))
    return cols, groups


def block_product(x_sorted: torch.Tensor, groups: list) -> torch.Tensor:
    """``x @ (weight * mask).T`` from the nonzero blocks only: one product per output group
    over its prefix of the (degree-sorted) inputs; outputs in group order."""
    return torch.cat([x_sorted[:, :k] @ block.T for _, k, block in groups if k > 0], dim=1)


def products(x, weight, mask, x_sorted, groups) -> dict:
    """The dense masked product and the block product of one layer, as timed calls."""
    return {
        "dense": lambda: x @ (weight * mask).T,
        "block": lambda: block_product(x_sorted, groups),
    }


def count_and_time(family: str, dim: int, reps: int) -> dict:
    model = LIBRARIES["pyroflows"](family, dim)
    masks = [m for mlp in model.module.modules() if isinstance(mlp, MLP) for m in mlp.masks()]
    entries = sum(m.numel() for m in masks)
    nonzero = sum(int(m.sum()) for m in masks)
    dense_t, block_t = 0.0, 0.0
    for mask in masks[:3]:  # one network: input, hidden, output layer (the others alike)
        weight = torch.randn(mask.shape)
        x = torch.randn(BATCH, mask.shape[1])
        cols, groups = block_plan(mask, weight)
        x_sorted = x[:, cols].contiguous()
        exact = (x @ (weight * mask).T)[:, torch.cat([g[0] for g in groups if g[1] > 0])]
        assert torch.allclose(block_product(x_sorted, groups), exact, atol=1e-4)
        times = time_interleaved(products(x, weight, mask, x_sorted, groups), reps, 5, 5.0)
        dense_t += statistics.median(times["dense"])
        block_t += statistics.median(times["block"])
    return {
        "entries": entries, "nonzero": nonzero, "zero_share": 1 - nonzero / entries,
        "forward_macs_dense": BATCH * entries, "forward_macs_nonzero": BATCH * nonzero,
        "dense_s": dense_t, "block_s": block_t, "block_over_dense": block_t / dense_t,
    }  # fmt: skip


def profile_step(library: str, family: str, dim: int, steps: int) -> dict:
    torch.manual_seed(0)
    model = LIBRARIES[library](family, dim)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    data = make_data(dim)
    for x in data:
        train_step(model, optimizer, x)
    start = time.perf_counter()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for i in range(steps):
            train_step(model, optimizer, data[i % len(data)])
    wall = (time.perf_counter() - start) / steps
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    products = sum(e.self_cpu_time_total for e in events if e.key in PRODUCTS)
    top = sorted(events, key=lambda e: -e.self_cpu_time_total)[:6]
    return {"step_s_profiled": wall, "product_share": products / total,
            "top": [(e.key, round(e.self_cpu_time_total / total, 3)) for e in top]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--steps", type=int, default=10, help="profiled training steps")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    load = os.getloadavg()[0]
    rows = []
    for family in ("MAF", "NSF"):
        for dim in (10, 50):
            row = {"family": family, "dim": dim, **count_and_time(family, dim, args.reps)}
            for library in ("pyroflows", "zuko"):
                row[library] = profile_step(library, family, dim, args.steps)
            steps = {lib: operations(LIBRARIES[lib](family, dim), dim)["train"]
                     for lib in ("pyroflows", "zuko")}  # fmt: skip
            step = time_interleaved(steps, args.reps, 3, 20.0)
            row["step_s"] = {lib: statistics.median(t) for lib, t in step.items()}
            row["step_vs_zuko"] = row["step_s"]["pyroflows"] / row["step_s"]["zuko"]
            share = row["pyroflows"]["product_share"]
            # ideal: product time proportional to multiply-adds; measured: the block products
            row["ideal_step_vs_zuko"] = row["step_vs_zuko"] * (1 - share * row["zero_share"])
            row["measured_step_vs_zuko"] = row["step_vs_zuko"] * (
                1 - share * (1 - row["block_over_dense"])
            )
            print(json.dumps({k: v for k, v in row.items() if k not in ("pyroflows", "zuko")}),
                  file=sys.stderr, flush=True)  # fmt: skip
            rows.append(row)
    lines = [
        f"Protocol: `{' '.join(sys.argv)}`; 5 layers, hidden (128, 128), batch {BATCH}, "
        f"float32, torch threads {torch.get_num_threads()}, load average at start {load:.2f}.",
        "",
        "| family | D | mask zeros | forward MACs dense / nonzero | block ÷ dense product time "
        "| products' share of a step (pyroflows / zuko) | step ÷ zuko "
        "| step ÷ zuko, zeros skipped: ideal / with the block products |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['family']} | {r['dim']} | {r['zero_share']:.1%} | "
            f"{r['forward_macs_dense'] / 1e6:.1f} M / {r['forward_macs_nonzero'] / 1e6:.1f} M | "
            f"{r['block_over_dense']:.2f} | {r['pyroflows']['product_share']:.0%} / "
            f"{r['zuko']['product_share']:.0%} | {r['step_vs_zuko']:.2f} | "
            f"{r['ideal_step_vs_zuko']:.2f} / {r['measured_step_vs_zuko']:.2f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        (RESULTS / f"{args.out}.md").write_text(text)
        (RESULTS / f"{args.out}.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
