"""The README's quickstart runs as written (with fewer epochs, to keep CI fast)."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_quickstart_runs(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks, "README has no python block"
    code = blocks[0].replace("max_epochs=20", "max_epochs=2")
    code = code.replace(
        'pf.DensityEstimator(flow="nsf", layers=5)',
        'pf.DensityEstimator(flow="nsf", layers=5, max_epochs=2)',
    )
    assert "max_epochs=2)" in code
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)
    assert (tmp_path / "model.pt").exists()
    assert namespace["cflow"](namespace["c"]).sample((100,)).shape == (100, 4, 2)
