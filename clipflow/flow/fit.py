"""Training the flow on features: the objectives of Eq. 6–7 and one short loop, no file I/O.

``loss=paper`` is Eq. 6 divided by C: mean q over natural features minus mean q over proxies
(q = −log p/C − ½ log 2π, Eq. 8; the constant does not move the optimum). That is the
objective the paper describes in words (maximise the natural images' likelihood, minimise the
proxies'). Eq. 7 as printed is the exact negation of Eq. 6 / C: both of its terms carry the
opposite sign ((‖u‖² − 2 log|det J|) / 2C is −log p / C up to a constant), so minimising it
literally would lower the natural images' likelihood and raise the proxies'. It is not
implemented verbatim.

The loop, as six functions read it (streaming features from disk and CUDA graphs are why it
is split; the arithmetic is this)::

    fit(model, natural (V, N, D), proxy (V, N, D), cfg)    # epoch e reads view e mod V
      for epoch in range(cfg.resolved_epochs()):         # _train_loop
          for rows in the epoch's buffers:                # _fit: one (all in RAM);
                                                          # _fit_stream: bounded reads
              for idx in randperm(rows) by batch_size:    # _run_steps
                  nat, prx = natural[view][idx], proxy[view][idx]        # _view
                  loss = batch_loss(model, nat, prx, cfg) # one flow pass over both
                  loss.backward(); adam.step()            # _step_runner (a CUDA graph
                                                          #   replay on GPUs, StepRunner)
          history.append(mean loss, its parts, mean q per side); stop if not finite
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..core.machine import CPU_FLOW_THREADS, cpu_threads
from ..errors import TrainingDivergedError
from ..features.stream import RowSource, buffer_rows, epoch_buffers, ram_budget_bytes
from .config import TrainConfig
from .model import LOG_2PI, CLIPFlow, score_from
from .step import StepRunner

log = logging.getLogger(__name__)

# Intra-op threads of CPU training: the policy of core.machine.CPU_FLOW_THREADS (why: there).
CPU_TRAIN_THREADS = CPU_FLOW_THREADS


def natural_term(u: torch.Tensor, log_jac: torch.Tensor, loss: str) -> torch.Tensor:
    """Per-sample loss that *raises* the likelihood of natural features.  -> (N,)."""
    return natural_from_score(score_from(u, log_jac), loss)


def proxy_term(u: torch.Tensor, log_jac: torch.Tensor, loss: str, margin: float) -> torch.Tensor:
    """Per-sample loss that *lowers* the likelihood of proxy features.  -> (N,)."""
    return proxy_from_score(score_from(u, log_jac), loss, margin)


def natural_from_score(q: torch.Tensor, loss: str) -> torch.Tensor:
    """:func:`natural_term` from the scores q (N,) already computed."""
    if loss == "logsigmoid":
        # ℓ = log p / C = −q − ½ log 2π; softplus(−ℓ) = −log σ(ℓ).
        return F.softplus(q + 0.5 * LOG_2PI)
    # paper and hinge: Eq. 6's natural half / C, q = −log p / C − ½ log 2π (Eq. 7 as printed
    # negates both halves of Eq. 6 / C: it has −q here and +q on the proxies)
    return q


def proxy_from_score(q: torch.Tensor, loss: str, margin: float) -> torch.Tensor:
    """:func:`proxy_term` from the scores q (N,) already computed."""
    if loss == "logsigmoid":
        return F.softplus(-q - 0.5 * LOG_2PI)  # softplus(ℓ) = −log σ(−ℓ), bounded below by 0
    if loss == "hinge":
        return F.relu(margin - q)
    return -q  # paper: unbounded below — the affine translations can push u to infinity


def batch_loss(
    model: CLIPFlow,
    natural: torch.Tensor | None,
    proxy: torch.Tensor | None,
    cfg: TrainConfig,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Eq. 6 / C (or a bounded variant) on one batch of natural (B, D) and/or proxy (B, D)
    features.

    Returns the loss and its parts as detached 0-d tensors (no host sync per step).
    """
    # One flow pass over both halves: half the kernel launches of two passes; and one score
    # per row, shared by the loss terms and the logged mean scores.
    parts_in = [x for x in (natural, proxy) if x is not None]
    u, lj = model(torch.cat(parts_in) if len(parts_in) > 1 else parts_in[0])
    q = score_from(u, lj)  # (B,) or (2B,)
    total = torch.zeros((), device=u.device)
    parts: dict[str, torch.Tensor] = {}
    start = 0
    if natural is not None:
        end = start + len(natural)
        term = natural_from_score(q[start:end], cfg.loss).mean()
        total = total + term
        parts["natural"] = term.detach()
        parts["q_natural"] = q[start:end].mean().detach()
        start = end
    if proxy is not None:
        term = proxy_from_score(q[start:], cfg.loss, cfg.hinge_margin).mean()
        total = total + term
        parts["proxy"] = term.detach()
        parts["q_proxy"] = q[start:].mean().detach()
    return total, parts


def _check_finite(mean_loss: float, epoch: int, cfg: TrainConfig) -> None:
    # Checked once per epoch on the summed loss (a NaN anywhere propagates into the sum), so
    # the GPU never waits for the host inside an epoch.
    if not math.isfinite(mean_loss):
        hint = (
            " (loss=paper is unbounded below for proxies; try loss=logsigmoid)"
            if cfg.loss == "paper"
            else ""
        )
        raise TrainingDivergedError(
            f"training diverged: loss={mean_loss} in epoch {epoch + 1}{hint}"
        )


def fit(
    model: CLIPFlow,
    natural: torch.Tensor | RowSource | None,
    proxy: torch.Tensor | RowSource | None,
    cfg: TrainConfig,
    device: str | torch.device = "cpu",
    on_epoch: Callable[[int, CLIPFlow, list[dict]], None] | None = None,
    cpu_threads: int | None = CPU_TRAIN_THREADS,
    status: dict | None = None,
) -> list[dict]:
    """Train ``model`` in place and return one history row per epoch: ``epoch``, ``loss``, its
    parts (``natural``/``proxy``), the mean scores (``q_natural``/``q_proxy``), ``lr``, ``seconds``.

    Args:
        natural: natural features (V, N, D) — V augmented views, epoch e uses view e mod V.
        proxy: proxy features (V, N, D), row i is a proxy of natural image i (N+P pairs them).
            Either may be a :class:`~clipflow.features.stream.RowSource` (features left on disk):
            then they are streamed through buffers within ``cfg.ram_budget_gb``.
        on_epoch: called after each finished epoch with (epoch, model, history).
        cpu_threads: on CPU, intra-op threads while training (the caller's count is restored
            afterwards); None keeps the caller's.
        status: if given, ``status["cuda_graph"]`` is set to what the steps ran as
            (:attr:`StepRunner.status`: ``captured``, ``off``, ``failed: <reason>``, ...), after
            every epoch, so that a run's metadata says whether the fast path was in effect.
    """
    with train_threads(device, cpu_threads):
        return _fit(model, natural, proxy, cfg, device, on_epoch, status)


def train_threads(device: str | torch.device, threads: int | None):
    """On CPU, at most ``threads`` intra-op threads inside the block; restored on exit
    (:func:`clipflow.core.machine.cpu_threads`)."""
    return cpu_threads(device, threads)


def _fit(model, natural, proxy, cfg: TrainConfig, device, on_epoch, status) -> list[dict]:
    cfg.validate()
    natural = natural if cfg.mode in ("N", "N+P") else None
    proxy = proxy if cfg.mode in ("P", "N+P") else None
    ref = natural if natural is not None else proxy
    if ref is None or ref.shape[1] == 0:
        raise ValueError(f"mode {cfg.mode} needs features for its terms; got none")
    model.to(device).train()
    if not isinstance(ref, torch.Tensor):  # a RowSource: features streamed from disk
        return _fit_stream(model, natural, proxy, cfg, device, on_epoch, status)
    # All views on the device once: per-step host->device copies would dominate on a GPU.
    natural = natural.to(device).contiguous() if natural is not None else None
    proxy = proxy.to(device).contiguous() if proxy is not None else None
    runner, epoch_t = _step_runner(model, natural, proxy, cfg, device)
    gen = torch.Generator().manual_seed(cfg.seed)
    n = ref.shape[1]

    def run_epoch(epoch: int) -> int:
        epoch_t.fill_(epoch)
        order = torch.randperm(n, generator=gen).to(device)
        return _run_steps(runner, order, cfg.batch_size)

    return _train_loop(model, cfg, runner, run_epoch, on_epoch, status)


def _fit_stream(model, natural, proxy, cfg: TrainConfig, device, on_epoch, status) -> list[dict]:
    """:func:`fit` on :class:`~clipflow.features.stream.RowSource` features, one bounded buffer at a
    time (see clipflow/features/stream.py for the order; all in one buffer = the in-RAM order)."""
    sources = [s for s in (natural, proxy) if s is not None]
    views, n, dim = sources[0].shape
    budget = ram_budget_bytes(cfg.ram_budget_gb)
    rows = min(n, buffer_rows(budget, len(sources), dim, cfg.batch_size))
    log.info("streaming %d training rows through buffers of %d (%s)", n, rows, cfg.mode)
    # Static buffers (one view each): a captured CUDA graph keeps reading the same memory.
    bufs = [torch.zeros(1, rows, dim, device=device) for _ in sources]
    nat_buf = bufs[0] if natural is not None else None
    proxy_buf = bufs[-1] if proxy is not None else None
    runner, _ = _step_runner(model, nat_buf, proxy_buf, cfg, device)
    gen = torch.Generator().manual_seed(cfg.seed)

    def run_epoch(epoch: int) -> int:
        steps = 0
        for positions in epoch_buffers(n, rows, gen):
            m = len(positions)
            for src, buf in zip(sources, bufs):
                buf[0, :m].copy_(src.read(epoch % views, positions))
            order = torch.randperm(m, generator=gen).to(device)
            steps += _run_steps(runner, order, cfg.batch_size)
        return steps

    return _train_loop(model, cfg, runner, run_epoch, on_epoch, status)


def _run_steps(runner: StepRunner, order: torch.Tensor, batch_size: int) -> int:
    steps = math.ceil(len(order) / batch_size)
    for step in range(steps):
        runner(order[step * batch_size : (step + 1) * batch_size])
    return steps


def _train_loop(model, cfg: TrainConfig, runner, run_epoch, on_epoch, status) -> list[dict]:
    """The epochs: ``run_epoch(e)`` runs epoch e's steps and returns how many it ran."""
    history = []
    epochs = cfg.resolved_epochs()
    for epoch in tqdm(range(epochs), desc=f"train {cfg.mode}", unit="epoch"):
        start = time.perf_counter()
        steps = run_epoch(epoch)
        if status is not None:
            status["cuda_graph"] = runner.status
        row = {"epoch": epoch + 1, **{k: v / steps for k, v in runner.take_sums().items()}}
        _check_finite(row["loss"], epoch, cfg)
        # lr: constant (no schedule), recorded so that metrics.csv describes itself.
        row.update(lr=cfg.lr, seconds=time.perf_counter() - start)
        history.append(row)
        log.info("epoch %d/%d: %s", epoch + 1, epochs, epoch_line(row))
        if on_epoch is not None:
            on_epoch(epoch + 1, model, history)
    model.eval()
    if not history:  # unreachable after validate(); a trained-looking untrained flow is worse
        raise ValueError("training ran no epoch; nothing was learned")
    return history


def epoch_line(row: dict) -> str:
    """A history row as a log line: ``loss 0.6931  natural 0.3466  ...  lr 0.0001  1.2 s``."""
    parts = [f"{k} {row[k]:.5g}" for k in row if k not in ("epoch", "seconds")]
    if "seconds" in row:
        parts.append(f"{row['seconds']:.2f} s")
    return "  ".join(parts)


# ----------------------------------------------------------------------------- too short

# Fewer optimisation steps than this and a run is called too short to have learned. The
# paper's recipe (6,480 training images, batch 128, 10 epochs of N+P) makes 510 steps; Adam
# moves each weight by about lr per step, so 250 steps at lr 1e-4 move a weight at most ~0.025
# from its initialisation, and far fewer (a 150-photo folder: 20 steps) leave the flow at its
# random start (the natural-vs-proxy score gap of such a run ends near 0.004). A step count
# is known before training and is the same on every machine; a loss-plateau test over ten
# noisy epochs, or a gap bound, would depend on the backbone, dr_dim and loss.
MIN_STEPS = 250


def optimisation_steps(n_images: int, cfg: TrainConfig) -> int:
    """Adam steps of :func:`fit` on ``n_images`` training rows: batches per epoch × epochs."""
    return math.ceil(n_images / cfg.batch_size) * cfg.resolved_epochs()


def short_training_warning(n_images: int, cfg: TrainConfig, history: list[dict]) -> str | None:
    """A warning when the run made fewer than :data:`MIN_STEPS` optimisation steps, with the
    final natural-vs-proxy score gap (what little was learned) and how to train longer."""
    steps = optimisation_steps(n_images, cfg)
    if steps >= MIN_STEPS:
        return None
    last = history[-1] if history else {}
    gap = ""
    if "q_natural" in last and "q_proxy" in last:
        diff = last["q_proxy"] - last["q_natural"]
        gap = f"; the proxies' mean score ends {diff:.4g} above the naturals'"
    batches = math.ceil(n_images / cfg.batch_size)
    epochs = math.ceil(MIN_STEPS / max(1, batches))
    return (
        f"training ran only {steps} optimisation steps ({cfg.resolved_epochs()} epochs x "
        f"{batches} batches of {cfg.batch_size} on {n_images} "
        f"images), fewer than {MIN_STEPS}: too short to have learned{gap}; train on more "
        f"images, or longer (train.epochs={epochs}) or with smaller batches (train.batch_size)"
    )


def _step_runner(
    model: CLIPFlow,
    natural: torch.Tensor | None,
    proxy: torch.Tensor | None,
    cfg: TrainConfig,
    device,
) -> tuple[StepRunner, torch.Tensor]:
    """The runner of one full optimiser step, and the epoch counter (a device tensor) it reads.

    The step only touches device tensors that live as long as the training (features, the
    index buffer, the epoch counter), which is what lets StepRunner capture it as a graph.
    """
    on_cuda = torch.device(device).type == "cuda"
    capture = cfg.cuda_graph and on_cuda
    params = [p for p in model.parameters() if p.requires_grad]
    # Fused Adam on CUDA: one kernel for all parameters instead of a few per tensor. On CPU
    # the default (foreach) implementation is kept, so CPU numbers do not change.
    opt = torch.optim.Adam(params, lr=cfg.lr, capturable=capture, fused=True if on_cuda else None)
    epoch_t = torch.zeros((), dtype=torch.long, device=device)

    def step(idx: torch.Tensor) -> dict[str, torch.Tensor]:
        loss, parts = batch_loss(
            model, _view(natural, epoch_t, idx), _view(proxy, epoch_t, idx), cfg
        )
        opt.zero_grad(set_to_none=False)  # zeroed in place: the captured graph keeps its buffers
        loss.backward()
        opt.step()
        return {"loss": loss.detach(), **parts}

    return StepRunner(step, cfg.batch_size, device, cfg.cuda_graph), epoch_t


def _view(
    feats: torch.Tensor | None, epoch: torch.Tensor, idx: torch.Tensor
) -> torch.Tensor | None:
    """Rows ``idx`` of view ``epoch mod V`` of (V, N, D) features.

    Pure device arithmetic + index_select: nothing reads a value back to the host, which a
    CUDA graph capture would refuse (a 0-d tensor used as an index can be read back).
    """
    if feats is None:
        return None
    v, n, d = feats.shape
    rows = (epoch % v) * n + idx  # (B,) rows of the flattened (V·N, D) matrix
    return feats.reshape(v * n, d).index_select(0, rows)  # (B, D)
