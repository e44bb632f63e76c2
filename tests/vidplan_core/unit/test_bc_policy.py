"""The behaviour-cloned nominal policy (issue: the paper's π0.5 role): the model, its training target, the bundle
part, the NominalPolicy adapter on the planner's prepared frames, and the bc / bc+vidplan evaluation variants."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vidplan_core.models import BCPolicy
from vidplan_core.spaces import ActionNormalizer

POSE = np.array([0.45, 0.0, 0.35, np.pi, 0.0, 0.0, 0.0])


def _norm() -> ActionNormalizer:
    return ActionNormalizer([0.2, -0.5, 0.0, 2.5, -0.6, -0.6, 0.0], [0.8, 0.5, 0.7, 3.8, 0.6, 0.6, 1.0],
                            [np.pi, 0.0, 0.0])


def test_an_untrained_policy_holds_and_its_target_inverts_act():
    """Zero last layer: the answer is the current pose for every step (the safe nominal). The training target of
    a future chunk, fed back through act(), gives that chunk (so learning the target is learning the chunk)."""
    torch.manual_seed(0)
    pol = BCPolicy(latent_channels=4, latent_height=8, latent_width=6, num_history=2, horizon=3, text_dim=5,
                   channels=(8, 8), pooled=(2, 2), hidden=32)
    pol.set_action_stats(_norm())
    lat, text = torch.randn(2, 2, 4, 8, 6), torch.randn(2, 5)
    pose = torch.as_tensor(np.stack([POSE, POSE + np.array([0.05, 0.1, -0.05, 0, 0, 0.1, 1.0])]), dtype=torch.float32)
    out = pol.act(lat, pose, text)
    assert out.shape == (2, 3, 7)
    torch.testing.assert_close(out, pose[:, None].expand(2, 3, 7), atol=1e-5, rtol=0)
    future = pose[:, None] + torch.tensor([0.01, -0.02, 0.03, 0.0, 0.0, 0.05, 0.0]) * torch.arange(1, 4)[:, None]
    target = pol.targets(pose, future)
    n = pol.normalizer
    back = n.denormalize(n.normalize(pose)[:, None] + target)
    torch.testing.assert_close(back, future, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="text embedding"):
        pol(lat, pose, None)
    with pytest.raises(ValueError, match="latents"):
        pol(lat[:, :1], pose, text)


def test_the_policy_learns_which_way_the_scene_says_to_move():
    """A blob on the left or right of the latent image says "move +y" or "move −y": after a few hundred Adam steps
    the policy answers the right direction (> 3 cm at the last step) for both; untrained it answered hold."""
    torch.manual_seed(1)
    pol = BCPolicy(latent_channels=2, latent_height=8, latent_width=8, num_history=1, horizon=3, text_dim=0,
                   channels=(8, 16), pooled=(2, 2), hidden=64)
    pol.set_action_stats(_norm())

    def batch(n: int):
        side = torch.randint(0, 2, (n,))
        lat = 0.1 * torch.randn(n, 1, 2, 8, 8)
        lat[side == 0, 0, 0, :, :3] += 2.0
        lat[side == 1, 0, 0, :, 5:] += 2.0
        pose = torch.as_tensor(POSE, dtype=torch.float32).repeat(n, 1)
        step = torch.zeros(n, 7)
        step[:, 1] = torch.where(side == 0, 0.02, -0.02)
        future = pose[:, None] + step[:, None] * torch.arange(1, 4)[:, None]
        return lat, pose, future, side

    opt = torch.optim.Adam(pol.parameters(), lr=3e-3)
    for _ in range(300):
        lat, pose, future, _ = batch(32)
        loss = ((pol(lat, pose) - pol.targets(pose, future)) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    lat, pose, future, side = batch(64)
    dy = (pol.act(lat, pose)[:, -1, 1] - pose[:, 1]).numpy()
    assert (dy[side.numpy() == 0] > 0.03).all() and (dy[side.numpy() == 1] < -0.03).all(), dy


def _bundle_with_policy(tmp_path: Path) -> Path:
    from vidplan_core.runtime.bundle import random_planner_models
    from vidplan_core.runtime.bundle_index import write_bundle_index

    pm = random_planner_models("tiny", seed=0)
    d = tmp_path / "model"
    pm.save(d)
    C, h, w = pm.suite.autoencoder.latent_shape
    torch.manual_seed(2)
    pol = BCPolicy(latent_channels=C, latent_height=h, latent_width=w, num_history=pm.num_history,
                   horizon=pm.horizon, text_dim=pm.text_dim() if pm.uses_text else 0, channels=(8, 8),
                   pooled=(2, 2), hidden=32)
    pol.set_action_stats(_norm())
    with torch.no_grad():  # a policy that moves: +3 cm per step along x whatever it sees (normalised units)
        pol.head[-1].bias.copy_(torch.tensor([0.1, 0, 0, 0, 0, 0, 0] * pm.horizon) * torch.arange(
            1, pm.horizon + 1).repeat_interleave(7))
    pol.save_pretrained(str(d / "policy"))
    write_bundle_index(d)
    return d


def test_the_bundle_policy_plans_from_the_prepared_history(tmp_path):
    """bundle.json names policy/ (checksummed); BCNominalPolicy reads the planner's prepared frames through the
    bundle's autoencoder and instruction embedding and answers (H, 7) poses from the current one; without frames,
    or from a bundle without a policy, it says what is missing."""
    from vidplan_core.planning.nominal import BCNominalPolicy, NominalObservation
    from vidplan_core.runtime.bundle_index import BundleError, read_bundle_index
    from vidplan_core.runtime.loader import load_planner_models

    d = _bundle_with_policy(tmp_path)
    idx = read_bundle_index(d)
    assert idx.parts["policy"] == "policy" and "policy" in (idx.checksums or {})
    models = load_planner_models(d)
    nom = BCNominalPolicy.from_bundle(d, models)
    cfg = models.suite.autoencoder.config
    frames = np.random.default_rng(0).integers(0, 255, (models.num_history, 3, 3, cfg.view_height,
                                                        cfg.view_width), dtype=np.uint8)
    chunk = nom.infer(NominalObservation(ee_pose=POSE, instruction="touch the red cube", frames=frames))
    assert chunk.shape == (models.horizon, 7) and np.isfinite(chunk).all()
    assert np.all(np.diff(chunk[:, 0]) > 0) and chunk[0, 0] > POSE[0]  # the policy's +x motion
    np.testing.assert_allclose(chunk[:, 1:3], np.repeat(POSE[None, 1:3], models.horizon, 0), atol=1e-5)
    with pytest.raises(ValueError, match="prepared history frames"):
        nom.infer(NominalObservation(ee_pose=POSE, instruction="x"))
    bare = tmp_path / "bare"
    from vidplan_core.runtime.bundle import random_planner_models

    random_planner_models("tiny", seed=0).save(bare)
    with pytest.raises(BundleError, match="policy"):
        BCNominalPolicy.from_bundle(bare)


def test_bc_and_bc_plus_vidplan_run_closed_loop_and_are_opt_in(tmp_path):
    """The paper's comparison in simulation: ``bc`` executes the policy's chunks, ``bc+vidplan`` scores perturbations
    of them; neither is in the default variant list (a bundle needs a policy), and asking for them with a bundle
    without one is an error naming the policy before any episode runs."""
    from vidplan_app.jobs.closed_loop import DEFAULT_VARIANTS, ClosedLoopConfig, ClosedLoopError, run_closed_loop
    from vidplan_core.runtime.bundle import random_planner_models

    assert "bc" not in DEFAULT_VARIANTS and "bc+vidplan" not in DEFAULT_VARIANTS
    d = _bundle_with_policy(tmp_path)
    base = dict(model=str(d), episodes=1, episodes_other=1, clutter=[0], tasks=["touch"], seed=1, width=96,
                height=64, backend="torch")
    res = run_closed_loop(ClosedLoopConfig(**base, variants=["bc", "bc+vidplan"],
                                           overrides={"episode_steps": 12}), tmp_path / "out")
    eps = {e["variant"]: e for e in res["episodes"]}
    assert set(eps) == {"bc", "bc+vidplan"}
    assert eps["bc"]["cycles"] >= 2 and eps["bc"]["steps"] == 12 and eps["bc+vidplan"]["cycles"] >= 1
    assert eps["bc+vidplan"]["plan_s_mean"] > 0
    bare = tmp_path / "bare"
    random_planner_models("tiny", seed=0).save(bare)
    with pytest.raises(ClosedLoopError, match="policy"):
        run_closed_loop(ClosedLoopConfig(**{**base, "model": str(bare)}, variants=["bc"],
                                         overrides={"episode_steps": 6}), tmp_path / "out2")


def test_nominal_chunks_are_bounded_by_the_executors_box():
    """A nominal chunk that dips under the table limit (a learned policy imitating a touch) yields perturbation
    candidates inside the workspace box, as the basis directions are, instead of chunks the executor rejects whole."""
    from vidplan_core.kinematics import PandaKinematics
    from vidplan_core.planning.nominal import ReplayPolicy
    from vidplan_core.planning.proposals import clip_to_workspace
    from vidplan_core.planning.session import PlanningSession, SessionConfig
    from vidplan_core.runtime.bundle import random_planner_models
    from vidplan_core.runtime.torch_backend import TorchBackend

    low = np.repeat(POSE[None], 12, 0)
    low[:, 2] = np.linspace(0.05, -0.05, 12)  # down through z = 0
    clipped = clip_to_workspace(low, [0.2, -0.45, 0.02], [0.8, 0.45, 0.7])
    assert clipped[:, 2].min() == pytest.approx(0.02) and np.array_equal(clipped[:, :2], low[:, :2])
    pm = random_planner_models("tiny", seed=0)
    backend = TorchBackend(pm, flow_steps=1)
    cfg = SessionConfig.model_validate({"proposals": {"num_nominal": 6, "workspace_min": [0.2, -0.45, 0.02],
                                                      "workspace_max": [0.8, 0.45, 0.7]}})
    session = PlanningSession(backend, PandaKinematics(), cfg, nominal=ReplayPolicy(low, backend.horizon))
    q = np.array([0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785])  # the Panda's home
    props = session.proposals(q, POSE, "touch the red cube")
    nominal = props.actions[[i for i, lab in enumerate(props.labels) if lab.startswith("nominal")]]
    assert len(nominal) == 6 and nominal[..., 2].min() >= cfg.proposals.workspace_min[2] - 1e-12


def test_serve_openpi_refuses_a_bc_nominal_without_a_policy(tmp_path):
    """`vidplan serve openpi --nominal bc` on a bundle without policy/ exits 2 naming it, before serving."""
    from typer.testing import CliRunner

    from vidplan_app.cli import app
    from vidplan_core.runtime.bundle import random_planner_models

    bare = tmp_path / "bare"
    random_planner_models("tiny", seed=0).save(bare)
    r = CliRunner().invoke(app, ["serve", "openpi", "--model", str(bare), "--backend", "torch", "--nominal", "bc",
                                 "--num-nominal", "4", "--port", "1"])
    assert r.exit_code == 2, r.output
    assert "policy" in r.output
