"""Real and synthetic posteriors with reference draws, to measure variational guides.

Seventeen development posteriors (posteriordb models ported to Pyro, a hierarchical model in
its centred and non-centred forms with Pyro NUTS reference draws, and synthetic targets with
exact samplers) and eight **confirmation** posteriors reserved for one final check
(:data:`RESERVED`: never choose or tune a guide on them).

:func:`load` returns a :class:`Posterior`: the Pyro model, its keyword arguments (data) and
2000 reference draws per latent site in the site's natural (constrained) parameterisation.
posteriordb's draws come from its long Stan runs (2000 of its 10 000, chosen at random); the
port's site names and shapes are documented in each model's docstring (e.g. the intercept and
slopes of a Stan regression are one vector ``beta``). :func:`unconstrain`, :func:`constrain`
and :func:`log_density` map draws to and from Pyro's unconstrained space (``biject_to`` of each
site's support) and evaluate ``log p(u | y)`` there, log-Jacobians included.

Example:
    >>> from pyroflows.datasets import posteriors
    >>> post = posteriors.load("kidiq-kidscore_momhsiq")
    >>> post.split, sorted(post.reference), post.reference["beta"].shape
    ('development', ['beta', 'sigma'], (2000, 3))
    >>> len(posteriors.names("development")), len(posteriors.names("confirmation"))
    (17, 8)
"""

from pyroflows.datasets.posteriors.load import Posterior, load, names
from pyroflows.datasets.posteriors.registry import RESERVED
from pyroflows.datasets.posteriors.unconstrained import constrain, log_density, unconstrain

__all__ = ["RESERVED", "Posterior", "constrain", "load", "log_density", "names", "unconstrain"]
