"""torchrun support: join the process group when launched by torchrun, pick this rank's device.

The one home of clipflow's torchrun logic; the cache and the pipeline ask :class:`Distributed`
for their rank instead of calling ``torch.distributed`` themselves.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass
class Distributed:
    """This process's place in a torchrun job (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world: int = 1

    @staticmethod
    def current() -> Distributed:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return Distributed(torch.distributed.get_rank(), torch.distributed.get_world_size())
        return Distributed()

    @property
    def main(self) -> bool:
        """Rank 0: the process that writes the files every rank would otherwise write."""
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(device: str) -> str:
    """Join the torchrun process group (nccl on GPUs, gloo on CPU); return this rank's device."""
    if not launched_by_torchrun() or torch.distributed.is_initialized():
        return device
    use_cuda = device.startswith("cuda")
    torch.distributed.init_process_group(backend="nccl" if use_cuda else "gloo")
    if use_cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return f"cuda:{local}"
    return device


def shutdown() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
