"""``FlowGuide``: a Pyro autoguide whose posterior is one normalizing flow over every latent site.

The latent sites are packed, as Pyro's :class:`~pyro.infer.autoguide.AutoContinuous` does, into
one unconstrained vector (each site through ``biject_to(site.support)``, log-Jacobians
included); the flow acts on that vector. Its layers run in the sampling-cheap direction (IAF
direction for autoregressive families, coupling layers as they are), so drawing and scoring a
guide sample cost one network pass per layer. The last layer is a learnable full-rank affine map
(:class:`~pyroflows.vi.affine.AffineTril`) started at ``init_loc_fn`` with scale ``init_scale``,
or at the MAP with the Laplace covariance (``affine_init="laplace"``): the networks then work
in whitened coordinates, and the guide starts as a full-rank Gaussian.
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
from pyro.infer import Trace_ELBO, TraceEnum_ELBO, infer_discrete
from pyro.infer.autoguide import AutoContinuous
from pyro.infer.autoguide.initialization import init_to_median
from pyro.infer.importance import vectorized_importance_weights
from pyro.ops.tensor_utils import periodic_repeat
from pyro.poutine.block_messenger import BlockMessenger
from pyro.poutine.runtime import _PYRO_STACK
from pyro.poutine.trace_messenger import TraceMessenger
from torch import Tensor, nn

from pyroflows.builders import _positive_int, build
from pyroflows.checkpoint import data_fingerprint, load_all_or_nothing
from pyroflows.flows import Flow, FlowDistribution
from pyroflows.train import History, fit
from pyroflows.vi.affine import AffineTril

__all__ = ["FlowGuide", "guide_flow"]


@contextmanager
def _seeded(seed: int | None) -> Iterator[None]:
    """Run the block in a forked torch random state seeded with ``seed`` (nothing when None):
    the block is reproducible and the global random state is left as it was. The seed is
    used as it is, so the common ``pyro.set_rng_seed(s); guide.fit(..., seed=s)`` draws the
    same set-up as before the set-up was seeded (its draws and the loop's do not interact:
    initial values and weights there, the guide's noise in the loop)."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _tensors(args: Sequence[Any], kwargs: dict[str, Any]) -> Iterator[tuple[str, Tensor]]:
    """``(label, tensor)`` for every tensor among the model arguments (also inside a list,
    tuple or dict, three levels deep)."""

    def walk(label: str, value: Any, depth: int = 0) -> Iterator[tuple[str, Tensor]]:
        if isinstance(value, Tensor):
            yield label, value
        elif depth < 3 and isinstance(value, (list, tuple)):
            for v in value:
                yield from walk(label, v, depth + 1)
        elif depth < 3 and isinstance(value, dict):
            for v in value.values():
                yield from walk(label, v, depth + 1)

    for i, value in enumerate(args):
        yield from walk(f"model argument {i}", value)
    for key, value in kwargs.items():
        yield from walk(f"model keyword argument {key!r}", value)


def _bad_argument(args: Sequence[Any], kwargs: dict[str, Any]) -> tuple[str, str] | None:
    """``(label, "NaN" or "inf")`` of the first model argument that contains NaN or an
    infinite value, or None."""
    for label, value in _tensors(args, kwargs):
        if value.is_floating_point() or value.is_complex():
            if bool(torch.isnan(value).any()):
                return label, "NaN"
            if bool(torch.isinf(value).any()):
                return label, "inf"
    return None


def _enumerated(msg: dict) -> bool:
    """A latent sample site configured for parallel enumeration (``config_enumerate``)."""
    return (
        msg["type"] == "sample"
        and not msg.get("is_observed", False)
        and (msg.get("infer") or {}).get("enumerate") == "parallel"
    )


class _EnumBlock(BlockMessenger):
    """Hides the enumerated sites from the guide's prototype (they are marginalised by
    ``TraceEnum_ELBO`` in the full model, not guided)."""

    def __init__(self):
        super().__init__(hide_fn=_enumerated)


@contextmanager
def _hidden_discrete(found: list[str]) -> Iterator[None]:
    """Record in ``found`` the discrete latent sites that a user's ``poutine.block`` hides
    from every trace (drawn from the prior inside the model, invisible to the ELBO)."""
    original = BlockMessenger._process_message

    def process(self, msg):
        original(self, msg)
        if not msg["stop"] or isinstance(self, _EnumBlock) or msg["type"] != "sample":
            return
        support = getattr(msg["fn"], "support", None)
        if msg.get("is_observed") or not getattr(support, "is_discrete", False):
            return
        # a trace inside this block saw the site already: it is not hidden from that trace
        above = _PYRO_STACK[_PYRO_STACK.index(self) + 1 :] if self in _PYRO_STACK else []
        if not any(isinstance(m, TraceMessenger) for m in above):
            found.append(msg["name"])

    BlockMessenger._process_message = process
    try:
        yield
    finally:
        BlockMessenger._process_message = original


def _expandable(fn: Any) -> bool:
    """Whether a site's distribution can be expanded (vectorised particles need it;
    ``pyro.distributions.LKJ`` cannot, an upstream Pyro limitation)."""
    if not isinstance(fn, torch.distributions.Distribution):
        return True  # e.g. a plate's subsample site
    try:
        fn.expand(torch.Size([2]) + fn.batch_shape)
    except NotImplementedError:
        return False
    return True


def _vectorise(value: Tensor, event_dim: int, nesting: int) -> Tensor:
    """Draws ``(S, *shape)`` of a site as a value under a particle plate at ``-(nesting+1)``."""
    batch_dims = value.dim() - 1 - event_dim
    return value.reshape(len(value), *([1] * (nesting - batch_dims)), *value.shape[1:])


def _unvectorise(value: Tensor, num: int, shape: torch.Size) -> Tensor:
    """A site's value under a particle plate back to ``(num, *shape)``."""
    if value.numel() == num * math.prod(shape):
        return value.reshape(num, *shape)
    # not a function of the draw (e.g. a deterministic site of constants): the same each time
    return value.reshape(-1, *shape)[:1].expand(num, *shape).clone()


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
    with torch.random.fork_rng(devices=[]):
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


class FlowGuide(AutoContinuous):
    """A normalizing-flow autoguide over all latent sites of a Pyro model.

    Args:
        model: the Pyro model.
        flow: ``"iaf"`` (default), ``"nsf"``, ``"maf"`` (built in the IAF direction),
            ``"realnvp"``, or a callable ``dim -> Flow`` (an unconditional flow on ``R^dim``).
            Affine layers are the default because they fitted better under the reverse KL in
            our measurements: 10-D funnel C2ST 0.532 (IAF) against 0.611 (NSF) at equal
            steps (``benchmarks/vi.py``); eight schools' ``sd(mu)`` exact with RealNVP,
            underestimated by the NSF guide (notebook 06); and the STL gradient needs them.
        layers: number of flow layers (builders only).
        hidden: hidden sizes of the conditioners (default two layers of ``max(32, 2 dim)``).
        init_loc_fn: per-site initialisation (Pyro's ``init_to_*`` strategies).
        init_scale: initial scale of the affine layer (Gaussian start ``N(init_loc, s^2 I)``).
        affine_init: ``"laplace"`` starts the affine layer at the MAP (L-BFGS from
            ``init_loc_fn``) with the Cholesky factor of the inverse Hessian, for well-identified
            posteriors (regressions, GLMs); ``None`` keeps ``init_loc_fn`` and ``init_scale``
            (use it for funnels, whose mode lies far from the mass).
        stl: sticking-the-landing gradient (the guide's own samples are scored with detached
            parameters; for ``Trace_ELBO``). Affine families only for now (``"iaf"``,
            ``"realnvp"``): with spline layers it is refused, since it drifted to a wrong
            posterior in our tests.
        map_steps: L-BFGS iterations of the Laplace start.
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
        affine_init: str | None = None,
        stl: bool = False,
        map_steps: int = 200,
        create_plates: Callable | None = None,
        **flow_kwargs,
    ):
        if affine_init not in (None, "laplace"):
            raise ValueError(f"affine_init must be None or 'laplace', got {affine_init!r}")
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
                "map_steps is the length of the Laplace start: pass affine_init='laplace'"
            )
        options = dict(flow_kwargs, layers=layers)
        if hidden is not None:
            options["hidden"] = tuple(hidden) if isinstance(hidden, (list, tuple)) else hidden
        if isinstance(flow, str):
            _check_flow_options(flow, options)
        # enumerated discrete sites are marginalised in the full model, not guided
        super().__init__(_EnumBlock()(model), init_loc_fn=init_loc_fn)
        self.create_plates = create_plates
        self._model_fn = model
        self._model_args: tuple[tuple, dict] | None = None
        self._flow_spec = flow
        self._flow_kwargs = options
        self.init_scale = float(init_scale)
        self.affine_init = affine_init
        self.stl = bool(stl)
        self.map_steps = int(map_steps)

    # -- structure ----------------------------------------------------------------------------
    def _setup_prototype(self, *args, **kwargs) -> None:
        hidden: list[str] = []
        with _hidden_discrete(hidden), torch.no_grad(), poutine.block():
            full = poutine.trace(self._model_fn).get_trace(*args, **kwargs)
        if hidden:
            raise ValueError(
                f"site {hidden[0]!r} is discrete and drawn from its prior inside the model the "
                "guide is fitted to (it is hidden from the ELBO, e.g. by poutine.block): the fit "
                "would average the likelihood over its prior instead of marginalising it. Pass "
                "the full model decorated with pyro.infer.config_enumerate: FlowGuide guides "
                "the continuous sites and marginalises the enumerated ones (TraceEnum_ELBO)"
            )
        self._full_sites = {
            name: (site["value"].shape, site["fn"].event_dim)
            for name, site in full.nodes.items()
            if site["type"] == "sample"
            and (_enumerated(site) or (site.get("infer") or {}).get("_deterministic"))
        }
        self._enumerated_sites = [n for n, site in full.nodes.items() if _enumerated(site)]
        self._deterministic_sites = [n for n in self._full_sites if n not in self._enumerated_sites]
        self._nesting = max(
            (-f.dim for site in full.nodes.values() if site["type"] == "sample"
             for f in site["cond_indep_stack"] if f.vectorized),
            default=0,
        )  # fmt: skip
        self._expandable = all(_expandable(site["fn"]) for _, site in full.iter_stochastic_nodes())
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
        self.flow = self._make_flow(*args, **kwargs)
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
        if self.affine_init == "laplace":
            loc, scale_tril = self._laplace(loc, scale_tril, *args, **kwargs)
        affine = AffineTril(loc, scale_tril)
        flow = Flow(list(inner.transforms) + [affine], inner.base)
        return flow.to(device=loc.device, dtype=loc.dtype)

    # -- Laplace start ------------------------------------------------------------------------
    def log_joint(self, latent: Tensor, *args, **kwargs) -> Tensor:
        """``log p(x, z) + log|dz/du|`` at one unconstrained latent vector ``u`` (full plates
        only; no subsampled local latents)."""
        values, log_jac = {}, 0.0
        for site, u in self._unpack_latent(latent):
            transform = biject_to(site["fn"].support)
            value = transform(u)
            log_jac = log_jac + transform.log_abs_det_jacobian(u, value).sum()
            values[site["name"]] = value
        model = poutine.condition(self._model_fn, data=values)
        trace = poutine.trace(poutine.block(model, hide_fn=lambda m: False)).get_trace(
            *args, **kwargs
        )
        return trace.log_prob_sum() + log_jac

    def _laplace(self, loc: Tensor, scale_tril: Tensor, *args, **kwargs):
        if self._enumerated_sites:
            raise NotImplementedError(
                "affine_init='laplace' is not available for models with enumerated discrete "
                f"sites ({self._enumerated_sites}); use affine_init=None"
            )
        if self._subsampled:
            raise NotImplementedError(
                "affine_init='laplace' needs the whole data in one step: the model subsamples "
                f"plate(s) {sorted({p for v in self._subsampled.values() for _, p in v})}; use "
                "affine_init=None (Pyro refuses a full subsample where subsample_size is set)"
            )
        u = loc.detach().clone().requires_grad_()
        optimizer = torch.optim.LBFGS(
            [u], lr=1.0, max_iter=self.map_steps, line_search_fn="strong_wolfe"
        )

        def closure():
            optimizer.zero_grad()
            loss = -self.log_joint(u, *args, **kwargs)
            loss.backward()
            return loss

        optimizer.step(closure)
        u = u.detach()
        if not bool(torch.isfinite(u).all()):
            return loc, scale_tril
        hessian = torch.autograd.functional.hessian(
            lambda v: -self.log_joint(v, *args, **kwargs), u
        )
        hessian = (hessian + hessian.T) / 2
        precision_chol, info = torch.linalg.cholesky_ex(hessian)
        if int(info) == 0:
            eye = torch.eye(len(u), dtype=u.dtype, device=u.device)
            # Cov = H^-1 = (C C^T)^-1; its Cholesky factor via a solve and a re-factorisation
            cov = torch.cholesky_inverse(precision_chol)
            chol, info = torch.linalg.cholesky_ex((cov + cov.T) / 2 + 1e-10 * eye)
            if int(info) == 0:
                return u, chol
        diag = hessian.diagonal()
        scale = torch.where(diag > 0, diag.clamp_min(1e-12).rsqrt(), self.init_scale)
        return u, torch.diag(scale)

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

    def forward(self, *args, **kwargs) -> dict[str, Tensor]:
        if self.prototype_trace is None:
            self._setup_prototype(*args, **kwargs)
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

    # -- posterior summaries ------------------------------------------------------------------
    def _require_setup(self, args, kwargs) -> None:
        if self.prototype_trace is not None:
            return
        try:
            self._setup_prototype(*args, **kwargs)
        except TypeError as error:
            if args or kwargs:
                raise
            raise ValueError(
                "this FlowGuide is not fitted or set up yet, and running the model without "
                f"arguments failed ({error}); call guide.fit(*model_args) first, or pass the "
                "model's arguments: guide.sample_posterior(num_samples, *model_args)"
            ) from None

    def _with_model_sites(self, result: dict[str, Tensor], args, kwargs) -> dict[str, Tensor]:
        """Add the enumerated discrete sites (drawn from their conditional posterior given each
        continuous draw, Pyro's ``infer_discrete``) and the deterministic sites."""
        if not self._full_sites:
            return result
        if not args and not kwargs and self._model_args is not None:
            args, kwargs = self._model_args
        num = len(next(iter(result.values())))
        nesting = self._nesting
        data = {}
        for name, site in self.prototype_trace.iter_stochastic_nodes():
            data[name] = _vectorise(result[name], site["fn"].event_dim, nesting)

        def vectorised(*a, **k):
            with pyro.plate("_num_samples", num, dim=-(nesting + 1)):
                return self._model_fn(*a, **k)

        model = poutine.condition(vectorised, data=data)
        if self._enumerated_sites:
            model = infer_discrete(model, first_available_dim=-(nesting + 2), temperature=1)
        with poutine.block():
            trace = poutine.trace(model).get_trace(*args, **kwargs)
        result = dict(result)
        for name, (shape, _) in self._full_sites.items():
            result[name] = _unvectorise(trace.nodes[name]["value"].detach(), num, shape)
        return result

    @torch.no_grad()
    def sample_posterior(self, num_samples: int = 1000, *args, **kwargs) -> dict[str, Tensor]:
        """``num_samples`` joint posterior draws: ``{site: tensor (num_samples, *shape)}``
        (full plates), drawn in one vectorised pass. Enumerated discrete sites are drawn from
        their conditional posterior given each draw (``infer_discrete``) and deterministic
        sites are computed, as ``pyro.infer.Predictive`` gives them; both run the model, with
        the arguments given here or else those of the last :meth:`fit`.

        Raises:
            ValueError: ``num_samples`` not a positive integer, or the guide is not set up
                and the model needs arguments.
        """
        num_samples = _positive_int("num_samples", num_samples)
        self._require_setup(args, kwargs)
        latent = self.flow.sample((int(num_samples),))
        result, pos = {}, 0
        for name, site in self.prototype_trace.iter_stochastic_nodes():
            shape = self._unconstrained_shapes[name]
            u = latent[:, pos : pos + math.prod(shape)].reshape(len(latent), *shape)
            result[name] = biject_to(site["fn"].support)(u)
            pos += math.prod(shape)
        return self._with_model_sites(result, args, kwargs)

    @torch.no_grad()
    def quantiles(
        self, quantiles: Sequence[float] | Tensor, *args, num_samples: int = 4096, seed: int = 0,
        **kwargs,
    ) -> dict[str, Tensor]:  # fmt: skip
        """Elementwise posterior quantiles of each site, ``{site: (len(quantiles), *shape)}``:
        Monte Carlo estimates from ``num_samples`` draws with a fixed ``seed`` (reproducible)."""
        q = torch.as_tensor(quantiles, dtype=torch.float64).reshape(-1)
        if not len(q) or not bool(((q >= 0) & (q <= 1)).all()):
            raise ValueError(f"quantiles must lie in [0, 1], got {quantiles!r}")
        self._require_setup(args, kwargs)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            draws = self.sample_posterior(num_samples, *args, **kwargs)
        result = {}
        for name, value in draws.items():
            value = value if value.is_floating_point() else value.double()
            q = torch.as_tensor(quantiles, dtype=value.dtype, device=value.device).reshape(-1)
            result[name] = torch.quantile(value.reshape(len(value), -1), q, dim=0).reshape(
                len(q), *value.shape[1:]
            )
        return result

    @torch.no_grad()
    def median(self, *args, num_samples: int = 4096, seed: int = 0, **kwargs) -> dict[str, Tensor]:
        """Elementwise posterior medians ``{site: tensor}`` (Monte Carlo, fixed ``seed``)."""
        return {
            name: q[0]
            for name, q in self.quantiles(
                [0.5], *args, num_samples=num_samples, seed=seed, **kwargs
            ).items()
        }

    def to_inference_data(self, num_samples: int = 1000, chains: int = 4, *args, **kwargs):
        """Posterior draws as an ``arviz.InferenceData`` (``chains`` x ``num_samples /
        chains`` independent draws, site names as variables)."""
        from pyroflows.inference_data import to_inference_data

        return to_inference_data(self.sample_posterior(num_samples, *args, **kwargs), chains=chains)

    # -- training -----------------------------------------------------------------------------
    def fit(
        self,
        *args,
        steps: int = 3000,
        num_particles: int = 1,
        lr: float = 1e-2,
        objective: str = "elbo",
        elbo: pyro.infer.ELBO | None = None,
        **fit_kwargs,
    ) -> History:
        """Maximise the ELBO with the shared training loop (:func:`pyroflows.train.fit`).

        Args:
            *args: the model's arguments (keyword arguments of the model: ``model_kwargs=``).
            steps: optimiser steps.
            num_particles: particles per step, vectorised.
            lr: Adam learning rate.
            objective: ``"elbo"`` (``Trace_ELBO``) or ``"iwae"`` (importance-weighted bound
                with ``num_particles`` samples, what ``RenyiELBO(alpha=0)`` computes).
            elbo: any Pyro ELBO instead (its ``differentiable_loss`` is used).
            **fit_kwargs: passed to :func:`pyroflows.train.fit` (``schedule``, ``clip_grad``,
                ``time_budget``, ``seed``, ``progress``, ``callback``, ``checkpoint``,
                ``resume`` ...).

        With a ``seed``, the whole fit is reproducible: the set-up at the first fit (prototype
        trace, initial values, the flow's initialisation) also draws from a stream seeded by
        it, so two fresh guides fitted with the same seed end with bit-identical parameters,
        and the global torch random state is left as it was. A run interrupted after a
        ``checkpoint`` and continued with ``resume`` (also in a new process, with a new guide)
        ends bit-identical to an uninterrupted one.

        Raises:
            ValueError: ``steps`` or ``num_particles`` not a positive integer, an unknown
                ``objective``, or a model argument that contains NaN (checked before the
                guide is touched; mask missing values in the model instead).
        """
        model_kwargs = fit_kwargs.pop("model_kwargs", {})
        steps = _positive_int("steps", steps)
        num_particles = _positive_int("num_particles", num_particles)
        if objective not in ("elbo", "iwae"):
            raise ValueError(f"objective must be 'elbo' or 'iwae', got {objective!r}")
        if elbo is not None and not hasattr(elbo, "differentiable_loss"):
            raise ValueError(f"{type(elbo).__name__} has no differentiable_loss; use SVI")
        if elbo is not None and (
            (num_particles != 1 and num_particles != getattr(elbo, "num_particles", None))
            or objective != "elbo"
        ):
            raise ValueError(
                "num_particles and objective configure the default ELBO; with elbo= set them "
                "on the ELBO you pass (e.g. Trace_ELBO(num_particles=8))"
            )
        for name in ("max_steps", "steps_per_epoch", "max_epochs"):
            if name in fit_kwargs:
                raise ValueError(f"{name} is set by steps= in FlowGuide.fit; pass steps only")
        bad = _bad_argument(args, model_kwargs)
        if bad is not None and bad[1] == "NaN":
            raise ValueError(
                f"{bad[0]} contains NaN values; FlowGuide.fit needs finite data (drop or "
                "mask missing values in the model, e.g. with obs_mask)"
            )
        model = self._model_fn
        if bad is not None:  # inf may be a legitimate argument (a bound), not an observation
            with torch.random.fork_rng(devices=[]), torch.no_grad(), poutine.block():
                check = poutine.trace(model).get_trace(*args, **model_kwargs)
            for name, site in check.nodes.items():
                value = site["value"] if site["type"] == "sample" else None
                if site.get("is_observed") and isinstance(value, Tensor):
                    if value.is_floating_point() and bool(torch.isinf(value).any()):
                        raise ValueError(
                            f"{bad[0]} contains inf values, observed at site {name!r}; "
                            "FlowGuide.fit needs finite observations (drop or mask them)"
                        )
        with _seeded(fit_kwargs.get("seed")):
            self._require_setup(args, model_kwargs)
            with torch.no_grad(), poutine.block():
                trace = poutine.trace(model).get_trace(*args, **model_kwargs)
        nesting = self._nesting
        enumerated = self._enumerated_sites
        if enumerated and elbo is None and objective == "iwae":
            raise ValueError(
                f"objective='iwae' does not marginalise the enumerated sites {enumerated}; use "
                "objective='elbo' (TraceEnum_ELBO)"
            )
        vectorise = num_particles > 1 and self._expandable
        if num_particles > 1 and not self._expandable and elbo is None:
            warnings.warn(
                "a site's distribution cannot be expanded (e.g. dist.LKJ, a Pyro limitation; "
                "dist.LKJCholesky can): the particles are drawn one by one, not vectorised",
                stacklevel=2,
            )
            if objective == "iwae":
                raise ValueError(
                    "objective='iwae' needs vectorised particles, which this model's "
                    "distributions do not allow (dist.LKJ: use dist.LKJCholesky)"
                )
        if elbo is None and objective == "elbo":
            if enumerated:
                elbo = TraceEnum_ELBO(
                    num_particles=num_particles, vectorize_particles=vectorise,
                    max_plate_nesting=nesting,
                )  # fmt: skip
            else:
                elbo = Trace_ELBO(num_particles=num_particles, vectorize_particles=vectorise)
        resume = fit_kwargs.get("resume")
        if elbo is not None and resume is not None and Path(resume).exists():
            # A new ELBO guesses the plate nesting at its first step by drawing from the guide:
            # the run that wrote the checkpoint did so at its step 0, so a resumed run must not
            # do it again (an extra draw would shift the restored random stream and the resumed
            # run would not be bit-identical). The nesting is the model's, what Pyro guesses
            # (plus the particles' plate, as Pyro adds it).
            if getattr(elbo, "max_plate_nesting", None) == math.inf:
                particles = bool(getattr(elbo, "vectorize_particles", False))
                particles = particles and getattr(elbo, "num_particles", 1) > 1
                elbo.max_plate_nesting = nesting + particles

        def loss(trained: nn.Module, batch: tuple) -> Tensor:
            if elbo is not None:
                return elbo.differentiable_loss(model, self, *args, **model_kwargs)
            # importance-weighted bound (IWAE) with num_particles vectorised samples
            log_w, _, _ = vectorized_importance_weights(
                model, self, *args, num_samples=num_particles, max_plate_nesting=nesting,
                **model_kwargs,
            )  # fmt: skip
            return -(torch.logsumexp(log_w, 0) - math.log(num_particles))

        # the model's own parameters (pyro.param, pyro.module) train with the guide, as in SVI
        trained: nn.Module = self
        model_params = self._model_parameters(trace)
        if model_params:
            trained = _GuideAndModel(self, model_params)
        fingerprint = {
            "model_args": data_fingerprint([t for _, t in _tensors(args, model_kwargs)]),
            "latent_sites": repr(
                [(name, tuple(self._unconstrained_shapes[name]), str(site["fn"].support))
                 for name, site in self.prototype_trace.iter_stochastic_nodes()]
            ),
            "flow_options": repr((self._flow_spec if isinstance(self._flow_spec, str) else
                                  "callable", sorted(self._flow_kwargs.items()),
                                  self.init_scale, self.affine_init, self.stl)),
            "objective": repr((objective, num_particles, type(elbo).__name__)),
            "model_params": repr(sorted(model_params)),
            **(fit_kwargs.pop("fingerprint", None) or {}),
        }  # fmt: skip
        self._model_args = (args, model_kwargs)
        per_epoch = min(steps, 100)
        fit_kwargs.setdefault("patience", None)
        fit_kwargs.setdefault("clip_grad", 10.0)
        return fit(
            trained, loss, None, steps_per_epoch=per_epoch,
            max_epochs=math.ceil(steps / per_epoch), max_steps=steps, lr=lr,
            fingerprint=fingerprint, **fit_kwargs,
        )  # fmt: skip

    def _model_parameters(self, trace) -> dict[str, nn.Parameter]:
        """The unconstrained tensors of the model's ``pyro.param`` / ``pyro.module`` sites in
        the param store, as ``nn.Parameter`` objects the store keeps using (a plain leaf tensor
        is swapped for a Parameter holding the same values)."""
        store = pyro.get_param_store()
        own = {id(p) for p in self.parameters()}
        result = {}
        for name, site in trace.nodes.items():
            if site["type"] != "param" or name not in store._params:
                continue
            value = store._params[name]
            if id(value) in own or not value.requires_grad:
                continue
            if not isinstance(value, nn.Parameter):
                parameter = nn.Parameter(value.detach())
                store._params[name] = parameter
                store._param_to_name.pop(value, None)
                store._param_to_name[parameter] = name
                value = parameter
            result[name] = value
        return result


class _GuideAndModel(nn.Module):
    """What :meth:`FlowGuide.fit` trains when the model has parameters: the guide and the
    model's parameters (the param store's own tensors), in one module for the loop."""

    def __init__(self, guide: FlowGuide, params: dict[str, nn.Parameter]):
        super().__init__()
        self.guide = guide
        self.names = sorted(params)
        self.model_params = nn.ParameterList([params[n] for n in self.names])
