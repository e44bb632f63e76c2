"""MuJoCo DROID scene: scene description, seeded layouts, model composition, cameras, control mapping, rendering."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from vidplan_core.calibration import load_calibration
from vidplan_core.config import ConfigError
from vidplan_sim.env import SimEnv
from vidplan_sim.scene import HOME_Q, load_scene_config, sample_layout, validate_scene_dict
from vidplan_sim.tasks import Task
from vidplan_sim.trajectory import JointTrajectoryTracker


@pytest.fixture(scope="module")
def cfg():
    return load_scene_config()


@pytest.fixture(scope="module")
def env():
    e = SimEnv(width=320, height=180, render=True)
    e.reset(seed=5, clutter=3, task="put the blue cube in the bowl")
    yield e
    e.close()


def test_default_scene_has_six_colours_and_three_shapes(cfg):
    assert len(cfg.colours) >= 6
    assert {"red", "green", "blue", "yellow", "orange", "purple"} <= set(cfg.colours)
    assert cfg.shape_names == ["cube", "cylinder", "ball"]
    assert cfg.render.shadows is False and cfg.render.reflections is False and cfg.render.msaa_samples == 0


def test_bad_scene_description_names_key(tmp_path):
    bad = tmp_path / "scene.yaml"
    bad.write_text("colours: {red: [1, 0, 0]}\nbowl: {radius: -1}\ntabel: {}\n")
    with pytest.raises(ConfigError) as err:
        load_scene_config(bad)
    msg = str(err.value)
    assert str(bad) in msg and "colours" in msg and "bowl.radius" in msg and "tabel" in msg
    with pytest.raises(ConfigError, match="clutter_distractors"):
        validate_scene_dict({"colours": load_scene_config().colours, "clutter_distractors": [1, 2, 3, 4]})


@pytest.mark.parametrize("clutter", [0, 1, 2, 3])
def test_layout_is_seeded_and_free_of_overlaps(cfg, clutter):
    for seed in range(6):
        a = sample_layout(cfg, seed, clutter)
        b = sample_layout(cfg, seed, clutter)
        assert a.task == b.task and [o.name for o in a.objects] == [o.name for o in b.objects]
        assert all(np.allclose(x.pos, y.pos) for x, y in zip(a.objects, b.objects, strict=True))
        assert len(a.objects) == 1 + cfg.clutter_distractors[clutter]
        assert a.target.name == a.task.object_name
        # Exactly one object matches the instruction's colour and shape.
        assert sum(o.colour == a.task.colour and o.shape == a.task.shape for o in a.objects) == 1
        for o, p in itertools.combinations(a.objects, 2):
            assert np.linalg.norm(o.pos[:2] - p.pos[:2]) >= o.radius + p.radius + cfg.min_gap - 1e-9
        for o in a.objects:
            assert np.linalg.norm(o.pos[:2] - a.bowl_pos[:2]) >= cfg.bowl.radius + cfg.bowl.wall + o.radius
            assert cfg.workspace.x[0] <= o.pos[0] <= cfg.workspace.x[1]
    assert sample_layout(cfg, 1, 2).bowl_pos.tolist() != sample_layout(cfg, 2, 2).bowl_pos.tolist()


def test_layout_honours_given_task_and_rejects_bad_input(cfg):
    lay = sample_layout(cfg, 3, 1, "Push the green ball to the left.")
    assert lay.task == Task("push", "green", "ball", "left")
    with pytest.raises(ValueError, match="unknown colour 'magenta'"):
        sample_layout(cfg, 3, 1, "touch the magenta cube")
    with pytest.raises(ValueError, match=r"clutter must be in 0\.\.3"):
        sample_layout(cfg, 3, 4)


def test_model_contents_and_home_pose(env):
    m = env.model
    names = {m.body(i).name for i in range(m.nbody)}
    assert {"link0", "hand", "bowl"} <= names
    assert {f"obj_{o.name}" for o in env.layout.objects} <= names
    assert {m.camera(i).name for i in range(m.ncam)} == {"left", "right", "wrist"}
    np.testing.assert_allclose(env.joint_positions(), HOME_Q, atol=2e-3)  # gravity-compensated hold
    T = env.ee_pose()
    np.testing.assert_allclose(T[:3, 3], [0.307, 0.0, 0.487], atol=3e-3)  # franka "ready" TCP
    np.testing.assert_allclose(T[:3, 2], [0, 0, -1], atol=1e-3)  # fingers point down
    assert env.gripper_width() == pytest.approx(0.08, abs=2e-3)
    for name, pose in env.object_poses().items():  # objects rest on the table
        assert pose[2] == pytest.approx(env.layout.object(name).half_height, abs=4e-3), name


def test_cameras_match_calibration(env):
    calib = load_calibration()
    d = env.data
    flip = np.diag([1.0, -1.0, -1.0])
    for view, cam in calib.cameras.items():
        cid = env.model.camera(view).id
        T_parent = cam.transform()
        if cam.parent_frame == "panda_hand":
            T_world = env.hand_pose() @ T_parent
        else:
            T_world = T_parent
        np.testing.assert_allclose(d.cam_xpos[cid], T_world[:3, 3], atol=1e-6, err_msg=view)
        # MuJoCo camera frame = optical frame rotated by π about x.
        np.testing.assert_allclose(d.cam_xmat[cid].reshape(3, 3), T_world[:3, :3] @ flip, atol=1e-6, err_msg=view)
        assert env.model.cam_fovy[cid] == pytest.approx(cam.fovy_deg)


def test_menagerie_hand_matches_urdf_panda_hand(env):
    """The wrist camera hangs on MuJoCo's `hand`; it must be the URDF's panda_hand (and the TCP its hand_tcp)."""
    kin = pytest.importorskip("vidplan_core.kinematics", reason="vidplan_core.kinematics not present").PandaKinematics()
    import mujoco

    rng = np.random.default_rng(0)
    data = mujoco.MjData(env.model)
    hid = env.model.body("hand").id
    for _ in range(10):
        q = rng.uniform(kin.lower, kin.upper)
        data.qpos[env._arm_qadr] = q
        mujoco.mj_kinematics(env.model, data)
        T_hand = kin.frame_pose(q, "panda_hand")
        np.testing.assert_allclose(data.xpos[hid], T_hand[:3, 3], atol=1e-6)
        np.testing.assert_allclose(data.xmat[hid].reshape(3, 3), T_hand[:3, :3], atol=1e-6)
        np.testing.assert_allclose(env.fk(q), kin.fk(q), atol=1e-6)


def test_render_triplet(env):
    frames = env.render()
    assert frames.shape == (3, 180, 320, 3) and frames.dtype == np.uint8
    for v in range(3):
        assert frames[v].std() > 10, "a camera sees a blank image"
    assert not np.array_equal(frames[0], frames[1])
    # The target object's colour is visible in the exterior views (blue cube: B high, R low).
    blue = (frames[:2, ..., 2] > 150) & (frames[:2, ..., 0] < 80) & (frames[:2, ..., 1] < 120)
    assert blue.sum() > 10


def test_gripper_and_joint_control(env):
    env.reset(seed=5, clutter=0, task="touch the red cube")
    env.set_gripper(1.0)
    env.step(0.6)
    assert env.gripper_width() < 0.005
    env.set_gripper(0.0)
    env.step(0.6)
    assert env.gripper_width() > 0.075
    q_goal = HOME_Q + np.array([0.3, 0.2, -0.2, 0.3, 0.2, -0.2, 0.4])
    env.set_trajectory(JointTrajectoryTracker(env.time, env.commanded_joints(), [1.0], q_goal[None]))
    env.step(0.5)
    mid = env.joint_positions()
    assert 0.2 < np.linalg.norm(mid - HOME_Q) / np.linalg.norm(q_goal - HOME_Q) < 0.8  # interpolated, not a jump
    env.step(1.0)
    np.testing.assert_allclose(env.joint_positions(), q_goal, atol=5e-3)
    with pytest.raises(ValueError):
        env.set_joint_targets(np.full(7, np.nan))


def test_step_ee_reaches_pose(env):
    env.reset(seed=5, clutter=0, task="touch the red cube")
    target = np.array([0.5, 0.1, 0.25, np.pi, 0.0, 0.3, 0.0])
    for _ in range(20):
        env.step_ee(target)
    T = env.ee_pose()
    assert np.linalg.norm(T[:3, 3] - target[:3]) < 3e-3
    R_err = Rotation.from_matrix(T[:3, :3]).inv() * Rotation.from_euler("xyz", target[3:6])
    assert R_err.magnitude() < np.radians(1.0)


def test_trajectory_tracker_like_jtc():
    tr = JointTrajectoryTracker(10.0, np.zeros(2), [1.0, 2.0], np.array([[1.0, 2.0], [3.0, 2.0]]))
    np.testing.assert_allclose(tr.sample(9.0), [0, 0])  # before start: the start command
    np.testing.assert_allclose(tr.sample(10.5), [0.5, 1.0])  # from the start state to point 1
    np.testing.assert_allclose(tr.sample(11.5), [2.0, 2.0])
    np.testing.assert_allclose(tr.sample(20.0), [3.0, 2.0])  # holds the last point
    cubic = JointTrajectoryTracker(0.0, np.zeros(1), [1.0], np.ones((1, 1)), np.zeros((1, 1)))
    assert cubic.sample(0.25)[0] == pytest.approx(3 * 0.25**2 - 2 * 0.25**3)
    with pytest.raises(ValueError, match="strictly increasing"):
        JointTrajectoryTracker(0.0, np.zeros(1), [1.0, 1.0], np.ones((2, 1)))
    with pytest.raises(ValueError, match="shape"):
        JointTrajectoryTracker(0.0, np.zeros(2), [1.0], np.ones((1, 3)))


def test_tracking_lag_is_small(env):
    """Velocity feed-forward: following a moving joint target, the arm lags by well under kv/kp = 0.1 s."""
    env.reset(seed=5, clutter=0, task="touch the red cube")
    goal = HOME_Q + 0.4
    goal[3] = HOME_Q[3] + 0.4  # stays within joint 4's range
    env.set_trajectory(JointTrajectoryTracker(env.time, HOME_Q, [2.0], goal[None]))
    env.step(1.0)  # mid-motion at 0.2 rad/s per joint
    lag = np.abs(env.joint_positions() - env.commanded_joints()).max()
    assert lag < 0.005, f"arm lags the target by {lag:.4f} rad (0.2 rad/s → {lag / 0.2 * 1e3:.0f} ms)"
    tr = JointTrajectoryTracker(0.0, np.zeros(1), [1.0, 2.0], np.array([[1.0], [1.5]]), np.array([[1.0], [0.0]]))
    eps = 1e-6
    for t in (0.3, 1.2, 1.7):  # analytic velocity = numerical derivative of the position
        num = (tr.sample(t + eps) - tr.sample(t - eps)) / (2 * eps)
        np.testing.assert_allclose(tr.sample_velocity(t), num, atol=1e-5)


def test_observe(env):
    env.reset(seed=1, clutter=1)
    obs = env.observe()
    assert obs["images"].shape == (3, 180, 320, 3) and obs["time"] == 0.0
    np.testing.assert_allclose(obs["ee_action"][:3], obs["ee_pose"][:3, 3])
    assert obs["joints"].shape == (7,) and 0.075 < obs["gripper_width"] < 0.085
    assert "images" not in env.observe(images=False)


def test_robot_mesh_render_modes(cfg):
    """Default: the robot drawn with its convex hulls (fast); `visual` draws Menagerie's detailed meshes."""
    assert cfg.render.robot_meshes == "collision"
    frames = {}
    for mode in ("collision", "visual"):
        e = SimEnv(cfg.model_copy(update={"render": cfg.render.model_copy(update={"robot_meshes": mode})}))
        e.reset(seed=0, clutter=0)
        frames[mode] = e.render()
        e.close()
    for f in frames.values():
        assert f.shape == (3, 180, 320, 3) and f[0].std() > 10
    diff = np.abs(frames["collision"].astype(int) - frames["visual"].astype(int)).max(axis=-1)
    assert 0.001 < (diff > 30).mean() < 0.2  # same scene, only the robot's look differs


def test_forward_kinematics_equals_the_sims_ee_pose(env):
    """The planner's EE pose from /joint_states (pinocchio FK on urdf/panda_droid.urdf, ee_pose_topic: "") is the
    pose the sim reports on /ee_pose (MuJoCo's TCP site) within 1 mm and 1 mrad, over the arm's joint ranges."""
    from vidplan_core.kinematics import PandaKinematics, rotation_error

    kin = PandaKinematics()
    rng = np.random.default_rng(3)
    lo, hi = kin.lower, kin.upper
    for _ in range(25):
        q = lo + (hi - lo) * rng.uniform(0.1, 0.9, 7)
        env.pose_arm(q)
        T_sim, T_fk = env.ee_pose(), kin.fk(env.joint_positions())
        assert np.linalg.norm(T_sim[:3, 3] - T_fk[:3, 3]) < 1e-3, q
        assert rotation_error(T_sim[:3, :3], T_fk[:3, :3]) < 1e-3, q
    env.pose_arm(HOME_Q)
