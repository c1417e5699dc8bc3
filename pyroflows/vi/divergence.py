"""What :meth:`~pyroflows.vi.FlowGuide.fit` says when an ELBO estimate or its gradient is not
finite: a warning when the training loop recovered (it went back to the last good state and
lowered the learning rate), the message of :class:`~pyroflows.train.TrainingDiverged` when it
gave up. Both name the steps and what to try.

A non-finite ELBO estimate means that at least one draw of the guide fell where the model's
log density is ``-inf`` or NaN, or where it overflows the tensors' precision (an ARMA error
recursion grows as ``theta^T``: in float32 it overflows for ``|theta|`` above about 1.25 with
200 observations).
"""

from __future__ import annotations

import warnings

from pyroflows.train import History, TrainingDiverged

__all__ = ["NonFiniteELBOWarning", "diverged_message", "warn_nonfinite"]

_TRY = (
    "Look at the model's log density where the guide puts mass (a -inf or NaN there, or a "
    "recursion that overflows: compute it in float64); otherwise try a smaller lr, fewer "
    "layers, or affine_init='laplace' (a guide that starts at the posterior's mode with its "
    "scale draws far less often where the density overflows)"
)


class NonFiniteELBOWarning(UserWarning):
    """An ELBO estimate or its gradient was not finite at some steps of a fit; those steps
    were undone and the fit went on with a lower learning rate."""


def _steps(steps: list[int]) -> str:
    shown = ", ".join(str(s) for s in steps[:5])
    return shown + (f" and {len(steps) - 5} more" if len(steps) > 5 else "")


def _start(start: dict | None) -> str:
    if not start:
        return ""
    reason = f" ({start['reason']})" if "reason" in start else ""
    return f"; the guide started from the {start['start']!r} start{reason}"


def warn_nonfinite(history: History, backoff: float = 0.5, stacklevel: int = 3) -> None:
    """A :class:`NonFiniteELBOWarning` when ``history`` records non-finite steps
    (``backoff``: the loop's ``lr_backoff``).

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     warn_nonfinite(History(diverged_steps=[49], restarts=1, steps=1000))
        >>> "step(s) 49" in str(caught[0].message)
        True
    """
    if not history.diverged_steps:
        return
    warnings.warn(
        f"FlowGuide.fit: the ELBO estimate or its gradient was not finite at step(s) "
        f"{_steps(history.diverged_steps)}. Each time the fit went back to the state at the "
        f"start of that epoch and multiplied the learning rate by {backoff:g} "
        f"({history.restarts} time(s) in all); the {history.steps} steps it kept were finite. "
        f"{_TRY}",
        NonFiniteELBOWarning,
        stacklevel=stacklevel,
    )


def diverged_message(error: TrainingDiverged, start: dict | None = None) -> str:
    """The message of the error :meth:`FlowGuide.fit` raises when the loop gave up."""
    history = getattr(error, "history", None)
    steps = getattr(history, "diverged_steps", None) or []
    where = f" at step(s) {_steps(steps)}" if steps else ""
    return (
        f"FlowGuide.fit stopped: the ELBO estimate or its gradient was not finite{where} and "
        f"stayed so after every retry with a lower learning rate{_start(start)}. The guide "
        f"keeps the last state whose steps were finite. {_TRY}. (Training loop: {error})"
    )
