"""Build the ``.npz`` files of ``pyroflows.datasets.posteriors`` from posteriordb.

Reads posteriordb's repository (a bare git mirror, ``--repo``): each posterior's data and its
reference draws (10 chains x 1000 draws of long Stan runs), keeps 2000 draws chosen at random
(seed 0), maps them to the Pyro port's sites in their natural (constrained) parameterisation and
writes ``data_<argument>`` and ``ref_<site>`` arrays (float32) to
``pyroflows/datasets/posteriors/data/<name>.npz``. The surgical model (posteriordb's data, this
package's hierarchical model) has no posteriordb reference: its draws are independent draws by
numerical integration on grids (:func:`surgical_draws`), in both parameterisations.

Run::

    python benchmarks/build_posteriors.py --repo /work/.mirror/stan-dev+posteriordb/repo
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import zipfile
from pathlib import Path

import numpy as np

OUT = Path(__file__).parent.parent / "pyroflows" / "datasets" / "posteriors" / "data"
KEEP = 2000
DB = "posterior_database"


def _git_zip_json(repo: Path, path: str):
    raw = subprocess.run(
        ["git", "-C", str(repo), "show", f"HEAD:{path}"], capture_output=True, check=True
    ).stdout
    with zipfile.ZipFile(io.BytesIO(raw)) as z:
        return json.loads(z.read(z.namelist()[0]))


def _read(repo: Path, name: str) -> tuple[dict, dict[str, np.ndarray]]:
    post = json.loads(
        subprocess.run(
            ["git", "-C", str(repo), "show", f"HEAD:{DB}/posteriors/{name}.json"],
            capture_output=True, check=True,
        ).stdout
    )  # fmt: skip
    data = _git_zip_json(repo, f"{DB}/data/data/{post['data_name']}.json.zip")
    chains = _git_zip_json(repo, f"{DB}/reference_posteriors/draws/draws/{name}.json.zip")
    draws = {k: np.concatenate([np.asarray(c[k], float) for c in chains]) for k in chains[0]}
    idx = np.sort(np.random.default_rng(0).choice(len(next(iter(draws.values()))), KEEP, False))
    return data, {k: v[idx] for k, v in draws.items()}


def _vec(draws: dict, stem: str) -> np.ndarray:
    cols = sorted(
        (k for k in draws if k.startswith(stem + "[")), key=lambda k: int(k[len(stem) + 1 : -1])
    )
    return np.stack([draws[k] for k in cols], -1)


def _regression(data, draws, columns, y):
    n = int(data["N"])
    X = np.stack([np.ones(n) if isinstance(c, int) else np.asarray(c, float) for c in columns], -1)
    return {"X": X, "y": np.asarray(y, float)}, {
        "beta": _vec(draws, "beta"),
        "sigma": draws["sigma"],
    }


def _earnings(d, r):
    return _regression(d, r, [1, d["height"]], d["earn"])


def _logearn_interaction(d, r):
    h, m = np.asarray(d["height"]), np.asarray(d["male"])
    return _regression(d, r, [1, h, m, h * m], np.log(d["earn"]))


def _kidiq_momhsiq(d, r):
    return _regression(d, r, [1, d["mom_hs"], d["mom_iq"]], d["kid_score"])


def _kidiq_interaction(d, r):
    hs, iq = np.asarray(d["mom_hs"], float), np.asarray(d["mom_iq"], float)
    return _regression(d, r, [1, hs, iq, hs * iq], d["kid_score"])


def _mesquite(d, r):
    vol = np.log(np.asarray(d["diam1"]) * np.asarray(d["diam2"]) * np.asarray(d["canopy_height"]))
    return _regression(d, r, [1, vol], np.log(d["weight"]))


def _nes(d, r):
    age = np.asarray(d["age_discrete"])
    cols = [1, d["real_ideo"], d["race_adj"], age == 2, age == 3, age == 4, d["educ1"],
            d["gender"], d["income"]]  # fmt: skip
    return _regression(d, r, [c if isinstance(c, int) else np.asarray(c, float) for c in cols],
                       d["partyid7"])  # fmt: skip


def _kilpisjarvi(d, r):
    data = {
        "X": np.stack([np.ones(d["N"]), np.asarray(d["x"], float)], -1),
        "y": np.asarray(d["y"]),
    }
    data["beta_loc"] = np.array([d["pmualpha"], d["pmubeta"]], float)
    data["beta_scale"] = np.array([d["psalpha"], d["psbeta"]], float)
    return data, {"beta": np.stack([r["alpha"], r["beta"]], -1), "sigma": r["sigma"]}


def _blr(d, r):
    return {"X": np.asarray(d["X"], float), "y": np.asarray(d["y"], float)}, {
        "beta": _vec(r, "beta"), "sigma": r["sigma"]}  # fmt: skip


def _diamonds(d, r):
    X = np.asarray(d["X"], float)[:, 1:]
    data = {"Xc": X - X.mean(0), "y": np.asarray(d["Y"], float)}
    return data, {"b": _vec(r, "b"), "Intercept": r["Intercept"], "sigma": r["sigma"]}


def _arma(d, r):
    return {"y": np.asarray(d["y"], float)}, {k: r[k] for k in ("mu", "phi", "theta", "sigma")}


def _ark(d, r):
    y, k = np.asarray(d["y"], float), int(d["K"])
    lags = np.stack([y[k - j - 1 : len(y) - j - 1] for j in range(k)], -1)
    draws = {"alpha": r["alpha"], "beta": _vec(r, "beta"), "sigma": r["sigma"]}
    return {"y": y[k:], "lags": lags}, draws


def _garch(d, r):
    draws = {k: r[k] for k in ("mu", "alpha0", "alpha1")}
    draws["beta1_frac"] = r["beta1"] / (1 - r["alpha1"])
    return {"y": np.asarray(d["y"], float), "sigma1": np.asarray(d["sigma1"], float)}, draws


def _hmm(d, r):
    draws = {"theta1": _vec(r, "theta1"), "theta2": _vec(r, "theta2"), "mu": _vec(r, "mu")}
    return {"y": np.asarray(d["y"], float)}, draws


def _gp_regr(d, r):
    data = {"x": np.asarray(d["x"], float), "y": np.asarray(d["y"], float)}
    return data, {k: r[k] for k in ("rho", "alpha", "sigma")}


def _gp_pois(d, r):
    x = np.asarray(d["x"], float)
    f = _vec(r, "f")
    cov = r["alpha"][:, None, None] ** 2 * np.exp(
        -((x[:, None] - x[None, :]) ** 2) / (2 * r["rho"][:, None, None] ** 2)
    )
    chol = np.linalg.cholesky(cov + 1e-10 * np.eye(len(x)))
    f_tilde = np.linalg.solve(chol, f[..., None])[..., 0]
    data = {"x": x, "k": np.asarray(d["k"], float)}
    return data, {"rho": r["rho"], "alpha": r["alpha"], "f_tilde": f_tilde}


def _eight_noncentered(d, r):
    theta = _vec(r, "theta")
    eta = (theta - r["mu"][:, None]) / r["tau"][:, None]
    data = {"y": np.asarray(d["y"], float), "sigma": np.asarray(d["sigma"], float)}
    return data, {"theta_trans": eta, "mu": r["mu"], "tau": r["tau"]}


def _gauss_mix(d, r):
    draws = {"mu": _vec(r, "mu"), "sigma": _vec(r, "sigma"), "theta": r["theta"]}
    return {"y": np.asarray(d["y"], float)}, draws


CONVERT = {
    "earnings-earn_height": _earnings,
    "earnings-logearn_interaction": _logearn_interaction,
    "kidiq-kidscore_momhsiq": _kidiq_momhsiq,
    "mesquite-logmesquite_logvolume": _mesquite,
    "nes1972-nes": _nes,
    "kilpisjarvi_mod-kilpisjarvi": _kilpisjarvi,
    "sblri-blr": _blr,
    "arma-arma11": _arma,
    "gp_pois_regr-gp_regr": _gp_regr,
    "hmm_example-hmm_example": _hmm,
    "eight_schools-eight_schools_noncentered": _eight_noncentered,
    "diamonds-diamonds": _diamonds,
    "gp_pois_regr-gp_pois_regr": _gp_pois,
    "arK-arK": _ark,
    "garch-garch11": _garch,
    "low_dim_gauss_mix-low_dim_gauss_mix": _gauss_mix,
    "sblrc-blr": _blr,
    "kidiq-kidscore_interaction": _kidiq_interaction,
}


def _save(name: str, data: dict, draws: dict) -> None:
    arrays = {f"data_{k}": np.asarray(v, np.float32) for k, v in data.items()}
    arrays |= {f"ref_{k}": np.asarray(v, np.float32) for k, v in draws.items()}
    np.savez_compressed(OUT / f"{name}.npz", **arrays)
    print(name, {k: v.shape for k, v in arrays.items()})


def _log_lik_grid(b: np.ndarray, n: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Binomial log-likelihood of each hospital at log-odds ``b`` (grid), up to a constant."""
    return r * b - n * np.logaddexp(0.0, b)


def _log_marginal(mu_g, sig, n, r, eta_g) -> np.ndarray:
    """``log p(r | mu, sigma)`` on the grid, each hospital's ``eta`` summed out on ``eta_g``."""
    log_n = -0.5 * eta_g**2
    out = np.empty((len(mu_g), len(sig)))
    for i, mu in enumerate(mu_g):
        b = mu + sig[:, None, None] * eta_g[None, :, None]  # (sigma, eta, 1)
        joint = _log_lik_grid(b, n, r) + log_n[None, :, None]  # (sigma, eta, 12)
        peak = joint.max(1, keepdims=True)
        out[i] = (np.log(np.exp(joint - peak).sum(1)) + peak[:, 0]).sum(-1)
    return out


def surgical_draws(n: np.ndarray, r: np.ndarray, num: int, seed: int = 0) -> dict:
    """Independent draws of the surgical posterior by numerical integration on grids:
    ``p(mu, log sigma | r)`` on a 200 x 200 grid (``mu`` in [-4.5, -0.5], ``log sigma`` in
    [-7, 1]) with each hospital's standardised effect ``eta`` summed out on 400 points of
    [-6, 6]; then ``eta_j | mu, sigma, r_j`` by inverse CDF on 2000 points of [-7, 7]; uniform
    jitter within the cells."""
    from pyroflows.datasets.posteriors.hierarchical import SURGICAL_MU, SURGICAL_SIGMA

    rng = np.random.default_rng(seed)
    mu_g, ls_g = np.linspace(-4.5, -0.5, 200), np.linspace(-7.0, 1.0, 200)
    sig = np.exp(ls_g)
    m0, s0 = SURGICAL_MU
    log_hyper = (-0.5 * ((mu_g - m0) / s0)[:, None] ** 2
                 - 0.5 * (sig / SURGICAL_SIGMA)[None] ** 2 + ls_g[None])  # fmt: skip
    post = _log_marginal(mu_g, sig, n, r, np.linspace(-6, 6, 400)) + log_hyper
    w = np.exp(post - post.max()).ravel()
    cell = rng.choice(w.size, num, p=w / w.sum())
    dm, dl = mu_g[1] - mu_g[0], ls_g[1] - ls_g[0]
    mu = mu_g[cell // len(ls_g)] + dm * (rng.random(num) - 0.5)
    sigma = np.exp(ls_g[cell % len(ls_g)] + dl * (rng.random(num) - 0.5))
    fine = np.linspace(-7, 7, 2000)
    b = mu[:, None, None] + sigma[:, None, None] * fine[None, :, None]  # (num, 2000, 1)
    logp = _log_lik_grid(b, n, r) - 0.5 * fine[None, :, None] ** 2  # (num, 2000, 12)
    cdf = np.cumsum(np.exp(logp - logp.max(1, keepdims=True)), 1)
    idx = (cdf < rng.random((num, 1, len(n))) * cdf[:, -1:, :]).sum(1)
    eta = fine[idx] + (fine[1] - fine[0]) * (rng.random(idx.shape) - 0.5)
    return {"mu": mu, "sigma": sigma, "eta": eta}


def _surgical(repo: Path) -> None:
    data = _git_zip_json(repo, f"{DB}/data/data/surgical_data.json.zip")
    n, r = np.asarray(data["n"], float), np.asarray(data["r"], float)
    c = surgical_draws(n, r, KEEP)
    b = c["mu"][:, None] + c["sigma"][:, None] * c["eta"]
    counts = {"n": n, "r": r}
    _save("surgical-noncentered", counts, c)
    _save("surgical-centered", counts, {"mu": c["mu"], "sigma": c["sigma"], "b": b})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repo", type=Path, required=True)
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    for name, convert in CONVERT.items():
        _save(name, *convert(*_read(args.repo, name)))
    _surgical(args.repo)


if __name__ == "__main__":
    main()
