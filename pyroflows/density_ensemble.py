"""An ensemble of density estimators, and the spread of their ``log p(x)`` as an error bar.

``DensityEstimator(ensemble=k)`` fits ``k`` members with the same settings on seeds
``random_state, random_state + 1, ...`` (so each has its own validation split,
initialisation, shuffling and dequantisation noise) and, with a ``time_budget``, a ``k``-th
of it each. The ensemble's density is the mean of the members' densities,
``log p(x) = log (1/k) sum_m p_m(x)`` (:func:`ensemble_log_prob`), a proper density (and, with
discrete columns, a proper mass) that is never worse in expectation than a member's on
held-out rows (Jensen). Its error bar is the standard deviation of the members'
``log p_m(x)`` across members (``ddof=1``), multiplied by :data:`SD_FACTOR`: a measure of how
much ``log p(x)`` changes from one fit to another on this data, not of the shared bias of the
flow family. On six densities known exactly (``benchmarks/ensemble_calibration.py``, five
members, 2 000 rows) the true ``log p`` lay within two such standard deviations for 35-85 % of
the test rows, less where the members share a large bias; the factor that would have reached
90 % ranged from 1.2 to 12 across targets, so none is applied (``SD_FACTOR = 1``). Draws come
from the mixture: each row from a member chosen uniformly at random.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from sklearn.utils import check_random_state

from pyroflows.tabular import log_mean_exp

__all__ = ["SD_FACTOR", "ensemble_log_prob", "ensemble_sample", "fit_members"]

#: the factor on the members' standard deviation that ``score_samples(return_std=True)``
#: reports: 1, no inflation (``benchmarks/results/ensemble_calibration.md``: the factor that
#: reaches 90 % coverage varies from 1.2 to 12 across known densities)
SD_FACTOR = 1.0


def fit_members(est: Any, X: Any, X_val: Any, runs: dict[str, Any]) -> list[Any]:
    """Fit the ``est.ensemble`` members of ``est`` (a ``DensityEstimator``) and return them,
    fitted; ``est`` itself is not changed. Checkpoints are refused (one file per member is
    not offered)."""
    if runs.get("checkpoint") is not None or runs.get("resume") is not None:
        raise ValueError(
            f"checkpoint/resume are not available with ensemble={est.ensemble}: fit without "
            "them, or fit the members one by one"
        )
    params = est.get_params(deep=False) | {"ensemble": 1}
    if est.time_budget is not None:
        params["time_budget"] = est.time_budget / est.ensemble
    members = []
    for m in range(est.ensemble):
        seed = None if est.random_state is None else int(est.random_state) + m
        members.append(type(est)(**params | {"random_state": seed}).fit(X, X_val))
    return members


def ensemble_log_prob(members: list[Any], X: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(log p, sd)`` of the rows of ``X``: the log of the mean of the members' densities, and
    :data:`SD_FACTOR` times the standard deviation of the members' ``log p_m(x)`` (``inf``
    where a member gives ``-inf``). The caller checks the feature names of ``X`` (the
    members' own warnings about them are silenced)."""
    with warnings.catch_warnings():  # the ensemble has checked the names: one warning, not k
        warnings.filterwarnings("ignore", message=".*feature names", category=UserWarning)
        scores = np.stack([m.score_samples(X) for m in members])
    log_p = log_mean_exp(scores, axis=0)
    finite = np.isfinite(scores).all(axis=0)
    safe = np.where(np.isfinite(scores), scores, 0.0)
    sd = np.where(finite, SD_FACTOR * safe.std(axis=0, ddof=1), np.inf)
    return log_p, sd


def ensemble_sample(members: list[Any], n: int, random_state: Any) -> Any:
    """``n`` draws of the mixture of the members: how many from each is multinomial with equal
    weights, and the rows are shuffled (an array, or a DataFrame when the members return
    one)."""
    rng = check_random_state(random_state)
    counts = rng.multinomial(n, np.full(len(members), 1.0 / len(members)))
    parts = [
        m.sample(int(c), random_state=int(rng.randint(2**31 - 1)))
        for m, c in zip(members, counts, strict=True)
        if c > 0
    ]
    order = rng.permutation(n)
    if hasattr(parts[0], "iloc"):
        import pandas as pd

        return pd.concat(parts, ignore_index=True).iloc[order].reset_index(drop=True)
    return np.concatenate(parts)[order]
