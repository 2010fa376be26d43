"""The trainable part of CLIP-Flow: dimension reduction, L2 normalisation and a FrEIA flow.

    features φ (N, D) ─► DR (Linear D→C) ─► z = DR/‖DR‖₂ ─► g⁻¹ (affine couplings) ─► u (N, C)

Two coupling blocks are offered (SPEC §5; docs/reproduce.md §7 says what their difference
measured, and the choices experiment separates block type from capacity):
``glow`` = FrEIA ``GLOWCouplingBlock`` (both halves transformed) + a fixed ``PermuteRandom``;
``allinone`` = FrEIA ``AllInOneBlock`` (anomalib's CFLOW/FastFlow block: one half transformed,
tanh soft clamp, learnable global affine, its own fixed hard permutation).

log p(z) = log N(u; 0, I) + log|det J|  (Eq. 3), and the anomaly score (Eq. 8) is

    q(z) = (‖u‖² − 2 log|det J|) / (2C) = −log p(z)/C − ½ log 2π,

higher = more likely AI-generated. The module knows nothing of optimisers, files or data.
"""

from __future__ import annotations

import math
from dataclasses import asdict

import FrEIA.framework as Ff
import FrEIA.modules as Fm
import numpy as np
import torch
from torch import nn

from ..core.machine import CPU_FLOW_THREADS, cpu_threads
from .config import FlowConfig

LOG_2PI = math.log(2 * math.pi)


class AllInOneBlock(Fm.AllInOneBlock):
    """FrEIA 0.2's AllInOneBlock without its in-place scaling of the subnet output.

    FrEIA's ``_affine`` starts with ``a *= 0.1`` on the subnet's output: autograd then fails
    on backward whenever the subnet's last op saved its output (Tanh, Sigmoid, ...). The same
    math out of place, so any subnet trains.
    """

    def _affine(self, x, a, rev=False):
        a = a * 0.1
        ch = x.shape[1]
        sub_jac = self.clamp * torch.tanh(a[:, :ch])
        if self.GIN:
            sub_jac = sub_jac - torch.mean(sub_jac, dim=self.sum_dims, keepdim=True)
        if not rev:
            return x * torch.exp(sub_jac) + a[:, ch:], torch.sum(sub_jac, dim=self.sum_dims)
        return (x - a[:, ch:]) * torch.exp(-sub_jac), -torch.sum(sub_jac, dim=self.sum_dims)


def _subnet_builder(hidden: int):
    # The subnet ends in a Linear layer: FrEIA 0.2's in-place ops break backward after Tanh.
    def build(dims_in: int, dims_out: int) -> nn.Module:
        return nn.Sequential(nn.Linear(dims_in, hidden), nn.ReLU(), nn.Linear(hidden, dims_out))

    return build


def build_flow(dim: int, cfg: FlowConfig) -> Ff.SequenceINN:
    """A coupling flow on ``dim``-d vectors (``cfg.block``) with seeded fixed permutations."""
    flow = Ff.SequenceINN(dim)
    subnet = _subnet_builder(cfg.hidden_mult * dim)
    # FrEIA's permutations (PermuteRandom, AllInOneBlock's hard permutation) draw from numpy's
    # *global* RNG; seed it per block for a reproducible architecture, and restore the
    # caller's RNG state afterwards.
    saved = np.random.get_state()
    try:
        for i in range(cfg.n_blocks):
            seed = cfg.perm_seed * 1000 + i
            if cfg.block == "allinone":
                np.random.seed(seed)
                flow.append(AllInOneBlock, subnet_constructor=subnet, affine_clamping=cfg.clamp)
            else:
                flow.append(Fm.GLOWCouplingBlock, subnet_constructor=subnet, clamp=cfg.clamp)
                flow.append(Fm.PermuteRandom, seed=seed)
    finally:
        np.random.set_state(saved)
    return flow


class CLIPFlow(nn.Module):
    """DR + L2 + flow on backbone features; see the module docstring for the math."""

    def __init__(self, feature_dim: int, cfg: FlowConfig | None = None):
        super().__init__()
        self.cfg = cfg or FlowConfig()
        self.feature_dim = feature_dim
        self.dim = self.cfg.dr_dim if self.cfg.dr_dim > 0 else feature_dim
        self.dr = nn.Linear(feature_dim, self.dim) if self.cfg.dr_dim > 0 else nn.Identity()
        self.flow = build_flow(self.dim, self.cfg)

    def embed(self, features: torch.Tensor) -> torch.Tensor:
        """Eq. 1: z = DR(φ) / ‖DR(φ)‖₂.  (N, D) -> (N, C)."""
        z = self.dr(features.float())
        if self.cfg.normalize:
            z = nn.functional.normalize(z, dim=1)
        return z

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Features (N, D) -> (u (N, C), log|det J| (N,))."""
        u, log_jac = self.flow(self.embed(features))
        return u, log_jac

    def log_prob(self, features: torch.Tensor) -> torch.Tensor:
        """Eq. 3: log p(z) = log N(u; 0, I) + log|det J|.  (N, D) -> (N,)."""
        u, log_jac = self(features)
        return log_prob_from(u, log_jac)

    def score(self, features: torch.Tensor) -> torch.Tensor:
        """Eq. 8 anomaly score q(z); higher = more likely AI-generated.  (N, D) -> (N,)."""
        u, log_jac = self(features)
        return score_from(u, log_jac)

    def config_dict(self) -> dict:
        return {"feature_dim": self.feature_dim, **asdict(self.cfg)}


def log_prob_from(u: torch.Tensor, log_jac: torch.Tensor) -> torch.Tensor:
    """log N(u; 0, I) + log|det J| for u (N, C), log_jac (N,)."""
    c = u.shape[1]
    return -0.5 * (u.pow(2).sum(dim=1) + c * LOG_2PI) + log_jac


def score_from(u: torch.Tensor, log_jac: torch.Tensor) -> torch.Tensor:
    """q(z) = (‖u‖² − 2 log|det J|) / (2C) for u (N, C), log_jac (N,)."""
    c = u.shape[1]
    return (u.pow(2).sum(dim=1) - 2.0 * log_jac) / (2.0 * c)


@torch.no_grad()
def score_features(
    model: CLIPFlow,
    features: torch.Tensor,
    batch_size: int = 8192,
    device: str | torch.device = "cpu",
    threads: int | None = CPU_FLOW_THREADS,
) -> torch.Tensor:
    """Scores for many features in batches, on ``device``; returns a CPU float tensor (N,).

    On CPU it runs under the flow's thread policy, as training does
    (:data:`clipflow.core.machine.CPU_FLOW_THREADS`, the caller's count restored on return);
    ``threads=None`` keeps the caller's count.
    """
    model.to(device).eval()
    out = []
    with cpu_threads(device, threads):
        for start in range(0, len(features), batch_size):
            chunk = features[start : start + batch_size].to(device, non_blocking=True)
            out.append(model.score(chunk).float().cpu())
    return torch.cat(out) if out else torch.empty(0)
