"""torchrun support: join the process group when launched by torchrun, pick this rank's device."""

from __future__ import annotations

import os

import torch


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
