"""The rational-quadratic spline against a slow reference written from the paper's formulas
(Durkan et al., 2019, eqs. 4-8): one input at a time, all knots formed, a plain bin search."""

import math

import pytest
import torch

from pyroflows.ops import rational_quadratic_spline

F64 = torch.float64
MIN_BIN, MIN_DERIVATIVE = 1e-3, 1e-3


def _reference(x, w, h, d, bound, inverse):
    """Spline value and log-derivative for one scalar input and its 1-D raw parameters."""
    bins = w.shape[0]
    shift = math.log(math.expm1(1.0 - MIN_DERIVATIVE))

    def knots(raw):
        fractions = MIN_BIN + (1.0 - MIN_BIN * bins) * torch.softmax(raw, 0)
        return (
            torch.cat([torch.zeros(1, dtype=raw.dtype), torch.cumsum(fractions, 0)]) * (2 * bound)
            - bound
        )

    xs, ys = knots(w), knots(h)
    one = torch.ones(1, dtype=d.dtype)
    ds = torch.cat([one, MIN_DERIVATIVE + torch.nn.functional.softplus(d + shift), one])
    if not -bound <= x.item() <= bound:
        return x, 0.0 * x
    searched = ys if inverse else xs
    k = min(max(sum(float(e) <= float(x) for e in searched[1:-1]), 0), bins - 1)
    w_k, h_k = xs[k + 1] - xs[k], ys[k + 1] - ys[k]
    s = h_k / w_k
    if inverse:
        # solve y = y_k + h (s t^2 + d_k t (1 - t)) / (s + (d_k1 + d_k - 2 s) t (1 - t)) for t
        z = x - ys[k]
        curv = ds[k + 1] + ds[k] - 2 * s
        a = h_k * (s - ds[k]) + z * curv
        b = h_k * ds[k] - z * curv
        c = -s * z
        t = 2 * c / (-b - torch.sqrt(b * b - 4 * a * c))
        out = xs[k] + t * w_k
    else:
        t = (x - xs[k]) / w_k
    denom = s + (ds[k + 1] + ds[k] - 2 * s) * t * (1 - t)
    y = ys[k] + h_k * (s * t * t + ds[k] * t * (1 - t)) / denom
    deriv = s * s * (ds[k + 1] * t * t + 2 * s * t * (1 - t) + ds[k] * (1 - t) ** 2) / denom**2
    if inverse:
        return out, -torch.log(deriv)
    return y, torch.log(deriv)


@pytest.mark.parametrize("inverse", [False, True], ids=["forward", "inverse"])
@pytest.mark.parametrize("bins", [2, 8, 16])
def test_spline_matches_the_slow_reference_with_gradients(bins, inverse):
    """Outputs, log-derivatives and the gradients of both with respect to the input and every
    raw parameter agree with the reference to 1e-6 (float64), in both tails too; the values
    also at both ends of the interval."""
    g = torch.Generator().manual_seed(bins)
    n, bound = 40, 3.0
    w, h = (torch.randn(n, bins, generator=g, dtype=F64) * 2 for _ in range(2))
    d = torch.randn(n, bins - 1, generator=g, dtype=F64) * 2
    x = torch.linspace(-4.0, 4.0, n, dtype=F64)
    x[:4] = torch.tensor([-bound, bound, -5.0, 7.0], dtype=F64)  # both ends and both tails
    leaves = [t.clone().requires_grad_(True) for t in (x, w, h, d)]
    out, ladj = rational_quadratic_spline(*leaves, bound=bound, inverse=inverse)
    grads = torch.autograd.grad((out * 0.7 + ladj * 1.3).sum(), leaves)
    for i in range(n):
        ref_leaves = [t[i].detach().clone().requires_grad_(True) for t in (x, w, h, d)]
        ref_out, ref_ladj = _reference(*ref_leaves, bound, inverse)
        assert float(out[i]) == pytest.approx(float(ref_out), abs=1e-6)
        assert float(ladj[i]) == pytest.approx(float(ref_ladj), abs=1e-6)
        if abs(x[i].item()) == bound:
            continue  # the gradient at the ends themselves is one-sided; values checked above
        ref_grads = torch.autograd.grad(
            ref_out * 0.7 + ref_ladj * 1.3, ref_leaves, allow_unused=True
        )
        for got, ref, leaf in zip(grads, ref_grads, ref_leaves, strict=True):
            ref = torch.zeros_like(leaf) if ref is None else ref
            torch.testing.assert_close(got[i], ref, atol=1e-6, rtol=0)
    assert torch.equal(out[2:4], x[2:4]) and torch.equal(ladj[2:4], torch.zeros(2, dtype=F64))
