"""planning.objective: weights, suppression, centroid, hierarchical reward, refinement value (all differentiable)."""

from __future__ import annotations

import math

import pytest
import torch

from vidplan_core.planning.objective import (
    entropy_weighted_value,
    hierarchical_reward,
    soft_centroid,
    suppress_semantic_map,
    uncertainty_weight,
)


def test_uncertainty_weights():
    h = torch.tensor([0.0, 0.5, 1.0, 1.5, -0.2])
    torch.testing.assert_close(uncertainty_weight(h, "exp", 2.0), torch.exp(-2.0 * h.clamp(0, 1)))
    torch.testing.assert_close(uncertainty_weight(h, "linear"), 1 - h.clamp(0, 1))
    with pytest.raises(ValueError, match="unknown uncertainty weighting"):
        uncertainty_weight(h, "cubic")  # type: ignore[arg-type]


def test_suppression_is_per_pixel():
    sim = torch.zeros(1, 1, 4, 4)
    sim[..., 0, 0] = 1.0
    sim[..., 3, 3] = 1.0
    unc = torch.zeros(1, 1, 8, 8)
    unc[..., 6:, 6:] = 1.0  # bottom-right patch fully uncertain (2×2 pixels per patch)
    out = suppress_semantic_map(sim, unc, "linear")
    assert out[0, 0, 0, 0] == pytest.approx(1.0)
    assert out[0, 0, 3, 3] == pytest.approx(0.0)
    # centroid moves to the certain peak
    c = soft_centroid(out, temperature=0.05)[0, 0]
    assert c[0] < 0.2 and c[1] < 0.2
    with pytest.raises(ValueError, match="leading dimensions"):
        suppress_semantic_map(sim, unc[0])


def test_hierarchical_reward_max_over_frames_and_centring():
    r_s = torch.tensor([[0.2, 0.9, 0.1], [0.5, 0.5, 0.5]])
    h = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    score, per_frame = hierarchical_reward(r_s, h, None, kind="exp", kappa=3.0)
    assert per_frame[0, 1] == pytest.approx(0.9 * math.exp(-3))
    assert score[0] == pytest.approx(0.2) and score[1] == pytest.approx(0.5)
    c = torch.full((2, 3, 2), 0.5)
    c[1] = 1.0  # off-centre by sqrt(0.5)
    score2, _ = hierarchical_reward(r_s, h, c, lam=1.0, kappa=3.0)
    assert score2[0] == pytest.approx(0.2, abs=1e-5)
    assert score2[1] == pytest.approx(0.5 - math.sqrt(0.5), abs=1e-5)


def test_entropy_weighted_value_gradients():
    v = torch.tensor([[0.2, 0.8]], requires_grad=True)
    h = torch.tensor([[0.1, 0.4]], requires_grad=True)
    ent = torch.tensor([[0.5, 0.0]])
    j = entropy_weighted_value(v, h, ent, kind="exp", kappa=1.0, beta=1.0)
    expected = (math.exp(-0.1) * 0.5 * 0.2 + math.exp(-0.4) * 1.0 * 0.8) / 2
    assert j.item() == pytest.approx(expected, rel=1e-6)
    j.sum().backward()
    assert v.grad is not None and (v.grad > 0).all()  # more value → higher J
    assert h.grad is not None and (h.grad < 0).all()  # more uncertainty → lower J
