"""Shared helpers: seeding and parameter randomisation.

Flows start as the identity (zero-initialised output layers), which would make most checks
trivial, so tests randomise every parameter first.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pyro
import pytest
import torch
from torch import nn


@pytest.fixture(autouse=True)
def _seed():
    pyro.set_rng_seed(0)
    pyro.clear_param_store()
    yield


def randomize(module: nn.Module, std: float = 0.3, seed: int = 0) -> nn.Module:
    """Draw every parameter i.i.d. from N(0, std^2) with a fixed seed, and give BatchNorm
    layers non-trivial running statistics."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=generator, dtype=torch.float64) * std)
        for name, b in module.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=generator, dtype=torch.float64))
            elif name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=generator, dtype=torch.float64) + 0.5)
    return module


# -- helpers of the kill-and-resume and damaged-file tests -------------------------------------
class Interrupted(Exception):
    """Raised by :func:`interrupt_at` to stop a fit as a crash would."""


def interrupt_at(stop_epoch: int):
    """A training-loop callback that raises :class:`Interrupted` after epoch ``stop_epoch``."""

    def callback(epoch, history):
        if epoch == stop_epoch:
            raise Interrupted

    return callback


def spawn(script: Path, *args: object, env: dict | None = None) -> subprocess.Popen:
    """Run ``python script *args`` with one torch thread, capturing its output."""
    return subprocess.Popen(
        [sys.executable, str(script), *map(str, args)],
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def wait_for(predicate, proc: subprocess.Popen | None = None, timeout: float = 120.0) -> None:
    """Poll ``predicate`` until it holds; fail if ``proc`` ends first or time runs out."""
    start = time.monotonic()
    while not predicate():
        if proc is not None:
            assert proc.poll() is None, proc.communicate()[1].decode()
        if time.monotonic() - start > timeout:
            raise TimeoutError("the child did not reach the expected point")
        time.sleep(0.02)


def finish(proc: subprocess.Popen) -> None:
    """Wait for ``proc`` and assert that it succeeded."""
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()


def epoch_of(path: Path) -> int:
    """The epoch of the checkpoint at ``path``, or -1 while none is readable."""
    from pyroflows.checkpoint import load_checkpoint

    try:
        return load_checkpoint(path)["epoch"]
    except ValueError:
        return -1


def largest_tensor_bytes(path: Path) -> tuple[int, int]:
    """``(offset, size)`` of the stored bytes of the largest tensor in the zip archive that
    ``torch.save`` wrote (the member's data, past its local header)."""
    with zipfile.ZipFile(path) as archive:
        info = max(
            (i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size
        )
    data = path.read_bytes()
    header = info.header_offset
    name_len = int.from_bytes(data[header + 26 : header + 28], "little")
    extra_len = int.from_bytes(data[header + 28 : header + 30], "little")
    return header + 30 + name_len + extra_len, info.file_size


def flip_a_byte_inside_the_largest_tensor(path: Path) -> None:
    """Alter one byte in the middle of the stored bytes of the largest tensor (the zip member's
    data, not its header), as a bad disk or a broken copy would."""
    start, size = largest_tensor_bytes(path)
    data = bytearray(path.read_bytes())
    data[start + size // 2] ^= 0xFF
    path.write_bytes(bytes(data))
