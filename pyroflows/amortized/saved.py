"""The saved file of an amortized posterior: one dictionary of plain tensors and Python values
(``torch.load(weights_only=True)`` reads it, a crafted file never runs code), written
atomically. :func:`blob_of` builds it from a fitted posterior; :func:`read_blob` reads and
checks one (format, version, entries); :func:`restore` puts its networks, encoders and
history into a posterior built from its configuration. A new saved entry goes here (optional,
with a default, so older files still load).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from pyro import poutine
from torch import nn

from pyroflows.amortized.ensemble import adopt
from pyroflows.amortized.estimator import PosteriorEstimator, identity_pre, plain
from pyroflows.amortized.fast_sampler import restore_student, student_config
from pyroflows.amortized.observations import check_sizes
from pyroflows.amortized.parameters import saved_space
from pyroflows.amortized.simulate import (
    ModelSimulator,
    PriorSimulator,
    VariableSizeSimulator,
    can_simulate,
)
from pyroflows.builders import build
from pyroflows.nn.summary import summary_from_config
from pyroflows.train import History
from pyroflows.train.checkpoint import atomic_save, read_saved
from pyroflows.train.seeding import seeded

if TYPE_CHECKING:  # the class these methods are part of (no import at run time)
    from pyroflows.amortized.posterior import AmortizedPosterior

#: the facade (:class:`~pyroflows.amortized.posterior.AmortizedPosterior`) that calls these
#: functions with itself; not imported, so the facade stays the one module above this one
Posterior = Any

__all__ = [
    "FORMAT", "blob_of", "check_fingerprint", "fingerprint_of", "members_of", "read_blob",
    "restore",
]  # fmt: skip

FORMAT = "pyroflows.AmortizedPosterior"
#: the entries a saved posterior needs, per section of the saved dictionary
_SAVED_KEYS = {
    "config": (
        "flow", "flow_kwargs", "summary", "summary_config", "context_dim", "observed",
        "param_name", "x_shape", "space",
    ),
    "state": ("estimator", "theta_pre", "x_pre"),
}  # fmt: skip
_WHAT = "a saved pyroflows AmortizedPosterior"
#: the simulator's fingerprint: this many prior draws under this seed, their log prior
#: density and data simulated for them under the next seed, saved with the posterior and
#: computed again by ``load`` when a model or simulator is passed (the order of the model's
#: sites does not change it: the data are drawn for the saved parameters)
FINGERPRINT_N = 3
FINGERPRINT_SEED = 0x5EED_F1A9
#: values that agree to this relative tolerance (other CPUs round otherwise) are the same
FINGERPRINT_RTOL = 1e-4


def _log_prior(sim: Any, theta: torch.Tensor) -> torch.Tensor | None:
    """The prior log-density of flat draws ``(n, dim)`` (None where it is not at hand)."""
    if isinstance(sim, PriorSimulator):
        shape = sim.prior.batch_shape + sim.prior.event_shape
        lp = sim.prior.log_prob(theta.reshape(len(theta), *shape))
        return lp.reshape(len(theta), -1).sum(-1)
    if isinstance(sim, VariableSizeSimulator):
        sim = sim._sub(sim.max_size)
    if not isinstance(sim, ModelSimulator):
        return None
    values = sim.space.unflatten(theta)
    out = []
    for i in range(len(theta)):
        condition = {name: v[i] for name, v in values.items()}
        trace = poutine.trace(poutine.condition(sim.model, condition)).get_trace(
            *sim.args, **sim.kwargs
        )
        out.append(
            sum(trace.nodes[n]["fn"].log_prob(trace.nodes[n]["value"]).sum() for n in values)
        )
    return torch.stack(out)


def fingerprint_of(post: Posterior) -> dict[str, torch.Tensor] | None:
    """``{"theta", "log_prior", "x"}`` of ``FINGERPRINT_N`` prior draws (the global random
    state left as it was); a posterior without a simulator keeps the fingerprint it was loaded
    with (None if it has none)."""
    sim = post.sim
    if not can_simulate(sim):
        return getattr(post, "_saved_fingerprint", None)
    with seeded(FINGERPRINT_SEED), torch.no_grad(), poutine.block():
        theta = sim.sample_prior(FINGERPRINT_N)
    return {"theta": theta.detach().cpu(), **_for_parameters(sim, theta)}


def _for_parameters(sim: Any, theta: torch.Tensor) -> dict[str, torch.Tensor]:
    """What a simulator gives for saved parameters: their log prior and data under a seed."""
    with seeded(FINGERPRINT_SEED + 1), torch.no_grad(), poutine.block():
        x = sim.simulate(theta.to(torch.get_default_dtype()))
        lp = _log_prior(sim, theta)
    out = {"x": x.detach().cpu()}
    if lp is not None:
        out["log_prior"] = lp.detach().cpu()
    return out


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.shape != b.shape:
        return False
    a, b = a.to(torch.float64), b.to(torch.float64)
    scale = float(torch.nan_to_num(a.abs(), posinf=0.0).max()) if a.numel() else 0.0
    return bool(
        torch.allclose(a, b, rtol=FINGERPRINT_RTOL, atol=1e-6 * max(scale, 1e-12), equal_nan=True)
    )


def check_fingerprint(post: Posterior, saved: Any, path: Any) -> None:
    """Refuse a model (or prior + simulator) whose prior density or data for the saved
    parameters differ from those of the one the posterior was trained with: its networks
    would be used for a model they were not made for. Nothing for a file without a
    fingerprint or a posterior without a simulator."""
    if not isinstance(saved, dict) or not {"theta", "x"} <= saved.keys():
        return
    sim = post.sim
    if not can_simulate(sim):
        return
    now = _for_parameters(sim, saved["theta"])
    for key, what in (("log_prior", "prior density"), ("x", "data")):
        if key not in saved or key not in now or _same(saved[key], now[key]):
            continue
        was, got = tuple(saved[key].shape), tuple(now[key].shape)
        detail = f"shape {was} saved, {got} now" if was != got else "other values"
        raise ValueError(
            f"{path}: the model passed to load gives another {what} than the one this "
            f"posterior was trained with ({detail}, for {FINGERPRINT_N} saved parameter draws "
            "under a fixed seed): its networks were not made for this model. Pass the model "
            "(prior, simulator, model_args) it was trained with, or check_model=False if the "
            "simulator does not repeat under torch's, NumPy's and random's seeds"
        )


def blob_of(post: Posterior, version: int) -> dict[str, Any]:
    """The saved dictionary of a fitted posterior."""
    summary = post.estimator.summary
    return {
        "format": FORMAT,
        "version": version,
        "config": {
            "flow": post.flow_name,
            "flow_kwargs": plain(post.flow_kwargs),
            "summary": type(summary).__name__,
            "summary_config": plain(getattr(summary, "config", None)),
            "context_dim": post.context_dim,
            "observed": post.observed,
            "param_name": post.param_name,
            "x_shape": list(post.x_shape),
            "space": post.space.state(),
            # optional (absent from older files): a varying number of observations
            **post.observations.sets_state(),
        },
        "state": {
            "estimator": {k: v.cpu() for k, v in post.estimator.state_dict().items()},
            "theta_pre": post.theta_pre.state_dict(),
            "x_pre": post.x_pre.state_dict(),
        },
        "history": None if post.history is None else plain(post.history.as_dict()),
        "dropped": post.dropped,
        # optional: the fast sampler of ``distil`` (its state and hidden sizes)
        "student": student_config(post),
        # optional: the observation of a posterior trained by ``fit_sequential``
        "sequential_x_o": getattr(post, "sequential_x_o", None),
    }


def read_blob(path: str | Path, version: int) -> dict[str, Any]:
    """The saved dictionary at ``path``; ValueError for a missing, corrupt or foreign file,
    another format version or missing entries."""
    blob = read_saved(path, FORMAT, _WHAT)
    found = blob.get("version")
    if type(found) is not int or found != version:
        newer = type(found) is int and found > version
        raise ValueError(
            f"{path} has format version {found!r}; this pyroflows reads version "
            f"{version}{' (upgrade pyroflows)' if newer else ''}"
        )
    for section, keys in _SAVED_KEYS.items():
        part = blob.get(section)
        if not isinstance(part, dict):
            raise ValueError(f"{path} is not {_WHAT}: its {section!r} entry is missing")
        missing = [key for key in keys if key not in part]
        if missing:
            raise ValueError(f"{path} is not {_WHAT}: {section} lacks {missing}")
    return blob


def members_of(blob: dict[str, Any], path: Any) -> list[dict[str, Any]]:
    """The saved members of an ensemble after the first (which is ``blob`` itself; optional
    entry ``members``: a list of saved posteriors of the same format); [] for a single
    posterior. ValueError for a malformed list."""
    others = blob.get("members") or []
    if not isinstance(others, list) or not all(isinstance(m, dict) for m in others):
        raise ValueError(f"{path} is not {_WHAT}: its 'members' entry is not a list of members")
    for member in others:
        for section, keys in _SAVED_KEYS.items():
            part = member.get(section)
            if not isinstance(part, dict) or any(key not in part for key in keys):
                raise ValueError(f"{path} is not {_WHAT}: a member lacks its {section!r} entries")
    return others


def restore(
    post: Posterior, blob: dict[str, Any], path: Any, summary: nn.Module, given: bool
) -> Posterior:
    """Put the saved space, networks, encoders and history into ``post`` (built from the
    saved configuration, with ``summary``); ValueError when they do not match (naming the
    summary passed when ``given``)."""
    c = blob["config"]
    space = saved_space(path, c["space"], post.space)  # refuses other sites, first
    try:
        sets = {}
        if c.get("sizes") is not None:
            sets = dict(
                sizes=check_sizes(c["sizes"]), size_arg=str(c["size_arg"]),
                axis=int(c.get("size_axis", 0)),
                row_shape=torch.Size(int(s) for s in c.get("row_shape", ())),
            )  # fmt: skip
        observations = replace(post.observations, shape=torch.Size(c["x_shape"]), **sets)
        post.space = space
        post.intervals = space.intervals  # the saved choice: the networks were trained on it
        if post.sim is not None:  # the model's sites, flattened in the saved order
            post.sim.set_space(post.space)
        post.context_dim = int(c["context_dim"])
        post.flow_kwargs = dict(c["flow_kwargs"])  # what was saved, not today's defaults
        if c["flow"] == "nsf":  # files written before the option hold the inverse spline
            post.flow_kwargs.setdefault("spline", "inverse")
        flow = build(c["flow"], post.space.unconstrained_dim, post.context_dim, **post.flow_kwargs)
        post.estimator = PosteriorEstimator(summary, flow)
        post.estimator.load_state_dict(blob["state"]["estimator"])
        post.estimator.eval()
        post.theta_pre = identity_pre(post.space.unconstrained_dim)
        post.theta_pre.load_state_dict(blob["state"]["theta_pre"])
        x_pre = identity_pre(observations.features())
        x_pre.load_state_dict(blob["state"]["x_pre"])
        post.observations = replace(observations, pre=x_pre)
        if blob.get("history"):
            post.history = History(**blob["history"])
        post.dropped = int(blob.get("dropped", 0))
        restore_student(post, blob.get("student"))
        if isinstance(blob.get("sequential_x_o"), torch.Tensor):
            post.sequential_x_o = blob["sequential_x_o"]
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as error:
        text = str(error).strip()
        reason = text.splitlines()[0] if text else type(error).__name__
        raise ValueError(
            f"{path}: the saved networks do not match the saved configuration"
            f"{' or the summary passed' if given else ''} ({reason})"
        ) from None
    return post


class Persistence:
    """:meth:`save` and :meth:`load` of :class:`~pyroflows.amortized.posterior.AmortizedPosterior`
    (the file's layout: the functions above)."""

    #: the saved file's version: a file of another version is refused
    FORMAT_VERSION = 1

    def save(self, path: str | Path) -> None:
        """Save networks, preprocessing, configuration and site names to one file (plain
        tensors and Python values: loadable with ``torch.load(weights_only=True)``).

        The write is atomic (temporary file, fsync, rename): an interrupted save leaves the
        previous file as it was.

        Raises:
            ValueError: not fitted, or the folder does not exist or is not writable.
        """
        self._check_fitted()
        if self.members:
            blob = blob_of(self.members[0], self.FORMAT_VERSION)
            blob["members"] = [blob_of(m, self.FORMAT_VERSION) for m in self.members[1:]]
        else:
            blob = blob_of(self, self.FORMAT_VERSION)
        # optional: a few simulations under a fixed seed, checked by ``load``
        blob["fingerprint"] = fingerprint_of(self)
        atomic_save(blob, path)

    @classmethod
    def load(
        cls,
        path: str | Path,
        model: Callable | None = None,
        *,
        prior: Any = None,
        simulator: Callable | None = None,
        summary: nn.Module | None = None,
        model_args: Sequence[Any] = (),
        model_kwargs: Mapping[str, Any] | None = None,
        check_model: bool = True,
    ) -> AmortizedPosterior:
        """Load a posterior written by :meth:`save` (``weights_only=True``: no code runs).

        The model or prior + simulator are only needed to simulate again (more training,
        SBC, predictive checks) or when a support could not be saved; a summary network that
        is not one of :mod:`pyroflows.nn.summary` must be passed (untrained) as ``summary``.
        A posterior saved with ``sizes`` keeps them (and ``size_arg``): a ``model`` passed
        here simulates with them again.

        The file holds a fingerprint of the simulator it was trained with (a few simulations
        under a fixed seed). A ``model`` (or ``prior`` + ``simulator``) passed here simulates
        them again, and one that draws other parameters or data (another noise level, other
        ``model_args``, another prior) is refused; ``check_model=False`` skips that for a
        simulator that does not repeat under a seed.

        Raises:
            ValueError: a missing, truncated, corrupt or foreign file, another format version,
                missing entries, saved networks that do not match the saved configuration
                (or the ``summary`` passed), or a model that simulates otherwise than the one
                it was trained with; a crafted file never runs code.
        """
        blob = read_blob(path, cls.FORMAT_VERSION)
        others = members_of(blob, path)
        c = blob["config"]
        given = summary is not None
        if summary is None:
            summary = summary_from_config(c["summary"], c["summary_config"])
        sized = c.get("sizes") is not None and model is not None  # simulates with them again
        post = cls(
            model, c["observed"], prior=prior, simulator=simulator, summary=summary,
            flow=c["flow"], flow_kwargs=c["flow_kwargs"], model_args=model_args,
            model_kwargs=model_kwargs, param_name="theta" if model is not None else c["param_name"],
            sizes=c["sizes"] if sized else None, size_arg=c.get("size_arg") if sized else None,
            ensemble=1 + len(others), intervals=c["space"].get("intervals", "logit"),
        )  # fmt: skip
        if not others:
            restore(post, blob, path, summary, given)
        else:
            for member, saved in zip(post.members, [blob, *others], strict=True):
                restore(member, saved, path, member.summary, given)
            adopt(post)
        if check_model:
            check_fingerprint(post, blob.get("fingerprint"), path)
        post._saved_fingerprint = blob.get("fingerprint")
        return post
