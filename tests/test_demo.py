"""``make demo`` in its quick mode: the table, the verdict, the saved model and the figure."""

from __future__ import annotations

import contextlib
import io
import math

import pytest

from pyroflows import demo


def _table_rows(text: str) -> dict[str, tuple[float, float]]:
    """Method -> (test log-likelihood, KL) from the printed Markdown table."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0] not in ("method", "---", "true density"):
            rows[cells[0]] = (float(cells[1].split("±")[0]), float(cells[2].split("±")[0]))
    return rows


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert demo.main(["--quick", "--out", str(out)]) == 0
    return buffer.getvalue(), out


def test_quick_demo_prints_the_table_and_the_verdict(quick_run):
    text, _ = quick_run
    rows = _table_rows(text)
    assert set(rows) == {demo.FLOW, "Gaussian", "KDE (CV bandwidth)", "GMM (validated K)"}
    assert all(math.isfinite(ll) and math.isfinite(kl) and kl > 0 for ll, kl in rows.values())
    # One Gaussian cannot follow the spiral at any size: every other method is closer to it.
    assert rows["Gaussian"][1] == max(kl for _, kl in rows.values())
    verdicts = [line for line in text.splitlines() if line.startswith("verdict: ")]
    assert len(verdicts) == 1
    assert f"{rows[demo.FLOW][1]:.4f}" in verdicts[0]


def test_quick_demo_saves_the_model_and_the_figure(quick_run):
    text, out = quick_run
    assert "reloaded scores identical: True" in text
    assert (out / f"default_{demo.TARGET}.pt").stat().st_size > 0
    assert (out / "densities.png").stat().st_size > 10_000


def _rows(**kl: float) -> list[dict]:
    return [{"method": name, "kl": (value, 0.0)} for name, value in kl.items()]


def test_verdict_is_computed_from_the_numbers():
    names = {"flow": demo.FLOW, "gmm": "GMM (validated K)", "kde": "KDE (CV bandwidth)"}
    win = demo.verdict(_rows(**{names["flow"]: 0.02, names["gmm"]: 0.082, names["kde"]: 0.158}))
    assert win == (
        "verdict: the default flow's KL is 0.0200, 4.1x lower than the GMM's and "
        "7.9x lower than KDE's"
    )
    lose = demo.verdict(_rows(**{names["flow"]: 0.04, names["gmm"]: 0.02, names["kde"]: 0.06}))
    assert "2.0x higher than the GMM's" in lose and "1.5x lower than KDE's" in lose
    assert "short of the 2x margin" in lose
