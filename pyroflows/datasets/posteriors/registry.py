"""The list of posteriors: which model, which data file, which split."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from pyroflows.datasets.posteriors import gp, hierarchical, mixture, regression, synthetic
from pyroflows.datasets.posteriors import timeseries as ts

#: posteriordb posteriors kept for the confirmation run (never used to choose or tune a guide)
RESERVED = (
    "eight_schools-eight_schools_noncentered",
    "diamonds-diamonds",
    "gp_pois_regr-gp_pois_regr",
    "arK-arK",
    "garch-garch11",
    "low_dim_gauss_mix-low_dim_gauss_mix",
    "sblrc-blr",
    "kidiq-kidscore_interaction",
)


@dataclass(frozen=True)
class Spec:
    """How to build one posterior: ``model(**data, **options)`` with ``data`` from the
    ``.npz`` file (``data_*`` arrays) or, for a synthetic target, draws from ``exact``."""

    model: Callable[..., None]
    kind: str
    source: str
    options: dict = field(default_factory=dict)
    exact: Callable | None = None


_flat = partial(Spec, regression.linear_regression, "regression", "posteriordb")

SPECS: dict[str, Spec] = {
    # -- development ------------------------------------------------------------------------
    "earnings-earn_height": _flat(),
    "earnings-logearn_interaction": _flat(),
    "kidiq-kidscore_momhsiq": _flat(options={"sigma_prior": "half_cauchy", "sigma_scale": 2.5}),
    "mesquite-logmesquite_logvolume": _flat(),
    "nes1972-nes": _flat(),
    "kilpisjarvi_mod-kilpisjarvi": _flat(),
    "sblri-blr": _flat(
        options={"beta_scale": 10.0, "sigma_prior": "half_normal", "sigma_scale": 10.0}
    ),  # fmt: skip
    "arma-arma11": Spec(ts.arma11, "time series", "posteriordb"),
    "gp_pois_regr-gp_regr": Spec(gp.gp_regr, "gaussian process", "posteriordb"),
    "hmm_example-hmm_example": Spec(ts.hmm_example, "simplex + ordered (HMM)", "posteriordb"),
    "surgical-noncentered": Spec(
        hierarchical.surgical_noncentered, "hierarchical, non-centred", "Pyro NUTS"
    ),
    "surgical-centered": Spec(hierarchical.surgical_centered, "hierarchical, centred", "Pyro NUTS"),
    "funnel10": Spec(synthetic.funnel10, "funnel", "exact", exact=synthetic.funnel10_exact),
    "banana6": Spec(synthetic.banana6, "banana", "exact", exact=synthetic.banana6_exact),
    "bimodal4": Spec(synthetic.bimodal4, "multimodal", "exact", exact=synthetic.bimodal4_exact),
    "student_t5": Spec(
        synthetic.student_t5, "heavy-tailed", "exact", exact=synthetic.student_t5_exact
    ),
    "lkj4": Spec(synthetic.lkj4, "correlation matrix", "exact", exact=synthetic.lkj4_exact),
    # -- confirmation (reserved) -------------------------------------------------------------
    "eight_schools-eight_schools_noncentered": Spec(
        hierarchical.eight_schools_noncentered, "hierarchical, non-centred", "posteriordb"
    ),
    "diamonds-diamonds": Spec(regression.diamonds, "regression", "posteriordb"),
    "gp_pois_regr-gp_pois_regr": Spec(gp.gp_pois_regr, "gaussian process", "posteriordb"),
    "arK-arK": Spec(ts.ar_k, "time series", "posteriordb"),
    "garch-garch11": Spec(ts.garch11, "time series", "posteriordb"),
    "low_dim_gauss_mix-low_dim_gauss_mix": Spec(
        mixture.low_dim_gauss_mix, "mixture (ordered)", "posteriordb"
    ),
    "sblrc-blr": _flat(
        options={"beta_scale": 10.0, "sigma_prior": "half_normal", "sigma_scale": 10.0}
    ),  # fmt: skip
    "kidiq-kidscore_interaction": _flat(options={"sigma_prior": "half_cauchy", "sigma_scale": 2.5}),
}
