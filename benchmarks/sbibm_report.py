"""The markdown report of ``benchmarks/amortized.py --suite sbibm``: one table per (split,
budget) with the C2ST mean and spread over training seeds per (task, method), the best cell
of each row in bold and pyroflows' standing against the best peer; then training time, time
to draw and draws outside the prior's support; then every row.

``--compare A B`` prints instead the paired comparison of two methods per cell
(:func:`compare`), e.g. ``"pyroflows intervals=logit" "pyroflows intervals=box"``."""

from __future__ import annotations

import numpy as np

PEERS_FIRST = ("pyroflows", "sbi NPE-NSF", "sbi FMPE", "sbi NPSE", "BayesFlow CouplingFlow",
               "BayesFlow FlowMatching")  # fmt: skip


def _groups(rows):
    out = {}
    for r in rows:
        key = (r.get("split", "development"), r["budget"], r["task"], r["method"])
        out.setdefault(key, []).append(r)
    return out


def _cell(g):
    c = np.array([r["c2st"] for r in g])
    spread = f" ± {c.std(ddof=1):.3f}" if len(c) > 1 else ""
    return c.mean(), f"{c.mean():.3f}{spread}"


def _per_observation(g):
    """{observation: C2ST averaged over the seeds of one cell}; {} when a row lacks them."""
    out = {}
    for r in g:
        if "c2st_per_observation" not in r or "observations" not in r:
            return {}
        for i, c in zip(r["observations"], r["c2st_per_observation"], strict=True):
            out.setdefault(i, []).append(c)
    return {i: float(np.mean(c)) for i, c in out.items()}


def verdicts(rows) -> list[dict]:
    """Per (split, budget, task): pyroflows' mean C2ST against the best peer's (lower wins).

    ``difference`` is pyroflows' mean minus the best peer's; ``se`` is the standard error of
    the paired per-observation difference (each observation's C2ST averaged over the seeds
    first), None when the rows carry no per-observation values or fewer than two shared
    observations. ``clear`` is True when ``|difference| > 2 se``.
    """
    groups = _groups(rows)
    out = []
    for split, budget, task in dict.fromkeys(k[:3] for k in groups):
        means = {m: _cell(groups[k])[0] for k in groups if k[:3] == (split, budget, task)
                 for m in [k[3]]}  # fmt: skip
        if "pyroflows" not in means or len(means) < 2:
            continue
        peer = min((m for m in means if m != "pyroflows"), key=means.get)
        diff = means["pyroflows"] - means[peer]
        mine = _per_observation(groups[(split, budget, task, "pyroflows")])
        theirs = _per_observation(groups[(split, budget, task, peer)])
        shared = [i for i in mine if i in theirs]
        se = None
        if len(shared) >= 2:
            d = np.array([mine[i] - theirs[i] for i in shared])
            se = float(d.std(ddof=1) / np.sqrt(len(d)))
        out.append(dict(split=split, budget=budget, task=task, best_peer=peer,
                        pyroflows=means["pyroflows"], peer=means[peer], difference=diff,
                        se=se, clear=se is not None and abs(diff) > 2 * se,
                        verdict="wins" if diff < 0 else "loses"))  # fmt: skip
    return out


def compare(rows, a: str, b: str) -> list[dict]:
    """Per (split, budget, task) where both methods ran: the mean C2ST of ``a`` and of ``b``
    over seeds and observations, and ``b``'s paired difference (``b - a``, each
    observation's C2ST averaged over the seeds first) ± its standard error over the
    observations; ``clear`` when it is more than 2 SE from 0.

    Example:
        >>> row = lambda m, c: dict(task="t", budget=1, method=m, seed=0, c2st=sum(c) / 2,
        ...                         observations=[1, 2], c2st_per_observation=c)
        >>> out = compare([row("A", [0.6, 0.7]), row("B", [0.5, 0.7])], "A", "B")
        >>> round(out[0]["difference"], 3), round(out[0]["se"], 3)
        (-0.05, 0.05)
    """
    groups = _groups(rows)
    out = []
    for split, budget, task in dict.fromkeys(k[:3] for k in groups):
        ga, gb = groups.get((split, budget, task, a)), groups.get((split, budget, task, b))
        if not ga or not gb:
            continue
        pa, pb = _per_observation(ga), _per_observation(gb)
        d = np.array([pb[i] - pa[i] for i in pa if i in pb])
        se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) >= 2 else None
        diff = float(_cell(gb)[0] - _cell(ga)[0])
        out.append(dict(split=split, budget=budget, task=task, a=_cell(ga)[1], b=_cell(gb)[1],
                        mean_a=_cell(ga)[0], mean_b=_cell(gb)[0], difference=diff, se=se,
                        seeds=sorted({r["seed"] for r in ga} & {r["seed"] for r in gb}),
                        clear=se is not None and abs(diff) > 2 * se))  # fmt: skip
    return out


def compare_markdown(rows, a: str, b: str) -> str:
    """:func:`compare` as a markdown table, with the mean over the cells of each split."""
    cells = compare(rows, a, b)
    lines = [f"| split | simulations | task | seeds | {a} | {b} | {b} - {a} (paired) |",
             "|---|---:|---|---|---:|---:|---|"]  # fmt: skip
    for c in cells:
        se = "" if c["se"] is None else f" ± {c['se']:.3f}"
        how = "" if c["se"] is None else (", > 2 SE" if c["clear"] else ", within 2 SE")
        lines.append(f"| {c['split']} | {c['budget']:,} | {c['task']} | {c['seeds']} | "
                     f"{c['a']} | {c['b']} | {c['difference']:+.3f}{se}{how} |")  # fmt: skip
    for split in dict.fromkeys(c["split"] for c in cells):
        mine = [c for c in cells if c["split"] == split]
        lines.append(f"| {split} | | mean of {len(mine)} cells | | "
                     f"{np.mean([c['mean_a'] for c in mine]):.3f} | "
                     f"{np.mean([c['mean_b'] for c in mine]):.3f} | |")  # fmt: skip
    return "\n".join(lines) + "\n"


def markdown(result) -> str:
    rows = result["accuracy"]
    groups = _groups(rows)
    methods = sorted(
        {r["method"] for r in rows}, key=lambda m: PEERS_FIRST.index(m) if m in PEERS_FIRST else 99
    )
    draws = sorted({r.get("draws") for r in rows if r.get("draws")})
    drawn = " or ".join(f"{d:,}" for d in draws) or "(see `draws` in the JSON)"
    lines = [
        "# sbibm: pyroflows' default AmortizedPosterior against sbi and BayesFlow",
        "",
        "Protocol: `benchmarks/amortized.py --suite sbibm` (docstring of "
        "`benchmarks/amortized.py` and `benchmarks/sbibm_tasks.py`). Simulators and priors "
        "written after sbibm 1.1; observations and reference posterior draws from sbibm's "
        "files. Every method gets the same simulations (`torch.manual_seed(budget)`, prior "
        f"then simulator). C2ST: `pyroflows.diagnostics.c2st` (MLP, 5 folds) between {drawn} "
        "posterior draws and as many of sbibm's 10 000 reference draws per observation, "
        "averaged over the observations (1-5 development, 6-10 confirmation); 0.5 is "
        "perfect. Mean over training seeds, ± the sd over seeds when there are several. "
        "pyroflows against the best peer: the mean paired difference over the observations "
        "(each observation's C2ST averaged over seeds) ± its standard error; 'clearly' when "
        "it is more than 2 SE from 0. Every method at its defaults (a time cap where the "
        "time table says so), one thread, niced, on a 2-core machine shared by several "
        "jobs: the load column (1-minute load average, mean of the start and the end of "
        "training) says how much of a core each process got; timings measure the load as "
        "much as the methods. 'held-out SBC warning': cells where pyroflows' fit warned "
        "that its posterior is not calibrated on its held-out simulations.",
        "",
        f"Last command: `{result['command']}`, commit `{result['commit']}`, {result['date']}.",
    ]
    verdict = {(v["split"], v["budget"], v["task"]): v for v in verdicts(rows)}
    for split, budget in sorted(dict.fromkeys(k[:2] for k in groups),
                                key=lambda k: (k[0] != "development", k[1])):  # fmt: skip
        tasks = list(dict.fromkeys(k[2] for k in groups if k[:2] == (split, budget)))
        present = [m for m in methods if any((split, budget, t, m) in groups for t in tasks)]
        seeds = sorted(
            {
                r["seed"]
                for r in rows
                if (r.get("split", "development"), r["budget"]) == (split, budget)
            }
        )
        lines += ["", f"## {split}, {budget:,} simulations: C2ST (seeds {seeds})", "",
                  "| task | " + " | ".join(present) + " | pyroflows vs best peer |",
                  "|---|" + "---:|" * len(present) + "---|"]  # fmt: skip
        wins = losses = 0
        for t in tasks:
            cells = {m: _cell(groups[(split, budget, t, m)]) for m in present
                     if (split, budget, t, m) in groups}  # fmt: skip
            best = min(v[0] for v in cells.values())
            text = [(f"**{cells[m][1]}**" if cells[m][0] == best else cells[m][1])
                    if m in cells else "" for m in present]  # fmt: skip
            v = verdict.get((split, budget, t))
            note = ""
            if v:
                se = f" ± {v['se']:.3f}" if v["se"] is not None else ""
                how = "" if v["se"] is None else (" clearly" if v["clear"] else
                                                  " (within 2 SE)")  # fmt: skip
                note = f"{v['verdict']}{how}: {v['difference']:+.3f}{se} vs {v['best_peer']}"
            wins += bool(v and v["verdict"] == "wins")
            losses += bool(v and v["verdict"] == "loses")
            lines.append(f"| {t} | " + " | ".join(text) + f" | {note} |")
        lines += ["", f"pyroflows has the lowest mean C2ST on {wins} of {wins + losses} "
                  "tasks of this table.", "",
                  "| task | method | train s | load | draw s (one observation) "
                  "| outside prior | epochs | flow kept | held-out SBC warning |",
                  "|---|---|---:|---:|---:|---:|---:|---|---|"]  # fmt: skip
        for t in tasks:
            for m in present:
                g = groups.get((split, budget, t, m))
                if not g:
                    continue
                fam = ", ".join(dict.fromkeys(r.get("family", "") for r in g))
                if g[0].get("candidates"):  # one fit's validation losses: say which
                    whose = f"seed {g[0]['seed']}: " if len(g) > 1 else ""
                    fam += f" ({whose}" + ", ".join(f"{c['flow']} {c['best_loss']:.3f}"
                                                    for c in g[0]["candidates"]) + ")"  # fmt: skip
                warned = [any("CalibrationWarning" in w for w in r.get("fit_warnings", []))
                          for r in g]  # fmt: skip
                capped = " (time-capped)" if any(r.get("time_capped") for r in g) else ""
                load = [r["load_average"] for r in g if r.get("load_average") is not None]
                lines.append(
                    f"| {t} | {m} | {np.mean([r['train_s'] for r in g]):.1f}{capped} | "
                    f"{np.mean(load) if load else float('nan'):.1f} | "
                    f"{np.mean([r['sample_s'] for r in g]):.2f} | "
                    f"{np.mean([r['outside_prior'] for r in g]):.4f} | "
                    f"{np.mean([r['epochs'] for r in g]):.0f} | "
                    f"{fam if m == 'pyroflows' else ''} | "
                    f"{f'{sum(warned)}/{len(g)}' if m == 'pyroflows' else ''} |"
                )
    lines += [
        "",
        "## Every row",
        "",
        "| split | simulations | task | method | seed | C2ST | per observation | train s | load |",
        "|---|---:|---|---|---:|---:|---|---:|---:|",
    ]
    for r in rows:
        per = ", ".join(f"{s:.3f}" for s in r["c2st_per_observation"])
        lines.append(f"| {r.get('split', '')} | {r['budget']:,} | {r['task']} | {r['method']} "
                     f"| {r['seed']} | {r['c2st']:.3f} | {per} | {r['train_s']:.1f} | "
                     f"{r.get('load_average', '')} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv=None):
    """Merge results files (later rows replace earlier ones with the same task, budget,
    method, seed and split) and write ``OUT.json`` and ``OUT.md``."""
    import argparse
    import json
    from pathlib import Path

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, help="path without suffix")
    parser.add_argument("--compare", nargs=2, metavar=("A", "B"),
                        help="print the paired comparison of two methods instead")  # fmt: skip
    args = parser.parse_args(argv)
    if args.compare:
        rows = [r for f in args.files for r in json.loads(f.read_text())["accuracy"]]
        print(compare_markdown(rows, *args.compare), end="")
        return
    if args.out is None:
        parser.error("--out is required (unless --compare)")
    merged, rows = None, {}
    for f in args.files:
        result = json.loads(f.read_text())
        merged = merged or result
        for r in result["accuracy"]:
            rows[(r["task"], r["budget"], r["method"], r["seed"], r.get("split"))] = r
        merged = dict(result, accuracy=list(rows.values()))
    args.out.with_suffix(".json").write_text(json.dumps(merged, indent=1))
    args.out.with_suffix(".md").write_text(markdown(merged))


if __name__ == "__main__":
    main()
