"""A sculpting check that sees inside the signal region without truth labels: the bump hunt's
pull predicted from background-density samples.

:func:`~pyroflows.anomaly.sculpting` needs labelled background in the SR;
:func:`~pyroflows.anomaly.sideband_check` needs none but tests the score's ``m`` dependence in
the sidebands only, so it misses a cut whose kept fraction bends inside the SR. A flow-based
detector (CATHODE, LaCATHODE, :class:`~pyroflows.anomaly.FlatInM`) has a background density
``p_bg(x | m)`` that it trusts *inside* the SR (that is what it was trained to interpolate).
:func:`predict_sculpting` applies the cut to samples of that density across the SR and its
sidebands and computes what a bump hunt on background alone would see:

1. the kept fraction ``eps_b`` of the samples in each ``m`` bin (``bins_per_region`` across the
   SR, bins of the same width over ``window`` each side);
2. the background spectrum before the cut, ``n_b``: the ``exp(polynomial in log m)`` Poisson
   fit to the data's *sideband* histogram (the same fit as :func:`sculpting`; the SR data, which
   may hold signal, are not used), evaluated in every bin;
3. the expected kept spectrum ``y_b = n_b eps_b``; the same fit to its sideband bins,
   interpolated into the SR, gives ``predicted``; ``expected = sum over the SR of y_b``; the
   predicted pull is ``(expected - predicted) / sqrt(predicted + fit error^2)`` (the pull a
   bump hunt on the data's background would show on average; ``bias`` is
   ``expected / predicted - 1``, independent of the data's size);
4. its Monte-Carlo error from the samples' binomial noise (linearised through the fit), and the
   test ``z = pull / error``.

A cut is flagged (``sculpts``) when ``|pull| > threshold`` (the bias is that many standard
deviations of the bump hunt's own error) *and* ``|z| > level`` (the samples show it beyond
their noise). The cut's threshold keeps the fraction ``efficiency`` of the SR background as
the density predicts it (or of ``reference_scores``, e.g. the SR data's scores).

**The assumption**: the density is right inside the SR, i.e. a cut keeps the same fraction of
its samples at ``m`` as of the true background at ``m``. A flow trained on the sidebands only
interpolates there; where it is wrong in a way the classifier sees, the forecast is wrong
(``tests/test_anomaly_forecast.py`` shows a density shifted inside the SR forecasting a fake
bump, and one that is right there but wrong in the sidebands caught by the sideband
comparison). The part that can be tested without truth is tested: with the data's own sideband
``scores``, the kept count per sideband bin is compared with ``n_b eps_b`` (a Pearson ``chi2``
and the largest bin pull, ``sideband_max_abs_z``); a misfit there (``sideband_ok`` false) means
the density or the cut is not what the data see, and the SR forecast is not to be trusted.
Pass sideband events the classifier was not trained on (for CATHODE every sideband event).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from pyroflows.anomaly.region import SignalRegion
from pyroflows.anomaly.sculpting import _binning, _poisson_fit
from pyroflows.anomaly.sideband import SculptingWarning
from pyroflows.validation import positive_int

__all__ = ["flow_sculpting_check", "predict_sculpting"]


def _interpolate(y: np.ndarray, sr_bins: np.ndarray, X: np.ndarray, degree: int):
    """Poisson fit of ``y`` in the sideband bins; the SR's predicted count, its fit error and
    the derivative of ``sum_SR y - predicted`` with respect to every ``y_b``."""
    side = ~sr_bins
    c, cov = _poisson_fit(X[side, 1], y[side], degree)
    mu = np.exp(X @ c)
    grad = (mu[sr_bins, None] * X[sr_bins]).sum(0)
    predicted = float(mu[sr_bins].sum())
    error = float(np.sqrt(grad @ cov @ grad))
    derivative = sr_bins.astype(float)
    derivative[side] = -(X[side] @ (cov @ grad))  # d predicted / d y_b = grad' cov x_b
    return predicted, error, derivative, mu


def _weighted_threshold(scores: np.ndarray, weights: np.ndarray, eff: float) -> float:
    """The largest score ``t`` such that the weighted fraction of ``scores >= t`` is at least
    ``eff``."""
    order = np.argsort(scores)[::-1]
    kept = np.cumsum(weights[order]) / weights.sum()
    return float(scores[order][min(int(np.searchsorted(kept, eff - 1e-12)), len(order) - 1)])


def predict_sculpting(
    sample_m,
    sample_scores,
    m,
    region: SignalRegion,
    efficiencies=(0.2, 0.05),
    *,
    scores=None,
    reference_scores=None,
    window: float | None = None,
    bins_per_region: int = 4,
    degree: int = 3,
    threshold: float = 2.0,
    level: float = 3.0,
    min_per_bin: int = 1000,
    nonfinite: str = "raise",
    warn: bool = True,
) -> dict:
    """The bump hunt's pull after cuts on the score, predicted from background-density samples
    (see the module docstring for the method and its assumption).

    Args:
        sample_m: ``m`` of the background-density samples, ``(k,)``; every bin of the fit range
            needs ``min_per_bin`` of them (samples outside the range are not used).
        sample_scores: the detector's scores of the samples, ``(k,)``.
        m: the data's resonant feature, ``(n,)``; its sideband events within the fit range
            set the spectrum (and the size) of the forecast; SR events are not used.
        region: the :class:`~pyroflows.anomaly.SignalRegion`.
        efficiencies: fractions of the SR background each cut keeps.
        scores: the data's scores ``(n,)``, optional: compares the kept fraction in the
            sideband bins with the samples' (the part of the assumption that data can test).
        reference_scores: the scores that set the cuts (e.g. the SR data's); None: the cut
            keeps ``efficiency`` of the SR background as the samples predict it.
        window: the fit range is ``[low - window, high + window]`` (None: two SR widths).
        bins_per_region: bins across the SR (the sideband bins have the same width).
        degree: degree of the polynomial in ``log m`` for ``log`` of the expected counts.
        threshold: flag a cut whose ``|pull|`` exceeds it (and whose ``|z|`` exceeds ``level``).
        level: the Monte-Carlo significance ``|pull| / pull_error`` a flag needs.
        min_per_bin: fewest samples per bin.
        nonfinite: ``"raise"`` on NaN / inf scores, or ``"lowest"`` (NaN never selected).
        warn: give a :class:`SculptingWarning` naming the efficiency and the predicted pull when
            a cut is flagged, or when the spectrum or the sideband comparison misfits.

    Returns:
        ``efficiencies``, and per cut (lists): ``thresholds`` (score cuts), ``expected``,
        ``predicted``, ``predicted_error``, ``pull``, ``pull_error``, ``z``, ``bias``,
        ``sculpts``; ``edges``, ``efficiency_ratio`` (per cut and bin: the samples' kept
        fraction over the SR's, 1 everywhere for a cut that does not depend on ``m``),
        ``spectrum`` (``n_b``), ``spectrum_chi2_ndf`` (the no-cut fit to the data's
        sidebands), ``any_sculpts``; with ``scores``: ``sideband_chi2_ndf`` and
        ``sideband_max_abs_z`` (per cut: the data's kept count per sideband bin against the
        samples' kept fraction times the bin's count), ``sideband_limit`` (the two-sided 3
        sigma tail, 0.27 %, split over the sideband bins and cuts) and ``sideband_ok`` (no
        bin beyond it).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> region = SignalRegion(3.3, 3.7)
        >>> m = 2.1 * (1 - rng.uniform(0.0, 0.97, 200_000)) ** (-1 / 3)  # the data's spectrum
        >>> sample_m = rng.uniform(2.5, 4.5, 400_000)  # background samples, x ~ N(m, 1)
        >>> sample_x = sample_m + rng.normal(0, 1, sample_m.size)
        >>> smooth = sample_x  # prefers high m, smoothly
        >>> learned_m = -np.abs(sample_m - 3.5) + 0.3 * (sample_x - sample_m)  # the SR's m
        >>> [predict_sculpting(sample_m, s, m, region, (0.2,), warn=False)["sculpts"]
        ...  for s in (smooth, learned_m)]
        [[False], [True]]
    """
    from pyroflows.anomaly.metrics import _rankable

    sample_m = np.asarray(sample_m, float).reshape(-1)
    s, _ = _rankable(sample_scores, nonfinite)
    if sample_m.shape != s.shape:
        raise ValueError(f"sample_m {sample_m.shape} and sample_scores {s.shape} differ in length")
    m = np.asarray(m, float).reshape(-1)
    if not (np.isfinite(m).all() and np.isfinite(sample_m).all()):
        raise ValueError("m or sample_m has NaN or infinite values")
    if degree < 0 or bins_per_region < 1 or not threshold >= 0 or not level >= 0:
        raise ValueError(f"need degree >= 0, bins_per_region >= 1, threshold >= 0 and level >= "
                         f"0, got {degree}, {bins_per_region}, {threshold}, {level}")  # fmt: skip
    min_per_bin = positive_int("min_per_bin", min_per_bin)
    effs = [float(e) for e in efficiencies]
    if not effs or not all(0 < e < 1 for e in effs):
        raise ValueError(f"efficiencies must be in (0, 1), got {efficiencies}")
    data_s = None
    if scores is not None:
        data_s, _ = _rankable(scores, nonfinite)
        if data_s.shape != m.shape:
            raise ValueError(f"m {m.shape} and scores {data_s.shape} differ in length")
    edges, sr_bins, t = _binning(region, window, bins_per_region)
    side = ~sr_bins
    if side.sum() <= degree + 1:
        raise ValueError(f"{int(side.sum())} sideband bins cannot constrain a degree-{degree} fit")
    X = np.vander(t, degree + 1, increasing=True)
    # 1. the samples per bin
    bin_of = np.searchsorted(edges, sample_m, side="right") - 1
    used = (bin_of >= 0) & (bin_of < len(edges) - 1)
    per_bin = np.bincount(bin_of[used], minlength=len(edges) - 1)
    if per_bin.min() < min_per_bin:
        b = int(np.argmin(per_bin))
        raise ValueError(
            f"only {int(per_bin[b])} samples in the bin [{edges[b]:.6g}, {edges[b + 1]:.6g}] "
            f"(need min_per_bin={min_per_bin} in every bin of [{edges[0]:.6g}, {edges[-1]:.6g}])"
        )
    bin_of, s_used = bin_of[used], s[used]
    # 2. the background spectrum before the cut: the fit to the data's sidebands
    data_bin = np.searchsorted(edges, m, side="right") - 1
    in_range = (data_bin >= 0) & (data_bin < len(edges) - 1)
    counts = np.bincount(data_bin[in_range], minlength=len(edges) - 1).astype(float)
    if counts[side].sum() < 10:
        raise ValueError(f"only {int(counts[side].sum())} data events in the sideband bins")
    c0, _ = _poisson_fit(t[side], counts[side], degree)
    spectrum = np.exp(X @ c0)
    ndf = max(int(side.sum()) - degree - 1, 1)
    spectrum_chi2 = float(np.sum((counts[side] - spectrum[side]) ** 2 / spectrum[side]) / ndf)
    # 3. per cut: the samples' kept fraction per bin, the expected kept spectrum, its fit
    # each sample weighs the fitted spectrum's density at its m over the samples' in its bin:
    # the kept fraction per bin is then the spectrum-weighted one, as for the data
    t_used = np.log(sample_m[used] / region.center) / np.log(edges[-1] / edges[0])
    weights = np.exp(np.vander(t_used, degree + 1, increasing=True) @ c0)
    weights *= (spectrum / np.bincount(bin_of, weights, minlength=len(edges) - 1))[bin_of]
    in_sr = sr_bins[bin_of]
    ranked = None
    if reference_scores is not None:
        ranked = np.sort(_rankable(reference_scores, nonfinite)[0])[::-1]
        if len(ranked) == 0:
            raise ValueError("reference_scores is empty")
    keys = ("thresholds", "expected", "predicted", "predicted_error", "pull", "pull_error",
            "z", "bias", "sculpts", "efficiency_ratio", "sideband_chi2_ndf",
            "sideband_max_abs_z")  # fmt: skip
    out: dict[str, Any] = {k: [] for k in keys}
    n_tests = int(side.sum()) * len(effs)
    for eff in effs:
        if ranked is None:
            cut = _weighted_threshold(s_used[in_sr], weights[in_sr], eff)
        else:
            cut = float(ranked[max(1, int(round(eff * len(ranked)))) - 1])
        keep = s_used >= cut
        y = np.bincount(bin_of[keep], weights[keep], minlength=len(edges) - 1)
        frac = y / spectrum
        if (y[side] == 0).all():
            raise ValueError(f"the cut at efficiency {eff} keeps no sample in the sidebands")
        predicted, error, derivative, _ = _interpolate(y, sr_bins, X, degree)
        expected = float(y[sr_bins].sum())
        scale = np.sqrt(predicted + error**2)
        pull = (expected - predicted) / scale
        # the samples' binomial noise, weighted: sum over a bin of w^2 (kept - frac)^2
        var_y = np.bincount(bin_of, weights**2 * (keep - frac[bin_of]) ** 2,
                            minlength=len(edges) - 1)  # fmt: skip
        pull_error = float(np.sqrt(derivative**2 @ var_y) / scale)
        z = pull / pull_error if pull_error > 0 else (0.0 if pull == 0 else np.inf * np.sign(pull))
        sr_frac = y[sr_bins].sum() / spectrum[sr_bins].sum()
        if sr_frac == 0:
            raise ValueError(f"the cut at efficiency {eff} keeps no sample in the SR")
        for key, value in (("thresholds", cut), ("expected", expected),
                           ("predicted", predicted), ("predicted_error", error),
                           ("pull", float(pull)), ("pull_error", pull_error), ("z", float(z)),
                           ("bias", expected / predicted - 1.0),
                           ("sculpts", bool(abs(pull) > threshold and abs(z) > level)),
                           ("efficiency_ratio", frac / sr_frac)):  # fmt: skip
            out[key].append(value)
        if data_s is not None:
            # the data's kept count per sideband bin against the samples' kept fraction
            data_kept = np.bincount(data_bin[in_range & (data_s >= cut)],
                                    minlength=len(edges) - 1)[side]  # fmt: skip
            n_b, f_b, var_y_side = counts[side], frac[side], var_y[side]
            var = n_b * f_b * (1 - f_b) + (n_b / spectrum[side]) ** 2 * var_y_side
            with np.errstate(divide="ignore", invalid="ignore"):
                zb = np.where(var > 0, (data_kept - n_b * f_b) / np.sqrt(var), 0.0)
            out["sideband_chi2_ndf"].append(float(np.mean(zb**2)))
            out["sideband_max_abs_z"].append(float(np.abs(zb).max()))
    out.update(efficiencies=effs, edges=edges, spectrum=spectrum,
               spectrum_chi2_ndf=spectrum_chi2, any_sculpts=any(out["sculpts"]))  # fmt: skip
    if data_s is None:
        del out["sideband_chi2_ndf"], out["sideband_max_abs_z"]
    else:
        from scipy.stats import norm

        limit = float(norm.isf(0.0027 / 2 / n_tests))  # 3 sigma, Bonferroni over the bins
        out["sideband_limit"] = limit
        out["sideband_ok"] = bool(max(out["sideband_max_abs_z"]) <= limit)
    if warn:
        _warn(out, threshold, level)
    return out


def _warn(out: dict, threshold: float, level: float) -> None:
    if out["spectrum_chi2_ndf"] > 3.0:
        warnings.warn(
            f"predict_sculpting: the fit to the data's sidebands has chi2/ndf "
            f"{out['spectrum_chi2_ndf']:.1f}: the fit family does not describe this spectrum "
            "and the forecast is not reliable (change degree or window)",
            SculptingWarning, stacklevel=3,
        )  # fmt: skip
    if out.get("sideband_ok") is False:
        warnings.warn(
            f"predict_sculpting: in the sidebands the data's kept fraction differs from the "
            f"background samples' by up to {max(out['sideband_max_abs_z']):.1f} sigma (limit "
            f"{out['sideband_limit']:.1f}): the density or the cut is not what the data see, "
            "so its forecast inside the SR is not to be trusted",
            SculptingWarning, stacklevel=3,
        )  # fmt: skip
    for eff, pull, err, bias, flag in zip(out["efficiencies"], out["pull"], out["pull_error"],
                                          out["bias"], out["sculpts"], strict=True):  # fmt: skip
        if flag:
            warnings.warn(
                f"predict_sculpting: a cut keeping {eff:.0%} of the SR background sculpts the "
                f"m spectrum: predicted bump-hunt pull {pull:+.1f} +- {err:.1f} (bias "
                f"{bias:+.1%} of the background in the SR; threshold |pull| > {threshold}, "
                f"|z| > {level}); the background-density samples show it, provided the "
                "density is right inside the SR",
                SculptingWarning, stacklevel=3,
            )  # fmt: skip


def flow_sculpting_check(
    detector: Any,
    m,
    region: SignalRegion,
    efficiencies=(0.2, 0.05),
    *,
    background: Any = None,
    per_bin: int = 20_000,
    seed: int = 0,
    scores=None,
    reference_scores=None,
    window: float | None = None,
    bins_per_region: int = 4,
    **options: Any,
) -> dict:
    """:func:`predict_sculpting` with the samples drawn here: ``per_bin`` samples of the
    background density per bin, ``m`` uniform within the bin, scored by ``detector``.

    Args:
        detector: a fitted detector with ``score(x, m)`` (CATHODE, LaCATHODE, FlatInM, ...),
            or a callable ``(x, m) -> scores``.
        m: the data's resonant feature (its sidebands set the spectrum; see
            :func:`predict_sculpting`).
        region: the :class:`~pyroflows.anomaly.SignalRegion`.
        efficiencies: fractions of the SR background each cut keeps.
        background: the density ``p_bg(x | m)`` with ``sample(m, seed=...)`` (None: the
            detector's ``background``, e.g. CATHODE's sideband flow).
        per_bin: samples per bin.
        seed: seed of the samples.
        scores, reference_scores, window, bins_per_region: see :func:`predict_sculpting`.
        **options: the other options of :func:`predict_sculpting` (``threshold``, ``level``,
            ``degree``, ``nonfinite``, ``warn``).

    Returns:
        :func:`predict_sculpting`'s dict.

    Example:
        >>> from pyroflows.datasets import bump_hunt
        >>> from pyroflows import anomaly as A
        >>> hunt = bump_hunt(20_000, 0.05, "strong", n_test_background=500, n_test_signal=50,
        ...                  n_extra_background=10, n_extra_signal=10, seed=0)
        >>> density = A.ConditionalDensity(layers=2, hidden=(16,), max_epochs=2)
        >>> region = A.SignalRegion(*hunt.sr)
        >>> cathode = A.CATHODE(region, density, "hgb").fit(hunt.data.x, hunt.data.m)
        >>> check = A.flow_sculpting_check(cathode, hunt.data.m, region, per_bin=2000,
        ...                                warn=False)
        >>> sorted(k for k in check if k.startswith("pull"))
        ['pull', 'pull_error']
    """
    per_bin = positive_int("per_bin", per_bin)
    if background is None:
        background = getattr(detector, "background", None)
    if background is None or not hasattr(background, "sample"):
        raise ValueError(
            "flow_sculpting_check needs a background density with sample(m): pass background, "
            "or a detector that has one (CATHODE, LaCATHODE, FlatInM)"
        )
    score = detector if callable(detector) and not hasattr(detector, "score") else detector.score
    edges, _, _ = _binning(region, window, positive_int("bins_per_region", bins_per_region))
    rng = np.random.default_rng(seed)
    sample_m = rng.uniform(np.repeat(edges[:-1], per_bin), np.repeat(edges[1:], per_bin))
    sample_x = background.sample(sample_m, seed=seed)
    sample_scores = np.asarray(score(sample_x, sample_m), float)
    return predict_sculpting(
        sample_m, sample_scores, m, region, efficiencies, scores=scores,
        reference_scores=reference_scores, window=window, bins_per_region=bins_per_region,
        **{"min_per_bin": min(1000, per_bin), **options},
    )  # fmt: skip
