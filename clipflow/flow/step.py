"""Running the optimisation steps of one training: eagerly, or replayed as a CUDA graph.

One step of the 8-block flow at batch 128 is about a thousand tiny kernels (gather, forward,
backward, Adam, loss sums). On a GPU the Python and launch overhead of those kernels, not
the math, sets the pace (~18 ms/step on an H200). Capturing the whole step once as a CUDA
graph and replaying it removes that overhead; the replay runs the same kernels on the same
buffers, so the results are those of the eager loop. On CPU, or when capture fails, every
step runs eagerly.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

log = logging.getLogger(__name__)

# Eager steps before the capture, on a side stream: the caching allocator, cuBLAS and
# Adam's state must exist before a graph can be recorded (PyTorch's whole-network recipe).
WARMUP_STEPS = 3

# step_fn(idx) runs one full step on the batch at rows ``idx`` and returns its 0-d loss parts.
StepFn = Callable[[torch.Tensor], dict[str, torch.Tensor]]


class StepRunner:
    """Runs ``step_fn`` on batches of row indices and keeps the per-epoch sums of its parts.

    Full batches go through a static index buffer, so that after ``WARMUP_STEPS`` eager steps
    one capture serves every later full batch; the short last batch of an epoch runs eagerly.
    The sums stay on the device: the host reads them once per epoch (:meth:`take_sums`).
    """

    def __init__(
        self, step_fn: StepFn, batch_size: int, device: str | torch.device, cuda_graph: bool
    ):
        self.step_fn = step_fn
        self.device = torch.device(device)
        self.idx = torch.zeros(
            batch_size, dtype=torch.long, device=self.device
        )  # (B,) static input
        self.requested = cuda_graph
        self.use_graph = cuda_graph and self.device.type == "cuda"
        self.fallback: str | None = None  # why capture failed (then every step runs eagerly)
        self.side_stream = torch.cuda.Stream(self.device) if self.use_graph else None
        self.graph: torch.cuda.CUDAGraph | None = None
        self.names: list[str] = []
        self.sums: torch.Tensor | None = None
        self.eager_steps = 0

    @property
    def captured(self) -> bool:
        return self.graph is not None

    @property
    def status(self) -> str:
        """What the full steps run as, for the run's metadata: ``captured`` (graph replays),
        ``off`` (not asked for), ``off (cpu)`` (no CUDA), ``failed: <reason>`` (eager after a
        failed capture) or ``not reached`` (asked for, but no capture yet: too few full steps)."""
        if self.graph is not None:
            return "captured"
        if self.fallback is not None:
            return f"failed: {self.fallback}"
        if not self.requested:
            return "off"
        if self.device.type != "cuda":
            return f"off ({self.device.type})"
        return "not reached"

    def __call__(self, idx: torch.Tensor) -> None:
        """One optimiser step on the rows ``idx`` (a device tensor)."""
        if len(idx) != len(self.idx):
            self._eager(idx)
            return
        self.idx.copy_(idx)
        if self.graph is None and self.use_graph and self.eager_steps >= WARMUP_STEPS:
            self._capture()
        if self.graph is not None:
            self.graph.replay()
        else:
            self._eager(self.idx)

    def take_sums(self) -> dict[str, float]:
        """The summed parts since the last call (one host sync), then reset to zero."""
        if self.sums is None:
            return {}
        values = self.sums.tolist()
        self.sums.zero_()
        return dict(zip(self.names, values))

    def _accumulate(self, idx: torch.Tensor) -> None:
        parts = self.step_fn(idx)
        if self.sums is None:
            self.names = list(parts)
            self.sums = torch.zeros(len(parts), device=self.device)
        self.sums.add_(torch.stack(list(parts.values())))

    def _eager(self, idx: torch.Tensor) -> None:
        if self.use_graph and self.graph is None:  # warm-up: on a side stream, as capture requires
            side = self.side_stream
            assert side is not None  # made in __init__ whenever use_graph (which only turns off)
            current = torch.cuda.current_stream(self.device)
            side.wait_stream(current)
            with torch.cuda.stream(side):
                self._accumulate(idx)
            current.wait_stream(side)
        else:
            self._accumulate(idx)
        self.eager_steps += 1

    def _capture(self) -> None:
        graph = torch.cuda.CUDAGraph()
        try:
            # Captured on the warm-up stream: cuBLAS handles and workspaces are cached per
            # stream, and creating one mid-capture is not allowed.
            with torch.cuda.graph(graph, stream=self.side_stream):
                self._accumulate(self.idx)
        except RuntimeError as err:  # recording runs nothing: the step is still to be done
            self.fallback = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
            log.warning(
                "CUDA graph capture of the training step FAILED (%s): training continues "
                "EAGERLY, several times slower on a GPU; recorded as speed.cuda_graph in the "
                "run's metadata (set train.cuda_graph=false to skip the attempt)",
                self.fallback,
            )
            self.use_graph = False
            return
        self.graph = graph
        log.info("training step captured as a CUDA graph after %d eager steps", self.eager_steps)
