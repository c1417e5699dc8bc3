"""A synthetic resonant anomaly search ("bump hunt") with exact densities; nothing is downloaded.

Every event has a resonant feature ``m`` (think of a dijet invariant mass in TeV) and ``dim = 4``
auxiliary features ``x``:

* background ``m`` follows a smoothly falling power law ``p(m) ∝ m^-power`` on
  ``[m_min, m_max]`` (inverse-CDF sampling, exact fractions in any window);
* background ``x | m``: a correlated Gaussian ``g ~ N(k (m - m_ref) b, Σ)`` mapped to
  ``x = (g0, g1, sigmoid(g2), sigmoid(g3))``: two unbounded features and two in ``(0, 1)``
  (like n-subjettiness ratios, where a logit preprocessing matters). The strength ``k`` of the
  ``m`` dependence is the knob that breaks CWoLa: ``correlation="none"`` (0), ``"realistic"``
  (1.0), ``"strong"`` (3.0) or a number, in units of standard deviations per unit of ``m``,
  along a direction ``b`` that points away from the signal (the falling spectrum then makes
  the sidebands look more signal-like than the SR's background);
* signal: a narrow resonance ``m ~ N(m_signal, width)`` with ``g`` independent of ``m`` and
  concentrated away from the background's bulk.

The signal amount is set by ``s_over_b``, the expected ratio of signal to background events in
the signal region ``[sr_low, sr_high]`` (the one SR definition comes with the data: ``.sr``).
Besides the observed ``data`` (all ``m``), :func:`bump_hunt` draws independent samples for the
evaluation and the bounds, all restricted to the SR: ``test`` (labelled background and signal),
``extra_background`` (the idealized anomaly detector's perfect background sample) and
``extra_signal`` (for the supervised classifier).

Example:
    >>> from pyroflows.datasets import bump_hunt
    >>> hunt = bump_hunt(20_000, s_over_b=0.05, n_test_background=1000, n_test_signal=100,
    ...                  n_extra_background=1000, n_extra_signal=100, seed=0)
    >>> hunt.data.x.shape[1], hunt.sr
    (4, (3.3, 3.7))
    >>> in_sr = (hunt.data.m > 3.3) & (hunt.data.m < 3.7)
    >>> n_sig = hunt.data.label[in_sr].sum()
    >>> round(float(n_sig / (in_sr.sum() - n_sig)), 2)
    0.05
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["BumpHunt", "BumpHuntGenerator", "Events", "bump_hunt"]

CORRELATIONS = {"none": 0.0, "realistic": 1.0, "strong": 3.0}


@dataclass
class Events:
    """A set of events: resonant feature ``m`` ``(n,)``, features ``x`` ``(n, 4)`` and truth
    ``label`` ``(n,)`` (1 signal, 0 background)."""

    m: np.ndarray
    x: np.ndarray
    label: np.ndarray

    def __len__(self) -> int:
        return len(self.m)

    def __getitem__(self, index) -> Events:
        return Events(self.m[index], self.x[index], self.label[index])

    @staticmethod
    def concat(*parts: Events) -> Events:
        return Events(
            np.concatenate([p.m for p in parts]),
            np.concatenate([p.x for p in parts]),
            np.concatenate([p.label for p in parts]),
        )


def _sigmoid(g: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-g))


@dataclass
class BumpHuntGenerator:
    """The generative model with its exact densities (see the module docstring).

    Args:
        correlation: ``"none"``, ``"realistic"``, ``"strong"`` or the strength ``k`` itself.
        power: exponent of the falling ``m`` spectrum.
        m_min, m_max: the range of ``m``.
        m_ref: where the background's ``x`` distribution has its reference mean (``g = 0``).
        m_signal, width: the resonance's mass and width.
        signal_mean, signal_std: the signal's Gaussian in ``g`` space (before the sigmoids).
        sr: the signal region ``(low, high)``.
    """

    correlation: str | float = "realistic"
    power: float = 4.0
    m_min: float = 2.5
    m_max: float = 6.5
    m_ref: float = 3.5
    m_signal: float = 3.5
    width: float = 0.05
    signal_mean: tuple[float, ...] = (1.5, -1.5, -1.2, 1.2)
    signal_std: float = 0.6
    sr: tuple[float, float] = (3.3, 3.7)
    direction: tuple[float, ...] = (-0.7, 0.5, 0.4, -0.3)
    covariance: np.ndarray = field(
        default_factory=lambda: np.array(
            [[1.0, 0.5, 0.0, 0.2], [0.5, 1.0, 0.3, 0.0], [0.0, 0.3, 1.0, 0.4], [0.2, 0.0, 0.4, 1.0]]
        )
    )

    dim = 4

    def __post_init__(self):
        if isinstance(self.correlation, str):
            if self.correlation not in CORRELATIONS:
                raise ValueError(
                    f"correlation must be one of {tuple(CORRELATIONS)} or a number, "
                    f"got {self.correlation!r}"
                )
            self.strength = CORRELATIONS[self.correlation]
        else:
            self.strength = float(self.correlation)
        if not self.m_min < self.sr[0] < self.sr[1] < self.m_max:
            raise ValueError(f"need m_min < sr low < sr high < m_max, got sr={self.sr}")
        self._chol = np.linalg.cholesky(self.covariance)

    # -- the m spectrum ---------------------------------------------------------------------
    def _cdf_power(self, m):
        a = 1.0 - self.power
        return (np.asarray(m, float) ** a - self.m_min**a) / (self.m_max**a - self.m_min**a)

    def background_fraction(self, low: float, high: float) -> float:
        """Exact fraction of background events with ``low < m < high``."""
        low, high = max(low, self.m_min), min(high, self.m_max)
        return float(max(0.0, self._cdf_power(high) - self._cdf_power(low)))

    def signal_fraction(self, low: float, high: float) -> float:
        """Exact fraction of signal events with ``low < m < high``."""
        from scipy.special import ndtr

        z = (np.array([low, high]) - self.m_signal) / self.width
        return float(ndtr(z[1]) - ndtr(z[0]))

    def log_prob_m(self, m: np.ndarray) -> np.ndarray:
        """Exact background log-density of ``m``."""
        a = 1.0 - self.power
        norm = (self.m_max**a - self.m_min**a) / a
        m = np.asarray(m, float)
        inside = (m >= self.m_min) & (m <= self.m_max)
        with np.errstate(divide="ignore"):
            return np.where(inside, -self.power * np.log(m) - np.log(norm), -np.inf)

    def sample_m(self, n: int, rng: np.random.Generator, low=None, high=None) -> np.ndarray:
        """Background ``m`` by inverse CDF, optionally restricted to ``(low, high)``."""
        low = self.m_min if low is None else low
        high = self.m_max if high is None else high
        u = rng.uniform(self._cdf_power(low), self._cdf_power(high), n)
        a = 1.0 - self.power
        return (self.m_min**a + u * (self.m_max**a - self.m_min**a)) ** (1.0 / a)

    # -- the features -----------------------------------------------------------------------
    def background_mean(self, m: np.ndarray) -> np.ndarray:
        """Mean of the background's Gaussian ``g`` given ``m``, ``(n, 4)``."""
        shift = self.strength * (np.asarray(m, float) - self.m_ref)
        return shift[:, None] * np.asarray(self.direction)[None, :]

    def _to_x(self, g: np.ndarray) -> np.ndarray:
        return np.concatenate([g[:, :2], _sigmoid(g[:, 2:])], axis=1)

    def _to_g(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        u = x[:, 2:]
        g = np.concatenate([x[:, :2], np.log(u) - np.log1p(-u)], axis=1)
        log_jac = -np.log(u * (1 - u)).sum(1)  # |dg/dx| of the logits
        return g, log_jac

    def sample_background_x(self, m: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        g = self.background_mean(m) + rng.standard_normal((len(m), self.dim)) @ self._chol.T
        return self._to_x(g)

    def sample_signal(self, n: int, rng: np.random.Generator) -> Events:
        m = rng.normal(self.m_signal, self.width, n)
        g = np.asarray(self.signal_mean) + self.signal_std * rng.standard_normal((n, self.dim))
        return Events(m, self._to_x(g), np.ones(n, dtype=int))

    def sample_background(self, n: int, rng: np.random.Generator, low=None, high=None) -> Events:
        m = self.sample_m(n, rng, low, high)
        return Events(m, self.sample_background_x(m, rng), np.zeros(n, dtype=int))

    def log_prob_background_x(self, x: np.ndarray, m: np.ndarray) -> np.ndarray:
        """Exact ``log p_bg(x | m)``."""
        g, log_jac = self._to_g(np.asarray(x, float))
        r = np.linalg.solve(self._chol, (g - self.background_mean(m)).T).T
        log_det = np.log(np.diag(self._chol)).sum()
        return -0.5 * (r**2).sum(1) - log_det - 0.5 * self.dim * np.log(2 * np.pi) + log_jac

    def log_prob_signal_x(self, x: np.ndarray) -> np.ndarray:
        """Exact ``log p_sig(x)``."""
        g, log_jac = self._to_g(np.asarray(x, float))
        z = (g - np.asarray(self.signal_mean)) / self.signal_std
        norm = self.dim * (np.log(self.signal_std) + 0.5 * np.log(2 * np.pi))
        return -0.5 * (z**2).sum(1) - norm + log_jac


@dataclass
class BumpHunt:
    """What :func:`bump_hunt` returns: the observed ``data`` (all ``m``, truth labels kept for
    evaluation only), SR-only ``test``, ``extra_background`` and ``extra_signal`` samples, the
    signal region ``sr`` and the ``generator`` (exact densities)."""

    data: Events
    test: Events
    extra_background: Events
    extra_signal: Events
    sr: tuple[float, float]
    generator: BumpHuntGenerator
    s_over_b: float


#: the least share of the signal's m inside the signal region that :func:`bump_hunt` accepts
_MIN_SIGNAL_INSIDE = 0.01


def bump_hunt(
    n_background: int = 1_000_000,
    s_over_b: float = 0.006,
    correlation: str | float = "realistic",
    *,
    n_test_background: int = 200_000,
    n_test_signal: int = 20_000,
    n_extra_background: int = 200_000,
    n_extra_signal: int = 20_000,
    seed: int = 0,
    **options,
) -> BumpHunt:
    """Draw a bump hunt: ``n_background`` background events over the whole ``m`` range plus
    ``round(s_over_b * expected SR background)`` signal events, and the SR-only samples.

    The default sizes are like the LHC Olympics R&D set (10^6 background events); the signal's
    count is the expected number (exact S/B in the SR up to the few signal events in the
    resonance's tails outside it). ``options`` go to :class:`BumpHuntGenerator`.
    """
    if s_over_b < 0:
        raise ValueError(f"s_over_b must be >= 0, got {s_over_b}")
    gen = BumpHuntGenerator(correlation=correlation, **options)
    rng = np.random.default_rng(seed)
    low, high = gen.sr
    inside = gen.signal_fraction(low, high)
    if not inside >= _MIN_SIGNAL_INSIDE:
        raise ValueError(
            f"only a fraction {inside:.3g} of the signal (m_signal={gen.m_signal}, "
            f"width={gen.width}) lies in the signal region {gen.sr}: the SR-only signal samples "
            "could not be drawn; put the resonance inside the signal region"
        )
    n_sr = n_background * gen.background_fraction(low, high)
    n_signal = int(round(s_over_b * n_sr / gen.signal_fraction(low, high)))
    data = Events.concat(gen.sample_background(n_background, rng), gen.sample_signal(n_signal, rng))
    data = data[rng.permutation(len(data))]

    def sr_signal(n: int) -> Events:
        parts, have = [], 0
        while have < n:
            s = gen.sample_signal(2 * (n - have) + 10, rng)
            s = s[(s.m > low) & (s.m < high)]
            parts.append(s)
            have += len(s)
        return Events.concat(*parts)[:n]

    test = Events.concat(gen.sample_background(n_test_background, rng, low, high),
                         sr_signal(n_test_signal))  # fmt: skip
    return BumpHunt(
        data=data,
        test=test,
        extra_background=gen.sample_background(n_extra_background, rng, low, high),
        extra_signal=sr_signal(n_extra_signal),
        sr=gen.sr,
        generator=gen,
        s_over_b=s_over_b,
    )
