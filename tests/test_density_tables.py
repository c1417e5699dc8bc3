"""``benchmarks/density_tables.py``'s clock for the time to quality: a fitted default's curve
counts each member's validated start, at the time its mixture search ended, and its epochs,
all on the clock of ``fit``."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

import pyroflows as pf

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from _scoring import time_to  # noqa: E402
from density_tables import fit_curve  # noqa: E402


def test_the_curve_reaches_a_loss_when_the_validated_start_has_it(monkeypatch):
    """The mixture start's validation loss is reached when the search ends (0.4 s made
    longer here), not at the first epoch, nor before the search."""
    search = pf.density.mixture_base

    def slow_search(*args, **kwargs):
        out = search(*args, **kwargs)
        time.sleep(0.4)
        return out

    monkeypatch.setattr(pf.density, "mixture_base", slow_search)
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(-3, 0.5, (150, 2)), rng.normal(3, 0.5, (150, 2))])
    est = pf.DensityEstimator(
        layers=1, hidden=(8,), max_epochs=2, progress=False, random_state=0
    ).fit(X[:240], X_val=X[240:])
    gmm = est.candidates_[0]  # the first member: its start is the earliest point
    assert gmm["name"] == "nsf-gmm" and np.isfinite(gmm["start_loss"])
    curve = fit_curve(est.candidates_, lead=0.25)
    reached = time_to(curve, gmm["start_loss"])
    assert reached == 0.25 + gmm["start_time"]
    assert reached >= 0.25 + 0.4
    # every epoch of every member comes after its own start on the same clock
    for c in est.candidates_:
        assert min(c["history"].time) >= c["start_time"]


def test_a_variant_sets_the_mixture_search_while_it_is_fitted_and_restores_it():
    """``--variants``: ``whole-budget`` is the search cut only by the whole budget with full
    covariances first; ``share=X`` a share; ``narrow-search`` switches the narrowed search on,
    ``+`` joins names; the module's settings come back afterwards; an unknown name is
    refused."""
    import pytest
    from density_tables import mixture_settings, variant_settings

    from pyroflows import density_mixture

    before = density_mixture.MIXTURE_SHARE, density_mixture.MIXTURE_TYPES
    with mixture_settings("whole-budget"):
        assert density_mixture.MIXTURE_SHARE is None
        assert density_mixture.MIXTURE_TYPES == ("full", "diag", "tied")
    assert (density_mixture.MIXTURE_SHARE, density_mixture.MIXTURE_TYPES) == before
    assert variant_settings("share=0.4") == {(density_mixture, "MIXTURE_SHARE"): 0.4}
    assert not density_mixture.MIXTURE_NARROW
    with mixture_settings("narrow-search+share=0.25"):
        assert density_mixture.MIXTURE_NARROW and density_mixture.MIXTURE_SHARE == 0.25
    assert not density_mixture.MIXTURE_NARROW
    assert density_mixture.MIXTURE_SHARE == before[0]
    with pytest.raises(ValueError, match="unknown variant 'half'"):
        variant_settings("half")
    with pytest.raises(ValueError, match="unknown variant 'half'"):
        variant_settings("narrow-search+half")


def test_the_min_epochs_variant_sets_the_race_minimum_pilot_and_restores_it():
    """``--variants min-epochs=2``: the race's minimum pilot while the variant is fitted."""
    from density_tables import mixture_settings, variant_settings

    from pyroflows import racing

    assert variant_settings("min-epochs=2") == {(racing, "_MIN_EPOCHS"): 2}
    with mixture_settings("min-epochs=2+share=0.25"):
        assert racing._MIN_EPOCHS == 2
    assert racing._MIN_EPOCHS == 3
