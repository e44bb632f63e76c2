"""``SimEnv``: the MuJoCo DROID scene as a plain-Python environment (no rclpy).

Used by ``sim_node`` (the ROS face of the simulation) and, in-process, by data generation and evaluation::

    env = SimEnv(width=320, height=180)
    layout = env.reset(seed=3, clutter=2, task="put the red cube in the bowl")
    for action in actions:                 # (7,) [x, y, z, rx, ry, rz, g] in panda_link0 (vidplan_core.spaces)
        env.step_ee(action)                # IK → joint targets, interpolated over 1/15 s of physics
        frames = env.render()              # (3, 180, 320, 3) uint8, views (left, right, wrist)
    env.task_success()                     # (bool, reason)

Joint-level control (what sim_node does for JointTrajectory messages): :meth:`SimEnv.set_joint_targets`,
:meth:`SimEnv.set_trajectory` (a :class:`~vidplan_sim.trajectory.JointTrajectoryTracker`), :meth:`SimEnv.set_gripper`
and :meth:`SimEnv.step` (dt seconds of physics). Arm joints are position-controlled by Menagerie's PD actuators
with gravity compensation; the gripper command 0 (open) .. 1 (closed) maps to Menagerie's actuator range 255..0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from vidplan_core.calibration import RigCalibration, load_calibration
from vidplan_core.kinematics import PandaKinematics
from vidplan_core.spaces import CONTROL_RATE_HZ, EULER_SEQ, VIEW_ORDER
from vidplan_sim.scene import (
    ARM_JOINTS,
    HOME_Q,
    SceneConfig,
    SceneLayout,
    build_model,
    load_scene_config,
    sample_layout,
)
from vidplan_sim.tasks import Task, TaskState, evaluate_task
from vidplan_sim.trajectory import JointTrajectoryTracker

__all__ = ["IKSolution", "MujocoIK", "SimEnv", "SimSnapshot", "action_to_pose", "pose_to_action"]

GRIPPER_OPEN_CTRL = 255.0  # Menagerie actuator8: ctrl 255 → fingers at 0.04 m each (open), 0 → closed
FINGER_MAX = 0.04  # [m] per finger
#: A grasp closes the fingers on at least this fraction of the target's narrowest width (ObjectSpec.half_width):
#: fingers on the side of a 4 cm cylinder, 1.8 cm off its axis, touch it with both pads 1.7 cm apart and squeeze it out
GRASP_WIDTH_FRACTION = 0.7


def action_to_pose(action: np.ndarray) -> np.ndarray:
    """(7,) action [x, y, z, rx, ry, rz, g] → (4, 4) TCP pose in the base frame."""
    a = np.asarray(action, dtype=float).reshape(-1)
    T = np.eye(4)
    T[:3, :3] = Rotation.from_euler(EULER_SEQ, a[3:6]).as_matrix()
    T[:3, 3] = a[:3]
    return T


def pose_to_action(T: np.ndarray, gripper: float) -> np.ndarray:
    """(4, 4) TCP pose + gripper command → (7,) action."""
    e = Rotation.from_matrix(np.asarray(T)[:3, :3]).as_euler(EULER_SEQ)
    return np.concatenate([np.asarray(T)[:3, 3], e, [gripper]])


@dataclass
class IKSolution:
    """Result of an IK solve: joint positions (7,) [rad], success, position error [m], rotation error [rad]."""

    q: np.ndarray
    success: bool
    position_error: float
    orientation_error: float


class MujocoIK:
    """Damped-least-squares IK of the TCP site on the simulation's own model (a private MjData).

    Used with ``ik="mujoco"`` or when ``vidplan_core.kinematics`` (pinocchio on urdf/panda_droid.urdf; the default) is
    unavailable. Both agree: the URDF's panda_hand_tcp and this model's TCP site match to 1e-7 m over random joint
    configurations (tests/vidplan_sim/unit/test_sim_scene.py). Joint limits from the model; a small null-space pull
    to ``q0`` keeps the posture.
    """

    def __init__(self, model, arm_qpos_adr: np.ndarray, arm_dof_adr: np.ndarray, site_id: int):
        import mujoco

        self._mj = mujoco
        self.model = model
        self.data = mujoco.MjData(model)
        self.qadr = arm_qpos_adr
        self.dadr = arm_dof_adr
        self.site = site_id
        jid = [model.dof_jntid[d] for d in arm_dof_adr]
        self.lower = model.jnt_range[jid, 0].copy()
        self.upper = model.jnt_range[jid, 1].copy()

    def fk(self, q: np.ndarray) -> np.ndarray:
        """(7,) joints → (4, 4) TCP pose."""
        d = self.data
        d.qpos[self.qadr] = q
        self._mj.mj_kinematics(self.model, d)
        T = np.eye(4)
        T[:3, :3] = d.site_xmat[self.site].reshape(3, 3)
        T[:3, 3] = d.site_xpos[self.site]
        return T

    def solve(self, target: np.ndarray, q0: np.ndarray, iters: int = 60, tol_pos: float = 5e-4,
              tol_rot: float = 5e-3, damping: float = 1e-3) -> IKSolution:
        """Solve for the TCP pose ``target`` (4, 4) starting from ``q0`` (7,)."""
        mj, m, d = self._mj, self.model, self.data
        q = np.clip(np.asarray(q0, float).copy(), self.lower, self.upper)
        jacp = np.zeros((3, m.nv))
        jacr = np.zeros((3, m.nv))
        err = np.zeros(6)
        for _ in range(iters):
            T = self.fk(q)
            err[:3] = target[:3, 3] - T[:3, 3]
            err[3:] = Rotation.from_matrix(target[:3, :3] @ T[:3, :3].T).as_rotvec()
            if np.linalg.norm(err[:3]) < tol_pos and np.linalg.norm(err[3:]) < tol_rot:
                break
            mj.mj_comPos(m, d)
            mj.mj_jacSite(m, d, jacp, jacr, self.site)
            J = np.vstack([jacp[:, self.dadr], jacr[:, self.dadr]])
            JJt = J @ J.T + damping * np.eye(6)
            dq = J.T @ np.linalg.solve(JJt, err)
            # Null-space pull towards the seed keeps the elbow where it was (continuity between steps).
            N = np.eye(7) - np.linalg.pinv(J) @ J
            dq += N @ (0.1 * (q0 - q))
            step = np.linalg.norm(dq)
            if step > 0.3:
                dq *= 0.3 / step
            q = np.clip(q + dq, self.lower, self.upper)
        T = self.fk(q)
        pe = float(np.linalg.norm(target[:3, 3] - T[:3, 3]))
        re = float(np.linalg.norm(Rotation.from_matrix(target[:3, :3] @ T[:3, :3].T).as_rotvec()))
        return IKSolution(q=q, success=pe < 2e-3 and re < 1e-2, position_error=pe, orientation_error=re)


@dataclass
class SimSnapshot:
    """A copy of :class:`SimEnv`'s dynamic state (see :meth:`SimEnv.snapshot`)."""

    state: np.ndarray
    tracker: JointTrajectoryTracker | None
    hold: np.ndarray
    gripper_cmd: float
    touched: bool


class SimEnv:
    """The simulated DROID scene (see module docstring).

    Args:
        scene_config: scene description (default ``scenes/default.yaml``).
        calibration: camera rig (default :func:`vidplan_core.calibration.load_calibration`).
        width, height: camera resolution [px] (default 320×180, DROID's).
        render: create the offscreen renderer (False for physics-only use, e.g. the expert test).
        panda_dir: Menagerie Panda directory (default ``$VIDPLAN_MENAGERIE_DIR``).
        ik: ``"auto"`` (vidplan_core.kinematics.PandaKinematics — the executor's IK — when importable, else
            :class:`MujocoIK`), ``"mujoco"`` or ``"pinocchio"``.
    """

    def __init__(self, scene_config: SceneConfig | None = None, calibration: RigCalibration | None = None,
                 width: int = 320, height: int = 180, render: bool = True, panda_dir: str | None = None,
                 ik: str = "auto"):
        if width < 16 or height < 16 or width > 4096 or height > 4096:
            raise ValueError(f"camera resolution must be within 16..4096 px, got {width}×{height}")
        if ik not in ("auto", "mujoco", "pinocchio"):
            raise ValueError(f"ik must be 'auto', 'mujoco' or 'pinocchio', got {ik!r}")
        self.cfg = scene_config or load_scene_config()
        self.calibration = calibration or load_calibration()
        self.width, self.height = int(width), int(height)
        self.want_render = render
        self.panda_dir = panda_dir
        self.ik_kind = ik
        self.model = None
        self.data = None
        self.layout: SceneLayout | None = None
        self._renderer = None
        self._geom_label: np.ndarray | None = None
        self._touched = False
        self._tracker: JointTrajectoryTracker | None = None
        self._hold = HOME_Q.copy()
        self._gripper_cmd = 0.0
        self._pin = None

    # ------------------------------------------------------------------------------------------------ set-up
    def reset(self, seed: int, clutter: int = 1, task: Task | str | None = None, settle: float = 0.3,
              exclude: frozenset[tuple[str, str]] = frozenset()) -> SceneLayout:
        """Build a new scene from (seed, clutter, task), put the arm at :data:`HOME_Q` with the gripper open and let
        objects settle for ``settle`` seconds; the clock then restarts at 0. Returns the layout.
        ``exclude``: (colour, shape) pairs never placed as distractors (:func:`vidplan_sim.scene.sample_layout`).
        """
        import mujoco

        layout = sample_layout(self.cfg, int(seed), int(clutter), task, exclude=exclude)
        model = build_model(self.cfg, layout, self.calibration, self.width, self.height, self.panda_dir)
        self.close_renderer()
        self.model, self.data, self.layout = model, mujoco.MjData(model), layout
        self._geom_label = None
        m = model
        self._arm_jid = np.array([m.joint(n).id for n in ARM_JOINTS])
        self._arm_qadr = m.jnt_qposadr[self._arm_jid].copy()
        self._arm_dadr = m.jnt_dofadr[self._arm_jid].copy()
        self._finger_qadr = np.array([m.jnt_qposadr[m.joint(n).id] for n in ("finger_joint1", "finger_joint2")])
        self._act = np.array([m.actuator(f"actuator{i}").id for i in range(1, 9)])
        self._kv_over_kp = -m.actuator_biasprm[self._act[:7], 2] / m.actuator_gainprm[self._act[:7], 0]
        self._tcp = m.site("tcp").id
        self._hand = m.body("hand").id
        self._cam_ids = [m.camera(v).id for v in VIEW_ORDER]
        robot_bodies = {m.body(n).id for n in ("link0", "link1", "link2", "link3", "link4", "link5", "link6",
                                               "link7", "hand", "left_finger", "right_finger")}
        self._robot_geoms = np.array([g for g in range(m.ngeom) if m.geom_bodyid[g] in robot_bodies])
        self._finger_bodies = (m.body("left_finger").id, m.body("right_finger").id)
        self._finger_geoms = np.array([g for g in range(m.ngeom) if m.geom_bodyid[g] in self._finger_bodies])
        self._obj_body = {o.name: m.body(f"obj_{o.name}").id for o in layout.objects}
        self._obj_geom = {o.name: m.geom(f"obj_{o.name}").id for o in layout.objects}
        self._bowl_body = m.body("bowl").id
        self._ik = MujocoIK(m, self._arm_qadr, self._arm_dadr, self._tcp)
        if self._pin is None and self.ik_kind in ("auto", "pinocchio"):
            self._pin = self._make_pinocchio_ik()  # once per env: the URDF does not change between scenes
        d = self.data
        d.qpos[self._arm_qadr] = HOME_Q
        d.qpos[self._finger_qadr] = FINGER_MAX
        self._hold = HOME_Q.copy()
        self._tracker = None
        self.set_gripper(0.0)
        self._apply_ctrl()
        mujoco.mj_forward(m, d)
        self.step(settle)
        d.time = 0.0
        self._touched = False
        self._target_start = self.object_pose(layout.target.name)[:3].copy()
        if self.want_render:
            self._make_renderer()
        return layout

    def _make_pinocchio_ik(self):
        try:
            return PandaKinematics()  # imports pinocchio, which a sim-only install may lack
        except ImportError:
            if self.ik_kind == "pinocchio":
                raise
            return None

    def _make_renderer(self) -> None:
        import mujoco

        self._renderer = mujoco.Renderer(self.model, self.height, self.width)
        flags = self._renderer.scene.flags
        flags[mujoco.mjtRndFlag.mjRND_SHADOW] = bool(self.cfg.render.shadows)
        flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = bool(self.cfg.render.reflections)
        flags[mujoco.mjtRndFlag.mjRND_SKYBOX] = bool(self.cfg.render.skybox)
        self._vopt = mujoco.MjvOption()
        # Only what a camera would see: the robot's visual meshes (group 2) or, with render.robot_meshes=collision,
        # its convex hulls (group 3) instead; no sites (the TCP marker).
        fast = self.cfg.render.robot_meshes == "collision"
        self._vopt.geomgroup[2] = 0 if fast else 1
        self._vopt.geomgroup[3] = 1 if fast else 0
        self._vopt.sitegroup[:] = 0

    def close_renderer(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    def close(self) -> None:
        """Release the renderer (its GL context)."""
        self.close_renderer()

    def _require(self) -> None:
        if self.model is None:
            raise RuntimeError("SimEnv.reset(seed, ...) must be called first")

    # ------------------------------------------------------------------------------------------------ control
    @property
    def time(self) -> float:
        """Simulation time since the last reset [s]."""
        return float(self.data.time) if self.data is not None else 0.0

    @property
    def timestep(self) -> float:
        return float(self.model.opt.timestep)

    @property
    def task(self) -> Task:
        self._require()
        return self.layout.task

    def set_joint_targets(self, q: np.ndarray) -> None:
        """Hold the arm at joint positions ``q`` (7,) [rad] (replaces any trajectory)."""
        q = np.asarray(q, dtype=float).reshape(-1)
        if q.shape != (7,) or not np.all(np.isfinite(q)):
            raise ValueError(f"joint targets must be 7 finite values [rad], got {q}")
        self._tracker = None
        self._hold = q.copy()

    def set_trajectory(self, tracker: JointTrajectoryTracker) -> None:
        """Follow ``tracker`` (times in simulation time [s]); replaces the current trajectory."""
        self._tracker = tracker
        self._hold = tracker.final_positions

    def commanded_joints(self) -> np.ndarray:
        """(7,) joint position target now [rad]."""
        return self._tracker.sample(self.time) if self._tracker is not None else self._hold.copy()

    def set_gripper(self, g: float) -> None:
        """Gripper command: 0 = open .. 1 = closed (clipped to [0, 1])."""
        if not np.isfinite(g):
            raise ValueError(f"gripper command must be finite, got {g}")
        self._gripper_cmd = float(np.clip(g, 0.0, 1.0))

    @property
    def gripper_command(self) -> float:
        return self._gripper_cmd

    def _apply_ctrl(self) -> None:
        ctrl = self.data.ctrl
        q_des = self.commanded_joints()
        if self._tracker is not None:
            # Velocity feed-forward through the position input: Menagerie's actuators apply
            # kp·(ctrl − q) − kv·q̇, so ctrl = q_des + (kv/kp)·q̇_des gives kp·(q_des − q) + kv·(q̇_des − q̇), the PD
            # law of a JointTrajectoryController with velocity feed-forward (without it the arm lags kv/kp = 0.1 s).
            q_des = q_des + self._kv_over_kp * self._tracker.sample_velocity(self.time)
        ctrl[self._act[:7]] = q_des
        ctrl[self._act[7]] = GRIPPER_OPEN_CTRL * (1.0 - self._gripper_cmd)

    def step(self, dt: float) -> None:
        """Advance physics by ``dt`` seconds (rounded to whole timesteps), tracking joint targets each step."""
        import mujoco

        self._require()
        n = max(round(dt / self.model.opt.timestep), 0)
        m, d = self.model, self.data
        target_geom = self._obj_geom[self.layout.target.name]
        for _ in range(n):
            self._apply_ctrl()
            mujoco.mj_step(m, d)
            if not self._touched and d.ncon:
                g1, g2 = d.contact.geom1, d.contact.geom2
                hit = ((g1 == target_geom) & np.isin(g2, self._robot_geoms)) | (
                    (g2 == target_geom) & np.isin(g1, self._robot_geoms))
                self._touched = bool(hit.any())

    def solve_ik(self, T: np.ndarray, q0: np.ndarray | None = None) -> IKSolution:
        """TCP pose (4, 4) in the base frame → joints, from ``q0`` (default: the current joint target)."""
        self._require()
        q0 = self.commanded_joints() if q0 is None else np.asarray(q0, float)
        if self._pin is not None:
            res = self._pin.ik(T, q0, posture_gain=0.1)
            return IKSolution(q=np.asarray(res.q, float), success=bool(res.success),
                              position_error=float(res.position_error_m),
                              orientation_error=float(res.rotation_error_rad))
        return self._ik.solve(T, q0)

    def step_ee(self, action: np.ndarray, dt: float = 1.0 / CONTROL_RATE_HZ) -> IKSolution:
        """Apply one 7-D EE action (absolute TCP target + gripper) over ``dt`` seconds.

        IK from the current joint target; the joint target moves linearly to the solution over ``dt`` (as a JTC
        would follow a one-point trajectory), the gripper command switches at once.
        """
        a = np.asarray(action, dtype=float).reshape(-1)
        if a.shape != (7,) or not np.all(np.isfinite(a)):
            raise ValueError(f"action must be 7 finite values [x, y, z, rx, ry, rz, g], got {a}")
        q_now = self.commanded_joints()
        sol = self.solve_ik(action_to_pose(a), q_now)
        self.set_trajectory(JointTrajectoryTracker(self.time, q_now, [dt], sol.q[None]))
        self.set_gripper(a[6])
        self.step(dt)
        return sol

    # ------------------------------------------------------------------------------------------------ snapshots
    def snapshot(self) -> SimSnapshot:
        """The complete dynamic state: MuJoCo's integration state (qpos, qvel, act, warm start, time, ...), the
        controller (trajectory / hold target, gripper command) and the episode's touch latch.

        :meth:`restore` of it and the same commands reproduce a rollout bit for bit (MuJoCo is deterministic on one
        machine): what the oracle world model (:mod:`vidplan_sim.oracle`) relies on.
        """
        import mujoco

        self._require()
        spec = mujoco.mjtState.mjSTATE_INTEGRATION
        state = np.empty(mujoco.mj_stateSize(self.model, spec))
        mujoco.mj_getState(self.model, self.data, state, spec)
        return SimSnapshot(state=state, tracker=self._tracker, hold=self._hold.copy(),
                           gripper_cmd=self._gripper_cmd, touched=self._touched)

    def restore(self, snap: SimSnapshot) -> None:
        """Return to a :meth:`snapshot` of the current scene (derived quantities recomputed with mj_forward)."""
        import mujoco

        self._require()
        mujoco.mj_setState(self.model, self.data, snap.state, mujoco.mjtState.mjSTATE_INTEGRATION)
        self._tracker, self._hold = snap.tracker, snap.hold.copy()
        self._gripper_cmd, self._touched = snap.gripper_cmd, snap.touched
        mujoco.mj_forward(self.model, self.data)

    # ------------------------------------------------------------------------------------------------ state
    def joint_positions(self) -> np.ndarray:
        """(7,) arm joint positions [rad]."""
        return self.data.qpos[self._arm_qadr].copy()

    def arm_joint_limits(self) -> tuple[np.ndarray, np.ndarray]:
        """(lower (7,), upper (7,)) arm joint position limits of the model [rad] (±inf for an unlimited joint)."""
        self._require()
        rng = self.model.jnt_range[self._arm_jid]
        limited = self.model.jnt_limited[self._arm_jid].astype(bool)
        return np.where(limited, rng[:, 0], -np.inf), np.where(limited, rng[:, 1], np.inf)

    def joint_velocities(self) -> np.ndarray:
        """(7,) arm joint velocities [rad/s]."""
        return self.data.qvel[self._arm_dadr].copy()

    def finger_positions(self) -> np.ndarray:
        """(2,) finger joint positions [m] (0 closed .. 0.04 open each; franka_ros2's finger_joint1/2)."""
        return self.data.qpos[self._finger_qadr].copy()

    def gripper_width(self) -> float:
        """Distance between the fingers [m] (0 .. 0.08)."""
        return float(self.finger_positions().sum())

    def ee_pose(self) -> np.ndarray:
        """(4, 4) TCP pose in the base frame (hand + 0.1034 m along its z)."""
        T = np.eye(4)
        T[:3, :3] = self.data.site_xmat[self._tcp].reshape(3, 3)
        T[:3, 3] = self.data.site_xpos[self._tcp]
        return T

    def hand_pose(self) -> np.ndarray:
        """(4, 4) pose of the hand body (= URDF panda_hand) in the base frame."""
        T = np.eye(4)
        T[:3, :3] = self.data.xmat[self._hand].reshape(3, 3)
        T[:3, 3] = self.data.xpos[self._hand]
        return T

    def ee_action(self) -> np.ndarray:
        """(7,) current state as an action vector [x, y, z, rx, ry, rz, gripper command]."""
        return pose_to_action(self.ee_pose(), self._gripper_cmd)

    def fk(self, q: np.ndarray) -> np.ndarray:
        """(7,) joints → (4, 4) TCP pose, on the simulation's model."""
        self._require()
        return self._ik.fk(np.asarray(q, float))

    def object_pose(self, name: str) -> np.ndarray:
        """(7,) [x, y, z, qx, qy, qz, qw] of object ``name`` (ROS quaternion order)."""
        self._require()
        if name not in self._obj_body:
            raise KeyError(f"no object {name!r}; objects: {sorted(self._obj_body)}")
        b = self._obj_body[name]
        w, x, y, z = self.data.xquat[b]
        return np.concatenate([self.data.xpos[b], [x, y, z, w]])

    def object_poses(self) -> dict[str, np.ndarray]:
        """All objects: name → (7,) pose (see :meth:`object_pose`)."""
        return {n: self.object_pose(n) for n in self._obj_body}

    def bowl_position(self) -> np.ndarray:
        """(3,) bowl centre on the table [m]."""
        return self.data.xpos[self._bowl_body].copy()

    def target_held(self) -> bool:
        """The target object is grasped now: both fingers touch it, they are at least
        :data:`GRASP_WIDTH_FRACTION` of its narrowest width apart, and its centre lies between them along their
        closing axis.

        Contact alone is not a grasp: fingers closed on an edge or the top of an object touch it with both pads at
        zero width, fingers beside it pinch a chord of it, and a held flag that counted those made the privileged
        reward take the carry phase with nothing in the hand (oracle+privileged put episodes dragged a cube 12 cm,
        and re-grasped a cylinder's side for 20 cycles)."""
        tg = self._obj_geom[self.layout.target.name]
        d = self.data
        if not d.ncon or self.gripper_width() < GRASP_WIDTH_FRACTION * 2.0 * self.layout.target.half_width:
            return False
        g1, g2 = d.contact.geom1[: d.ncon], d.contact.geom2[: d.ncon]
        other = np.where(g1 == tg, g2, np.where(g2 == tg, g1, -1))
        bodies = {int(self.model.geom_bodyid[g]) for g in other[other >= 0] if g in self._finger_geoms}
        if len(bodies) != 2:
            return False
        f1, f2 = d.xpos[self._finger_bodies[0]], d.xpos[self._finger_bodies[1]]
        u = f2 - f1
        t = float(np.dot(d.xpos[self._obj_body[self.layout.target.name]] - f1, u) / max(float(np.dot(u, u)), 1e-12))
        return 0.0 < t < 1.0

    def task_state(self) -> TaskState:
        t = self.layout.target
        return TaskState(target_pos=self.object_pose(t.name)[:3], target_start=self._target_start,
                         target_radius=min(t.radius, t.size.get("radius", t.size.get("half_size", 0.02))),
                         bowl_pos=self.bowl_position(), bowl_radius=self.cfg.bowl.radius,
                         bowl_height=self.cfg.bowl.height, touched=self._touched, held=self.target_held(),
                         push_distance=self.cfg.push_distance)

    def task_success(self) -> tuple[bool, str]:
        """(success, reason) of the current task on the current state."""
        self._require()
        return evaluate_task(self.layout.task, self.task_state())

    # ------------------------------------------------------------------------------------------------ images
    def render_view(self, view: str) -> np.ndarray:
        """(H, W, 3) uint8 RGB of one camera (``left``, ``right`` or ``wrist``)."""
        self._require()
        if self._renderer is None:
            if not self.want_render:
                raise RuntimeError("this SimEnv was created with render=False")
            self._make_renderer()
        if view not in VIEW_ORDER:
            raise ValueError(f"view must be one of {VIEW_ORDER}, got {view!r}")
        self._renderer.update_scene(self.data, camera=view, scene_option=self._vopt)
        return self._renderer.render()

    def render(self) -> np.ndarray:
        """(3, H, W, 3) uint8 RGB triplet in :data:`vidplan_core.spaces.VIEW_ORDER` (left, right, wrist)."""
        return np.stack([self.render_view(v) for v in VIEW_ORDER])

    #: labels of :meth:`render_labels`: 0 background (table, floor), 1 robot, 2 bowl, 3 + i object i of the layout
    LABEL_BACKGROUND, LABEL_ROBOT, LABEL_BOWL, LABEL_FIRST_OBJECT = 0, 1, 2, 3

    def render_labels(self, view: str) -> np.ndarray:
        """(H, W) uint8 label image of one camera from MuJoCo's segmentation rendering (what each pixel shows):
        0 background, 1 robot, 2 bowl, 3 + i the layout's object i (``self.layout.objects[i]``)."""
        import mujoco

        self._require()
        if self._renderer is None:
            if not self.want_render:
                raise RuntimeError("this SimEnv was created with render=False")
            self._make_renderer()
        if view not in VIEW_ORDER:
            raise ValueError(f"view must be one of {VIEW_ORDER}, got {view!r}")
        if self._geom_label is None:
            m = self.model
            lut = np.zeros(m.ngeom + 1, np.uint8)  # index ngeom: pixels that show no geom (id −1)
            lut[self._robot_geoms] = self.LABEL_ROBOT
            lut[[g for g in range(m.ngeom) if m.geom_bodyid[g] == self._bowl_body]] = self.LABEL_BOWL
            for i, o in enumerate(self.layout.objects):
                lut[self._obj_geom[o.name]] = self.LABEL_FIRST_OBJECT + i
            self._geom_label = lut
        r = self._renderer
        r.enable_segmentation_rendering()
        try:
            r.update_scene(self.data, camera=view, scene_option=self._vopt)
            seg = r.render()
        finally:
            r.disable_segmentation_rendering()
        ids, types = seg[..., 0], seg[..., 1]
        ids = np.where((types == int(mujoco.mjtObj.mjOBJ_GEOM)) & (ids >= 0), ids, -1)
        return self._geom_label[ids]

    def pose_arm(self, q: np.ndarray, gripper_width: float | None = None) -> None:
        """Place the arm at joints ``q`` (7,) [rad] (and the fingers at ``gripper_width`` [m]) without simulating
        the motion, and hold it there. For rendering data at chosen poses; objects are not moved."""
        import mujoco

        self._require()
        q = np.asarray(q, float)
        if q.shape != (7,) or not np.all(np.isfinite(q)):
            raise ValueError(f"q must be 7 finite joint positions [rad], got {q}")
        d = self.data
        d.qpos[self._arm_qadr] = q
        d.qvel[self._arm_dadr] = 0.0
        if gripper_width is not None:
            d.qpos[self._finger_qadr] = np.clip(float(gripper_width) / 2.0, 0.0, FINGER_MAX)
        self._hold, self._tracker = q.copy(), None
        mujoco.mj_forward(self.model, d)

    def observe(self, images: bool = True) -> dict[str, np.ndarray | float]:
        """What the robot's topics carry, in one dict (for in-process data generation).

        Keys: ``time`` [s]; ``images`` (3, H, W, 3) uint8 (left, right, wrist; only with ``images=True``);
        ``ee_action`` (7,) TCP pose as an action with the current gripper command; ``ee_pose`` (4, 4);
        ``joints`` (7,) [rad]; ``joint_velocities`` (7,) [rad/s]; ``gripper_width`` [m].
        """
        obs: dict[str, np.ndarray | float] = {
            "time": self.time, "ee_action": self.ee_action(), "ee_pose": self.ee_pose(),
            "joints": self.joint_positions(), "joint_velocities": self.joint_velocities(),
            "gripper_width": self.gripper_width()}
        if images:
            obs["images"] = self.render()
        return obs
