"""The documentation site builds without warnings, and every Python block in it runs.

The build uses ``mkdocs build --strict`` with the notebooks replaced by stubs
(``PYROFLOWS_DOCS_NOTEBOOKS=0``) to keep it fast; ``make docs`` renders them. The blocks of each
page run in order in one namespace, in a temporary directory, as a reader would paste them.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(p for p in DOCS.rglob("*.md") if "_hooks" not in p.parts)
FENCE = re.compile(r"^```python[^\n]*\n(.*?)^```", re.S | re.M)


def python_blocks(page: Path) -> list[str]:
    return FENCE.findall(page.read_text())


def test_pages_found():
    assert (DOCS / "index.md") in PAGES
    assert sum(len(python_blocks(p)) for p in PAGES) >= 10


def test_site_builds_strict(tmp_path):
    pytest.importorskip("mkdocs", reason="mkdocs is not installed (pip install -e '.[dev]')")
    pytest.importorskip("mkdocstrings", reason="mkdocstrings is not installed")
    pytest.importorskip("mkdocs_jupyter", reason="mkdocs-jupyter is not installed")
    env = dict(
        os.environ,
        PYROFLOWS_DOCS_NOTEBOOKS="0",
        NO_MKDOCS_2_WARNING="1",
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    )
    site = tmp_path / "site"
    cmd = [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    assert (site / "index.html").exists()
    assert (site / "api" / "density" / "index.html").exists()


@pytest.mark.parametrize(
    "page", [p for p in PAGES if python_blocks(p)], ids=lambda p: str(p.relative_to(DOCS))
)
def test_code_blocks_run(page, tmp_path, monkeypatch):
    import matplotlib
    import pyro
    import torch

    matplotlib.use("Agg")
    blocks = python_blocks(page)
    pyro.clear_param_store()
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": f"docs_{page.stem}"}
    with torch.random.fork_rng(devices=[]):  # leave the global random state to other tests
        try:
            for i, block in enumerate(blocks):
                code = compile(block, f"{page.relative_to(ROOT)} (block {i + 1})", "exec")
                exec(code, namespace)
        finally:
            import matplotlib.pyplot as plt

            plt.close("all")
            pyro.clear_param_store()
