"""Weakly supervised resonant anomaly detection ("bump hunts") with conditional flows.

Events have a resonant feature ``m`` and features ``x``; a rare signal sits in a window of ``m``
(the signal region, :class:`SignalRegion`) at an unknown place in ``x``. The detectors share one
SR definition, one classifier set-up (:func:`default_classifier`, by name) and one
conditional density (:class:`ConditionalDensity`, conditional flows trained with the shared
loop), and follow scikit-learn conventions (``fit`` then ``score``, higher = more anomalous):
:class:`CATHODE`, :class:`LaCATHODE` (CATHODE's classifier in the sideband flow's latent space,
where background does not depend on ``m``), :class:`ANODE`, :class:`RANODE`, :class:`CWoLa` and
the bounds :class:`IdealizedAD` and :class:`Supervised`. :mod:`~pyroflows.anomaly.metrics`
evaluates the scores (SIC curves, max SIC with a statistical cut, significance, median and 68 %
bands); :func:`sculpting` checks whether a cut on the score biases the sideband-fit background
estimate in the SR (on labelled background), :func:`sideband_check` does the same without truth
labels in validation windows of the sidebands, :func:`flow_sculpting_check` predicts the SR's
pull without truth labels from background-flow samples cut on the score, and
:class:`FlatInM` makes a score's cuts keep background at the same rate at every ``m`` (its
quantile among background-flow samples there);
:func:`background_fidelity` measures how well a background density's samples mimic true SR
background (what CATHODE's reach depends on).

Example:
    >>> from pyroflows.datasets import bump_hunt
    >>> from pyroflows import anomaly
    >>> hunt = bump_hunt(20_000, 0.05, n_test_background=2000, n_test_signal=200,
    ...                  n_extra_background=10, n_extra_signal=10, seed=0)
    >>> region = anomaly.SignalRegion(*hunt.sr)
    >>> cwola = anomaly.CWoLa(region).fit(hunt.data.x, hunt.data.m)
    >>> result = anomaly.max_sic(hunt.test.label, cwola.score(hunt.test.x), min_background=20)
    >>> sorted(result)[:3]
    ['fpr', 'max_sic', 'nonfinite']
"""

from pyroflows.anomaly.classifier import AveragedClassifier, EpochEnsembleMLP, default_classifier
from pyroflows.anomaly.decorrelate import FlatInM
from pyroflows.anomaly.density import (
    CATHODE_FLOW,
    ConditionalDensity,
    cathode_background,
    kde_sample,
)
from pyroflows.anomaly.fidelity import background_fidelity
from pyroflows.anomaly.forecast import flow_sculpting_check, predict_sculpting
from pyroflows.anomaly.latent import LaCATHODE
from pyroflows.anomaly.methods import (
    ANODE,
    CATHODE,
    RANODE,
    CWoLa,
    IdealizedAD,
    Supervised,
)
from pyroflows.anomaly.metrics import (
    SICCurve,
    band,
    count_nonfinite,
    max_sic,
    sic_curve,
    significance,
    significance_after_cut,
)
from pyroflows.anomaly.region import SignalRegion
from pyroflows.anomaly.sculpting import sculpting
from pyroflows.anomaly.sideband import SculptingWarning, sideband_check

__all__ = [
    "ANODE",
    "AveragedClassifier",
    "CATHODE",
    "CATHODE_FLOW",
    "ConditionalDensity",
    "CWoLa",
    "FlatInM",
    "EpochEnsembleMLP",
    "IdealizedAD",
    "LaCATHODE",
    "RANODE",
    "SculptingWarning",
    "SICCurve",
    "SignalRegion",
    "Supervised",
    "background_fidelity",
    "band",
    "cathode_background",
    "count_nonfinite",
    "default_classifier",
    "flow_sculpting_check",
    "kde_sample",
    "max_sic",
    "predict_sculpting",
    "sculpting",
    "sideband_check",
    "sic_curve",
    "significance",
    "significance_after_cut",
]
