"""What this machine offers a run: the device, its CPUs, GPU JPEG decoding, native bf16.

The one place that asks torch about the hardware. :mod:`clipflow.settings.auto` turns these
facts into the ``auto`` settings; the backbone asks :func:`auto_precision` /
:func:`auto_compile` for configs built in code.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from ..errors import ClipflowError

# Intra-op threads for the flow on CPU, training (flow.fit) and scoring (flow.model.score_features)
# alike. Their ops are small (batch 128 × C=128 in training, a few thousand rows of 768 in
# scoring): splitting each over threads gains little idle, and when another process takes a core
# every op waits at the OpenMP barrier for the descheduled thread (training: 3.4 s -> 180 s per
# epoch on 2 cores; scoring: 1,901 rows/s with 2 threads vs 7,630 with 1 on a loaded 2-core
# machine; scripts/bench_train_cpu.py, scripts/bench_score.py). One thread never waits for another.
CPU_FLOW_THREADS = 1


def resolve_device(name: str) -> str:
    """``auto`` -> cuda when available, else cpu; asking for a missing GPU is a clear error."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ClipflowError(
            f"device={name} but no CUDA GPU is visible; use device=cpu or device=auto"
        )
    if not (name == "cpu" or name.startswith("cuda") or name == "mps"):
        raise ClipflowError(f"device={name!r}: use auto, cpu or cuda[:N]")
    return name


@dataclass(frozen=True)
class Machine:
    """What the auto defaults depend on: the device the run will use and its CPUs."""

    device: str  # cpu, mps or cuda:N
    label: str  # for the log line, e.g. "cuda:0 NVIDIA H200"
    gpu_decode: bool  # JPEGs can be decoded on the device (torchvision built with CUDA)
    cpus: int  # CPUs this process may use (its share, under torchrun)
    precision: str  # backbone.precision=auto here (auto_precision), asked once
    compile: bool  # backbone.compile=auto here (auto_compile)

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")


def machine(device: str) -> Machine:
    """The machine facts for ``device`` (a settings value: auto, cpu, mps, cuda[:N])."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        # The run refuses this device itself (resolve_device's message); pick CPU values.
        device = "cpu"
    resolved = resolve_device(device)
    if resolved == "cuda":
        resolved = f"cuda:{torch.cuda.current_device()}"
    cpus = usable_cpus()
    speed = (auto_precision(resolved), auto_compile(resolved))
    if resolved.startswith("cuda"):
        label = f"{resolved} {torch.cuda.get_device_name(torch.device(resolved))}"
        return Machine(resolved, label, _gpu_jpeg_decode(), cpus, *speed)
    return Machine(resolved, f"{resolved}, {cpus} CPUs", False, cpus, *speed)


def _gpu_jpeg_decode() -> bool:
    import torchvision  # only asked on CUDA machines

    return bool(getattr(torchvision.version, "cuda", None))


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, not the machine's count), divided
    among the torchrun ranks of this node."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS, Windows
        n = os.cpu_count() or 1
    try:
        ranks = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        ranks = 1
    return max(1, n // ranks)


def auto_precision(device: str | torch.device) -> str:
    """``backbone.precision=auto``: bf16 on a CUDA GPU with native bf16 (compute capability
    8+: A100, H100, ...), fp32 elsewhere (CPU, MPS, older GPUs that would emulate it).

    bf16 is the GPU default because scripts/check_precision.py finds its features at cosine
    >= 0.999 to fp32 and every set's AP within 0.1 point; fp32 stays one flag away.
    """
    dev = torch.device(device)
    if dev.type != "cuda" or not torch.cuda.is_available() or not torch.cuda.is_bf16_supported():
        return "fp32"
    return "bf16" if torch.cuda.get_device_capability(dev)[0] >= 8 else "fp32"


def auto_compile(device: str | torch.device) -> bool:
    """``backbone.compile=auto``: on for CUDA (one static batch shape), off on CPU, where
    compiling costs more than it saves for one extraction."""
    return torch.device(device).type == "cuda"


@contextmanager
def cpu_threads(device: str | torch.device, threads: int | None) -> Iterator[None]:
    """On CPU, at most ``threads`` intra-op threads inside the block; the caller's count is
    restored on exit. Other devices, or ``threads=None``, leave the count alone."""
    before = torch.get_num_threads()
    scoped = threads is not None and torch.device(device).type == "cpu" and threads < before
    if scoped and threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if scoped:
            torch.set_num_threads(before)
