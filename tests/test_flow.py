"""The flow is a proper density: invertible, exact log-det, integrates to one."""

import math

import pytest
import torch

from clipflow.checkpoints.checkpoint import load_checkpoint
from clipflow.checkpoints.save import save_checkpoint
from clipflow.errors import ClipflowError
from clipflow.flow.config import BLOCKS, FlowConfig
from clipflow.flow.model import CLIPFlow, build_flow, log_prob_from, score_from


def _flow(dim: int, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    flow = build_flow(dim, FlowConfig(n_blocks=4, hidden_mult=2, **kw)).double()
    # Random init is close to identity; scale the last layers so the test sees real couplings.
    with torch.no_grad():
        for m in flow.modules():
            if isinstance(m, torch.nn.Linear):
                m.weight.mul_(1.5)
    return flow


@pytest.mark.parametrize("block", BLOCKS)
def test_inverse_round_trip_and_logdets_cancel(block):
    flow = _flow(6, block=block)
    z = torch.randn(32, 6, dtype=torch.float64)
    u, lj_fwd = flow(z)
    z_back, lj_rev = flow(u, rev=True)
    assert torch.allclose(z_back, z, atol=1e-9)
    assert torch.allclose(lj_fwd + lj_rev, torch.zeros(32, dtype=torch.float64), atol=1e-9)
    assert lj_fwd.abs().max() > 1e-3  # the flow is not the identity


@pytest.mark.parametrize("block", BLOCKS)
def test_logdet_equals_autograd_jacobian(block):
    flow = _flow(5, block=block)
    for z in torch.randn(4, 5, dtype=torch.float64):
        jac = torch.autograd.functional.jacobian(lambda x: flow(x[None])[0][0], z)
        _, logabsdet = torch.linalg.slogdet(jac)
        assert torch.allclose(flow(z[None])[1][0], logabsdet, atol=1e-9)


@pytest.mark.parametrize("block", BLOCKS)
def test_two_dimensional_density_integrates_to_one(block):
    flow = _flow(2, block=block)
    step = 0.04
    axis = torch.arange(-20, 20, step, dtype=torch.float64) + step / 2
    grid = torch.cartesian_prod(axis, axis)
    with torch.no_grad():
        u, lj = flow(grid)
        density = log_prob_from(u, lj).exp()
    assert abs(float(density.sum()) * step * step - 1.0) < 0.01


def test_score_is_eq8_and_matches_log_prob():
    torch.manual_seed(1)
    model = CLIPFlow(12, FlowConfig(dr_dim=6, n_blocks=2))
    feats = torch.randn(9, 12)
    u, lj = model(feats)
    c = u.shape[1]
    by_hand = (u.pow(2).sum(1) - 2 * lj) / (2 * c)
    assert torch.allclose(model.score(feats), by_hand, atol=1e-6)
    assert torch.allclose(
        score_from(u, lj), -model.log_prob(feats) / c - 0.5 * math.log(2 * math.pi), atol=1e-5
    )


def test_embed_is_unit_norm_and_no_dr_keeps_width():
    model = CLIPFlow(10, FlowConfig(dr_dim=4))
    assert torch.allclose(model.embed(torch.randn(3, 10)).norm(dim=1), torch.ones(3), atol=1e-6)
    wide = CLIPFlow(10, FlowConfig(dr_dim=0, normalize=False))
    x = torch.randn(3, 10)
    assert wide.dim == 10 and torch.equal(wide.embed(x), x)


def test_permutations_follow_seed_and_leave_numpy_rng_alone():
    import numpy as np

    np.random.seed(123)
    expected = np.random.rand()
    np.random.seed(123)
    a = build_flow(8, FlowConfig(perm_seed=1))
    assert np.random.rand() == expected
    b = build_flow(8, FlowConfig(perm_seed=1))
    c = build_flow(8, FlowConfig(perm_seed=2))
    perms = lambda f: [p for n, p in f.named_parameters() if n.endswith(".perm")]  # noqa: E731
    assert all(torch.equal(x, y) for x, y in zip(perms(a), perms(b)))
    assert any(not torch.equal(x, y) for x, y in zip(perms(a), perms(c)))


@pytest.mark.parametrize("block", BLOCKS)
def test_backward_gives_finite_gradients_to_every_trainable_weight(block):
    torch.manual_seed(0)
    model = CLIPFlow(12, FlowConfig(dr_dim=6, n_blocks=3, block=block))
    u, lj = model(torch.randn(16, 12))
    score_from(u, lj).mean().backward()
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert params and all(p.grad is not None for _, p in params)
    assert all(torch.isfinite(p.grad).all() for _, p in params)
    assert all(p.grad.abs().sum() > 0 for n, p in params if "subnet" in n)


def test_allinone_block_trains_with_a_tanh_ended_subnet():
    # FrEIA 0.2 scales the subnet output in place (``a *= 0.1``): with a subnet whose last op
    # saves its output, backward fails there. Our subclass does it out of place.
    import FrEIA.framework as Ff

    from clipflow.flow.model import AllInOneBlock

    def tanh_subnet(c_in, c_out):
        return torch.nn.Sequential(
            torch.nn.Linear(c_in, 8), torch.nn.Linear(8, c_out), torch.nn.Tanh()
        )

    flow = Ff.SequenceINN(6)
    flow.append(AllInOneBlock, subnet_constructor=tanh_subnet)
    u, lj = flow(torch.randn(4, 6))
    (u.pow(2).sum() - lj.sum()).backward()
    assert all(torch.isfinite(p.grad).all() for p in flow.parameters() if p.requires_grad)


def test_block_types_differ_and_unknown_block_is_one_clear_error():
    glow = build_flow(6, FlowConfig(n_blocks=2, block="glow"))
    aio = build_flow(6, FlowConfig(n_blocks=2, block="allinone"))
    names = lambda f: {type(m).__name__ for m in f.module_list}  # noqa: E731
    assert names(glow) == {"GLOWCouplingBlock", "PermuteRandom"}
    assert names(aio) == {"AllInOneBlock"}
    with pytest.raises(ClipflowError, match="flow.block='realnvp'"):
        FlowConfig(block="realnvp")


def test_allinone_permutations_follow_seed_and_leave_numpy_rng_alone():
    import numpy as np

    np.random.seed(7)
    expected = np.random.rand()
    np.random.seed(7)
    a = build_flow(8, FlowConfig(perm_seed=1, block="allinone"))
    assert np.random.rand() == expected
    b = build_flow(8, FlowConfig(perm_seed=1, block="allinone"))
    c = build_flow(8, FlowConfig(perm_seed=2, block="allinone"))
    perms = lambda f: [p for n, p in f.named_parameters() if n.endswith("w_perm")]  # noqa: E731
    assert len(perms(a)) == 8
    assert all(torch.equal(x, y) for x, y in zip(perms(a), perms(b)))
    assert any(not torch.equal(x, y) for x, y in zip(perms(a), perms(c)))


@pytest.mark.parametrize("block", BLOCKS)
def test_checkpoint_keeps_the_block(block, tmp_path):
    torch.manual_seed(0)
    model = CLIPFlow(12, FlowConfig(dr_dim=6, n_blocks=2, block=block))
    save_checkpoint(tmp_path, model, 0.5, {"name": "tiny"}, {})
    loaded = load_checkpoint(tmp_path)
    assert loaded.model.cfg.block == block
    assert loaded.meta["flow"]["block"] == block
    feats = torch.randn(5, 12)
    assert torch.allclose(loaded.model.score(feats), model.eval().score(feats), atol=1e-6)
