"""One contract that every pyroflows layer passes, in float64 with randomised parameters.

Each case is a constructor ``context_dim -> layer`` plus the domain of its inputs; conditional
cases run with ``context_dim=2`` through ``.condition(context)`` and batched contexts.
"""

from __future__ import annotations

import copy
import io
import math
from collections.abc import Callable
from dataclasses import dataclass

import pyro.distributions as dist
import pytest
import torch

from pyroflows.transforms import (
    RQS,
    ActNorm,
    Affine,
    BatchNorm,
    Box,
    ContextAffine,
    Coupling,
    ElementwiseAffine,
    EqualBinRQS,
    FixedAffine,
    FlowTransform,
    LULinear,
    MaskedAutoregressive,
    Permutation,
    PiecewiseLinear,
)

from conftest import randomize

F64 = torch.float64
D, C = 3, 2
H = (16, 16)


@dataclass
class Case:
    make: Callable[[int], FlowTransform]
    conditional: bool = False
    domain: str = "real"  # "unit": both sides in (0, 1); "box": data side in (-1, 2)

    def data(self, *shape: int, seed: int = 1) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        if self.domain == "unit":
            return torch.rand(*shape, D, generator=g, dtype=F64) * 0.98 + 0.01
        if self.domain == "box":
            return torch.rand(*shape, D, generator=g, dtype=F64) * 2.9 - 0.95
        return torch.randn(*shape, D, generator=g, dtype=F64) * 1.5

    def base(self, *shape: int, seed: int = 2) -> torch.Tensor:
        if self.domain == "box":
            return torch.randn(*shape, D, generator=torch.Generator().manual_seed(seed), dtype=F64)
        return self.data(*shape, seed=seed)


def _ar(univariate, **kw):
    return lambda c: MaskedAutoregressive(D, univariate, c, H, **kw)


def _coupling(univariate, **kw):
    return lambda c: Coupling(D, univariate, c, H, **kw)


CASES = {
    "maf-affine": Case(_ar(Affine()), conditional=True),
    "maf-rqs": Case(_ar(RQS(6, 3.0), order="reversed"), conditional=True),
    "maf-linear": Case(_ar(PiecewiseLinear(5)), conditional=True, domain="unit"),
    "resmade-rqs": Case(_ar(RQS(6, 3.0), residual=True, order=7), conditional=True),
    "iaf-affine": Case(_ar(Affine(), inverse=True), conditional=True),
    "iaf-rqs": Case(_ar(RQS(6, 3.0), inverse=True), conditional=True),
    # equal-width bins, the bin found by arithmetic in the sampling direction
    "maf-equal-bins": Case(_ar(EqualBinRQS(6, 3.0), order="reversed"), conditional=True),
    "iaf-equal-bins": Case(_ar(EqualBinRQS(6, 3.0), inverse=True), conditional=True),
    "coupling-equal-bins": Case(_coupling(EqualBinRQS(6, 3.0)), conditional=True),
    "coupling-affine": Case(_coupling(Affine()), conditional=True),
    "coupling-rqs": Case(_coupling(RQS(6, 3.0), residual=True), conditional=True),
    # the forward spline from data to base (nsf(spline="forward"), zuko's direction)
    "maf-rqs-forward": Case(_ar(RQS(6, 3.0, "forward"), order="reversed"), conditional=True),
    "iaf-rqs-forward": Case(_ar(RQS(6, 3.0, "forward"), inverse=True), conditional=True),
    "coupling-rqs-forward": Case(_coupling(RQS(6, 3.0, "forward")), conditional=True),
    # the context in every hidden layer (the conditional variants; it needs a context)
    "maf-rqs-context-every-layer": Case(
        lambda c: MaskedAutoregressive(D, RQS(6, 3.0), c, H, 7, context_every_layer=c > 0),
        conditional=True,
    ),
    "coupling-context-every-layer": Case(
        lambda c: Coupling(D, Affine(), c, H, residual=True, context_every_layer=c > 0),
        conditional=True,
    ),
    "coupling-linear": Case(_coupling(PiecewiseLinear(5)), conditional=True, domain="unit"),
    "permutation-reversed": Case(lambda c: Permutation.reversed(D, c)),
    "permutation-random": Case(lambda c: Permutation.random(D, seed=3, context_dim=c)),
    "lu-linear": Case(lambda c: LULinear(D, seed=1, context_dim=c)),
    "batchnorm-eval": Case(lambda c: BatchNorm(D, context_dim=c).eval()),
    "actnorm": Case(lambda c: ActNorm(D, context_dim=c)),
    "context-affine": Case(lambda c: ContextAffine(D, c, H), conditional=True),
    "elementwise-affine": Case(
        lambda c: ElementwiseAffine(torch.tensor([1.0, -2.0, 0.5]), torch.tensor([1.5, 3.0, 0.2]))
    ),
    "fixed-affine": Case(
        lambda c: FixedAffine(
            torch.tensor([0.5, -1.0, 2.0]),
            torch.tensor([[1.5, 0.0, 0.0], [0.7, 0.4, 0.0], [-1.2, 0.3, 2.0]]),
        )
    ),
    "box": Case(lambda c: Box(-torch.ones(D), 2 * torch.ones(D)), domain="box"),
}

VARIANTS = [(name, 0) for name in CASES] + [(n, C) for n, c in CASES.items() if c.conditional]
IDS = [f"{name}-ctx{c}" for name, c in VARIANTS]


def build(name: str, context_dim: int) -> FlowTransform:
    layer = CASES[name].make(context_dim).double()
    return randomize(layer)


def context_for(context_dim: int, *shape: int) -> torch.Tensor | None:
    if not context_dim:
        return None
    return torch.randn(*shape, context_dim, generator=torch.Generator().manual_seed(5), dtype=F64)


@pytest.fixture(params=VARIANTS, ids=IDS)
def variant(request):
    name, context_dim = request.param
    return name, CASES[name], build(name, context_dim), context_dim


def test_round_trip_both_directions(variant):
    _, case, layer, c = variant
    x, z, ctx = case.data(64), case.base(64), context_for(c, 64)
    z_of_x, ladj_inv = layer.inv_and_ladj(x, ctx)
    back, ladj_fwd = layer.call_and_ladj(z_of_x, ctx)
    assert (back - x).abs().max() < 1e-10
    assert (ladj_inv + ladj_fwd).abs().max() < 1e-10
    x_of_z, _ = layer.call_and_ladj(z, ctx)
    assert (layer.inv_and_ladj(x_of_z, ctx)[0] - z).abs().max() < 1e-10


def test_call_alone_gives_the_values_of_call_and_ladj(variant):
    # what Flow.sample uses: the sampling direction without the log-Jacobian
    _, case, layer, c = variant
    z, ctx = case.base(64), context_for(c, 64)
    with torch.no_grad():  # the sampling path, in-place activations included
        # (a spline IAF draws with the parameters-first spline: the same map, its floating
        # point operations in another order)
        assert torch.allclose(layer.call(z, ctx), layer.call_and_ladj(z, ctx)[0], atol=1e-12)
    x = layer.call(z.requires_grad_(True), ctx)
    (grad,) = torch.autograd.grad(x.sum(), z)  # rsample: gradients flow through it
    (grad_ref,) = torch.autograd.grad(layer.call_and_ladj(z, ctx)[0].sum(), z)
    assert torch.allclose(grad, grad_ref, atol=1e-12)


def _jacobian(fn, point):
    return torch.autograd.functional.jacobian(fn, point)


def test_log_det_matches_autograd_jacobian(variant):
    _, case, layer, c = variant
    xs, zs = case.data(4), case.base(4)
    ctxs = context_for(c, 4)
    for i in range(4):
        ctx = None if ctxs is None else ctxs[i]
        jac = _jacobian(lambda z, ctx=ctx: layer.call_and_ladj(z, ctx)[0], zs[i])
        assert abs(torch.linalg.slogdet(jac)[1] - layer.call_and_ladj(zs[i], ctx)[1]) < 1e-8
        jac = _jacobian(lambda x, ctx=ctx: layer.inv_and_ladj(x, ctx)[0], xs[i])
        assert abs(torch.linalg.slogdet(jac)[1] - layer.inv_and_ladj(xs[i], ctx)[1]) < 1e-8


def test_autoregressive_jacobian_is_triangular_in_its_order(variant):
    name, case, layer, c = variant
    if not isinstance(layer, MaskedAutoregressive):
        pytest.skip("not autoregressive")
    degrees = layer.order
    ctx = context_for(c)
    direction = layer.call_and_ladj if layer.iaf else layer.inv_and_ladj
    jac = _jacobian(lambda u: direction(u, ctx)[0], case.data(seed=9))
    later = degrees[None, :] > degrees[:, None]  # feature j comes after feature i
    assert jac[later].abs().max() == 0
    assert bool((jac.diagonal().abs() > 0).all())
    assert bool((jac[~later & ~torch.eye(D, dtype=torch.bool)].abs() > 0).any())


def test_batched_context_broadcasts_like_a_loop(variant):
    _, case, layer, c = variant
    if not c:
        pytest.skip("unconditional")
    ctx = context_for(c, 5)
    x = case.data(7, 5)
    z, ladj = layer.inv_and_ladj(x, ctx)
    assert z.shape == (7, 5, D) and ladj.shape == (7, 5)
    for b in range(5):
        zb, lb = layer.condition(ctx[b]).inv(x[:, b]), layer.inv_and_ladj(x[:, b], ctx[b])[1]
        assert torch.allclose(zb, z[:, b], atol=1e-12) and torch.allclose(lb, ladj[:, b])
    # One context for a whole batch of inputs.
    z1, l1 = layer.inv_and_ladj(case.data(7), ctx[0])
    assert z1.shape == (7, D) and l1.shape == (7,)


def test_pyro_transformed_distribution_agrees(variant):
    _, case, layer, c = variant
    base = dist.Normal(torch.zeros(D, dtype=F64), 1.0).to_event(1)
    x, ctx = case.data(16), context_for(c, 16)
    z, ladj = layer.inv_and_ladj(x, ctx)
    expected = base.log_prob(z) + ladj
    if c:
        d = dist.ConditionalTransformedDistribution(base, [layer]).condition(ctx)
    else:
        d = dist.TransformedDistribution(base, [layer])
    assert torch.allclose(d.log_prob(x), expected, atol=1e-12)


def test_scoring_the_same_tensor_in_consecutive_steps(variant):
    """Pyro's own flows raise 'backward through the graph a second time' here."""
    _, case, layer, c = variant
    params = list(layer.parameters())
    if not params:
        pytest.skip("no parameters")
    base = dist.Normal(torch.zeros(D, dtype=F64), 1.0).to_event(1)
    x, ctx = case.data(32), context_for(c, 32)
    opt = torch.optim.SGD(params, lr=1e-3)
    losses = []
    for _ in range(3):
        d = (
            dist.ConditionalTransformedDistribution(base, [layer]).condition(ctx)
            if c
            else dist.TransformedDistribution(base, [layer])
        )
        loss = -d.log_prob(x).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] != losses[0]


def test_far_outside_spline_bounds_is_finite(variant):
    _, case, layer, c = variant
    if case.domain != "real":
        pytest.skip("bounded domain")
    x = case.data(16) * 1e3
    ctx = context_for(c, 16)
    for fn in (layer.inv_and_ladj, layer.call_and_ladj):
        out, ladj = fn(x, ctx)
        assert bool(torch.isfinite(out).all() and torch.isfinite(ladj).all())


@pytest.mark.parametrize("dtype", [torch.float32, F64], ids=["float32", "float64"])
def test_far_outliers_and_infinities_never_give_nan(variant, dtype):
    """Density direction at 1e6, near the dtype's largest value and at +-inf in one coordinate:
    the output may be huge or infinite, never NaN, and the log-det stays finite."""
    _, case, layer, c = variant
    if case.domain != "real":
        pytest.skip("bounded domain")
    layer = copy.deepcopy(layer).to(dtype).eval()  # eval: ActNorm must not initialise on x
    huge = torch.finfo(dtype).max / 2
    values = torch.tensor([1e6, -1e6, huge, -huge, math.inf, -math.inf], dtype=dtype)
    x = case.data(len(values) * D).to(dtype)
    x[torch.arange(len(x)), torch.arange(len(x)) % D] = values.repeat_interleave(D)
    ctx = context_for(c, len(x))
    ctx = None if ctx is None else ctx.to(dtype)
    with torch.no_grad():
        z, ladj = layer.inv_and_ladj(x, ctx)
    assert not bool(z.isnan().any()) and bool(torch.isfinite(ladj).all())


def test_float32_round_trip(variant, record_property):
    name, case, layer, c = variant
    layer32 = copy.deepcopy(layer).float()
    x = case.data(256).float()
    ctx = context_for(c, 256)
    ctx = None if ctx is None else ctx.float()
    z, _ = layer32.inv_and_ladj(x, ctx)
    err = (layer32.call_and_ladj(z, ctx)[0] - x).abs().max().item()
    record_property("float32_round_trip_error", err)
    assert err < 1e-3, f"{name}: float32 round-trip error {err:.2e}"


def test_state_dict_round_trip_and_deepcopy_after_use(variant):
    name, case, layer, c = variant
    x, ctx = case.data(8), context_for(c, 8)
    layer.call_and_ladj(*layer.inv_and_ladj(x, ctx)[:1], ctx)
    dist.TransformedDistribution(
        dist.Normal(0.0, 1.0).expand([D]).to_event(1), [layer.condition(ctx)]
    ).log_prob(x)
    if not c:
        layer.inv(x)  # leave tensors in the layer's own memory
    clone = copy.deepcopy(layer)
    assert torch.equal(clone.inv_and_ladj(x, ctx)[1], layer.inv_and_ladj(x, ctx)[1])
    buffer = io.BytesIO()
    torch.save(layer.state_dict(), buffer)
    buffer.seek(0)
    fresh = build(name, c)
    randomize(fresh, seed=123)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    assert torch.equal(fresh.inv_and_ladj(x, ctx)[0], layer.inv_and_ladj(x, ctx)[0])


def test_permutation_is_saved_in_state_dict():
    a, b = Permutation.random(5, seed=1), Permutation.random(5, seed=2)
    assert not torch.equal(a.permutation, b.permutation)
    b.load_state_dict(a.state_dict())
    x = torch.randn(3, 5)
    assert torch.equal(a(x), b(x))


def test_an_lu_linear_saved_with_its_inverse_permutation_buffer_loads():
    """Saves from before the sampling direction used ``inverse_weight`` hold the inverse
    permutation as a buffer: they load (strictly) and give the same map."""
    saved = randomize(LULinear(D, seed=4).double())
    state = dict(saved.state_dict(), inverse_permutation=saved.permutation.argsort())
    loaded = LULinear(D, seed=9).double()
    loaded.load_state_dict(state)
    z = torch.randn(6, D, dtype=F64)
    assert torch.equal(loaded(z), saved(z))
    assert (loaded.inverse_weight() @ loaded.weight() - torch.eye(D, dtype=F64)).abs().max() < 1e-12


def test_batchnorm_inverse_is_exact_in_train_mode():
    bn = randomize(BatchNorm(D).double())
    bn.train()
    x = torch.randn(128, D, dtype=F64) * 3 + 2
    z, ladj = bn.inv_and_ladj(x)
    assert (z.mean(0) - bn.beta).abs().max() < 1e-10  # batch statistics were used
    back, ladj_fwd = bn.call_and_ladj(z)
    assert (back - x).abs().max() < 1e-10 and (ladj + ladj_fwd).abs().max() < 1e-10
    # Running averages moved towards the batch statistics.
    assert bool((bn.running_mean != 0).all())


def test_actnorm_initialises_from_the_first_batch_and_keeps_it():
    an = ActNorm(D).double()
    x = torch.randn(500, D, dtype=F64) * torch.tensor([1.0, 5.0, 0.1], dtype=F64) + 3
    z, _ = an.inv_and_ladj(x)
    assert z.mean(0).abs().max() < 1e-10 and (z.std(0) - 1).abs().max() < 1e-10
    state = an.state_dict()
    reloaded = ActNorm(D).double()
    reloaded.load_state_dict(state)
    assert bool(reloaded.initialized)
    assert torch.equal(reloaded.inv_and_ladj(x * 2)[0], an.inv_and_ladj(x * 2)[0])


def test_conditional_layer_without_context_raises():
    layer = MaskedAutoregressive(D, context_dim=C)
    with pytest.raises(ValueError, match="context of size 2"):
        layer(torch.randn(4, D))
    with pytest.raises(ValueError, match="expected 2"):
        layer.condition(torch.randn(4, 3))


def test_invalid_constructions_raise():
    with pytest.raises(ValueError, match="dim >= 2"):
        Coupling(1)
    with pytest.raises(ValueError, match="permutation"):
        Permutation(torch.tensor([0, 0, 1]))
    with pytest.raises(ValueError, match="order"):
        MaskedAutoregressive(3, order="sideways")


# -- the slow direction of autoregressive layers: one pruned pass per degree ----------------------
@pytest.mark.parametrize("residual", [False, True], ids=["plain", "residual"])
@pytest.mark.parametrize(
    "context, every", [(0, False), (3, False), (3, True)], ids=["unconditional", "context", "every"]
)
@pytest.mark.parametrize("order", ["natural", "reversed", 7], ids=str)
def test_made_pass_for_one_degree_equals_the_full_pass(residual, context, every, order):
    from pyroflows.nn import MADE

    torch.manual_seed(0)
    made = MADE(5, 4, context, (24, 24, 24), order, residual=residual, context_every_layer=every)
    randomize(made)
    x = torch.randn(6, 5, dtype=torch.float32)
    ctx = torch.randn(6, context) if context else None
    full = made(x, ctx)
    with torch.no_grad():  # the in-place activations of a pass without autograd
        assert torch.equal(made(x, ctx), full.detach())
        many = x.expand(2, 6, 5)  # a context (6, C) broadcast against inputs (2, 6, D)
        # equal up to the GEMM's summation order, which depends on its shape and on the
        # number of threads (run alone, this file uses torch's default)
        assert torch.allclose(made(many, ctx), full.expand(2, 6, 5, 4).detach(), atol=1e-6)
    for degree in range(1, 6):
        (i,) = (made.degrees == degree).nonzero()[:, 0].tolist()
        assert torch.allclose(made.forward_degree(x, ctx, degree), full[:, i], atol=1e-5)
    with pytest.raises(ValueError, match="degree 6"):
        made.forward_degree(x, ctx, 6)


@pytest.mark.parametrize(
    "context, every", [(0, False), (3, False), (3, True)], ids=["unconditional", "context", "every"]
)
@pytest.mark.parametrize("features", [1, 2, 5])
@pytest.mark.parametrize("hidden", [(24, 24), (3, 7, 16)], ids=["wide", "narrow"])
def test_made_degree_passes_equal_the_full_pass(context, every, features, hidden):
    """Without autograd the slow direction computes each hidden unit once over all passes
    (``MADE.degree_passes``); each pass gives the full network's parameters for its feature,
    also with layers narrower than the number of degrees (some degrees without units)."""
    from pyroflows.nn import MADE

    torch.manual_seed(1)
    made = MADE(features, 4, context, hidden, order=3, context_every_layer=every)
    randomize(made)
    x = torch.randn(7, 6, features)
    ctx = torch.randn(6, context) if context else None
    with torch.no_grad():
        full = made(x, ctx)
        passes = made.degree_passes(ctx, x.shape[:-1])
        assert passes is not None
        for degree in range(1, features + 1):
            (i,) = (made.degrees == degree).nonzero()[:, 0].tolist()
            params = passes(x, degree)
            if degree == 1:  # reads the context only: one row per context row
                assert params.shape == (() if ctx is None else (6,)) + (4,)
            assert torch.allclose(params, full[..., i, :], atol=1e-5)
        with pytest.raises(ValueError, match=f"degree {features + 1}"):
            passes(x, features + 1)
    # with autograd (a flow's rsample) and with residual blocks: the pruned passes
    assert made.degree_passes(ctx, x.shape[:-1]) is None
    residual = MADE(features, 4, context, (8, 8), residual=True)
    with torch.no_grad():
        assert residual.degree_passes(ctx, x.shape[:-1]) is None


@pytest.mark.parametrize("univariate", [Affine, lambda: RQS(6, 3.0)], ids=["affine", "rqs"])
@pytest.mark.parametrize("iaf", [False, True], ids=["maf", "iaf"])
def test_slow_direction_without_autograd_equals_the_one_with(univariate, iaf):
    """Sampling (no autograd) solves with ``MADE.degree_passes``, an rsample with the pruned
    passes of ``MADE.forward_degree``: the same values and log-determinants, and the round
    trip through the fast direction."""
    torch.manual_seed(2)
    layer = MaskedAutoregressive(
        4,
        univariate(),
        context_dim=3,
        hidden=(20, 20),
        order=5,
        inverse=iaf,
        context_every_layer=True,
    )
    randomize(layer)
    u, ctx = torch.randn(30, 8, 4), torch.randn(8, 3)
    slow, fast = (
        (layer.inv_and_ladj, layer.call_and_ladj)
        if iaf
        else (layer.call_and_ladj, layer.inv_and_ladj)
    )
    with torch.no_grad():
        v, ladj = slow(u, ctx)
        back, back_ladj = fast(v, ctx)
    v_grad, ladj_grad = slow(u, ctx)
    assert torch.allclose(v, v_grad, atol=1e-5) and torch.allclose(ladj, ladj_grad, atol=1e-4)
    assert torch.allclose(back, u, atol=1e-4) and torch.allclose(back_ladj, -ladj, atol=1e-4)


def test_draws_reuse_the_workspace_across_modes_and_shapes():
    """The hidden units of the slow direction live in a per-thread workspace: draws in
    inference mode, then without autograd (inference tensors cannot be written outside
    inference mode), then of another shape, all equal the pruned passes with autograd."""
    torch.manual_seed(3)
    layer = MaskedAutoregressive(3, RQS(6, 3.0), context_dim=2, hidden=(16, 16))
    randomize(layer)
    z, ctx = torch.randn(5, 4, 3), torch.randn(4, 2)
    reference = layer.call(z, ctx).detach()
    with torch.inference_mode():
        first = layer.call(z, ctx).clone()
    with torch.no_grad():
        second = layer.call(z, ctx)
        smaller = layer.call(z[:2, :3], ctx[:3])
    assert torch.allclose(first, reference, atol=1e-5)
    assert torch.allclose(second, reference, atol=1e-5)
    assert torch.allclose(smaller, reference[:2, :3], atol=1e-5)


@pytest.mark.parametrize("features", [2, 4])
def test_every_feature_of_a_conditional_made_reads_the_context(features):
    """Hidden units of degree 0 read the context alone, so the parameters of the first
    feature depend on the context too; without a context that feature's are constants."""
    from pyroflows.nn import MADE

    torch.manual_seed(0)
    made = MADE(features, 3, context=2, hidden=(16, 16), order="reversed")
    randomize(made)
    x = torch.randn(features)
    jac = torch.autograd.functional.jacobian(lambda c: made(x, c), torch.randn(2))
    assert (jac.abs().sum((-2, -1)) > 1e-3).all()  # every feature moves with the context
    plain = MADE(features, 3, hidden=(16, 16), order="reversed")
    randomize(plain)
    first = int((plain.degrees == 1).nonzero())
    xs = torch.randn(10, features)
    assert torch.equal(plain(xs)[:, first], plain(xs)[:1, first].expand(10, 3))


def test_a_conditional_made_saved_without_context_units_loads_as_saved():
    """A conditional MADE saved before the hidden units of degree 0 (its first feature's
    parameters constant, the layout of ``tests/data``, made by the code of stop 20) loads in
    that layout: the same outputs, and the slow direction's passes agree with them."""
    from pathlib import Path

    from pyroflows.nn import MADE

    saved = torch.load(Path(__file__).parent / "data" / "made_without_context_units.pt")
    made = MADE(**saved["args"])
    made.load_state_dict(saved["state"])
    x, ctx = saved["x"], saved["context"]
    assert min(int(d.min()) for d in made.hidden_degrees()) == 1
    with torch.no_grad():
        assert torch.allclose(made(x, ctx), saved["output"], atol=1e-6)
        passes = made.degree_passes(ctx, x.shape[:-1])
        for degree in range(1, 4):
            (i,) = (made.degrees == degree).nonzero()[:, 0].tolist()
            expected = saved["output"][:, i]
            assert torch.allclose(passes(x, degree), expected, atol=1e-5)
            assert torch.allclose(made.forward_degree(x, ctx, degree), expected, atol=1e-5)
    fresh = MADE(**saved["args"])  # a new network has the units of degree 0
    assert min(int(d.min()) for d in fresh.hidden_degrees()) == 0
    randomize(fresh)
    made.load_state_dict(fresh.state_dict())  # and a save of it loads back in that layout
    assert min(int(d.min()) for d in made.hidden_degrees()) == 0
    with torch.no_grad():
        expected = fresh(x, ctx)
        assert torch.equal(made(x, ctx), expected)
        passes = made.degree_passes(ctx, x.shape[:-1])
        for degree in range(1, 4):
            (i,) = (made.degrees == degree).nonzero()[:, 0].tolist()
            assert torch.allclose(passes(x, degree), expected[:, i], atol=1e-5)
    with pytest.raises(RuntimeError, match="size mismatch"):  # not this network's save
        made.load_state_dict(MADE(3, 4, context=2, hidden=(8, 16)).state_dict())


@pytest.mark.parametrize("residual", [False, True], ids=["plain", "residual"])
def test_the_context_reaches_every_hidden_layer(residual):
    """With ``context_every_layer`` each hidden layer (each residual block's inner layer) gets
    its own linear map of the context: zeroing the first one leaves the output a function of
    the context, and zeroing them all leaves none."""
    from pyroflows.nn import MLP

    torch.manual_seed(0)
    net = MLP(3, 4, context=2, hidden=(8, 8, 8), residual=residual, context_every_layer=True)
    randomize(net)
    contexts = [i for i, c in enumerate(net._is_context) if c]
    assert [net._shapes[i] for i in contexts] == [(8, 2)] * 3
    x, c1, c2 = torch.randn(5, 3), torch.randn(5, 2), torch.randn(5, 2)
    offsets = [sum(net._sizes[:i]) for i in contexts]
    with torch.no_grad():
        net.flat_params[offsets[0] : offsets[0] + 16] = 0.0
        assert not torch.allclose(net(x, c1), net(x, c2))
        for offset in offsets[1:]:
            net.flat_params[offset : offset + 16] = 0.0
        assert torch.equal(net(x, c1), net(x, c2))
    with pytest.raises(ValueError, match="needs a context"):
        MLP(3, 4, context=0, context_every_layer=True)


@pytest.mark.parametrize("grad", [False, True], ids=["no_grad", "grad"])
def test_a_large_batch_gives_the_values_and_gradients_of_small_ones(grad):
    # from 4 096 rows the output layer runs 23 outputs as 24 (a faster CPU kernel) and slices
    from pyroflows.nn import MLP

    torch.manual_seed(0)
    net = MLP(3, 23, context=2, hidden=(16,))
    randomize(net)
    x, ctx = torch.randn(3, 2000, 3), torch.randn(2000, 2)
    with torch.set_grad_enabled(grad):
        big = net(x, ctx)
        small = torch.stack([net(x[i], ctx) for i in range(3)])
    assert big.shape == (3, 2000, 23)
    assert torch.allclose(big, small, atol=1e-5)
    if grad:
        (g_big,) = torch.autograd.grad(big.square().sum(), net.flat_params)
        (g_small,) = torch.autograd.grad(small.square().sum(), net.flat_params)
        assert torch.allclose(g_big, g_small, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("univariate", [Affine(), RQS(bins=5)], ids=["affine", "spline"])
@pytest.mark.parametrize("iaf", [False, True], ids=["maf", "iaf"])
def test_solving_by_degree_equals_fixed_point_iteration_with_full_passes(univariate, iaf):
    """The pruned solve gives what D full passes give (the textbook inversion), values and
    gradients, with a broadcast context."""
    torch.manual_seed(1)
    layer = MaskedAutoregressive(4, univariate, context_dim=2, order=3, inverse=iaf).double()
    randomize(layer)
    u = torch.randn(7, 5, 4, dtype=F64, requires_grad=True)
    ctx = torch.randn(5, 2, dtype=F64)
    solve = layer.inv_and_ladj if iaf else layer.call_and_ladj
    v, ladj = solve(u, ctx)

    w = torch.zeros_like(u)
    for _ in range(4):  # each full pass fixes one more feature
        params = layer.net(w, ctx)
        w, ladj_ref = layer.univariate(u, params, inverse=iaf)
    assert torch.allclose(v, w, atol=1e-12)
    assert torch.allclose(ladj, ladj_ref.sum(-1), atol=1e-12)
    (grad,) = torch.autograd.grad((v.sin().sum() + ladj.sum()), u)
    (grad_ref,) = torch.autograd.grad((w.sin().sum() + ladj_ref.sum()), u)
    assert torch.allclose(grad, grad_ref, atol=1e-10)


def test_loading_another_order_resets_the_pruned_passes():
    """The pruned passes are cached per degree; loading the state of a layer with another
    input order must not reuse the old layer's index sets (sampling would be silently wrong)."""
    torch.manual_seed(0)
    a = MaskedAutoregressive(4, RQS(bins=4), order="natural").double()
    b = MaskedAutoregressive(4, RQS(bins=4), order=3).double()
    randomize(b, seed=5)
    u = torch.randn(6, 4, dtype=F64)
    a.call_and_ladj(u)  # fills a's cache for its own order
    a.load_state_dict(b.state_dict())
    va, la = a.call_and_ladj(u)
    vb, lb = b.call_and_ladj(u)
    assert torch.allclose(va, vb, atol=1e-12) and torch.allclose(la, lb, atol=1e-12)


# -- ContextAffine: a posterior's location and width as functions of the context ---------------
def test_context_affine_learns_widths_over_orders_of_magnitude():
    """Alone on a standard normal base it is a conditional Gaussian: fitted by maximum
    likelihood to theta | c ~ N(2 c, exp(3 c)^2), c in (-1.5, 1.5), it must recover the mean
    and the log-width (-4.5 .. 4.5, four orders of magnitude) as functions of c."""
    from pyroflows import Flow
    from pyroflows.bases import StandardNormal
    from pyroflows.losses import nll
    from pyroflows.train import fit

    torch.manual_seed(0)
    c = torch.rand(2000, 1) * 3 - 1.5
    theta = 2 * c + torch.exp(3 * c) * torch.randn(2000, 1)
    flow = Flow([ContextAffine(1, 1, (32, 32))], StandardNormal(1), context_dim=1)

    fit(flow, nll, (theta, c), max_epochs=60, batch_size=100, lr=3e-3, schedule="cosine",
        patience=None, seed=0)  # fmt: skip
    grid = torch.tensor([[-1.0], [0.0], [1.0]])
    with torch.no_grad():
        shift, log_scale = flow.transforms[0]._shift_log_scale(grid)
    assert (log_scale - 3 * grid).abs().max() < 0.15
    # the mean to a tenth of the width wherever the width is
    assert ((shift - 2 * grid) / torch.exp(3 * grid)).abs().max() < 0.1


def test_context_affine_stays_finite_for_an_extreme_context():
    layer = randomize(ContextAffine(2, 3, (8, 8)))
    for value in (3e38, -1e6):
        context = torch.full((1, 3), value)
        x, ladj = layer.call_and_ladj(torch.randn(4, 1, 2), context)
        z, ladj_inv = layer.inv_and_ladj(x, context)
        assert torch.isfinite(x).all() and torch.isfinite(ladj).all()
        # the log-scale is soft-clamped to (-10, 10) per feature
        assert ladj.abs().max() < 20 and torch.equal(ladj, -ladj_inv)
