"""Moved to :mod:`pyroflows.train.streaming`; this name stays an alias of it for one release."""

import sys

from pyroflows.train import streaming as _moved

sys.modules[__name__] = _moved
