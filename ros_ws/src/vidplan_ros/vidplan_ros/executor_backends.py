"""Motion backends of executor_node: how an IK-checked chunk reaches the arm.

* :class:`JtcBackend` — trajectory_msgs/JointTrajectory on a JointTrajectoryController topic (franka_ros2's
  ``/fr3_arm_controller/joint_trajectory``, or the MuJoCo sim). Tested here.
* :class:`ServoBackend` — geometry_msgs/PoseStamped targets streamed to MoveIt Servo (``/servo_node/pose_target_cmds``),
  interpolated between chunk steps at ``rate_hz``. Publishing is tested here; MoveIt Servo itself is not installable
  here.
* :class:`MoveItPyBackend` — MoveItPy planning component (``moveit.planning.MoveItPy``), imported lazily.
  NOT RUN HERE: moveit_py cannot be installed on these machines; written against the MoveIt 2 Python API docs.

Every backend offers ``send(qs, times, poses)`` (joint targets (K, 7) [rad], absolute ``time_from_start`` (K,) [s],
EE poses (K, 4, 4) in the base frame) and ``hold(q, pose)`` (command the given state now and keep it).
"""

from __future__ import annotations

import threading

import numpy as np
from builtin_interfaces.msg import Duration
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from scipy.spatial.transform import Rotation, Slerp
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from vidplan_ros.conversions import pose_from_vec

__all__ = ["BACKENDS", "JtcBackend", "MoveItPyBackend", "ServoBackend", "make_backend"]


def _duration(t: float) -> Duration:
    sec = int(np.floor(t))
    return Duration(sec=sec, nanosec=round((t - sec) * 1e9) % 1_000_000_000)


def _pose_vec(T: np.ndarray) -> np.ndarray:
    return np.concatenate([T[:3, 3], Rotation.from_matrix(T[:3, :3]).as_quat()])


class JtcBackend:
    """JointTrajectory publisher (header.stamp = 0: the controller starts the trajectory on receipt; a new
    trajectory replaces the current one, as ros2_control's JointTrajectoryController does)."""

    name = "jtc"

    def __init__(self, node: Node, topic: str, joint_names: list[str], hold_time_s: float = 0.0):
        self.node = node
        self.joint_names = list(joint_names)
        self.hold_time_s = float(hold_time_s)
        self.pub = node.create_publisher(JointTrajectory, topic, 10)
        self.last_msg: JointTrajectory | None = None

    def _publish(self, qs: np.ndarray, times: np.ndarray, at_rest: bool = False) -> None:
        msg = JointTrajectory()
        msg.joint_names = self.joint_names
        for q, t in zip(qs, times, strict=True):
            pt = JointTrajectoryPoint()
            pt.positions = [float(x) for x in q]
            if at_rest:
                pt.velocities = [0.0] * len(pt.positions)
            pt.time_from_start = _duration(float(t))
            msg.points.append(pt)
        self.pub.publish(msg)
        self.last_msg = msg

    def send(self, qs: np.ndarray, times: np.ndarray, poses: np.ndarray) -> None:
        self._publish(qs, times)

    def hold(self, q: np.ndarray, pose: np.ndarray) -> None:
        # One point at the *measured* position with zero velocity, due at hold_time_s (default 0: at once). Not an
        # empty trajectory: JTC would then hold its current *command*, which leads the arm by the tracking lag.
        self._publish(np.asarray(q)[None], np.array([self.hold_time_s]), at_rest=True)

    def close(self) -> None:
        pass


class ServoBackend:
    """Streams PoseStamped targets to MoveIt Servo (pose command mode), interpolating between chunk steps."""

    name = "servo"

    def __init__(self, node: Node, topic: str, base_frame: str, rate_hz: float = 50.0):
        if rate_hz <= 0:
            raise ValueError(f"servo_rate_hz must be > 0, got {rate_hz}")
        self.node = node
        self.base_frame = base_frame
        self.pub = node.create_publisher(PoseStamped, topic, 10)
        self._t0 = 0.0
        self._times = np.zeros(0)
        self._poses = np.zeros((0, 4, 4))
        self._lock = threading.Lock()  # send/hold (executor threads) vs the stream timer: keep messages in order
        self.timer = node.create_timer(1.0 / rate_hz, self._tick)

    def _now(self) -> float:
        return self.node.get_clock().now().nanoseconds * 1e-9

    def send(self, qs: np.ndarray, times: np.ndarray, poses: np.ndarray) -> None:
        start = getattr(self.node, "current_ee_pose", lambda: poses[0])()
        with self._lock:
            self._t0 = self._now()
            self._times = np.concatenate([[0.0], np.asarray(times, float)])
            self._poses = np.concatenate([start[None], np.asarray(poses, float)])
        self._tick()

    def hold(self, q: np.ndarray, pose: np.ndarray) -> None:
        with self._lock:
            self._t0 = self._now()
            self._times = np.zeros(1)
            self._poses = np.asarray(pose, float)[None]
        self._tick()

    def target_at(self, t: float) -> np.ndarray | None:
        """(4, 4) interpolated target at ``t`` seconds after the last send (None when nothing was sent)."""
        if not len(self._poses):
            return None
        if t >= self._times[-1] or len(self._poses) == 1:
            return self._poses[-1]
        i = int(np.searchsorted(self._times, t, side="right")) - 1
        i = max(0, min(i, len(self._times) - 2))
        a = (t - self._times[i]) / (self._times[i + 1] - self._times[i])
        T = np.eye(4)
        T[:3, 3] = (1 - a) * self._poses[i, :3, 3] + a * self._poses[i + 1, :3, 3]
        rots = Rotation.from_matrix(self._poses[i:i + 2, :3, :3])
        T[:3, :3] = Slerp([0.0, 1.0], rots)([a])[0].as_matrix()
        return T

    def _tick(self) -> None:
        with self._lock:
            T = self.target_at(self._now() - self._t0)
            if T is None:
                return
            msg = PoseStamped()
            msg.header.frame_id = self.base_frame
            msg.header.stamp = self.node.get_clock().now().to_msg()
            msg.pose = pose_from_vec(_pose_vec(T))
            self.pub.publish(msg)

    def close(self) -> None:
        self.timer.cancel()


class MoveItPyBackend:  # pragma: no cover - moveit_py cannot be installed here
    """MoveItPy planning component: plans to the chunk's last joint target from the current state and executes.

    NOT RUN HERE (moveit_py is not installable on these machines). Written against the MoveIt 2 Python API:
    ``MoveItPy(node_name=...)``, ``get_planning_component(group)``, ``set_start_state_to_current_state()``,
    ``set_goal_state(robot_state=...)``, ``plan()``, ``MoveItPy.execute(trajectory, controllers=[])``.
    """

    name = "moveit_py"

    def __init__(self, node: Node, planning_group: str, joint_names: list[str], moveit_node_name: str):
        try:
            from moveit.core.robot_state import RobotState
            from moveit.planning import MoveItPy
        except ImportError as exc:
            raise ValueError("backend 'moveit_py' needs MoveIt 2's moveit_py (not installed here): "
                             f"{exc}; use backend:=jtc or servo") from exc
        self.node = node
        self.joint_names = list(joint_names)
        self._RobotState = RobotState
        self.moveit = MoveItPy(node_name=moveit_node_name)
        self.component = self.moveit.get_planning_component(planning_group)
        self.planning_group = planning_group

    def _execute_to(self, q: np.ndarray) -> None:
        state = self._RobotState(self.moveit.get_robot_model())
        state.set_joint_group_positions(self.planning_group, np.asarray(q, float))
        self.component.set_start_state_to_current_state()
        self.component.set_goal_state(robot_state=state)
        plan = self.component.plan()
        if not plan:
            raise RuntimeError("MoveItPy could not plan to the chunk's last joint target")
        self.moveit.execute(plan.trajectory, controllers=[])

    def send(self, qs: np.ndarray, times: np.ndarray, poses: np.ndarray) -> None:
        self._execute_to(np.asarray(qs)[-1])

    def hold(self, q: np.ndarray, pose: np.ndarray) -> None:
        manager = getattr(self.moveit, "get_trajectory_execution_manager", None)
        if manager is not None:
            manager().stop_execution()

    def close(self) -> None:
        shutdown = getattr(self.moveit, "shutdown", None)
        if callable(shutdown):
            shutdown()


BACKENDS = ("jtc", "servo", "moveit_py")


def make_backend(kind: str, node: Node, *, trajectory_topic: str, servo_topic: str, joint_names: list[str],
                 base_frame: str, hold_time_s: float, servo_rate_hz: float, planning_group: str,
                 moveit_node_name: str):
    """Backend by name (one of :data:`BACKENDS`); ValueError naming the choices otherwise."""
    if kind == "jtc":
        return JtcBackend(node, trajectory_topic, joint_names, hold_time_s)
    if kind == "servo":
        return ServoBackend(node, servo_topic, base_frame, servo_rate_hz)
    if kind == "moveit_py":
        return MoveItPyBackend(node, planning_group, joint_names, moveit_node_name)
    raise ValueError(f"backend must be one of {BACKENDS}, got {kind!r}")
