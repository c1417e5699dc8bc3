"""Probability density distillation (CaloFlow v2, Krause & Shih 2021): a fast-sampling IAF
student trained from a frozen MAF teacher.

A MAF samples in ``dim`` network passes per layer; an IAF with the same masks and orders samples
in one. The student starts as a copy of the teacher (same MADE masks, orders and weights, the
network reading the other side of each layer) and is trained on the sum of mean squared errors
that the seeds use:

* **x-pass** (data batch): the teacher maps data ``x`` to its base point ``z`` in one pass per
  layer; the student maps ``z`` back. Terms: every intermediate value (the last one is the
  sample ``x``) and every layer's parameters (network outputs; shift and log-scale for affine
  layers);
* **z-pass** (fresh base draws): the student samples, the teacher maps the sample back. Terms:
  the base point ``z``, the intermediate values and the layer parameters;
* optionally ``kl_weight * KL(student || teacher)``, computed from the same z-pass: the
  student's log-density of its own draws costs nothing extra and the teacher scores them in one
  pass per layer (``weights`` all zero and ``kl_weight=1``: reverse KL alone).

Conditional teachers (``context_dim > 0``) are distilled on ``(x, context)`` pairs: the student
reads the same context. ``univariate=Affine()`` gives a spline teacher an affine student (an
IAF): a spline student (the teacher's networks, one pass per layer) draws in 0.46-0.64x the
CPU time of the teacher's pruned autoregressive solve, an affine one in a sixth to a third of
the spline student's (``benchmarks/results/fast_sampler_variants.md``).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from pyroflows.flows import Flow
from pyroflows.train import fit
from pyroflows.transforms import (
    ActNorm,
    ContextAffine,
    ElementwiseAffine,
    LULinear,
    MaskedAutoregressive,
)
from pyroflows.transforms.univariate import Univariate
from pyroflows.validation import hidden_sizes

__all__ = ["DistillationLoss", "distill", "student_of"]


#: trainable layers that are cheap in both directions: the student starts from a copy and
#: trains it along with its autoregressive layers
_FAST_BOTH_WAYS = (LULinear, ContextAffine, ElementwiseAffine, ActNorm)


def _is_ar(layer: nn.Module) -> bool:
    return isinstance(layer, MaskedAutoregressive)


def _hidden_of(layer: MaskedAutoregressive) -> tuple[int, ...]:
    """The hidden sizes of a (non-residual) MADE: its weight matrices' output sizes."""
    net = layer.net
    if net.residual:
        raise ValueError("a residual teacher's student needs its hidden sizes: pass hidden=")
    shapes = [s for s, c in zip(net._shapes, net._is_context, strict=True) if len(s) == 2 and not c]
    return tuple(s[0] for s in shapes[:-1])


def distillable(flow: Flow) -> bool:
    """Whether :func:`distill` accepts ``flow`` as a teacher: a flow without coupling layers
    (a coupling flow already samples in one pass per layer)."""
    from pyroflows.transforms import Coupling

    return not any(isinstance(layer, Coupling) for layer in flow.transforms)


def _check_teacher(teacher: Flow) -> None:
    if not isinstance(teacher, Flow):
        raise TypeError(f"teacher must be a pyroflows Flow, got {type(teacher).__name__}")
    if not distillable(teacher):
        raise ValueError(
            "the teacher has coupling layers (RealNVP, coupling NSF): a coupling flow already "
            "samples and scores in one pass per layer, so there is nothing to distil; use the "
            "teacher itself (distill is for MAF-direction autoregressive teachers, e.g. pf.maf)"
        )


def _check_data(teacher: Flow, data, name: str) -> None:
    if data is None or not (isinstance(data, Tensor) or isinstance(data, (list, tuple))):
        return  # a loader: checked by the loop
    tensors = (data,) if isinstance(data, Tensor) else tuple(data)
    if not tensors or not all(isinstance(t, Tensor) for t in tensors):
        return
    x = tensors[0]
    if x.dim() != 2 or x.shape[-1] != teacher.dim:
        raise ValueError(
            f"{name} must be (n, {teacher.dim}) for a teacher on {teacher.dim} dimensions, got "
            f"shape {tuple(x.shape)}"
        )
    if teacher.context_dim and (len(tensors) < 2 or tensors[1].shape[-1] != teacher.context_dim):
        got = tuple(tensors[1].shape) if len(tensors) > 1 else "no context"
        raise ValueError(
            f"{name} must be (x, context) with context (n, {teacher.context_dim}) for this "
            f"conditional teacher, got {got}"
        )
    for label, t in zip(("x", "context"), tensors[:2], strict=False):
        bad = ~torch.isfinite(t)
        if t.is_floating_point() and bool(bad.any()):
            row = int(bad.reshape(len(t), -1).any(-1).nonzero()[0, 0])
            raise ValueError(
                f"{name} ({label}) has {int(bad.sum())} NaN or infinite entries (first in row "
                f"{row}); distillation needs finite rows"
            )


def _maps_per_layer(
    teacher: Flow, univariate: Univariate | Sequence[Univariate | None] | None
) -> list[Univariate | None]:
    """One map (or ``None``: the teacher's) per autoregressive layer of ``teacher``."""
    count = sum(_is_ar(layer) for layer in teacher.transforms)
    maps = list(univariate) if isinstance(univariate, (list, tuple)) else [univariate] * count
    if len(maps) != count:
        raise ValueError(
            f"univariate must be one map or one per autoregressive layer of the teacher "
            f"({count}), got {len(maps)}"
        )
    for m in maps:
        if m is not None and not isinstance(m, Univariate):
            raise TypeError(f"univariate must be a Univariate map, got {type(m).__name__}")
    return maps


def student_of(
    teacher: Flow,
    hidden: Sequence[int] | None = None,
    univariate: Univariate | Sequence[Univariate | None] | None = None,
) -> Flow:
    """An IAF-direction copy of a MAF-direction teacher: same masks, orders and weights.

    With ``hidden`` the autoregressive layers get new networks of that size instead (same
    orders, univariate transforms, context, activation; starting as the identity): a
    narrower student samples faster and learns the teacher's per-layer maps from the
    distillation loss rather than starting from the teacher's weights. With ``univariate``
    (e.g. :class:`~pyroflows.transforms.Affine` for a spline teacher) the new networks drive
    that map instead (hidden sizes: ``hidden`` or the teacher's); a sequence gives one map per
    autoregressive layer, in the teacher's order (``None``: that layer's own map), e.g. a
    student of affine layers with one spline layer.

    Layers without trainable parameters (fixed affine maps, permutations, boxes) are copied,
    and so are the trainable layers that are cheap both ways (learnt linear maps, context
    affine heads, elementwise affine and activation normalisation), which the student trains.

    Example:
        >>> import pyroflows as pf
        >>> student = student_of(pf.maf(3, layers=2, hidden=(8,)))
        >>> [layer.iaf for layer in student.transforms]
        [True, True]
        >>> small = student_of(pf.maf(3, layers=2, hidden=(8,)), hidden=(4,))
        >>> sum(p.numel() for p in small.parameters()), sum(p.numel() for p in student.parameters())
        (92, 172)
    """
    if hidden is not None:
        hidden = hidden_sizes(hidden)
    _check_teacher(teacher)
    maps = _maps_per_layer(teacher, univariate)
    layers = []
    for layer in teacher.transforms:
        uni = maps.pop(0) if _is_ar(layer) else None
        if _is_ar(layer) and not layer.iaf and (hidden is not None or uni is not None):
            net = layer.net
            # new networks on the teacher's device, in its dtype
            student = MaskedAutoregressive(
                layer.dim, uni or layer.univariate, layer.context_dim,
                hidden or _hidden_of(layer), net.degrees.clone(), net.residual,
                type(net.activation), inverse=True,
                context_every_layer=net.context_every_layer,
            ).to(net.flat_params)  # fmt: skip
        elif _is_ar(layer) and not layer.iaf:
            student = copy.deepcopy(layer)
            student.iaf, student.inverse_is_fast = True, False
        elif _is_ar(layer) or (
            any(p.requires_grad for p in layer.parameters())
            and not isinstance(layer, _FAST_BOTH_WAYS)
        ):
            raise ValueError(
                f"distillation needs MAF-direction autoregressive layers (or fixed layers), got "
                f"{type(layer).__name__}" + (" in the IAF direction" if _is_ar(layer) else "")
            )
        else:
            student = copy.deepcopy(layer)
        layers.append(student)
    return Flow(layers, copy.deepcopy(teacher.base), teacher.context_dim)


def _student_pass(student: Flow, z: Tensor, context: Tensor | None):
    """Sampling direction, one pass per layer: values after each layer, parameters, log q."""
    values, params, log_q = [], [], student.base.log_prob(z)
    for layer in student.transforms:
        if _is_ar(layer):
            z, ladj, theta = layer.one_pass(z, context if layer.context_dim else None)
            params.append(theta)
        else:
            z, ladj = layer.call_and_ladj(z, context if layer.context_dim else None)
        values.append(z)
        log_q = log_q - ladj
    return values, params, log_q


def _teacher_pass(teacher: Flow, x: Tensor, context: Tensor | None):
    """Density direction, one pass per layer: the inputs of each layer in sampling order
    (``values[k]`` is the output of layer ``k``), parameters, base point and log p."""
    values, params, total = [], [], 0.0
    for layer in reversed(teacher.transforms):
        values.append(x)
        if _is_ar(layer):
            x, ladj, theta = layer.one_pass(x, context if layer.context_dim else None, True)
            params.append(theta)
        else:
            x, ladj = layer.inv_and_ladj(x, context if layer.context_dim else None)
        total = total + ladj
    return values[::-1], params[::-1], x, teacher.base.log_prob(x) + total


def _comparable(a: Sequence[Tensor], b: Sequence[Tensor]) -> bool:
    """Layer parameters of the same shapes (the same univariate maps)."""
    return all(u.shape == v.shape for u, v in zip(a, b, strict=True))


def _mse(a: Sequence[Tensor], b: Sequence[Tensor]) -> Tensor:
    if not a:
        return torch.zeros(())
    return sum(((u - v) ** 2).mean() for u, v in zip(a, b, strict=True)) / max(len(a), 1)


class DistillationLoss:
    """The CaloFlow v2 loss for :func:`pyroflows.train.fit`: ``loss(student, (x,))`` or
    ``loss(student, (x, context))``.

    Args:
        teacher: the frozen MAF teacher.
        weights: weights of the terms ``"z"`` (base points), ``"x"`` (samples),
            ``"hidden"`` (intermediate values) and ``"params"`` (layer parameters).
        kl_weight: weight of ``KL(student || teacher)`` on the z-pass.
    """

    TERMS = ("z", "x", "hidden", "params")

    def __init__(self, teacher: Flow, weights: dict[str, float] | None = None,
                 kl_weight: float = 0.0):  # fmt: skip
        self.teacher = teacher
        self.weights = dict.fromkeys(self.TERMS, 1.0) | dict(weights or {})
        if set(self.weights) - set(self.TERMS):
            raise ValueError(f"weights may only name {self.TERMS}")
        self.kl_weight = float(kl_weight)
        if not self.kl_weight and not any(self.weights.values()):
            raise ValueError("every term has weight 0: give a weight or kl_weight")
        self.last: dict[str, float] = {}

    def __call__(self, student: Flow, batch: tuple[Tensor, ...]) -> Tensor:
        x = batch[0]
        context = batch[1] if len(batch) > 1 else None
        w = self.weights
        terms: dict[str, Tensor] = {}  # the terms computed (``last`` reports only those)
        if w["x"] or w["hidden"] or w["params"]:  # x-pass: data -> teacher -> z -> student
            with torch.no_grad():
                t_values, t_params, z, _ = _teacher_pass(self.teacher, x, context)
            s_values, s_params, _ = _student_pass(student, z, context)
            terms["x"] = ((s_values[-1] - x) ** 2).mean()
            terms["hidden"] = _mse(s_values[:-1], t_values[:-1])
            if _comparable(s_params, t_params):
                terms["params"] = _mse(s_params, t_params)
        # z-pass: base draw -> student -> sample -> teacher -> base point
        z0 = student.base.rsample(x.shape[:-1])
        s_values, s_params, log_q = _student_pass(student, z0, context)
        t_values, t_params, z_back, log_p = _teacher_pass(self.teacher, s_values[-1], context)
        terms["z"] = ((z_back - z0) ** 2).mean()
        terms["hidden"] = terms.get("hidden", 0.0) + _mse(t_values[:-1], s_values[:-1])
        if _comparable(s_params, t_params):
            terms["params"] = terms.get("params", 0.0) + _mse(s_params, t_params)
        loss = sum(w[k] * terms[k] for k in self.TERMS if w[k] and k in terms)
        if self.kl_weight:
            terms["kl"] = (log_q - log_p).mean()
            loss = loss + self.kl_weight * terms["kl"]
        self.last = {k: float(v.detach()) for k, v in terms.items()}
        return loss


def distill(
    teacher: Flow,
    data: Tensor | Sequence[Tensor],
    val_data: Tensor | Sequence[Tensor] | None = None,
    *,
    weights: dict[str, float] | None = None,
    kl_weight: float = 0.0,
    hidden: Sequence[int] | None = None,
    univariate: Univariate | Sequence[Univariate | None] | None = None,
    max_epochs: int = 50,
    batch_size: int = 256,
    lr: float = 1e-3,
    **fit_kwargs,
) -> Flow:
    """Train an IAF student (:func:`student_of`) of a frozen MAF ``teacher``.

    Args:
        teacher: a flow of MAF-direction autoregressive layers (e.g. :func:`pyroflows.maf`); it
            is not modified.
        data: the teacher's training data ``x`` (or ``(x, context)`` for conditional flows).
        val_data: optional validation data (early stopping on the distillation loss).
        weights: weights of the MSE terms (``"z"``, ``"x"``, ``"hidden"``, ``"params"``).
        kl_weight: weight of ``KL(student || teacher)``.
        hidden: hidden sizes of a narrower student (default: the teacher's networks, copied).
        univariate: the student's map (e.g. :class:`~pyroflows.transforms.Affine` for a spline
            teacher), or one per autoregressive layer (:func:`student_of`); the ``"params"``
            term is then left out (the maps' parameters differ), and a nonzero ``"params"``
            weight is refused.
        max_epochs, batch_size, lr, **fit_kwargs: passed to :func:`pyroflows.train.fit`.

    Returns:
        The student (eval mode): samples in one pass per layer; ``.history`` holds training.

    Example:
        >>> import pyroflows as pf
        >>> teacher = pf.maf(2, layers=1, hidden=(8,))
        >>> student = distill(teacher, torch.randn(64, 2), max_epochs=1, progress=False)
        >>> student.sample((3,)).shape
        torch.Size([3, 2])
    """
    _check_teacher(teacher)
    _check_data(teacher, data, "data")
    _check_data(teacher, val_data, "val_data")
    if univariate is not None:
        if (weights or {}).get("params"):
            raise ValueError(
                "weights['params'] must be 0 with univariate=: the student's maps have other "
                "parameters than the teacher's"
            )
        weights = {**(weights or {}), "params": 0.0}
    frozen = copy.deepcopy(teacher).eval().requires_grad_(False)
    student = student_of(frozen, hidden, univariate).requires_grad_(True)
    loss = DistillationLoss(frozen, weights, kl_weight)
    student.history = fit(student, loss, data, val_data, max_epochs=max_epochs,
                          batch_size=batch_size, lr=lr, **fit_kwargs)  # fmt: skip
    return student
