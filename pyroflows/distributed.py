"""Moved to :mod:`pyroflows.train.distributed`; this name stays an alias of it for one release."""

import sys

from pyroflows.train import distributed as _moved

sys.modules[__name__] = _moved
