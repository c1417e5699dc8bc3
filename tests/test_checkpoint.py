"""Checkpoints of the shared loop: atomic writes, safe reads, bit-identical resume after a
SIGKILL (also in the middle of a checkpoint write), and data that stream from a DataLoader."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import pyroflows as pf
from pyroflows.checkpoint import atomic_save, load_checkpoint
from pyroflows.density import DensityEstimator
from pyroflows.losses import ReverseKL, nll

# The child trains a small flow with a checkpoint every epoch; SLOW_SAVE makes every
# checkpoint write pause (after the temporary file is written, before the rename).
CHILD = textwrap.dedent(
    """
    import os, sys, time
    import torch
    torch.set_num_threads(1)
    import pyroflows as pf, pyroflows.checkpoint as ck

    if os.environ.get("SLOW_SAVE"):
        real_save = ck.torch.save
        def slow_save(obj, handle):
            real_save(obj, handle)
            handle.flush()
            time.sleep(0.6)
        ck.torch.save = slow_save
    if os.environ.get("SLOW_EPOCH"):
        slow = lambda epoch, history: time.sleep(0.3)
    else:
        slow = None
    torch.manual_seed(0)  # the same initialisation in every process
    x = torch.randn(2000, 3, generator=torch.Generator().manual_seed(1))
    flow = pf.maf(3, layers=2, hidden=(16, 16))
    ckpt = sys.argv[1]
    pf.fit(flow, pf.losses.nll, x[:1600], x[1600:], max_epochs=8, batch_size=100, lr=3e-3,
           schedule="cosine", seed=0, progress=False, checkpoint=ckpt, resume=ckpt,
           callback=slow)
    torch.save(flow.state_dict(), sys.argv[2])
    """
)


def _run_child(tmp_path: Path, name: str, env: dict | None = None) -> subprocess.Popen:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / f"{name}.ckpt"), str(tmp_path / f"{name}.pt")],
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _wait_for(predicate, timeout: float = 120.0) -> None:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise TimeoutError("the child did not reach the expected point")
        time.sleep(0.02)


def _finish(proc: subprocess.Popen) -> None:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reference")
    _finish(_run_child(tmp, "ref"))
    return torch.load(tmp / "ref.pt", weights_only=True)


def _epoch_of(path: Path) -> int:
    try:
        return load_checkpoint(path)["epoch"]
    except ValueError:
        return -1


@pytest.mark.parametrize("during_write", [False, True], ids=["between-epochs", "during-write"])
def test_sigkill_then_resume_is_bit_identical(tmp_path, uninterrupted, during_write):
    ckpt = tmp_path / "run.ckpt"
    env = {"SLOW_SAVE": "1"} if during_write else {"SLOW_EPOCH": "1"}
    proc = _run_child(tmp_path, "run", env)
    _wait_for(lambda: _epoch_of(ckpt) >= 2)
    if during_write:  # wait until the next checkpoint is half written, then kill
        tmp_file = tmp_path / f".run.ckpt.tmp-{proc.pid}"
        _wait_for(tmp_file.exists)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    survivor = load_checkpoint(ckpt)  # the last complete checkpoint still reads
    assert 2 <= survivor["epoch"] < 8
    # resume (a new process, the same command) and compare with the uninterrupted run
    _finish(_run_child(tmp_path, "run"))
    resumed = torch.load(tmp_path / "run.pt", weights_only=True)
    assert resumed.keys() == uninterrupted.keys()
    for key in resumed:
        assert torch.equal(resumed[key], uninterrupted[key]), key


def test_resume_with_other_settings_or_another_model_is_refused(tmp_path):
    x = torch.randn(200, 2)
    path = tmp_path / "a.ckpt"
    pf.fit(pf.maf(2, layers=1, hidden=(8,)), nll, x, max_epochs=2, seed=0, checkpoint=path)
    with pytest.raises(ValueError, match="batch_size"):
        pf.fit(pf.maf(2, layers=1, hidden=(8,)), nll, x, batch_size=32, seed=0, resume=path)
    with pytest.raises(ValueError, match="does not match this model"):
        pf.fit(pf.maf(2, layers=2, hidden=(8,)), nll, x, max_epochs=2, seed=0, resume=path)


def test_corrupt_truncated_and_foreign_checkpoints_are_clear_errors(tmp_path):
    x = torch.randn(100, 2)
    path = tmp_path / "a.ckpt"
    pf.fit(pf.maf(2, layers=1, hidden=(8,)), nll, x, max_epochs=1, seed=0, checkpoint=path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a readable pyroflows checkpoint"):
        load_checkpoint(path)
    torch.save({"format": "other"}, path)
    with pytest.raises(ValueError, match="not a pyroflows checkpoint"):
        load_checkpoint(path)
    torch.save({"format": "pyroflows.checkpoint", "version": 7}, path)
    with pytest.raises(ValueError, match="version 7"):
        load_checkpoint(path)


def test_a_crafted_pickle_never_executes(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.ckpt"
    torch.save({"format": "pyroflows.checkpoint", "version": 1, "x": Evil()}, path)
    with pytest.raises(ValueError):
        load_checkpoint(path)
    assert not marker.exists()


def test_atomic_save_into_a_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        atomic_save({"a": 1}, tmp_path / "missing" / "x.ckpt")


def test_the_loss_state_is_checkpointed(tmp_path):
    """An annealed reverse KL resumes at the temperature it had reached."""
    path = tmp_path / "vi.ckpt"
    target = lambda z: -0.5 * (z**2).sum(-1)  # noqa: E731
    loss = ReverseKL(target, num_samples=16, anneal_steps=100)
    kw = dict(steps_per_epoch=10, seed=0, patience=None, checkpoint=path)
    pf.fit(pf.maf(2, layers=1, hidden=(8,)), loss, max_epochs=3, **kw)
    assert loss.calls == 30
    again = ReverseKL(target, num_samples=16, anneal_steps=100)
    pf.fit(pf.maf(2, layers=1, hidden=(8,)), again, max_epochs=5, resume=path, **kw)
    assert again.calls == 50


def test_a_dataloader_streams_batches_and_an_iterable_needs_steps():
    x = torch.randn(3000, 2) * 2 + 1
    flow = pf.maf(2, layers=1, hidden=(8,))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size=250)
    hist = pf.fit(flow, nll, loader, loader, max_epochs=30, lr=1e-2, seed=0, progress=False)
    assert hist.steps == 30 * 12
    mle = torch.distributions.Normal(x.mean(0), x.std(0)).log_prob(x).sum(-1).mean()
    assert -hist.best_loss == pytest.approx(mle.item(), abs=0.02)

    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            for start in range(0, 3000, 500):
                yield x[start : start + 500]

    with pytest.raises(ValueError, match="steps_per_epoch"):
        pf.fit(pf.maf(2, layers=1, hidden=(8,)), nll, Stream(), schedule="cosine", max_epochs=2)
    hist = pf.fit(pf.maf(2, layers=1, hidden=(8,)), nll, Stream(), max_epochs=2, steps_per_epoch=6)
    assert hist.steps == 12


# The child runs the command line (flow auto: two members, one checkpoint file each); SLOW
# makes every epoch pause so that the parent can kill it in the middle of the second member.
CLI_CHILD = textwrap.dedent(
    """
    import os, sys, time
    import torch
    torch.set_num_threads(1)
    import pyroflows.density as density
    from pyroflows.cli import main

    folder = sys.argv[1]
    real_fit = density.fit
    def logged_fit(*args, **kwargs):  # log the epochs this process trains, per member
        def log(epoch, history):
            with open(f"{folder}/epochs.txt", "a") as handle:
                handle.write(f"{kwargs['desc']} {epoch}\\n")
            if os.environ.get("SLOW"):
                time.sleep(0.2)
        return real_fit(*args, callback=log, **kwargs)
    density.fit = logged_fit
    sys.exit(main(["fit", f"{folder}/data.csv", "--out", f"{folder}/{sys.argv[2]}.pt",
                   "--epochs", "6", "--batch-size", "64", "--layers", "2", "--hidden", "16",
                   "--checkpoint", f"{folder}/run.ckpt", "--resume", f"{folder}/run.ckpt",
                   "--no-progress"]))
    """
)


def _cli_child(folder: Path, name: str, env: dict | None = None) -> subprocess.Popen:
    script = folder / "cli_child.py"
    script.write_text(CLI_CHILD)
    return subprocess.Popen(
        [sys.executable, str(script), str(folder), name],
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def test_the_estimator_and_cli_resume_a_killed_auto_fit_bit_identically(tmp_path):
    """``pyroflows fit --checkpoint --resume`` killed with SIGKILL while the second member of
    ``flow="auto"`` trains: the first member is not trained again, the second continues, and
    the saved model equals that of a run without interruption."""
    rng = np.random.default_rng(0)
    data = np.concatenate([rng.normal(-2, 0.5, (300, 2)), rng.normal(2, 0.5, (300, 2))])
    reference, interrupted = tmp_path / "reference", tmp_path / "interrupted"
    for folder in (reference, interrupted):
        folder.mkdir()
        np.savetxt(folder / "data.csv", data, delimiter=",")
    _finish(_cli_child(reference, "model"))
    assert (reference / "run.nsf-gmm.ckpt").exists() and (reference / "run.nsf.ckpt").exists()
    assert not (reference / "run.ckpt").exists()

    proc = _cli_child(interrupted, "model", {"SLOW": "1"})
    second = interrupted / "run.nsf.ckpt"
    _wait_for(lambda: _epoch_of(second) >= 2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first_done = load_checkpoint(interrupted / "run.nsf-gmm.ckpt")
    killed_at = load_checkpoint(second)["epoch"]
    assert 2 <= killed_at < 6
    (interrupted / "epochs.txt").unlink()
    _finish(_cli_child(interrupted, "model"))
    # the finished member was restored, not retrained; the second went on from its checkpoint
    again = load_checkpoint(interrupted / "run.nsf-gmm.ckpt")
    assert again["epoch"] == first_done["epoch"]
    trained = (interrupted / "epochs.txt").read_text().split("\n")[:-1]
    assert trained and all(line.startswith("fit nsf ") for line in trained), trained
    assert int(trained[0].split()[-1]) == killed_at + 1, (trained, killed_at)
    a = DensityEstimator.load(reference / "model.pt")
    b = DensityEstimator.load(interrupted / "model.pt")
    assert a.member_ == b.member_
    sa, sb = a.flow_.state_dict(), b.flow_.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key
    np.testing.assert_array_equal(a.score_samples(data[:50]), b.score_samples(data[:50]))


def test_estimator_checkpoint_options_are_checked_before_any_work(tmp_path):
    X = np.random.default_rng(0).normal(size=(100, 2))
    est = DensityEstimator(flow="maf", layers=1, hidden=(8,), max_epochs=2, random_state=None)
    with pytest.raises(ValueError, match="random_state"):
        est.fit(X, checkpoint=tmp_path / "a.ckpt")
    est = DensityEstimator(flow="maf", layers=1, hidden=(8,), max_epochs=2)
    with pytest.raises(ValueError, match="checkpoint_every"):
        est.fit(X, checkpoint=tmp_path / "a.ckpt", checkpoint_every=0)
    with pytest.raises(TypeError, match="resume must be a path"):
        est.fit(X, resume=3)
    assert not hasattr(est, "flow_") and not list(tmp_path.iterdir())
    # a single family writes the path itself; resuming a finished run returns the same model
    path = tmp_path / "maf.ckpt"
    first = est.fit(X, checkpoint=path).flow_.state_dict()
    assert path.exists()
    again = DensityEstimator(flow="maf", layers=1, hidden=(8,), max_epochs=2)
    second = again.fit(X, checkpoint=path, resume=path).flow_.state_dict()
    for key in first:
        assert torch.equal(first[key], second[key]), key
