"""MAF -> IAF distillation: the student samples in one pass per layer and matches the teacher."""

from __future__ import annotations

import pytest
import torch

import pyroflows as pf
from pyroflows.nn import MLP
from pyroflows.vi import distill, student_of
from pyroflows.vi.distill import DistillationLoss

torch.set_num_threads(1)


def _data(n, dim=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, dim, generator=g)
    x = z.clone()
    x[:, 1] = z[:, 1] * 0.5 + torch.sin(2 * z[:, 0])
    x[:, 3] = z[:, 3] * 0.3 + x[:, 2] ** 2 / 2
    return x


def _count(flow):
    calls = [0]
    for m in flow.modules():
        if isinstance(m, MLP):
            m.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_student_copies_teacher_and_samples_in_one_pass_per_layer():
    teacher = pf.maf(4, layers=3, hidden=(16,), order="random")
    student = student_of(teacher)
    for t, s in zip(teacher.transforms, student.transforms, strict=True):
        assert torch.equal(t.order, s.order) and s.iaf and not t.iaf
    calls = _count(student)
    student.sample((10,))
    assert calls[0] == 3
    with pytest.raises(ValueError, match="MAF-direction"):
        student_of(pf.iaf(4, layers=1))


def test_distilled_student_matches_teacher():
    x = _data(3000)
    teacher = pf.maf(4, layers=3, hidden=(32, 32))
    pf.fit(teacher, pf.losses.nll, x, max_epochs=30, batch_size=256, lr=3e-3, seed=0,
           progress=False)  # fmt: skip
    test = _data(2000, seed=1)
    student = distill(teacher, x, max_epochs=30, lr=1e-3, seed=0, progress=False, kl_weight=0.1)
    with torch.no_grad():
        ll_t = teacher.log_prob(test).mean().item()
        ll_s = student.log_prob(test).mean().item()
        # the student's samples, mapped by the teacher, land near the base points
        z = student.base.sample((1000,))
        x_s = z
        for layer in student.transforms:
            x_s, _ = layer.call_and_ladj(x_s)
        z_back = teacher.transform_to_base(x_s)
    assert abs(ll_s - ll_t) < 0.05 * abs(ll_t) + 0.05, (ll_s, ll_t)
    assert ((z_back - z) ** 2).mean() < 0.05
    for p in teacher.parameters():
        assert p.requires_grad  # the teacher given is not modified


def test_narrow_student_keeps_orders_and_learns_the_teacher():
    x = _data(3000)
    teacher = pf.maf(4, layers=3, hidden=(32, 32), order="random")
    pf.fit(teacher, pf.losses.nll, x, max_epochs=30, batch_size=256, lr=3e-3, seed=0,
           progress=False)  # fmt: skip
    start = student_of(teacher, hidden=(8,))
    for t, s in zip(teacher.transforms, start.transforms, strict=True):
        assert torch.equal(t.order, s.order) and s.iaf
        assert s.net.flat_params.numel() < t.net.flat_params.numel()
    test = _data(2000, seed=1)
    with torch.no_grad():
        ll_t = teacher.log_prob(test).mean().item()
        ll_start = start.log_prob(test).mean().item()  # the identity: far from the teacher
    student = distill(teacher, x, hidden=(16, 16), max_epochs=60, lr=3e-3, seed=0,
                      progress=False)  # fmt: skip
    with torch.no_grad():
        ll_s = student.log_prob(test).mean().item()
    assert abs(ll_start - ll_t) > 0.5, (ll_start, ll_t)
    assert abs(ll_s - ll_t) < 0.05 * abs(ll_t) + 0.05, (ll_s, ll_t)
    with pytest.raises(ValueError, match="hidden"):
        student_of(teacher, hidden=(0,))


def test_loss_terms_and_weights():
    teacher = pf.maf(3, layers=2, hidden=(8,))
    loss = DistillationLoss(teacher, {"params": 0.0}, kl_weight=1.0)
    value = loss(student_of(teacher), (torch.randn(16, 3),))
    assert torch.isfinite(value)
    assert set(loss.last) == {"x", "z", "hidden", "params", "kl"}
    with pytest.raises(ValueError):
        DistillationLoss(teacher, {"nope": 1.0})


def test_a_narrow_student_takes_the_teachers_dtype():
    teacher = pf.maf(3, layers=2, hidden=(8,)).double()
    student = student_of(teacher, hidden=(4,))
    assert {p.dtype for p in student.parameters()} == {torch.float64}
    assert student.sample((5,)).dtype == torch.float64
