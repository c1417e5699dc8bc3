"""Reliability of ``FlowGuide.fit``: checkpoints and bit-identical resume (in process and in a
new process after a SIGKILL), seeded determinism, bad input refused before anything changes,
and persistence of the guide through its ``state_dict`` (FlowGuide has no save / load)."""

from __future__ import annotations

import os
import signal
import subprocess
import textwrap
from pathlib import Path

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO

from pyroflows.checkpoint import load_checkpoint
from pyroflows.vi import FlowGuide

from conftest import Interrupted, epoch_of, finish, interrupt_at, spawn, wait_for

torch.set_num_threads(1)

X = torch.randn(12, generator=torch.Generator().manual_seed(2)) + 1.0


def model(x):
    mu = pyro.sample("mu", dist.Normal(0.0, 2.0))
    s = pyro.sample("s", dist.LogNormal(0.0, 1.0))
    with pyro.plate("data", len(x)):
        pyro.sample("x", dist.Normal(mu, s), obs=x)


def make_guide(**kwargs) -> FlowGuide:
    return FlowGuide(model, **{"flow": "iaf", "layers": 2, "hidden": (8,), **kwargs})


#: 4 epochs of 100 steps (FlowGuide.fit runs min(steps, 100) steps per epoch)
FIT = dict(steps=400, num_particles=2, lr=1e-2, seed=3, progress=False)


def fitted(**kwargs) -> FlowGuide:
    guide = make_guide()
    guide.fit(X, **{**FIT, **kwargs})
    return guide


def snapshot(guide: FlowGuide) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in guide.state_dict().items()}


def assert_same_state(a, b) -> None:
    a = a if isinstance(a, dict) else a.state_dict()
    b = b if isinstance(b, dict) else b.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


# -- checkpoint and resume ------------------------------------------------------------------
#: the options of each run (new ones for each: an ELBO object keeps what it guessed)
RESUME_CASES = {
    "elbo-cosine-callback-raises": (lambda: dict(objective="elbo", schedule="cosine"), "callback"),
    "iwae-cosine-callback-raises": (lambda: dict(objective="iwae", schedule="cosine"), "callback"),
    "elbo-shorter-run-then-more-steps": (
        lambda: dict(objective="elbo", schedule="constant"),
        "shorter",
    ),
    "user-elbo-callback-raises": (
        lambda: dict(elbo=Trace_ELBO(num_particles=2, vectorize_particles=True)),
        "callback",
    ),
}


@pytest.mark.parametrize("case", RESUME_CASES, ids=list(RESUME_CASES))
def test_interrupted_fit_resumes_bit_identical(tmp_path, case):
    """A new ELBO guesses the plate nesting at its first step by drawing from the guide; a
    resumed run used to do it again, and ended elsewhere."""
    make_options, how = RESUME_CASES[case]
    reference = fitted(**make_options())
    path = tmp_path / "guide.ckpt"
    first = make_guide()
    if how == "callback":  # an exception after epoch 2, before its checkpoint is written
        with pytest.raises(Interrupted):
            first.fit(X, checkpoint=path, callback=interrupt_at(2), **FIT, **make_options())
        assert load_checkpoint(path)["epoch"] == 1
    else:  # a run of 2 epochs, continued to 4
        first.fit(X, checkpoint=path, **{**FIT, "steps": 200}, **make_options())
        assert load_checkpoint(path)["epoch"] == 2
    resumed = make_guide()  # a new guide, as in a new process
    history = resumed.fit(X, checkpoint=path, resume=path, **FIT, **make_options())
    assert history.steps == 400 and len(history.train_loss) == 4
    assert_same_state(resumed, reference)


def test_resuming_a_scheduled_run_with_more_steps_is_refused(tmp_path):
    """A warm-up + cosine schedule spans the run's steps: continuing a 200-step run to 400
    steps would restart the decay halfway; it is refused before the guide changes."""
    path = tmp_path / "guide.ckpt"
    make_guide().fit(X, checkpoint=path, **{**FIT, "steps": 200})
    resumed = make_guide()
    resumed.fit(X, **{**FIT, "steps": 1})  # set up, so that its state can be compared
    before = snapshot(resumed)
    with pytest.raises(ValueError, match=r"max_steps \(checkpoint 200, now 400\)"):
        resumed.fit(X, checkpoint=path, resume=path, **FIT)
    assert_same_state(resumed, before)


# The child fits the guide of this module with a checkpoint every epoch (each epoch slowed by
# a sleep in the callback when asked to, so that the parent can kill it between epochs).
CHILD = textwrap.dedent(
    """
    import sys, time
    import torch
    torch.set_num_threads(1)
    sys.path.insert(0, {tests!r})
    from test_reliability_vi import FIT, X, make_guide

    slow = (lambda epoch, history: time.sleep(0.3)) if sys.argv[3] == "slow" else None
    guide = make_guide()
    guide.fit(X, checkpoint=sys.argv[1], resume=sys.argv[1], callback=slow, **FIT)
    torch.save(guide.state_dict(), sys.argv[2])
    """
)


def _child(tmp_path: Path, speed: str) -> subprocess.Popen:
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(tests=str(Path(__file__).parent)))
    return spawn(script, tmp_path / "run.ckpt", tmp_path / "final.pt", speed)


def test_sigkill_then_resume_in_a_new_process_is_bit_identical(tmp_path):
    """The reference is fitted here, in this process: a seeded fit must not depend on the
    process (nor on its global random state) to be reproduced."""
    reference = fitted()
    proc = _child(tmp_path, "slow")
    wait_for(lambda: epoch_of(tmp_path / "run.ckpt") >= 2, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / "final.pt").exists()
    assert 2 <= load_checkpoint(tmp_path / "run.ckpt")["epoch"] < 4
    again = _child(tmp_path, "fast")  # the same command, run again
    finish(again)
    resumed = torch.load(tmp_path / "final.pt", weights_only=True)
    assert_same_state(resumed, reference)


# -- determinism ------------------------------------------------------------------------------
def test_same_seed_gives_bit_identical_parameters_whatever_the_global_state():
    short = dict(steps=100)
    torch.manual_seed(1)
    a = fitted(**short)
    torch.manual_seed(2)  # another global state, and the param store already holds a's
    b = fitted(**short)
    c = fitted(**short, seed=4)
    assert_same_state(a, b)
    assert not torch.equal(a.flow.transforms[-1].loc, c.flow.transforms[-1].loc)
    longer = fitted(steps=200)  # and the training itself moves the parameters
    assert not torch.equal(a.flow.transforms[-1].loc, longer.flow.transforms[-1].loc)


def test_a_seeded_fit_leaves_the_global_torch_random_state_alone():
    """Documented by pyroflows.train.fit (the loop runs in a forked RNG) and FlowGuide.fit
    (the set-up too)."""
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    fitted(steps=50)
    assert torch.equal(torch.rand(3), expected)


# -- bad input -------------------------------------------------------------------------------
CONSTRUCTOR_CASES = {
    "unknown-family": (dict(flow="glow"), ValueError, "flow family must be one of"),
    "family-not-a-name": (dict(flow=3), TypeError, "flow must be a family name"),
    "layers-zero": (dict(layers=0), ValueError, "layers must be a positive integer"),
    "layers-not-int": (dict(layers=2.5), ValueError, "layers must be a positive integer"),
    "hidden-empty": (dict(hidden=()), ValueError, "hidden must name at least one"),
    "hidden-negative": (dict(hidden=(8, -1)), ValueError, "hidden size must be a positive"),
    "hidden-text": (dict(hidden="big"), ValueError, "hidden size must be a positive"),
    "bins-zero": (dict(flow="nsf", bins=0), ValueError, "bins must be a positive integer"),
    "option-of-another-family": (dict(flow="iaf", coupling=True), ValueError, "coupling"),
    "init-scale-zero": (dict(init_scale=0.0), ValueError, "init_scale must be positive"),
    "affine-init-unknown": (dict(affine_init="map"), ValueError, "affine_init must be"),
}


@pytest.mark.parametrize("case", CONSTRUCTOR_CASES, ids=list(CONSTRUCTOR_CASES))
def test_bad_guide_options_are_refused_at_construction(case):
    kwargs, error, message = CONSTRUCTOR_CASES[case]
    rng = torch.get_rng_state()
    with pytest.raises(error, match=message):
        make_guide(**kwargs)
    assert list(pyro.get_param_store().keys()) == []
    assert torch.equal(torch.get_rng_state(), rng)  # no throwaway draws leak out


X_NAN = X.clone()
X_NAN[3] = float("nan")

FIT_CASES = {
    "steps-zero": (dict(steps=0), "steps must be a positive integer"),
    "steps-negative": (dict(steps=-5), "steps must be a positive integer"),
    "steps-float": (dict(steps=2.5), "steps must be a positive integer"),
    "steps-bool": (dict(steps=True), "steps must be a positive integer"),
    "steps-text": (dict(steps="100"), "steps must be a positive integer"),
    "num-particles-zero": (dict(num_particles=0), "num_particles must be a positive integer"),
    "unknown-objective": (dict(objective="kl"), "objective must be 'elbo' or 'iwae'"),
    "elbo-without-differentiable-loss": (dict(elbo=object()), "has no differentiable_loss"),
    "nan-in-model-argument": (dict(args=(X_NAN,)), r"model argument 0 contains NaN"),
    "nan-in-model-kwargs": (
        dict(args=(), model_kwargs={"x": X_NAN}),
        r"model keyword argument 'x' contains NaN",
    ),
    "nan-nested-in-a-list": (dict(args=([X_NAN],)), r"model argument 0 contains NaN"),
}


@pytest.mark.parametrize("set_up", [False, True], ids=["fresh-guide", "set-up-guide"])
@pytest.mark.parametrize("case", FIT_CASES, ids=list(FIT_CASES))
def test_bad_fit_arguments_raise_before_anything_changes(case, set_up):
    kwargs, message = dict(FIT_CASES[case][0]), FIT_CASES[case][1]
    args = kwargs.pop("args", (X,))
    kwargs = {**dict(steps=10, progress=False, seed=0), **kwargs}
    if case.startswith("nan-nested"):
        guide = FlowGuide(lambda xs: model(xs[0]), flow="iaf", layers=1, hidden=(8,))
        clean = ([X],)
    else:
        guide = make_guide()
        clean = (X,)
    if set_up:
        guide(*clean)
        before = snapshot(guide)
    with pytest.raises(ValueError, match=message):
        guide.fit(*args, **kwargs)
    if set_up:
        assert_same_state(guide, before)
    else:
        assert guide.prototype_trace is None and not hasattr(guide, "flow")


def test_an_infinite_model_argument_is_allowed():
    """Only NaN is refused: an infinite value can be a legitimate argument (a bound)."""

    def bounded(x, high):
        mu = pyro.sample("mu", dist.Normal(0.0, 2.0))
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(mu, 1.0), obs=x.clamp(max=high))

    guide = FlowGuide(bounded, flow="iaf", layers=1, hidden=(8,))
    history = guide.fit(X, torch.tensor(float("inf")), steps=20, seed=0, progress=False)
    assert len(history.train_loss) == 1 and torch.isfinite(torch.tensor(history.train_loss)).all()


def test_resuming_the_checkpoint_of_another_guide_is_refused_and_changes_nothing(tmp_path):
    path = tmp_path / "other.ckpt"
    other = FlowGuide(model, flow="iaf", layers=1, hidden=(8,))  # one IAF layer, not two
    other.fit(X, checkpoint=path, **{**FIT, "steps": 100})
    guide = make_guide()
    guide(X)
    before = snapshot(guide)
    # refused by the guide's fingerprint (its flow options) before anything is loaded
    with pytest.raises(ValueError, match="does not match this model|flow_options"):
        guide.fit(X, resume=path, **{**FIT, "steps": 100})
    # the layers both guides share were not loaded before the mismatch was found
    assert_same_state(guide, before)


# -- persistence (state_dict) -------------------------------------------------------------------
def test_state_dict_round_trips_through_a_file_into_a_new_guide(tmp_path):
    guide = fitted(steps=100)
    path = tmp_path / "guide.pt"
    torch.save(guide.state_dict(), path)
    state = torch.load(path, weights_only=True)
    fresh = make_guide()
    with pytest.raises(RuntimeError, match=r"not set up yet.*call guide\(\*model_args\)"):
        fresh.load_state_dict(state)
    assert fresh.prototype_trace is None
    fresh(X)  # sets the prototype up (and builds the flow)
    fresh.load_state_dict(state)
    assert_same_state(fresh, guide)
    medians, again = guide.median(num_samples=500), fresh.median(num_samples=500)
    assert medians.keys() == again.keys() == {"mu", "s"}
    for site in medians:
        assert torch.equal(medians[site], again[site]), site


def test_loading_the_state_of_another_configuration_changes_nothing(tmp_path):
    path = tmp_path / "other.pt"
    other = FlowGuide(model, flow="iaf", layers=1, hidden=(8,))
    other(X)
    torch.save(other.state_dict(), path)
    guide = make_guide()
    guide(X)
    before = snapshot(guide)
    with pytest.raises(RuntimeError, match="Unexpected key"):
        guide.load_state_dict(torch.load(path, weights_only=True))
    assert_same_state(guide, before)


def test_a_crafted_pickle_never_executes(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    guide = make_guide()
    guide(X)
    state = snapshot(guide)
    state["flow.base.loc"] = Evil()
    path = tmp_path / "evil.pt"
    torch.save(state, path)
    with pytest.raises(Exception, match="Weights only load failed"):
        torch.load(path, weights_only=True)
    assert not marker.exists()
