"""The Gaussian mixture a ``base="gmm"`` flow starts at (:func:`mixture_base`).

The candidates are scikit-learn mixtures with full, diagonal or tied covariances
(:data:`MIXTURE_TYPES`) and 1 to 10 components (:data:`MIXTURE_COMPONENTS`), each fitted
twice when the pre-transform is affine: to the rows in the flow's space (after the
pre-transform) and to the same rows in the data's units, then carried exactly into the
flow's space (``x = loc + L z`` turns ``N(m, S)`` into ``N(L^-1 (m - loc), L^-1 S L^-T)``).
The two fits differ only by EM's k-means start, which depends on the space's scales; on
``macrodata`` (near-collinear macro series, whitened) the data-space start of a 4-component
full mixture reached a validation loss of 42.75 nats per row against 48.83 in the whitened
space. The candidate kept is the one with the highest mean validation log-likelihood
(:data:`MIXTURE_RULE`), the lowest BIC without validation rows.

The search adds components one count at a time and stops when the best score has not risen
for :data:`MIXTURE_PATIENCE` counts in a row, or before a count whose rows x components would
pass :data:`MIXTURE_WORK`: without a time budget it depends on the rows and the seed only, not
on the machine's speed. With a time budget it gets at most :data:`MIXTURE_SHARE` of it: before
each candidate it predicts that candidate's seconds (its covariance type and space at the count
before, scaled by the counts: EM's cost grows linearly with the components) and stops, keeping
the best candidate fitted so far, when they would pass the share. Within a count the candidates
are fitted in the order of their scores at the count before (the first count: the cheapest
covariance type first, :data:`MIXTURE_TYPES`), so a count cut short keeps its most promising
candidates. With :data:`MIXTURE_NARROW` (off by default) it also predicts, before each count,
the seconds of that count and the next one with every candidate; once they would pass the
share, the search goes on with its leader only, the candidate with the highest score at the
count before, one count at a time while each is predicted to fit. The choice then depends on
the machine's speed, and
:attr:`MixtureChoice.stopped` (``"time share"``) and a warning say so. The rest of the budget
is the flows' (the plain member of ``flow="auto"`` among them). The validated GMM of
``benchmarks/density_tables.py`` (1-10 components; full, diagonal, tied or spherical
covariances; data units) is among the candidates up to its regularisation, its
one-standard-error rule and any count past the early stop (none on the twelve tables of that
script), so a flow started here begins at a validation loss no higher than that peer's, and
with ``fit(validate_start=True)`` never ends above it.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning

from pyroflows.bases import FullGaussianMixture, GaussianMixture

__all__ = [
    "MIXTURE_COMPONENTS",
    "MIXTURE_NARROW",
    "MIXTURE_PATIENCE",
    "MIXTURE_RULE",
    "MIXTURE_RULES",
    "MIXTURE_SHARE",
    "MIXTURE_STOPS",
    "MIXTURE_TYPES",
    "MIXTURE_WORK",
    "MixtureChoice",
    "mixture_base",
]

#: the covariance types of the candidate mixtures (scikit-learn's names), fitted in this
#: order in the first count of components: the cheapest first (a diagonal fit costs rows x
#: components x dimensions per EM step, a full one that times the dimensions); later counts
#: fit them in the order of their scores at the count before, the most promising first
MIXTURE_TYPES = ("diag", "tied", "full")
#: the numbers of components of the candidates, tried in this order (at most half the
#: training rows)
MIXTURE_COMPONENTS = tuple(range(1, 11))
#: the search stops once this many counts of components in a row have not raised the best
#: score (mean validation log-likelihood; -BIC without validation rows) of the counts before
MIXTURE_PATIENCE = 2
#: the search tries no count ``k`` whose cost, training rows x (1 + 2 + ... + k) components,
#: would pass this (every candidate with one component is always fitted)
MIXTURE_WORK = 500_000
#: with a time budget, the share of it the search may use (measured on the development
#: tables of benchmarks/density_tables.py; benchmarks/mixture_cost.py times the search);
#: None: the search is cut only once the whole budget is spent, checked before each count
#: (``benchmarks/density_tables.py --variants whole-budget`` measures the default against it)
MIXTURE_SHARE: float | None = 0.4
#: with a time budget, narrow the search once the next two counts with every candidate are
#: predicted to pass :data:`MIXTURE_SHARE`: from that count on only the candidate with the
#: highest score at the count before (covariance type and space) gets more components. A
#: search that the share does not bind is unchanged. Off by default: on the development
#: tables of benchmarks/density_tables.py at 10 s (load 10-12) it raised the test
#: log-likelihood on breast_cancer (+0.67 ± 0.33 nats per row) and digits16 (+0.58 ± 0.18)
#: but lowered it on seattle_weather (-0.13 ± 0.04), where the leader alone stopped by
#: patience at 6 components (``density_tables_dev_dens7.md``)
MIXTURE_NARROW = False
#: why the search ended (:attr:`MixtureChoice.stopped`): every count tried, the patience run
#: out, the work cap reached, or (the only ones that depend on the machine's speed) its share
#: of the time budget spent, or the whole budget (``MIXTURE_SHARE = None``)
MIXTURE_STOPS = ("components", "patience", "work", "time share", "time budget")
#: how the candidates are compared on the validation rows: ``"best"``, the highest mean
#: log-likelihood; ``"one_se"``, the one with the fewest parameters whose mean is within one
#: paired standard error of the highest
MIXTURE_RULE = "best"
MIXTURE_RULES = ("best", "one_se")


@dataclass(frozen=True)
class MixtureChoice:
    """What :func:`mixture_base` kept: the covariance type, the number of components, the
    space it was fitted in (``"flow"`` or ``"data"``), the mean validation log-likelihood per
    row of every candidate fitted (in the flow's space; ``-BIC`` per row without validation
    rows), the seconds the choice took and why the search ended (one of
    :data:`MIXTURE_STOPS`; ``"time share"`` or ``"time budget"``: cut by the clock, so a
    slower machine may have kept another start)."""

    covariance_type: str
    components: int
    space: str
    scores: dict[str, float]
    seconds: float
    stopped: str = "components"

    @property
    def name(self) -> str:
        """E.g. ``"full x 3 (data)"``."""
        return f"{self.covariance_type} x {self.components} ({self.space})"

    def as_plain(self) -> dict[str, Any]:
        """Plain Python types (for ``candidates_`` and results files)."""
        return {
            "covariance_type": self.covariance_type, "components": self.components,
            "space": self.space, "scores": dict(self.scores), "seconds": self.seconds,
            "stopped": self.stopped,
        }  # fmt: skip


def mixture_base(
    Z: torch.Tensor,
    Z_val: torch.Tensor | None,
    seed: int | None,
    seconds: float | None = None,
    data_map: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[GaussianMixture | FullGaussianMixture, MixtureChoice]:
    """The Gaussian mixture, in the flow's space, that a ``base="gmm"`` flow starts at.

    Args:
        Z: training rows in the flow's space ``(n, d)``.
        Z_val: validation rows there, or None (the lowest BIC is kept then).
        seed: seed of EM's starts.
        seconds: the time budget left for the fit, or None: the search uses at most
            :data:`MIXTURE_SHARE` of it (no candidate is started that is predicted to end
            past it; every candidate with one component is fitted), and where that cuts it,
            a warning says that the start depends on the machine's speed; a search that
            ends by validation or the work cap within it keeps the same start on any
            machine.
        data_map: ``(loc, L)`` of an affine pre-transform, ``x = loc + L z`` with ``L``
            lower-triangular (:class:`~pyroflows.transforms.FixedAffine`'s buffers), or
            None: the candidates are then fitted in the flow's space only.

    Returns:
        ``(base, choice)``: a :class:`~pyroflows.bases.FullGaussianMixture` (a diagonal
        :class:`~pyroflows.bases.GaussianMixture` when the kept covariances are diagonal in
        the flow's space) in ``Z``'s dtype and device, and the :class:`MixtureChoice`.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> Z = torch.as_tensor(rng.normal(size=(400, 2)) @ [[1.0, 0.9], [0.0, 0.3]])
        >>> base, choice = mixture_base(Z[:300], Z[300:], seed=0)
        >>> type(base).__name__, choice.scores[choice.name] == max(choice.scores.values())
        ('FullGaussianMixture', True)
    """
    if MIXTURE_RULE not in MIXTURE_RULES:
        raise ValueError(f"MIXTURE_RULE must be one of {MIXTURE_RULES}, got {MIXTURE_RULE!r}")
    if MIXTURE_SHARE is not None and not 0.0 < MIXTURE_SHARE <= 1.0:
        raise ValueError(f"MIXTURE_SHARE must lie in (0, 1] or be None, got {MIXTURE_SHARE!r}")
    start = time.perf_counter()
    spaces = {"flow": _Space.identity(Z, Z_val)}
    if data_map is not None:
        spaces["data"] = _Space.affine(Z, Z_val, *data_map)
    clock = _Clock(start, seconds)
    fitted: list[tuple[Any, _Space, str]] = []
    rows: list[np.ndarray] = []
    scores: dict[str, float] = {}
    stopped, best, stale, work, tried = "components", -np.inf, 0, 0, 0
    leader: tuple[str, str] | None = None  # the only candidate once narrowed (MIXTURE_NARROW)
    for k in MIXTURE_COMPONENTS:
        work += len(Z) * k
        if k > 1:
            if k > len(Z) // 2:
                break
            if stale >= MIXTURE_PATIENCE:
                stopped = "patience"
                break
            if work > MIXTURE_WORK:
                stopped = "work"
                break
            if clock.whole_budget_spent():
                stopped = "time budget"
                break
        order = _order(spaces, scores, k)
        if k > 1 and MIXTURE_NARROW and leader is None:
            if clock.counts_pass_share(order, k, min(k + 1, _last_count(len(Z)))):
                leader = order[0]
        count_best = -np.inf
        for kind, space_name in order if leader is None else [leader]:
            space = spaces[space_name]
            if k > 1 and clock.share_spent_by((kind, space_name), k):
                stopped = "time share"
                break
            began = time.perf_counter()
            mixture = _fit(space.train, k, kind, seed)
            clock.record((kind, space_name), k, time.perf_counter() - began)
            if mixture is None:  # a component collapsed onto repeated rows
                continue
            per_row = space.score(mixture)
            fitted.append((mixture, space, space_name))
            rows.append(per_row)
            scores[f"{kind} x {k} ({space_name})"] = float(per_row.mean())
            count_best = max(count_best, float(per_row.mean()))
        if count_best > -np.inf:
            tried = k
        if stopped == "time share":
            break
        stale = 0 if count_best > best else stale + 1
        best = max(best, count_best)
    if stopped in ("time share", "time budget"):
        share = "its share" if stopped == "time share" else "all"
        warnings.warn(
            f"choosing the Gaussian mixture start used {share} of the time budget "
            f"({seconds:.3g} s) after {tried} components: a faster machine may keep another "
            "start; pass a larger time_budget (or none) for a start that depends on the data "
            "and the seed only",
            stacklevel=2,
        )
    if not fitted:
        raise ValueError(
            "no Gaussian mixture could be fitted to the rows for the flow's start (EM "
            "collapsed a component onto repeated rows even with one component): pass "
            "discrete= for columns on a grid, or base='normal'"
        )
    mixture, space, space_name = fitted[_chosen(rows, [_parameters(m) for m, _, _ in fitted])]
    base = space.to_flow(mixture)
    choice = MixtureChoice(
        mixture.covariance_type, int(mixture.n_components), space_name, scores,
        time.perf_counter() - start, stopped,
    )  # fmt: skip
    return base.to(device=Z.device, dtype=Z.dtype), choice


def _order(spaces: dict[str, Any], scores: dict[str, float], k: int) -> list[tuple[str, str]]:
    """The candidates of count ``k`` in the order they are fitted: by their score at the
    count before, the highest first (a count cut short by the time share keeps the most
    promising), then in the order of :data:`MIXTURE_TYPES` and the spaces (the first count,
    and candidates that collapsed at the count before)."""
    pairs = [(kind, space) for kind in MIXTURE_TYPES for space in spaces]
    before = [scores.get(f"{kind} x {k - 1} ({space})", -np.inf) for kind, space in pairs]
    return [pairs[i] for i in sorted(range(len(pairs)), key=lambda i: (-before[i], i))]


def _last_count(rows: int) -> int:
    """The largest count of components the search may reach with ``rows`` training rows:
    :data:`MIXTURE_COMPONENTS`, at most half the rows, and the work cap (every count up to it,
    rows x (1 + ... + k), within :data:`MIXTURE_WORK`; one component always)."""
    last, work = 1, 0
    for k in MIXTURE_COMPONENTS:
        work += rows * k
        if k > 1 and (k > rows // 2 or work > MIXTURE_WORK):
            break
        last = k
    return last


class _Clock:
    """The search's time: the seconds of each candidate fitted, and whether the next one
    would pass :data:`MIXTURE_SHARE` of the budget (``seconds``; None: no budget)."""

    def __init__(self, start: float, seconds: float | None):
        self.start, self.seconds = start, seconds
        self.last: dict[tuple[str, str], tuple[int, float]] = {}

    def record(self, key: tuple[str, str], k: int, took: float) -> None:
        self.last[key] = (k, took)

    def share_spent_by(self, key: tuple[str, str], k: int) -> bool:
        """Whether the candidate ``key`` with ``k`` components would end past the share: the
        seconds so far plus its predicted seconds (its fit at the count before, times
        ``k / that count``)."""
        if self.seconds is None or MIXTURE_SHARE is None:
            return False
        before, took = self.last.get(key, (k, 0.0))
        predicted = took * k / before
        return time.perf_counter() - self.start + predicted > MIXTURE_SHARE * self.seconds

    def counts_pass_share(self, keys: list[tuple[str, str]], k: int, last: int) -> bool:
        """Whether fitting every candidate ``keys`` at each count from ``k`` to ``last`` would
        end past the share: the seconds so far plus each count's predicted seconds (each
        candidate's last fit scaled by the components, as :meth:`share_spent_by`).

        Example:
            >>> clock = _Clock(time.perf_counter(), 10.0)  # a share of 4 s
            >>> clock.record(("diag", "flow"), 1, 0.5)
            >>> clock.counts_pass_share([("diag", "flow")], 2, 3)  # 1 s + 1.5 s
            False
            >>> clock.counts_pass_share([("diag", "flow")], 4, 5)  # 2 s + 2.5 s
            True
        """
        if self.seconds is None or MIXTURE_SHARE is None:
            return False
        rest = 0.0
        for key in keys:
            before, took = self.last.get(key, (k, 0.0))
            rest += took * sum(range(k, last + 1)) / before
        return time.perf_counter() - self.start + rest > MIXTURE_SHARE * self.seconds

    def whole_budget_spent(self) -> bool:
        """``MIXTURE_SHARE = None``: whether the whole budget is spent (checked before each
        count)."""
        if self.seconds is None or MIXTURE_SHARE is not None:
            return False
        return time.perf_counter() - self.start > self.seconds


def _fit(X: np.ndarray, k: int, kind: str, seed: int | None) -> Any:
    """The fitted mixture, or None where EM collapsed a component onto a few repeated rows
    (its covariance is singular: scikit-learn raises), as on a column of few distinct values
    left continuous; such a candidate is left out."""
    from sklearn.mixture import GaussianMixture as SkMixture

    mixture = SkMixture(k, covariance_type=kind, random_state=seed, max_iter=200)
    with warnings.catch_warnings():  # EM that has not converged is still a candidate
        warnings.simplefilter("ignore", ConvergenceWarning)
        try:
            return mixture.fit(X)
        except ValueError as error:
            if "ill-defined empirical covariance" in str(error):
                return None
            raise


@dataclass
class _Space:
    """Rows in one space (float64 arrays) and the affine map ``x = loc + L z`` from the
    flow's space to it (``loc`` None: the flow's space itself)."""

    train: np.ndarray
    val: np.ndarray | None
    loc: np.ndarray | None = None
    L: np.ndarray | None = None

    @classmethod
    def identity(cls, Z: torch.Tensor, Z_val: torch.Tensor | None) -> _Space:
        return cls(_numpy(Z), None if Z_val is None else _numpy(Z_val))

    @classmethod
    def affine(
        cls, Z: torch.Tensor, Z_val: torch.Tensor | None, loc: torch.Tensor, L: torch.Tensor
    ) -> _Space:
        loc_, L_ = _numpy(loc), _numpy(L)
        val = None if Z_val is None else loc_ + _numpy(Z_val) @ L_.T
        return cls(loc_ + _numpy(Z) @ L_.T, val, loc_, L_)

    @property
    def log_det(self) -> float:
        """``log|det L|``: what a log-density in this space gains in the flow's space."""
        return 0.0 if self.L is None else float(np.log(np.abs(np.diag(self.L))).sum())

    def score(self, mixture: Any) -> np.ndarray:
        """Per-row validation log-likelihoods in the flow's space; without validation rows
        one value, ``-BIC`` per training row."""
        if self.val is None:
            return np.full(1, -mixture.bic(self.train) / len(self.train) + 2 * self.log_det)
        return mixture.score_samples(self.val) + self.log_det

    def to_flow(self, mixture: Any) -> GaussianMixture | FullGaussianMixture:
        """The fitted mixture as a base in the flow's space (float64)."""
        weights, means = mixture.weights_, mixture.means_
        k, d = means.shape
        kind, cov = mixture.covariance_type, np.asarray(mixture.covariances_)
        diagonal_map = self.L is None or np.count_nonzero(self.L - np.diag(np.diag(self.L))) == 0
        if kind == "diag" and diagonal_map:
            scale = np.ones(d) if self.L is None else np.diag(self.L)
            shift = np.zeros(d) if self.loc is None else self.loc
            return GaussianMixture.from_parameters(
                torch.from_numpy(weights), torch.from_numpy((means - shift) / scale),
                torch.from_numpy(cov / scale**2),
            )  # fmt: skip
        full = {
            "full": lambda: cov,
            "tied": lambda: np.broadcast_to(cov, (k, d, d)),
            "diag": lambda: cov[:, :, None] * np.eye(d),
            "spherical": lambda: cov[:, None, None] * np.eye(d),
        }[kind]()
        if self.L is not None:
            inverse = np.linalg.inv(self.L)
            means = (means - self.loc) @ inverse.T
            full = inverse @ full @ inverse.T
        full = 0.5 * (full + np.swapaxes(full, -1, -2))  # exactly symmetric
        return FullGaussianMixture.from_parameters(
            torch.from_numpy(weights), torch.from_numpy(means), torch.from_numpy(full)
        )


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float64).numpy()


def _parameters(mixture: Any) -> int:
    """The free parameters of a fitted scikit-learn mixture (weights, means, covariances)."""
    k, d = mixture.means_.shape
    kind = mixture.covariance_type
    covariance = {"full": k * d * (d + 1) // 2, "tied": d * (d + 1) // 2, "diag": k * d}
    return k - 1 + k * d + covariance.get(kind, k)


def _chosen(rows: list[np.ndarray], sizes: list[int]) -> int:
    """The index of the candidate :data:`MIXTURE_RULE` keeps, from the per-row validation
    log-likelihoods of each (one value each: -BIC per row, without validation rows) and
    their numbers of parameters; the first listed wins a tie."""
    means = [float(r.mean()) for r in rows]
    best = int(np.argmax(means))
    if MIXTURE_RULE == "best" or len(rows[best]) < 2:
        return best
    within = []
    for i, r in enumerate(rows):
        gap = rows[best] - r
        if gap.mean() <= gap.std(ddof=1) / np.sqrt(len(gap)):
            within.append(i)
    return min(within, key=lambda i: (sizes[i], -means[i], i))
