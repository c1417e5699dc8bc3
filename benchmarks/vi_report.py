"""Tables for ``benchmarks/vi_posteriors.py``: one row per (posterior, guide), a summary."""

from __future__ import annotations

import math

import numpy as np

PROTOCOLS = {
    "a": "(a) one SVI loop for every guide: Trace_ELBO, {steps} steps, {particles} vectorised "
    "particles, Adam {lr:g} with a linear warm-up over 5 % of the steps and a cosine decay to "
    "{lr_min:g}, gradient norm clipped at 10, seed {seed}; every guide at its library's default "
    "size (BNAF: 2 block-autoregressive layers; zuko NSF: 3 transforms, hidden (64, 64)); "
    "FlowGuide and the Gaussian guides start at the prior median (for a flat prior: 0 in the "
    "unconstrained space), the other flows at their base N(0, I).",
    "b": "(b) each library's recommended way at equal wall-clock: FlowGuide(model).fit() "
    "defaults set the budget T; Pyro autoguides run SVI with Adam(lr=0.01) and one particle "
    "until T; NUTS runs for about T (warm-up = samples, sized by a 10-iteration pilot), "
    "stopped at a hard cap of 600 s (pilot included) with its draws so far; a NUTS run with "
    "no draws at the cap is a failure.",
}
METRICS = (
    "C2ST of {draws} draws vs the reference (unconstrained, standardised; MLP, 3 folds; "
    "0.5 ideal), largest |mean error| and |sd error| of a coordinate in reference sds, final "
    "ELBO (500 particles), PSIS k-hat (1000 particles), training seconds."
)


def _f(x, spec=".3f"):
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def print_row(r: dict) -> None:
    err = f"  [{r.get('error') or r.get('note')}]" if r.get("error") or r.get("note") else ""
    print(f"  {r['posterior']:38s} {r['guide']:22s} C2ST {_f(r['c2st'])}  mean err "
          f"{_f(r['mean_err'], '.2f')}  sd err {_f(r['sd_err'], '.2f')}  ELBO "
          f"{_f(r['elbo'], '.2f')}  k {_f(r['k_hat'], '.2f')}  {r['seconds']:.1f} s{err}",
          flush=True)  # fmt: skip


def _table(rows: list[dict]) -> list[str]:
    out = ["| posterior | guide | C2ST | mean err | sd err | ELBO | k-hat | s |",
           "|---|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in rows:
        best = r.get("best") and "**" or ""
        note = " (failed)" if r.get("error") else f" ({r['note']})" if r.get("note") else ""
        cells = [f"{r['guide']}{note}", f"{best}{_f(r['c2st'])}{best}", _f(r["mean_err"], ".2f"),
                 _f(r["sd_err"], ".2f"), _f(r["elbo"], ".2f"), _f(r["k_hat"], ".2f"),
                 f"{r['seconds']:.1f}"]  # fmt: skip
        out.append(f"| {r['posterior']} | " + " | ".join(cells) + " |")
    return out


def summary(rows: list[dict]) -> list[str]:
    """Mean C2ST per guide and how often each guide is best (failures count as C2ST 1)."""
    guides = list(dict.fromkeys(r["guide"] for r in rows))
    posts = list(dict.fromkeys(r["posterior"] for r in rows))
    acc = {(r["posterior"], r["guide"]): (1.0 if math.isnan(r["c2st"]) else r["c2st"])
           for r in rows}  # fmt: skip
    wins = {g: 0 for g in guides}
    for p in posts:
        best = min(acc[(p, g)] for g in guides if (p, g) in acc)
        for g in guides:
            if acc.get((p, g)) == best:
                wins[g] += 1
    out = ["| guide | mean C2ST | best (ties count) | mean s |", "|---|---:|---:|---:|"]
    for g in sorted(guides, key=lambda g: np.mean([acc[(p, g)] for p in posts if (p, g) in acc])):
        vals = [acc[(p, g)] for p in posts if (p, g) in acc]
        secs = np.mean([r["seconds"] for r in rows if r["guide"] == g])
        out.append(f"| {g} | {np.mean(vals):.3f} | {wins[g]} of {len(posts)} | {secs:.1f} |")
    return out


def _mark_best(rows: list[dict]) -> None:
    by_post: dict[str, list[dict]] = {}
    for r in rows:
        by_post.setdefault(r["posterior"], []).append(r)
    for group in by_post.values():
        vals = [r["c2st"] for r in group if not math.isnan(r["c2st"])]
        for r in group:
            r["best"] = bool(vals) and r["c2st"] == min(vals)


def markdown(res: dict) -> str:
    cfg = res["config"]
    head = f"# Guides on real posteriors: {res['split']} split ({res['date']}, torch "
    head += f"{res['torch']}, pyro {res['pyro']}, 1 thread, load {res['load'][0]:.1f})\n"
    out = [head]
    for proto in ("a", "b"):
        rows = [dict(r) for r in res["rows"] if r["protocol"] == proto]
        if not rows:
            continue
        _mark_best(rows)
        posts = list(dict.fromkeys(r["posterior"] for r in rows))
        guides = list(dict.fromkeys(r["guide"] for r in rows))
        out.append(f"Ran {len(posts)} of the {res.get('split_size', '?')} posteriors of the "
                   f"split, {len(guides)} guides: {', '.join(guides)}.\n")  # fmt: skip
        out += [f"## Protocol {PROTOCOLS[proto].format(**cfg)}\n", METRICS.format(**cfg) + "\n"]
        out += ["### Summary (failures count as C2ST 1)\n", *summary(rows), ""]
        out += ["### Per posterior (best C2ST in bold)\n", *_table(rows), ""]
    return "\n".join(out) + "\n"
