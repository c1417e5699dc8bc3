"""``FlowGuide``: a Pyro autoguide whose posterior is one normalizing flow over every latent site.

The latent sites are packed, as Pyro's :class:`~pyro.infer.autoguide.AutoContinuous` does, into
one unconstrained vector (each site through ``biject_to(site.support)``, log-Jacobians
included); the flow acts on that vector. Its layers run in the sampling-cheap direction (IAF
direction for autoregressive families, coupling layers as they are), so drawing and scoring a
guide sample cost one network pass per layer. The last layer is a learnable full-rank affine map
in whitened coordinates (:class:`~pyroflows.vi.affine.PreconditionedAffine`): by default it
starts at the Laplace approximation (MAP and inverse-Hessian Cholesky factor, which also whiten
every learnt parameter) where its ELBO beats the plain start ``N(init_loc, init_scale^2 I)``,
and at the plain start otherwise (a funnel, where no MAP exists); see :mod:`~pyroflows.vi.start`.
:meth:`FlowGuide.fit` ends with convergence checks (:mod:`~pyroflows.vi.convergence`).

:meth:`FlowGuide.fit` checks its arguments, sets the guide up and runs the one training loop
(:func:`pyroflows.train.fit`) on an :class:`~pyroflows.train.losses.ELBOLoss`. What the guide
reads from the model lives in :mod:`~pyroflows.vi.sites`, the Laplace start in
:mod:`~pyroflows.vi.laplace`, the posterior summaries in :mod:`~pyroflows.vi.summaries`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.distributions.transforms import biject_to
from pyro.distributions.util import sum_rightmost
from pyro.infer.autoguide import AutoContinuous
from pyro.infer.autoguide.initialization import init_to_median
from pyro.ops.tensor_utils import periodic_repeat
from pyro.poutine.util import prune_subsample_sites
from torch import Tensor, nn

from pyroflows.builders import build
from pyroflows.flows import Flow, FlowDistribution
from pyroflows.train import History, TrainingDiverged, fit
from pyroflows.train.checkpoint import data_fingerprint, load_all_or_nothing
from pyroflows.train.losses import ELBOLoss, by_steps
from pyroflows.train.seeding import forked_streams, seeded_draws
from pyroflows.validation import positive_int
from pyroflows.vi.affine import PreconditionedAffine
from pyroflows.vi.convergence import LossRecorder, diagnose, warn_unconverged
from pyroflows.vi.divergence import diverged_message, warn_nonfinite
from pyroflows.vi.laplace import log_joint as _log_joint
from pyroflows.vi.sites import (
    EnumBlock,
    argument_signature,
    check_model_arguments,
    dependent_supports,
    enumerated,
    expandable,
    hidden_discrete,
    model_tensors,
)
from pyroflows.vi.start import choose_start
from pyroflows.vi.summaries import PosteriorSummaries

#: particles per step of :meth:`FlowGuide.fit` where the model allows vectorised particles
#: (chosen on the development posteriors of ``benchmarks/vi_posteriors.py``: with 1 000 steps
#: and a warm-up + cosine schedule it gave a lower C2ST than 3 000 one-particle steps at a
#: constant rate on 7 of 7, in 0.18-0.84x the time: ``benchmarks/results/vi_fit_defaults.md``)
DEFAULT_PARTICLES = 4

__all__ = ["FlowGuide", "guide_flow"]


@contextmanager
def _torch_seeded(seed: int | None) -> Iterator[None]:
    """Run the block in a forked torch random state seeded with ``seed`` (nothing when None):
    the block is reproducible and the global random state is left as it was. The seed is
    used as it is, so the common ``pyro.set_rng_seed(s); guide.fit(..., seed=s)`` draws the
    same set-up as before the set-up was seeded (its draws and the loop's do not interact:
    initial values and weights there, the guide's noise in the loop)."""
    if seed is None:
        yield
        return
    with seeded_draws(seed):
        yield


def guide_flow(family: str, dim: int, **kwargs) -> Flow:
    """A flow of the given family whose sampling direction is one pass per layer.

    ``"nsf"``: autoregressive rational-quadratic splines in the IAF direction (``coupling=True``
    for coupling splines); ``"iaf"`` and ``"maf"``: affine autoregressive layers in the IAF
    direction (a MAF guide would sample in ``dim`` passes); ``"realnvp"``: affine coupling.

    Example:
        >>> guide_flow("nsf", 3, layers=2, hidden=(8,)).rsample((4,)).shape
        torch.Size([4, 3])
    """
    if family == "nsf" and not kwargs.get("coupling", False):
        kwargs.setdefault("inverse", True)
    if family == "maf":
        family = "iaf"
    if family == "realnvp" and dim < 2:
        family = "iaf"  # a coupling layer needs two features
    if family == "nsf" and kwargs.get("coupling") and dim < 2:
        kwargs.update(coupling=False, inverse=True)
    return build(family, dim, **kwargs)


class _LogProb(nn.Module):
    def __init__(self, flow: Flow):
        super().__init__()
        self.flow = flow

    def forward(self, x: Tensor) -> Tensor:
        return self.flow.log_prob(x, check=False)


def _check_flow_options(family: str, options: dict[str, Any]) -> None:
    """Refuse an unknown family or bad builder options (``layers``, ``hidden``, ``bins``...)
    when the guide is constructed, not at its first call: a throwaway 2-D flow is built with
    them, in a forked random state (the global one is left as it was)."""
    with forked_streams():
        guide_flow(family, 2, **{"hidden": (2,), **options})


def _has_splines(flow: Flow) -> bool:
    from pyroflows.transforms import RQS, PiecewiseLinear

    return any(
        isinstance(getattr(m, "univariate", None), (RQS, PiecewiseLinear)) for m in flow.modules()
    )


class STLFlowDistribution(FlowDistribution):
    """A :class:`FlowDistribution` whose ``log_prob`` is evaluated with detached parameters:
    the value keeps its reparametrised path, the score term ``∇_φ log q_φ(z)|_z`` vanishes
    (sticking the landing, Roeder et al. 2017). Costs one density-direction pass."""

    def log_prob(self, value: Tensor) -> Tensor:
        self._drawn = None
        if not torch.is_grad_enabled():
            return super().log_prob(value)
        detached = {f"flow.{n}": p.detach() for n, p in self.flow.named_parameters()}
        log_prob = torch.func.functional_call(_LogProb(self.flow), detached, (value,))
        return log_prob.expand(torch.broadcast_shapes(value.shape[:-1], self.batch_shape))

    def expand(self, batch_shape, _instance=None) -> STLFlowDistribution:
        return STLFlowDistribution(self.flow, None, torch.Size(batch_shape))


class FlowGuide(PosteriorSummaries, AutoContinuous):
    """A normalizing-flow autoguide over all latent sites of a Pyro model.

    Args:
        model: the Pyro model.
        flow: ``"iaf"`` (default), ``"nsf"``, ``"maf"`` (built in the IAF direction),
            ``"realnvp"``, or a callable ``dim -> Flow`` (an unconditional flow on ``R^dim``).
            Affine layers are the default because they fitted better under the reverse KL in
            our measurements: 10-D funnel C2ST 0.532 (IAF) against 0.611 (NSF) at equal
            steps (``benchmarks/vi.py``); eight schools' ``sd(mu)`` exact with RealNVP,
            underestimated by the NSF guide (notebook 06); and the STL gradient needs them.
            Spline layers (``"nsf"``) start at the identity, so a spline guide starts exactly
            where the affine one does (the whitened Laplace start). Under protocol (a) of
            ``benchmarks/vi_posteriors.py`` (1 000 steps, 4 particles, seed 0) they fit
            banana6 with a higher ELBO than the default (-0.89 against -1.40) but not a lower
            C2ST (0.661 against 0.653), and bimodal4 no better (0.615 against 0.582): from a
            start at one mode, every candidate measured stays at that mode
            (``benchmarks/results/vi_guide_candidates.md``); ``affine_init="multistart"``
            starts at both.
        layers: number of flow layers (builders only).
        hidden: hidden sizes of the conditioners (default two layers of ``max(32, 2 dim)``).
            ``(64, 64)`` follows curved posteriors more closely (banana6, protocol (a), mean
            C2ST over 3 seeds 0.621 against 0.651) at about the same cost per step, but is no
            better on the mean
            of the 25 benchmark posteriors (0.529 / 0.530 against 0.530 / 0.535 on the two
            splits) and worse on the 10-D funnel (0.601 against 0.577): rows "FlowGuide
            (hidden 64)" in ``benchmarks/results/vi_posteriors_default.md``.
        init_loc_fn: per-site initialisation (Pyro's ``init_to_*`` strategies).
        init_scale: initial scale of the affine layer (Gaussian start ``N(init_loc, s^2 I)``).
        affine_init: ``"auto"`` (default) estimates the ELBO (256 draws) of the Laplace start
            (MAP by L-BFGS from ``init_loc_fn``, Cholesky factor of the inverse Hessian, both
            used to whiten the affine layer's coordinates) and of the plain start, and keeps
            the higher; the plain start where the MAP search fails or the model has enumerated
            sites or subsampled plates. ``"laplace"`` always takes the Laplace start; ``None``
            always the plain one ``N(init_loc, init_scale^2 I)``. Measured on
            ill-conditioned regressions (``benchmarks/vi_conditioning.py``): the Laplace
            start keeps every mean within a fraction of a posterior sd from the first step.
        stl: sticking-the-landing gradient (the guide's own samples are scored with detached
            parameters; for ``Trace_ELBO``). Affine families only for now (``"iaf"``,
            ``"realnvp"``): with spline layers it is refused, since it drifted to a wrong
            posterior in our tests.
            ``"multistart"`` does what ``"auto"`` does, then runs ``map_starts`` more MAP
            searches from over-dispersed points (2 to 16 Laplace sds from the first MAP),
            clusters the optima and, where it finds more than one mode of comparable mass
            (Laplace weight of 1 % or more), also estimates the ELBO of a start at the
            mixture of their Laplace approximations weighted by their Laplace evidence (a
            :class:`~pyroflows.bases.FixedWeightGaussianMixture` base, weights fixed during
            training) and keeps it where it is the highest; with one mode found the start
            is exactly that of ``"auto"`` (:mod:`~pyroflows.vi.multistart`). On the
            two-mode ``bimodal4``, protocol (a), seeds 0-2: C2ST 0.50-0.52 against
            0.58-0.61 for ``"auto"`` (``benchmarks/results/vi_guide_candidates.md``); on the
            16 other development posteriors one mode, the ``"auto"`` start bit for bit, for
            1-20 s more set-up, 52 s on hmm_example
            (``benchmarks/results/vi_multistart.md``), hence opt-in.
            Refused, like ``"laplace"``, for models with enumerated sites or subsampled
            plates.
        map_steps: L-BFGS iterations of the Laplace start (of each search).
        map_starts: extra MAP searches of ``affine_init="multistart"`` (refused otherwise).
        create_plates: as for Pyro's autoguides (to share subsampling with the model).
        **flow_kwargs: passed to the builder (``bins``, ``bound``, ``coupling``, ``residual``...).

    Latent sites inside subsampled plates get full-size latents; each step uses the rows of the
    current subsample (as ``AutoNormal`` does).

    Example:
        >>> def model():
        ...     pyro.sample("s", dist.LogNormal(0.0, 1.0))
        >>> guide = FlowGuide(model, flow="iaf", layers=1, hidden=(8,))
        >>> sorted(guide.sample_posterior(5))
        ['s']
    """

    def __init__(
        self,
        model: Callable,
        flow: str | Callable[[int], Flow] = "iaf",
        layers: int = 3,
        hidden: Sequence[int] | None = None,
        init_loc_fn: Callable = init_to_median,
        init_scale: float = 0.1,
        affine_init: str | None = "auto",
        stl: bool = False,
        map_steps: int = 200,
        map_starts: int = 16,
        create_plates: Callable | None = None,
        **flow_kwargs,
    ):
        if affine_init not in (None, "laplace", "auto", "multistart"):
            raise ValueError(
                f"affine_init must be 'auto', 'laplace', 'multistart' or None, got {affine_init!r}"
            )
        if not init_scale > 0:
            raise ValueError(f"init_scale must be positive, got {init_scale}")
        if not (callable(flow) or isinstance(flow, str)):
            raise TypeError("flow must be a family name or a callable dim -> Flow")
        if callable(flow) and (layers != 3 or hidden is not None or flow_kwargs):
            raise ValueError(
                "layers, hidden and builder options size a built flow; with a callable flow "
                "they do not apply (build the flow to size in the callable)"
            )
        if affine_init is None and map_steps != 200:
            raise ValueError(
                "map_steps is the length of the Laplace start: pass affine_init='auto', "
                "'laplace' or 'multistart'"
            )
        if affine_init != "multistart" and map_starts != 16:
            raise ValueError(
                "map_starts is the number of extra MAP searches of affine_init='multistart'; "
                f"with affine_init={affine_init!r} there are none"
            )
        options = dict(flow_kwargs, layers=layers)
        if hidden is not None:
            options["hidden"] = tuple(hidden) if isinstance(hidden, (list, tuple)) else hidden
        if isinstance(flow, str):
            _check_flow_options(flow, options)
        # enumerated discrete sites are marginalised in the full model, not guided
        super().__init__(EnumBlock()(model), init_loc_fn=init_loc_fn)
        self.create_plates = create_plates
        self._model_fn = model
        self._model_args: tuple[tuple, dict] | None = None
        self._flow_spec = flow
        self._flow_kwargs = options
        self.init_scale = float(init_scale)
        self.affine_init = affine_init
        self.stl = bool(stl)
        self.map_steps = int(map_steps)
        self.map_starts = positive_int("map_starts", map_starts)

    # -- structure ----------------------------------------------------------------------------
    def _setup_prototype(self, *args, **kwargs) -> None:
        hidden: list[str] = []
        with hidden_discrete(hidden), torch.no_grad(), poutine.block():
            full = poutine.trace(self._model_fn).get_trace(*args, **kwargs)
        if hidden:
            raise ValueError(
                f"site {hidden[0]!r} is discrete and drawn from its prior inside the model the "
                "guide is fitted to (it is hidden from the ELBO, e.g. by poutine.block): the fit "
                "would average the likelihood over its prior instead of marginalising it. Pass "
                "the full model decorated with pyro.infer.config_enumerate: FlowGuide guides "
                "the continuous sites and marginalises the enumerated ones (TraceEnum_ELBO)"
            )
        moving = dependent_supports(self._model_fn, args, kwargs, full)
        if moving:
            raise ValueError(
                f"site {moving[0]!r} has a support that depends on other sites (it changed "
                "between two draws from the prior, e.g. Uniform(0, a) with a latent a): the "
                "guide maps every site through one fixed bijection onto its support, so its "
                "draws would leave the true one. Reparametrise, e.g. draw u ~ Uniform(0, 1) "
                "and set the site to a * u with pyro.deterministic"
            )
        self._full_sites = {
            name: (site["value"].shape, site["fn"].event_dim)
            for name, site in full.nodes.items()
            if site["type"] == "sample"
            and (enumerated(site) or (site.get("infer") or {}).get("_deterministic"))
        }
        self._enumerated_sites = [n for n, site in full.nodes.items() if enumerated(site)]
        self._deterministic_sites = [n for n in self._full_sites if n not in self._enumerated_sites]
        self._nesting = max(
            (-f.dim for site in full.nodes.values() if site["type"] == "sample"
             for f in site["cond_indep_stack"] if f.vectorized),
            default=0,
        )  # fmt: skip
        self._expandable = all(expandable(site["fn"]) for _, site in full.iter_stochastic_nodes())
        super()._setup_prototype(*args, **kwargs)
        # latents of sites inside subsampled plates span the full plate
        self._subsampled: dict[str, list[tuple[int, str]]] = {}
        for name, site in self.prototype_trace.iter_stochastic_nodes():
            shape = list(self._unconstrained_shapes[name])
            event_dim = site["fn"].event_dim + len(shape) - site["value"].dim()
            for frame in site["cond_indep_stack"]:
                full = frame.full_size or frame.size
                if full != frame.size:
                    dim = frame.dim - event_dim
                    shape[dim] = full
                    self._subsampled.setdefault(name, []).append((dim, frame.name))
            self._unconstrained_shapes[name] = torch.Size(shape)
        self.latent_dim = sum(math.prod(s) for s in self._unconstrained_shapes.values())
        self._checked_arguments = {argument_signature(args, kwargs)}
        self.flow = self._make_flow(*args, **kwargs)
        self.start_ = choose_start(self, self.affine_init, args, kwargs)
        if self.stl and _has_splines(self.flow):
            raise ValueError(
                "stl=True is not supported with spline layers yet (measured: it converged to a "
                "wrong posterior on eight schools); use flow='iaf' or 'realnvp' with stl=True"
            )

    def _init_loc(self) -> Tensor:
        parts = []
        for name, site in self.prototype_trace.iter_stochastic_nodes():
            value = biject_to(site["fn"].support).inv(site["value"].detach())
            for dim, _ in self._subsampled.get(name, []):
                value = periodic_repeat(value, self._unconstrained_shapes[name][dim], dim)
            parts.append(value.reshape(-1))
        return torch.cat(parts)

    def _make_flow(self, *args, **kwargs) -> Flow:
        dim = self.latent_dim
        if callable(self._flow_spec):
            inner = self._flow_spec(dim)
            if not isinstance(inner, Flow) or inner.dim != dim or inner.context_dim:
                raise ValueError(f"flow(dim) must return an unconditional Flow on R^{dim}")
        else:
            options = dict(self._flow_kwargs)
            options.setdefault("hidden", (max(32, 2 * dim),) * 2)
            inner = guide_flow(self._flow_spec, dim, **options)
        loc = self._init_loc()
        scale_tril = torch.eye(dim, dtype=loc.dtype, device=loc.device) * self.init_scale
        affine = PreconditionedAffine(loc, scale_tril)
        flow = Flow(list(inner.transforms) + [affine], inner.base)
        return flow.to(device=loc.device, dtype=loc.dtype)

    # -- Laplace start (pyroflows.vi.laplace) -------------------------------------------------
    def log_joint(self, latent: Tensor, *args, **kwargs) -> Tensor:
        """``log p(x, z) + log|dz/du|`` at one unconstrained latent vector ``u`` (full plates
        only; no subsampled local latents)."""
        return _log_joint(self, latent, *args, **kwargs)

    # -- persistence --------------------------------------------------------------------------
    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False):
        """``nn.Module.load_state_dict``, all or nothing: when the state does not fit (missing
        or unexpected keys, other shapes), the guide keeps its parameters (PyTorch would have
        copied the matching entries before raising). The flow exists once the guide is set
        up, so call ``guide(*model_args)`` (or :meth:`fit`) before loading a saved state.

        Raises:
            RuntimeError: the state does not match this guide, or the guide is not set up.
        """
        if self.prototype_trace is None and any(str(k).startswith("flow.") for k in state_dict):
            raise RuntimeError(
                "this FlowGuide is not set up yet, so it has no flow to load the state into; "
                "call guide(*model_args) once (or guide.fit) before load_state_dict"
            )
        return load_all_or_nothing(
            super().load_state_dict, self, state_dict, strict=strict, assign=assign
        )

    # -- the guide ----------------------------------------------------------------------------
    def get_posterior(self, *args, **kwargs) -> FlowDistribution:
        """The flow over the unconstrained latent vector, as a Pyro distribution."""
        flow = self.flow
        if self.stl and torch.is_grad_enabled():
            return STLFlowDistribution(flow)
        return flow()

    def _check_latent_shapes(self, args, kwargs) -> None:
        """Refuse model arguments under which the guided sites have other shapes than the
        ones the guide was set up for (data of another length with a latent per row): the
        guide would draw latents for the old data. The model is traced only when the
        arguments' tensor shapes or plain values differ from ones already checked.

        Raises:
            ValueError: naming the site and both shapes.
        """
        signature = argument_signature(args, kwargs)
        if signature in self._checked_arguments:
            return
        with forked_streams(), torch.no_grad(), poutine.block():
            trace = prune_subsample_sites(poutine.trace(self.model).get_trace(*args, **kwargs))
        now = {name: tuple(site["value"].shape) for name, site in trace.iter_stochastic_nodes()}
        for name, site in self.prototype_trace.iter_stochastic_nodes():
            before = tuple(site["value"].shape)
            if now.get(name) != before:
                found = "has no such site" if name not in now else f"gives shape {now[name]}"
                raise ValueError(
                    f"this FlowGuide was set up for site {name!r} of shape {before}; the model "
                    f"with these arguments {found}, so the guide's latents belong to other "
                    "data. Fit a new FlowGuide for these data (or an amortized guide)"
                )
        extra = sorted(set(now) - {n for n, _ in self.prototype_trace.iter_stochastic_nodes()})
        if extra:
            raise ValueError(
                f"the model with these arguments has latent site(s) {extra} that this FlowGuide "
                "was not set up for; fit a new FlowGuide for these arguments"
            )
        self._checked_arguments.add(signature)

    def forward(self, *args, **kwargs) -> dict[str, Tensor]:
        if self.prototype_trace is None:
            self._setup_prototype(*args, **kwargs)
        else:
            self._check_latent_shapes(args, kwargs)
        latent = self.sample_latent(*args, **kwargs)
        plates = self._create_plates(*args, **kwargs)
        result = {}
        for site, u in self._unpack_latent(latent):
            name = site["name"]
            with ExitStack() as stack:
                indices = {
                    frame.name: stack.enter_context(plates[frame.name])
                    for frame in self._cond_indep_stacks[name]
                }
                for dim, plate in self._subsampled.get(name, []):
                    u = u.index_select(dim, indices[plate])
                transform = biject_to(site["fn"].support)
                value = transform(u)
                if poutine.get_mask() is False:
                    log_density = 0.0
                else:
                    log_density = transform.inv.log_abs_det_jacobian(value, u)
                    log_density = sum_rightmost(
                        log_density, log_density.dim() - value.dim() + site["fn"].event_dim
                    )
                delta = dist.Delta(value, log_density=log_density, event_dim=site["fn"].event_dim)
                result[name] = pyro.sample(name, delta)
        return result

    # -- training -----------------------------------------------------------------------------
    def fit(
        self,
        *args,
        steps: int = 1000,
        num_particles: int | None = None,
        lr: float = 1e-2,
        objective: str = "elbo",
        elbo: pyro.infer.ELBO | None = None,
        check_convergence: bool = True,
        **fit_kwargs,
    ) -> History:
        """Maximise the ELBO with the shared training loop (:func:`pyroflows.train.fit`).

        Args:
            *args: the model's arguments (keyword arguments of the model: ``model_kwargs=``).
            steps: optimiser steps.
            num_particles: particles per step, vectorised. Default (None): 4 where the
                model's distributions allow vectorised particles, else 1 (``elbo=`` given: the
                ELBO's own).
            lr: Adam's peak learning rate; by default (``schedule="warmup_cosine"``) it rises
                linearly over the first 5 % of the steps and decays to 0 by a cosine.
            objective: ``"elbo"`` (``Trace_ELBO``) or ``"iwae"`` (importance-weighted bound
                with ``num_particles`` samples, what ``RenyiELBO(alpha=0)`` computes).
            elbo: any Pyro ELBO instead (its ``differentiable_loss`` is used).
            check_convergence: at the end, check the fit (:mod:`~pyroflows.vi.convergence`:
                the ELBO's trend over the last 30 % of the steps, PSIS k-hat, finite values),
                keep the numbers in ``guide.diagnostics_`` and give a
                :class:`~pyroflows.vi.convergence.ConvergenceWarning` if a check fails.
            **fit_kwargs: passed to :func:`pyroflows.train.fit` (``schedule``: default
                ``"warmup_cosine"``; ``None`` or ``"constant"`` keeps ``lr``; ``clip_grad``,
                ``time_budget``, ``seed``, ``progress``, ``callback``, ``checkpoint``,
                ``resume`` ...).

        With a ``seed``, the whole fit is reproducible: the set-up at the first fit (prototype
        trace, initial values, the flow's initialisation) also draws from a stream seeded by
        it, so two fresh guides fitted with the same seed end with bit-identical parameters,
        and the global torch random state is left as it was. A run interrupted after a
        ``checkpoint`` and continued with ``resume`` (also in a new process, with a new guide)
        ends bit-identical to an uninterrupted one.

        A step whose ELBO estimate or gradient is not finite (a guide draw where the model's
        log density is ``-inf``, NaN or overflows) is never taken: the loop goes back to the
        state at the start of its epoch (of at most 100 steps), halves the learning rate and
        goes on, and the fit ends with a :class:`~pyroflows.vi.divergence.NonFiniteELBOWarning`
        naming those steps (also in ``history.diverged_steps``).

        Raises:
            ValueError: ``steps`` or ``num_particles`` not a positive integer, an unknown
                ``objective``, or a model argument that contains NaN (checked before the
                guide is touched; mask missing values in the model instead).
            TrainingDiverged: the ELBO or its gradient stayed non-finite after the loop's
                retries (``max_retries``, 3 by default); the message names the steps and
                what to try, and the guide keeps the last state whose steps were finite.
        """
        model_kwargs = fit_kwargs.pop("model_kwargs", {})
        steps = positive_int("steps", steps)
        if num_particles is not None:
            num_particles = positive_int("num_particles", num_particles)
        _check_objective(objective, elbo, num_particles, fit_kwargs)
        check_model_arguments(self._model_fn, args, model_kwargs)
        with _torch_seeded(fit_kwargs.get("seed")):
            self._require_setup(args, model_kwargs)
            self._check_latent_shapes(args, model_kwargs)
            with torch.no_grad(), poutine.block():
                trace = poutine.trace(self._model_fn).get_trace(*args, **model_kwargs)
        if num_particles is None:
            vectorised = elbo is None and self._expandable
            num_particles = DEFAULT_PARTICLES if vectorised else 1
        loss = self._elbo_loss(args, model_kwargs, objective, elbo, num_particles)
        resume = fit_kwargs.get("resume")
        if resume is not None and Path(resume).exists():
            loss.resuming()
        trained = loss.trained_module(trace)
        fingerprint = {
            **self._fingerprint(args, model_kwargs, loss, trained),
            **(fit_kwargs.pop("fingerprint", None) or {}),
        }
        self._model_args = (args, model_kwargs)
        fit_kwargs.setdefault("patience", None)
        fit_kwargs.setdefault("clip_grad", 10.0)
        fit_kwargs.setdefault("schedule", "warmup_cosine")
        recorder = LossRecorder(loss)
        try:
            history = fit(trained, recorder, None, **by_steps(steps), lr=lr,
                          fingerprint=fingerprint, **fit_kwargs)  # fmt: skip
        except TrainingDiverged as error:
            raise TrainingDiverged(diverged_message(error, self.start_), error.history) from error
        warn_nonfinite(history, fit_kwargs.get("lr_backoff", 0.5))
        if check_convergence:  # its draws, like the set-up's, leave a seeded caller's state
            with _torch_seeded(fit_kwargs.get("seed")):
                self.diagnostics_ = diagnose(self, recorder.values, args, model_kwargs)
            warn_unconverged(self.diagnostics_)
        return history

    def _elbo_loss(self, args, kwargs, objective, elbo, num_particles) -> ELBOLoss:
        """The ELBO of the full model: ``TraceEnum_ELBO`` over the enumerated sites, particles
        vectorised where the model's distributions can be expanded."""
        enumerated_sites = self._enumerated_sites
        if enumerated_sites and elbo is None and objective == "iwae":
            raise ValueError(
                f"objective='iwae' does not marginalise the enumerated sites {enumerated_sites}; "
                "use objective='elbo' (TraceEnum_ELBO)"
            )
        if num_particles > 1 and not self._expandable and elbo is None:
            warnings.warn(
                "a site's distribution cannot be expanded (e.g. dist.LKJ, a Pyro limitation; "
                "dist.LKJCholesky can): the particles are drawn one by one, not vectorised",
                stacklevel=3,
            )
            if objective == "iwae":
                raise ValueError(
                    "objective='iwae' needs vectorised particles, which this model's "
                    "distributions do not allow (dist.LKJ: use dist.LKJCholesky)"
                )
        return ELBOLoss(
            self._model_fn, self, args, kwargs, objective=objective, elbo=elbo,
            num_particles=num_particles, vectorize_particles=num_particles > 1 and self._expandable,
            enumerate=bool(enumerated_sites), max_plate_nesting=self._nesting,
        )  # fmt: skip

    def _fingerprint(self, args, kwargs, loss: ELBOLoss, trained: nn.Module) -> dict[str, str]:
        """What a checkpoint of this fit must match to be resumed."""
        return {
            "model_args": data_fingerprint([t for _, t in model_tensors(args, kwargs)]),
            "latent_sites": repr(
                [(name, tuple(self._unconstrained_shapes[name]), str(site["fn"].support))
                 for name, site in self.prototype_trace.iter_stochastic_nodes()]
            ),
            "flow_options": repr((self._flow_spec if isinstance(self._flow_spec, str) else
                                  "callable", sorted(self._flow_kwargs.items()),
                                  self.init_scale, self.affine_init, self.stl)
                                 + ((self.map_starts,) if self.affine_init == "multistart"
                                    else ())),
            "objective": repr(loss),
            "model_params": repr(getattr(trained, "names", [])),
        }  # fmt: skip


def _check_objective(
    objective, elbo, num_particles: int | None, fit_kwargs: dict[str, Any]
) -> None:
    """Refuse an unknown objective, an ELBO without ``differentiable_loss``, options that
    configure the default ELBO beside a given one, and the loop's step options."""
    if objective not in ("elbo", "iwae"):
        raise ValueError(f"objective must be 'elbo' or 'iwae', got {objective!r}")
    if elbo is not None and not hasattr(elbo, "differentiable_loss"):
        raise ValueError(f"{type(elbo).__name__} has no differentiable_loss; use SVI")
    if elbo is not None and (
        (num_particles not in (None, 1) and num_particles != getattr(elbo, "num_particles", None))
        or objective != "elbo"
    ):
        raise ValueError(
            "num_particles and objective configure the default ELBO; with elbo= set them "
            "on the ELBO you pass (e.g. Trace_ELBO(num_particles=8))"
        )
    for name in ("max_steps", "steps_per_epoch", "max_epochs"):
        if name in fit_kwargs:
            raise ValueError(f"{name} is set by steps= in FlowGuide.fit; pass steps only")
