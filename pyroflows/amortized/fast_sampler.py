"""A fast sampler for an amortized posterior: a conditional IAF student of its flow.

An amortized posterior whose flow is autoregressive in the density direction (the spline flow
``nsf``, ``maf``) scores in one network pass per layer but draws by solving each layer one
coordinate at a time. :func:`distil_posterior` trains a conditional student in the sampling
direction (:func:`pyroflows.vi.distill`: an affine IAF with the teacher's orders, hidden
sizes and learnt linear maps; with ``family="spline"`` the teacher's own spline networks
read in the sampling direction; with ``family="mixed"`` narrow new networks, affine maps and a
spline in the last layer; with ``family="fastspline"`` new networks, affine maps and splines on
equal-width bins, whose bin is found by arithmetic where the student draws) on the contexts
the posterior's summary network gives for simulated data; the student draws in one pass per
layer. The posterior then draws from the student (``sample(..., sampler="auto")``) and keeps
the teacher's exact ``log_prob``; ``sampler="teacher"`` asks for the teacher's draws.

Objectives (:data:`OBJECTIVES`), each a :class:`~pyroflows.vi.distill.DistillationLoss`:

* ``"kl"``: the reverse KL of the student against the teacher on the student's own draws
  (the student's log-density of its draws comes with them; the teacher scores them in one
  pass per layer);
* ``"latent"``: the CaloFlow mean squared errors between the two flows' base points,
  intermediate values and outputs on simulated parameters and on the student's draws;
* ``"both"``: their sum.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from pyroflows.amortized.ensemble import not_for_ensembles
from pyroflows.amortized.one_observation import refuse_for_one_observation
from pyroflows.amortized.simulate import check_training
from pyroflows.flows import Flow
from pyroflows.train.seeding import seeded
from pyroflows.transforms import RQS, Affine, Coupling, EqualBinRQS, MaskedAutoregressive
from pyroflows.transforms.univariate import Univariate
from pyroflows.validation import positive_int
from pyroflows.vi.distill import _hidden_of, distill, student_of

if TYPE_CHECKING:  # the class these methods are part of (no import at run time)
    from pyroflows.amortized.posterior import AmortizedPosterior

#: the posterior (:class:`~pyroflows.amortized.posterior.AmortizedPosterior`), not imported
Posterior = Any

__all__ = [
    "FAMILIES",
    "FastSampling",
    "OBJECTIVES",
    "SAMPLERS",
    "STUDENT_DEFAULTS",
    "distil",
    "distil_posterior",
    "divergences",
    "family_maps",
    "fastspline_maps",
    "mixed_maps",
    "sampling_flow",
]

_ZERO = {"z": 0.0, "x": 0.0, "hidden": 0.0, "params": 0.0}
#: ``objective -> (weights of the MSE terms, weight of the reverse KL)``
OBJECTIVES: dict[str, tuple[dict[str, float], float]] = {
    "kl": (_ZERO, 1.0),
    "latent": ({}, 0.0),
    "both": ({}, 1.0),
}
#: held-out contexts the divergences of a new student are estimated on (at most)
CHECK_CONTEXTS = 256
#: :meth:`distil` warns when either divergence (nats) of the student exceeds it
TOLERANCE = 0.05
#: what ``sample(..., sampler=)`` accepts
SAMPLERS = ("auto", "student", "teacher")
#: the students :meth:`FastSampling.distil` trains (``family=``): ``"affine"``, an affine IAF
#: with new networks of the teacher's widths (the default); ``"spline"``, the teacher's own
#: spline networks read in the sampling direction (the closest to the teacher, 3-6x the
#: affine student's sampling time; ``benchmarks/results/fast_sampler_variants.md``,
#: ``fast_sampler_spline.md``); ``"mixed"``, new networks of :data:`MIXED_HIDDEN`, affine maps
#: and a spline in the last layer (:func:`mixed_maps`; 0.9-1.4x the affine student's sampling
#: time, closer to a multimodal teacher, not to a unimodal one;
#: ``benchmarks/results/fast_sampler_designs.md``); ``"fastspline"``, new networks of
#: :data:`FASTSPLINE_HIDDEN`, splines on equal-width bins
#: (:class:`~pyroflows.transforms.EqualBinRQS`) in the layers :func:`fastspline_maps` names
#: and affine maps in the others (``benchmarks/results/fast_sampler_equal_bins.md``)
FAMILIES = ("affine", "spline", "mixed", "fastspline")
#: ``family="mixed"``'s networks unless ``hidden=`` is given: one hidden layer of 32 units
MIXED_HIDDEN = (32,)
#: ``family="mixed"``'s training options over :data:`STUDENT_DEFAULTS` unless given: its new
#: networks start as the identity and take twice the epochs
MIXED_DEFAULTS: dict[str, Any] = dict(max_epochs=80)
#: ``family="mixed"``'s spline maps: bins (the bound is the teacher's, else 5)
MIXED_BINS = 8
#: ``family="fastspline"``'s networks unless ``hidden=`` is given: one hidden layer of 64 units
FASTSPLINE_HIDDEN = (64,)
#: ``family="fastspline"``'s training options over :data:`STUDENT_DEFAULTS` unless given
FASTSPLINE_DEFAULTS: dict[str, Any] = dict(max_epochs=80)
#: ``family="fastspline"``'s spline maps: bins (the bound is the teacher's, else 5)
FASTSPLINE_BINS = 8
#: :meth:`FastSampling.distil`'s family unless given
DEFAULT_FAMILY = "affine"
#: the distillation's training options unless given: a fixed number of epochs with a cosine
#: decay of the learning rate. No early stopping: the loss draws fresh base points at every
#: evaluation, so its validation value is noisy and stopping on it ended training early (at
#: 11-27 epochs, on a best epoch picked by the noise; ``benchmarks/results/fast_sampler.md``)
STUDENT_DEFAULTS: dict[str, Any] = dict(max_epochs=40, batch_size=256, lr=1e-3, patience=None,
                                        schedule="cosine")  # fmt: skip


def check_teacher(post: Posterior) -> None:
    """A fitted posterior whose flow draws slowly: autoregressive in the density direction."""
    post._check_fitted()
    layers = post.estimator.flow.transforms
    if any(isinstance(layer, Coupling) for layer in layers) or not any(
        isinstance(layer, MaskedAutoregressive) and not layer.iaf for layer in layers
    ):
        raise ValueError(
            f"the posterior's flow ({post.flow_name!r}) already draws in one pass per layer: "
            "there is nothing to distil (a student is for autoregressive flows such as 'nsf')"
        )


def check_family(post: Posterior, family: str) -> None:
    """A known student family that the teacher can give: ``"spline"`` reads the teacher's
    own spline maps, so every autoregressive layer of the teacher must be a spline."""
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    if family == "spline":
        layers = post.estimator.flow.transforms
        maps = [t.univariate for t in layers if isinstance(t, MaskedAutoregressive)]
        kinds = sorted({type(m).__name__ for m in maps if not isinstance(m, RQS)})
        if kinds:
            raise ValueError(
                f"family='spline' reads the teacher's spline maps, but the posterior's flow "
                f"({post.flow_name!r}) has {', '.join(kinds)} layers: use family='affine'"
            )


def _family_of(student: Flow) -> str:
    """``"fastspline"`` when the student has equal-width-bin splines, else ``"spline"`` when
    its autoregressive layers are all splines, ``"affine"`` when all are affine, ``"mixed"``
    when both (saved files name their family; this is for students made without one)."""
    layers = [t for t in student.transforms if isinstance(t, MaskedAutoregressive)]
    if any(isinstance(t.univariate, EqualBinRQS) for t in layers):
        return "fastspline"
    kinds = {
        isinstance(t.univariate, RQS)
        for t in student.transforms
        if isinstance(t, MaskedAutoregressive)
    }
    return "mixed" if len(kinds) == 2 else "spline" if kinds == {True} else "affine"


def mixed_maps(teacher: Flow) -> list[Univariate]:
    """``family="mixed"``'s maps, one per autoregressive layer of ``teacher``: affine maps,
    and a spline of :data:`MIXED_BINS` bins (the teacher's bound, else 5) for the last layer
    the draws go through (the one that gives the parameters).

    Example:
        >>> import pyroflows as pf
        >>> [type(m).__name__ for m in mixed_maps(pf.nsf(3, layers=3, hidden=(8,)))]
        ['Affine', 'Affine', 'RQS']
    """
    layers = [t for t in teacher.transforms if isinstance(t, MaskedAutoregressive)]
    bounds = [t.univariate.bound for t in layers if isinstance(t.univariate, RQS)]
    spline = RQS(MIXED_BINS, bounds[0] if bounds else 5.0)
    return [Affine()] * (len(layers) - 1) + [spline]


def fastspline_maps(teacher: Flow) -> list[Univariate]:
    """``family="fastspline"``'s maps, one per autoregressive layer of ``teacher``: splines of
    :data:`FASTSPLINE_BINS` equal-width bins (the teacher's bound, else 5) in the first and the
    last layer the draws go through, affine maps between.

    Example:
        >>> import pyroflows as pf
        >>> [type(m).__name__ for m in fastspline_maps(pf.nsf(3, layers=3, hidden=(8,)))]
        ['EqualBinRQS', 'Affine', 'EqualBinRQS']
    """
    layers = [t for t in teacher.transforms if isinstance(t, MaskedAutoregressive)]
    bounds = [t.univariate.bound for t in layers if isinstance(t.univariate, (RQS, EqualBinRQS))]
    spline = EqualBinRQS(FASTSPLINE_BINS, bounds[0] if bounds else 5.0)
    return [spline if i in (0, len(layers) - 1) else Affine() for i in range(len(layers))]


def family_maps(teacher: Flow, family: str) -> Univariate | list[Univariate] | None:
    """The student's univariate maps for ``family`` (:func:`pyroflows.vi.distill.student_of`'s
    ``univariate``): ``None`` for ``"spline"`` (the teacher's own)."""
    if family == "affine":
        return Affine()
    if family == "fastspline":
        return fastspline_maps(teacher)
    return None if family == "spline" else mixed_maps(teacher)


def _contexts(post: Posterior, theta: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    """``(encoded theta, summary of x)`` in the networks' dtype and device, without graph."""
    z, x_enc = post._training_tensors(theta, x)
    param = next(post.estimator.parameters())
    with torch.no_grad():
        context = post.estimator.summary(x_enc.to(param.device))
    return z.to(param.device), context


def divergences(
    teacher: Flow, student: Flow, context: Tensor, draws: int = 100
) -> dict[str, float]:
    """Monte Carlo estimates of the two KL divergences between the student and its teacher,
    averaged over the rows of ``context`` (``draws`` draws of each flow per row), in nats:
    ``"student_teacher"`` is ``KL(student || teacher)`` on the student's draws (it grows
    when the student puts mass where the teacher has little), ``"teacher_student"`` is
    ``KL(teacher || student)`` on the teacher's draws (it grows when the student misses
    part of the teacher's mass, e.g. a mode). Both flows' densities are exact, so each
    estimate is unbiased; 0 means the same distribution."""
    with torch.no_grad():
        x, log_q = student.rsample_and_log_prob((draws,), context)
        reverse = log_q - teacher.log_prob(x, context, check=False)
        y = teacher.sample((draws,), context)
        forward = teacher.log_prob(y, context, check=False) - student.log_prob(y, context)
    return {"student_teacher": float(reverse.mean()), "teacher_student": float(forward.mean())}


def distil_posterior(
    post: Posterior,
    theta: Tensor,
    x: Tensor,
    objective: str = "both",
    validation_fraction: float = 0.1,
    family: str = DEFAULT_FAMILY,
    **fit_kwargs: Any,
) -> Flow:
    """Train a student of ``post``'s flow on simulations ``(theta, x)`` (user units); returns
    it in eval mode with ``.history`` (:func:`pyroflows.train.fit`'s), without changing
    ``post``. ``family`` is one of :data:`FAMILIES`; ``fit_kwargs`` go over
    :data:`STUDENT_DEFAULTS` to :func:`pyroflows.vi.distill`."""
    check_family(post, family)
    if "univariate" in fit_kwargs:
        raise ValueError("the student's univariate map follows from family=: do not pass it")
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {sorted(OBJECTIVES)}, got {objective!r}")
    if not 0 <= validation_fraction < 1:
        raise ValueError(f"validation_fraction must lie in [0, 1), got {validation_fraction}")
    theta, x, _ = check_training(theta, x, post.space, post.observations)
    n_val = int(round(len(theta) * validation_fraction))
    if len(theta) - n_val < 1:
        raise ValueError(f"distillation needs at least 2 valid simulations, got {len(theta)}")
    z, context = _contexts(post, theta, x)
    weights, kl_weight = OBJECTIVES[objective]
    family_defaults = {"mixed": MIXED_DEFAULTS, "fastspline": FASTSPLINE_DEFAULTS}.get(family, {})
    options = {**STUDENT_DEFAULTS, **family_defaults, **fit_kwargs}
    options.setdefault("progress", False)
    if not n_val and options.get("patience") is not None:
        raise ValueError("patience needs held-out simulations: validation_fraction > 0")
    val = (z[:n_val], context[:n_val]) if n_val else None
    teacher = post.estimator.flow
    if family == "mixed":
        options.setdefault("hidden", MIXED_HIDDEN)
    if family == "fastspline":
        options.setdefault("hidden", FASTSPLINE_HIDDEN)
    student = distill(teacher, (z[n_val:], context[n_val:]), val, weights=weights,
                      kl_weight=kl_weight, univariate=family_maps(teacher, family),
                      **options)  # fmt: skip
    student = student.eval().requires_grad_(False)
    student.family = family  # what a saved file rebuilds (a one-layer mixed student is splines)
    # scored on the held-out contexts (else on at most CHECK_CONTEXTS training ones)
    held = context[:n_val] if n_val else context[:CHECK_CONTEXTS]
    training = teacher.training  # scored in eval mode, left in the mode it was in
    try:
        student.divergence = divergences(teacher.eval(), student, held[:CHECK_CONTEXTS])
    finally:
        teacher.train(training)
    worst = max(student.divergence.values())
    if worst > TOLERANCE:
        warnings.warn(
            f"the distilled sampler differs from the posterior's flow: KL(student || flow) "
            f"{student.divergence['student_teacher']:.3f}, KL(flow || student) "
            f"{student.divergence['teacher_student']:.3f} nats on held-out simulations "
            f"(tolerance {TOLERANCE}); sample(..., sampler='teacher') draws from the flow "
            "itself",
            UserWarning,
            stacklevel=4,
        )
    return student


def distil(
    post: Posterior,
    theta: Tensor | None,
    x: Tensor | None,
    num_simulations: int | None,
    objective: str = "both",
    seed: int = 0,
    family: str = DEFAULT_FAMILY,
    **fit_options: Any,
) -> Flow:
    """:meth:`AmortizedPosterior.distil`: check the teacher and the call, simulate
    ``num_simulations`` (or take ``theta`` and ``x``) and train the student, all under
    ``seed`` (the global random state is left as it was); returns the student without
    changing ``post``."""
    check_teacher(post)
    check_family(post, family)
    if (num_simulations is None) == (theta is None or x is None):
        raise ValueError("distil takes theta and x, or num_simulations")
    with seeded(seed):
        if num_simulations is not None:
            theta, x = post._simulate_many(positive_int("num_simulations", num_simulations))
        return distil_posterior(post, theta, x, objective, family=family, seed=seed,
                                **fit_options)  # fmt: skip


def sampling_flow(post: Posterior, sampler: str) -> Flow:
    """The flow that draws for ``sampler``: ``"auto"`` the student when there is one, else
    the teacher; ``"student"`` the student (an error without one); ``"teacher"`` the
    posterior's own flow."""
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    student = getattr(post, "student", None)
    if sampler == "student" and student is None:
        raise ValueError("this posterior has no student: call distil() first")
    if sampler == "teacher" or student is None:
        return post.estimator.flow
    return student


def student_config(post: Posterior) -> dict[str, Any] | None:
    """What a saved file needs to rebuild the student (None without one)."""
    if getattr(post, "student", None) is None:
        return None
    first = next(t for t in post.student.transforms if isinstance(t, MaskedAutoregressive))
    return {"state": {k: v.cpu() for k, v in post.student.state_dict().items()},
            "hidden": list(_hidden_of(first)),
            "family": getattr(post.student, "family", None) or _family_of(post.student),
            "divergence": dict(getattr(post.student, "divergence", None) or {})}  # fmt: skip


def restore_student(post: Posterior, saved: dict[str, Any] | None) -> None:
    """Rebuild a saved student around the restored teacher (None: no student)."""
    post.student = None
    if saved is None:
        return
    hidden = tuple(positive_int("hidden", h) for h in saved["hidden"])
    family = saved.get("family", "affine")  # files written before the spline family: affine
    if family not in FAMILIES:
        raise ValueError(f"the saved student's family must be one of {FAMILIES}, got {family!r}")
    # a spline student: new networks of the saved widths around the teacher's spline maps
    teacher = post.estimator.flow
    student = student_of(teacher, hidden, family_maps(teacher, family))
    student.load_state_dict(saved["state"])
    student.family = family
    # files written before the divergences were kept have none
    divergence = saved.get("divergence") or None
    student.divergence = {k: float(v) for k, v in divergence.items()} if divergence else None
    post.student = student.eval().requires_grad_(False)


class FastSampling:
    """The fast sampler's method of :class:`~pyroflows.amortized.posterior.AmortizedPosterior`
    (:meth:`distil`; its ``student``)."""

    def distil(
        self,
        theta: Tensor | None = None,
        x: Tensor | None = None,
        *,
        num_simulations: int | None = None,
        objective: str = "both",
        seed: int = 0,
        family: str = DEFAULT_FAMILY,
        **fit_options: Any,
    ) -> AmortizedPosterior:
        """Train a fast sampler: a conditional IAF student of the posterior's autoregressive
        flow (:mod:`~pyroflows.amortized.fast_sampler`). Afterwards :meth:`sample` draws from
        the student (``sampler="teacher"`` from the flow itself), :meth:`log_prob` stays the
        flow's exact density, :meth:`save` keeps the student, and a new :meth:`fit` drops it.

        The student is then scored against the flow on the held-out simulations' contexts
        (:func:`~pyroflows.amortized.fast_sampler.divergences`, both KL divergences in nats,
        kept as ``student.divergence``); a ``UserWarning`` says when either exceeds
        :data:`~pyroflows.amortized.fast_sampler.TOLERANCE`. An affine student cannot take
        every shape a spline flow can: on SLCP's multimodal posteriors it stays
        distinguishable from its teacher (docs/limits.md); ``family="spline"`` keeps the
        teacher's spline maps and comes closer (C2ST 0.48-0.53 against the teacher on SLCP and
        the linear Gaussian, against 0.52-0.68), at 3.4-6.1x the affine student's sampling
        time (``benchmarks/results/fast_sampler_spline.md``); ``family="mixed"`` draws in
        about the affine student's time and is closer to SLCP's teacher, not to the linear
        Gaussian's (``benchmarks/results/fast_sampler_designs.md``); ``family="fastspline"``
        draws in 1.1-1.4x the affine student's time and is closer than it to both teachers
        (mean development C2ST 0.562 on SLCP, 0.525 on the linear Gaussian;
        ``benchmarks/results/fast_sampler_equal_bins.md``).

        Args:
            theta, x: simulations (user units), or ``num_simulations`` simulated here under
                ``seed`` (the global random state is left as it was).
            objective: ``"both"`` (the default: reverse KL on the student's own draws plus
                CaloFlow's mean squared errors), ``"kl"`` or ``"latent"``.
            seed: seed of the simulations and of the distillation.
            family: ``"affine"`` (the default: an affine IAF with new networks of the
                teacher's widths), ``"spline"`` (the teacher's own spline networks read in the
                sampling direction, trained from there; a flow of spline layers only, such as
                ``"nsf"``) or ``"mixed"`` (new networks of one hidden layer of 32 units unless
                ``hidden=`` is given, affine maps and an 8-bin spline in the last layer, 80
                epochs unless ``max_epochs=`` is given) or ``"fastspline"`` (new networks of
                one hidden layer of 64 units unless ``hidden=`` is given, 8-bin splines on
                equal-width bins in the first and last layer, affine maps between, 80
                epochs unless ``max_epochs=`` is given). :meth:`save` keeps the family.
            **fit_options: options of :func:`pyroflows.train.fit` over
                :data:`~pyroflows.amortized.fast_sampler.STUDENT_DEFAULTS` (40 epochs, cosine
                decay, no early stopping), ``hidden`` (the student's new networks' hidden
                sizes; without it the affine and spline students have the teacher's widths),
                and ``validation_fraction`` (0.1: the simulations held out for the divergences
                and the validation loss; ``patience`` needs some).

        Raises:
            ValueError: not fitted, a flow that already draws in one pass per layer
                (coupling), an unknown family or ``family="spline"`` for a flow with other
                than spline layers, or bad simulations / options; the posterior is then
                unchanged.
        """
        not_for_ensembles(self, "distil")
        refuse_for_one_observation(self, "distil")
        self.student = distil(self, theta, x, num_simulations, objective, seed, family,
                              **fit_options)  # fmt: skip
        return self
