"""Grounded scorer data and training end to end: MuJoCo segmentation labels where the objects are, shards that
keep held-out combinations out, and `vidplan train grounded` writing a loadable scorer with its evaluation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vidplan_core.calibration import load_calibration
from vidplan_core.training.config import HELD_OUT_COMBINATIONS

pytestmark = pytest.mark.unit


def _project(cam, p):
    T = np.linalg.inv(cam.transform())
    q = T[:3, :3] @ p + T[:3, 3]
    return cam.fx * q[0] / q[2] + cam.cx, cam.fy * q[1] / q[2] + cam.cy


def test_segmentation_labels_sit_where_the_objects_project():
    from vidplan_sim.env import SimEnv

    env = SimEnv(width=320, height=180)
    try:
        layout = env.reset(seed=3, clutter=1, task="touch the red cube")
        cal = load_calibration()
        hits = 0
        for view in ("left", "right"):
            lab = env.render_labels(view)
            assert lab.shape == (180, 320) and lab.dtype == np.uint8
            assert (lab == SimEnv.LABEL_ROBOT).sum() > 100 and (lab == SimEnv.LABEL_BOWL).sum() > 20
            for i, o in enumerate(layout.objects):
                u, v = _project(cal.cameras[view], env.object_pose(o.name)[:3])
                patch = lab[int(v) - 1:int(v) + 2, int(u) - 1:int(u) + 2]
                hits += int((patch == SimEnv.LABEL_FIRST_OBJECT + i).any())
        assert hits >= 2 * len(layout.objects) - 1  # at most one occlusion by the arm or the bowl
        q = env.joint_positions() + 0.2
        env.pose_arm(q, gripper_width=0.02)
        assert np.allclose(env.joint_positions(), q) and abs(env.gripper_width() - 0.02) < 1e-6
        with pytest.raises(ValueError, match="7 finite"):
            env.pose_arm(np.zeros(6))
    finally:
        env.close()


def test_contact_poses_put_the_hand_against_the_target(tmp_path):
    from scipy.ndimage import binary_dilation

    from vidplan_sim.env import SimEnv
    from vidplan_sim.grounding_data import generate_grounding_shard

    targets = [("red", "cube"), ("blue", "ball"), ("green", "cylinder")]
    shards = {}
    for p in (0.0, 1.0):
        path = generate_grounding_shard(tmp_path / f"p{p}.npz", range(500, 504), targets,
                                        contact_prob=p, contact_target_prob=1.0, progress=False)["path"]
        shards[p] = np.load(path)["labels"]  # (N, 3, H, W)
    target = SimEnv.LABEL_FIRST_OBJECT  # the layout's target is object 0

    def touching(lab):  # robot pixels within 2 px of target pixels in an exterior view
        return any((binary_dilation(lab[v] == SimEnv.LABEL_ROBOT, iterations=2) & (lab[v] == target)).any()
                   for v in (0, 1))

    # every contact pose shows the hand against the target in an exterior view and the target under the wrist
    # camera; random poses above the workspace mostly do neither (the scorer never saw a hidden target)
    assert all(touching(lab) for lab in shards[1.0])
    assert sum(touching(lab) for lab in shards[0.0]) <= len(shards[0.0]) // 2
    wrist = {p: np.median([(lab[2] == target).sum() for lab in labs]) for p, labs in shards.items()}
    assert wrist[1.0] >= 100 and wrist[1.0] > 3 * wrist[0.0], wrist
    with pytest.raises(ValueError, match="contact_prob"):
        generate_grounding_shard(tmp_path / "bad.npz", [500], targets, contact_prob=1.5)


@pytest.mark.slow
def test_grounding_shards_and_cli_training(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from vidplan_app.cli import app
    from vidplan_core.models.grounded import GroundedScorer
    from vidplan_core.training.grounded import load_shards
    from vidplan_sim.grounding_data import generate_grounding_dataset

    root = tmp_path / "grounded"
    written = generate_grounding_dataset(root, HELD_OUT_COMBINATIONS, train_scenes=3, eval_scenes=2,
                                         scenes_per_shard=3, poses_per_scene=1, progress=False)
    names = sorted(p.name for p in root.iterdir())
    assert names == ["eval_contact_seen_crop.npz", "eval_contact_unseen_crop.npz", "eval_seen_crop.npz",
                     "eval_seen_full.npz", "eval_unseen_crop.npz", "eval_unseen_full.npz", "train_crop_0.npz",
                     "train_full_0.npz"]
    assert sum(w["samples"] for w in written) == 2 * (3 + 2 + 2) + 2 + 2
    assert generate_grounding_dataset(root, HELD_OUT_COMBINATIONS, train_scenes=3, eval_scenes=2,
                                      scenes_per_shard=3, poses_per_scene=1, progress=False) == []  # resumes
    held = {tuple(p) for p in HELD_OUT_COMBINATIONS}
    train = load_shards(root / "train_*.npz")
    objs = {(train["colours"][c], train["shapes"][s]) for row_c, row_s in zip(train["obj_colour"], train["obj_shape"],
                                                                              strict=True)
            for c, s in zip(row_c, row_s, strict=True) if c >= 0}
    assert objs and not objs & held
    unseen = load_shards(root / "eval_unseen_*.npz")
    targets = {(unseen["colours"][r[0]], unseen["shapes"][s[0]]) for r, s in zip(unseen["obj_colour"],
                                                                                  unseen["obj_shape"], strict=True)}
    assert targets <= held
    crop = np.load(root / "train_crop_0.npz")
    assert json.loads(str(crop["crop"])).keys() == {"left", "right"}
    assert crop["frames"].shape[1:] == (3, 96, 160, 3) and crop["labels"].shape[1:] == (3, 96, 160)

    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["train", "grounded", "--config", "tiny-grounded", "--data", str(root),
                                   "--out", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    final = tmp_path / "run" / "final"
    report = json.loads((final / "grounding_eval.json").read_text())
    assert report["held_out"] == HELD_OUT_COMBINATIONS and "accuracy" in report["unseen_target"]
    sc = GroundedScorer.from_pretrained_dir(final)
    assert sc.config.embed_dim == 16
    assert "unseen_target_decoded" not in report

    # trained partly on decoded views (an exact pixel autoencoder here), with near misses and a linear text map:
    # the report adds the accuracy on the decoded validation views
    from vidplan_core.models.autoencoder import VideoAutoencoder

    VideoAutoencoder(kind="pixel", view_height=48, view_width=80, patch=4).save(tmp_path / "ae")
    res = CliRunner().invoke(app, ["train", "grounded", "--config", "tiny-grounded", "--data", str(root),
                                   "--out", str(tmp_path / "run_rt"), "--set", f"options.roundtrip_autoencoder="
                                   f"{tmp_path / 'ae'}", "--set", "options.hard_negative_prob=0.2",
                                   "--set", "options.text_hidden=0", "--set", "options.attribute_weight=1.0",
                                   "--set", "options.gray_shape_prob=1.0", "--set", "options.lookalike_prob=0.3",
                                   "--set", "options.colour_channels=4", "--set", "options.brightness_jitter=0.2"])
    assert res.exit_code == 0, res.output
    assert "shape_loss" in (tmp_path / "run_rt" / "logs" / "metrics.csv").read_text()  # the attribute terms, apart
    report = json.loads((tmp_path / "run_rt" / "final" / "grounding_eval.json").read_text())
    dec, raw = report["unseen_target_decoded"], report["unseen_target"]
    assert dec["n"] == raw["n"] > 0 and abs(dec["accuracy"] - raw["accuracy"]) <= 0.25  # ±1 grey level apart
    assert report["roundtrip"]["prob"] == 0.5
    cfg = GroundedScorer.from_pretrained_dir(tmp_path / "run_rt" / "final").config
    assert cfg.text_hidden == 0 and cfg.colour_channels == 4
    res = CliRunner().invoke(app, ["train", "grounded", "--config", "tiny-grounded", "--data", str(tmp_path / "none"),
                                   "--out", str(tmp_path / "run2")])
    assert res.exit_code == 2 and "no grounding shards" in res.output
