"""``make demo``: why a normalizing flow, on a 2-D target the classical estimators cannot fit.

The target is a two-armed spiral (:func:`pyroflows.datasets.spiral`): a Gaussian bar twisted
about the origin, so its density is exact and curved, with a dense centre and thin arms. The
demo fits pyroflows' default estimator (``DensityEstimator()``, ``flow="auto"``: a
mixture-started and a plain neural spline flow, the better on validation rows kept) and the
classical baselines (one Gaussian, a kernel density estimate with a cross-validated
bandwidth, a Gaussian mixture with a validated number of components) to samples of it. It
prints each method's test log-likelihood, its KL divergence ``KL(p || q)`` to the true density
(estimated without bias from the target's own samples) and its fit time, then a one-line
verdict computed from those numbers; it saves and reloads the flow (the scores must be
identical) and writes a figure of the samples, the true density and each fitted density.

Run with ``python -m pyroflows.demo [--quick] [--seed S] [--out DIR]``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

#: The target and its size. With 3000 rows the default flow's KL is 2.6x below the GMM's and
#: 2.9x below KDE's on data seed 0 (the flow fits on one thread, a few minutes on a loaded
#: machine: 287 s at a load average of 7); 6000 rows took over three minutes of CPU for the
#: flow alone.
TARGET = "spiral"
TARGET_OPTIONS: dict[str, Any] = {"twist": 1.0}
N_ROWS = 3000  # split 70/15/15 into train, validation and test
N_ROWS_QUICK = 1500
N_KL = 20_000  # samples of the target behind each KL estimate
FLOW = "pyroflows default"
LIMIT = 6.0  # the figure shows [-LIMIT, LIMIT]^2


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a few seconds)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data (default 0)")
    parser.add_argument("--out", default="demo_output", help="folder for the model and figure")
    return parser.parse_args(argv)


def _methods(quick: bool) -> dict[str, Any]:
    from pyroflows import DensityEstimator
    from pyroflows.baselines import GaussianDensity, GMMDensity, KDEDensity

    # --quick is a smoke test: a few epochs. The full run uses the estimator's defaults.
    flow = DensityEstimator(max_epochs=5, progress=False) if quick else DensityEstimator()
    return {
        FLOW: flow,
        "Gaussian": GaussianDensity(),
        "KDE (CV bandwidth)": KDEDensity(),
        "GMM (validated K)": GMMDensity(),
    }


def _fit_and_score(methods: dict[str, Any], data: Any, seed: int) -> list[dict[str, Any]]:
    """Fit every method; its test log-likelihood, KL to the target and fit time, with se."""
    from pyroflows.diagnostics import kl_monte_carlo, test_log_likelihood

    truth = data.distribution
    x_p = truth.sample(N_KL, seed=seed + 1)  # fresh draws, not the training rows
    log_p = truth.log_prob(x_p)
    rows = []
    for name, est in methods.items():
        start = time.perf_counter()
        est.fit(data.train, data.val)
        seconds = time.perf_counter() - start
        ll = test_log_likelihood(est.score_samples(data.test))
        kl = kl_monte_carlo(log_p, est.score_samples(x_p))
        rows.append({"method": name, "ll": ll, "kl": kl, "seconds": seconds})
    return rows


def table(rows: list[dict[str, Any]], true_ll: float) -> str:
    """The results as a Markdown table, the true density's log-likelihood first."""
    lines = [
        "| method | test log-likelihood | KL(p‖q) nats | fit time (s) |",
        "|---|---|---|---|",
        f"| true density | {true_ll:.4f} | 0 | - |",
    ]
    for r in rows:
        (ll, ll_se), (kl, kl_se) = r["ll"], r["kl"]
        lines.append(
            f"| {r['method']} | {ll:.4f} ± {ll_se:.4f} | {kl:.4f} ± {kl_se:.4f} "
            f"| {r['seconds']:.1f} |"
        )
    return "\n".join(lines)


def verdict(rows: list[dict[str, Any]]) -> str:
    """One line comparing the default flow's KL with the GMM's and KDE's, from the numbers."""
    kl = {r["method"]: float(r["kl"][0]) for r in rows}
    flow = kl[FLOW]

    def versus(name: str, label: str) -> str:
        ratio = kl[name] / flow if flow > 0 else float("inf")
        if ratio >= 1:
            return f"{ratio:.1f}x lower than {label}"
        return f"{1 / ratio:.1f}x higher than {label}"

    gmm, kde = versus("GMM (validated K)", "the GMM's"), versus("KDE (CV bandwidth)", "KDE's")
    wins = all(kl[name] >= 2 * flow for name in ("GMM (validated K)", "KDE (CV bandwidth)"))
    caveat = "" if wins else " (short of the 2x margin this demo is meant to show)"
    return f"verdict: the default flow's KL is {flow:.4f}, {gmm} and {kde}{caveat}"


def _save_and_reload(est: Any, path: Path, x: np.ndarray) -> bool:
    """Save the fitted flow, load it back, and compare the scores of ``x``."""
    from pyroflows import DensityEstimator

    est.save(path)
    return bool(np.array_equal(DensityEstimator.load(path).score_samples(x), est.score_samples(x)))


def _figure(data: Any, methods: dict[str, Any], path: Path, res: int = 200) -> None:
    """Samples, the true density and every method's density on the same grid and colour scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid_1d = np.linspace(-LIMIT, LIMIT, res)
    grid = np.stack(np.meshgrid(grid_1d, grid_1d, indexing="xy"), -1).reshape(-1, 2)
    true = np.exp(data.distribution.log_prob(grid))
    panels = [("true density", true)]
    panels += [(name, np.exp(est.score_samples(grid))) for name, est in methods.items()]
    fig, axes = plt.subplots(1, len(panels) + 1, figsize=(2.8 * (len(panels) + 1), 3.1))
    axes[0].scatter(data.train[:, 0], data.train[:, 1], s=0.5, alpha=0.5, color="k")
    axes[0].set(xlim=(-LIMIT, LIMIT), ylim=(-LIMIT, LIMIT), aspect="equal")
    axes[0].set_title(f"{len(data.train)} training samples", fontsize=9)
    for ax, (title, dens) in zip(axes[1:], panels, strict=True):
        extent = (-LIMIT, LIMIT, -LIMIT, LIMIT)
        ax.imshow(dens.reshape(res, res), origin="lower", extent=extent, vmin=0, vmax=true.max())
        ax.set_title(title, fontsize=9)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    from pyroflows import datasets

    args = _parse(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    n = N_ROWS_QUICK if args.quick else N_ROWS
    data = datasets.load(TARGET, n=n, seed=args.seed, **TARGET_OPTIONS)
    print(
        f"data: {data.name} {TARGET_OPTIONS}, seed {args.seed}: {len(data.train)} train / "
        f"{len(data.val)} validation / {len(data.test)} test rows"
    )
    methods = _methods(args.quick)
    rows = _fit_and_score(methods, data, args.seed)
    true_ll = float(np.mean(data.distribution.log_prob(data.test)))
    print("\n" + table(rows, true_ll) + "\n")
    print(verdict(rows))

    flow = methods[FLOW]
    tried = ", ".join(f"{c['name']} (validation {c['best_loss']:.4f})" for c in flow.candidates_)
    print(f"the default estimator tried {tried} and kept {flow.member_}")
    path = out / f"default_{TARGET}.pt"
    same = _save_and_reload(flow, path, data.test)
    print(f"saved the default model to {path}; reloaded scores identical: {same}")
    _figure(data, methods, out / "densities.png")
    print(f"figure: {out / 'densities.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
