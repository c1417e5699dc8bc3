"""Every python block of the README runs as written, in order, in one namespace (with fewer
epochs, steps and simulations, to keep CI fast)."""

import re
from pathlib import Path

import pyro

README = Path(__file__).resolve().parents[1] / "README.md"

#: the README's sizes -> the test's (each must occur, so a stale entry fails the test)
SMALLER = {
    "max_epochs=20, seed=0)": "max_epochs=2, seed=0)",
    "pf.DensityEstimator()": "pf.DensityEstimator(max_epochs=2)",
    "pf.DensityEstimator(bounds=": "pf.DensityEstimator(max_epochs=2, bounds=",
    "steps=3000, num_particles=8)": "steps=30, num_particles=2)",
    'loss="forward_kl", steps=1000)': 'loss="forward_kl", steps=20)',
    "n=100_000)": "n=2000)",
    "max_evals=100_000)": "max_evals=5000)",
    "pf.distill(teacher, q.sample((4000,)))": "pf.distill(teacher, q.sample((400,)), max_epochs=1)",
    "post.fit(num_simulations=20_000)": "post.fit(num_simulations=200, max_epochs=2, seed=0)",
}


def test_every_python_block_runs_in_order(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) >= 4, "README lost its quickstart blocks"
    code = "\n".join(blocks)
    for old, new in SMALLER.items():
        assert old in code, f"README no longer contains {old!r}"
        code = code.replace(old, new)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("PYROFLOWS_PROGRESS", "0")
    pyro.clear_param_store()
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)
    assert (tmp_path / "model.pt").exists() and (tmp_path / "post.pt").exists()
    assert namespace["cflow"](namespace["c"]).sample((100,)).shape == (100, 4, 2)
    assert namespace["post"].sample(namespace["x_obs"], num_samples=5).shape == (5, 1)
    pyro.clear_param_store()
