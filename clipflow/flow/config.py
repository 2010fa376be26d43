"""The flow and its training, as settings: :class:`FlowConfig`, :class:`TrainConfig` and the
choices of their fields.

Kept free of torch and FrEIA (only the standard library): the settings layer builds and checks
these before any model code is imported. The model is :mod:`clipflow.flow.model`, the loop
:mod:`clipflow.flow.fit`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import ClipflowError

BLOCKS = ("glow", "allinone")
MODES = ("N", "P", "N+P")
LOSSES = ("paper", "logsigmoid", "hinge")
DEFAULT_EPOCHS = {"N": 10, "P": 30, "N+P": 10}


@dataclass
class FlowConfig:
    """Architecture of the trainable head. YAML keys under ``flow:`` match these fields.

    Attributes:
        dr_dim: output width C of the linear DR layer; ``0`` disables DR (C = feature dim).
        normalize: L2-normalise the reduced feature (Eq. 1); off only for the ablation.
        n_blocks: number of affine coupling blocks (each followed by a fixed permutation).
        hidden_mult: subnet hidden width = hidden_mult · C.
        clamp: FrEIA soft clamp of each coupling's log-scale.
        perm_seed: seed of the fixed random permutations (set from the run seed).
        block: ``glow`` (GLOWCouplingBlock + PermuteRandom, our default) or ``allinone``
            (FrEIA AllInOneBlock, as in anomalib's CFLOW/FastFlow).
    """

    dr_dim: int = 128
    normalize: bool = True
    n_blocks: int = 8
    hidden_mult: int = 2
    clamp: float = 2.0
    perm_seed: int = 0
    block: str = "glow"

    def __post_init__(self):
        # Checked when the settings are built, not after the features have been extracted.
        if self.block not in BLOCKS:
            raise ClipflowError(f"flow.block={self.block!r}: choose one of {', '.join(BLOCKS)}")


@dataclass
class TrainConfig:
    """Optimisation settings. YAML keys under ``train:`` match these fields.

    Attributes:
        mode: ``N`` (natural only), ``P`` (proxies only) or ``N+P`` (both, paired).
        loss: ``paper`` (Eq. 6 / C, the objective the paper describes; Eq. 7 as printed is
            its exact negation; unbounded below for proxies), ``logsigmoid`` (CFLOW-AD style,
            bounded; our default) or ``hinge`` (margin on the proxy score).
        epochs: ``None`` picks the paper's value for the mode (P 30, N+P 10; N 10).
        batch_size: images per step; an N+P step holds these images *and* their proxies.
        hinge_margin: m in relu(m − q) for ``loss=hinge``.
        cuda_graph: on a GPU, capture the step once and replay it (same math, without the
            per-kernel launch overhead that otherwise dominates); ignored on CPU.
        ram_budget_gb: host memory for training features; past it they are streamed from
            the feature cache's packs in bounded buffers (clipflow/features/stream.py).
            None = half of the machine's memory.
    """

    mode: str = "N+P"
    loss: str = "logsigmoid"
    lr: float = 1e-4
    batch_size: int = 128
    epochs: int | None = None
    hinge_margin: float = 1.0
    seed: int = 0
    cuda_graph: bool = True
    ram_budget_gb: float | None = None

    def resolved_epochs(self) -> int:
        return self.epochs if self.epochs is not None else DEFAULT_EPOCHS[self.mode]

    def validate(self) -> None:
        """Raise ValueError on settings that cannot train (the settings layer turns it into a
        one-line error); checked again by :func:`fit`, so library callers get it too."""
        if self.mode not in MODES:
            raise ValueError(f"mode={self.mode!r}: choose one of {', '.join(MODES)}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss={self.loss!r}: choose one of {', '.join(LOSSES)}")
        epochs = self.resolved_epochs()
        if not _is_int(epochs) or epochs < 1:
            raise ValueError(f"train.epochs={epochs!r}: need at least 1 (or null for the paper's)")
        if not _is_int(self.batch_size) or self.batch_size < 1:
            raise ValueError(f"train.batch_size={self.batch_size!r}: need an integer >= 1")
        if not _finite(self.lr) or self.lr <= 0:
            raise ValueError(f"train.lr={self.lr!r}: need a finite number > 0")
        if not _finite(self.hinge_margin):
            raise ValueError(f"train.hinge_margin={self.hinge_margin!r}: need a finite number")
        if self.ram_budget_gb is not None and (
            not _finite(self.ram_budget_gb) or self.ram_budget_gb <= 0
        ):
            raise ValueError(f"train.ram_budget_gb={self.ram_budget_gb!r}: need a number > 0")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
