"""Motion backends of executor_node: how an IK-checked chunk reaches the arm.

* :class:`JtcBackend` — trajectory_msgs/JointTrajectory on a JointTrajectoryController topic (franka_ros2's
  ``/fr3_arm_controller/joint_trajectory``, or the MuJoCo sim). Tested here.
* :class:`ServoBackend` — geometry_msgs/PoseStamped targets streamed to MoveIt Servo (``/servo_node/pose_target_cmds``),
  interpolated between chunk steps at ``rate_hz``. Publishing is tested here; MoveIt Servo itself is not installable
  here.
* :class:`MoveItPyBackend` — the whole timed chunk through MoveItPy's trajectory execution
  (``moveit.planning.MoveItPy``), imported lazily. NOT RUN HERE: moveit_py cannot be installed on these machines;
  written against the MoveIt 2 Python API docs (the JointTrajectory it executes is the tested JTC one).

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

__all__ = ["BACKENDS", "JtcBackend", "MoveItPyBackend", "ServoBackend", "joint_trajectory", "make_backend"]


def _duration(t: float) -> Duration:
    sec = int(np.floor(t))
    return Duration(sec=sec, nanosec=round((t - sec) * 1e9) % 1_000_000_000)


def joint_trajectory(joint_names: list[str], qs: np.ndarray, times: np.ndarray, at_rest: bool = False
                     ) -> JointTrajectory:
    """trajectory_msgs/JointTrajectory of joint targets (K, 7) [rad] at ``time_from_start`` (K,) [s] (header.stamp
    0: start on receipt); ``at_rest`` adds zero velocities (a hold). What the JTC backend publishes and the moveit_py
    backend executes."""
    msg = JointTrajectory()
    msg.joint_names = list(joint_names)
    for q, t in zip(qs, times, strict=True):
        pt = JointTrajectoryPoint()
        pt.positions = [float(x) for x in q]
        if at_rest:
            pt.velocities = [0.0] * len(pt.positions)
        pt.time_from_start = _duration(float(t))
        msg.points.append(pt)
    return msg


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
        msg = joint_trajectory(self.joint_names, qs, times, at_rest)
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
    """Streams PoseStamped targets to MoveIt Servo (pose command mode), interpolating between chunk steps.

    MoveIt Servo on Jazzy and newer takes pose commands only after ``~/switch_command_type``
    (moveit_msgs/srv/ServoCommandType, POSE): the backend calls ``switch_service`` once, before its first stream,
    and again after a failed switch. Humble's Servo has no such service (it takes poses as they come): while the
    service is absent the backend streams anyway (saying so once) and looks for it again before each chunk.
    ``switch_service`` "" never calls it.
    """

    name = "servo"

    def __init__(self, node: Node, topic: str, base_frame: str, rate_hz: float = 50.0,
                 switch_service: str = "/servo_node/switch_command_type"):
        if rate_hz <= 0:
            raise ValueError(f"servo_rate_hz must be > 0, got {rate_hz}")
        self.node = node
        self.switch_state = "off" if not switch_service else "pending"  # pending | calling | done | off
        self._switch, self._absent_warned = None, False
        if switch_service:
            from moveit_msgs.srv import ServoCommandType  # a ROS 2 installation's (or CI's stand-in)

            self._switch_type = ServoCommandType
            self._switch = node.create_client(ServoCommandType, switch_service)
        self.base_frame = base_frame
        self.pub = node.create_publisher(PoseStamped, topic, 10)
        self._t0 = 0.0
        self._times = np.zeros(0)
        self._poses = np.zeros((0, 4, 4))
        self._lock = threading.Lock()  # send/hold (executor threads) vs the stream timer: keep messages in order
        self.timer = node.create_timer(1.0 / rate_hz, self._tick)

    def _now(self) -> float:
        return self.node.get_clock().now().nanoseconds * 1e-9

    def _ensure_pose_mode(self) -> None:
        if self.switch_state != "pending":
            return
        if not self._switch.service_is_ready():  # asked again before every chunk until it appears
            if not self._absent_warned:
                self._absent_warned = True
                self.node.get_logger().warn(f"MoveIt Servo's {self._switch.srv_name} is not offered: streaming "
                                            "poses without switching the command type (Humble's Servo needs none)")
            return
        self.switch_state = "calling"
        fut = self._switch.call_async(self._switch_type.Request(command_type=self._switch_type.Request.POSE))
        fut.add_done_callback(self._switched)

    def _switched(self, fut) -> None:
        ok = fut.result() is not None and fut.result().success
        self.switch_state = "done" if ok else "pending"  # retried before the next chunk
        (self.node.get_logger().info if ok else self.node.get_logger().error)(
            f"MoveIt Servo command type POSE: {'switched' if ok else 'switch refused; retrying with the next chunk'}")

    def send(self, qs: np.ndarray, times: np.ndarray, poses: np.ndarray) -> None:
        self._ensure_pose_mode()
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
    """MoveItPy execution of the whole timed chunk: the IK-checked joint targets at their ``time_from_start``
    (:func:`joint_trajectory`, the message the JTC backend publishes) become a ``moveit_msgs/RobotTrajectory``,
    loaded into a ``moveit.core.robot_trajectory.RobotTrajectory`` from the current state and executed through
    MoveIt's trajectory execution manager (its controller checks and monitoring), keeping the chunk's timing.

    NOT RUN HERE (moveit_py is not installable on these machines). Written against the MoveIt 2 Python API:
    ``MoveItPy(node_name=...)``, ``get_robot_model()``, ``get_planning_scene_monitor().read_only()``,
    ``RobotTrajectory(robot_model)``, ``.joint_model_group_name``, ``.set_robot_trajectory_msg(state, msg)``,
    ``MoveItPy.execute(trajectory, controllers=[])``.
    """

    name = "moveit_py"

    def __init__(self, node: Node, planning_group: str, joint_names: list[str], moveit_node_name: str):
        try:
            from moveit.core.robot_state import RobotState
            from moveit.planning import MoveItPy
        except ImportError as exc:
            raise ValueError("backend 'moveit_py' needs MoveIt 2's moveit_py (not installed here): "
                             f"{exc}; use backend:=jtc or servo") from exc
        from moveit.core.robot_trajectory import RobotTrajectory
        from moveit_msgs.msg import RobotTrajectory as RobotTrajectoryMsg

        self.node = node
        self.joint_names = list(joint_names)
        self._RobotState, self._RobotTrajectory, self._Msg = RobotState, RobotTrajectory, RobotTrajectoryMsg
        self.moveit = MoveItPy(node_name=moveit_node_name)
        self.planning_group = planning_group

    def _execute(self, qs: np.ndarray, times: np.ndarray, at_rest: bool = False) -> None:
        msg = self._Msg(joint_trajectory=joint_trajectory(self.joint_names, qs, times, at_rest))
        traj = self._RobotTrajectory(self.moveit.get_robot_model())
        traj.joint_model_group_name = self.planning_group
        with self.moveit.get_planning_scene_monitor().read_only() as scene:
            start = self._RobotState(scene.current_state)
        traj.set_robot_trajectory_msg(start, msg)
        self.moveit.execute(traj, controllers=[])

    def send(self, qs: np.ndarray, times: np.ndarray, poses: np.ndarray) -> None:
        self._execute(np.asarray(qs), np.asarray(times))

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
                 moveit_node_name: str, servo_switch_service: str = "/servo_node/switch_command_type"):
    """Backend by name (one of :data:`BACKENDS`); ValueError naming the choices otherwise."""
    if kind == "jtc":
        return JtcBackend(node, trajectory_topic, joint_names, hold_time_s)
    if kind == "servo":
        return ServoBackend(node, servo_topic, base_frame, servo_rate_hz, servo_switch_service)
    if kind == "moveit_py":
        return MoveItPyBackend(node, planning_group, joint_names, moveit_node_name)
    raise ValueError(f"backend must be one of {BACKENDS}, got {kind!r}")
