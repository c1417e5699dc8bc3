"""Far outliers: ``log_prob`` is a very negative number or ``-inf``, never NaN.

A coordinate at 1e3 to 1e6 standard deviations, a huge finite value close to the dtype's
largest (3e38 in float32, 1e300 in float64) or an infinity (through the unchecked path, since
``Flow.log_prob`` rejects non-finite data by design) must not turn into NaN anywhere: not in the
conditioner networks (which see their inputs clamped to a large finite range), not in the
elementwise maps (identity tails, finite log-derivatives) and not in the linear layers.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable

import pytest
import torch

import pyroflows as pf
from pyroflows.nn import MLP
from pyroflows.nn.made import INPUT_BOUND
from pyroflows.transforms import ActNorm, BatchNorm, FlowTransform, LULinear, Permutation

from conftest import randomize

D, C = 3, 2
H = (16, 16)

FAMILIES: dict[str, Callable[[int], pf.Flow]] = {
    "maf": lambda c: pf.maf(D, c, layers=3, hidden=H),
    "maf-batchnorm": lambda c: pf.maf(D, c, layers=3, hidden=H, batch_norm=True),
    "maf-resmade": lambda c: pf.maf(D, c, layers=2, hidden=H, residual=True, order="random"),
    "nsf": lambda c: pf.nsf(D, c, layers=3, hidden=H, bins=6),
    "nsf-coupling": lambda c: pf.nsf(D, c, layers=3, hidden=H, bins=6, coupling=True),
    "realnvp": lambda c: pf.realnvp(D, c, layers=3, hidden=H),
    "iaf": lambda c: pf.iaf(D, c, layers=2, hidden=H),
    "piecewise-linear": lambda c: pf.piecewise_linear(D, c, layers=2, hidden=H, bins=5),
}
UNIT = {"piecewise-linear"}
DTYPES = {"float32": torch.float32, "float64": torch.float64}
VARIANTS = [(f, c, dt) for f in FAMILIES for c in (0, C) for dt in DTYPES]
IDS = [f"{f}-ctx{c}-{dt}" for f, c, dt in VARIANTS]


def _huge(dtype: torch.dtype) -> float:
    """A finite value close to the top of the dtype's range."""
    return 3e38 if dtype == torch.float32 else 1e300


def _flow(family: str, context_dim: int, dtype: torch.dtype, seed: int = 0) -> pf.Flow:
    flow = randomize(FAMILIES[family](context_dim).double(), std=0.3, seed=seed)
    return flow.to(dtype).eval()


def _ordinary(family: str, n: int, dtype: torch.dtype) -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    if family in UNIT:
        return (torch.rand(n, D, generator=g, dtype=torch.float64) * 0.9 + 0.05).to(dtype)
    return torch.randn(n, D, generator=g, dtype=torch.float64).to(dtype)


def _context(context_dim: int, n: int, dtype: torch.dtype) -> torch.Tensor | None:
    if not context_dim:
        return None
    g = torch.Generator().manual_seed(4)
    return torch.randn(n, context_dim, generator=g, dtype=torch.float64).to(dtype)


def _with_outliers(x: torch.Tensor, values: list[float]) -> torch.Tensor:
    """Rows ``3 * i + j``: row ``i`` of ``x`` with coordinate ``j`` set to ``values[i]``."""
    rows = []
    for value in values:
        for j in range(D):
            row = x[len(rows) % len(x)].clone()
            row[j] = value
            rows.append(row)
    return torch.stack(rows)


def _unchecked_log_prob(flow: pf.Flow) -> Callable[..., torch.Tensor]:
    """The flow's ``log_prob`` without input checks (the checked path rejects infinities)."""
    if "check" in inspect.signature(flow.log_prob).parameters:
        return functools.partial(flow.log_prob, check=False)
    return flow._log_prob


@pytest.mark.parametrize(("family", "context_dim", "dtype"), VARIANTS, ids=IDS)
def test_huge_finite_outliers_give_very_negative_log_prob(family, context_dim, dtype):
    dtype = DTYPES[dtype]
    flow = _flow(family, context_dim, dtype)
    values = [1e3, -1e4, 1e6, -1e6, 1e30, -1e30, _huge(dtype), -_huge(dtype)]
    x = _with_outliers(_ordinary(family, 8, dtype), values)
    ctx = _context(context_dim, len(x), dtype)
    with torch.no_grad():
        lp = flow.log_prob(x, ctx)
        ordinary = flow.log_prob(_ordinary(family, len(x), dtype), ctx)
    assert not bool(lp.isnan().any()), f"NaN log_prob for rows {lp.isnan().nonzero()[:, 0]}"
    assert bool((lp < math.inf).all())
    if family in UNIT:  # outside the unit box of the uniform base
        assert bool((lp == -math.inf).all())
    else:
        # Beyond 1e6 standard deviations the density is negligible whatever the layers do.
        far = x.abs().amax(-1) >= 1e6
        assert bool((lp[far] < -1e3).all()), lp[far]
        assert bool((lp < ordinary.max()).all())


@pytest.mark.parametrize(("family", "context_dim", "dtype"), VARIANTS, ids=IDS)
def test_infinite_coordinates_give_minus_infinity(family, context_dim, dtype):
    dtype = DTYPES[dtype]
    flow = _flow(family, context_dim, dtype)
    x = _with_outliers(_ordinary(family, 2, dtype), [math.inf, -math.inf])
    ctx = _context(context_dim, len(x), dtype)
    with torch.no_grad():
        lp = _unchecked_log_prob(flow)(x, ctx)
    assert bool((lp == -math.inf).all()), lp
    with pytest.raises(ValueError, match="infinite"):
        flow.log_prob(x, ctx)  # the checked path refuses non-finite data


@pytest.mark.parametrize(("family", "context_dim", "dtype"), VARIANTS, ids=IDS)
def test_ordinary_inputs_unchanged_and_gradients_finite(family, context_dim, dtype):
    """The conditioners' input bound lies far outside ordinary data: switching it off changes
    neither the log-density nor its gradients, and the gradients are finite."""
    dtype = DTYPES[dtype]
    flow = _flow(family, context_dim, dtype)
    x = _ordinary(family, 64, dtype) * (1.0 if family in UNIT else 3.0)
    ctx = _context(context_dim, len(x), dtype)
    nets = [m for m in flow.modules() if isinstance(m, MLP)]
    assert nets and all(net.input_bound == INPUT_BOUND for net in nets)

    def log_prob_and_grads() -> tuple[torch.Tensor, list[torch.Tensor]]:
        flow.zero_grad()
        lp = flow.log_prob(x, ctx)
        lp.mean().backward()
        return lp.detach(), [p.grad.clone() for p in flow.parameters() if p.grad is not None]

    lp, grads = log_prob_and_grads()
    assert grads and all(bool(torch.isfinite(g).all()) for g in grads)
    for net in nets:
        net.input_bound = None
    lp_free, grads_free = log_prob_and_grads()
    # equal up to the dtype's rounding: the bound's extra operation may change the order of
    # the CPU kernels' sums (seen at 1e-7 relative in float32 on one CPU, bit-equal on another)
    rel = 1e-6 if dtype == torch.float32 else 1e-13
    for a, b in [(lp, lp_free), *zip(grads, grads_free, strict=True)]:
        assert (a - b).abs().max() <= rel * a.abs().max()


@pytest.mark.parametrize("residual", [False, True], ids=["mlp", "resmlp"])
def test_conditioner_is_unchanged_within_its_input_bound_and_finite_beyond(residual):
    net = randomize(MLP(3, 4, context=2, hidden=(16, 16), residual=residual), std=0.5)
    free = MLP(3, 4, context=2, hidden=(16, 16), residual=residual, input_bound=None)
    free.load_state_dict(net.state_dict())
    x = torch.linspace(-INPUT_BOUND, INPUT_BOUND, 300).reshape(100, 3)
    ctx = torch.linspace(-1e3, 1e3, 200).reshape(100, 2)
    assert torch.equal(net(x, ctx), free(x, ctx))
    huge = torch.tensor([[math.inf, -3e38, 1.0], [1e30, 0.0, -math.inf]])
    out = net(huge, torch.tensor([[3e38, -math.inf], [0.0, 1e30]]))
    assert bool(torch.isfinite(out).all())
    assert bool(free(huge, torch.zeros(2, 2)).isnan().any()), "the failure the bound prevents"


LAYERS: dict[str, Callable[[], FlowTransform]] = {
    "lu-linear-init": lambda: LULinear(D, seed=1),
    "lu-linear": lambda: randomize(LULinear(D, seed=1).double()),
    "batchnorm-eval": lambda: randomize(BatchNorm(D).double()).eval(),
    "actnorm-eval": lambda: randomize(ActNorm(D).double()).eval(),
    "permutation": lambda: Permutation.random(D, seed=2),
}
LAYER_VARIANTS = [pytest.param(name, dt, id=f"{name}-{dt}") for name in LAYERS for dt in DTYPES]


@pytest.mark.parametrize(("name", "dtype"), LAYER_VARIANTS)
def test_linear_and_normalisation_layers_map_outliers_without_nan(name, dtype):
    dtype = DTYPES[dtype]
    layer = LAYERS[name]().to(dtype)
    values = [1e6, -1e30, _huge(dtype), -_huge(dtype), math.inf, -math.inf]
    x = _with_outliers(_ordinary(name, 4, dtype), values)
    with torch.no_grad():
        z, ladj = layer.inv_and_ladj(x)
    assert not bool(z.isnan().any()), f"{name}: NaN in rows {z.isnan().any(-1).nonzero()[:, 0]}"
    assert bool(torch.isfinite(ladj).all())
    # Every outlier row stays an outlier: some coordinate is still huge (or infinite).
    assert bool((z.abs().amax(-1) > 1e3).all())
