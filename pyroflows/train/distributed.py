"""Data-parallel training under ``torchrun``: what the shared loop needs from torch.distributed.

When a script runs under ``torchrun --nproc-per-node N`` (the environment holds ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and a rendezvous address), :func:`setup` joins the process group
(``gloo`` on CPU, ``nccl`` on CUDA) and returns a :class:`Parallel` context; alone it returns
``None`` and nothing changes. The loop then

* wraps the loss in :class:`torch.nn.parallel.DistributedDataParallel` (gradients averaged
  across processes during ``backward``; the model's initial state is rank 0's);
* gives each process its share of every global minibatch (rows ``rank::world``), so one step
  of N processes sees the same rows as one step of one process: same number of steps, same
  learning-rate schedule, same result up to floating-point reduction order;
* averages validation losses over all processes (row-weighted), so early stopping, the time
  budget and callbacks are decided identically everywhere;
* lets only rank 0 write checkpoints and draw progress bars.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = ["Parallel", "setup"]


def setup(device: torch.device | None) -> Parallel | None:
    """Join the ``torchrun`` process group if this process was launched by it."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world < 2 or "RANK" not in os.environ:
        return None
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    if not dist.is_initialized():
        on_cuda = device is not None and device.type == "cuda"
        dist.init_process_group(backend="nccl" if on_cuda else "gloo")
        # A group left alive at interpreter exit can abort the process ("terminate called
        # without an active exception" from gloo's threads): the group we made, we tear down.
        atexit.register(_teardown)
    return Parallel(dist.get_rank(), dist.get_world_size())


def _teardown() -> None:
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


class _LossModule(nn.Module):
    """``forward(*batch) = loss_fn(model, batch)``, so DDP sees the model's parameters used in
    its forward and averages their gradients in ``backward``."""

    def __init__(self, model: nn.Module, loss_fn: Callable[[nn.Module, tuple], Tensor]):
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, *batch: Tensor) -> Tensor:
        return self.loss_fn(self.model, batch)


class Parallel:
    """This process's place in the group, and the collectives the loop uses."""

    def __init__(self, rank: int, world: int):
        self.rank, self.world = rank, world

    @property
    def main(self) -> bool:
        return self.rank == 0

    def wrap(self, model: nn.Module, loss_fn: Callable) -> Callable[[nn.Module, tuple], Tensor]:
        """A loss function that runs through DDP (same signature as ``loss_fn``)."""
        device = next(model.parameters()).device
        ddp = nn.parallel.DistributedDataParallel(
            _LossModule(model, loss_fn),
            device_ids=[device.index] if device.type == "cuda" else None,
        )

        def loss(_model: nn.Module, batch: tuple) -> Tensor:
            return ddp(*batch)

        for name in ("state_dict", "load_state_dict"):  # checkpoints reach the loss's state
            if hasattr(loss_fn, name):
                setattr(loss, name, getattr(loss_fn, name))
        return loss

    def shard(self, batch: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        """This process's rows of a global minibatch."""
        return tuple(t[self.rank :: self.world] for t in batch)

    def _reduce(self, values: list[float], op) -> list[float]:
        t = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(t, op=op)
        return t.tolist()

    def sum(self, *values: float) -> list[float]:
        return self._reduce(list(values), dist.ReduceOp.SUM)

    def any(self, flag: bool) -> bool:
        return bool(self._reduce([float(flag)], dist.ReduceOp.MAX)[0])

    def gather(self, obj: Any) -> list[Any]:
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def scatter_from_main(self, objs: list[Any] | None) -> Any:
        """Rank 0's ``objs[r]`` on rank ``r``."""
        out: list[Any] = [None]
        dist.scatter_object_list(out, objs if self.main else None, src=0)
        return out[0]
