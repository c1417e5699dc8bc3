"""Moved to :mod:`pyroflows.train.losses`; this name stays an alias of it for one release."""

import sys

from pyroflows.train import losses as _moved

sys.modules[__name__] = _moved
