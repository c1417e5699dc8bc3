"""Fresh dequantisation noise every epoch: the training rows of
:class:`~pyroflows.calo.TwoStepGenerator`'s flows as a data source of
:func:`pyroflows.train.fit`.

About 45 % of the toy showers' voxels are exact zeros, each dequantised to a random value below
the threshold. Drawn once, that noise is part of the training rows, and a flow can learn the
particular draws (about 45 noise values per shower) rather than their distribution: with one
fixed draw, flow II's training NLL keeps falling while its validation NLL stalls 9 nats higher
(``benchmarks/results/calo.md``). :class:`Redequantised` draws the noise afresh for every epoch,
so every epoch sees other values below the threshold and the same voxels above it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import Tensor

__all__ = ["Redequantised"]

#: ``encode(seed) -> rows``: the training rows of flow I or II (a tuple of tensors or arrays,
#: e.g. features and context), encoded and standardised, with the dequantisation noise drawn
#: from ``seed``
Encoder = Callable[[int], tuple[Tensor | np.ndarray, ...]]


class Redequantised(torch.utils.data.IterableDataset):
    """Minibatches of training rows whose dequantisation noise is drawn afresh each epoch.

    Args:
        encode: maps a seed to the training rows (a tuple of tensors or arrays with one row
            per shower, e.g. features and context), encoded with that seed's dequantisation
            noise.
        batch_size: rows per minibatch.
        seed: epoch ``k`` (from 0) encodes with seed ``seed + 1 + k`` and shuffles with the
            same seed.
        dtype: dtype of the tensors yielded.

    Example:
        >>> rows = lambda s: (np.random.default_rng(s).normal(size=(5, 2)),)
        >>> data = Redequantised(rows, batch_size=2, seed=0)
        >>> len(data), [b[0].shape[0] for b in data]
        (3, [2, 2, 1])
        >>> first, second = (torch.cat([b[0] for b in data]) for _ in range(2))
        >>> bool(torch.equal(first, second))
        False
    """

    def __init__(
        self, encode: Encoder, batch_size: int, seed: int, dtype: torch.dtype = torch.float32
    ):
        super().__init__()
        self.encode, self.batch_size, self.seed, self.dtype = encode, batch_size, seed, dtype
        self.epoch = 0
        self.rows = len(encode(seed)[0])

    def __len__(self) -> int:
        return -(-self.rows // self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, ...]]:
        seed = self.seed + 1 + self.epoch
        self.epoch += 1
        order = torch.from_numpy(np.random.default_rng(seed).permutation(self.rows))
        tensors = [torch.as_tensor(a, dtype=self.dtype)[order] for a in self.encode(seed)]
        for start in range(0, self.rows, self.batch_size):
            yield tuple(t[start : start + self.batch_size] for t in tensors)
