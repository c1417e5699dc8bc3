"""What one epoch of the loop iterates: minibatches of in-memory tensors, the batches of a
torch ``DataLoader`` / ``IterableDataset`` (data larger than memory), or empty batches for
losses that draw their own samples. A new kind of data source goes here."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

from pyroflows.train.weights import check_sample_weight, normalised

Batch = tuple[Tensor, ...]


# -- data ---------------------------------------------------------------------------------------
def _as_batch(data: Tensor | Sequence[Tensor] | None, name: str) -> Batch | None:
    if data is None:
        return None
    batch = (data,) if isinstance(data, Tensor) else tuple(data)
    if not batch or any(not isinstance(t, Tensor) for t in batch):
        raise TypeError(
            f"{name} must be a tensor, a sequence of tensors, or a torch DataLoader / "
            "IterableDataset"
        )
    n = len(batch[0])
    if n == 0:
        raise ValueError(f"{name} is empty")
    if any(len(t) != n for t in batch):
        raise ValueError(
            f"all {name} tensors need the same number of rows, got {[len(t) for t in batch]}"
        )
    return batch


def _minibatches(
    data: Batch, batch_size: int, generator: torch.Generator | None, shuffle: bool
) -> Iterator[Batch]:
    n = len(data[0])
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    order = order.to(data[0].device)
    for start in range(0, n, batch_size):
        index = order[start : start + batch_size]
        yield tuple(t[index] for t in data)


def _tuple(batch: Any) -> Batch:
    if isinstance(batch, Tensor):
        return (batch,)
    if isinstance(batch, (tuple, list)) and all(isinstance(t, Tensor) for t in batch):
        return tuple(batch)
    raise TypeError(f"a DataLoader batch must be a tensor or a tuple of tensors, got {batch!r}")


class _Source:
    """What one epoch iterates: minibatches of in-memory tensors, the batches of a torch
    ``DataLoader`` / ``IterableDataset`` (data larger than memory), or ``steps`` empty
    batches for losses that draw their own samples.

    With a ``weight`` (in-memory tensors only) the weights, divided by their mean
    (:func:`pyroflows.train.weights.normalised`), are the last tensor of every batch, so they
    travel with their rows through shuffling, batching and sharding; ``weighted`` says so."""

    def __init__(
        self,
        data: Any,
        name: str,
        batch_size: int,
        steps: int | None,
        device: torch.device | None,
        weight: Any = None,
        weight_name: str = "sample_weight",
    ):
        self.batch_size, self.device = batch_size, device
        self.tensors: Batch | None = None
        self.loader: Any = None
        self.weighted = weight is not None
        if isinstance(data, torch.utils.data.IterableDataset):
            data = torch.utils.data.DataLoader(data, batch_size=None)
        if isinstance(data, torch.utils.data.DataLoader):
            self.loader = data
        elif data is not None:
            self.tensors = _as_batch(data, name)
            if device is not None:
                self.tensors = tuple(t.to(device) for t in self.tensors)
        if self.weighted:
            if self.tensors is None:
                raise ValueError(
                    f"{weight_name} needs {name} as in-memory tensors (not a DataLoader, an "
                    "IterableDataset or None)"
                )
            w = check_sample_weight(weight, len(self.tensors[0]), weight_name)
            first = self.tensors[0]
            like = first if first.is_floating_point() else torch.zeros((), device=first.device)
            self.tensors = (*self.tensors, normalised(w, like))
        if self.tensors is not None:
            self.steps = math.ceil(len(self.tensors[0]) / batch_size)
        elif self.loader is not None:
            try:
                self.steps = len(self.loader)
            except TypeError:  # an iterable dataset of unknown length
                self.steps = steps
        else:
            self.steps = steps

    @property
    def empty(self) -> bool:
        return self.tensors is None and self.loader is None

    def rows(self) -> int | None:
        return None if self.tensors is None else len(self.tensors[0])

    def batches(self, generator: torch.Generator | None, shuffle: bool) -> Iterator[Batch]:
        if self.tensors is not None:
            size = self.batch_size if shuffle else max(self.batch_size, 1024)
            yield from _minibatches(self.tensors, size, generator, shuffle)
        elif self.loader is not None:
            for batch in self.loader:
                batch = _tuple(batch)
                yield batch if self.device is None else tuple(t.to(self.device) for t in batch)
        else:
            for _ in range(self.steps):
                yield ()


class Simulations(torch.utils.data.IterableDataset):
    """Fresh training batches drawn by a callable: online training from a simulator as a data
    source of the one loop (an epoch is ``steps`` batches, each ``draw()`` a tuple of tensors
    with one row per simulation).

    ``draw`` runs in the training process (the loader has no workers), so it draws from the
    random streams that :func:`pyroflows.train.fit` seeds and checkpoints: a seeded online fit
    is reproducible and resumes bit-identically. A batch with no rows (every simulation
    refused, say) is skipped and drawn again, at most ``max_empty`` times in a row.

    Example:
        >>> source = Simulations(lambda: (torch.randn(4, 2),), steps=3)
        >>> [tuple(b[0].shape) for b in source], len(source)
        ([(4, 2), (4, 2), (4, 2)], 3)
    """

    def __init__(self, draw: Any, steps: int, max_empty: int = 10):
        super().__init__()
        if not callable(draw):
            raise TypeError(f"draw must be callable, got {draw!r}")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be a positive integer, got {steps!r}")
        self.draw, self.steps, self.max_empty = draw, steps, max_empty

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[Batch]:
        for _ in range(self.steps):
            for _ in range(self.max_empty + 1):
                batch = _tuple(self.draw())
                if len(batch[0]):
                    break
            else:
                raise RuntimeError(
                    f"the simulations gave no usable rows {self.max_empty + 1} times in a row"
                )
            yield batch
