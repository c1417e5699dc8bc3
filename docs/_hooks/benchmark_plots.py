"""MkDocs hook: draw the benchmark figures from the stored results at build time.

The figures are made from ``benchmarks/results/*.json`` (the same runs as the pages' tables)
and added to the site as ``benchmarks/plots/*.png``; nothing is written into ``docs/``.
"""

from __future__ import annotations

import io
import json
from collections import defaultdict
from pathlib import Path

from mkdocs.structure.files import File, Files

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def speed_figure(plt) -> bytes:
    rows = json.loads((RESULTS / "speed.json").read_text())["results"]
    libraries = ["pyroflows", "nflows", "pyro .inv", "pyro"]
    metrics = [("train_vs_zuko", "train step"), ("log_prob_vs_zuko", "log_prob"),
               ("sample_vs_zuko", "sample")]  # fmt: skip
    groups = sorted({(r["family"], r["dim"]) for r in rows})
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4), sharey=True)
    width = 0.8 / len(libraries)
    for ax, (key, title) in zip(axes, metrics, strict=True):
        for j, lib in enumerate(libraries):
            values = [
                next(r[key] for r in rows if (r["family"], r["dim"]) == g and r["library"] == lib)
                for g in groups
            ]
            xs = [i + (j - (len(libraries) - 1) / 2) * width for i in range(len(groups))]
            ax.bar(xs, values, width, label=lib)
        ax.axhline(1.0, color="k", lw=0.8, ls="--")
        ax.set_yscale("log")
        ax.set_xticks(range(len(groups)), [f"{f} D={d}" for f, d in groups], fontsize=8)
        ax.set_title(f"{title}: time relative to zuko", fontsize=9)
    axes[0].set_ylabel("× zuko's time (below 1: faster)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)


def amortized_figure(plt) -> bytes:
    by_cell = defaultdict(list)
    for folder in ("seeds", "seeds_lg_slcp"):
        data = json.loads((RESULTS / folder / "amortized.json").read_text())
        for r in data["accuracy"]:
            by_cell[(r["task"], r["budget"], r["method"])].append(r["c2st"])
    tasks = [("linear_gaussian", "linear Gaussian"), ("two_moons", "two moons"), ("slcp", "SLCP")]
    methods = [("pyroflows", "pyroflows", "C1"), ("sbi NPE-NSF", "sbi NPE-NSF", "C0")]
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2))
    for ax, (task, title) in zip(axes, tasks, strict=True):
        for j, (method, label, color) in enumerate(methods):
            for i, budget in enumerate((1000, 10000)):
                values = by_cell.get((task, budget, method), [])
                x = i + (j - 0.5) * 0.3
                ax.plot([x] * len(values), values, "o", color=color, alpha=0.6, ms=4,
                        label=label if i == 0 else None)  # fmt: skip
                if values:
                    mean = sum(values) / len(values)
                    ax.plot([x - 0.1, x + 0.1], [mean, mean], color=color, lw=2)
        ax.set_xticks([0, 1], ["1 000", "10 000"])
        ax.set_xlabel("simulations")
        ax.set_title(title, fontsize=10)
    axes[0].set_ylabel("C2ST (0.5 is perfect)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)


def quality_figure(plt) -> bytes:
    rows = json.loads((RESULTS / "quality.json").read_text())["results"]["mixtures"]
    models = ["pyroflows default", "KDE", "GMM"]
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    for model in models:
        pts = sorted((r["components"], r["kl"], r["stderr"]) for r in rows if r["model"] == model)
        if pts:
            k, kl, se = zip(*pts, strict=True)
            ax.errorbar(k, kl, yerr=se, marker="o", capsize=3, label=model)
    ax.set_xlabel("mixture components")
    ax.set_ylabel("KL(p‖q), nats")
    ax.set_title("2-D Gaussian mixtures (lower is better)", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)


FIGURES = {
    "benchmarks/plots/speed.png": speed_figure,
    "benchmarks/plots/amortized-c2st.png": amortized_figure,
    "benchmarks/plots/quality-mixtures.png": quality_figure,
}


def on_files(files: Files, config) -> Files:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for uri, draw in FIGURES.items():
        try:
            content = draw(plt)
        finally:
            plt.close("all")
        files.append(File.generated(config, uri, content=content))
    return files
