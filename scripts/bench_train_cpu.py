"""CPU training next to a busy process: the thread policy of ``fit`` vs torch's default.

    python scripts/bench_train_cpu.py                 # ~1 min on 2 cores
    python scripts/bench_train_cpu.py --steps 40 --pin

N+P training (flow defaults: DR 768 -> 128, 8 blocks, batch 128) on random 768-d features,
timed per optimiser step and scaled to one epoch of 14,400 images (113 steps):

- ``old``: torch's default intra-op threads (one per core);
- ``new``: ``fit``'s policy (``clipflow.flow.fit.CPU_TRAIN_THREADS`` threads, scoped).

Each is timed idle and with one busy neighbour (a Python busy loop in another process,
bounded in time and killed at the end; ``--pin`` pins it to CPU 0). Only ``--steps`` steps
are timed per case, because the old policy next to a busy process can take minutes per epoch.
The figure that matters is busy / idle for each policy.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import torch

from clipflow.flow.config import FlowConfig, TrainConfig
from clipflow.flow.fit import fit
from clipflow.flow.model import CLIPFlow

EPOCH_ROWS = 14_400
DIM = 768
BUSY_LOOP = "import time\nend = time.time() + {secs}\nwhile time.time() < end:\n    pass\n"


def time_steps(features: torch.Tensor, steps: int, threads: int | None) -> float:
    """Seconds per optimiser step of N+P training over ``steps`` full batches."""
    cfg = TrainConfig(mode="N+P", epochs=1, batch_size=128, cuda_graph=False)
    rows = steps * cfg.batch_size
    natural, proxy = features[None, :rows], features[None, rows : 2 * rows]
    torch.manual_seed(0)
    model = CLIPFlow(DIM, FlowConfig())
    warm = 2 * cfg.batch_size  # allocator, Adam state, thread pool start
    fit(model, natural[:, :warm], proxy[:, :warm], cfg, "cpu", cpu_threads=threads)
    start = time.perf_counter()
    fit(model, natural, proxy, cfg, "cpu", cpu_threads=threads)
    return (time.perf_counter() - start) / steps


def busy_neighbour(secs: float, pin: bool) -> subprocess.Popen:
    """A busy-loop process that ends by itself after ``secs`` (killed earlier by the caller)."""
    proc = subprocess.Popen([sys.executable, "-c", BUSY_LOOP.format(secs=secs)])
    if pin and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(proc.pid, {0})
    time.sleep(0.2)  # let it start spinning
    return proc


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--steps", type=int, default=12, help="timed steps per case")
    p.add_argument("--pin", action="store_true", help="pin the busy process to CPU 0")
    p.add_argument("--busy-max-s", type=float, default=120.0, help="busy loop's own time limit")
    args = p.parse_args(argv)
    from clipflow.flow.fit import CPU_TRAIN_THREADS

    gen = torch.Generator().manual_seed(0)
    features = torch.randn(EPOCH_ROWS, DIM, generator=gen)
    steps_per_epoch = -(-EPOCH_ROWS // 128)
    print(
        f"cores {os.cpu_count()}, torch threads {torch.get_num_threads()}, "
        f"policy threads {CPU_TRAIN_THREADS}, {args.steps} steps per case, pin={args.pin}"
    )
    policies = {"old": None, "new": CPU_TRAIN_THREADS}
    results = {}
    for name, threads in policies.items():
        idle = time_steps(features, args.steps, threads)
        proc = busy_neighbour(args.busy_max_s, args.pin)
        try:
            busy = time_steps(features, args.steps, threads)
        finally:
            proc.kill()
            proc.wait()
        results[name] = (idle, busy)
        print(
            f"{name}: idle {idle * steps_per_epoch:.1f} s/epoch, busy neighbour "
            f"{busy * steps_per_epoch:.1f} s/epoch, busy/idle {busy / idle:.2f}×",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
