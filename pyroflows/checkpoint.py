"""Moved to :mod:`pyroflows.train.checkpoint`; this name stays an alias of it for one release."""

import sys

from pyroflows.train import checkpoint as _moved

sys.modules[__name__] = _moved
