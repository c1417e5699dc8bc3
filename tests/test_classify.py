"""The shared classifier set-up: both kinds reach the Bayes-optimal probabilities of two
Gaussians, weights are honoured, out-of-fold scores never come from a model that saw the
row, bad inputs are refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from pyroflows.classify import Classifier, _weighted_bce, out_of_fold_proba


def two_gaussians(n, delta, seed=0):
    rng = np.random.default_rng(seed)
    X = np.concatenate([rng.normal(0, 1, (n, 1)), rng.normal(delta, 1, (n, 1))])
    return X, np.repeat([0, 1], n)


@pytest.mark.parametrize("kind", ["hgb", "mlp"])
def test_probabilities_approach_the_bayes_optimal_ones(kind):
    delta = 1.0
    X, y = two_gaussians(4000, delta)
    clf = Classifier(kind, max_epochs=30).fit(X, y)
    grid = np.linspace(-1.5, 2.5, 41)[:, None]
    exact = 1 / (1 + np.exp(-(delta * grid[:, 0] - delta**2 / 2)))
    assert np.abs(clf.predict_proba(grid) - exact).mean() < 0.04


def test_the_weighted_loss_equals_the_loss_on_duplicated_rows():
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 1)
    x, y = torch.randn(10, 2), (torch.rand(10) > 0.5).float()
    w = torch.tensor([1.0, 2, 3, 1, 1, 2, 1, 1, 4, 1])
    reps = w.long()
    dup = (x.repeat_interleave(reps, 0), y.repeat_interleave(reps), torch.ones(int(w.sum())))
    assert torch.allclose(_weighted_bce(model, (x, y, w)), _weighted_bce(model, dup), atol=1e-6)


@pytest.mark.parametrize("kind", ["hgb", "mlp"])
def test_weights_shift_the_probabilities(kind):
    X, y = two_gaussians(2000, 1.0)
    w = np.where(y == 1, 3.0, 1.0)  # class 1 three times as likely a priori
    p = Classifier(kind, max_epochs=30).fit(X, y, sample_weight=w).predict_proba(np.zeros((1, 1)))
    exact = 1 / (1 + np.exp(-(np.log(3.0) - 0.5)))
    assert p[0] == pytest.approx(exact, abs=0.06)


def test_out_of_fold_scores_do_not_remember_the_row():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(600, 3)), rng.integers(0, 2, 600)  # labels are pure noise
    in_sample = Classifier("hgb", max_iter=300).fit(X, y).predict_proba(X)
    assert roc_auc_score(y, in_sample) > 0.6  # a model that saw the rows remembers them
    oof = out_of_fold_proba(Classifier("hgb", max_iter=300), X, y, folds=5)
    assert abs(roc_auc_score(y, oof) - 0.5) < 0.07


def test_an_ensemble_averages_members_with_different_seeds():
    X, y = two_gaussians(300, 1.0)
    ens = Classifier("mlp", ensemble=3, max_epochs=5).fit(X, y)
    probs = [ens._proba(m, (X - ens.mean_) / ens.std_) for m in ens.members_]
    assert not np.allclose(probs[0], probs[1])
    assert np.allclose(ens.predict_proba(X), np.mean(probs, axis=0))


@pytest.mark.parametrize(
    "X, y, w, message",
    [
        (np.zeros((4, 1)), [0, 1, 2, 1], None, "0/1 label"),
        (np.zeros((4, 1)), [1, 1, 1, 1], None, "both classes"),
        (np.full((4, 1), np.nan), [0, 1, 0, 1], None, "finite"),
        (np.zeros((4, 1)), [0, 1, 0, 1], [1, -1, 1, 1], "sample_weight"),
        (np.zeros((4, 1)), [0, 1, 0, 1], [0, 0, 0, 0], "sample_weight"),
    ],
)
def test_bad_inputs_are_refused(X, y, w, message):
    with pytest.raises(ValueError, match=message):
        Classifier().fit(X, y, sample_weight=w)


def test_predicting_before_fitting_or_with_other_features_is_refused():
    with pytest.raises(RuntimeError, match="not fitted"):
        Classifier().predict_proba(np.zeros((2, 1)))
    X, y = two_gaussians(50, 1.0)
    with pytest.raises(ValueError, match="features"):
        Classifier().fit(X, y).predict_proba(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="kind"):
        Classifier("svm")


def test_equal_weights_reach_gradient_boosting_as_no_weights(monkeypatch):
    """scikit-learn's weighted binning is far slower; equal weights must not take it, and
    unequal ones must still arrive."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    seen = []
    fit = HistGradientBoostingClassifier.fit

    def spy(self, X, y, sample_weight=None):
        seen.append(sample_weight)
        return fit(self, X, y, sample_weight=sample_weight)

    monkeypatch.setattr(HistGradientBoostingClassifier, "fit", spy)
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(200, 3)), np.r_[np.zeros(100), np.ones(100)]
    Classifier("hgb", max_iter=5).fit(X, y)
    Classifier("hgb", max_iter=5).fit(X, y, sample_weight=np.full(200, 2.5))
    w = rng.uniform(0.5, 2.0, 200)
    Classifier("hgb", max_iter=5).fit(X, y, sample_weight=w)
    assert seen[0] is None and seen[1] is None
    assert np.array_equal(seen[2], w)


@pytest.mark.parametrize(
    "option, match",
    [({"activation": "gelu"}, "activation"), ({"weight_decay": -1.0}, "weight_decay"),
     ({"validation_fraction": 1.0}, "validation_fraction")],
    ids=["activation", "weight_decay", "validation_fraction"],
)  # fmt: skip
def test_bad_mlp_settings_are_refused(option, match):
    with pytest.raises(ValueError, match=match):
        Classifier("mlp", **option)


def test_mlp_settings_reach_the_network_and_the_loop_and_survive_clone(monkeypatch):
    import pyroflows.classify as classify

    seen = []
    loop = classify.fit

    def spy(model, loss, data, val, **kwargs):
        seen.append((len(data[0]), len(val[0]), kwargs["weight_decay"]))
        return loop(model, loss, data, val, **kwargs)

    monkeypatch.setattr(classify, "fit", spy)
    X, y = two_gaussians(100, 1.0)
    options = dict(activation="silu", weight_decay=1e-3, validation_fraction=0.1, max_epochs=2)
    for clf in (Classifier("mlp", **options), Classifier("mlp", **options).clone()):
        clf.fit(X, y)
        assert any(isinstance(m, torch.nn.SiLU) for m in clf.members_[0].modules())
    assert seen == [(180, 20, 1e-3), (180, 20, 1e-3)]
