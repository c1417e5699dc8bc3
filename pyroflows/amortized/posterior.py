"""Amortized posteriors: one training run on simulations, then ``p(theta | x)`` for any ``x``.

:class:`AmortizedPosterior` is the user's object, a short facade over the parts of this
package, as in sbi (estimator / trainer / posterior):

* simulation: :mod:`~pyroflows.amortized.simulate` (a Pyro model or a prior + simulator);
* encoders: :mod:`~pyroflows.amortized.parameters` (sites, supports, the parameters' float64
  standardisation in the unconstrained space) and :mod:`~pyroflows.amortized.observations`
  (the data's shape, sets with padding, checks, standardisation clamped before the cast);
* the network: :mod:`~pyroflows.amortized.estimator` (:class:`PosteriorEstimator`, chunked
  sampling and scoring);
* training: :mod:`~pyroflows.amortized.recipe` (modes, split, ``flow="auto"`` portfolio, two
  phases, online simulations) on the one loop :func:`pyroflows.train.fit`;
* the saved file: :mod:`~pyroflows.amortized.saved`; ArviZ: :mod:`pyroflows.inference_data`;
* ensembles: :mod:`~pyroflows.amortized.ensemble` (members, mixture draws and density).

The class holds the posterior's state and its core methods (``fit``, ``sample``,
``log_prob``); the other public methods live next to what they run, in classes it inherits
from: :class:`~pyroflows.amortized.simulating.Simulation` (``simulate``, ``simulate_data``,
``size_of``), :class:`~pyroflows.amortized.fast_sampler.FastSampling` (``distil``),
:class:`~pyroflows.amortized.misspecification.MisspecificationCheck` (``calibrate_check``,
``check_observation``) and :class:`~pyroflows.amortized.saved.Persistence` (``save``,
``load``).

Parameters with a bounded interval support (a uniform prior's box) stay in their own
coordinates, standardised (``intervals="box"``, the default; :mod:`~pyroflows.amortized.box`:
draws by bounded rejection, ``log_prob`` renormalised by the flow's mass inside the box).
The others are mapped to the unconstrained space with ``biject_to(support)`` and standardised
there; their draws are mapped back, so they never leave the support, and ``log_prob`` adds
both log-Jacobians so it is a density in the user's units (``intervals="logit"`` maps the
interval sites this way too).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Executor
from typing import Any

import torch
from torch import Tensor, nn

from pyroflows.amortized.box import MASS_DRAWS, RejectionError, mass_inside, sample_inside
from pyroflows.amortized.call import check_call
from pyroflows.amortized.ensemble import (
    check_ensemble,
    fit_ensemble,
    log_prob_mixture,
    new_members,
    sample_mixture,
)
from pyroflows.amortized.estimator import PosteriorEstimator, log_prob_chunks, sample_chunks
from pyroflows.amortized.fast_sampler import FastSampling, sampling_flow
from pyroflows.amortized.misspecification import (
    MisspecificationCheck,
    SummaryReference,
    warn_if_outside,
)
from pyroflows.amortized.one_observation import warn_other_observation
from pyroflows.amortized.parameters import INTERVAL_MAPS, ParameterSpace
from pyroflows.amortized.recipe import (
    AUTO_FLOWS,
    FAST_PHASE,
    RECIPES,
    SECOND_PHASE_EPOCHS,
    TRAIN_DEFAULTS,
    fit_posterior,
)
from pyroflows.amortized.saved import Persistence
from pyroflows.amortized.simulating import Simulation, Simulator, check_arguments, simulator_of
from pyroflows.diagnostics.calibration import SBCResult
from pyroflows.flows import Flow
from pyroflows.inference_data import from_posterior
from pyroflows.preprocess import Preprocessor
from pyroflows.train import History
from pyroflows.train.seeding import seeded_draws
from pyroflows.validation import as_real_tensor, positive_int

#: the recipe's settings (:mod:`~pyroflows.amortized.recipe`) are named here too
__all__ = [
    "AUTO_FLOWS",
    "FAST_PHASE",
    "FLOW_DEFAULTS",
    "RECIPES",
    "SECOND_PHASE_EPOCHS",
    "TRAIN_DEFAULTS",
    "AmortizedPosterior",
    "PosteriorEstimator",
]

#: the posterior flow's builder options unless ``flow_kwargs`` says otherwise. The data enter
#: every hidden layer of each conditioner, not only the first: two moons at 10 000
#: simulations, C2ST over five training seeds 0.562 +- 0.012 instead of 0.581 +- 0.017 (sbi's
#: NPE 0.567 +- 0.012), at the cost of a broadcast addition per hidden layer when drawing
#: (1 000 x 1 000 two-moons draws 0.98 s instead of 0.83 s, benchmarks/sampling.py).
#: ``lu="auto"``: a learnt linear map (LU factors, starting as a seeded random permutation)
#: between the layers when there are three or more parameters, none with two. Five training
#: seeds at 10 000 simulations: linear Gaussian (10 parameters) C2ST 0.531 +- 0.003 instead
#: of 0.538 +- 0.008 (sbi 0.529 +- 0.004), SLCP (5) 0.838 +- 0.010 instead of 0.845 +- 0.005
#: (sbi 0.842 +- 0.016); the linear Gaussian at 1 000 unchanged (0.587 vs 0.585). On two
#: moons random swaps cost at both budgets (1 000: 0.782 vs 0.757) and maps starting as the
#: identity helped at 1 000 (0.740) but cost at 10 000 (0.569 vs 0.562): two get none.
FLOW_DEFAULTS: dict[str, Any] = dict(
    layers=5, hidden=(64, 64), context_every_layer=True, lu="auto"
)  # fmt: skip


class AmortizedPosterior(Simulation, FastSampling, MisspecificationCheck, Persistence):
    """Neural posterior estimation (NPE) for a Pyro model or a prior + simulator.

    Args:
        model: a Pyro model whose latent sites are the parameters and whose site ``observed``
            holds the data (called with ``model_args`` / ``model_kwargs``; it must sample that
            site, e.g. ``obs=None`` by default).
        observed: name of the data site of ``model``.
        prior: a torch / Pyro distribution (instead of ``model``); its support is honoured.
        simulator: ``theta (N, *prior shape) -> x (N, ...)``, with ``prior``; may be omitted
            when fitting from pre-simulated tensors.
        summary: a summary network (``nn.Module``, e.g. :class:`pyroflows.nn.DeepSet`);
            ``None`` flattens the data.
        flow: ``"auto"`` (default) or a flow family for :func:`pyroflows.build` (``"nsf"``,
            ``"maf"``, ``"realnvp"``, ...). ``"auto"``: the first offline fit trains each
            family of :data:`AUTO_FLOWS` (the autoregressive spline flow and affine coupling)
            on the same simulations, validation split and batches, and keeps the one with
            the lower validation loss (``flow_name`` then names it, ``candidates`` lists both
            with their losses and times). A posterior fitted online or without a validation
            split gets the first, one with a single parameter the spline flow alone. Spline
            options in ``flow_kwargs`` (``bins``, ``bound``, ``coupling``, ``order``) go to
            the spline family only; the second family trains a copy of ``summary`` (after
            the fit, ``post.summary`` is the kept one). Training costs the sum of the
            families' fits (a ``time_budget`` covers both); name a family to train one.
        flow_kwargs: builder options, over :data:`FLOW_DEFAULTS` (5 layers, hidden
            ``(64, 64)``, the context fed to every hidden layer of the conditioners, and with
            three or more parameters a learnt linear map between layers: ``lu="auto"``).
            ``context_affine=True`` ends the flow with a
            :class:`~pyroflows.transforms.ContextAffine` layer, for posteriors whose location
            and width move over orders of magnitude with the data (notebook 09).
        model_args, model_kwargs: arguments of ``model``.
        param_name: parameter name with ``prior`` or plain tensors (for ArviZ).
        sizes, size_arg: a varying number of observations for ``model`` (both or neither):
            ``size_arg`` names the model's keyword argument that sets it and ``sizes`` its
            possible values (positive ints, e.g. ``range(5, 101)``); each simulation draws
            its size uniformly from them (see
            :class:`~pyroflows.amortized.simulate.VariableSizeSimulator`). Needs a set
            ``summary`` that reads NaN padding (``nan_padding``, e.g.
            :class:`pyroflows.nn.DeepSet`). Data are then sets ``(max(sizes), features)``
            padded with all-NaN rows; an observation is such a set of any number of rows
            (padding rows optional), or, for scalar observations, the model's 1-D data
            ``(n,)``. A batch of observations is ``(B, rows, features)``.
        intervals: how parameters with a bounded interval support (a uniform prior's box,
            a Beta's unit interval) reach the flow. ``"box"`` (default): the flow is trained
            on the box's own (standardised) coordinates, as in sbi; :meth:`sample` rejects
            the flow's draws outside the support (bounded: a
            :class:`~pyroflows.amortized.box.LowAcceptanceWarning` below 1 % acceptance, a
            :class:`~pyroflows.amortized.box.RejectionError` naming the observation below
            0.1 %) and :meth:`log_prob` divides the flow's density by its mass inside the
            box, estimated per observation from
            :data:`~pyroflows.amortized.box.MASS_DRAWS` draws (:meth:`mass_inside` gives it
            with its standard error); a fit's held-out check
            (``heldout_sbc_``) that cannot draw for some held-out simulation warns and is
            skipped instead of failing the fit. ``"logit"``: mapped to the real line by
            ``biject_to(support)`` (a scaled logit): no rejection and an exact ``log_prob``,
            but a face of the box is a far tail of the flow's space, where a posterior
            pressed against it is poorly fitted (sbibm two_moons, observations 1-5, training
            seeds 0-1, C2ST box / logit: 0.510 / 0.531 at 10 000 simulations, 0.587 / 0.666
            at 1 000; ``benchmarks/results/sbibm.md``). Other supports are mapped by
            ``biject_to`` either way. Saved with the posterior (files saved before the
            option load as ``"logit"``, what they were trained with).
        ensemble: the number of member posteriors (default 1: none). ``k > 1``: ``members``
            holds ``k`` posteriors built with these arguments (each with a copy of
            ``summary``, whose parameters the first fit draws again with its layers'
            ``reset_parameters``), trained by :meth:`fit` on the same simulations with seeds
            ``seed + i``; :meth:`sample` and :meth:`log_prob` are those of their equal-weight
            mixture (:mod:`~pyroflows.amortized.ensemble`).

    Example with a varying number of observations:
        >>> import pyro
        >>> import pyro.distributions as dist
        >>> from pyroflows.nn import DeepSet
        >>> def model(n=10, x=None):
        ...     mu = pyro.sample("mu", dist.Normal(0.0, 3.0))
        ...     with pyro.plate("data", n):
        ...         return pyro.sample("x", dist.Normal(mu, 1.0), obs=x)
        >>> post = AmortizedPosterior(model, "x", summary=DeepSet(1, 4, hidden=8),
        ...                           sizes=range(2, 6), size_arg="n",
        ...                           flow_kwargs=dict(layers=1, hidden=(8,)))
        >>> post = post.fit(num_simulations=100, max_epochs=1, progress=False, seed=0,
        ...                 recipe="one_phase")
        >>> post.x_shape
        torch.Size([5, 1])
        >>> post.sample(torch.tensor([0.5, 1.0, 1.5]), 10).shape  # 3 scalar observations
        torch.Size([10, 1])
        >>> post.simulate_data(torch.zeros(2, 1), size=3).shape  # padded to 5 rows
        torch.Size([2, 5, 1])

    Example:
        >>> import pyro.distributions as dist
        >>> prior = dist.Normal(torch.zeros(2), 1.0).to_event(1)
        >>> post = AmortizedPosterior(prior=prior, simulator=lambda t: t + torch.randn_like(t),
        ...                           flow_kwargs=dict(layers=1, hidden=(8,)))
        >>> post = post.fit(num_simulations=200, max_epochs=2, progress=False, recipe="one_phase")
        >>> post.sample(torch.zeros(2), 10).shape, post.sample(torch.zeros(3, 2), 10).shape
        (torch.Size([10, 2]), torch.Size([10, 3, 2]))
    """

    def __init__(
        self,
        model: Callable | None = None,
        observed: str = "x",
        *,
        prior: Any = None,
        simulator: Callable[[Tensor], Tensor] | None = None,
        summary: nn.Module | None = None,
        flow: str = "auto",
        flow_kwargs: Mapping[str, Any] | None = None,
        model_args: Sequence[Any] = (),
        model_kwargs: Mapping[str, Any] | None = None,
        param_name: str = "theta",
        sizes: Iterable[int] | None = None,
        size_arg: str | None = None,
        intervals: str = "box",
        ensemble: int = 1,
    ):
        k = check_ensemble(ensemble)
        if intervals not in INTERVAL_MAPS:
            raise ValueError(f"intervals must be one of {INTERVAL_MAPS}, got {intervals!r}")
        check_arguments(model, prior, simulator, summary, flow, model_args, model_kwargs,
                        param_name)  # fmt: skip
        self.observed = str(observed)
        #: the simulator (None: fitted on given tensors only), and the data's shape contract,
        #: checks and encoder (shape and standardisation: first fit)
        self.sim: Simulator | None
        self.sim, self.observations = simulator_of(
            model, observed, prior, simulator, summary, model_args, model_kwargs, param_name,
            sizes, size_arg,
        )  # fmt: skip
        self.param_name = param_name
        #: the map of interval supports (:data:`~pyroflows.amortized.parameters.INTERVAL_MAPS`)
        self.intervals = intervals
        self.space: ParameterSpace | None = (
            None if self.sim is None else self.sim.space.with_intervals(intervals)
        )
        self.summary = summary
        self.flow_name = flow  # "auto" until a fit has chosen a family
        self.flow_kwargs = {**FLOW_DEFAULTS, **(flow_kwargs or {})}
        self.estimator: PosteriorEstimator | None = None
        #: ``flow="auto"``: the networks of every family until a fit has chosen one
        self._members: dict[str, tuple[PosteriorEstimator, dict[str, Any]]] = {}
        #: ``flow="auto"``: each family's best validation loss and training seconds
        self.candidates: list[dict[str, Any]] = []
        self.theta_pre: Preprocessor | None = None
        self.history: History | None = None
        self.dropped = 0
        #: the Kish effective sample size of the last fit's training weights
        #: (``fit(..., sample_weight=)``), None after an unweighted fit
        self.ess_: float | None = None
        #: SBC of the last fit on its held-out simulations (:mod:`~pyroflows.amortized.heldout`;
        #: a :class:`~pyroflows.amortized.heldout.CalibrationWarning` when rejected), or None
        self.heldout_sbc_: SBCResult | None = None
        #: the fast sampler (:meth:`distil`): a conditional IAF student of the flow, or None
        self.student: Flow | None = None
        #: the misspecification check's held-out summaries (:meth:`calibrate_check`)
        self.reference: SummaryReference | None = None
        #: warn in :meth:`sample` / :meth:`log_prob` for observations whose check p-value is
        #: below :data:`~pyroflows.amortized.misspecification.WARN_ALPHA` (with a reference)
        self.warn_misspecified = True
        #: ``ensemble=k > 1``: the member posteriors (:mod:`~pyroflows.amortized.ensemble`)
        self.members: list[AmortizedPosterior] = new_members(type(self), k, summary, dict(
            model=model, observed=observed, prior=prior, simulator=simulator, flow=flow,
            flow_kwargs=flow_kwargs, model_args=model_args, model_kwargs=model_kwargs,
            param_name=param_name, sizes=None if sizes is None else self.sizes,
            size_arg=size_arg, intervals=intervals,
        ))  # fmt: skip

    # -- the data (see :class:`ObservationSpace`) -------------------------------------------
    @property
    def x_shape(self) -> torch.Size | None:
        """One simulation's data shape (None until the first fit)."""
        return self.observations.shape

    @property
    def x_pre(self) -> Preprocessor | None:
        """The data's standardisation, fitted in float64 on the first fit's simulations."""
        return self.observations.pre

    @property
    def sizes(self) -> tuple[int, ...] | None:
        """The possible numbers of observations of a posterior built with ``sizes=``."""
        return self.observations.sizes

    @property
    def size_arg(self) -> str | None:
        """The model's argument that sets the number of observations (with ``sizes``)."""
        return self.observations.size_arg

    # -- preprocessing ----------------------------------------------------------------------
    def _use(self, family: str) -> None:
        """Make the networks of one family of :attr:`_members` the posterior's."""
        estimator, kwargs = self._members[family]
        self.estimator, self.summary = estimator, estimator.summary
        self.flow_name, self.flow_kwargs = family, kwargs

    def _choose(self, family: str) -> None:
        """Keep the networks of one family of :attr:`_members` and drop the others."""
        self._use(family)
        self._members = {}

    def _encode_theta(self, theta: Tensor) -> tuple[Tensor, Tensor]:
        """User units -> ``(z, log|dz/dtheta|)`` in float64 (``-inf`` outside the support)."""
        return self.space.encode(theta, self.theta_pre)

    def _decode_theta(self, z: Tensor) -> Tensor:
        return self.space.decode(z, self.theta_pre)

    def _context(self, batch: Tensor) -> Tensor:
        """The summary of a batch of observations: the flow's context, on its device."""
        return self.estimator.summary(self.observations.encode(batch, self._dtype).to(self._device))

    @property
    def _dtype(self) -> torch.dtype:
        return next(self.estimator.parameters()).dtype if self.estimator else torch.float32

    @property
    def _device(self) -> torch.device:
        return next(self.estimator.parameters()).device

    # -- input checks -----------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if self.members and all(m.estimator is not None for m in self.members):
            return
        if self.estimator is None:
            raise ValueError("this AmortizedPosterior is not fitted yet; call fit first")

    # -- training ---------------------------------------------------------------------------
    def fit(
        self,
        theta: Tensor | None = None,
        x: Tensor | None = None,
        *,
        num_simulations: int | None = None,
        simulate_online: bool = False,
        steps: int | None = None,
        validation_fraction: float | None = None,
        num_validation: int | None = None,
        steps_per_epoch: int | None = None,
        recipe: str | None = None,
        num_workers: int | None = None,
        executor: Executor | None = None,
        sample_weight: Any = None,
        **train_options: Any,
    ) -> AmortizedPosterior:
        """Train on simulations; returns the posterior itself.

        Three modes: pre-simulated tensors ``fit(theta, x)``, a fixed budget simulated here
        ``fit(num_simulations=N)`` (both offline: a ``validation_fraction`` split for early
        stopping and the state kept), or ``fit(simulate_online=True, steps=S)``: fresh
        simulations in every step (batch ``batch_size``), validation on ``num_validation``
        simulations drawn once.
        Simulations with NaN or infinite values are skipped and counted (``self.dropped``)
        with one warning. A second ``fit`` continues training (same preprocessing).

        Reproducibility: with an explicit ``seed`` (in ``train_options``), everything drawn
        before the training loop also comes from a stream seeded by it (the simulations, the
        online validation set, the networks' initialisation; torch, NumPy and Python's
        ``random`` are seeded, so a simulator may use any of them, online too), and the global
        random states are restored afterwards. Two fresh fits with the same seed then end with
        bit-identical networks, and a fit interrupted after a ``checkpoint`` and run again
        with ``resume`` (in a new process too) ends bit-identical to an uninterrupted one.
        A second ``fit(num_simulations=...)`` with the same seed draws the same simulations
        again: pass another seed for new ones. Without an explicit seed the simulations and
        the initialisation draw from the global random state (the loop itself uses seed 0).

        Data: integer and boolean ``theta`` / ``x`` are used as numbers; complex or
        non-numeric values are refused. Finite values of any size are accepted (data are
        standardised in float64 and the networks bound their inputs, so no NaN arises), but
        when a few extreme values such as 1e30 dominate a column's standardisation a
        ``RuntimeWarning`` says so (the other values then look constant to the networks).
        A bad argument raises before anything is simulated or changed.

        Args:
            theta, x: parameters ``(N, dim)`` in the user's units (the prior's shape is also
                accepted) and data ``(N, ...)``, ``N >= 2``.
            num_simulations: simulate this many pairs first.
            simulate_online: draw fresh simulations at every step.
            steps: number of optimisation steps online (the default cosine schedule runs
                over all of them; no early stopping online).
            sample_weight: one finite, non-negative weight per simulation of ``fit(theta,
                x)`` (not all zero), e.g. importance weights of simulations drawn from
                another proposal; the loss is the weighted mean of the simulations' negative
                log densities (validation too), the standardisations of ``theta`` and ``x``
                are the weighted ones (:mod:`~pyroflows.amortized.weights`), and an integer
                weight ``k`` is the same fit as the simulation repeated ``k`` times.
                Simulations of weight zero are left out. ``ess_`` then holds the training
                weights' Kish effective sample size (None after an unweighted fit). Refused
                with ``num_simulations`` or ``simulate_online`` (simulations drawn by the fit
                have no weights).
            num_workers, executor: simulate ``num_simulations`` in parallel (:meth:`simulate`:
                chunks seeded from ``seed``, the same simulations whatever the number of
                workers); ``num_simulations`` only.
            validation_fraction: share of offline simulations held out (default 0.1;
                offline only).
            num_validation: size of the held-out set online (default 1000; online only).
            steps_per_epoch: steps between validations online (default 200; online only).
            recipe: ``"two_phase"`` (the default of an offline fit with a validation
                split): :data:`FAST_PHASE` (lr 2e-3, constant, until 10 epochs without
                progress), then :data:`TRAIN_DEFAULTS` with the cosine over
                :data:`SECOND_PHASE_EPOCHS` epochs from its best state; ``history`` covers
                both. It sets ``lr``, ``schedule``, ``patience`` and the phases' lengths
                itself, so giving any of them (or ``max_steps``) needs
                ``recipe="one_phase"``; a ``max_epochs`` given caps both phases together
                (the fast phase runs at most that many epochs, the second phase what is
                left, at most :data:`SECOND_PHASE_EPOCHS`). ``"one_phase"``: one run of
                :func:`pyroflows.train.fit` with the options given over
                :data:`TRAIN_DEFAULTS` (the default online and without a validation split).
                ``checkpoint`` / ``resume``, ``time_budget`` and the other options do not
                change the recipe: a two-phase fit writes one checkpoint file per phase
                (``run.ckpt`` -> ``run.phase1.ckpt``, ``run.phase2.ckpt``; per family
                first with ``flow="auto"``: ``run.nsf.phase1.ckpt``) and its phases share
                the ``time_budget`` (the second gets what the first left).
            **train_options: options of :func:`pyroflows.train.fit` (``batch_size``,
                ``time_budget``, ``seed``, ``progress``, ``checkpoint``, ``resume``,
                ``clip_grad``, ``max_epochs``, ...; with ``recipe="one_phase"`` also
                ``lr``, ``patience``, ``schedule``, ``max_steps``); defaults: :data:`TRAIN_DEFAULTS`
                (batch 200, lr 5e-4 decayed by a cosine over 300 epochs, early stopping
                after 50 epochs without progress or once the validation loss has stayed
                clearly above its best for 20 epochs (``overfit_window``), the best
                validation state kept). A resumed run refuses a checkpoint written for
                other simulations or another posterior (preprocessing, sites, family,
                summary network).

        Raises:
            ValueError: naming the problem (shapes, values, counts, options, an option the
                recipe sets itself), before any simulation or change of state.
        """
        call = check_call(
            theta, x, num_simulations=num_simulations, simulate_online=simulate_online,
            steps=steps, validation_fraction=validation_fraction, num_validation=num_validation,
            steps_per_epoch=steps_per_epoch, recipe=recipe, num_workers=num_workers,
            executor=executor, sample_weight=sample_weight, train_options=train_options,
        )  # fmt: skip
        if self.members:
            return fit_ensemble(self, call)
        # a student and a reference of other networks; simulations from the prior make it
        # an amortized posterior again
        saved = self.student, self.reference, getattr(self, "sequential_x_o", None)
        self.student = self.reference = self.sequential_x_o = None
        try:
            return fit_posterior(self, call)
        except BaseException:
            self.student, self.reference, self.sequential_x_o = saved
            raise

    def _training_tensors(self, theta: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            z, _ = self._encode_theta(theta)
            return z.to(self._dtype), self.observations.encode(x, self._dtype)

    # -- inference ------------------------------------------------------------------------
    def sample(
        self,
        x: Any,
        num_samples: int = 1000,
        *,
        seed: int | None = None,
        as_dict: bool = False,
        sampler: str = "auto",
    ) -> Tensor | dict[str, Tensor]:
        """Posterior draws in the user's units, vectorised over observations.

        The draws run in chunks of about 16 384 rows; on the CPU, on ``torch.get_num_threads()``
        threads with one intra-op thread each (see
        :func:`~pyroflows.amortized.estimator.sample_chunks`). The draws of a seed are the same
        for any number of threads.

        Args:
            x: one observation (the data's shape) or a batch ``(B, ...)``.
            num_samples: draws per observation.
            seed: seed of these draws (torch's random streams, GPUs' included, are left as they
                were).
            as_dict: return ``{site: (num_samples, [B,] *shape)}`` instead of a flat tensor.
            sampler: ``"auto"`` (the student of :meth:`distil` when there is one, else the
                flow), ``"student"`` or ``"teacher"`` (the flow whose density
                :meth:`log_prob` gives).

        Returns:
            ``(num_samples, dim)`` for one observation, ``(num_samples, B, dim)`` for a batch.
            With ``intervals="box"``: the flow's first draws inside the support (rejection;
            see the class's ``intervals``).
        """
        self._check_fitted()
        num_samples = positive_int("num_samples", num_samples)
        if self.members:
            theta = sample_mixture(self, x, num_samples, seed, sampler)
            return self.space.unflatten(theta) if as_dict else theta
        flow = sampling_flow(self, sampler)
        batch, single = self.observations.check(x)
        # inference mode: a few percent faster than no_grad over the thousands of small
        # operations of a chunked draw; the result leaves it through torch.cat below as an
        # ordinary tensor
        warn_other_observation(self, batch)
        with seeded_draws(seed):
            with torch.inference_mode():
                context = self._context(batch)
                if self.warn_misspecified:
                    warn_if_outside(self.reference, context.cpu())
                if not self.space.has_box:
                    parts = sample_chunks(flow, context, num_samples, self._decode_theta)
            if self.space.has_box:
                draw = self._drawer(flow, context)
                parts = [sample_inside(draw, self.space.inside, num_samples, len(batch))]
        theta = torch.cat(parts)
        if single:
            theta = theta[:, 0]
        return self.space.unflatten(theta) if as_dict else theta

    def _drawer(self, flow: Flow, context: Tensor) -> Callable[[int, Tensor], Tensor]:
        """``draw(n, rows) -> (n, len(rows), dim)``: ``n`` draws of ``flow`` in the user's
        units for the observations ``rows`` of ``context`` (not yet checked against the
        support)."""

        def draw(n: int, rows: Tensor) -> Tensor:
            with torch.inference_mode():
                parts = sample_chunks(flow, context[rows.to(context.device)], n,
                                      self._decode_theta)  # fmt: skip
            return torch.cat(parts)

        return draw

    def mass_inside(
        self, x: Any, num_draws: int = MASS_DRAWS, *, seed: int = 0
    ) -> tuple[Tensor, Tensor]:
        """The flow's probability of the prior's support per observation, with its standard
        error: ``(mass, se)``, each ``()`` for one observation or ``(B,)`` for a batch.

        With ``intervals="box"`` it is estimated from ``num_draws`` of the flow's draws per
        observation (seeded by ``seed``): the share inside the support, the rejection rate
        of :meth:`sample` and the normaliser of :meth:`log_prob`. Otherwise the flow's draws
        never leave the support: one, with error zero.
        """
        self._check_fitted()
        if self.members:
            raise ValueError(
                "mass_inside is a property of one flow: ask a member of the ensemble "
                "(post.members[i].mass_inside)"
            )
        num_draws = positive_int("num_draws", num_draws)
        batch, single = self.observations.check(x)
        mass, se = self._mass(batch, num_draws, seed)
        return (mass[0], se[0]) if single else (mass, se)

    def _mass(self, batch: Tensor, num_draws: int, seed: int) -> tuple[Tensor, Tensor]:
        """:meth:`mass_inside` of a checked batch of observations, ``(B,)`` each."""
        if not self.space.has_box:
            ones = torch.ones(len(batch), dtype=torch.float64)
            return ones, torch.zeros_like(ones)
        # each distinct observation once (a batch often repeats one observation per theta),
        # each under the seed on its own, so its value does not depend on the batch around it
        unique, index = torch.unique(batch.reshape(len(batch), -1), dim=0, return_inverse=True)
        parts = []
        for row in unique.reshape((-1, 1) + batch.shape[1:]):
            with seeded_draws(seed):
                with torch.inference_mode():
                    context = self._context(row)
                draw = self._drawer(self.estimator.flow, context)
                parts.append(mass_inside(draw, self.space.inside, 1, num_draws))
        mass, se = (torch.cat(values) for values in zip(*parts, strict=True))
        return mass[index], se[index]

    def log_prob(self, theta: Any, x: Any) -> Tensor:
        """``log p(theta | x)`` in the user's units (``-inf`` outside the support).

        ``theta`` is ``(..., dim)``; for a batch of observations ``(B, ...)`` its batch shape
        must broadcast with ``(B,)`` (e.g. ``(S, B, dim)``).

        With ``intervals="box"``: the flow's density divided by its mass inside the support,
        estimated per observation from :data:`~pyroflows.amortized.box.MASS_DRAWS` of its
        draws under a fixed seed (the same value for the same ``theta`` and ``x``; its
        standard error, from :meth:`mass_inside`, is about ``sqrt((1 - m) / (m n))`` in
        ``log_prob``: 0.01 for a mass ``m`` of 0.5). Raises
        :class:`~pyroflows.amortized.box.RejectionError` naming the observation when none of
        those draws fell inside (no normaliser).
        """
        self._check_fitted()
        if self.members:
            return log_prob_mixture(self, theta, x)
        theta = as_real_tensor(theta, "theta")
        if theta.dim() == 0 or theta.shape[-1] != self.space.dim:
            raise ValueError(
                f"theta must have {self.space.dim} values in its last dimension, got shape "
                f"{tuple(theta.shape)}"
            )
        batch, single = self.observations.check(x)
        observations = () if single else (len(batch),)
        try:
            shape = torch.broadcast_shapes(theta.shape[:-1], observations)
        except RuntimeError:
            raise ValueError(
                f"theta's batch shape {tuple(theta.shape[:-1])} does not broadcast with the "
                f"{len(batch)} observations (put them in its last batch dimension, e.g. "
                f"(S, {len(batch)}, {self.space.dim}))"
            ) from None
        warn_other_observation(self, batch)
        with torch.inference_mode():
            context = self._context(batch)
            if self.warn_misspecified:
                warn_if_outside(self.reference, context.cpu())
            if single:
                context = context[0]
            split = len(shape) == len(observations)  # a theta per observation: (B, dim)
            parts = log_prob_chunks(
                self.estimator, theta, context, shape, split, self._encode_theta
            )
        out = torch.cat([part.reshape(-1) for part in parts])  # ordinary outside inference mode
        out = out.reshape(shape)
        if self.space.has_box:
            mass, _ = self._mass(batch, MASS_DRAWS, 0)
            empty = (mass == 0).nonzero().flatten().tolist()
            if empty:
                which = "the observation" if single else f"observation {empty[0]}"
                raise RejectionError(
                    f"{which}: none of the flow's {MASS_DRAWS} draws fell inside the prior's "
                    "support, so its density there cannot be normalised (fit with "
                    "intervals='logit')"
                )
            out = out - (mass[0] if single else mass).log().to(out.dtype)
        return out

    def to_inference_data(
        self,
        x: Any,
        num_samples: int = 1000,
        chains: int = 4,
        seed: int = 0,
        posterior_predictive: bool = False,
    ):
        """Posterior draws for one observation as ``arviz.InferenceData`` with the model's site
        names (``observed_data`` holds ``x``).

        With ``posterior_predictive=True`` the ``posterior_predictive`` group holds data
        simulated at every draw (:meth:`simulate_data`: the Pyro model conditioned on the draw,
        or the simulator), under the observed site's name, for ``az.plot_ppc``.

        With ``sizes``, ``observed_data`` holds the observation's real rows (padding
        dropped) in the model's layout (``(n,)`` for scalar observations) and the replicated
        data sets have the observation's size ``n``, in the same layout.

        Example:
            >>> import pyro.distributions as dist
            >>> prior = dist.Normal(torch.zeros(2), 1.0).to_event(1)
            >>> post = AmortizedPosterior(prior=prior, simulator=lambda t: t + torch.randn_like(t),
            ...                           flow_kwargs=dict(layers=1, hidden=(8,)))
            >>> post = post.fit(num_simulations=200, max_epochs=2, progress=False, seed=0,
            ...                 recipe="one_phase")
            >>> idata = post.to_inference_data(torch.zeros(2), 100, posterior_predictive=True)
            >>> idata.posterior_predictive["x"].shape
            (4, 25, 2)
        """
        return from_posterior(self, x, num_samples, chains, seed, posterior_predictive)

    def __repr__(self) -> str:
        fitted = self.estimator is not None or (self.members and self.members[0].estimator)
        state = "fitted" if fitted else "not fitted"
        ensemble = f", ensemble={len(self.members)}" if self.members else ""
        return (
            f"AmortizedPosterior({self.space}{ensemble}, flow={self.flow_name!r}, "
            f"summary={type(self.summary).__name__ if self.summary is not None else None}, "
            f"{state})"
        )
