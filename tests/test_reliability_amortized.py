"""Reliability of ``AmortizedPosterior.fit`` (offline from a simulation budget, online with
fresh simulations): checkpoints and bit-identical resume (in process and in a new process
after a SIGKILL), seeded determinism of the simulations as well as the training, bad input
refused before anything is simulated or changed, and safe loading of saved posteriors."""

from __future__ import annotations

import copy
import os
import random
import signal
import subprocess
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pyro.distributions as dist
import pytest
import torch

import pyroflows.checkpoint
from pyroflows.amortized import AmortizedPosterior
from pyroflows.checkpoint import load_checkpoint
from pyroflows.nn.summary import MLPSummary

from conftest import (
    Interrupted,
    epoch_of,
    finish,
    interrupt_at,
    largest_tensor_bytes,
    spawn,
    wait_for,
)

torch.set_num_threads(1)

A = torch.tensor([[1.0, 0.5], [-0.3, 1.0]])


def simulator(theta):
    return theta @ A.T + 0.5 * torch.randn_like(theta)


def prior():
    return dist.Normal(torch.zeros(2), 1.0).to_event(1)


def make_post(sim=simulator, **kwargs) -> AmortizedPosterior:
    return AmortizedPosterior(
        prior=prior(), simulator=sim, flow="maf", flow_kwargs=dict(layers=1, hidden=(8,)),
        **kwargs,
    )  # fmt: skip


#: 360 training simulations in batches of 100: 4 epochs of 4 steps
OFFLINE = dict(num_simulations=400, max_epochs=4, batch_size=100, seed=5, progress=False,
               recipe="one_phase")  # fmt: skip
#: 4 epochs of 10 steps, 50 fresh simulations each, 100 validation simulations
ONLINE = dict(simulate_online=True, steps=40, steps_per_epoch=10, batch_size=50,
              num_validation=100, seed=5, progress=False)  # fmt: skip
MODES = {"offline": OFFLINE, "online": ONLINE}
#: the same run stopped after 2 epochs (a shorter budget, resumed with the full one; with a
#: constant rate: a cosine over another number of epochs is another run, refused on resume)
SHORTER = {"offline": dict(max_epochs=2), "online": dict(steps=20)}


def state_of(post: AmortizedPosterior) -> dict:
    """Everything a fit may change, copied."""
    return {
        "estimator": None if post.estimator is None else copy.deepcopy(post.estimator.state_dict()),
        "theta_pre": None if post.theta_pre is None else copy.deepcopy(post.theta_pre.state_dict()),
        "x_pre": None if post.x_pre is None else copy.deepcopy(post.x_pre.state_dict()),
        "space": None if post.space is None else post.space.state(),
        "x_shape": post.x_shape,
        "summary": post.summary,
        "dropped": post.dropped,
        "history": None if post.history is None else copy.deepcopy(post.history.as_dict()),
    }


def assert_same(a, b) -> None:
    """Recursive equality, tensors bit for bit."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys()
        for key in a:
            try:
                assert_same(a[key], b[key])
            except AssertionError as error:
                raise AssertionError(f"{key}: {error}") from None
    elif isinstance(a, float) and isinstance(b, float) and np.isnan(a) and np.isnan(b):
        pass
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for u, v in zip(a, b, strict=True):
            assert_same(u, v)
    else:
        assert a == b or a is b, (a, b)


def trained(post: AmortizedPosterior) -> dict:
    """The networks and the preprocessing of a fitted posterior."""
    state = state_of(post)
    return {k: state[k] for k in ("estimator", "theta_pre", "x_pre")}


def x_loc(post: AmortizedPosterior) -> torch.Tensor:
    """The mean of the data the posterior standardises with (set by its simulations)."""
    return post.x_pre.state_dict()["transforms.0.loc"]


# -- checkpoint and resume ------------------------------------------------------------------
@pytest.mark.parametrize("how", ["callback-raises", "shorter-run"])
@pytest.mark.parametrize("mode", MODES)
def test_interrupted_fit_resumes_bit_identical(tmp_path, mode, how):
    options = MODES[mode]
    if how == "shorter-run":  # a longer budget changes a cosine schedule: a constant rate
        options = {**options, "schedule": None}
    reference = make_post().fit(**options)
    path = tmp_path / "post.ckpt"
    torch.manual_seed(99)  # another global state: the seed alone must fix the simulations
    if how == "callback-raises":  # an exception after epoch 2, before its checkpoint
        with pytest.raises(Interrupted):
            make_post().fit(**options, checkpoint=path, callback=interrupt_at(2))
        assert load_checkpoint(path)["epoch"] == 1
    else:
        make_post().fit(**{**options, **SHORTER[mode]}, checkpoint=path)
        assert load_checkpoint(path)["epoch"] == 2
    resumed = make_post().fit(**options, checkpoint=path, resume=path)  # a new posterior
    assert len(resumed.history.train_loss) == 4
    assert resumed.history.steps == {"offline": 16, "online": 40}[mode]
    assert_same(trained(resumed), trained(reference))
    assert_same(resumed.history.val_loss, reference.history.val_loss)


def test_an_auto_fit_stopped_in_its_second_family_resumes_bit_identical(tmp_path):
    """``flow="auto"`` checkpoints each family to its own file: stopped during the second
    family, a new posterior resumed from the same path loads the finished first family
    without training it again, finishes the second and keeps the same one."""

    def auto_post() -> AmortizedPosterior:
        return AmortizedPosterior(
            prior=prior(), simulator=simulator, flow_kwargs=dict(layers=1, hidden=(8,))
        )

    reference = auto_post().fit(**OFFLINE)
    path = tmp_path / "post.ckpt"
    epochs = []

    def stop_in_the_second_family(epoch, history):
        epochs.append(epoch)
        if len(epochs) == OFFLINE["max_epochs"] + 2:  # the second family's epoch 1
            raise Interrupted

    with pytest.raises(Interrupted):
        auto_post().fit(**OFFLINE, checkpoint=path, callback=stop_in_the_second_family)
    assert load_checkpoint(tmp_path / "post.realnvp.ckpt")["epoch"] == 1
    first = load_checkpoint(tmp_path / "post.nsf.ckpt")
    resumed = auto_post().fit(**OFFLINE, checkpoint=path, resume=path)
    assert_same(load_checkpoint(tmp_path / "post.nsf.ckpt")["epoch"], first["epoch"])
    assert resumed.flow_name == reference.flow_name
    for got, want in zip(resumed.candidates, reference.candidates, strict=True):
        assert (got["flow"], got["best_loss"]) == (want["flow"], want["best_loss"])
    assert_same(trained(resumed), trained(reference))
    assert_same(resumed.history.val_loss, reference.history.val_loss)


# The child fits the posterior of this module with a checkpoint every epoch (each epoch
# slowed by a sleep in the callback when asked to, so that the parent can kill it between
# epochs) and saves it.
CHILD = textwrap.dedent(
    """
    import sys, time
    import torch
    torch.set_num_threads(1)
    sys.path.insert(0, {tests!r})
    from test_reliability_amortized import MODES, make_post

    ckpt, out, mode, speed = sys.argv[1:]
    slow = (lambda epoch, history: time.sleep(0.3)) if speed == "slow" else None
    post = make_post().fit(**MODES[mode], checkpoint=ckpt, resume=ckpt, callback=slow)
    post.save(out)
    """
)


def _child(tmp_path: Path, mode: str, speed: str) -> subprocess.Popen:
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(tests=str(Path(__file__).parent)))
    return spawn(script, tmp_path / "run.ckpt", tmp_path / "final.pt", mode, speed)


@pytest.mark.parametrize("mode", MODES)
def test_sigkill_then_resume_in_a_new_process_is_bit_identical(tmp_path, mode):
    """The new process must simulate the same data (same preprocessing) before it resumes;
    the reference is fitted here, in this process, whatever its global random state."""
    reference = make_post().fit(**MODES[mode])
    proc = _child(tmp_path, mode, "slow")
    wait_for(lambda: epoch_of(tmp_path / "run.ckpt") >= 2, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL and not (tmp_path / "final.pt").exists()
    assert 2 <= load_checkpoint(tmp_path / "run.ckpt")["epoch"] < 4
    again = _child(tmp_path, mode, "fast")  # the same command, run again
    finish(again)
    resumed = AmortizedPosterior.load(tmp_path / "final.pt")
    assert_same(trained(resumed), trained(reference))
    assert_same(resumed.history.as_dict()["val_loss"], reference.history.val_loss)


# -- determinism ------------------------------------------------------------------------------
def numpy_simulator(theta):
    """A simulator drawing its noise from NumPy's global generator (not torch's)."""
    noise = np.random.normal(size=tuple(theta.shape))  # noqa: NPY002 (the global stream)
    return theta @ A.T + 0.5 * torch.as_tensor(noise, dtype=theta.dtype)


@pytest.mark.parametrize(
    ("mode", "sim"),
    [("offline", simulator), ("online", simulator), ("offline", numpy_simulator)],
    ids=["offline", "online", "offline-numpy-simulator"],
)
def test_same_seed_gives_bit_identical_posteriors(mode, sim):
    options = MODES[mode]
    torch.manual_seed(1)
    np.random.seed(1)  # noqa: NPY002
    a = make_post(sim).fit(**options)
    torch.manual_seed(2)
    np.random.seed(2)  # noqa: NPY002
    b = make_post(sim).fit(**options)
    assert_same(trained(a), trained(b))
    assert_same(a.history.train_loss, b.history.train_loss)
    x = torch.tensor([[0.3, -0.2], [1.0, 1.5]])
    assert torch.equal(a.sample(x, 20, seed=0), b.sample(x, 20, seed=0))
    other = make_post(sim).fit(**{**options, "seed": 6})
    assert not torch.equal(x_loc(other), x_loc(a))


@pytest.mark.parametrize("mode", MODES)
def test_a_seeded_fit_leaves_the_global_random_states_alone(mode):
    """Documented by pyroflows.train.fit (the loop) and AmortizedPosterior.fit (the draws
    before the loop: torch, NumPy and Python's random)."""
    torch.manual_seed(123)
    np.random.seed(123)  # noqa: NPY002
    random.seed(123)
    expected = (torch.rand(3), np.random.rand(3), random.random())  # noqa: NPY002
    torch.manual_seed(123)
    np.random.seed(123)  # noqa: NPY002
    random.seed(123)
    make_post(numpy_simulator).fit(**MODES[mode])
    after = (torch.rand(3), np.random.rand(3), random.random())  # noqa: NPY002
    assert torch.equal(after[0], expected[0])
    assert np.array_equal(after[1], expected[1]) and after[2] == expected[2]


def test_without_an_explicit_seed_the_simulations_follow_the_global_state():
    """Documented: only an explicit seed fixes the simulations (a second unseeded fit draws
    new ones); the global state then decides, as for any torch code."""
    unseeded = {k: v for k, v in OFFLINE.items() if k != "seed"}
    torch.manual_seed(7)
    a = make_post().fit(**unseeded)
    torch.manual_seed(8)
    b = make_post().fit(**unseeded)
    torch.manual_seed(7)
    c = make_post().fit(**unseeded)
    assert not torch.equal(x_loc(a), x_loc(b))
    assert_same(trained(a), trained(c))


def test_online_training_does_not_replay_the_validation_simulations():
    """The loop draws from torch's stream seeded with ``seed``: the validation set, drawn
    before it, comes from another one (else the first batches would repeat its rows)."""
    sim, calls = counting()
    seen = []
    make_post(lambda theta: seen.append(theta.clone()) or sim(theta)).fit(**ONLINE)
    validation, training = seen[0], torch.cat(seen[1:])
    assert len(validation) == 100 and len(training) == 40 * 50
    shared = (training[:, None, :] == validation[None, :, :]).all(-1).any()
    assert not bool(shared)


# -- bad input: observations --------------------------------------------------------------------
@pytest.fixture(scope="module")
def fitted():
    return make_post().fit(
        num_simulations=300, max_epochs=3, seed=0, progress=False, recipe="one_phase"
    )


OBSERVATION_CASES = {
    "complex-observation": (lambda p: p.sample(torch.zeros(2, dtype=torch.cfloat), 5), "real"),
    "text-observation": (lambda p: p.sample("x", 5), "x must be numeric"),
    "log-prob-theta-wrong-width": (
        lambda p: p.log_prob(torch.zeros(3), torch.zeros(2)),
        "theta must have 2 values in its last dimension",
    ),
    "log-prob-theta-complex": (
        lambda p: p.log_prob(torch.zeros(2, dtype=torch.cfloat), torch.zeros(2)),
        "theta must be real-valued",
    ),
}


@pytest.mark.parametrize("case", OBSERVATION_CASES, ids=list(OBSERVATION_CASES))
def test_bad_observations_are_clear_errors(fitted, case):
    call, message = OBSERVATION_CASES[case]
    before = state_of(fitted)
    with pytest.raises(ValueError, match=message):
        call(fitted)
    assert_same(state_of(fitted), before)


@pytest.mark.parametrize(
    "value", [1e30, -1e30, 3e38, 1e300, -1e300], ids=["1e30", "-1e30", "3e38", "1e300", "-1e300"]
)
def test_a_huge_finite_observation_gives_finite_draws_and_log_densities(fitted, value):
    """Documented handling: finite observations of any size are accepted; standardised in
    float64 and clamped to float32's range, the networks bound them: never NaN (1e300 used to
    overflow to inf and fail with an error about an internal 'context')."""
    x = torch.tensor([value, 0.5], dtype=torch.float64)
    draws = fitted.sample(x, 200, seed=0)
    assert draws.shape == (200, 2) and bool(torch.isfinite(draws).all())
    log_p = fitted.log_prob(torch.zeros(3, 2), x)
    assert bool(torch.isfinite(log_p).all()), log_p


def test_an_integer_observation_is_used_as_numbers(fitted):
    integer = torch.tensor([1, -2])
    assert torch.equal(
        fitted.sample(integer, 10, seed=0), fitted.sample(integer.double(), 10, seed=0)
    )


# -- bad input: training data ---------------------------------------------------------------------
def counting(sim=simulator):
    calls = []

    def wrapped(theta):
        calls.append(len(theta))
        return sim(theta)

    return wrapped, calls


THETA = prior().sample((50,))
X = simulator(THETA)

FIT_CASES = {
    "rows-differ": (dict(theta=THETA, x=X[:40]), "theta has 50 rows and x has 40"),
    "theta-wrong-width": (dict(theta=torch.zeros(50, 3), x=X), "theta must have 2 values per row"),
    "empty": (dict(theta=torch.zeros(0, 2), x=torch.zeros(0, 2)), "empty"),
    "no-rows-dimension": (dict(theta=torch.tensor(1.0), x=torch.tensor(1.0)), "leading dimension"),
    "single-row": (dict(theta=THETA[:1], x=X[:1]), "at least 2 valid simulations, got 1"),
    "complex-x": (dict(theta=THETA, x=X.to(torch.cfloat)), "x must be real-valued"),
    "complex-theta": (dict(theta=THETA.to(torch.cdouble), x=X), "theta must be real-valued"),
    "text-x": (dict(theta=THETA[:2], x=[["a", "b"], ["c", "d"]]), "x must be numeric"),
    "all-x-nan": (dict(theta=THETA, x=torch.full_like(X, float("nan"))), "all 50 simulations"),
    "theta-only": (dict(theta=THETA), "needs both theta and x"),
    "validation-fraction-one": (
        dict(theta=THETA, x=X, validation_fraction=1.0),
        "validation_fraction",
    ),
    "num-simulations-zero": (dict(num_simulations=0), "num_simulations must be a positive integer"),
    "num-simulations-float": (dict(num_simulations=2.5), "num_simulations must be a positive"),
    "num-simulations-bool": (dict(num_simulations=True), "num_simulations must be a positive"),
    "num-simulations-one": (dict(num_simulations=1), "at least 2 valid simulations, got 1"),
    "num-simulations-validation-fraction": (
        dict(num_simulations=50, validation_fraction=-0.1),
        "validation_fraction must lie in",
    ),
    "misspelt-training-option": (dict(num_simulations=50, max_epoch=3), "unknown training option"),
    "negative-lr": (dict(num_simulations=50, lr=-1.0), "lr"),
    "online-zero-batch": (dict(simulate_online=True, steps=5, batch_size=0), "batch_size"),
    "online-steps-zero": (dict(simulate_online=True, steps=0), "steps=<positive int>"),
    "online-num-validation-zero": (
        dict(simulate_online=True, steps=5, num_validation=0),
        "num_validation must be a positive integer",
    ),
    "online-steps-per-epoch-float": (
        dict(simulate_online=True, steps=5, steps_per_epoch=2.5),
        "steps_per_epoch must be a positive integer",
    ),
}
#: cases whose message comes after the simulations (which may run) or that are refused only
#: once the posterior knows the data's shape
AFTER_SIMULATION = {"num-simulations-one"}
EXCEPTIONS = {"misspelt-training-option": TypeError}


@pytest.mark.parametrize("state", ["fresh", "fitted"])
@pytest.mark.parametrize("case", FIT_CASES, ids=list(FIT_CASES))
def test_bad_fit_input_raises_before_anything_changes(case, state):
    """Each bad argument is a clear error, and the posterior is as it was (still unfitted, or
    with its networks, preprocessing, counts and history untouched); errors that do not need
    simulations come before any simulation."""
    kwargs, message = FIT_CASES[case]
    sim, calls = counting()
    post = make_post(sim)
    if state == "fitted":
        post.fit(THETA, X, max_epochs=1, seed=0, progress=False, recipe="one_phase")
    before = state_of(post)
    with pytest.raises(EXCEPTIONS.get(case, ValueError), match=message):
        offline = {} if kwargs.get("simulate_online") else {"max_epochs": 1, "recipe": "one_phase"}
        post.fit(**{"progress": False, **offline, **kwargs})
    assert_same(state_of(post), before)
    if case not in AFTER_SIMULATION:
        assert calls == []
    if state == "fresh":
        assert post.estimator is None and post.x_shape is None


def test_x_of_another_shape_than_the_first_fit_is_refused():
    post = make_post().fit(THETA, X, max_epochs=1, seed=0, progress=False, recipe="one_phase")
    before = state_of(post)
    with pytest.raises(ValueError, match=r"x must have event shape \(2,\)"):
        post.fit(THETA, torch.zeros(50, 3), max_epochs=1, progress=False, recipe="one_phase")
    assert_same(state_of(post), before)


def test_theta_outside_the_support_changes_no_count():
    """The NaN rows are not added to ``dropped`` when the fit is refused afterwards."""
    box = dist.Uniform(torch.zeros(2), torch.ones(2)).to_event(1)
    post = AmortizedPosterior(prior=box, flow="maf", flow_kwargs=dict(layers=1, hidden=(8,)))
    theta = box.sample((50,))
    x = theta + 0.1 * torch.randn(50, 2)
    x[0] = float("nan")
    theta[5] = 2.0  # outside (0, 1)
    with pytest.warns(RuntimeWarning, match="1 of 50 simulations"):
        with pytest.raises(ValueError, match="1 parameter draws lie outside the prior's support"):
            post.fit(theta, x, max_epochs=1, progress=False, recipe="one_phase")
    assert post.dropped == 0 and post.estimator is None


def test_integer_and_mixed_dtype_data_are_used_as_numbers():
    """Documented: integer (e.g. count) data and float64 parameters train exactly as their
    float values would."""
    counts = torch.poisson(X.abs() * 3).to(torch.int64)
    a = make_post().fit(
        THETA.double(), counts, max_epochs=2, seed=0, progress=False, recipe="one_phase"
    )
    b = make_post().fit(
        THETA, counts.float(), max_epochs=2, seed=0, progress=False, recipe="one_phase"
    )
    assert_same(trained(a), trained(b))
    flags = make_post().fit(THETA, X > 0, max_epochs=1, seed=0, progress=False, recipe="one_phase")
    assert flags.sample(torch.tensor([True, False]), 5, seed=0).shape == (5, 2)


def test_one_value_of_1e30_in_x_warns_and_never_gives_nan():
    """Documented handling: a few extreme values dominate the standardisation (the rest of
    the column looks constant to the float32 networks); a RuntimeWarning names the column,
    and the posterior stays finite."""
    theta = prior().sample((300,))
    x = simulator(theta)
    x[7, 1] = 1e30
    with pytest.warns(RuntimeWarning, match=r"x column 1: a few extreme values \(e.g. 1e\+30\)"):
        post = make_post().fit(theta, x, max_epochs=2, seed=0, progress=False, recipe="one_phase")
    obs = torch.tensor([[0.5, -1.0], [0.5, 1e30]])
    assert bool(torch.isfinite(post.sample(obs, 100, seed=0)).all())
    assert bool(torch.isfinite(post.log_prob(torch.zeros(2), obs)).all())


def test_heavy_tailed_data_do_not_warn():
    theta = prior().sample((2000,))
    x = theta + dist.Cauchy(0.0, 1.0).sample((2000, 2))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        make_post().fit(theta, x, max_epochs=1, seed=0, progress=False, recipe="one_phase")
    assert not [w for w in caught if "extreme values" in str(w.message)]


def test_online_simulations_with_nan_rows_are_skipped_counted_and_warned_once():
    def broken(theta):
        x = simulator(theta)
        x[::10, 0] = float("nan")
        return x

    post = make_post(broken)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        post.fit(**{**ONLINE, "steps": 20})
    messages = [str(w.message) for w in caught if "skipped" in str(w.message)]
    # 10 of the 100 validation simulations, 5 of each training batch of 50, 20 steps
    assert messages == [
        "110 simulations contained NaN or infinite values and were skipped during online training"
    ]
    assert post.dropped == 110
    assert np.isfinite(post.history.train_loss).all()


def test_online_prior_and_simulator_disagreeing_in_batch_size_changes_nothing():
    post = make_post(lambda theta: simulator(theta)[:-1])
    with pytest.raises(ValueError, match="disagree in batch size"):
        post.fit(**ONLINE)
    assert post.estimator is None and post.dropped == 0 and post.x_shape is None


def test_resuming_the_checkpoint_of_another_architecture_changes_nothing(tmp_path):
    path = tmp_path / "other.ckpt"
    other = AmortizedPosterior(prior=prior(), flow="maf", flow_kwargs=dict(layers=2, hidden=(8,)))
    theta = prior().sample((len(THETA),))  # other data (the same number of rows)
    # the same settings as the resume below (a cosine over 2 epochs): only the networks differ
    other.fit(
        theta,
        simulator(theta),
        max_epochs=2,
        seed=0,
        progress=False,
        checkpoint=path,
        recipe="one_phase",
    )
    post = make_post().fit(THETA, X, max_epochs=1, seed=0, progress=False, recipe="one_phase")
    before = state_of(post)
    # refused by the fingerprint (other simulations, another flow) before any weight is read
    with pytest.raises(ValueError, match="written with other settings: .*posterior_flow"):
        post.fit(THETA, X, max_epochs=2, seed=0, progress=False, resume=path, recipe="one_phase")
    # the first layer, the same in both, was not loaded before the mismatch was found
    assert_same(state_of(post), before)


# -- safe loading --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def saved(tmp_path_factory, fitted):
    path = tmp_path_factory.mktemp("saved") / "post.pt"
    fitted.save(path)
    return path


def _rewrite(saved: Path, tmp_path: Path, change) -> Path:
    blob = torch.load(saved, weights_only=True)
    change(blob)
    path = tmp_path / "changed.pt"
    torch.save(blob, path)
    return path


def _flip(data: bytes, where: int) -> bytes:
    out = bytearray(data)
    for i in range(where, where + 8):
        out[i] ^= 0xFF
    return bytes(out)


BYTES_CASES = {
    "truncated": (lambda data, path: data[: len(data) // 2], "is not a saved pyroflows"),
    "empty-file": (lambda data, path: b"", "is not a saved pyroflows"),
    "random-bytes": (lambda data, path: os.urandom(len(data)), "is not a saved pyroflows"),
    "flipped-tensor-bytes": (
        lambda data, path: _flip(data, largest_tensor_bytes(path)[0] + 8),
        "is corrupt: the bytes of archive/data/",
    ),
    "flipped-pickle-bytes": (lambda data, path: _flip(data, 200), "is corrupt"),
}


@pytest.mark.parametrize("case", BYTES_CASES, ids=list(BYTES_CASES))
def test_damaged_files_are_clear_errors(saved, tmp_path, case):
    """A tensor whose bytes were altered used to load silently with other weights (torch.load
    does not check the archive's CRC-32)."""
    damage, message = BYTES_CASES[case]
    path = tmp_path / "damaged.pt"
    path.write_bytes(damage(saved.read_bytes(), saved))
    with pytest.raises(ValueError, match=message):
        AmortizedPosterior.load(path)


def _drop(section: str | None, key: str):
    def change(blob):
        del (blob if section is None else blob[section])[key]

    return change


def _set(section: str, key: str, value):
    def change(blob):
        blob[section][key] = value

    return change


def _set_layers(blob):
    blob["config"]["flow_kwargs"]["layers"] = 2


BLOB_CASES = {
    "foreign-format": (lambda b: b.update(format="other"), "is not a saved pyroflows"),
    "not-a-dict": (lambda b: b.clear(), "is not a saved pyroflows"),
    "newer-version": (lambda b: b.update(version=2), r"format version 2.*upgrade pyroflows"),
    "older-version": (lambda b: b.update(version=0), "format version 0; this pyroflows reads"),
    "version-as-text": (lambda b: b.update(version="1"), "format version '1'"),
    "version-missing": (_drop(None, "version"), "format version None"),
    "config-missing": (_drop(None, "config"), "its 'config' entry is missing"),
    "state-missing": (_drop(None, "state"), "its 'state' entry is missing"),
    "config-lacks-flow": (_drop("config", "flow"), r"config lacks \['flow'\]"),
    "state-lacks-x-pre": (_drop("state", "x_pre"), r"state lacks \['x_pre'\]"),
    "config-other-layers": (_set_layers, "do not match the saved configuration"),
    "config-other-context-dim": (
        _set("config", "context_dim", 5),
        "do not match the saved configuration",
    ),
    "config-other-x-shape": (_set("config", "x_shape", [3]), "do not match the saved config"),
    "config-unknown-flow": (_set("config", "flow", "glow"), "flow must be .auto. or one of"),
    "estimator-tensor-of-other-shape": (
        lambda b: b["state"]["estimator"].update(
            {k: torch.zeros(1) for k in list(b["state"]["estimator"])[:1]}
        ),
        "do not match the saved configuration",
    ),
}


@pytest.mark.parametrize("case", BLOB_CASES, ids=list(BLOB_CASES))
def test_foreign_or_inconsistent_saves_are_clear_errors(saved, tmp_path, case):
    change, message = BLOB_CASES[case]
    with pytest.raises(ValueError, match=message):
        AmortizedPosterior.load(_rewrite(saved, tmp_path, change))


def test_a_summary_that_does_not_match_the_save_is_a_clear_error(saved):
    with pytest.raises(ValueError, match="or the summary passed"):
        AmortizedPosterior.load(saved, summary=MLPSummary(2, 4, hidden=(8,)))


def test_an_intact_save_loads_bit_identical(saved, fitted):
    loaded = AmortizedPosterior.load(saved)
    assert_same(trained(loaded), trained(fitted))


def test_a_crafted_pickle_never_executes(saved, tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = _rewrite(saved, tmp_path, lambda b: b["config"].update(summary=Evil()))
    with pytest.raises(ValueError, match=r"is not a saved pyroflows AmortizedPosterior \("):
        AmortizedPosterior.load(path)
    assert not marker.exists()


def test_a_failed_save_leaves_the_previous_file_intact(fitted, tmp_path, monkeypatch):
    path = tmp_path / "post.pt"
    fitted.save(path)
    good = path.read_bytes()

    def disk_full(obj, handle):
        handle.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pyroflows.checkpoint.torch, "save", disk_full)
    with pytest.raises(ValueError, match="No space left on device"):
        fitted.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["post.pt"]
    assert_same(trained(AmortizedPosterior.load(path)), trained(fitted))
