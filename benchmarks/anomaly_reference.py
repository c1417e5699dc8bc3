"""CATHODE against its reference implementation on the same data (issue 29).

The reference is HEPML-AnomalyDetection/CATHODE (the code of Hallin et al., Phys. Rev. D 106,
055006), a checkout the user extracts somewhere (``--reference-dir``); this script never copies
it into the repository and never downloads it. Its own pipeline (``run_all.py --mode CATHODE``
with the flags of its README's most recent command) runs in a subprocess on files that this
script writes in the reference's format (``m, x..., label`` per row): the events of our
generator (:func:`pyroflows.datasets.bump_hunt`, realistic correlation, S/B 0.6 % in the SR),
the same events that pyroflows' CATHODE (:class:`pyroflows.anomaly.CATHODE`, the recipe of
``benchmarks/anomaly.py``) trains on. Both detectors score the same independent labelled SR test
set; the figure is max SIC with the same statistical cut as ``benchmarks/anomaly.py``
(:func:`pyroflows.anomaly.max_sic`, cuts keeping >= ``--min-background`` background test
events), printed per data seed and as the ratio pyroflows / reference.

Splits given to the reference, in its own proportions (its ``run_data_preparation_LHCORD.py``):
SR events half for the classifier's training, half for its validation (60 000 / 60 000 there);
sideband events 57 % for the flow's training, 43 % for its validation (500 000 of about 880 000
there). Samples: ``--oversampling`` times the number of SR events, for both (the reference
samples 400 000 for its 120 000 SR events; pyroflows' benchmark uses 4). The reference drops
test events outside the range of its SR training events (its ``logit_transform`` domain cut);
both detectors are scored on the test events it keeps, and the number dropped is printed.

CPU budget: the reference's defaults (flow: 15 MADE blocks of 128 units with batch norm, 100
epochs of batch 256, Adam 1e-4; classifier: 3 x 64 MLP, 100 epochs of batch 128, one run, the
10 epochs with the lowest validation loss averaged) would take about 40 min per data seed here,
so both epoch counts are multiplied by ``--epoch-fraction`` (0.3: 30 and 30 epochs, about 12 min
per seed on one core of a busy machine); pyroflows' flow epochs (30 in its recipe,
``anomaly.CATHODE_FLOW``) are multiplied by the same fraction ("scaled", at least its 5 kept
epochs), and pyroflows also runs its unscaled recipe ("default"). Its classifier (gradient
boosting with early stopping) has no epochs to scale. ``--classifier-swap`` runs no reference:
pyroflows' default flow with its gradient boosting and with an MLP shaped like the reference's
classifier, on the same data and test events.

Commands::

    git -C /path/to/CATHODE archive HEAD --prefix=cathode-ref/ | tar -x -C /tmp
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/anomaly_reference.py \\
        --reference-dir /tmp/cathode-ref --reference-commit 3d4c0c5
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/anomaly_reference.py --classifier-swap

Results: ``benchmarks/results/anomaly_reference.md`` and ``.json`` (``_classifier.*`` for
``--classifier-swap``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
import anomaly as bench  # noqa: E402  (benchmarks/anomaly.py: the shared recipe)

from pyroflows import anomaly as A  # noqa: E402
from pyroflows.classify import Classifier  # noqa: E402

RESULTS = Path(__file__).parent / "results"
REFERENCE_FILES = (
    "run_all.py",
    "data_handler.py",
    "flows.py",
    "DE_MAF_model.yml",
    "classifier.yml",
)
REFERENCE_EPOCHS = {"flow": 100, "classifier": 100}  # its run_all.py defaults
MIN_REFERENCE_EPOCHS = 11  # it averages the 10 epochs with the lowest validation loss
SR_TRAIN_FRACTION, SB_TRAIN_FRACTION = 0.5, 500_000 / 880_000  # its data preparation

# Run the reference's run_all.py as its __main__, seeded (it seeds nothing itself).
LAUNCHER = """
import random, runpy, sys
import numpy as np, torch
ref, seed, argv = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
sys.path.insert(0, ref)
random.seed(seed); np.random.seed(seed); torch.manual_seed(seed)
torch.set_num_threads(1)
sys.argv = [ref + "/run_all.py", *argv]
runpy.run_path(ref + "/run_all.py", run_name="__main__")
"""


def check_reference(path: Path | None) -> Path:
    """Refuse a directory that is not a checkout of the reference before anything runs."""
    if path is None:
        raise SystemExit("--reference-dir is required (a checkout of the reference)")
    path = path.expanduser().resolve()
    missing = [f for f in REFERENCE_FILES if not (path / f).is_file()]
    if missing:
        raise SystemExit(
            f"--reference-dir {path}: not a checkout of HEPML-AnomalyDetection/CATHODE "
            f"(missing {', '.join(missing)})"
        )
    return path


def rows(events) -> np.ndarray:
    """Events in the reference's format: ``m, x..., label`` per row, float32."""
    return np.column_stack([events.m, events.x, events.label]).astype(np.float32)


def write_reference_data(data, region: A.SignalRegion, directory: Path, seed: int) -> dict:
    """The observed events split the reference's way, plus the labelled test set."""
    rng = np.random.default_rng(20_000 + seed)
    d = data.data
    out = {}
    for name, mask, fraction in (
        ("inner", region.inside(d.m), SR_TRAIN_FRACTION),
        ("outer", region.sidebands(d.m), SB_TRAIN_FRACTION),
    ):
        index = rng.permutation(np.flatnonzero(mask))
        n_train = int(round(fraction * len(index)))
        second = "val" if name == "inner" else "test"  # its file names
        for part, idx in (("train", index[:n_train]), (second, index[n_train:])):
            np.save(directory / f"{name}data_{part}.npy", rows(d[idx]))
            out[f"{name}_{part}"] = len(idx)
    np.save(directory / "innerdata_test.npy", rows(data.test))
    out["test"] = len(data.test)
    return out


def run_reference(
    reference: Path, work: Path, region: A.SignalRegion, seed: int, n_samples: int, args
) -> dict:
    """The reference's CATHODE on the files in ``work / 'data'``: returns its test-set
    predictions with the test events' ``m`` and labels as it kept them."""
    epochs = {
        k: max(MIN_REFERENCE_EPOCHS, int(round(v * args.epoch_fraction)))
        for k, v in REFERENCE_EPOCHS.items()
    }
    low, high = region.low, region.high
    argv = [
        "--data_dir", str(work / "data"), "--save_dir", str(work / "out") + "/",
        "--mode", "CATHODE", "--DE_config_file", str(reference / "DE_MAF_model.yml"),
        "--cf_config_file", str(reference / "classifier.yml"),
        "--DE_epochs", str(epochs["flow"]), "--cf_epochs", str(epochs["classifier"]),
        "--cf_SR_min", str(low), "--cf_SR_max", str(high),
        "--cf_SR_center", str(0.5 * (low + high)),
        # its README's most recent command, with our sample count
        "--cf_separate_val_set", "--no_extra_signal", "--cf_n_samples", str(n_samples),
        "--cf_realistic_conditional", "--cf_oversampling", "--cf_no_logit",
        "--cf_use_class_weights", "--cf_save_model", "--cf_n_runs", "1",
    ]  # fmt: skip
    env = {
        **os.environ, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1",
        # it pickles whole classifier modules (torch.save(model)); torch >= 2.6 loads weights only
        "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1",
    }  # fmt: skip
    log = work / "reference.log"
    start = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.run(
            [sys.executable, "-c", LAUNCHER, str(reference), str(seed), *argv],
            cwd=work, env=env, stdout=f, stderr=subprocess.STDOUT,
        )  # fmt: skip
    seconds = time.perf_counter() - start
    preds_file, test_file = work / "out" / "preds_matris.npy", work / "out" / "X_test.npy"
    if not (preds_file.is_file() and test_file.is_file()):
        tail = log.read_text()[-3000:]
        raise RuntimeError(f"the reference failed (exit {proc.returncode}); log tail:\n{tail}")
    x_test = np.load(test_file)
    x_test = x_test[x_test[:, -2] == 1]  # its data rows (no samples in the test set)
    preds = np.load(preds_file).reshape(-1)
    if len(preds) != len(x_test):
        raise RuntimeError(f"{len(preds)} reference predictions for {len(x_test)} test events")
    # its flow's samples with pyroflows' classifier: its training and validation rows (SR data
    # and its samples, preprocessed monotonically per feature, which gradient boosting ignores)
    rows_ = np.concatenate([np.load(work / "out" / f) for f in ("X_train.npy", "X_validation.npy")])
    y = rows_[:, -2]
    n1, n0 = int(y.sum()), int((y == 0).sum())
    weight = np.where(y == 1, 1.0, n1 / n0)  # both classes the same total, as pyroflows' CATHODE
    hybrid = bench.classifier(seed).fit(rows_[:, 1:-2], y, weight).predict_proba(x_test[:, 1:-2])
    facts = [line.strip() for line in log.read_text().splitlines()
             if line.startswith(("DensityEstimator has", "number of training data",
                                 "number of test data", "number of validation data"))]  # fmt: skip
    return {
        "m": x_test[:, 0], "label": x_test[:, -1], "scores": preds, "seconds": seconds,
        "hybrid": hybrid,
        "epochs": epochs, "exit_code": proc.returncode, "facts": facts,
    }  # fmt: skip


def reference_domain(x: np.ndarray, sr_train: np.ndarray) -> np.ndarray:
    """Indices of the rows of ``x`` that the reference's domain cut keeps: every feature,
    min-max scaled by its SR training rows in float32, strictly inside (0, 1)."""
    x = np.asarray(x).astype(np.float32)
    low, high = sr_train[:, 1:-1].min(0), sr_train[:, 1:-1].max(0)
    scaled = (x - low) / (high - low)
    return np.flatnonzero(((scaled > 0) & (scaled < 1)).all(1))


def kept_by_reference(test, sr_train: np.ndarray, kept_m: np.ndarray) -> np.ndarray:
    """Indices of our test events that the reference keeps (:func:`reference_domain`),
    checked against the ``m`` values of the rows it returned."""
    index = reference_domain(test.x, sr_train)
    if not np.array_equal(np.sort(test.m[index].astype(np.float32)), np.sort(kept_m)):
        raise RuntimeError("the reference's test rows are not the events its domain cut keeps")
    return index


def pyroflows_cathode(
    data, region, seed: int, epochs: int | None, args
) -> tuple[np.ndarray, float]:
    d = data.data
    args.epochs = epochs
    start = time.perf_counter()
    cathode = A.CATHODE(
        region, bench.density(seed, args), bench.classifier(seed),
        oversampling=args.oversampling, seed=seed,
    ).fit(d.x, d.m)  # fmt: skip
    return cathode.score(data.test.x), time.perf_counter() - start


def run_seed(reference: Path, seed: int, args) -> dict:
    data = bench.hunt(args.n, args.s_over_b, "realistic", seed, args)
    region = A.SignalRegion(*data.sr)
    n_sr = int(region.inside(data.data.m).sum())
    n_samples = int(round(args.oversampling * n_sr))
    with tempfile.TemporaryDirectory(prefix="anomref-", dir=args.work_dir) as tmp:
        work = Path(tmp)
        (work / "data").mkdir()
        (work / "out").mkdir()
        sizes = write_reference_data(data, region, work / "data", seed)
        sr_train = np.load(work / "data" / "innerdata_train.npy")
        ref = run_reference(reference, work, region, seed, n_samples, args)
    index = kept_by_reference(data.test, sr_train, ref["m"])
    labels = data.test.label[index]
    if labels.sum() != ref["label"].sum():
        raise RuntimeError("the reference's test set has another number of signal events")
    out = {
        "seed": seed, "sizes": sizes, "n_sr": n_sr, "n_samples": n_samples,
        "n_sr_signal": int(data.data.label[region.inside(data.data.m)].sum()),
        "test_kept": len(index), "test_dropped": len(data.test) - len(index),
        "reference_seconds": ref["seconds"], "reference_epochs": ref["epochs"],
        "reference_exit_code": ref["exit_code"], "reference_log": ref["facts"],
    }  # fmt: skip
    scores = {"reference": ref["scores"], "hybrid": ref["hybrid"]}
    ref_labels = ref["label"]
    # at least the recipe's number of kept epochs (it samples from its 5 best)
    scaled = max(
        A.CATHODE_FLOW["best_epochs"],
        int(round(A.CATHODE_FLOW["max_epochs"] * args.epoch_fraction)),
    )
    for name, epochs in (("scaled", scaled), ("default", None)):
        s, seconds = pyroflows_cathode(data, region, seed, epochs, args)
        scores[name], out[name + "_seconds"] = s[index], seconds
    out["pyroflows_scaled_epochs"] = scaled
    for name, s in scores.items():
        # the same events; the reference's rows in its own order
        y = ref_labels if name in ("reference", "hybrid") else labels
        # max_sic's nonfinite="raise" (default) stops on any NaN / inf: nothing filtered
        out[name] = A.max_sic(y, s, min_background=args.min_background)["max_sic"]
        out[name + "_auc"] = A.sic_curve(y, s).auc
    print(
        f"seed {seed}: reference {out['reference']:.2f} ({ref['seconds']:.0f} s), pyroflows "
        f"scaled {out['scaled']:.2f}, default {out['default']:.2f}; "
        f"{out['test_dropped']} test events dropped by the reference",
        flush=True,
    )
    return out


def reference_like_mlp(seed: int, epochs: int) -> Classifier:
    """pyroflows' MLP classifier shaped like the reference's (3 x 64 ReLU, Adam 1e-3, batch
    128, its epochs scaled the same way), 3 members like the gradient-boosting set-up."""
    return Classifier("mlp", ensemble=3, hidden=(64, 64, 64), lr=1e-3, batch_size=128,
                      max_epochs=epochs, random_state=seed)  # fmt: skip


def classifier_swap(seed: int, args) -> dict:
    """Without the reference: pyroflows' default CATHODE flow with its gradient-boosting
    classifier and with the MLP, on the test events the reference keeps (its domain cut
    computed from the same SR training split); isolates the classifier's part of a gap."""
    data = bench.hunt(args.n, args.s_over_b, "realistic", seed, args)
    region, d = A.SignalRegion(*data.sr), data.data
    with tempfile.TemporaryDirectory(prefix="anomref-", dir=args.work_dir) as tmp:
        R = Path(tmp)
        write_reference_data(data, region, R, seed)
        sr_train = np.load(R / "innerdata_train.npy")
    index = reference_domain(data.test.x, sr_train)
    labels = data.test.label[index]
    epochs = max(
        MIN_REFERENCE_EPOCHS, int(round(REFERENCE_EPOCHS["classifier"] * args.epoch_fraction))
    )
    args.epochs = None
    out: dict = {"seed": seed, "test_kept": len(index), "mlp_epochs": epochs}
    hgb = A.CATHODE(region, bench.density(seed, args), bench.classifier(seed),
                    oversampling=args.oversampling, seed=seed).fit(d.x, d.m)  # fmt: skip
    start = time.perf_counter()
    mlp = A.CATHODE(region, hgb.background, reference_like_mlp(seed, epochs),
                    oversampling=args.oversampling, refit_background=False,
                    seed=seed).fit(d.x, d.m)  # fmt: skip
    out["mlp_seconds"] = time.perf_counter() - start
    for name, det in (("hgb", hgb), ("mlp", mlp)):
        scores = det.score(data.test.x)[index]
        out[name] = A.max_sic(labels, scores, min_background=args.min_background)["max_sic"]
        out[name + "_auc"] = A.sic_curve(labels, scores).auc
    print(f"seed {seed}: default flow + gradient boosting {out['hgb']:.2f}, + MLP "
          f"{out['mlp']:.2f} ({out['mlp_seconds']:.0f} s)", flush=True)  # fmt: skip
    return out


def report(runs: list[dict], args, seconds: float) -> str:
    def cell(key: str) -> str:
        values = [r[key] for r in runs]
        return f"{np.median(values):.2f} ({', '.join(f'{v:.2f}' for v in values)})"

    r0 = runs[0]
    ref_epochs = r0["reference_epochs"]
    ratio = {k: [r[k] / r["reference"] for r in runs] for k in ("scaled", "default", "hybrid")}
    lines = [
        "# CATHODE against the reference implementation (issue 29)", "",
        f"Command: `OMP_NUM_THREADS=1 python benchmarks/anomaly_reference.py "
        f"{' '.join(sys.argv[1:])}` (reference: HEPML-AnomalyDetection/CATHODE "
        f"{args.reference_commit}; {seconds:.0f} s in all, load average "
        f"{os.getloadavg()[0]:.1f} at the end).", "",
        f"Data: the development bump hunt, realistic correlation, {args.n} background events, "
        f"S/B {args.s_over_b:.1%} in the SR, data seeds {[r['seed'] for r in runs]} "
        f"(training seed = data seed); the same events for both. Test: {args.n_test} background "
        f"+ {args.n_test // 10} signal SR events, independent; max SIC over the cuts keeping "
        f">= {args.min_background} background test events, on the test events the reference "
        f"keeps (it drops {', '.join(str(r['test_dropped']) for r in runs)} per seed outside "
        "its SR training range).", "",
        f"Budget: the reference's default epochs times {args.epoch_fraction} (flow "
        f"{ref_epochs['flow']} epochs, classifier {ref_epochs['classifier']} epochs, at least "
        f"{MIN_REFERENCE_EPOCHS}); pyroflows scaled: its flow's 30 epochs times the same fraction "
        f"({r0['pyroflows_scaled_epochs']} epochs); pyroflows default: its recipe unchanged. "
        f"Samples: {args.oversampling} per SR event for both.", "",
        "| | reference CATHODE | pyroflows CATHODE, scaled | pyroflows CATHODE, default | "
        "reference flow + pyroflows classifier |",
        "|---|---|---|---|---|",
        f"| max SIC, median (per seed) | {cell('reference')} | {cell('scaled')} | "
        f"{cell('default')} | {cell('hybrid')} |",
        f"| ratio to the reference, median (per seed) | 1 | "
        f"{np.median(ratio['scaled']):.2f} ({', '.join(f'{v:.2f}' for v in ratio['scaled'])}) | "
        f"{np.median(ratio['default']):.2f} "
        f"({', '.join(f'{v:.2f}' for v in ratio['default'])}) | "
        f"{np.median(ratio['hybrid']):.2f} "
        f"({', '.join(f'{v:.2f}' for v in ratio['hybrid'])}) |",
        f"| AUC, median (per seed) | {cell('reference_auc')} | {cell('scaled_auc')} | "
        f"{cell('default_auc')} | {cell('hybrid_auc')} |",
        f"| seconds, median (per seed) | {cell('reference_seconds')} | {cell('scaled_seconds')} "
        f"| {cell('default_seconds')} | |",
    ]  # fmt: skip
    return "\n".join(lines) + "\n"


def swap_report(swaps: list[dict], args, seconds: float) -> str:
    def cell(key: str) -> str:
        values = [r[key] for r in swaps]
        return f"{np.median(values):.2f} ({', '.join(f'{v:.2f}' for v in values)})"

    lines = [
        "# CATHODE's classifier: gradient boosting against a reference-shaped MLP (issue 29)", "",
        f"Command: `OMP_NUM_THREADS=1 python benchmarks/anomaly_reference.py "
        f"{' '.join(sys.argv[1:])}` ({seconds:.0f} s, load average {os.getloadavg()[0]:.1f} at "
        f"the end). The data, test events and metric of `anomaly_reference.md`; one pyroflows "
        f"default sideband flow per seed shared by both classifiers; MLP: 3 x 64 ReLU, Adam "
        f"1e-3, batch 128, at most {swaps[0]['mlp_epochs']} epochs with early stopping, 3 "
        "members.", "",
        "| | gradient boosting (3 members) | MLP 3 x 64 (3 members) | MLP / gradient boosting |",
        "|---|---|---|---|",
        f"| max SIC, median (per seed) | {cell('hgb')} | {cell('mlp')} | "
        f"{np.median([r['mlp'] / r['hgb'] for r in swaps]):.2f} |",
        f"| AUC, median (per seed) | {cell('hgb_auc')} | {cell('mlp_auc')} | |",
    ]  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--classifier-swap", action="store_true",
                        help="no reference run: pyroflows' default flow with its gradient "
                        "boosting and with a reference-shaped MLP")  # fmt: skip
    parser.add_argument("--reference-dir", type=Path, default=None,
                        help="a checkout of HEPML-AnomalyDetection/CATHODE")  # fmt: skip
    parser.add_argument("--reference-commit", default="(commit not given)",
                        help="the checkout's commit, for the report")  # fmt: skip
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--n-test", type=int, default=30_000)
    parser.add_argument("--s-over-b", type=float, default=0.006)
    parser.add_argument("--min-background", type=int, default=50)
    parser.add_argument("--oversampling", type=float, default=4.0)
    parser.add_argument("--epoch-fraction", type=float, default=0.3,
                        help="times the reference's epochs and pyroflows' flow epochs")  # fmt: skip
    parser.add_argument("--flow-budget", type=float, default=600.0)
    parser.add_argument("--work-dir", default=None, help="where the temporary files go")
    parser.add_argument("--out", default="anomaly_reference")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if not 0 < args.epoch_fraction <= 1:
        raise SystemExit("--epoch-fraction must be in (0, 1]")
    if args.seeds > len(bench.DEVELOPMENT["seeds"]):
        raise SystemExit(f"--seeds: at most {len(bench.DEVELOPMENT['seeds'])}")
    args.setting, args.n_extra = bench.DEVELOPMENT, 1000
    torch.set_num_threads(1)
    if args.classifier_swap:
        started = time.time()
        swaps = [classifier_swap(s, args) for s in bench.DEVELOPMENT["seeds"][: args.seeds]]
        text = swap_report(swaps, args, time.time() - started)
        print(text)
        if not args.no_write:
            (RESULTS / f"{args.out}_classifier.md").write_text(text)
            (RESULTS / f"{args.out}_classifier.json").write_text(json.dumps(swaps, indent=1))
        return
    reference = check_reference(args.reference_dir)
    started = time.time()
    runs = [run_seed(reference, s, args) for s in bench.DEVELOPMENT["seeds"][: args.seeds]]
    text = report(runs, args, time.time() - started)
    print(text)
    if not args.no_write:
        (RESULTS / f"{args.out}.md").write_text(text)
        (RESULTS / f"{args.out}.json").write_text(json.dumps(runs, indent=1, default=float))


if __name__ == "__main__":
    main()
