"""Doctest set-up: ``torch`` is available in every example and the seed is fixed."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _doctest_namespace(doctest_namespace):
    torch.manual_seed(0)
    doctest_namespace["torch"] = torch


# modules that only alias a moved module for one release: collecting them for doctests would
# import the moved module twice under two names
_ALIASES = ("checkpoint", "distributed", "losses", "streaming")
collect_ignore = [f"pyroflows/{name}.py" for name in _ALIASES]
