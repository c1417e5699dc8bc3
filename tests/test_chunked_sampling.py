"""How an amortized posterior draws for many observations: chunks of base draws taken from
torch's random stream in order, pushed through the flow on single-threaded workers, and the
network passes this path runs (the context's term with the bias, the IAF's one pass)."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn.functional as F

import pyroflows as pf
from pyroflows.amortized import AmortizedPosterior, estimator
from pyroflows.amortized.estimator import run_in_order, sample_chunks
from pyroflows.nn import MADE, MLP
from pyroflows.train.seeding import seeded_draws

SMALL = dict(layers=2, hidden=(16, 16))


def _prior():
    return dist.Uniform(-torch.ones(3), torch.ones(3)).to_event(1)


def _simulator(theta):
    return theta + 0.1 * torch.randn_like(theta)


@pytest.fixture(scope="module", params=["nsf", "realnvp"])
def post(request):
    pyro.set_rng_seed(0)
    # the logit map: every draw decoded, none rejected, as in the plain loop of _sequential
    post = AmortizedPosterior(prior=_prior(), simulator=_simulator, flow=request.param,
                              flow_kwargs=SMALL, intervals="logit")  # fmt: skip
    post.fit(num_simulations=200, max_epochs=1, progress=False, seed=0, recipe="one_phase")
    if request.param == "nsf":
        post.distil(num_simulations=100, max_epochs=1)
    return post


@pytest.fixture
def two_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


def _sequential(post, x, n, seed, sampler):
    """The draws as a plain loop over the chunks: each chunk's base draws, then the flow and
    the decoding, in the calling thread."""
    flow = post.student if sampler == "student" else post.estimator.flow
    with seeded_draws(seed), torch.inference_mode():
        context = post._context(x)
        per_chunk = max(1, estimator.CHUNK // len(x))
        parts = [
            post._decode_theta(flow.sample((min(per_chunk, n - i),), context)).to(torch.float32)
            for i in range(0, n, per_chunk)
        ]
    return torch.cat(parts)


def _samplers(post):
    return ["teacher", "student"] if post.student is not None else ["auto"]


def test_draws_are_those_of_a_sequential_loop_over_the_chunks(post, two_threads, monkeypatch):
    # chunks of 256 rows, 50 observations: 5 draws per chunk, 23 draws in 5 chunks (the last
    # shorter) run on two workers; their base draws must come from the stream in chunk order
    # and the parts must join in that order
    monkeypatch.setattr(estimator, "CHUNK", 256)
    x = torch.linspace(-0.5, 0.5, 150).reshape(50, 3)
    for sampler in _samplers(post):
        got = post.sample(x, 23, seed=4, sampler=sampler)
        assert got.shape == (23, 50, 3) and got.dtype == torch.float32
        assert not got.is_inference()
        assert torch.equal(got, _sequential(post, x, 23, 4, sampler))
        torch.set_num_threads(1)
        assert torch.equal(got, post.sample(x, 23, seed=4, sampler=sampler))
        torch.set_num_threads(2)


def test_chunks_run_on_workers_with_one_intra_op_thread(post, two_threads, monkeypatch):
    flow = post.student if post.student is not None else post.estimator.flow
    seen: list[tuple[int, bool, bool]] = []
    original = flow.transform_from_base

    def spy(z, context=None, *, check=True):
        seen.append((torch.get_num_threads(), torch.is_grad_enabled(), check))
        return original(z, context, check=check)

    monkeypatch.setattr(flow, "transform_from_base", spy)
    monkeypatch.setattr(estimator, "CHUNK", 256)
    draws = post.sample(torch.zeros(50, 3), 12, seed=0)
    assert draws.shape == (12, 50, 3)
    assert len(seen) == 3  # 5 draws per chunk
    # one intra-op thread per worker, without autograd, the inputs checked once before
    assert all(entry == (1, False, False) for entry in seen)
    assert torch.get_num_threads() == 2  # the caller's count afterwards


def test_a_failing_chunk_raises_and_restores_the_thread_count(two_threads):
    def fail(i):
        if i == 2:
            raise RuntimeError("chunk 2 failed")
        return torch.full((1,), float(i))

    with pytest.raises(RuntimeError, match="chunk 2 failed"):
        run_in_order(fail, [(i,) for i in range(6)], workers=2)
    assert torch.get_num_threads() == 2
    out = run_in_order(lambda i: torch.full((1,), float(i)), [(i,) for i in range(7)], 2)
    assert [float(t) for t in out] == list(range(7))
    with pytest.raises(ValueError, match="workers"):
        run_in_order(fail, [], workers=0)


def test_sample_chunks_checks_the_context_before_drawing():
    flow = pf.maf(2, layers=1, hidden=(8,), context_dim=3)
    context = torch.zeros(4, 3)
    context[1, 2] = float("nan")
    state = torch.get_rng_state()
    with pytest.raises(ValueError, match="context contains NaN"):
        sample_chunks(flow, context, 10, lambda z: z.double(), workers=2)
    assert torch.equal(torch.get_rng_state(), state)  # nothing drawn


def test_sample_chunks_follows_the_flows_dtype():
    flow = pf.realnvp(2, layers=2, hidden=(8,), context_dim=3).double()
    dtypes = []

    def decode(z):
        dtypes.append(z.dtype)
        return z.double()

    parts = sample_chunks(flow, torch.zeros(5, 3, dtype=torch.float64), 7, decode, workers=2)
    assert dtypes == [torch.float64] and torch.cat(parts).dtype == torch.float32
    with pytest.raises(ValueError, match="dtype"):
        sample_chunks(flow, torch.zeros(5, 3), 7, decode)


def test_transform_from_base_is_sample_without_the_draw():
    flow = pf.nsf(3, layers=2, hidden=(8,), context_dim=2)
    for p in flow.parameters():
        torch.nn.init.normal_(p, std=0.2)
    context = torch.randn(4, 2)
    torch.manual_seed(1)
    drawn = flow.sample((5,), context)
    torch.manual_seed(1)
    z = flow.base.sample((5, 4))
    with torch.no_grad():  # as sample (with autograd the solve sums in another order)
        assert torch.equal(flow.transform_from_base(z, context), drawn)
    assert torch.allclose(flow.transform_to_base(drawn, context), z, atol=1e-4)
    with pytest.raises(ValueError, match="x contains NaN"):
        flow.transform_from_base(torch.full((5, 4, 3), float("nan")), context)


def test_iaf_call_is_the_map_of_call_and_ladj():
    layer = pf.transforms.MaskedAutoregressive(3, context_dim=2, inverse=True)
    for p in layer.parameters():
        torch.nn.init.normal_(p, std=0.3)
    z, context = torch.randn(6, 4, 3), torch.randn(4, 2)
    x, ladj = layer.call_and_ladj(z, context)
    assert torch.equal(layer.call(z, context), x) and ladj.shape == (6, 4)
    back, _ = layer.inv_and_ladj(x, context)
    assert torch.allclose(back, z, atol=1e-5)


def _reference_mlp(net, x, context):
    """The network written out layer by layer (float64): each layer's product, its bias and
    the context's term added, then the activation."""
    weights = [w.double() for w in net.masked_weights()]
    params = iter(weights)
    x, context = x.double(), context.double()
    h = F.linear(x, next(params), next(params)) + F.linear(context, next(params))
    if net.residual:
        for _ in range(net._n_hidden):
            w1, b1, w2, b2 = next(params), next(params), next(params), next(params)
            inner = F.linear(torch.relu(h), w1, b1)
            if net.context_every_layer:
                inner = inner + F.linear(context, next(params))
            h = h + F.linear(torch.relu(inner), w2, b2)
        h = torch.relu(h)
    else:
        h = torch.relu(h)
        for _ in range(net._n_hidden):
            h = F.linear(h, next(params), next(params))
            if net.context_every_layer:
                h = h + F.linear(context, next(params))
            h = torch.relu(h)
    return F.linear(h, next(params), next(params))


@pytest.mark.parametrize("residual", [False, True], ids=["plain", "residual"])
@pytest.mark.parametrize("every", [False, True], ids=["first-layer", "every-layer"])
@pytest.mark.parametrize("grad", [False, True], ids=["no-grad", "grad"])
def test_mlp_with_context_matches_the_layer_by_layer_network(residual, every, grad):
    torch.manual_seed(0)
    net = MLP(3, 5, context=2, hidden=(8, 8, 8), residual=residual, context_every_layer=every)
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.4)  # residual blocks start at zero otherwise
    x, context = torch.randn(7, 4, 3), torch.randn(4, 2)
    expected = _reference_mlp(net, x, context)
    with torch.set_grad_enabled(grad):
        got = net(x, context)
    assert got.shape == (7, 4, 5)
    assert torch.allclose(got.double(), expected, atol=1e-5)
    # a MADE (masked weights) with a context of a larger batch than its input
    made = MADE(3, 2, context=2, hidden=(8, 8), context_every_layer=every)
    for p in made.parameters():
        torch.nn.init.normal_(p, std=0.4)
    one = torch.randn(1, 3)
    with torch.set_grad_enabled(grad):
        out = made(one, context)
    assert out.shape == (4, 3, 2)
    ref = _reference_mlp(made, one, context).reshape(4, 3, 2)
    assert torch.allclose(out.double(), ref, atol=1e-5)
