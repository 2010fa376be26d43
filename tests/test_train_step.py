"""StepRunner (eager / CUDA-graph steps) and the training loop built on it."""

import logging
import math

import pytest
import torch

from clipflow.flow.config import FlowConfig, TrainConfig
from clipflow.flow.fit import batch_loss, fit
from clipflow.flow.model import CLIPFlow
from clipflow.flow.step import StepRunner


def _features(n=300, d=24, views=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    natural = torch.randn(views, n, d, generator=g)
    return natural, natural + 0.3 * torch.randn(views, n, d, generator=g)


def _counting_step(seen):
    def step(idx):
        seen.append(idx.clone())
        return {"rows": torch.tensor(float(len(idx))), "sum": idx.sum().float()}

    return step


def test_runner_sums_full_and_short_batches_and_resets():
    seen = []
    runner = StepRunner(_counting_step(seen), batch_size=4, device="cpu", cuda_graph=True)
    order = torch.randperm(10, generator=torch.Generator().manual_seed(0))
    for start in range(0, 10, 4):
        runner(order[start : start + 4])
    assert not runner.captured  # no graphs on CPU, even when asked for
    assert [len(i) for i in seen] == [4, 4, 2]
    assert torch.equal(torch.cat(seen), order)
    assert runner.take_sums() == {"rows": 10.0, "sum": 45.0}
    assert runner.take_sums() == {"rows": 0.0, "sum": 0.0}


def _reference_fit(model, natural, proxy, cfg):
    """The plain loop the runner replaced: fresh Adam, one eager step per batch."""
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    n, losses = natural.shape[1], []
    for epoch in range(cfg.resolved_epochs()):
        order, total = torch.randperm(n, generator=gen), 0.0
        steps = math.ceil(n / cfg.batch_size)
        for s in range(steps):
            idx = order[s * cfg.batch_size : (s + 1) * cfg.batch_size]
            v = epoch % natural.shape[0]
            loss, _ = batch_loss(model, natural[v, idx], proxy[v, idx], cfg)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item()
        losses.append(total / steps)
    return losses


def test_fit_matches_the_plain_loop_on_cpu():
    natural, proxy = _features()
    cfg = TrainConfig(mode="N+P", epochs=3, batch_size=64, lr=1e-3)
    torch.manual_seed(0)
    ours = CLIPFlow(24, FlowConfig(dr_dim=8, n_blocks=2))
    torch.manual_seed(0)
    ref = CLIPFlow(24, FlowConfig(dr_dim=8, n_blocks=2))
    history = fit(ours, natural, proxy, cfg)
    expected = _reference_fit(ref, natural, proxy, cfg)
    assert [row["loss"] for row in history] == pytest.approx(expected, rel=1e-5)
    for a, b in zip(ours.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graph_training_matches_eager(caplog):
    natural, proxy = _features(n=1000, d=64)
    histories, params = [], []
    for graph in (False, True):
        torch.manual_seed(0)
        model = CLIPFlow(64, FlowConfig(dr_dim=16))
        with caplog.at_level(logging.INFO, logger="clipflow.flow.step"):
            histories.append(
                fit(model, natural, proxy, TrainConfig(epochs=3, cuda_graph=graph), "cuda")
            )
        params.append([p.detach().cpu() for p in model.parameters()])
    assert "captured as a CUDA graph" in caplog.text
    for eager_row, graph_row in zip(*histories):
        assert graph_row == pytest.approx(eager_row, rel=1e-4, abs=1e-6)
    for a, b in zip(*params):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_adam_is_fused_only_on_cuda(monkeypatch):
    from clipflow.flow import fit as train

    seen = []
    real_adam = torch.optim.Adam

    def recording_adam(params, **kwargs):
        seen.append(kwargs)
        return real_adam(params, **kwargs)

    monkeypatch.setattr(train.torch.optim, "Adam", recording_adam)
    natural, proxy = _features(n=40, d=8)
    fit(CLIPFlow(8, FlowConfig(dr_dim=4, n_blocks=1)), natural, proxy, TrainConfig(epochs=1))
    assert seen and seen[0]["fused"] is None  # CPU: the default implementation, numbers unchanged
    if torch.cuda.is_available():
        fit(
            CLIPFlow(8, FlowConfig(dr_dim=4, n_blocks=1)),
            natural,
            proxy,
            TrainConfig(epochs=1),
            "cuda",
        )
        assert seen[1]["fused"] is True
