"""The README's quickstart runs as written (with fewer epochs, to keep CI fast)."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_quickstart_runs(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks, "README has no python block"
    code = blocks[0].replace("max_epochs=20", "max_epochs=2")
    code = code.replace("pf.DensityEstimator()", "pf.DensityEstimator(max_epochs=2)")
    code = code.replace("pf.DensityEstimator(bounds=", "pf.DensityEstimator(max_epochs=2, bounds=")
    assert code.count("max_epochs=2") == 3
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)
    assert (tmp_path / "model.pt").exists()
    assert namespace["cflow"](namespace["c"]).sample((100,)).shape == (100, 4, 2)
