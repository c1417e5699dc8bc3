"""Diagnostics of fitted flows, by topic; everything is importable from here.

- :mod:`~pyroflows.diagnostics.likelihood`: :func:`kl_monte_carlo`, :func:`gaussian_kl`,
  :func:`test_log_likelihood`.
- :mod:`~pyroflows.diagnostics.two_sample`: :func:`c2st` (a classifier tries to tell real from
  generated rows; also the classifier metric: calibrated AUC, JSD, interval, p-value, null
  check), :func:`plot_weight_histogram`, :func:`sampling_quality` (train on genuine,
  synthetic and augmented data, test on held-out genuine data).
- :mod:`~pyroflows.diagnostics.calibration`: :func:`sbc`, :func:`expected_coverage`,
  :func:`tarp`, :func:`z_score_contraction`, :func:`posterior_predictive` (amortized posteriors).
- :mod:`~pyroflows.diagnostics.importance`: :func:`psis` (Pareto k-hat, ESS and log-evidence
  of a guide as an importance proposal), :func:`ess`, :func:`pareto_k`.
- :mod:`~pyroflows.diagnostics.hotspots`: :class:`Grid`, :func:`cap_curve`, :func:`cap_auc`,
  :func:`hit_rate`.

Arrays may be NumPy arrays, lists or torch tensors; results are floats, NumPy arrays or small
dataclasses.
"""

from pyroflows.diagnostics.calibration import (
    CoverageResult,
    SBCResult,
    TARPResult,
    ZScoreResult,
    expected_coverage,
    posterior_predictive,
    sbc,
    sbc_ranks,
    tarp,
    z_score_contraction,
)
from pyroflows.diagnostics.hotspots import Grid, cap_auc, cap_curve, hit_rate
from pyroflows.diagnostics.importance import PSISResult, ess, pareto_k, psis
from pyroflows.diagnostics.likelihood import (
    Estimate,
    gaussian_kl,
    kl_monte_carlo,
    test_log_likelihood,
)
from pyroflows.diagnostics.two_sample import (
    C2STResult,
    ClassifierScores,
    SamplingQuality,
    c2st,
    make_classifier,
    plot_weight_histogram,
    sampling_quality,
)

__all__ = [
    "PSISResult",
    "ess",
    "pareto_k",
    "psis",
    "CoverageResult",
    "SBCResult",
    "TARPResult",
    "ZScoreResult",
    "expected_coverage",
    "posterior_predictive",
    "sbc",
    "sbc_ranks",
    "tarp",
    "z_score_contraction",
    "C2STResult",
    "ClassifierScores",
    "Estimate",
    "Grid",
    "SamplingQuality",
    "c2st",
    "cap_auc",
    "cap_curve",
    "gaussian_kl",
    "hit_rate",
    "kl_monte_carlo",
    "make_classifier",
    "plot_weight_histogram",
    "sampling_quality",
    "test_log_likelihood",
]
