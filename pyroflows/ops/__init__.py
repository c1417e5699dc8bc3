"""Pure tensor maths of the one-dimensional bijections used by pyroflows.

Every function here is elementwise and stateless: it takes an input tensor and raw
(unconstrained) parameters and returns ``(output, log_abs_det)`` where ``log_abs_det`` has the
shape of the input and holds ``log|d output / d input|`` of the map that was applied.
``inverse=True`` applies the inverse map and returns its own log-derivative.
"""

from pyroflows.ops.affine import affine, soft_clamp
from pyroflows.ops.equal_bins import equal_bin_spline
from pyroflows.ops.linear_spline import piecewise_linear
from pyroflows.ops.rqs import rational_quadratic_spline

__all__ = [
    "affine",
    "equal_bin_spline",
    "piecewise_linear",
    "rational_quadratic_spline",
    "soft_clamp",
]
