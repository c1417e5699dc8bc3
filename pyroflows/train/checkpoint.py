"""Checkpoint files of the training loop: written atomically, read safely.

A checkpoint is a dictionary of tensors and plain Python values (so ``torch.load`` reads it
with ``weights_only=True``: a crafted file cannot run code). :func:`atomic_save` writes it to
a temporary file in the same folder, flushes and fsyncs it, and renames it over the target with
``os.replace``, so a crash at any moment leaves either the previous checkpoint or the new one,
never a torn file (and no temporary file is left behind, whatever the failure).
:func:`load_checkpoint` checks the CRC-32 of every member of the zip archive first
(:func:`zip_damage`), so flipped bytes in a stored tensor are an error, not other weights.
:func:`rng_state` / :func:`set_rng_state` capture every random stream the
loop draws from (torch, CUDA, NumPy, Python, the shuffling generator), which is what makes a
resumed run bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import os
import random
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

FORMAT = "pyroflows.checkpoint"
VERSION = 1

__all__ = [
    "data_fingerprint",
    "loss_name",
    "member_path",
    "atomic_save",
    "load_all_or_nothing",
    "restore_on_error",
    "load_checkpoint",
    "read_saved",
    "rng_state",
    "set_rng_state",
    "zip_damage",
]


def member_path(path: str | Path, name: str) -> Path:
    """The file of one member of a run that trains several models on one path:
    ``run.ckpt`` -> ``run.<name>.ckpt`` (the portfolio of ``DensityEstimator(flow="auto")``,
    the families of ``AmortizedPosterior(flow="auto")``).

    Example:
        >>> member_path("out/run.ckpt", "nsf").as_posix()
        'out/run.nsf.ckpt'
    """
    path = Path(path)
    return path.with_name(f"{path.stem}.{name}{path.suffix}")


def loss_name(loss_fn: Any) -> str:
    """The name a checkpoint records for its loss, so that a run is not resumed under
    another objective (its best state and early stopping would compare losses of two kinds):
    a function's module and qualified name, an object's class, and the plain arguments of a
    ``functools.partial``. Two lambdas, or two closures made by the same function, have the
    same name: the check cannot tell them apart.

    Example:
        >>> import pyroflows as pf
        >>> loss_name(pf.losses.nll)
        'pyroflows.train.losses.nll'
        >>> loss_name(functools.partial(pf.losses.nll, weight=None))
        'partial(pyroflows.train.losses.nll, weight=None)'
    """
    if isinstance(loss_fn, functools.partial):
        parts = [_plain(a) for a in loss_fn.args]
        parts += [f"{key}={_plain(value)}" for key, value in sorted(loss_fn.keywords.items())]
        return f"partial({', '.join([loss_name(loss_fn.func), *parts])})"
    named = inspect.isfunction(loss_fn) or inspect.ismethod(loss_fn) or inspect.isbuiltin(loss_fn)
    target = loss_fn if named else type(loss_fn)
    module = getattr(target, "__module__", None) or "?"
    return f"{module}.{getattr(target, '__qualname__', type(target).__name__)}"


def _plain(value: Any) -> str:
    """``repr`` of a plain value, the type's name for anything else (a tensor, a model)."""
    plain = (bool, int, float, str, type(None))
    return repr(value) if isinstance(value, plain) else f"<{type(value).__name__}>"


#: tensors up to this many bytes are hashed whole; larger ones through evenly spaced rows
HASH_LIMIT = 1 << 27


def data_fingerprint(tensors: Any) -> str:
    """A short hash of training tensors, stored in a checkpoint so that it is never resumed
    for other data: the shapes, dtypes and bytes of every tensor (tensors over
    :data:`HASH_LIMIT` bytes through evenly spaced rows, which include the first and last).

    Example:
        >>> a = torch.arange(6.0).reshape(3, 2)
        >>> data_fingerprint((a,)) == data_fingerprint((a.clone(),))
        True
        >>> b = a.clone(); b[1, 1] = 7.0
        >>> data_fingerprint((a,)) == data_fingerprint((b,))
        False
        >>> data_fingerprint((a,)) == data_fingerprint((a[[1, 0, 2]],))
        False
    """
    digest = hashlib.sha256()
    for tensor in tensors:
        tensor = tensor.detach()
        digest.update(f"{tuple(tensor.shape)}|{tensor.dtype};".encode())
        size = tensor.numel() * tensor.element_size()
        if size > HASH_LIMIT and tensor.ndim and len(tensor) > 1:
            rows = max(2, HASH_LIMIT * len(tensor) // size)
            index = torch.linspace(0, len(tensor) - 1, rows).round().long().unique()
            tensor = tensor[index.to(tensor.device)]
        flat = tensor.reshape(-1).contiguous().cpu().view(torch.uint8)
        digest.update(flat.numpy())
    return digest.hexdigest()[:32]


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save(obj, path)`` atomically: temporary file, fsync, ``os.replace``.

    Whatever goes wrong (a full disk, an object ``torch.save`` cannot pickle, a
    ``KeyboardInterrupt``), the temporary file is removed and ``path`` is left as it was.

    Raises:
        ValueError: the folder does not exist or is not writable.
        Exception: whatever else ``torch.save`` raises (e.g. a pickling error), unchanged.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise ValueError(f"cannot write {path}: folder {folder} does not exist")
    tmp = folder / f".{path.name}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as error:  # clean up after anything, then re-raise
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise ValueError(f"cannot write {path}: {error.strerror or error}") from None
        raise
    try:  # make the rename itself durable
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_saved(
    path: str | Path,
    fmt: str,
    what: str,
    *,
    corrupt: str = "corrupt",
    unreadable: str | None = None,
) -> dict[str, Any]:
    """Read a dictionary that pyroflows saved with ``torch.save``: the archive's checksums
    first (:func:`zip_damage`), then ``torch.load(weights_only=True)`` (a crafted file cannot
    run code), then its ``"format"`` entry. Checking the version is the caller's: the policies
    differ (exactly this version, or up to it).

    Args:
        path: the file.
        fmt: the expected ``blob["format"]``.
        what: the kind of file, for messages (``"a pyroflows checkpoint"``).
        corrupt: how a file with damaged bytes is described (``"{path} is {corrupt}: ..."``).
        unreadable: how a file ``torch.load`` cannot read is described (default ``what``).

    Raises:
        ValueError: a missing, truncated, corrupt or foreign file, naming the problem.
    """
    damage = zip_damage(path)
    if damage is not None:
        raise ValueError(f"{path} is {corrupt}: {damage}")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except Exception as error:  # truncated, corrupt, or a pickle that is not plain data
        text = str(error).strip()
        reason = text.splitlines()[0] if text else type(error).__name__
        raise ValueError(f"{path} is not {unreadable or what} ({reason})") from None
    if not isinstance(blob, dict) or blob.get("format") != fmt:
        raise ValueError(f"{path} is not {what}")
    return blob


def load_all_or_nothing(load: Any, module: torch.nn.Module, state_dict: Any, **kwargs: Any):
    """``load(state_dict, **kwargs)`` (a module's ``load_state_dict``), undone when it raises:
    ``nn.Module.load_state_dict`` copies the matching entries before it reports a mismatch,
    which would leave ``module`` half overwritten."""
    backup = {k: v.detach().clone() for k, v in module.state_dict().items()}
    try:
        return load(state_dict, **kwargs)
    except Exception:
        load(backup)
        raise


@contextlib.contextmanager
def restore_on_error(*objects: Any):
    """A block after which, if it raises, every object is as it was before it: a
    ``torch.nn.Module``'s parameters and buffers (its ``state_dict``, copied), any other
    object's attributes (its ``__dict__``, shallow: a fit must assign new values rather than
    change the old ones in place). For fits that train modules in place and set fitted
    attributes one by one, so a refit that fails half way (bad options, a diverged member, an
    interrupt) does not leave one part fitted to the new data and another to the old.

    Example:
        >>> layer = torch.nn.Linear(1, 1)
        >>> before = layer.weight.detach().clone()
        >>> try:
        ...     with restore_on_error(layer):
        ...         _ = layer.weight.data.fill_(7.0)
        ...         raise ValueError("bad option")
        ... except ValueError:
        ...     pass
        >>> bool(torch.equal(layer.weight.detach(), before))
        True
    """
    saved: list[tuple[Any, dict[str, Any]]] = []
    for obj in objects:
        if isinstance(obj, torch.nn.Module):
            saved.append((obj, {k: v.detach().clone() for k, v in obj.state_dict().items()}))
        else:
            saved.append((obj, dict(vars(obj))))
    try:
        yield
    except BaseException:
        for obj, state in saved:
            if isinstance(obj, torch.nn.Module):
                obj.load_state_dict(state)
            else:
                vars(obj).clear()
                vars(obj).update(state)
        raise


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by the training loop (``weights_only=True``).

    Raises:
        ValueError: a missing, truncated, corrupt or foreign file, or another format version;
            also a file whose bytes no longer match the checksums of its zip archive (which
            ``torch.load`` alone would read silently, with other weights).
    """
    blob = read_saved(
        path, FORMAT, "a pyroflows checkpoint", corrupt="a corrupt checkpoint",
        unreadable="a readable pyroflows checkpoint",
    )  # fmt: skip
    if blob.get("version") != VERSION:
        raise ValueError(
            f"{path} has checkpoint format version {blob.get('version')}; this pyroflows "
            f"reads version {VERSION}"
        )
    return blob


def zip_damage(path: str | os.PathLike) -> str | None:
    """What is damaged in the zip archive that ``torch.save`` wrote at ``path``, or None.

    ``torch.load`` does not check the CRC-32 that the archive stores for each member, so a
    file whose tensor bytes were altered (a bad disk, a broken copy) would load silently with
    other weights; ``zipfile.ZipFile.testzip`` checks them. A file that is not a zip archive
    at all (missing, truncated, foreign, or not a path) gives None: ``torch.load`` describes
    it better.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     path = Path(folder) / "x.pt"
        ...     torch.save({"w": torch.arange(4.0)}, path)
        ...     print(zip_damage(path))
        None
    """
    if not isinstance(path, (str, os.PathLike)):
        return None
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile):
        return None  # not a zip archive (or not readable): left to torch.load
    except Exception as error:  # a damaged central directory
        return f"its archive is damaged ({type(error).__name__})"
    with archive:
        try:
            bad = archive.testzip()
        except Exception as error:  # a damaged member header, or a read error
            return f"its archive is damaged ({type(error).__name__}: {error})"
    return None if bad is None else f"the bytes of {bad} do not match their checksum"


def rng_state(generator: torch.Generator | None) -> dict[str, Any]:
    """Every random stream the loop uses, as tensors and plain values."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()  # noqa: NPY002 (legacy global)
    version, internal, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "python": {"version": version, "internal": list(internal), "gauss": py_gauss},
        "generator": None if generator is None else generator.get_state(),
        "cuda": None,
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], generator: torch.Generator | None) -> None:
    """Restore what :func:`rng_state` captured."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(  # noqa: NPY002 (the legacy global stream)
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    )
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss"]))
    if generator is not None and state["generator"] is not None:
        generator.set_state(state["generator"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
