"""LaCATHODE: CATHODE's classifier moved into the latent space of the sideband flow.

The sideband flow ``p(x | m)`` is a bijection ``u = T(x; m)`` onto its base distribution (a
standard normal). Mapping every event through it *at its own m* turns background into
``N(0, I)`` at every ``m`` (as far as the flow is right), so a classifier trained on SR data's
latents against base draws finds the signal's over-density but has no ``m`` left to learn:
cuts on its score keep background at the same rate at every ``m`` and do not sculpt the
spectrum, which CATHODE's classifier in data space can do when the features depend strongly
on ``m`` (its samples and the data differ slightly at each ``m``, and the classifier learns
those differences). No ``m`` is sampled: the background template is the base distribution.
Scoring needs each event's ``m``.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

from pyroflows.anomaly.density import ConditionalDensity, cathode_background
from pyroflows.anomaly.methods import _ClassifierDetector, _counted, _sideband_background, _xm
from pyroflows.anomaly.region import SignalRegion
from pyroflows.classify import Classifier
from pyroflows.train.seeding import seeded_draws

__all__ = ["LaCATHODE"]

# m within this fraction of the training range's width beyond its edges is not extrapolation
# (a sample's smallest and largest m are not the edges of the population it came from)
RANGE_MARGIN = 0.01


class LaCATHODE(_ClassifierDetector):
    """Latent CATHODE (Hallin et al., 2022, arXiv:2210.14924): SR data mapped into the
    sideband flow's base space at their own ``m``, classified against draws from the base.

    The latent map is one member of the background's ensemble (``member``; 0 is the state
    with the lowest validation loss): a mixture of flows has no single bijection.

    Args:
        region: the signal region.
        background: the conditional density trained in the sidebands (as for
            :class:`~pyroflows.anomaly.CATHODE`; None: :func:`cathode_background`).
        classifier: the classifier set-up (cloned), its name (seeded with ``seed``) or None
            (the shared default), as for :class:`CATHODE`.
        oversampling: base draws per SR data event in the classifier's training.
        refit_background: train ``background`` on the sidebands in :meth:`fit` (False: use it
            as it is, e.g. shared with CATHODE).
        member: which member of the background's ensemble maps events to the latent space.
        extrapolate: allow ``m`` outside the range the flow was trained on, widened by 1 % of
            its width each side (the latent map is then an extrapolation; such events are
            counted in ``extrapolated_`` and a warning is given). False: such ``m`` raise a
            ``ValueError``.
        seed: seed of the base draws.

    Attributes (after :meth:`fit`):
        nonfinite_training_: SR data events whose latent is not finite (outside the
            preprocessing's bounds, or an overflow), left out of the classifier's training.
        nonfinite_latents_: events with a non-finite latent met by :meth:`score` (their
            score is NaN, counted in ``nonfinite_`` too), never dropped.
        extrapolated_: events scored with ``m`` outside the flow's training range.
        samples_: the base draws the classifier was trained against.

    Example:
        >>> from pyroflows.datasets import bump_hunt
        >>> hunt = bump_hunt(20_000, 0.05, n_test_background=500, n_test_signal=50,
        ...                  n_extra_background=10, n_extra_signal=10, seed=0)
        >>> density = ConditionalDensity(layers=2, hidden=(16,), max_epochs=2)
        >>> la = LaCATHODE(SignalRegion(*hunt.sr), density).fit(hunt.data.x, hunt.data.m)
        >>> la.score(hunt.test.x, hunt.test.m).shape, la.latent(hunt.test.x, hunt.test.m).shape
        ((550,), (550, 4))
    """

    def __init__(
        self,
        region: SignalRegion,
        background: ConditionalDensity | None = None,
        classifier: Classifier | str | None = None,
        oversampling: float = 4.0,
        refit_background: bool = True,
        member: int = 0,
        extrapolate: bool = False,
        seed: int = 0,
    ):
        if not oversampling > 0:
            raise ValueError(f"oversampling must be positive, got {oversampling}")
        if isinstance(member, bool) or not isinstance(member, int) or member < 0:
            raise ValueError(f"member must be a non-negative integer, got {member!r}")
        super().__init__(region, classifier, seed)
        self.background = background if background is not None else cathode_background(seed=seed)
        self.oversampling, self.refit_background = oversampling, refit_background
        self.member, self.extrapolate, self.seed = member, extrapolate, seed
        self.nonfinite_latents_ = 0
        self.extrapolated_ = 0

    # -- the latent map -------------------------------------------------------------------------
    def _flow(self) -> torch.nn.Module:
        members = self.background.members_
        if not members:
            raise RuntimeError("the background density is not fitted: call fit(x, m) first")
        if self.member >= len(members):
            raise ValueError(f"member {self.member} does not exist: the background has "
                             f"{len(members)} member(s)")  # fmt: skip
        return members[self.member]

    def _check_m(self, m: np.ndarray) -> int:
        """Unless ``extrapolate``, raise on ``m`` outside the flow's training range (``m`` is
        finite: :func:`_xm` refused the rest); return how many are outside."""
        low, high = getattr(self.background, "m_range_", (None, None))
        if low is None:
            raise RuntimeError("the background density does not record the m range it was "
                               "trained on (m_range_): refit it")  # fmt: skip
        margin = RANGE_MARGIN * (high - low)
        low, high = low - margin, high + margin
        outside = int(((m < low) | (m > high)).sum())
        if outside and not self.extrapolate:
            raise ValueError(
                f"{outside} event(s) have m outside the range the background flow was trained "
                f"on (with a margin of {RANGE_MARGIN:.0%} of its width: [{low:.6g}, "
                f"{high:.6g}]): its latent map would be an extrapolation (pass "
                "extrapolate=True to allow it, counted in extrapolated_)"
            )
        return outside

    @torch.no_grad()
    def latent(self, x: Any, m: Any) -> np.ndarray:
        """Events ``x`` ``(n, d)`` at their own ``m`` ``(n,)`` in the flow's base space,
        ``(n, d)`` float64; rows that are not finite (``x`` outside the preprocessing's bounds,
        or an overflow) come back as they are or as NaN, never dropped. ``m`` outside the
        flow's training range raises unless ``extrapolate`` (counted only by :meth:`score`)."""
        x, m = _xm(x, m)
        flow = self._flow()
        self._check_m(m)
        z, ladj = self.background.preprocessor_.to_latent(torch.as_tensor(x))
        # outside the bounds the preprocessor returns a placeholder z with ladj = -inf
        bad = ~torch.isfinite(z).all(-1) | ~torch.isfinite(ladj)
        z = torch.where(bad[:, None], torch.zeros_like(z), z).float()
        u = flow.transform_to_base(z, self.background._context(m)).double()
        return torch.where(bad[:, None], torch.nan, u).numpy()  # overflows stay inf / NaN

    # -- fit and score --------------------------------------------------------------------------
    def fit(self, x: Any, m: Any) -> LaCATHODE:
        """Train on the observed events (all ``m``): sidebands for the flow (unless
        ``refit_background`` is False), SR data's latents against base draws for the
        classifier."""
        x, m = _xm(x, m)  # refuses non-finite x and m
        sr = self.region.inside(m)
        if sr.sum() == 0:
            raise ValueError("no event in the signal region")
        if self.refit_background:
            most = self.background.ensemble * self.background.best_epochs
            if self.member >= most:  # refuse before the flow is trained
                raise ValueError(f"member {self.member} does not exist: the background keeps "
                                 f"at most {most} member(s)")  # fmt: skip
        _sideband_background(self, x, m)
        flow = self._flow()
        u = self.latent(x[sr], m[sr])
        keep = np.isfinite(u).all(1)
        self.nonfinite_training_ = int((~keep).sum())
        if self.nonfinite_training_:
            warnings.warn(
                f"LaCATHODE: {self.nonfinite_training_} of {int(sr.sum())} SR events have a "
                "non-finite latent; they are left out of the classifier's training (see "
                "nonfinite_training_)", RuntimeWarning, stacklevel=2,
            )  # fmt: skip
        n = int(round(self.oversampling * keep.sum()))
        with seeded_draws(self.seed):
            draws = flow.base.sample((n,)).double().numpy()
        self.samples_ = draws
        self._train(u[keep], draws)
        return self

    def score(self, x: Any, m: Any = None) -> np.ndarray:
        """Anomaly score of each event at its own ``m`` (required); NaN for events whose
        latent is not finite (counted in ``nonfinite_latents_`` and ``nonfinite_``)."""
        if not hasattr(self, "model_"):
            raise RuntimeError("LaCATHODE is not fitted: call fit(x, m) first")
        if m is None:
            raise ValueError("LaCATHODE scores events in the latent space at their own m: pass m")
        x, m = _xm(x, m)
        outside = self._check_m(m)
        if outside:
            self.extrapolated_ += outside
            warnings.warn(f"LaCATHODE: {outside} event(s) scored with m outside the flow's "
                          "training range (extrapolated; see extrapolated_)", RuntimeWarning,
                          stacklevel=2)  # fmt: skip
        u = self.latent(x, m)
        bad = ~np.isfinite(u).all(1)
        self.nonfinite_latents_ += int(bad.sum())
        scores = np.full(len(u), np.nan)
        if (~bad).any():
            scores[~bad] = self.model_.predict_proba(u[~bad])
        return _counted(self, scores)
