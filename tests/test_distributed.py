"""Multi-process training: the same script, launched by torchrun with 2 CPU processes
(gloo), trains data-parallel with identical parameters on both ranks."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

SCRIPT = textwrap.dedent(
    """
    import os, sys
    import numpy as np
    import torch
    torch.set_num_threads(1)
    import pyroflows as pf

    out = sys.argv[1]
    rank = int(os.environ.get("RANK", "0"))
    torch.manual_seed(0)  # the same initial model (DDP would broadcast rank 0's anyway)
    x = torch.randn(2400, 2, generator=torch.Generator().manual_seed(1)) * torch.tensor([1.0, 3.0])
    flow = pf.maf(2, layers=2, hidden=(16, 16))
    hist = pf.fit(flow, pf.losses.nll, x[:2000], x[2000:], max_epochs=12, batch_size=100,
                  lr=3e-3, seed=0, progress=False, checkpoint=os.path.join(out, "fit.ckpt"))
    X = np.random.default_rng(0).normal(size=(1500, 2)) * [1.0, 5.0] + 100.0
    est = pf.DensityEstimator(flow="maf", layers=2, hidden=(16, 16), max_epochs=8).fit(X)
    torch.save({"flow": flow.state_dict(), "train": hist.train_loss, "val": hist.val_loss,
                "est": est.flow_.state_dict(), "est_val": est.history_.val_loss,
                "stop": est.history_.stop_reason},
               os.path.join(out, f"rank{rank}.pt"))
    """
)


def _launch(tmp_path, processes: int):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    out = tmp_path / f"out{processes}"
    if processes == 1:
        cmd = [sys.executable, str(script), str(out)]
    else:
        cmd = [
            sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc-per-node={processes}", str(script), str(out),
        ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("CI", None)
    for attempt in range(2):
        shutil.rmtree(out, ignore_errors=True)  # a first launch's checkpoint would be resumed
        out.mkdir()
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        # Once in about 25 CI runs on a 2-core host a rank died of SIGABRT inside gloo ("terminate
        # called without an active exception", a C++ thread torn down while joinable; 0 in 20
        # launches under load by hand). That abort, and only it, gets a second launch; any
        # other failure, or the abort twice, fails the test.
        if done.returncode == 0 or _GLOO_ABORT not in done.stderr or attempt == 1:
            break
        print(f"torchrun: a rank aborted inside gloo, launching again:\n{done.stderr[-1500:]}")
    assert done.returncode == 0, done.stderr[-3000:]
    return out


_GLOO_ABORT = "terminate called without an active exception"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    single = _launch(tmp, 1)
    double = _launch(tmp, 2)
    load = lambda p: torch.load(p, weights_only=True)  # noqa: E731
    return load(single / "rank0.pt"), [load(double / f"rank{r}.pt") for r in (0, 1)], double


def test_both_ranks_end_with_identical_parameters(runs):
    _, (r0, r1), _ = runs
    for part in ("flow", "est"):
        assert r0[part].keys() == r1[part].keys()
        for key in r0[part]:
            assert torch.equal(r0[part][key], r1[part][key]), (part, key)
    assert r0["val"] == r1["val"] and r0["est_val"] == r1["est_val"]  # agreed early stopping


def test_two_processes_learn_like_one(runs):
    one, (r0, _), _ = runs
    assert r0["val"][-1] < r0["val"][0] - 0.1  # the loss falls
    # the same rows per step, so the same trajectory up to reduction order
    assert abs(min(r0["val"]) - min(one["val"])) < 0.02, (min(r0["val"]), min(one["val"]))
    assert abs(min(r0["est_val"]) - min(one["est_val"])) < 0.02


def test_only_rank_zero_writes_the_checkpoint(runs):
    from pyroflows.checkpoint import load_checkpoint

    _, (r0, _), out = runs
    blob = load_checkpoint(out / "fit.ckpt")
    assert blob["fingerprint"]["processes"] == 2 and len(blob["rng"]) == 2
    assert sorted(p.name for p in out.iterdir()) == ["fit.ckpt", "rank0.pt", "rank1.pt"]
    assert np.isfinite(r0["val"]).all()
