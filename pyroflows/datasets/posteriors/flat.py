"""Flat priors (Stan's default for a parameter without a prior statement)."""

from __future__ import annotations

import torch
from pyro.distributions import ImproperUniform, constraints
from pyro.distributions.transforms import biject_to


class Flat(ImproperUniform):
    """:class:`pyro.distributions.ImproperUniform` (log-density 0 on ``support``) whose
    ``sample`` returns a fixed point of the support, ``biject_to(support)(0)``: an improper
    prior has no draws, but Pyro's machinery that runs a model forward (autoguide set-up,
    ``init_to_median``, ``Predictive``) needs a value. The posterior is unchanged.

    Example:
        >>> Flat(constraints.positive, (), ()).sample()
        tensor(1.)
    """

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        t = biject_to(self.support)
        shape = torch.Size(sample_shape) + self.batch_shape + self.event_shape
        return t(torch.zeros(t.inverse_shape(shape)))


def flat(constraint=constraints.real, event: tuple[int, ...] = ()) -> Flat:
    """A flat prior on ``constraint`` with event shape ``event``."""
    return Flat(constraint, (), event)
