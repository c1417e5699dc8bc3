"""The network of an amortized posterior and what runs it on many observations at once.

* :class:`PosteriorEstimator` — a summary network and a conditional flow in one ``nn.Module``
  (``log_prob(z, x)`` / ``sample``) on standardised unconstrained parameters and standardised
  data: what :func:`pyroflows.losses.nll` trains and :func:`pyroflows.train.fit` runs;
* :func:`sample_chunks` / :func:`log_prob_chunks` — draws and densities for a batch of
  observations in cache-sized chunks, in the user's units (via the parameters' encoder);
* :func:`build_members` — the networks of each flow family a fit trains; :func:`identity_pre`.

A new kind of estimator (another network on the same encoded data) goes here; how it is
trained goes to :mod:`~pyroflows.amortized.recipe`.
"""

from __future__ import annotations

import copy
import math
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import torch
from torch import Tensor, nn

from pyroflows.builders import build, spline_direction
from pyroflows.flows import Flow
from pyroflows.preprocess import Preprocessor
from pyroflows.train.checkpoint import load_all_or_nothing
from pyroflows.transforms import FixedAffine
from pyroflows.validation import positive_int

__all__ = [
    "PosteriorEstimator",
    "identity_pre",
    "log_prob_chunks",
    "run_in_order",
    "sample_chunks",
]

#: rows per chunk when sampling or scoring many observations at once: activations of a few MB
#: stay in cache and in reused heap memory (131 072 rows was 1.2-1.6x slower on 1 000
#: observations x 1 000 draws of a 10-D posterior)
CHUNK = 1 << 14
#: flow families whose layers act on the whole real line (``lu="auto"`` may add linear maps)
_LINEAR_MAPS_FIT = ("nsf", "maf", "realnvp", "iaf")
#: builder options of the spline / autoregressive family only: ``flow="auto"`` gives them to
#: its ``nsf`` member and not to ``realnvp``, which refuses them
_SPLINE_OPTIONS = frozenset({"bins", "bound", "coupling", "order", "inverse", "spline"})


class PosteriorEstimator(nn.Module):
    """Summary network + conditional flow: ``q(z | summary(x))`` on standardised data.

    Example:
        >>> import pyroflows as pf
        >>> from pyroflows.nn.summary import MLPSummary
        >>> est = PosteriorEstimator(MLPSummary(3, 4, hidden=(8,)), pf.maf(2, context_dim=4))
        >>> est.log_prob(torch.zeros(5, 2), torch.zeros(5, 3)).shape
        torch.Size([5])
        >>> est.sample((7,), torch.zeros(5, 3)).shape
        torch.Size([7, 5, 2])
    """

    def __init__(self, summary: nn.Module, flow: Flow):
        super().__init__()
        self.summary, self.flow = summary, flow

    def log_prob(self, theta: Tensor, x: Tensor, check: bool = False) -> Tensor:
        return self.flow.log_prob(theta, self.summary(x), check=check)

    @torch.no_grad()
    def sample(self, shape: Sequence[int], x: Tensor) -> Tensor:
        return self.flow.sample(shape, self.summary(x))

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False):
        """``nn.Module.load_state_dict``, all or nothing: when the state does not fit (e.g. a
        checkpoint of another architecture given to ``resume``), the estimator keeps its
        parameters (PyTorch would have copied the matching entries before raising)."""
        return load_all_or_nothing(
            super().load_state_dict, self, state_dict, strict=strict, assign=assign
        )


def check_summary_output(context: Any, n: int, summary: nn.Module) -> None:
    """The summary network's output for ``n`` simulations must be a finite floating tensor
    ``(n, features)``: anything else would reach the flow as a wrong context."""
    name = type(summary).__name__
    if not isinstance(context, Tensor) or not context.is_floating_point():
        what = type(context).__name__ if not isinstance(context, Tensor) else context.dtype
        raise ValueError(f"the summary network {name} returned {what}, not a float tensor")
    if context.dim() != 2 or len(context) != n or context.shape[-1] < 1:
        raise ValueError(
            f"the summary network {name} returned shape {tuple(context.shape)} for {n} "
            f"simulations: it must return ({n}, features), one row per simulation"
        )
    if not bool(torch.isfinite(context).all()):
        raise ValueError(
            f"the summary network {name} returned NaN or infinite values for finite "
            "standardised data"
        )


def family_kwargs(flow_kwargs: dict[str, Any], family: str, dim: int, auto: bool) -> dict:
    """The builder options of one family: ``flow_kwargs`` without the spline options for
    a family that refuses them (``flow="auto"``), and ``lu="auto"`` resolved (so that a
    save stores the choice): linear maps with three or more parameters; the spline
    direction of ``nsf`` resolved the same way (its default may change, a saved flow's
    may not)."""
    kwargs = dict(flow_kwargs)
    if auto and family != "nsf":
        kwargs = {k: v for k, v in kwargs.items() if k not in _SPLINE_OPTIONS}
    if family == "nsf":
        kwargs["spline"] = spline_direction(kwargs.get("spline"))
    if kwargs.get("lu") == "auto":
        kwargs["lu"] = dim >= 3 and family in _LINEAR_MAPS_FIT
    return kwargs


def build_members(
    families: Sequence[str],
    summary: nn.Module,
    dim: int,
    context_dim: int,
    flow_kwargs: dict[str, Any],
    auto: bool,
) -> dict[str, tuple[PosteriorEstimator, dict[str, Any]]]:
    """``{family: (estimator, its builder options)}``; each family its own copy of the
    summary network (the first the one given), built in the order listed."""
    members = {}
    for i, family in enumerate(families):
        kwargs = family_kwargs(flow_kwargs, family, dim, auto)
        net = summary if i == 0 else copy.deepcopy(summary)
        flow = build(family, dim, context_dim, **kwargs)
        members[family] = (PosteriorEstimator(net, flow), kwargs)
    return members


def identity_pre(dim: int) -> Preprocessor:
    """A per-column standardisation of the saved layout (its buffers are then loaded)."""
    return Preprocessor([FixedAffine(torch.zeros(dim), torch.eye(dim))])


def sample_chunks(
    flow: Flow,
    context: Tensor,
    num_samples: int,
    decode: Callable[[Tensor], Tensor],
    workers: int | None = None,
) -> list[Tensor]:
    """``num_samples`` draws of ``flow`` for each row of ``context``, in chunks of about
    :data:`CHUNK` rows, each decoded to the user's units on the CPU in float64 (whatever the
    device) and returned as float32; ``torch.cat`` them (outside inference mode: ordinary
    tensors).

    The context is checked once. The base draws of every chunk come from torch's random
    stream in the calling thread, in chunk order, so the draws do not depend on ``workers``.
    On the CPU the chunks run on ``workers`` threads (default ``torch.get_num_threads()``),
    each with one intra-op thread: their products and elementwise operations need no
    synchronisation between threads, which, on a busy machine where a thread may wait for
    a core, costs more than the work itself (:func:`run_in_order`). Other devices run the
    chunks in the calling thread.
    """
    flow.check_inputs(None, context)
    if workers is None:
        workers = torch.get_num_threads() if context.device.type == "cpu" else 1
    per_chunk = max(1, CHUNK // len(context))
    batch = context.shape[:-1]
    inference = torch.is_inference_mode_enabled()

    def draw(z: Tensor) -> Tensor:
        with torch.inference_mode(inference), torch.no_grad():
            x = flow.transform_from_base(z, context, check=False)
            return decode(x.cpu()).to(torch.float32)

    noise = (
        (flow.base.sample((min(per_chunk, num_samples - i),) + batch),)
        for i in range(0, num_samples, per_chunk)
    )
    return run_in_order(draw, noise, workers)


def run_in_order(fn: Callable[..., Tensor], calls: Iterable[tuple], workers: int) -> list[Tensor]:
    """``[fn(*args) for args in calls]``, on ``workers`` threads with one intra-op thread each
    (``workers=1``: in the calling thread, as written). ``calls`` is read in the calling
    thread, in order, at most ``2 * workers`` calls ahead of the results (what it draws from
    torch's random stream is drawn in the same order either way). Torch's intra-op thread
    count is the caller's again afterwards.

    Two threads each running whole chunks instead of every operation split over two
    intra-op threads: 1 000 x 1 000 draws of SLCP's distilled IAF student on 2 cores loaded by
    other jobs (load average 5-7), 6.6 s instead of 42.8 s; on one thread 4.6 s
    (``benchmarks/results/sampling_workers.md``).

    Example:
        >>> run_in_order(torch.add, [(torch.ones(1), 1), (torch.ones(1), 2)], workers=2)
        [tensor([2.]), tensor([3.])]
    """
    workers = positive_int("workers", workers)
    if workers == 1:
        return [fn(*args) for args in calls]
    threads = torch.get_num_threads()
    results: list[Tensor] = []
    try:
        with ThreadPoolExecutor(workers, initializer=torch.set_num_threads,
                                initargs=(1,)) as pool:  # fmt: skip
            pending: deque[Future] = deque()
            for args in calls:
                pending.append(pool.submit(fn, *args))
                if len(pending) >= 2 * workers:
                    results.append(pending.popleft().result())
            results.extend(future.result() for future in pending)
    finally:
        torch.set_num_threads(threads)  # the workers' setting reaches torch's global count
    return results


def log_prob_chunks(
    estimator: PosteriorEstimator,
    theta: Tensor,
    context: Tensor,
    shape: torch.Size,
    split: bool,
    encode: Callable[[Tensor], tuple[Tensor, Tensor]],
) -> list[Tensor]:
    """``log p(theta | x)`` in the user's units for ``theta`` broadcast to ``shape``, in
    blocks along the leading axis (bounded memory and cache-sized activations: 10^6 10-D rows
    at once was 4.5x slower); ``split``: a theta per observation, each block with its rows of
    ``context``. Flatten and ``torch.cat`` the blocks."""
    if not shape:  # one theta, one observation
        return [_log_prob_rows(estimator, theta, context, encode)]
    theta = theta.expand(shape + theta.shape[-1:])
    step = max(1, CHUNK // math.prod(shape[1:]))
    return [
        _log_prob_rows(
            estimator, theta[i : i + step], context[i : i + step] if split else context, encode
        )
        for i in range(0, shape[0], step)
    ]


def _log_prob_rows(
    estimator: PosteriorEstimator,
    theta: Tensor,
    context: Tensor,
    encode: Callable[[Tensor], tuple[Tensor, Tensor]],
) -> Tensor:
    """``log p(theta | ·)`` for a block of rows, given the conditioner's context: the flow's
    density of the encoded rows plus the encoding's log-Jacobian (``-inf`` outside the
    support)."""
    param = next(estimator.parameters())
    z, ladj = encode(theta)
    z = torch.where(torch.isfinite(z), z, torch.zeros_like(z))
    z = z.to(param.device, param.dtype)
    log_q = estimator.flow.log_prob(z, context, check=False)
    out = log_q.to(torch.float64).cpu() + ladj
    return torch.where(torch.isfinite(ladj), out, torch.full_like(out, -math.inf))


def plain(value: Any) -> Any:
    """A configuration as plain Python values (lists for tuples, str keys): what a saved file
    and a checkpoint's fingerprint store."""
    if isinstance(value, tuple | list):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    return value
