"""URDF (xacro → urdf, camera frames from calibration) and vidplan_core.kinematics (pinocchio FK/Jacobian/IK)."""

from __future__ import annotations

import importlib.util
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from vidplan_core.calibration import load_calibration
from vidplan_core.kinematics import (
    HOME_Q,
    PandaKinematics,
    action_to_transform,
    actions_to_transforms,
    transform_to_action,
    unwrap_euler,
)


def _generator(repo_root):
    spec = importlib.util.spec_from_file_location("generate_urdf", repo_root / "urdf" / "generate_urdf.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def kin() -> PandaKinematics:
    return PandaKinematics()


@pytest.mark.parametrize("prefix", ["panda", "fr3"])
def test_committed_urdf_matches_fresh_xacro_output(repo_root, prefix):
    """Both committed URDFs (panda: kinematics and sim; fr3: the robot profile's robot_state_publisher) are what the
    xacro and the calibration give now."""
    gen = _generator(repo_root)
    fresh = gen.generate_urdf(prefix)
    committed = (repo_root / "urdf" / f"{prefix}_droid.urdf").read_text()
    assert committed == fresh, (f"urdf/{prefix}_droid.urdf is stale: run `python urdf/generate_urdf.py --prefix "
                                f"{prefix} -o urdf/{prefix}_droid.urdf`")


def test_urdf_names_limits_and_fr3_prefix(repo_root, tmp_path):
    root = ET.parse(repo_root / "urdf" / "panda_droid.urdf").getroot()
    links = {e.get("name") for e in root.iter("link")}
    expected = {f"panda_link{i}" for i in range(9)} | {"panda_hand", "panda_hand_tcp", "panda_leftfinger",
                                                        "panda_rightfinger", "left_camera_optical_frame",
                                                        "right_camera_optical_frame", "wrist_camera_optical_frame"}
    assert expected <= links
    joints = {e.get("name"): e for e in root.iter("joint")}
    lim = {n: (float(joints[n].find("limit").get("lower")), float(joints[n].find("limit").get("upper")))
           for n in [f"panda_joint{i}" for i in range(1, 8)]}
    assert lim["panda_joint4"] == (-3.0718, -0.0698) and lim["panda_joint6"] == (-0.0175, 3.7525)
    assert float(joints["panda_joint5"].find("limit").get("velocity")) == 2.61
    assert float(joints["panda_joint1"].find("limit").get("effort")) == 87
    for n in ("panda_finger_joint1", "panda_finger_joint2"):
        assert joints[n].get("type") == "prismatic"
        assert float(joints[n].find("limit").get("upper")) == 0.04
    # every link with a body carries a positive mass (pinocchio / Gazebo need inertials)
    for link in root.iter("link"):
        if link.get("name").startswith("panda_"):
            assert float(link.find("inertial/mass").get("value")) > 0
    # the same xacro yields franka_ros2-style names
    out = tmp_path / "fr3.urdf"
    out.write_text(_generator(repo_root).generate_urdf("fr3"))
    k = PandaKinematics(out)
    assert k.prefix == "fr3" and k.joint_names[0] == "fr3_joint1" and k.ee_frame == "fr3_hand_tcp"
    np.testing.assert_allclose(k.fk(HOME_Q), PandaKinematics().fk(HOME_Q), atol=1e-12)


def test_home_pose_fk(kin):
    a = kin.fk_action(HOME_Q, euler_center=[np.pi, 0, 0])
    np.testing.assert_allclose(a[:3], [0.307, 0.0, 0.487], atol=2e-3)
    np.testing.assert_allclose(a[3:], [np.pi, 0.0, 0.0], atol=1e-6)
    # TCP z axis points down at home
    np.testing.assert_allclose(kin.fk(HOME_Q)[:3, 2], [0, 0, -1], atol=1e-9)
    assert kin.within_limits(HOME_Q)
    assert kin.joint_names == [f"panda_joint{i}" for i in range(1, 8)]
    np.testing.assert_allclose(kin.velocity_limits, [2.175] * 4 + [2.61] * 3)


def test_camera_frames_match_calibration(kin):
    calib = load_calibration()
    for view, parent in (("left", "panda_link0"), ("right", "panda_link0"), ("wrist", "panda_hand")):
        cam = calib.cameras[view]
        T = np.linalg.inv(kin.frame_pose(HOME_Q, parent)) @ kin.frame_pose(HOME_Q, cam.frame_id)
        np.testing.assert_allclose(T[:3, 3], cam.translation, atol=1e-6)
        np.testing.assert_allclose(T[:3, :3], cam.transform()[:3, :3], atol=1e-5)
    with pytest.raises(ValueError, match="not in"):
        kin.frame_pose(HOME_Q, "no_such_frame")


def test_jacobian_matches_finite_differences(kin):
    rng = np.random.default_rng(1)
    for _ in range(3):
        q = kin.clip(HOME_Q + rng.uniform(-0.4, 0.4, 7))
        J = kin.jacobian(q)
        assert J.shape == (6, 7)
        eps = 1e-6
        for j in range(7):
            dq = np.zeros(7)
            dq[j] = eps
            Tp, Tm = kin.fk(q + dq), kin.fk(q - dq)
            np.testing.assert_allclose((Tp[:3, 3] - Tm[:3, 3]) / (2 * eps), J[:3, j], atol=1e-6)
            dR = Tp[:3, :3] @ Tm[:3, :3].T  # world-frame angular velocity (LOCAL_WORLD_ALIGNED)
            np.testing.assert_allclose(Rotation.from_matrix(dR).as_rotvec() / (2 * eps), J[3:, j], atol=1e-5)
    assert kin.jacobian_batch(np.stack([HOME_Q, HOME_Q])).shape == (2, 6, 7)


def test_ik_round_trip_and_limits(kin):
    rng = np.random.default_rng(2)
    successes = 0
    for _ in range(30):
        q_true = kin.clip(HOME_Q + rng.uniform(-0.5, 0.5, 7))
        res = kin.ik(kin.fk(q_true), kin.clip(q_true + rng.uniform(-0.15, 0.15, 7)))
        successes += res.success
        assert kin.within_limits(res.q)
        if res.success:
            T = kin.fk(res.q)
            assert np.linalg.norm(T[:3, 3] - kin.fk(q_true)[:3, 3]) <= 1e-4
    assert successes >= 28
    # unreachable target (2 m away): fails, reports the error, stays within limits
    T = kin.fk(HOME_Q)
    T[:3, 3] = [2.0, 0.0, 0.5]
    res = kin.ik(T, HOME_Q, max_iters=50)
    assert not res.success and res.position_error_m > 0.5 and kin.within_limits(res.q)
    with pytest.raises(ValueError, match="finite"):
        kin.ik(np.full((4, 4), np.nan), HOME_Q)
    with pytest.raises(ValueError, match="7 finite"):
        kin.fk(np.zeros(6))


def test_ik_trajectory_continuity_and_stop(kin):
    T0 = kin.fk(HOME_Q)
    targets = []
    for dx in (0.02, 0.04, 0.06, 1.5, 0.08):
        T = T0.copy()
        T[0, 3] += dx
        targets.append(T)
    qs, results = kin.ik_trajectory(np.stack(targets), HOME_Q)
    assert len(qs) == 3 and len(results) == 4 and not results[-1].success
    assert np.max(np.abs(np.diff(np.vstack([HOME_Q, qs]), axis=0))) < 0.2  # small, continuous joint steps


def test_integrate_joint_velocity(kin):
    # q7 rotates the TCP about its own (downward) axis: position fixed, yaw changes by -qdot*dt per step
    qs, acts = kin.integrate_joint_velocity(HOME_Q, np.array([0, 0, 0, 0, 0, 0, 1.0]), 0.1, 5, gripper=0.3)
    assert qs.shape == (5, 7) and acts.shape == (5, 7)
    np.testing.assert_allclose(acts[:, :3], np.tile(kin.fk_action(HOME_Q)[:3], (5, 1)), atol=1e-9)
    np.testing.assert_allclose(np.abs(acts[:, 5]), 0.1 * np.arange(1, 6), atol=1e-6)
    np.testing.assert_allclose(acts[:, 6], 0.3)
    # joint-limit clipping and velocity limiting
    qs, _ = kin.integrate_joint_velocity(HOME_Q, np.array([0, 0, 0, 0, 0, 10.0, 0]), 0.5, 10)
    assert np.all(qs <= kin.upper + 1e-12) and qs[-1, 5] == pytest.approx(kin.upper[5])
    assert qs[0, 5] - HOME_Q[5] == pytest.approx(2.61 * 0.5)
    # per-step (H, 7) velocities and the Jacobian agree on the EE motion to first order
    v = np.array([0.05, 0, 0, 0, 0, 0])
    qdot = np.linalg.pinv(kin.jacobian(HOME_Q)) @ v
    _, acts = kin.integrate_joint_velocity(HOME_Q, np.tile(qdot, (3, 1)), 0.1)
    np.testing.assert_allclose(acts[0, :3] - kin.fk_action(HOME_Q)[:3], [0.005, 0, 0], atol=2e-4)
    with pytest.raises(ValueError, match="steps"):
        kin.integrate_joint_velocity(HOME_Q, qdot, 0.1)
    with pytest.raises(ValueError, match="shape"):
        kin.integrate_joint_velocity(HOME_Q, np.zeros((3, 6)), 0.1)


def test_euler_wrap_helpers():
    a = np.array([0.3, -0.1, 0.5, np.pi - 0.01, 0.02, -0.3])
    T = action_to_transform(a)
    np.testing.assert_allclose(action_to_transform(transform_to_action(T)), T, atol=1e-12)
    e = unwrap_euler(np.array([[np.pi - 0.01, 0, 0], [-np.pi + 0.01, 0, 0], [-np.pi + 0.03, 0, 0]]))
    np.testing.assert_allclose(e[:, 0], [np.pi - 0.01, np.pi + 0.01, np.pi + 0.03])
    with pytest.raises(ValueError, match="6 or 7"):
        action_to_transform(np.zeros(5))
    acts = np.stack([a, a + 0.1])
    np.testing.assert_allclose(actions_to_transforms(acts), np.stack([action_to_transform(x) for x in acts]))
