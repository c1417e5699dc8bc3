"""DiscFlow: a flow trained by likelihood with each training row weighted by a discriminator's
verdict (Butter et al., "Generative networks for precision enthusiasts", arXiv:2110.13632).

:func:`discflow` first fits a :class:`~pyroflows.density.DensityEstimator` by plain likelihood
(or, with ``warm_start=True``, starts from a copy of one already fitted: the paper's use, a
precision step on a flow that is nearly right), then alternates for ``rounds`` rounds:

1. draw rows from the flow and train a classifier (:class:`pyroflows.classify.Classifier`) to
   tell the data (label 1) from the draws (label 0); every data row is scored out of fold
   (:func:`pyroflows.classify.out_of_fold_proba`), so no row is weighted by a classifier that
   saw it;
2. turn the probabilities into the density ratio ``w = D / (1 - D) * n_draws / n_data``, an
   estimate of ``p_data(x) / p_flow(x)`` (Neyman-Pearson), bounded to
   ``[1 / max_weight, max_weight]``;
3. continue training the flow on the data with the weighted likelihood loss
   (:func:`pyroflows.train.fit` with ``sample_weight = w ** alpha``), the exponent ``alpha``
   rising linearly from ``power / rounds`` to ``power`` over the rounds.

With ``reverse = lam > 0`` every training step of a round also draws ``reverse_draws`` rows
from the current flow and adds ``lam`` times a score-function estimate of the gradient of
``KL(q || p)`` on them (:class:`ReverseTerm`): drawn rows where ``log p / q`` is below its mean
over the draws have their density pushed down. The ratio at a fresh draw is the round's
discriminator's (fitted on all the round's rows) times the flow of the round over the current
flow, ``log p / q_now = log w_round + log q_round - log q_now``, so it follows the flow
within a round. This is the only term that acts where the flow puts mass and the data has
none: the weights above multiply the likelihood of data rows, so they reach a region without
data rows only through the normalisation.

With ``log_target`` (a target with a known log-density, for studies) the exact ratio
``p / q`` replaces the discriminator everywhere, which separates the method from the noise of
its weights.

The direction matters: rows where the flow puts too little mass have ``w > 1`` and weigh
more, so the flow moves mass towards them. For a fixed ``w`` the weighted loss is minimised by
``q ∝ p * w^alpha``; with ``q`` the flow of the previous round, ``w = p / q`` and ``alpha = 1``
that is ``p^2 / q`` (an over-correction that the limited epochs of a round damp), with
``alpha < 1`` a step from ``q`` towards ``p``.

The result (:class:`DiscFlow`) holds the fitted estimator, a final discriminator trained
against fresh draws of the final flow (:meth:`DiscFlow.weights` gives its ratio for new
draws), a report of every round, and :meth:`DiscFlow.reweight`, the calibrated, out-of-fold
classifier reweighting of draws (:func:`pyroflows.reweight`).

Measured (``benchmarks/precision.py``, a sharp ring with a narrow central peak in 2-D and a
small MAF; ``benchmarks/precision_capable.py``, the same target with the default spline flow
fitted to convergence and refined with ``warm_start=True``): see
``benchmarks/results/precision.md``, ``benchmarks/results/precision_capable.md`` and
docs/limits.md.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from sklearn.base import clone
from sklearn.utils.validation import _get_feature_names
from torch import Tensor, nn

from pyroflows.classify import Classifier, out_of_fold_proba
from pyroflows.density import DensityEstimator
from pyroflows.losses import nll
from pyroflows.reweight import Reweighting, reweight
from pyroflows.train import fit
from pyroflows.train.weights import effective_sample_size
from pyroflows.validation import check_data, flag, positive_int

__all__ = ["DiscFlow", "DiscFlowRound", "ReverseTerm", "discflow"]

_P_FLOOR = 1e-6  # probabilities kept in [_P_FLOOR, 1 - _P_FLOOR] before the log-odds


@dataclass(frozen=True)
class DiscFlowRound:
    """One round of :func:`discflow`.

    Attributes:
        alpha: the exponent of the weights in this round.
        auc: the out-of-fold ROC AUC of the round's discriminator, data vs draws, before the
            round's training (0.5: it cannot tell them apart); NaN with ``log_target``.
        ess_fraction: Kish effective sample size / n of the training weights ``w ** alpha``.
        fraction_capped: share of data rows whose ratio hit a bound of ``max_weight``.
        train_loss: the last epoch's weighted training loss (standardised units).
        seconds: time of the round (drawing, discriminating, training).
    """

    alpha: float
    auc: float
    ess_fraction: float
    fraction_capped: float
    train_loss: float
    seconds: float


@dataclass
class DiscFlow:
    """Outcome of :func:`discflow`: ``estimator`` (the fitted generator), ``classifier`` (a
    discriminator between the data and draws of the final flow), ``rounds`` (one
    :class:`DiscFlowRound` each), ``seconds`` (the whole recipe) and ``reference`` (the
    training rows, the reference of :meth:`reweight`)."""

    estimator: DensityEstimator
    classifier: Classifier
    rounds: list[DiscFlowRound]
    seconds: float
    prior: float  # log(n_draws / n_data) of the final discriminator
    reference: np.ndarray = field(repr=False)

    def weights(self, draws: Any, max_weight: float = 100.0) -> np.ndarray:
        """The final discriminator's ratio ``p_data / p_flow`` at ``draws`` (rows it has not
        seen, e.g. fresh samples of the estimator), capped at ``max_weight``."""
        if not (isinstance(max_weight, (int, float)) and max_weight > 0):
            raise ValueError(f"max_weight must be a number > 0, got {max_weight!r}")
        draws = check_data(draws, self.reference.shape[1], name="draws")
        p = np.clip(self.classifier.predict_proba(draws), _P_FLOOR, 1 - _P_FLOOR)
        return np.minimum(np.exp(np.log(p) - np.log1p(-p) + self.prior), max_weight)

    def reweight(
        self, n: int, random_state: int = 0, **options: Any
    ) -> tuple[np.ndarray, Reweighting]:
        """``n`` draws of the estimator and their classifier weights against the training
        rows (:func:`pyroflows.reweight`, out of fold and calibrated; ``options`` are its)."""
        draws = self.estimator.sample(positive_int("n", n), random_state=random_state)
        return draws, reweight(draws, self.reference, random_state=random_state, **options)


def _log_ratio(
    est: DensityEstimator, X: np.ndarray, classifier: Classifier, n_draws: int, folds: int,
    seed: int,
) -> tuple[np.ndarray, float]:  # fmt: skip
    """Out-of-fold ``log p_data / p_flow`` at the rows of ``X``, and the discriminator's AUC."""
    from sklearn.metrics import roc_auc_score

    draws = est.sample(n_draws, random_state=seed)
    both = np.concatenate([X, draws])
    y = np.r_[np.ones(len(X)), np.zeros(n_draws)]
    proba = out_of_fold_proba(classifier, both, y, folds=folds, random_state=seed)
    p = np.clip(proba[: len(X)], _P_FLOOR, 1 - _P_FLOOR)
    log_w = np.log(p) - np.log1p(-p) + math.log(n_draws / len(X))
    return log_w, float(roc_auc_score(y, proba))


class ReverseTerm:
    """The weighted likelihood of the data plus ``lam`` times a score-function estimate of
    ``KL(q || p)`` on ``draws`` fresh rows of the model, a loss for :func:`pyroflows.train.fit`.

    Each call draws ``x ~ q`` (without gradients), computes ``c = log p(x) - log q(x)`` with
    ``log_p`` (a callable on latent rows, returning the target's log-density in the same
    space), bounds it to ``[low, high]`` and centres it on its mean over the draws (the
    baseline), and returns ``nll(model, batch, weight) - lam * mean(c * log q(x))``. The
    gradient of the second term is an unbiased estimate of ``lam * grad KL(q || p)`` up to
    the bounds: rows where the model puts more mass than the target (``c`` below its mean) have
    their density pushed down, whether or not a data row lies there. The bounds need not be
    symmetric: over-produced regions are drawn often (a deep ``low`` costs little variance),
    under-produced ones rarely (a large ``high`` makes a few draws dominate a step).

    Args:
        log_p: latent rows ``(m, D)`` -> target log-density ``(m,)`` (no gradient needed).
        lam: the factor of the reverse term (> 0).
        draws: fresh draws per step.
        low, high: bounds of ``log p / q`` (``low < high``).
    """

    def __init__(
        self, log_p: Callable[[Tensor], Tensor], lam: float, draws: int, low: float, high: float
    ):
        if not low < high:
            raise ValueError(f"the bounds must satisfy low < high, got {low} and {high}")
        self.log_p, self.lam, self.draws = log_p, float(lam), int(draws)
        self.low, self.high = float(low), float(high)

    def __call__(self, model: nn.Module, batch: tuple[Tensor, ...], weight: Tensor | None = None):
        with torch.no_grad():
            x = model.sample((self.draws,))
            log_p = self.log_p(x).to(x.dtype)
        log_q = model.log_prob(x, check=False)  # one pass: its value sets c, its gradient the step
        c = torch.nan_to_num(log_p - log_q.detach(), nan=self.low).clamp(self.low, self.high)
        c = c - c.mean()
        return nll(model, batch, weight) - self.lam * (c * log_q).mean()


def _exact_log_ratio(
    est: DensityEstimator, X: np.ndarray, log_target: Callable, rows: Any = None
) -> np.ndarray:
    """``log p(x) - log q(x)`` at the rows of ``X`` from the known target density (``rows``:
    the same rows as the estimator takes them, e.g. a DataFrame with its column names)."""
    log_p = np.asarray(log_target(X), dtype=np.float64)
    if log_p.shape != (len(X),):
        raise ValueError(
            f"log_target must return one value per row, shape ({len(X)},), got {log_p.shape}"
        )
    if np.isnan(log_p).any():
        raise ValueError("log_target returned NaN on the training rows")
    return log_p - est.score_samples(X if rows is None else rows)


def _latent_log_target(
    est: DensityEstimator, log_target: Callable | None, classifier: Classifier | None,
    prior: float,
) -> Callable[[Tensor], Tensor]:  # fmt: skip
    """``log p`` on latent rows: the exact target's (``log_target`` plus the pre-transform's
    log-Jacobian), or the round's estimate ``log q_round + log w_round`` from a frozen copy of
    the flow and a discriminator fitted on the round's data and draws."""
    pre = est.preprocessor_
    frozen = copy.deepcopy(est.core_flow_).eval() if log_target is None else None

    def log_p(z: Tensor) -> Tensor:
        x = pre.from_latent(z.double())
        _, ladj = pre.to_latent(x)  # log |dz / dx|
        rows = x.cpu().numpy()
        if log_target is not None:
            exact = torch.as_tensor(np.asarray(log_target(rows), dtype=np.float64))
            return (exact - ladj.cpu()).to(z)
        assert frozen is not None and classifier is not None
        p = np.clip(classifier.predict_proba(rows), _P_FLOOR, 1 - _P_FLOOR)
        log_w = torch.as_tensor(np.log(p) - np.log1p(-p) + prior).to(z)
        return frozen.log_prob(z, check=False) + log_w

    return log_p


def _check(rounds: int, power: float, max_weight: float, folds: int) -> None:
    positive_int("rounds", rounds)
    if not (isinstance(power, (int, float)) and 0 < power <= 4):
        raise ValueError(f"power must lie in (0, 4], got {power!r}")
    if not (isinstance(max_weight, (int, float)) and max_weight > 1):
        raise ValueError(f"max_weight must be a number > 1, got {max_weight!r}")
    if positive_int("folds", folds) < 2:
        raise ValueError(f"folds must be at least 2, got {folds}")


def discflow(
    X: Any,
    estimator: DensityEstimator | None = None,
    *,
    rounds: int = 6,
    epochs_per_round: int = 4,
    power: float = 1.0,
    classifier: Classifier | None = None,
    n_draws: int | None = None,
    folds: int = 2,
    max_weight: float = 20.0,
    lr: float = 3e-4,
    reverse: float = 0.0,
    reverse_draws: int | None = None,
    reverse_floor: float | None = None,
    log_target: Callable[[np.ndarray], np.ndarray] | None = None,
    warm_start: bool = False,
    time_budget: float | None = None,
    random_state: int = 0,
) -> DiscFlow:
    """Fit a flow by likelihood, then refine it with discriminator-weighted likelihood.

    Args:
        X: the training rows ``(n, D)``; a DataFrame's column names are kept by the fitted
            estimator, and a warm-start estimator refuses other names or another order.
        estimator: an unfitted :class:`~pyroflows.density.DensityEstimator` with the flow and
            the plain-likelihood training to start from (cloned and fitted to ``X``; default
            settings if None); with ``warm_start``, a fitted one. A fitted one without
            ``warm_start`` is refused: its fit would not be used.
        rounds: number of discriminate-then-train rounds after the plain fit.
        epochs_per_round: epochs of weighted training per round.
        power: the final exponent of the weights (reached in the last round).
        classifier: the discriminator (default: gradient boosting, 200 rounds).
        n_draws: flow draws per round (default: ``len(X)``).
        folds: out-of-fold splits for scoring the data rows.
        max_weight: the ratio is bounded to ``[1 / max_weight, max_weight]``.
        lr: Adam learning rate of the weighted rounds.
        reverse: the factor ``lam`` of the reverse-KL term on fresh draws of the flow at
            every step (:class:`ReverseTerm`; 0: none). Its ratio ``p / q`` is bounded to
            ``[reverse_floor, max_weight]``.
        reverse_draws: draws of the flow per step for the reverse term (default 256; only
            with ``reverse > 0``).
        reverse_floor: the lower bound of the reverse term's ratio, in ``(0, 1)`` (default
            0.01; only with ``reverse > 0``).
        log_target: the target's exact log-density on data rows ``(n, D) -> (n,)``, for
            studies on targets with a known density: the exact ratio ``p / q`` then replaces
            the discriminator's (weights and reverse term; rounds report ``auc`` NaN).
        time_budget: seconds for the rounds (checked between and within rounds; the plain fit
            has the estimator's own ``time_budget``).
        random_state: seed of the draws, the folds and the training.

    Returns:
        A :class:`DiscFlow`.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> X = rng.normal(size=(400, 2))
        >>> est = DensityEstimator(flow="maf", layers=2, hidden=(8,), max_epochs=3, progress=False)
        >>> result = discflow(X, est, rounds=2, epochs_per_round=1)
        >>> len(result.rounds), result.estimator.sample(5).shape
        (2, (5, 2))
    """
    _check(rounds, power, max_weight, folds)
    if not (isinstance(reverse, (int, float)) and math.isfinite(reverse) and reverse >= 0):
        raise ValueError(f"reverse must be a finite number >= 0, got {reverse!r}")
    unused = [n for n, v in (("reverse_draws", reverse_draws), ("reverse_floor", reverse_floor))
              if v is not None]  # fmt: skip
    if reverse == 0 and unused:
        raise ValueError(
            f"{' and '.join(unused)} shape the reverse-KL term, which is off (reverse=0): "
            "pass reverse > 0 to use it, or leave them out"
        )
    reverse_draws = positive_int("reverse_draws", 256 if reverse_draws is None else reverse_draws)
    reverse_floor = 0.01 if reverse_floor is None else reverse_floor
    if not (isinstance(reverse_floor, (int, float)) and 0 < reverse_floor < 1):
        raise ValueError(f"reverse_floor must lie in (0, 1), got {reverse_floor!r}")
    warm_start = flag("warm_start", warm_start)
    fitted = estimator is not None and getattr(estimator, "n_features_in_", None) is not None
    if fitted and not warm_start:
        raise ValueError(
            "the estimator is already fitted: discflow fits a clone of it to X from the start, "
            "so its fit would not be used; pass it unfitted (e.g. sklearn.base.clone(est)), "
            "or pass warm_start=True to refine it as it is"
        )
    if warm_start and not fitted:
        raise ValueError(
            "warm_start=True refines a fitted estimator, and none was given: pass a "
            "DensityEstimator fitted by likelihood, or leave warm_start out"
        )
    if log_target is not None and not callable(log_target):
        raise ValueError(f"log_target must be callable or None, got {type(log_target).__name__}")
    template = estimator if estimator is not None else DensityEstimator(progress=False)
    if warm_start:  # other column names, or the same in another order, are refused
        template._check_names(X)
    frame = X if _get_feature_names(X) is not None else None
    X = check_data(X, name="X", min_samples=10, check_variance=True)
    rows = X if frame is None else frame  # what the estimator is given: names kept
    start = time.perf_counter()
    if template.ensemble != 1:
        raise ValueError(
            f"discflow refines one flow: the estimator has ensemble={template.ensemble}; use 1"
        )
    if warm_start:
        if template.n_features_in_ != X.shape[1]:
            raise ValueError(
                f"X has {X.shape[1]} features, the warm-start estimator was fitted to "
                f"{template.n_features_in_}"
            )
        est = copy.deepcopy(template)
    else:
        est = clone(template).fit(rows)
    classifier = classifier if classifier is not None else Classifier("hgb")
    n_draws = len(X) if n_draws is None else positive_int("n_draws", n_draws)
    core, Z = est.core_flow_, est.to_latent(rows)
    cap = math.log(max_weight)
    history, began = [], time.perf_counter()
    for r in range(1, rounds + 1):
        left = None if time_budget is None else time_budget - (time.perf_counter() - began)
        if left is not None and left <= 0:
            break
        t0, alpha = time.perf_counter(), power * r / rounds
        if log_target is None:
            log_w, auc = _log_ratio(est, X, classifier, n_draws, folds, random_state + r)
        else:
            log_w, auc = _exact_log_ratio(est, X, log_target, rows), math.nan
        w = np.exp(alpha * np.clip(log_w, -cap, cap))
        loss: Any = nll
        if reverse > 0:
            judge = None
            if log_target is None:  # a discriminator for fresh draws: fitted on all rows
                draws = est.sample(n_draws, random_state=random_state + r)
                labels = np.r_[np.ones(len(X)), np.zeros(n_draws)]
                judge = classifier.clone().fit(np.concatenate([X, draws]), labels)
            log_p = _latent_log_target(est, log_target, judge, math.log(n_draws / len(X)))
            loss = ReverseTerm(log_p, reverse, reverse_draws, math.log(reverse_floor), cap)
        hist = fit(core, loss, Z, sample_weight=w, max_epochs=epochs_per_round, lr=lr,
                   batch_size=est.batch_size, patience=None, time_budget=left,
                   seed=random_state + r, progress=False)  # fmt: skip
        history.append(DiscFlowRound(
            alpha, auc, effective_sample_size(w) / len(w), float((np.abs(log_w) >= cap).mean()),
            hist.train_loss[-1] if hist.train_loss else math.nan, time.perf_counter() - t0,
        ))  # fmt: skip
    final = est.sample(n_draws, random_state=random_state)
    y = np.r_[np.ones(len(X)), np.zeros(n_draws)]
    last = classifier.clone().fit(np.concatenate([X, final]), y)
    return DiscFlow(est, last, history, time.perf_counter() - start,
                    math.log(n_draws / len(X)), X)  # fmt: skip
