"""Variational inference with flows: the targets of issue 8, measured in one run, as ratios.

1. **Funnel 10-D** (Neal's funnel, ``v ~ N(0, 3)``, ``x_i | v ~ N(0, e^(v/2))``, 9 ``x``'s):
   C2ST accuracy of 5000 guide draws against 5000 exact draws for ``FlowGuide`` (IAF, NSF,
   RealNVP; unit initial scale), Pyro's ``AutoMultivariateNormal`` and ``AutoIAFNormal`` and a
   zuko NSF guide (``zuko.flows.NSF`` inverted so that it samples in one pass, wrapped by
   ``pyro.contrib.zuko.ZukoToPyro``), all with the same 3000 steps, 8 particles and Adam
   schedule (5e-3 with a cosine decay). Target: flow ≤ 0.60 and below the others.
2. **SVI step time** (``Trace_ELBO``, one particle, a ``D``-dimensional Gaussian latent) of
   ``FlowGuide`` against ``AutoIAFNormal`` (both affine IAF layers) and against the zuko NSF guide
   (both spline layers), same layers and hidden sizes, ``D = 10, 50``. Target: ratio ≤ 1. Also
   the hand-written guide ``pyro.sample("z", pf.iaf(D)())`` with the log-density hand-over of
   ``FlowDistribution`` against the same guide re-scoring its draw (the behaviour before it).
3. **Camel integrand** (two Gaussians of ``σ = 0.1/√2`` at ``1/3`` and ``2/3`` on the diagonal
   of ``[0, 1]^D``, integral ≈ 1): ``pf.integrate`` against VEGAS (``vegas`` package: 10
   adaptation iterations discarded + 10 iterations, ``neval = budget / 20`` each) at ``10^6``
   evaluations, ``D = 4, 8, 16``. Target: error ≤ 0.3 × VEGAS's at ``D ≥ 8``.
4. **Distillation** at ``D = 50``: a MAF teacher (5 layers, hidden (128, 128)) trained on a
   50-D Gaussian mixture, its distilled IAF students (a copy of the teacher's networks, and a
   narrow one with hidden (64, 64)): sampling time for 10 000 draws and test log-likelihood.
   Target: speed-up ≥ 20, log-likelihood within 2 %.

5. **Real posteriors** (``--posteriors ...``): every guide on the posteriors of
   ``pyroflows.datasets.posteriors``, two protocols; see ``benchmarks/vi_posteriors.py``, which
   also runs alone and writes ``results/vi_posteriors.{md,json}``.

Run (one thread; ``--quick`` is a < 1 min smoke check that prints only)::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/vi.py            # writes results/vi.{md,json}
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/vi.py --quick
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/vi.py --posteriors --steps 1000  # part 5
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoIAFNormal, AutoMultivariateNormal
from pyro.optim import Adam
from sampling import full_pass_solve  # the textbook MAF sampler (benchmarks/sampling.py)

import pyroflows as pf
from pyroflows.datasets import gaussian_mixture
from pyroflows.diagnostics import c2st
from pyroflows.flows import FlowDistribution
from pyroflows.transforms import MaskedAutoregressive
from pyroflows.vi import FlowGuide, distill, integrate

RESULTS = Path(__file__).parent / "results"


# -- 1. funnel -----------------------------------------------------------------------------------
def funnel():
    v = pyro.sample("v", dist.Normal(0.0, 3.0))
    scale = torch.exp(v / 2).unsqueeze(-1).expand(v.shape + (9,))
    pyro.sample("x", dist.Normal(0.0, scale).to_event(1))


def funnel_exact(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    v = 3.0 * torch.randn(n, 1, generator=g)
    return torch.cat([v, torch.exp(v / 2) * torch.randn(n, 9, generator=g)], -1)


def zuko_guide(dim, layers, hidden, sites):
    """A zuko NSF guide over the packed latent vector, sampling in one pass per layer."""
    import zuko
    from pyro.contrib.zuko import ZukoToPyro

    flow = zuko.flows.NSF(dim, transforms=layers, hidden_features=hidden)
    flow.transform = flow.transform.inv

    def guide(*args, **kwargs):
        pyro.module("zuko_flow", flow)
        latent = pyro.sample("_latent", ZukoToPyro(flow()), infer={"is_auxiliary": True})
        pos = 0
        for name, size in sites:
            value = latent[..., pos] if size == 0 else latent[..., pos : pos + size]
            event = 0 if size == 0 else 1
            pyro.sample(name, dist.Delta(value, event_dim=event))
            pos += max(size, 1)

    guide.flow = flow
    return guide


def _draws(guide, n):
    if isinstance(guide, FlowGuide):
        d = guide.sample_posterior(n)
        return torch.cat([d["v"][:, None], d["x"]], -1)
    if hasattr(guide, "flow"):  # the zuko guide: its latent vector is (v, x)
        return guide.flow().sample((n,))
    pred = pyro.infer.Predictive(funnel, guide=guide, num_samples=n, parallel=True)()
    return torch.cat([pred["v"].reshape(n, 1), pred["x"].reshape(n, 9)], -1)


def bench_funnel(steps, n, lr=5e-3, particles=8, layers=3, hidden=(64, 64)):
    """Every guide: the same SVI loop, Adam from ``lr`` with a cosine decay to 0 over
    ``steps`` (``pyro.optim.CosineAnnealingLR``), 8 vectorised particles. The flow guides start
    at unit scale (``init_scale=1``), as ``AutoIAFNormal`` does (its base is ``N(0, I)``)."""
    exact = funnel_exact(n, seed=1).numpy()

    def flow_guide(family, n_layers):
        return lambda: FlowGuide(
            funnel, flow=family, layers=n_layers, hidden=hidden, init_scale=1.0
        )

    makers = {
        "FlowGuide (iaf)": flow_guide("iaf", layers),
        "FlowGuide (nsf)": flow_guide("nsf", layers),
        "FlowGuide (realnvp)": flow_guide("realnvp", 2 * layers),
        "AutoMultivariateNormal": lambda: AutoMultivariateNormal(funnel),
        "AutoIAFNormal": lambda: AutoIAFNormal(
            funnel, num_transforms=layers, hidden_dim=list(hidden)
        ),
        "zuko NSF": lambda: zuko_guide(10, layers, hidden, [("v", 0), ("x", 9)]),
    }
    rows = []
    for name, make in makers.items():
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        guide = make()
        elbo = Trace_ELBO(num_particles=particles, vectorize_particles=True)
        optim = pyro.optim.CosineAnnealingLR(
            {"optimizer": torch.optim.Adam, "optim_args": {"lr": lr}, "T_max": steps}
        )
        svi = SVI(funnel, guide, optim, elbo)
        start = time.perf_counter()
        for _ in range(steps):
            svi.step()
            optim.step()
        seconds = time.perf_counter() - start
        with torch.no_grad():
            value = -Trace_ELBO(num_particles=2000, vectorize_particles=True).loss(funnel, guide)
            draws = _draws(guide, n).numpy()
        acc = c2st(draws, exact, "mlp", folds=3).accuracy
        rows.append({"guide": name, "c2st": acc, "elbo": value, "train_s": seconds})
        print(
            f"  funnel {name:24s} C2ST {acc:.3f}  ELBO {value:8.3f}  {seconds:6.1f} s", flush=True
        )
    return rows


# -- 2. step time ----------------------------------------------------------------------------------
class _Rescore(FlowDistribution):
    """The behaviour before the hand-over: every log_prob re-inverts the value."""

    def log_prob(self, value):
        self._drawn = None
        return super().log_prob(value)

    def expand(self, batch_shape, _instance=None):
        return _Rescore(self.flow, None, torch.Size(batch_shape))


def _step_ms(model, guide, steps):
    svi = SVI(model, guide, Adam({"lr": 1e-4}), Trace_ELBO())
    for _ in range(5):
        svi.step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        svi.step()
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def bench_step_time(dims, steps, layers=3):
    rows = []
    for d in dims:
        hidden = (max(64, 2 * d),) * 2

        def model(d=d):
            pyro.sample("z", dist.Normal(torch.zeros(d), 1.0).to_event(1))

        guides = {
            "FlowGuide iaf": lambda h=hidden, m=model: FlowGuide(m, "iaf", layers, h),
            "AutoIAFNormal": lambda h=hidden, m=model: AutoIAFNormal(
                m, num_transforms=layers, hidden_dim=list(h)
            ),
            "FlowGuide nsf": lambda h=hidden, m=model: FlowGuide(m, "nsf", layers, h),
            "zuko NSF": lambda h=hidden, d=d: zuko_guide(d, layers, h, [("z", d)]),
        }
        times = {}
        for name, make in guides.items():
            pyro.clear_param_store()
            times[name] = _step_ms(model, make(), steps)
        flow = pf.iaf(d, layers=layers, hidden=hidden)
        for name, cls in (("pf.iaf hand-over", FlowDistribution), ("pf.iaf re-score", _Rescore)):

            def guide(flow=flow, cls=cls):
                pyro.module("f", flow)
                pyro.sample("z", cls(flow))

            pyro.clear_param_store()
            times[name] = _step_ms(model, guide, steps)
        row = {"D": d, **{k: round(v, 2) for k, v in times.items()}}
        row["iaf ratio"] = times["FlowGuide iaf"] / times["AutoIAFNormal"]
        row["nsf ratio"] = times["FlowGuide nsf"] / times["zuko NSF"]
        row["hand-over ratio"] = times["pf.iaf hand-over"] / times["pf.iaf re-score"]
        rows.append(row)
        print(
            f"  step time D={d}: " + ", ".join(f"{k} {v:.2f}" for k, v in row.items()), flush=True
        )
    return rows


# -- 3. camel ------------------------------------------------------------------------------------
SIGMA = 0.1 / math.sqrt(2)


def camel_exact(d):
    from scipy.stats import norm

    return float((norm.cdf(2 / 3 / SIGMA) - norm.cdf(-1 / 3 / SIGMA)) ** d)


def camel_torch(d):
    def f(x):
        a = ((x - 1 / 3) ** 2).sum(-1)
        b = ((x - 2 / 3) ** 2).sum(-1)
        norm = (2 * math.pi * SIGMA**2) ** (-d / 2)
        return 0.5 * norm * (torch.exp(-a / (2 * SIGMA**2)) + torch.exp(-b / (2 * SIGMA**2)))

    return f


def vegas_camel(d, budget, seed=0):
    import vegas

    count = [0]

    @vegas.lbatchintegrand
    def f(x):
        count[0] += len(x)
        a = ((x - 1 / 3) ** 2).sum(-1)
        b = ((x - 2 / 3) ** 2).sum(-1)
        norm = (2 * math.pi * SIGMA**2) ** (-d / 2)
        return 0.5 * norm * (np.exp(-a / (2 * SIGMA**2)) + np.exp(-b / (2 * SIGMA**2)))

    np.random.seed(seed)  # noqa: NPY002 (vegas draws from NumPy's global generator)
    integ = vegas.Integrator(d * [[0, 1]])
    integ(f, nitn=10, neval=budget // 20)  # adaptation, discarded
    r = integ(f, nitn=10, neval=budget // 20)
    return r.mean, r.sdev, count[0]


def bench_camel(dims, budget):
    rows = []
    for d in dims:
        exact = camel_exact(d)
        start = time.perf_counter()
        r = integrate(camel_torch(d), d, budget)
        flow_s = time.perf_counter() - start
        start = time.perf_counter()
        v_mean, v_sd, v_evals = vegas_camel(d, budget)
        vegas_s = time.perf_counter() - start
        row = {
            "D": d, "exact": exact,
            "flow": r.estimate, "flow_err": abs(r.estimate - exact), "flow_se": r.stderr,
            "flow_k": r.pareto_k, "flow_evals": r.num_evals, "flow_s": flow_s,
            "vegas": v_mean, "vegas_err": abs(v_mean - exact), "vegas_se": v_sd,
            "vegas_evals": v_evals, "vegas_s": vegas_s,
        }  # fmt: skip
        row["err ratio"] = row["flow_err"] / row["vegas_err"]
        row["se ratio"] = row["flow_se"] / row["vegas_se"]
        rows.append(row)
        print(
            f"  camel D={d}: flow {r.estimate:.5f} ± {r.stderr:.5f} (k {r.pareto_k:.2f}), "
            f"vegas {v_mean:.5f} ± {v_sd:.5f}, exact {exact:.5f}, "
            f"error ratio {row['err ratio']:.3f}",
            flush=True,
        )
    return rows


# -- 4. distillation -----------------------------------------------------------------------------
def _time_sampling(flow, n, repeats=3):
    best = math.inf
    with torch.no_grad():
        for _ in range(repeats):
            start = time.perf_counter()
            flow.sample((n,))
            best = min(best, time.perf_counter() - start)
    return best


def bench_distill(d, n_train, teacher_epochs, student_epochs, layers=5, hidden=(128, 128),
                  narrow=(64, 64)):  # fmt: skip
    target = gaussian_mixture(dim=d, n_components=8, gap=4.0)
    rng = np.random.default_rng(0)
    x = torch.as_tensor(target.sample(n_train, rng), dtype=torch.float32)
    test = torch.as_tensor(target.sample(5000, np.random.default_rng(1)), dtype=torch.float32)
    teacher = pf.maf(d, layers=layers, hidden=hidden)
    start = time.perf_counter()
    pf.fit(teacher, pf.losses.nll, x, max_epochs=teacher_epochs, lr=1e-3, seed=0,
           progress=False, schedule="cosine")  # fmt: skip
    teacher_s = time.perf_counter() - start
    start = time.perf_counter()
    student = distill(teacher, x, max_epochs=student_epochs, lr=1e-3, seed=0, progress=False,
                      schedule="cosine")  # fmt: skip
    student_s = time.perf_counter() - start
    # a narrower student (same orders, new networks of size `narrow`, trained by the same loss)
    start = time.perf_counter()
    small = distill(teacher, x, hidden=narrow, max_epochs=student_epochs, lr=1e-3, seed=0,
                    progress=False, schedule="cosine")  # fmt: skip
    small_s = time.perf_counter() - start
    with torch.no_grad():
        ll_t = teacher.log_prob(test).mean().item()
        ll_s = student.log_prob(test).mean().item()
        ll_small = small.log_prob(test).mean().item()
        ll_true = float(np.mean(target.log_prob(test.double().numpy())))
    t_teacher = _time_sampling(teacher, 10_000)
    t_student = _time_sampling(student, 10_000)
    t_small = _time_sampling(small, 10_000)
    # the teacher sampled the textbook way (D passes of the whole network per layer, as
    # pyroflows did before MADE.forward_degree and as zuko and nflows do)
    solve = MaskedAutoregressive._solve
    MaskedAutoregressive._solve = full_pass_solve
    try:
        t_full = _time_sampling(teacher, 10_000, repeats=1)
    finally:
        MaskedAutoregressive._solve = solve
    row = {
        "D": d, "teacher_ll": ll_t, "student_ll": ll_s, "true_ll": ll_true,
        "ll_gap_pct": 100 * abs(ll_s - ll_t) / abs(ll_t),
        "teacher_sample_s": t_teacher, "student_sample_s": t_student,
        "speedup": t_teacher / t_student, "teacher_train_s": teacher_s,
        "teacher_full_pass_s": t_full, "speedup_vs_full_pass": t_full / t_student,
        "distill_s": student_s,
        "narrow": list(narrow), "narrow_ll": ll_small,
        "narrow_ll_gap_pct": 100 * abs(ll_small - ll_t) / abs(ll_t),
        "narrow_sample_s": t_small, "narrow_speedup": t_teacher / t_small,
        "narrow_distill_s": small_s,
    }  # fmt: skip
    print(
        f"  distill D={d}: teacher LL {ll_t:.3f}, student LL {ll_s:.3f} "
        f"(gap {row['ll_gap_pct']:.2f} %), true {ll_true:.3f}; sampling 10k: teacher "
        f"{t_teacher:.3f} s, student {t_student:.3f} s, speed-up {row['speedup']:.1f}x; "
        f"narrow student {narrow}: LL {ll_small:.3f} (gap {row['narrow_ll_gap_pct']:.2f} %), "
        f"{t_small:.4f} s, speed-up {row['narrow_speedup']:.1f}x",
        flush=True,
    )
    return row


# -- report --------------------------------------------------------------------------------------
def markdown(res) -> str:
    out = [f"# VI benchmark ({res['date']}, torch {res['torch']}, {res['threads']} thread)\n"]
    if res.get("run_parts") and set(res["run_parts"]) != set(PARTS):
        out.append(
            f"Last run: `benchmarks/vi.py --only {' '.join(res['run_parts'])}` (load "
            f"{res['load'][0]:.1f}); the other sections are from the previous full run.\n"
        )
    out.append("## Funnel 10-D: C2ST against exact draws (target: FlowGuide ≤ 0.60, lowest)\n")
    out.append("Same SVI loop for all: 3000 steps, 8 particles, Adam 5e-3 with cosine decay.\n")
    out.append("| guide | C2ST | ELBO | train s |\n|---|---:|---:|---:|")
    for r in res["funnel"]:
        out.append(f"| {r['guide']} | {r['c2st']:.3f} | {r['elbo']:.3f} | {r['train_s']:.1f} |")
    out.append("\n## SVI step time, ms (target: ratios ≤ 1)\n")
    keys = ["FlowGuide iaf", "AutoIAFNormal", "FlowGuide nsf", "zuko NSF", "pf.iaf hand-over",
            "pf.iaf re-score", "iaf ratio", "nsf ratio", "hand-over ratio"]  # fmt: skip
    out.append("| D | " + " | ".join(keys) + " |\n|---|" + "---:|" * len(keys))
    for r in res["step_time"]:
        out.append(f"| {r['D']} | " + " | ".join(f"{r[k]:.2f}" for k in keys) + " |")
    out.append("\n## Camel integral at 10^6 evaluations (target: error ratio ≤ 0.3 at D ≥ 8)\n")
    out.append("| D | exact | flow | flow SE | k-hat | VEGAS | VEGAS SE | error ratio | SE ratio |")
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in res["camel"]:
        out.append(
            f"| {r['D']} | {r['exact']:.5f} | {r['flow']:.5f} | {r['flow_se']:.5f} | "
            f"{r['flow_k']:.2f} | {r['vegas']:.5f} | {r['vegas_se']:.5f} | "
            f"{r['err ratio']:.3f} | {r['se ratio']:.3f} |"
        )
    r = res["distill"]
    out.append("\n## Distillation, D = 50 (target: speed-up ≥ 20, LL gap ≤ 2 %)\n")
    out.append("| student | teacher LL | student LL | true LL | gap % | teacher 10k draws s | "
               "student s | speed-up | teacher, full passes s | speed-up vs full passes |\n"
               "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")  # fmt: skip
    full = r.get("teacher_full_pass_s")
    students = [("copy of the teacher (128, 128)", r["student_ll"], r["ll_gap_pct"],
                 r["student_sample_s"], r["speedup"])]  # fmt: skip
    if "narrow" in r:
        students.append((f"narrow {tuple(r['narrow'])}", r["narrow_ll"], r["narrow_ll_gap_pct"],
                         r["narrow_sample_s"], r["narrow_speedup"]))  # fmt: skip
    for name, ll, gap, secs, speedup in students:
        full_s = "" if full is None else f"{full:.3f}"
        full_x = "" if full is None else f"{full / secs:.0f}"
        out.append(
            f"| {name} | {r['teacher_ll']:.3f} | {ll:.3f} | {r['true_ll']:.3f} | {gap:.2f} | "
            f"{r['teacher_sample_s']:.3f} | {secs:.4f} | {speedup:.1f} | {full_s} | {full_x} |"
        )
    return "\n".join(out) + "\n"


PARTS = ("funnel", "step_time", "camel", "distill")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run (< 1 min), no files")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--only", nargs="+", choices=PARTS, default=list(PARTS),
        help="run these parts; the others keep their rows from the existing vi.json",
    )  # fmt: skip
    parser.add_argument(
        "--posteriors", nargs=argparse.REMAINDER, default=None,
        help="run benchmarks/vi_posteriors.py with the arguments that follow, and nothing else",
    )  # fmt: skip
    args = parser.parse_args()
    if args.posteriors is not None:
        import vi_posteriors

        vi_posteriors.main(args.posteriors)
        return
    torch.set_num_threads(args.threads)
    q = args.quick
    res = {
        "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__, "pyro": pyro.__version__,
        "threads": args.threads, "machine": platform.machine(), "quick": q,
        "load": list(__import__("os").getloadavg()),
    }  # fmt: skip
    parts = {
        "funnel": lambda: bench_funnel(steps=100 if q else 3000, n=500 if q else 5000),
        "step_time": lambda: bench_step_time([10] if q else [10, 50], steps=10 if q else 100),
        "camel": lambda: bench_camel([4] if q else [4, 8, 16], 50_000 if q else 1_000_000),
        "distill": lambda: bench_distill(
            10 if q else 50, 2000 if q else 20000, 2 if q else 40, 2 if q else 40
        ),
    }
    previous = args.out / "vi.json"
    if set(args.only) != set(PARTS) and previous.exists():
        res = {**json.loads(previous.read_text()), **res}
    res["run_parts"] = list(args.only)
    for part in args.only:
        print(part, flush=True)
        res[part] = parts[part]()
        res.setdefault("parts_dates", {})[part] = res["date"]
    if q:
        return
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "vi.json").write_text(json.dumps(res, indent=1))
    (args.out / "vi.md").write_text(markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()
