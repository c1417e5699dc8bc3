"""MkDocs hook: publish the repository's ``notebooks/*.ipynb`` under ``notebooks/``.

The notebooks stay where they are (``notebooks/`` at the repository root) and are added to the
site's files here; mkdocs-jupyter renders them with their stored outputs, without executing
them. With ``PYROFLOWS_DOCS_NOTEBOOKS=0`` each notebook is replaced by a one-cell stub, which
keeps the navigation and the links valid while skipping the slow rendering (the test suite's
build uses this).
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
from pathlib import Path

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"


def _stub(name: str) -> str:
    cell = {
        "cell_type": "markdown",
        "metadata": {},
        "source": [f"# {name}\n\nNotebook rendering was skipped in this build."],
    }
    return json.dumps({"cells": [cell], "metadata": {}, "nbformat": 4, "nbformat_minor": 5})


@event_priority(100)  # before mkdocs-jupyter turns notebooks into pages
def on_files(files: Files, config) -> Files:
    render = os.environ.get("PYROFLOWS_DOCS_NOTEBOOKS", "1") != "0"
    src_dir = ROOT
    if not render:
        src_dir = Path(tempfile.mkdtemp(prefix="pyroflows-docs-"))
        (src_dir / "notebooks").mkdir()
        atexit.register(shutil.rmtree, src_dir, True)
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        if not render:
            (src_dir / "notebooks" / path.name).write_text(_stub(path.stem))
        uri = f"notebooks/{path.name}"
        files.append(File(uri, str(src_dir), config["site_dir"], config["use_directory_urls"]))
    return files
