"""The objectives against known answers: each loss, minimised by the shared loop, recovers a
target whose answer is known in closed form."""

from __future__ import annotations

import math

import pytest
import torch

import pyroflows as pf
from pyroflows.losses import Chi2, ForwardKL, ReverseKL, log_mean_exp, nll

MEAN = torch.tensor([1.0, -2.0], dtype=torch.float64)
STD = torch.tensor([0.5, 2.0], dtype=torch.float64)


def log_target(z: torch.Tensor) -> torch.Tensor:
    """An unnormalised diagonal Gaussian: log N(z; MEAN, diag STD^2) + 3."""
    return -0.5 * (((z - MEAN) / STD) ** 2).sum(-1) + 3.0


def flow64():
    return pf.maf(2, layers=2, hidden=(16, 16)).double()


@pytest.mark.parametrize("loss_cls", [ReverseKL, ForwardKL, Chi2], ids=lambda c: c.__name__)
def test_sampling_losses_recover_a_gaussian_target(loss_cls):
    flow = flow64()
    hist = pf.fit(
        flow,
        loss_cls(log_target, num_samples=256),
        max_epochs=12,
        steps_per_epoch=50,
        lr=1e-2,
        patience=None,
        seed=0,
        progress=False,
    )
    assert hist.stop_reason == "max_epochs"
    x = flow.sample((20000,))
    assert torch.allclose(x.mean(0), MEAN, atol=0.1), x.mean(0)
    assert torch.allclose(x.std(0), STD, rtol=0.1), x.std(0)


def test_reverse_kl_value_is_kl_minus_log_z():
    """For q = p the reverse KL is exactly -log Z of the unnormalised target."""
    from pyroflows.transforms import ElementwiseAffine

    q = pf.Flow([ElementwiseAffine(MEAN, STD)], pf.StandardNormal(2)).double()
    log_z = 3.0 + math.log(2 * math.pi) + torch.log(STD).sum().item()
    value = ReverseKL(log_target, num_samples=64)(q, ())
    assert value.item() == pytest.approx(-log_z, abs=1e-10)


def test_annealing_raises_the_inverse_temperature_linearly_to_one():
    loss = ReverseKL(log_target, num_samples=8, anneal_steps=4, beta0=0.2)
    flow = flow64()
    betas = []
    for _ in range(6):
        betas.append(loss.beta)
        loss(flow, ())
    assert betas == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0, 1.0])
    flow.eval()  # validation calls do not advance the schedule
    loss(flow, ())
    assert loss.calls == 6


def test_nll_is_the_mean_negative_log_likelihood_with_and_without_context():
    flow = pf.maf(2, context_dim=3, layers=1, hidden=(8,)).double()
    x, c = torch.randn(5, 2, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    assert nll(flow, (x, c)).item() == pytest.approx(-flow.log_prob(x, c).mean().item())
    with pytest.raises(ValueError, match="batch"):
        nll(flow, (x, c, c))


def test_sampling_losses_reject_bad_targets_and_sizes():
    with pytest.raises(ValueError, match="num_samples"):
        ReverseKL(log_target, num_samples=0)
    with pytest.raises(TypeError, match="callable"):
        ForwardKL(3.0)
    with pytest.raises(ValueError, match="shape"):
        ReverseKL(lambda z: z, num_samples=4)(flow64(), ())


def test_log_mean_exp_is_stable():
    x = torch.tensor([1000.0, 1000.0 + math.log(3.0)], dtype=torch.float64)
    assert log_mean_exp(x).item() == pytest.approx(1000.0 + math.log(2.0))
