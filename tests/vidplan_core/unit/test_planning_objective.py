"""planning.objective: weights, suppression, centroid, hierarchical reward, refinement value (all differentiable)."""

from __future__ import annotations

import math

import pytest
import torch

from vidplan_core.objective import (
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


def test_uncertainty_can_only_lower_a_score():
    """For every base score (positive or negative), more uncertainty never gives a higher reward; with w = 1 the
    reward is the base score. (The plain product w·b raised negative scores towards 0.)"""
    import torch

    from vidplan_core.objective import frame_reward, hierarchical_reward

    r_s = torch.linspace(-1, 1, 21)[:, None].repeat(1, 3)
    dist = torch.full_like(r_s, 0.3)
    prev = None
    for h in torch.linspace(0, 1, 11):
        r = frame_reward(r_s, torch.full_like(r_s, float(h)), dist, lam=0.5, kappa=3.0)
        if prev is None:
            assert torch.allclose(r, r_s - 0.5 * dist)
        else:
            assert (r <= prev + 1e-12).all()
        prev = r
    neg = torch.tensor([[-0.2, -0.1]])
    assert (hierarchical_reward(neg, torch.tensor([[0.9, 0.9]]))[0] < hierarchical_reward(neg, torch.zeros(1, 2))[0]
            ).all()
    lin = frame_reward(neg, torch.tensor([[0.5, 0.5]]), kind="linear")
    assert torch.allclose(lin, neg * 1.5)


def test_centring_map_comes_from_the_wrist_view_by_default():
    """The centring term's semantic map is computed on ``centring_view`` (default 2, the wrist camera, whose image
    centre is under the gripper) while the semantic score stays on the scored view; the export records the view."""
    import torch

    from vidplan_core.runtime.bundle import random_planner_models
    from vidplan_core.runtime.graphs import SemanticGraph
    from vidplan_core.runtime.torch_backend import build_graphs

    torch.manual_seed(0)
    models = random_planner_models("tiny", seed=0)
    assert models.centring_view == 2 and models.semantic_view == 0
    g = build_graphs(models, 1)["semantic"]
    assert (g.view, g.map_views) == (0, (2,))
    c, h, w = models.suite.autoencoder.latent_shape
    lat = torch.randn(2, 3, c, h, w)
    text = torch.nn.functional.normalize(torch.randn(1, models.text_dim()), dim=-1)
    with torch.no_grad():
        score, sim = g(lat, text)
        score0, sim0 = SemanticGraph(models.suite.autoencoder, models.scorer, 0)(lat, text)
        _, sim2 = SemanticGraph(models.suite.autoencoder, models.scorer, 2)(lat, text)
    assert torch.allclose(score, score0) and torch.allclose(sim, sim2) and not torch.allclose(sim, sim0)
