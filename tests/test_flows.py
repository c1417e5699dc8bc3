"""Per-flow obligations: a normalised density, a sampler that matches it, shapes, save/load,
one network pass per layer, and use inside Pyro models and guides."""

from __future__ import annotations

import copy
import io

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam

import pyroflows as pf
from pyroflows.nn import MLP

from conftest import randomize

F64 = torch.float64
H = (16, 16)

BUILDERS = {
    "maf": lambda d, c: pf.maf(d, c, layers=3, hidden=H),
    "maf-mog": lambda d, c: pf.maf(d, c, layers=2, hidden=H, base="mog", components=3),
    "maf-batchnorm": lambda d, c: pf.maf(d, c, layers=3, hidden=H, batch_norm=True),
    "maf-resmade-random": lambda d, c: pf.maf(
        d, c, layers=2, hidden=H, residual=True, order="random"
    ),
    "nsf": lambda d, c: pf.nsf(d, c, layers=2, hidden=H, bins=6, bound=4.0),
    "nsf-coupling": lambda d, c: pf.nsf(d, c, layers=3, hidden=H, bins=6, coupling=True),
    "nsf-lu": lambda d, c: pf.nsf(d, c, layers=2, hidden=H, bins=6, lu=True),
    "realnvp": lambda d, c: pf.realnvp(d, c, layers=3, hidden=H),
    "iaf": lambda d, c: pf.iaf(d, c, layers=2, hidden=H),
    "piecewise-linear": lambda d, c: pf.piecewise_linear(d, c, layers=2, hidden=H, bins=5),
}
UNIT = {"piecewise-linear"}


def make(name: str, dim: int = 2, context_dim: int = 0, seed: int = 0) -> pf.Flow:
    flow = randomize(BUILDERS[name](dim, context_dim).double(), std=0.25, seed=seed)
    return flow.eval()


def grid(name: str, n: int):
    lo, hi = (0.0, 1.0) if name in UNIT else (-14.0, 14.0)
    edges = torch.linspace(lo, hi, n + 1, dtype=F64)
    mids = (edges[1:] + edges[:-1]) / 2
    xx, yy = torch.meshgrid(mids, mids, indexing="ij")
    return torch.stack([xx, yy], -1).reshape(-1, 2), ((hi - lo) / n) ** 2


@pytest.mark.parametrize("name", BUILDERS)
def test_density_integrates_to_one_and_matches_sample_moments(name):
    flow = make(name)
    points, cell = grid(name, 1000 if name in UNIT else 500)
    with torch.no_grad():
        p = flow.log_prob(points).exp()
    mass = (p.sum() * cell).item()
    assert abs(mass - 1.0) < 1e-3, f"{name}: density integrates to {mass}"
    weights = p * cell
    mean = (weights[:, None] * points).sum(0)
    centred = points - mean
    cov = (weights[:, None, None] * centred[:, :, None] * centred[:, None, :]).sum(0)
    samples = flow.sample((40_000,))
    assert samples.shape == (40_000, 2)
    se = (cov.diagonal() / 40_000).sqrt()
    assert bool(((samples.mean(0) - mean).abs() < 5 * se + 1e-3).all()), name
    sample_cov = torch.cov(samples.T)
    assert torch.allclose(sample_cov, cov, rtol=0.1, atol=0.02 * cov.diagonal().max())


@pytest.mark.parametrize("name", BUILDERS)
def test_sample_shapes_with_and_without_context(name):
    flow = make(name, dim=3)
    assert flow.sample((11,)).shape == (11, 3)
    assert flow.sample().shape == (3,)
    assert flow().sample((4, 5)).shape == (4, 5, 3)
    assert flow.log_prob(flow.sample((6, 2))).shape == (6, 2)
    cflow = make(name, dim=3, context_dim=4)
    ctx = torch.randn(7, 4, dtype=F64)
    assert cflow(ctx).batch_shape == (7,)
    assert cflow(ctx).sample((10,)).shape == (10, 7, 3)
    assert cflow.sample((10,), context=ctx).shape == (10, 7, 3)
    assert cflow.log_prob(cflow(ctx).sample((10,)), context=ctx).shape == (10, 7)
    assert cflow(ctx).expand((2, 7)).sample((3,)).shape == (3, 2, 7, 3)


@pytest.mark.parametrize("name", BUILDERS)
def test_rsample_and_log_prob_agrees_with_log_prob(name):
    cflow = make(name, dim=3, context_dim=2)
    ctx = torch.randn(5, 2, dtype=F64)
    if name == "maf-mog":
        x = cflow(ctx).sample((4,))
        assert x.shape == (4, 5, 3)
        return
    x, log_prob = cflow.rsample_and_log_prob((4,), context=ctx)
    assert torch.allclose(log_prob, cflow.log_prob(x, context=ctx), atol=1e-9)
    x2, log_prob2 = cflow(ctx).rsample_and_log_prob((4,))
    assert torch.allclose(log_prob2, cflow(ctx).log_prob(x2), atol=1e-9)


@pytest.mark.parametrize("name", BUILDERS)
def test_state_dict_save_load_reproduces_log_prob_exactly(name):
    flow = make(name, dim=3, context_dim=2)
    x = flow.sample((9,), context=torch.zeros(2, dtype=F64))
    ctx = torch.randn(9, 2, dtype=F64)
    buffer = io.BytesIO()
    torch.save(flow.state_dict(), buffer)
    buffer.seek(0)
    other = make(name, dim=3, context_dim=2, seed=99)
    assert not torch.equal(other.log_prob(x, ctx), flow.log_prob(x, ctx))
    other.load_state_dict(torch.load(buffer, weights_only=True))
    assert torch.equal(other.log_prob(x, ctx), flow.log_prob(x, ctx))


@pytest.mark.parametrize("name", BUILDERS)
def test_deepcopy_after_use_and_dtype_device_moves(name):
    flow = make(name, dim=3)
    x = flow.sample((5,))
    flow().log_prob(x)
    flow.train()
    loss = -flow.log_prob(x).mean()
    loss.backward()
    clone = copy.deepcopy(flow).eval()
    flow.eval()
    assert torch.equal(clone.log_prob(x), flow.log_prob(x))
    f32 = copy.deepcopy(flow).float().to("cpu")
    assert f32.sample((3,)).dtype == torch.float32
    assert torch.allclose(f32.log_prob(x.float()).double(), flow.log_prob(x), atol=1e-3)


def _count_calls(flow: pf.Flow) -> list[int]:
    calls = [0]
    for module in flow.modules():
        if isinstance(module, MLP):
            module.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


@pytest.mark.parametrize("name", ["maf", "nsf", "nsf-coupling", "realnvp"])
def test_log_prob_costs_one_network_pass_per_layer(name):
    flow = make(name, dim=6, context_dim=2)
    calls = _count_calls(flow)
    n_nets = sum(isinstance(m, MLP) for m in flow.modules())
    flow.log_prob(torch.randn(10, 6, dtype=F64), torch.randn(10, 2, dtype=F64))
    assert calls[0] == n_nets
    # Through Pyro's TransformedDistribution too.
    calls[0] = 0
    flow(torch.randn(10, 2, dtype=F64)).log_prob(torch.randn(10, 6, dtype=F64))
    assert calls[0] == n_nets


def test_iaf_samples_and_scores_its_samples_in_one_pass_per_layer():
    flow = make("iaf", dim=6)
    calls = _count_calls(flow)
    flow.rsample_and_log_prob((10,))
    assert calls[0] == 2
    calls[0] = 0
    # Pyro's path: sample through the transforms, then score that very tensor.
    d = dist.TransformedDistribution(flow.base.distribution(), list(flow.transforms))
    x = d.rsample((10,))
    d.log_prob(x)
    assert calls[0] == 2


@pytest.mark.parametrize("name", ["maf", "nsf", "realnvp", "nsf-coupling"])
def test_svi_step_with_flow_as_likelihood_and_as_guide(name):
    data = torch.randn(50, 2, dtype=F64) + 3
    ctx = torch.randn(50, 1, dtype=F64)
    flow = make(name, dim=2, context_dim=1).train()

    def model(x, c):
        pyro.module("flow", flow)
        with pyro.plate("data", len(x)):
            pyro.sample("x", flow(c), obs=x)

    svi = SVI(model, lambda x, c: None, Adam({"lr": 1e-2}), Trace_ELBO())
    before = [p.detach().clone() for p in flow.parameters()]
    losses = [svi.step(data, ctx) for _ in range(3)]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0]
    assert any(not torch.equal(a, b) for a, b in zip(before, flow.parameters(), strict=True))

    guide_flow = make(name, dim=2).train()

    def latent_model():
        pyro.sample("z", dist.Normal(torch.ones(2, dtype=F64), 0.5).to_event(1))

    def guide():
        pyro.module("guide_flow", guide_flow)
        pyro.sample("z", guide_flow())

    svi = SVI(latent_model, guide, Adam({"lr": 1e-2}), Trace_ELBO(num_particles=8))
    assert all(torch.isfinite(torch.tensor([svi.step() for _ in range(3)])))


def test_flow_checks_its_inputs():
    flow = pf.maf(3, hidden=H)
    with pytest.raises(ValueError, match="3 features"):
        flow.log_prob(torch.randn(4, 2))
    with pytest.raises(ValueError, match="NaN or infinite"):
        flow.log_prob(torch.tensor([[0.0, float("nan"), 1.0]]))
    with pytest.raises(ValueError, match="dtype"):
        flow.log_prob(torch.randn(4, 3, dtype=F64))
    with pytest.raises(ValueError, match="floating-point"):
        flow.log_prob(torch.ones(4, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="unconditional"):
        flow.log_prob(torch.randn(4, 3), context=torch.randn(4, 2))
    cflow = pf.maf(3, context_dim=2, hidden=H)
    with pytest.raises(ValueError, match="conditional"):
        cflow.sample((2,))
    with pytest.raises(ValueError, match="2 features"):
        cflow(torch.randn(4, 5))
    with pytest.raises(ValueError, match="do not broadcast"):
        cflow.log_prob(torch.randn(4, 3), torch.randn(5, 2))
    with pytest.raises(ValueError, match="base must be one of"):
        pf.maf(3, base="cauchy")


def test_gaussian_mixture_base_log_prob_matches_pyro():
    base = randomize(pf.GaussianMixture(2, components=3).double())
    z = torch.randn(20, 2, dtype=F64)
    assert torch.allclose(base.log_prob(z), base.distribution().log_prob(z), atol=1e-12)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_flows_run_on_cuda():
    flow = pf.nsf(3, context_dim=2, hidden=H).to("cuda")
    ctx = torch.randn(4, 2, device="cuda")
    x = flow.sample((5,), context=ctx)
    assert x.device.type == "cuda"
    assert flow.log_prob(x, ctx).shape == (5, 4)


def test_layers_work_inside_pyro_autoguides():
    from functools import partial

    from pyro.infer.autoguide import AutoNormalizingFlow

    from pyroflows.transforms import MaskedAutoregressive

    data = torch.tensor([0.5, 1.0, 1.5])

    def model():
        a = pyro.sample("a", dist.Normal(0.0, 1.0))
        b = pyro.sample("b", dist.LogNormal(0.0, 1.0))
        with pyro.plate("data", 3):
            pyro.sample("obs", dist.Normal(a, b), obs=data)

    guide = AutoNormalizingFlow(model, partial(MaskedAutoregressive, inverse=True, hidden=H))
    svi = SVI(model, guide, Adam({"lr": 1e-2}), Trace_ELBO())
    losses = [svi.step() for _ in range(150)]
    assert len(list(guide.parameters())) > 0
    assert sum(losses[-20:]) / 20 < sum(losses[:20]) / 20 - 5


# -- issue 7: builder keywords, the check-free fast path, one-pass scoring of own draws ---------
@pytest.mark.parametrize(
    "family, kwargs, match",
    [
        ("maf", {"bins": 8}, "bins does not apply to maf"),
        ("maf", {"bound": 3.0}, "bound does not apply to maf"),
        ("maf", {"coupling": True}, "realnvp"),
        ("iaf", {"bins": 8}, "bins does not apply to iaf"),
        ("realnvp", {"order": "random"}, "order does not apply to realnvp"),
        ("realnvp", {"bins": 4}, "bins does not apply"),
        ("piecewise_linear", {"bound": 3.0}, "bound does not apply"),
        ("nsf", {"coupling": True, "order": "random"}, "order does not apply"),
        ("nsf", {"bins": 0}, "bins must be a positive integer"),
        ("nsf", {"bound": -1.0}, "bound must be a positive"),
        ("maf", {"hidden": ()}, "hidden"),
        ("maf", {"layers": 2.5}, "layers must be a positive integer"),
        ("maf", {"activation": "swishy"}, "activation must be one of"),
        ("maf", {"order": "zigzag"}, "order must be"),
        ("realnvp", {}, "coupling layers need dim >= 2"),
        ("nsf", {"context_every_layer": True}, "needs a context"),
        ("realnvp", {"context_every_layer": 1}, "context_every_layer must be True or False"),
        ("maf", {"lu": "yes"}, "lu must be True or False"),
        ("piecewise_linear", {"lu": True}, "unit hypercube"),
    ],
)
def test_builder_keywords_that_do_not_apply_are_named(family, kwargs, match):
    dim = 1 if match.startswith("coupling layers need") else 3
    with pytest.raises(ValueError, match=match):
        pf.build(family, dim, **kwargs)


@pytest.mark.parametrize("family", ["maf", "nsf", "realnvp", "piecewise_linear"])
def test_every_builder_takes_the_common_keywords(family):
    extra = {"bins": 4} if family in ("nsf", "piecewise_linear") else {}
    flow = pf.build(family, 3, layers=2, hidden=(8,), residual=False, activation="tanh", **extra)
    assert len(flow.transforms) == 2
    assert any(isinstance(m, torch.nn.Tanh) for m in flow.modules())


@pytest.mark.parametrize("coupling", [False, True])
def test_lu_puts_a_learnt_linear_map_between_layers(coupling):
    from pyroflows.transforms import LULinear

    flow = pf.nsf(4, 2, layers=3, hidden=(8,), coupling=coupling, lu=True, seed=5)
    kinds = [type(t).__name__ for t in flow.transforms]
    layer = "Coupling" if coupling else "MaskedAutoregressive"
    assert kinds == [layer, "LULinear", layer, "LULinear", layer]
    # in 3 or more dimensions each map starts as a random permutation seeded seed + i
    maps = [t for t in flow.transforms if isinstance(t, LULinear)]
    for i, layer_map in zip((1, 2), maps, strict=True):
        expected = torch.randperm(4, generator=torch.Generator().manual_seed(5 + i))
        assert torch.equal(layer_map.permutation, expected)
    # in two, as the identity: a swap would undo the alternation of the layers' orders
    flat = pf.nsf(2, 2, layers=3, hidden=(8,), coupling=coupling, lu=True)
    for layer_map in (t for t in flat.transforms if isinstance(t, LULinear)):
        assert torch.equal(layer_map.permutation, torch.arange(2))
        z, ladj = layer_map.inv_and_ladj(torch.randn(7, 2), torch.randn(7, 2))
        assert torch.equal(ladj, torch.zeros(7))


def test_piecewise_linear_takes_bins_and_coupling():
    ar = pf.piecewise_linear(3, layers=1, bins=5, coupling=False)
    cp = pf.piecewise_linear(3, layers=1, bins=5, coupling=True)
    assert type(ar.transforms[0]).__name__ == "MaskedAutoregressive"
    assert type(cp.transforms[0]).__name__ == "Coupling"


@pytest.mark.parametrize("name", ["maf", "nsf", "nsf-coupling"])
def test_log_prob_fast_path_works_under_vmap_and_compile(name):
    flow = make(name)
    x = torch.randn(6, 2, dtype=torch.float64)
    expected = flow.log_prob(x)
    per_row = torch.func.vmap(lambda row: flow.log_prob(row, check=False))(x)
    torch.testing.assert_close(per_row, expected)
    compiled = torch.compile(lambda v: flow.log_prob(v), backend="eager", fullgraph=False)
    torch.testing.assert_close(compiled(x), expected)


def test_a_draw_is_scored_from_the_drawing_pass_once_and_never_after_a_step():
    flow = pf.maf(3, layers=2, hidden=(8,))
    calls = []
    for module in flow.modules():
        if type(module).__name__ == "MADE":
            module.register_forward_hook(lambda *a: calls.append(1))
    d = flow()
    x = d.rsample((4,))
    drawn = len(calls)
    lp = d.log_prob(x)  # free: reuses the drawing pass
    assert len(calls) == drawn
    torch.testing.assert_close(lp, flow.log_prob(x.detach()), rtol=1e-5, atol=1e-5)
    d.log_prob(x)  # the hand-over is used once
    assert len(calls) > drawn + 1
    # after an optimiser step the stored graph is stale: scored afresh, backward works
    opt = torch.optim.SGD(flow.parameters(), lr=0.1)
    x = d.rsample((4,))
    (x.sum()).backward(retain_graph=True)
    opt.step()
    before = len(calls)
    d.log_prob(x).sum().backward()
    assert len(calls) > before
    # draws without gradients are always scored afresh (score-function estimators need it)
    x = d.sample((4,))
    before = len(calls)
    assert d.log_prob(x).requires_grad and len(calls) > before


@pytest.mark.parametrize(
    "make, match",
    [  # before: an infinite bound gave log p = -inf everywhere and infinite draws; bounds of
        # another length a raw expand error; zero sizes a module that failed later
        (lambda: pf.UniformBox(2, 0.0, float("inf")), "high must be finite"),
        (lambda: pf.UniformBox(2, float("nan"), 1.0), "low must be finite"),
        (lambda: pf.UniformBox(2, torch.zeros(3), torch.ones(3)), "a number or 2 numbers"),
        (lambda: pf.UniformBox(0), "dim must be a positive integer"),
        (lambda: pf.GaussianMixture(2, components=0), "components must be a positive integer"),
    ],
    ids=["inf-bound", "nan-bound", "bounds-length", "dim-0", "components-0"],
)
def test_bases_refuse_bounds_and_sizes_they_cannot_honour(make, match):
    with pytest.raises(ValueError, match=match):
        make()
