"""UQ / reward heads (bins, entropies, training without touching the flow map) and gradient paths to actions."""

from __future__ import annotations

import math

import pytest
import torch

from vidplan_core.models import (
    bin_centers,
    bin_edges,
    build_suite,
    entropy,
    expected_value,
    monte_carlo_value,
    normalized_entropy,
    to_bins,
)
from vidplan_core.sampling import flow_map_sample


@pytest.fixture(scope="module")
def suite():
    torch.set_num_threads(1)
    return build_suite("tiny", seed=0)


def _inputs(wm, B=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    c = wm.config
    hist = torch.randn(B, c.num_history, *wm.latent_shape, generator=g)
    act = torch.rand(B, c.num_history + c.num_future, 7, generator=g) * 2 - 1
    return hist, act


def test_bin_utilities():
    e = bin_edges(0.0, 10.0, 30)
    assert e.shape == (31,) and e[0] == 0 and e[-1] == 10
    c = bin_centers(0.0, 1.0, 20)
    assert c[0] == pytest.approx(0.025) and c[-1] == pytest.approx(0.975)
    idx = to_bins(torch.tensor([-1.0, 0.0, 0.34, 9.99, 10.0, 50.0]), 0.0, 10.0, 30)
    assert idx.tolist() == [0, 0, 1, 29, 29, 29]
    uniform = torch.zeros(5, 30)
    torch.testing.assert_close(normalized_entropy(uniform), torch.ones(5))
    torch.testing.assert_close(entropy(uniform), torch.full((5,), math.log(30)))
    onehot = torch.full((5, 30), -1e4)
    onehot[:, 7] = 0
    assert torch.all(normalized_entropy(onehot) < 1e-3)
    torch.testing.assert_close(expected_value(onehot, bin_centers(0.0, 10.0, 30)),
                               torch.full((5,), float(bin_centers(0.0, 10.0, 30)[7])))
    v = monte_carlo_value(torch.tensor([1.0, 0.0]), torch.tensor([3, 3]), 10, gamma=0.9)
    torch.testing.assert_close(v, torch.tensor([0.9 ** 7, 0.0]))


def test_heads_probabilities_and_entropy_ranges(suite):
    wm, uq, rh = suite.world_model, suite.uq_head, suite.reward_head
    lat = torch.randn(2, wm.config.num_future, *wm.latent_shape) * 3
    act = torch.rand(2, wm.config.num_future, 7)
    with torch.no_grad():
        lg = uq(lat)
        assert lg.shape == (2, 3, 4, 24, 8, 30)
        torch.testing.assert_close(lg.softmax(-1).sum(-1), torch.ones(lg.shape[:-1]))
        u = uq.uncertainty(lat)
        assert u["h"].shape == lat.shape and float(u["h"].min()) >= 0 and float(u["h"].max()) <= 1 + 1e-6
        assert float(u["expected_error"].min()) >= 0 and float(u["expected_error"].max()) <= 10
        rl = rh(lat, act)
        assert rl.shape == (2, 3, 20)
        torch.testing.assert_close(rl.softmax(-1).sum(-1), torch.ones(2, 3))
        v = rh.value(lat, act)
        assert 0 <= float(v["value"].min()) and float(v["value"].max()) <= 1
        assert 0 <= float(v["h"].min()) and float(v["h"].max()) <= 1 + 1e-6
    with pytest.raises(ValueError, match=r"actions: expected shape \(2, 3, 7\)"):
        rh(lat, act[:, :2])


def test_head_training_never_touches_flow_map(suite):
    fm, uq, rh = suite.flow_map, suite.uq_head, suite.reward_head
    hist, act = _inputs(fm.model)
    fm.zero_grad(set_to_none=True)
    pred = flow_map_sample(fm, hist, act, num_steps=1)  # with grad
    true = pred.detach() + 0.5 * torch.randn_like(pred)
    opt_u = torch.optim.Adam(uq.parameters(), lr=1e-3)
    opt_r = torch.optim.Adam(rh.parameters(), lr=1e-3)
    fut_act = act[:, fm.model.config.num_history:]
    values = torch.tensor([[0.2, 0.5, 0.9], [0.0, 0.0, 0.1]])
    l0u = float(uq.loss(pred, true).detach())
    l0r = float(rh.loss(pred, fut_act, values).detach())
    for _ in range(5):
        uq.training_step(opt_u, pred, true)
        rh.training_step(opt_r, pred, fut_act, values)
    assert all(p.grad is None for p in fm.parameters())
    with torch.no_grad():
        assert float(uq.loss(pred, true)) < l0u and float(rh.loss(pred, fut_act, values)) < l0r
    uq.eval()
    rh.eval()


def test_gradient_from_reward_head_reaches_actions(suite):
    fm, rh = suite.flow_map, suite.reward_head
    hist, act = _inputs(fm.model, seed=1)
    act = act.clone().requires_grad_(True)
    T = fm.model.config.num_history
    pred = flow_map_sample(fm, hist, act, num_steps=2, noise=torch.zeros(2, 3, *fm.model.latent_shape))
    out = rh.value(pred, act[:, T:])
    (out["value"] * (1 - out["h"])).sum().backward()
    g = act.grad
    assert g is not None and torch.isfinite(g).all()
    assert float(g[:, T:].abs().sum()) > 0
    # the flow map alone also carries gradient to the actions (through the action tokens)
    act2 = act.detach().clone().requires_grad_(True)
    pred = flow_map_sample(fm, hist, act2, num_steps=1, noise=torch.zeros(2, 3, *fm.model.latent_shape))
    pred.square().mean().backward()
    assert float(act2.grad[:, T:].abs().sum()) > 0
