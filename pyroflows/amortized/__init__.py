"""Amortized posterior estimation: simulations -> summary network + conditional flow -> p(θ | x).

- :mod:`~pyroflows.amortized.parameters`: :class:`ParameterSpace` (site names, shapes, supports,
  the bijection to the unconstrained space and the parameters' encoder).
- :mod:`~pyroflows.amortized.box`: ``intervals="box"`` (a box prior's sites in their own
  coordinates: bounded rejection, :class:`LowAcceptanceWarning`, the flow's mass inside the
  box that normalises ``log_prob``).
- :mod:`~pyroflows.amortized.observations`: :class:`ObservationSpace` (the data's shape
  contract, sets of varying size with NaN padding, checks, the data's encoder).
- :mod:`~pyroflows.amortized.simulate`: :class:`ModelSimulator` (a Pyro model, vectorised),
  :class:`VariableSizeSimulator` (a Pyro model with a varying number of observations, padded
  sets), :class:`PriorSimulator` (a prior and a batched simulator), :func:`drop_invalid`.
- :mod:`~pyroflows.amortized.estimator`: :class:`PosteriorEstimator` (summary network +
  conditional flow on encoded data) and chunked sampling / scoring.
- :mod:`~pyroflows.amortized.simulating`: the simulator a posterior's arguments describe and
  its simulation methods (``simulate``, ``simulate_data``).
- :mod:`~pyroflows.amortized.call`: one ``fit`` call checked once (:class:`FitCall`).
- :mod:`~pyroflows.amortized.recipe`: how a posterior is trained (modes, split, the
  ``flow="auto"`` portfolio, two phases, online simulations as a data source of the loop).
- :mod:`~pyroflows.amortized.saved`: the saved file (write, read and check, restore) and the
  methods ``save`` / ``load``.
- :mod:`~pyroflows.amortized.weights`: weighted simulations (``fit(..., sample_weight=)``:
  the check and the weighted standardisations).
- :mod:`~pyroflows.amortized.ensemble`: ``ensemble=k`` (members, mixture draws and density).
- :mod:`~pyroflows.amortized.heldout`: the calibration check of every fit on its held-out
  simulations (``heldout_sbc_``, :class:`CalibrationWarning`).
- :mod:`~pyroflows.amortized.fast_sampler`, :mod:`~pyroflows.amortized.misspecification`:
  the distilled sampler and the summary-space check, with the methods ``distil`` /
  ``calibrate_check`` / ``check_observation``.
- :mod:`~pyroflows.amortized.sequential`: :func:`fit_sequential`, truncated-prior rounds for
  one observation (TSNPE) with their checks (mass outside the region, SBC on the truncated
  prior).
- :mod:`~pyroflows.amortized.posterior`: :class:`AmortizedPosterior` (fit offline or online,
  sample, log_prob, ArviZ, save / load), the user's object over the parts above.

A new simulator goes to ``simulate``, a new data layout to ``observations``, a new network to
``estimator``, a new way of training to ``recipe`` (on :mod:`pyroflows.train`).
"""

from pyroflows.amortized.box import LowAcceptanceWarning
from pyroflows.amortized.estimator import PosteriorEstimator
from pyroflows.amortized.heldout import CalibrationWarning
from pyroflows.amortized.observations import ObservationSpace
from pyroflows.amortized.one_observation import OtherObservationWarning
from pyroflows.amortized.parameters import ParameterSpace
from pyroflows.amortized.posterior import AmortizedPosterior
from pyroflows.amortized.sequential import (
    SequentialResult,
    TruncationWarning,
    fit_sequential,
)
from pyroflows.amortized.simulate import (
    ModelSimulator,
    PriorSimulator,
    VariableSizeSimulator,
    drop_invalid,
)

__all__ = [
    "CalibrationWarning",
    "LowAcceptanceWarning",
    "AmortizedPosterior",
    "ModelSimulator",
    "ObservationSpace",
    "ParameterSpace",
    "PosteriorEstimator",
    "PriorSimulator",
    "SequentialResult",
    "TruncationWarning",
    "OtherObservationWarning",
    "VariableSizeSimulator",
    "drop_invalid",
    "fit_sequential",
]
