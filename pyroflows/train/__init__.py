"""Training: the one loop every job runs, and the parts it is made of.

* ``loop`` — :func:`fit` (Adam, schedules, clipping, validation, early stopping, divergence
  guard, time budget, checkpoints with bit-identical resume) and :func:`check_options`;
* ``sources`` — what an epoch iterates: in-memory tensors, a ``DataLoader`` /
  ``IterableDataset``, or empty batches for losses that draw their own samples (a new kind
  of data goes here);
* ``options`` — the loop's settings, the device and the learning-rate schedules;
* ``control`` — :class:`History`, the divergence guard, early stopping, the progress bar;
* ``checkpoint`` — atomic writes, safe reads, random streams, data fingerprints;
* ``seeding`` — seeded blocks that restore the caller's random streams (CPU and GPUs);
* ``distributed`` — data-parallel training under ``torchrun``;
* ``streaming`` — memory-mapped ``.npy`` files and CSV files larger than memory;
* ``losses`` — the objectives (``nll``, reverse / forward KL, chi-square, the ELBO) and the
  one check of user log densities;
* ``recipe`` — the validation split and the portfolio of families;
* ``weights`` — the check of per-row ``sample_weight`` and the effective sample size.

A new objective is a callable ``loss(model, batch) -> scalar`` in ``losses``; a new kind of
data in ``sources``; a new way of combining fits in ``recipe``; a new job calls :func:`fit`
rather than writing a loop.
"""

from pyroflows.train.checkpoint import atomic_save, data_fingerprint
from pyroflows.train.control import History, TrainingDiverged, show_progress
from pyroflows.train.loop import check_options, fit
from pyroflows.train.options import SCHEDULES, resolve_device

__all__ = [
    "SCHEDULES",
    "History",
    "TrainingDiverged",
    "atomic_save",
    "check_options",
    "data_fingerprint",
    "fit",
    "resolve_device",
    "show_progress",
]
