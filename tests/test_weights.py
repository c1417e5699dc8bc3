"""Weighted training: per-row weights in the likelihood loss, in the one loop, in the density
estimator and on the command line, checked against exact answers (duplicated rows, rows left
out, the weighted maximum-likelihood Gaussian) and against the refusals of bad weights."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import pyroflows as pf
from pyroflows.cli import main
from pyroflows.train.weights import (
    check_sample_weight,
    check_weight_pairing,
    effective_sample_size,
)

from conftest import randomize


class Gaussian(nn.Module):
    """N(mu, sigma^2) in one dimension, with the flows' ``log_prob`` signature."""

    def __init__(self):
        super().__init__()
        self.mu = nn.Parameter(torch.zeros((), dtype=torch.float64))
        self.log_sigma = nn.Parameter(torch.zeros((), dtype=torch.float64))

    def log_prob(self, x, context=None, check=True):
        z = (x[:, 0] - self.mu) / self.log_sigma.exp()
        return -0.5 * z**2 - self.log_sigma - 0.5 * math.log(2 * math.pi)


def _flow(seed=0):
    torch.manual_seed(seed)
    return randomize(pf.maf(2, layers=2, hidden=(8,)).double(), std=0.1, seed=seed)


def _params(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def _data(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, generator=g, dtype=torch.float64)
    k = torch.randint(0, 4, (n,), generator=g)
    return x, k


FULL_BATCH = dict(batch_size=10**6, max_epochs=10, patience=None, seed=0, progress=False)


# -- the loss and the loop ----------------------------------------------------------------------
def test_integer_weights_are_duplicated_rows_in_the_loss():
    x, k = _data()
    flow = _flow()
    w = k.double()
    weighted = pf.losses.nll(flow, (x,), w / w.mean())
    duplicated = pf.losses.nll(flow, (x.repeat_interleave(k, 0),))
    assert abs(float(weighted.detach() - duplicated.detach())) < 1e-6
    assert float(weighted.detach()) != pytest.approx(float(pf.losses.nll(flow, (x,))), abs=1e-3)


def test_integer_weights_are_duplicated_rows_in_a_full_batch_fit():
    x, k = _data()
    a, b = _flow(), _flow()
    pf.fit(a, pf.losses.nll, x, sample_weight=k, **FULL_BATCH)
    pf.fit(b, pf.losses.nll, x.repeat_interleave(k, 0), **FULL_BATCH)
    assert (_params(a) - _params(b)).abs().max() < 1e-6
    assert (_params(a) - _params(_flow())).abs().max() > 1e-3  # it did train


def test_zero_weights_exclude_rows_exactly():
    x, _ = _data()
    extra = torch.full((5, 2), 1e3, dtype=torch.float64)  # far away: a large loss if counted
    w = torch.cat([torch.ones(len(x)), torch.zeros(5)])
    flow = _flow()
    both = torch.cat([x, extra])
    assert abs(float(pf.losses.nll(flow, (both,), w / w.mean()) - pf.losses.nll(flow, (x,)))) < 1e-9
    a, b = _flow(), _flow()
    pf.fit(a, pf.losses.nll, both, sample_weight=w, **FULL_BATCH)
    pf.fit(b, pf.losses.nll, x, **FULL_BATCH)
    assert (_params(a) - _params(b)).abs().max() < 1e-9


def test_zero_weight_row_of_zero_density_is_harmless():
    model = Gaussian()
    x = torch.tensor([[0.0], [1.0], [1e200]], dtype=torch.float64)  # log q = -inf at 1e200
    loss = pf.losses.nll(model, (x,), torch.tensor([1.5, 1.5, 0.0], dtype=torch.float64))
    loss.backward()
    assert math.isfinite(float(loss)) and torch.isfinite(model.mu.grad)


def test_weighted_gaussian_fit_recovers_the_tilted_normal():
    # N(0, 1) weighted by exp(x - 1/2) is N(1, 1): the weighted MLE must find it
    rng = np.random.default_rng(1)
    x = rng.normal(size=4000)
    w = np.exp(x - 0.5)
    model = Gaussian()
    options = FULL_BATCH | dict(max_epochs=400, lr=0.05)
    pf.fit(model, pf.losses.nll, torch.tensor(x)[:, None], sample_weight=w, **options)
    mean = np.average(x, weights=w)
    sd = math.sqrt(np.average((x - mean) ** 2, weights=w))
    assert float(model.mu) == pytest.approx(mean, abs=1e-4)  # the weighted MLE exactly
    assert float(model.log_sigma.exp()) == pytest.approx(sd, abs=1e-4)
    se = 1 / math.sqrt(effective_sample_size(w))
    assert abs(float(model.mu) - 1.0) < 4 * se
    assert abs(float(model.log_sigma.exp()) - 1.0) < 4 * se * 1.5


def test_weights_travel_with_their_rows_through_shuffled_minibatches():
    # only the negative rows count: the fit is the MLE of those rows, not of all of them
    x = torch.tensor(np.random.default_rng(2).normal(size=2000))[:, None]
    w = (x[:, 0] < 0).double()
    model = Gaussian()
    pf.fit(model, pf.losses.nll, x, sample_weight=w, batch_size=64, max_epochs=40, lr=0.02,
           seed=0, progress=False)  # fmt: skip
    negative = x[x[:, 0] < 0, 0]
    assert float(model.mu) == pytest.approx(float(negative.mean()), abs=0.05)
    assert float(model.mu) < -0.6  # about -0.80 (a half-normal's mean), not 0


def test_validation_loss_is_the_weighted_mean():
    x, _ = _data(60)
    val, _ = _data(30, seed=1)
    val_w = torch.linspace(0.0, 3.0, 30, dtype=torch.float64)
    flow = _flow()
    history = pf.fit(
        flow, pf.losses.nll, x, val, sample_weight=torch.ones(60), val_weight=val_w,
        max_epochs=1, batch_size=7, seed=0, progress=False,
    )  # fmt: skip
    with torch.no_grad():
        exact = -(val_w * flow.log_prob(val)).sum() / val_w.sum()
    assert history.val_loss[0] == pytest.approx(float(exact), abs=1e-10)


def test_loop_refuses_bad_weights_and_losses_without_weights():
    x, _ = _data()
    flow = _flow()
    before = _params(flow)
    cases = [
        (torch.ones(39), "one weight per row"),
        (torch.ones(40, 1), "1-D"),
        (torch.full((40,), math.nan), "NaN"),
        (-torch.ones(40), "negative"),
        (torch.zeros(40), "all zero"),
    ]
    for weight, message in cases:
        with pytest.raises(ValueError, match=message):
            pf.fit(flow, pf.losses.nll, x, sample_weight=weight, max_epochs=1, progress=False)
    with pytest.raises(TypeError, match="takes the rows' weights"):
        pf.fit(flow, lambda m, b: pf.losses.nll(m, b), x, sample_weight=torch.ones(40))
    with pytest.raises(ValueError, match="needs val_weight"):
        pf.fit(flow, pf.losses.nll, x, x, sample_weight=torch.ones(40))
    loader = torch.utils.data.DataLoader(x, batch_size=8)
    with pytest.raises(ValueError, match="in-memory tensors"):
        pf.fit(flow, pf.losses.nll, loader, sample_weight=torch.ones(40))
    with pytest.raises(ValueError, match="in-memory tensors"):
        pf.fit(flow, pf.losses.nll, loader, x, val_weight=torch.ones(40))
    assert torch.equal(before, _params(flow))


def test_a_checkpoint_is_not_resumed_with_other_weights(tmp_path):
    x, k = _data()
    path = tmp_path / "run.ckpt"
    options = dict(max_epochs=2, seed=0, progress=False, checkpoint=path)
    pf.fit(_flow(), pf.losses.nll, x, sample_weight=k, **options)
    pf.fit(_flow(), pf.losses.nll, x, sample_weight=2 * k, resume=path, **options)  # same
    with pytest.raises(ValueError, match="data_weight"):
        pf.fit(_flow(), pf.losses.nll, x, sample_weight=k + 1, resume=path, **options)
    with pytest.raises(ValueError, match="data_weight"):
        pf.fit(_flow(), pf.losses.nll, x, resume=path, **options)


def test_check_sample_weight_names_the_first_bad_row():
    with pytest.raises(ValueError, match=r"first at row 2: -1"):
        check_sample_weight([1.0, 0.0, -1.0, -2.0], 4)
    with pytest.raises(ValueError, match="numeric"):
        check_sample_weight(["a", "b"], 2)


@pytest.mark.parametrize(
    ("sample_weight", "val_weight", "has_validation", "message"),
    [
        (None, [1.0], False, "val_weight needs X_val"),
        ([1.0], [1.0], False, "val_weight needs X_val"),
        ([1.0], None, True, "sample_weight with X_val needs val_weight"),
    ],
    ids=["val weights, no rows", "both, no rows", "train weights only"],
)
def test_weight_pairing_refuses_one_sided_weights(sample_weight, val_weight, has_validation,
                                                  message):  # fmt: skip
    with pytest.raises(ValueError, match=message):
        check_weight_pairing(sample_weight, val_weight, has_validation, "X_val")


@pytest.mark.parametrize(
    ("sample_weight", "val_weight", "has_validation"),
    [(None, None, True), (None, None, False), ([1.0], None, False), ([1.0], [1.0], True),
     (None, [1.0], True)],
)  # fmt: skip
def test_weight_pairing_accepts_matched_weights(sample_weight, val_weight, has_validation):
    assert check_weight_pairing(sample_weight, val_weight, has_validation) is None


def test_loop_refuses_validation_weights_without_validation_rows():
    flow = pf.maf(2, layers=1, hidden=(4,))
    with pytest.raises(ValueError, match="val_weight needs val_data"):
        pf.fit(flow, pf.losses.nll, torch.randn(10, 2), val_weight=torch.ones(10), max_epochs=1)


# -- the density estimator ----------------------------------------------------------------------
def _estimator(**kwargs):
    options = dict(flow="maf", layers=2, hidden=(8,), max_epochs=4, progress=False,
                   dtype="float64")  # fmt: skip
    return pf.DensityEstimator(**(options | kwargs))


def test_estimator_zero_weights_are_rows_left_out_and_unit_weights_change_nothing():
    X = np.random.default_rng(0).normal(size=(200, 2))
    far = 50.0 + np.arange(40.0).reshape(20, 2)
    plain = _estimator().fit(X)
    left_out = _estimator().fit(np.r_[X, far], sample_weight=np.r_[np.ones(200), np.zeros(20)])
    ones = _estimator().fit(X, sample_weight=np.ones(200))
    probe = X[:20]
    assert np.allclose(left_out.score_samples(probe), plain.score_samples(probe), atol=1e-10)
    assert np.allclose(ones.score_samples(probe), plain.score_samples(probe), atol=1e-10)
    assert plain.ess_ is None and ones.ess_ == pytest.approx(180.0)


def test_estimator_validation_and_choice_are_weighted():
    rng = np.random.default_rng(3)
    X, X_val = rng.normal(size=(300, 2)), rng.normal(size=(60, 2))
    w, w_val = rng.uniform(0, 2, 300), rng.uniform(0, 2, 60)
    est = pf.DensityEstimator(layers=1, hidden=(8,), max_epochs=3, progress=False,
                              dtype="float64").fit(X, X_val, w, w_val)  # fmt: skip
    exact = -np.average(est.score_samples(X_val), weights=w_val)
    assert est.history_.best_loss == pytest.approx(exact, abs=1e-8)
    best = min(est.candidates_, key=lambda c: c["best_loss"])
    assert est.member_ == best["name"]
    assert est.ess_ == pytest.approx(effective_sample_size(w), rel=0.2)


def test_estimator_weighted_fit_moves_the_density():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(3000, 1))
    w = np.exp(X[:, 0] - 0.5)  # N(0, 1) tilted: N(1, 1)
    est = _estimator(layers=1, max_epochs=30, lr=1e-2).fit(X, sample_weight=w)
    s = est.sample(20000, random_state=0)
    plain = _estimator(layers=1, max_epochs=30, lr=1e-2).fit(X).sample(20000, random_state=0)
    assert abs(s.mean() - 1.0) < 0.15 and abs(plain.mean()) < 0.1


def test_estimator_refuses_bad_weights_before_any_change(tmp_path):
    X = np.random.default_rng(0).normal(size=(100, 2))
    est = _estimator(max_epochs=1).fit(X)
    before = est.score_samples(X[:5])
    bad = [
        (dict(sample_weight=np.ones(99)), "one weight per row"),
        (dict(sample_weight=-np.ones(100)), "negative"),
        (dict(sample_weight=np.r_[np.inf, np.ones(99)]), "infinite"),
        (dict(sample_weight=np.zeros(100)), "all zero"),
        (dict(sample_weight=np.r_[1.0, np.zeros(99)]), "at least 2"),
        (dict(X_val=X[:10], sample_weight=np.ones(100)), "needs val_weight"),
        (dict(val_weight=np.ones(10)), "val_weight needs X_val"),
    ]
    for kwargs, message in bad:
        with pytest.raises(ValueError, match=message):
            est.fit(X, **kwargs)
    assert np.array_equal(est.score_samples(X[:5]), before)
    np.save(tmp_path / "x.npy", X)
    with pytest.raises(ValueError, match="streamed"):
        est.fit(str(tmp_path / "x.npy"), sample_weight=np.ones(100))


def test_estimator_checkpoint_refuses_other_weights_and_saves_the_ess(tmp_path):
    X = np.random.default_rng(0).normal(size=(100, 2))
    w = np.linspace(0.5, 1.5, 100)
    path = tmp_path / "run.ckpt"
    est = _estimator(max_epochs=2).fit(X, sample_weight=w, checkpoint=path)
    with pytest.raises(ValueError, match="sample_weight"):
        _estimator(max_epochs=3).fit(X, sample_weight=w[::-1], checkpoint=path, resume=path)
    est.save(tmp_path / "model.pt")
    assert pf.DensityEstimator.load(tmp_path / "model.pt").ess_ == pytest.approx(est.ess_)


# -- the command line ---------------------------------------------------------------------------
def test_cli_weights_column_is_a_weight_not_a_feature(tmp_path, capsys):
    rng = np.random.default_rng(0)
    X, w = rng.normal(size=(200, 2)), rng.uniform(0, 2, 200)
    data = tmp_path / "data.csv"
    np.savetxt(data, np.c_[X[:, 0], w, X[:, 1]], delimiter=",", header="a,wt,b", comments="")
    model = tmp_path / "model.pt"
    argv = ["fit", str(data), "--flow", "maf", "--layers", "2", "--hidden", "8", "--epochs", "3",
            "--dtype", "float64", "--out", str(model)]  # fmt: skip
    assert main([*argv, "--weights", "wt"]) == 0
    assert "effective sample size" in capsys.readouterr().err
    loaded = pf.DensityEstimator.load(model)
    assert list(loaded.feature_names_in_) == ["a", "b"]
    import pandas as pd

    expected = _estimator(layers=2, max_epochs=3).fit(pd.DataFrame(X, columns=["a", "b"]),
                                                      sample_weight=w)  # fmt: skip
    probe = pd.DataFrame(X[:10], columns=["a", "b"])
    assert np.allclose(loaded.score_samples(probe), expected.score_samples(probe), atol=1e-8)
    assert main([*argv, "--force", "--weights", "w"]) == 2
    assert "no such column" in capsys.readouterr().err
    np.savetxt(data, np.c_[X, -w], delimiter=",")
    assert main([*argv, "--force", "--weights", "3"]) == 2
    assert "negative" in capsys.readouterr().err


def test_estimator_refuses_weights_with_an_ensemble():
    X = np.random.default_rng(0).normal(size=(100, 2))
    with pytest.raises(ValueError, match="ensemble"):
        _estimator(ensemble=2).fit(X, sample_weight=np.ones(100))
