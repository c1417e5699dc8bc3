"""Amortized posteriors of Pyro models with a varying number of observations (``sizes=``,
``size_arg=``): a known answer, the NaN-padding layout, seeding, bad input, save / load."""

from __future__ import annotations

import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyroflows.amortized import AmortizedPosterior, VariableSizeSimulator
from pyroflows.diagnostics import posterior_predictive
from pyroflows.nn import DeepSet
from pyroflows.nn.summary import MLPSummary, RecurrentSummary

torch.set_num_threads(1)

TINY = dict(layers=1, hidden=(8,))


def known_sigma_model(n=10, x=None):
    """mu ~ N(0, 3^2), x_1..n ~ N(mu, 1): p(mu | x) = N(sum x / (n + 1/9), 1 / (n + 1/9))."""
    mu = pyro.sample("mu", dist.Normal(0.0, 3.0))
    with pyro.plate("data", n):
        return pyro.sample("x", dist.Normal(mu, 1.0), obs=x)


def normal_model(n=10, x=None):
    mu = pyro.sample("mu", dist.Normal(0.0, 3.0))
    sigma = pyro.sample("sigma", dist.LogNormal(0.0, 1.0))
    with pyro.plate("data", n):
        return pyro.sample("x", dist.Normal(mu, sigma), obs=x)


def vector_model(n=3, x=None):
    """Rows of 2 values along dimension 1 of one data set: shape (2, n)."""
    with pyro.plate("features", 2, dim=-2):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))  # shape (2, 1)
        with pyro.plate("data", n, dim=-1):
            return pyro.sample("x", dist.Normal(mu, 0.01), obs=x)


def analytic(x):
    precision = len(x) + 1 / 9
    return float(x.sum() / precision), precision**-0.5


def real_rows(x):
    return (~torch.isnan(x).all(-1)).sum(-1)


@pytest.fixture(scope="module")
def small_post():
    """A barely trained posterior (sizes 2..6): for layout, I/O and plumbing, not accuracy."""
    post = AmortizedPosterior(
        normal_model, "x", summary=DeepSet(1, 4, hidden=8), sizes=range(2, 7), size_arg="n",
        flow="maf", flow_kwargs=TINY,
    )  # fmt: skip
    return post.fit(num_simulations=200, max_epochs=2, progress=False, seed=0, recipe="one_phase")


# -- known answer ------------------------------------------------------------------------------
def test_known_sigma_posterior_matches_analytic_for_small_and_large_n():
    post = AmortizedPosterior(
        known_sigma_model, "x", summary=DeepSet(1, 8, hidden=32, activation="silu"),
        sizes=range(5, 51), size_arg="n", flow="maf", flow_kwargs=dict(layers=2, hidden=(16, 16)),
    )  # fmt: skip
    post.fit(num_simulations=3000, max_epochs=40, lr=3e-3, batch_size=64, patience=None,
             schedule="cosine", progress=False, seed=0, recipe="one_phase")  # fmt: skip
    generator = torch.Generator().manual_seed(1)
    sds = {}
    for n in (5, 40):
        x = 1.0 + torch.randn(n, generator=generator)
        mean, sd = analytic(x)
        draws = post.sample(x, 4000, seed=0)[:, 0].double()
        assert abs(draws.mean().item() - mean) < 0.25, (n, draws.mean().item(), mean)
        assert 0.6 < draws.std().item() / sd < 1.5, (n, draws.std().item(), sd)
        sds[n] = draws.std().item()
    # the exact ratio is 0.36; a posterior that ignored n would give about 1
    assert sds[40] < 0.6 * sds[5], sds


# -- layout ------------------------------------------------------------------------------------
def test_simulations_are_padded_with_nan_rows_after_each_size():
    sim = VariableSizeSimulator(normal_model, "x", sizes=[2, 3, 5], size_arg="n")
    assert sim.x_shape == (5, 1) and sim.axis == 0 and sim.row_shape == ()
    theta, x = sim(300)
    assert theta.shape == (300, 2) and x.shape == (300, 5, 1)
    n = real_rows(x)
    assert set(n.tolist()) == {2, 3, 5}
    rows = torch.arange(5)
    assert bool(torch.isfinite(x[rows < n[:, None]]).all())
    assert bool(torch.isnan(x[rows >= n[:, None]]).all())
    # each data set follows its own parameters (rows and theta were not mixed up by grouping)
    x = sim.simulate(torch.tensor([[5.0, 1e-3], [-5.0, 1e-3], [0.0, 1e-3]]), size=[2, 5, 3])
    assert real_rows(x).tolist() == [2, 5, 3]
    assert torch.allclose(x.nanmean((1, 2)), torch.tensor([5.0, -5.0, 0.0]), atol=0.01)


def test_rows_along_another_dimension_become_sets_of_vectors():
    sim = VariableSizeSimulator(vector_model, "x", sizes=range(1, 5), size_arg="n")
    assert (sim.axis, tuple(sim.row_shape), tuple(sim.x_shape)) == (1, (2,), (4, 2))
    theta = torch.tensor([[3.0, -3.0]])
    x = sim.simulate(theta, size=3)
    assert x.shape == (1, 4, 2) and real_rows(x).tolist() == [3]
    assert torch.allclose(x[0, :3], torch.tensor([3.0, -3.0]).expand(3, 2), atol=0.05)
    back = sim.to_model_layout(x[0, :3])  # the model's own layout: (2, n)
    assert back.shape == (2, 3) and torch.allclose(back[:, 0], torch.tensor([3.0, -3.0]), atol=0.05)


def test_given_sizes_beyond_the_largest_widen_the_padding(small_post):
    x = small_post.simulate_data(torch.tensor([[0.0, 1.0]] * 2), size=torch.tensor([9, 2]))
    assert x.shape == (2, 9, 1) and real_rows(x).tolist() == [9, 2]
    drawn = small_post.simulate_data(torch.tensor([[0.0, 1.0]] * 200))
    assert drawn.shape == (200, 6, 1) and set(real_rows(drawn).tolist()) == set(range(2, 7))


def test_sizes_are_drawn_uniformly_from_distinct_values():
    sim = VariableSizeSimulator(known_sigma_model, "x", sizes=[4, 2, 2, 8], size_arg="n")
    assert sim.sizes == (2, 4, 8)
    counts = torch.bincount(sim.sample_sizes(3000), minlength=9)[[2, 4, 8]]
    assert counts.sum() == 3000 and bool((counts > 900).all()), counts


def test_integer_data_are_padded_as_floats():
    def counts(n=3, x=None):
        p = pyro.sample("p", dist.Dirichlet(torch.ones(3)))
        with pyro.plate("data", n):
            return pyro.sample("x", dist.Categorical(p), obs=x)

    sim = VariableSizeSimulator(counts, "x", sizes=[1, 3], size_arg="n")
    x = sim(20)[1]
    assert x.dtype == torch.get_default_dtype() and set(real_rows(x).tolist()) <= {1, 3}


# -- seeds -------------------------------------------------------------------------------------
def test_same_seed_gives_identical_simulations():
    sim = VariableSizeSimulator(normal_model, "x", sizes=range(1, 12), size_arg="n")
    pyro.set_rng_seed(5)
    theta_a, x_a = sim(200)  # builds the per-size simulators: must not shift the stream
    pyro.set_rng_seed(5)
    theta_b, x_b = sim(200)
    fresh = VariableSizeSimulator(normal_model, "x", sizes=range(1, 12), size_arg="n")
    pyro.set_rng_seed(5)
    theta_c, x_c = fresh(200)
    for theta, x in ((theta_b, x_b), (theta_c, x_c)):
        assert torch.equal(theta, theta_a)
        assert torch.equal(torch.isnan(x), torch.isnan(x_a))
        assert torch.equal(x.nan_to_num(), x_a.nan_to_num())
    pyro.set_rng_seed(6)
    assert not torch.equal(sim(200)[0], theta_a)


def test_seeded_fits_are_identical():
    """``fit(seed=...)`` fixes the sizes and the simulations whatever the global state."""

    def fitted(global_seed):
        torch.manual_seed(0)  # the same untrained summary network
        post = AmortizedPosterior(
            normal_model, "x", summary=DeepSet(1, 4, hidden=8), sizes=range(2, 9),
            size_arg="n", flow="maf", flow_kwargs=TINY,
        )  # fmt: skip
        torch.manual_seed(global_seed)
        return post.fit(
            num_simulations=100, max_epochs=1, progress=False, seed=3, recipe="one_phase"
        )

    a, b = fitted(1).estimator.state_dict(), fitted(2).estimator.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


# -- observations ------------------------------------------------------------------------------
def test_observations_of_any_size_with_or_without_padding(small_post):
    x = torch.tensor([0.5, 1.0, 1.5, -0.2])
    one = small_post.sample(x, 20, seed=1)
    assert one.shape == (20, 2)
    padded = torch.cat([x[:, None], torch.full((2, 1), float("nan"))])
    assert torch.equal(small_post.sample(x[:, None], 20, seed=1), one)
    assert torch.allclose(small_post.sample(padded, 20, seed=1), one, atol=1e-5)
    batch = torch.full((3, 6, 1), float("nan"))
    batch[0, :2], batch[1, :6], batch[2, :4] = 1.0, 2.0, x[:, None]
    many = small_post.sample(batch, 20, seed=1)
    assert many.shape == (20, 3, 2)
    assert small_post.log_prob(many, batch).shape == (20, 3)
    with pytest.warns(RuntimeWarning, match="9 observations, outside the 2 to 6"):
        small_post.sample(torch.zeros(9), 5)
    with pytest.raises(ValueError, match=r"a batch is \(B, n, 1\)"):
        small_post.sample(torch.zeros(3, 4), 5)  # model layout (B, n): ambiguous, refused


def test_inference_data_in_the_model_layout(small_post):
    x = torch.tensor([0.5, 1.0, 1.5])
    idata = small_post.to_inference_data(x, 40, chains=2, posterior_predictive=True)
    assert {"mu", "sigma"} <= set(idata.posterior.data_vars)
    assert idata.observed_data["x"].shape == (3,)
    assert idata.posterior_predictive["x"].shape == (2, 20, 3)
    assert bool(torch.isfinite(torch.as_tensor(idata.posterior_predictive["x"].values)).all())
    theta, x_rep = posterior_predictive(small_post, x, 30)  # sets of 3, padded to 6
    assert theta.shape == (30, 2) and x_rep.shape == (30, 6, 1)


def test_online_fit_with_sizes():
    post = AmortizedPosterior(
        known_sigma_model, "x", summary=DeepSet(1, 4, hidden=8), sizes=range(3, 8),
        size_arg="n", flow="maf", flow_kwargs=TINY,
    )  # fmt: skip
    post.fit(simulate_online=True, steps=10, batch_size=32, num_validation=64,
             steps_per_epoch=5, progress=False, seed=0)  # fmt: skip
    assert post.history.steps == 10 and post.x_shape == (7, 1)
    assert post.sample(torch.zeros(5), 3).shape == (3, 1)


# -- save / load -------------------------------------------------------------------------------
def test_save_load_round_trip_keeps_sizes(small_post, tmp_path):
    path = tmp_path / "sized.pt"
    small_post.save(path)
    blob = torch.load(path, weights_only=True)
    assert blob["config"]["sizes"] == [2, 3, 4, 5, 6] and blob["config"]["size_arg"] == "n"
    x = torch.tensor([0.1, 0.4, -0.3])
    loaded = AmortizedPosterior.load(path)  # no model: sampling only
    assert loaded.sizes == (2, 3, 4, 5, 6) and loaded.size_arg == "n"
    assert torch.equal(loaded.sample(x, 10, seed=0), small_post.sample(x, 10, seed=0))
    assert loaded.to_inference_data(x, 8, chains=2).observed_data["x"].shape == (3,)
    with_model = AmortizedPosterior.load(path, normal_model)
    assert isinstance(with_model.sim, VariableSizeSimulator) and with_model.sim.sizes == (
        2,
        3,
        4,
        5,
        6,
    )
    assert with_model.simulate(4)[1].shape == (4, 6, 1)
    # a file written before sizes existed (no such entries) still loads
    for key in ("sizes", "size_arg", "size_axis", "row_shape"):
        del blob["config"][key]
    torch.save(blob, tmp_path / "old.pt")
    old = AmortizedPosterior.load(tmp_path / "old.pt")
    assert old.sizes is None
    assert torch.equal(old.sample(x[:, None], 10, seed=0), small_post.sample(x, 10, seed=0))


# -- bad input ---------------------------------------------------------------------------------
def _post(**kwargs):
    options = dict(summary=DeepSet(1, 4, hidden=8), sizes=range(2, 5), size_arg="n")
    return AmortizedPosterior(kwargs.pop("model", normal_model), "x", **{**options, **kwargs})


@pytest.mark.parametrize(
    "sizes", [[], [0, 3], [-2], [2.5], [True], 5, "abc", torch.tensor([2.0])],
    ids=["empty", "zero", "negative", "float", "bool", "int", "str", "float-tensor"],
)  # fmt: skip
def test_sizes_must_be_positive_integers(sizes):
    with pytest.raises(ValueError, match="non-empty collection of positive integers"):
        _post(sizes=sizes)


def test_sizes_and_size_arg_go_together():
    with pytest.raises(ValueError, match="sizes= needs size_arg="):
        _post(size_arg=None)
    with pytest.raises(ValueError, match="size_arg= needs sizes="):
        _post(sizes=None)


def test_size_arg_must_be_an_argument_of_the_model():
    with pytest.raises(ValueError, match=r"size_arg='m' is not a keyword argument.*\['n', 'x'\]"):
        _post(size_arg="m")


def test_size_arg_must_not_also_be_given():
    with pytest.raises(ValueError, match="model_kwargs sets 'n'"):
        _post(model_kwargs={"n": 4})
    with pytest.raises(ValueError, match="multiple values for argument 'n'"):
        _post(model_args=(4,))


@pytest.mark.parametrize(
    "summary", [None, MLPSummary(4, 2), RecurrentSummary(1, 2, hidden=4)],
    ids=["none", "mlp", "recurrent"],
)  # fmt: skip
def test_summary_must_read_nan_padding(summary):
    with pytest.raises(ValueError, match="nan_padding=True"):
        _post(summary=summary)


def test_sizes_need_a_pyro_model():
    with pytest.raises(ValueError, match="vary the number of observations of a Pyro model"):
        AmortizedPosterior(
            prior=dist.Normal(0.0, 1.0), simulator=lambda t: t, summary=DeepSet(1, 2),
            sizes=[2, 3], size_arg="n",
        )  # fmt: skip


@pytest.mark.parametrize(
    ("plate_size", "message"),
    [
        (lambda n: 5, "does not change with 'n'"),
        (lambda n: 2 * n, "exactly one dimension, of extent n"),
    ],
    ids=["fixed", "doubled"],
)
def test_observed_shape_must_change_by_exactly_the_size(plate_size, message):
    def model(n=3, x=None):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        with pyro.plate("data", plate_size(n)):
            return pyro.sample("x", dist.Normal(mu, 1.0), obs=x)

    with pytest.raises(ValueError, match=message):
        _post(model=model)


def test_parameters_must_not_depend_on_the_size():
    def local(n=3, x=None):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        with pyro.plate("data", n):
            z = pyro.sample("z", dist.Normal(mu, 1.0))
            return pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    with pytest.raises(ValueError, match=r"latent site\(s\) \['z'\] change with n="):
        _post(model=local)


def test_simulate_data_size_argument(small_post):
    theta = torch.zeros(3, 2) + torch.tensor([0.0, 1.0])
    with pytest.raises(ValueError, match="positive integer"):
        small_post.simulate_data(theta, size=0)
    with pytest.raises(ValueError, match="3 of them"):
        small_post.simulate_data(theta, size=[2, 3])
    with pytest.raises(ValueError, match="3 of them"):
        small_post.simulate_data(theta, size=2.5)
    plain = AmortizedPosterior(known_sigma_model, "x", model_kwargs={"n": 4})
    with pytest.raises(ValueError, match="size= is for a posterior built with sizes="):
        plain.simulate_data(torch.zeros(2, 1), size=3)


def test_no_warning_inside_the_trained_sizes(small_post):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        small_post.sample(torch.zeros(2), 3)
        small_post.sample(torch.zeros(6), 3)


def test_posterior_predictive_check_simulates_data_sets_of_the_observation_size(small_post):
    x_obs = torch.randn(4)
    assert small_post.size_of(x_obs) == 4
    _, x_rep = posterior_predictive(small_post, x_obs, 50, seed=0)
    real = ~torch.isnan(x_rep).all(-1)
    assert bool(real[:, :4].all()) and not bool(real[:, 4:].any())
