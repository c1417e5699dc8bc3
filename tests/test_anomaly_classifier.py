"""The anomaly detectors' shared classifier set-up: the named choices, the MLP that averages its
best epochs, the averaged classifier, out-of-fold scores that never saw their row, and the
refusal of unknown set-ups."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

from pyroflows import anomaly as A
from pyroflows.anomaly.classifier import CHOICES, DEFAULT, MLP
from pyroflows.classify import Classifier, out_of_fold_proba

ROOT = Path(__file__).resolve().parents[1]
REGION = A.SignalRegion(3.3, 3.7)
FAST = dict(hidden=(32, 32), lr=3e-3, batch_size=64, max_epochs=12, patience=100)


def two_gaussians(n, delta, seed=0):
    rng = np.random.default_rng(seed)
    X = np.concatenate([rng.normal(0, 1, (n, 1)), rng.normal(delta, 1, (n, 1))])
    return X, np.repeat([0, 1], n)


def test_one_best_epoch_is_the_plain_mlp_and_more_average_the_next_best():
    X, y = two_gaussians(400, 1.0)
    grid = np.linspace(-2, 3, 11)[:, None]
    plain = Classifier("mlp", **FAST).fit(X, y).predict_proba(grid)
    one = A.EpochEnsembleMLP(1, **FAST).fit(X, y)
    assert np.array_equal(one.predict_proba(grid), plain)  # same seed, same best state
    three = A.EpochEnsembleMLP(3, **FAST).fit(X, y)
    states = three.members_[0]
    assert len(states) == 3
    each = [three._proba([s], three._features(grid)) for s in states]
    assert np.array_equal(each[0], plain)  # the first kept state is the best one
    assert np.allclose(three.predict_proba(grid), np.mean(each, axis=0), atol=1e-12)
    assert not np.allclose(each[1], each[0])  # the others are other epochs


def test_the_epoch_ensemble_reaches_the_bayes_optimal_probabilities():
    delta = 1.0
    X, y = two_gaussians(3000, delta)
    clf = A.EpochEnsembleMLP(3, hidden=(32, 32), lr=2e-3, batch_size=256, max_epochs=20).fit(X, y)
    grid = np.linspace(-1.5, 2.5, 41)[:, None]
    exact = 1 / (1 + np.exp(-(delta * grid[:, 0] - delta**2 / 2)))
    assert np.abs(clf.predict_proba(grid) - exact).mean() < 0.04


def test_the_averaged_classifier_is_the_mean_of_its_parts():
    X, y = two_gaussians(300, 1.0)
    parts = [Classifier("hgb", max_iter=20), Classifier("mlp", **FAST)]
    avg = A.AveragedClassifier(parts).fit(X, y)
    alone = [p.clone().fit(X, y).predict_proba(X) for p in parts]
    assert np.allclose(avg.predict_proba(X), np.mean(alone, axis=0), atol=1e-12)
    assert isinstance(avg.clone(), A.AveragedClassifier) and not avg.clone().members_
    with pytest.raises(ValueError, match="at least 2"):
        A.AveragedClassifier([Classifier("hgb")])


@pytest.mark.parametrize("name", ["mlp-epochs", "hgb+mlp"])
def test_out_of_fold_scores_come_from_models_that_did_not_see_the_row(name):
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(240, 2)), rng.integers(0, 2, 240)
    clf = A.default_classifier(name)
    clf = clf if name == "hgb+mlp" else A.EpochEnsembleMLP(3, **FAST)
    oof = out_of_fold_proba(clf, X, y, folds=3, random_state=1)
    splitter = StratifiedKFold(3, shuffle=True, random_state=1)
    for train, test in splitter.split(X, y):  # each fold: a copy fitted without its rows
        alone = clf.clone().fit(X[train], y[train]).predict_proba(X[test])
        assert np.allclose(oof[test], alone, atol=1e-12)
    assert abs(roc_auc_score(y, oof) - 0.5) < 0.1  # labels are pure noise


def test_the_default_set_up_is_the_one_the_detectors_use_and_the_docs_name():
    setup = A.default_classifier()
    assert A.CATHODE(REGION).classifier.kind == setup.kind
    assert type(A.CWoLa(REGION).classifier) is type(setup)
    guide = (ROOT / "docs" / "guides" / "anomaly-detection.md").read_text()
    named = re.search(r"default classifier set-up is `([^`]+)`", guide)
    assert named is not None and named.group(1) == DEFAULT


@pytest.mark.parametrize("name", CHOICES)
def test_every_named_set_up_builds_seeded(name):
    clf = A.default_classifier(name, seed=7)
    assert isinstance(clf, Classifier)
    assert A.CATHODE(REGION, classifier=name, seed=7).classifier.random_state == clf.random_state
    if name in ("mlp", "mlp-epochs"):
        assert clf.hidden == MLP["hidden"] and clf.batch_size == MLP["batch_size"]


def test_unknown_set_ups_and_bad_options_are_refused():
    for make in (lambda: A.default_classifier("svm"), lambda: A.CATHODE(REGION, classifier="svm"),
                 lambda: A.IdealizedAD(REGION, "MLP"), lambda: A.Supervised("boost"),
                 lambda: A.LaCATHODE(REGION, classifier="hgb-mlp")):  # fmt: skip
        with pytest.raises(ValueError, match="classifier must be one of"):
            make()
    with pytest.raises(TypeError, match="classifier must be"):
        A.CWoLa(REGION, classifier=3)
    with pytest.raises(ValueError, match="cannot exceed"):
        A.EpochEnsembleMLP(5, max_epochs=3)
    with pytest.raises(ValueError, match="is an MLP"):
        A.EpochEnsembleMLP(2, kind="hgb")
