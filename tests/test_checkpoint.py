"""Checkpoints of the shared loop: atomic writes, safe reads, bit-identical resume after a
SIGKILL (also in the middle of a checkpoint write), and data that stream from a DataLoader."""

from __future__ import annotations

import os
import signal
import subprocess
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import pyroflows as pf
from pyroflows.checkpoint import atomic_save, load_checkpoint
from pyroflows.density import DensityEstimator
from pyroflows.losses import ReverseKL, nll

from conftest import epoch_of, finish, flip_a_byte_inside_the_largest_tensor, spawn, wait_for

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
    return spawn(script, tmp_path / f"{name}.ckpt", tmp_path / f"{name}.pt", env=env)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reference")
    finish(_run_child(tmp, "ref"))
    return torch.load(tmp / "ref.pt", weights_only=True)


@pytest.mark.parametrize("during_write", [False, True], ids=["between-epochs", "during-write"])
def test_sigkill_then_resume_is_bit_identical(tmp_path, uninterrupted, during_write):
    ckpt = tmp_path / "run.ckpt"
    env = {"SLOW_SAVE": "1"} if during_write else {"SLOW_EPOCH": "1"}
    proc = _run_child(tmp_path, "run", env)
    wait_for(lambda: epoch_of(ckpt) >= 2)
    if during_write:  # wait until the next checkpoint is half written, then kill
        tmp_file = tmp_path / f".run.ckpt.tmp-{proc.pid}"
        wait_for(tmp_file.exists)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    survivor = load_checkpoint(ckpt)  # the last complete checkpoint still reads
    assert 2 <= survivor["epoch"] < 8
    # resume (a new process, the same command) and compare with the uninterrupted run
    finish(_run_child(tmp_path, "run"))
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


def test_checkpoint_with_an_older_layer_layout_resumes(tmp_path):
    # coupling layers of earlier versions saved a derived ``merge`` buffer; their own loader
    # drops it, and resuming must go through that loader rather than refuse the extra key
    x = torch.randn(200, 4)
    path = tmp_path / "old.ckpt"
    pf.fit(pf.realnvp(4, layers=2, hidden=(8,)), nll, x, max_epochs=2, seed=0, checkpoint=path)
    blob = load_checkpoint(path)
    for part in ("model", "best_state"):
        if blob[part] is not None:
            blob[part] = {**blob[part], "transforms.0.merge": torch.arange(4)}
    atomic_save(blob, path)
    flow = pf.realnvp(4, layers=2, hidden=(8,))
    history = pf.fit(flow, nll, x, max_epochs=4, seed=0, resume=path, checkpoint=path)
    assert len(history.train_loss) == 4
    assert "transforms.0.merge" not in flow.state_dict()


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
    def logged_fit(*args, callback=None, **kwargs):  # log the epochs trained, per member
        def log(epoch, history):
            with open(f"{folder}/epochs.txt", "a") as handle:
                handle.write(f"{kwargs['desc']} {epoch}\\n")
            if os.environ.get("SLOW"):
                time.sleep(0.2)
            return callback(epoch, history) if callback is not None else None
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
    return spawn(script, folder, name, env=env)


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
    finish(_cli_child(reference, "model"))
    assert (reference / "run.nsf-gmm.ckpt").exists() and (reference / "run.nsf.ckpt").exists()
    assert not (reference / "run.ckpt").exists()

    proc = _cli_child(interrupted, "model", {"SLOW": "1"})
    second = interrupted / "run.nsf.ckpt"
    wait_for(lambda: epoch_of(second) >= 2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first_done = load_checkpoint(interrupted / "run.nsf-gmm.ckpt")
    killed_at = load_checkpoint(second)["epoch"]
    assert 2 <= killed_at < 6
    (interrupted / "epochs.txt").unlink()
    finish(_cli_child(interrupted, "model"))
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


# -- reliability: checksums, temporary files, all-or-nothing resume -----------------------------
def test_flipped_bytes_in_a_stored_tensor_are_a_clear_error(tmp_path):
    """Defect: ``torch.load`` does not check the zip's CRC-32, so a checkpoint whose tensor
    bytes were altered loaded silently, with other weights."""
    x = torch.randn(100, 2)
    path = tmp_path / "flipped.ckpt"
    pf.fit(pf.maf(2, layers=1, hidden=(8,)), nll, x, max_epochs=1, seed=0, checkpoint=path)
    flip_a_byte_inside_the_largest_tensor(path)
    torch.load(path, weights_only=True)  # torch alone reads it (with other weights)
    with pytest.raises(ValueError, match=r"flipped\.ckpt is a corrupt checkpoint.*checksum"):
        load_checkpoint(path)
    flow = pf.maf(2, layers=1, hidden=(8,))
    before = {k: v.clone() for k, v in flow.state_dict().items()}
    with pytest.raises(ValueError, match="corrupt"):
        pf.fit(flow, nll, x, max_epochs=2, seed=0, resume=path)
    for key, value in flow.state_dict().items():
        assert torch.equal(value, before[key]), key


class _Boom(RuntimeError):
    pass


@pytest.mark.parametrize("failure", ["unpicklable", "runtime-error", "keyboard-interrupt"])
def test_atomic_save_removes_its_temporary_file_on_any_failure(tmp_path, monkeypatch, failure):
    """Defect: only an ``OSError`` removed the temporary file; a pickling error, any other
    exception or a KeyboardInterrupt left a ``.x.ckpt.tmp-PID`` behind."""
    import pyroflows.checkpoint as ck

    path = tmp_path / "x.ckpt"
    atomic_save({"a": torch.zeros(3)}, path)
    obj: dict = {"a": torch.ones(3)}
    expected: type[BaseException] = Exception
    if failure == "unpicklable":
        obj["f"] = lambda: 0  # a local lambda cannot be pickled
    else:
        real_save = ck.torch.save
        error = _Boom if failure == "runtime-error" else KeyboardInterrupt
        expected = error

        def failing_save(o, handle):
            real_save(o, handle)  # the temporary file is written, then the failure
            raise error("interrupted")

        monkeypatch.setattr(ck.torch, "save", failing_save)
    with pytest.raises(expected):
        atomic_save(obj, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.ckpt"]
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.zeros(3))


def _linear_loss(model, batch):
    return model(batch[0]).pow(2).mean()


def _refused_resume_case(case: str, tmp_path: Path):
    """(the model the checkpoint was written with, the model that resumes, fit's keywords,
    the checkpoint path)."""
    torch.manual_seed(0)
    kw: dict = dict(max_epochs=2, seed=0, progress=False)
    path = tmp_path / f"{case}.ckpt"
    if case == "missing-keys":  # one layer more: its keys are missing from the checkpoint
        return pf.maf(2, layers=1, hidden=(8,)), pf.maf(2, layers=2, hidden=(8,)), nll, kw, path
    first = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.Linear(4, 2))
    if case == "wrong-shapes":  # the first layer matches, the second has other shapes
        second = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.Linear(4, 3))
    else:
        second = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.Linear(4, 2))
    if case == "frozen-parameter":  # the model's state fits, the optimiser's does not
        second[1].bias.requires_grad_(False)
    return first, second, _linear_loss, kw, path


@pytest.mark.parametrize(
    "case", ["missing-keys", "wrong-shapes", "frozen-parameter", "foreign-best-state"]
)
def test_a_refused_resume_leaves_the_model_as_it_was(tmp_path, case):
    """Defect: ``load_state_dict`` copied the matching entries before raising (and a model
    state that fits was loaded before the optimiser state that does not), so a refused resume
    left the model partly or wholly overwritten by the checkpoint."""
    first, second, loss, kw, path = _refused_resume_case(case, tmp_path)
    x = torch.randn(64, 2)
    val = torch.randn(32, 2) if case == "foreign-best-state" else None
    pf.fit(first, loss, x, val, checkpoint=path, **kw)
    if case == "foreign-best-state":  # a damaged best state, found only at the end before
        blob = load_checkpoint(path)
        blob["best_state"] = {k: v[:1] for k, v in blob["best_state"].items()}
        atomic_save(blob, path)
        kw["max_epochs"] = 4
    before = {k: v.clone() for k, v in second.state_dict().items()}
    with pytest.raises(ValueError, match="does not match this model"):
        pf.fit(second, loss, x, val, resume=path, **kw)
    after = second.state_dict()
    assert after.keys() == before.keys()
    for key in before:
        assert torch.equal(after[key], before[key]), key


def test_a_loss_state_that_does_not_load_undoes_the_whole_restore(tmp_path):
    """What the checks cannot foresee (here a loss state its ``load_state_dict`` refuses,
    after the model state was loaded) is undone: the model and the loss are left as they
    were, and the error is the clear ``ValueError`` of a checkpoint that does not fit."""
    path = tmp_path / "vi.ckpt"
    target = lambda z: -0.5 * (z**2).sum(-1)  # noqa: E731
    kw = dict(steps_per_epoch=5, seed=0, patience=None, progress=False)
    pf.fit(pf.maf(2, layers=1, hidden=(8,)), ReverseKL(target, 8, 100), max_epochs=2,
           checkpoint=path, **kw)  # fmt: skip
    blob = load_checkpoint(path)
    blob["loss"] = {"not calls": 1}
    atomic_save(blob, path)
    flow, loss = pf.maf(2, layers=1, hidden=(8,)), ReverseKL(target, 8, 100)
    before = {k: v.clone() for k, v in flow.state_dict().items()}
    with pytest.raises(ValueError, match="does not match this model"):
        pf.fit(flow, loss, max_epochs=3, resume=path, **kw)
    assert loss.calls == 0
    for key, value in flow.state_dict().items():
        assert torch.equal(value, before[key]), key


@pytest.mark.parametrize(
    "change",
    ["one value", "row order", "other rows", "validation rows"],
)
def test_a_checkpoint_is_never_resumed_for_other_data(tmp_path, change):
    x = torch.randn(200, 2)
    v = torch.randn(50, 2)
    path = tmp_path / "a.ckpt"
    kw = dict(max_epochs=2, seed=0, batch_size=64)
    pf.fit(pf.maf(2, layers=1, hidden=(8,)), nll, x, v, checkpoint=path, **kw)
    x2, v2 = x.clone(), v.clone()
    if change == "one value":
        x2[17, 1] += 1e-3
    elif change == "row order":
        x2 = x2.flip(0)
    elif change == "other rows":
        x2 = torch.randn(200, 2)
    else:
        v2[0, 0] = 5.0
    flow = pf.maf(2, layers=1, hidden=(8,))
    before = {k: t.clone() for k, t in flow.state_dict().items()}
    key = "val_data" if change == "validation rows" else "data"
    with pytest.raises(ValueError, match=f"{key} \\(written for other"):
        pf.fit(flow, nll, x2, v2, resume=path, **kw)
    assert all(torch.equal(t, before[k]) for k, t in flow.state_dict().items())
    # the same data resume (and the checkpoint of a finished run loads its final state)
    hist = pf.fit(pf.maf(2, layers=1, hidden=(8,)), nll, x, v, resume=path, **kw)
    assert hist.stop_reason == "max_epochs" and len(hist.train_loss) == 2


def test_a_callers_fingerprint_is_stored_and_compared(tmp_path):
    path = tmp_path / "a.ckpt"
    x = torch.randn(100, 2)
    kw = dict(max_epochs=1, seed=0)
    pf.fit(pf.maf(2, layers=1, hidden=(8,)), nll, x, checkpoint=path, fingerprint={"m": "a"}, **kw)
    with pytest.raises(ValueError, match="m \\(checkpoint 'a', now 'b'\\)"):
        pf.fit(pf.maf(2, layers=1, hidden=(8,)), nll, x, resume=path, fingerprint={"m": "b"}, **kw)
    pf.fit(pf.maf(2, layers=1, hidden=(8,)), nll, x, resume=path, fingerprint={"m": "a"}, **kw)
    with pytest.raises(ValueError, match="the loop's own"):
        pf.fit(pf.maf(2, layers=1, hidden=(8,)), nll, x, fingerprint={"data": 1}, **kw)
    with pytest.raises(TypeError, match="fingerprint"):
        pf.fit(pf.maf(2, layers=1, hidden=(8,)), nll, x, fingerprint=[1], **kw)


def _scaled_nll(model, batch, weight=None):
    return 2.0 * nll(model, batch, weight)


def test_a_checkpoint_is_never_resumed_under_another_loss(tmp_path):
    """Resuming under another objective would let early stopping and the best state compare
    losses of two kinds; the loss is recorded by name and compared."""
    import functools

    x = torch.randn(200, 2)
    path = tmp_path / "a.ckpt"
    kw = dict(max_epochs=2, seed=0, batch_size=64)
    first = pf.fit(pf.maf(2, layers=1, hidden=(8,)), nll, x, checkpoint=path, **kw)
    flow = pf.maf(2, layers=1, hidden=(8,))
    before = {k: t.clone() for k, t in flow.state_dict().items()}
    with pytest.raises(ValueError, match="loss_fn \\(checkpoint 'pyroflows.train.losses.nll'"):
        pf.fit(flow, _scaled_nll, x, resume=path, **kw)
    with pytest.raises(ValueError, match="loss_fn .*partial"):
        pf.fit(flow, functools.partial(nll, weight=None), x, resume=path, **kw)
    assert all(torch.equal(t, before[k]) for k, t in flow.state_dict().items())
    # the same loss resumes, also weighted (the weights are compared as data)
    hist = pf.fit(flow, nll, x, resume=path, **{**kw, "max_epochs": 3})
    assert len(hist.train_loss) == 3
    # a checkpoint written before losses were recorded resumes with any loss
    blob = load_checkpoint(path)
    del blob["fingerprint"]["loss_fn"]
    atomic_save(blob, path)
    hist = pf.fit(pf.maf(2, layers=1, hidden=(8,)), _scaled_nll, x, resume=path,
                  **{**kw, "max_epochs": 3})  # fmt: skip
    assert hist.train_loss[:2] == first.train_loss and len(hist.train_loss) == 3
    with pytest.raises(ValueError, match="loop's own"):
        pf.fit(flow, nll, x, fingerprint={"loss_fn": "mine"}, **kw)


@pytest.mark.parametrize("limit", ["max_epochs", "max_steps"])
def test_a_checkpoint_that_ran_longer_than_asked_is_refused(tmp_path, limit):
    """A model trained for more epochs (steps) than ``max_epochs`` (``max_steps``) asks for
    is not returned as if it had been trained for that many."""
    x = torch.randn(200, 2)
    path = tmp_path / "a.ckpt"
    pf.fit(pf.maf(2, layers=1, hidden=(8,)), nll, x, max_epochs=3, seed=0, batch_size=64,
           checkpoint=path)  # fmt: skip
    fewer = {"max_epochs": 2} if limit == "max_epochs" else {"max_epochs": 3, "max_steps": 5}
    done = "3 epochs" if limit == "max_epochs" else "12 steps"
    with pytest.raises(ValueError, match=f"already run {done}, more than {limit}="):
        pf.fit(pf.maf(2, layers=1, hidden=(8,)), nll, x, seed=0, batch_size=64, resume=path,
               **fewer)  # fmt: skip
    # as many as were run is the finished run itself
    hist = pf.fit(pf.maf(2, layers=1, hidden=(8,)), nll, x, max_epochs=3, seed=0,
                  batch_size=64, resume=path)  # fmt: skip
    assert len(hist.train_loss) == 3
