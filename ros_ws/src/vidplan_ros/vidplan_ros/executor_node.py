"""executor_node: turns planned EE chunks into arm motion, behind the safety filter (the last line before the arm).

Inputs: ``/vidplan/plan`` (vidplan_interfaces/PlanChunk; a new chunk replaces the one being executed), the
``/vidplan/execute_chunk`` action (vidplan_interfaces/action/ExecuteChunk: feedback = step index + tracking error,
result = status/reason/final errors, cancel holds the arm), ``/joint_states`` and ``/vidplan/estop``
(std_msgs/Bool; honoured from a publisher of any QoS through three subscriptions: best-effort volatile matches every
publisher, reliable volatile gives a reliable publisher (rclpy's default) reliable delivery, reliable transient-local
also receives an estop latched before this node started; the deliveries of one message are de-duplicated; they
belong to a node ``<name>_estop`` on a DDS participant of its own, :class:`vidplan_ros.estop_listener.EstopListener`,
so a flood on the plan topic cannot queue an estop behind it). Service
``/vidplan/reset_estop`` (std_srvs/Trigger) releases a latched estop. Publishes ``/diagnostics`` (status, last
rejection reason, counters, latency, ``last_chunk_age_s``: steady-clock seconds since the last chunk arrived on the
plan topic or as a goal, "inf" before the first). Once a chunk has arrived, no chunk for longer than
``plan_timeout_s`` while idle is a WARN "no plan for N s" (the arm holds; a dead planner is told apart from an idle
one).

More than one publisher on the joint-state topic (a second sim, a bag replay, another robot on the same ROS domain:
two arms' positions interleave, so IK starts, holds and tracking are meaningless) is an ERROR naming the publishing
nodes: while it lasts, chunks (topic and goals) are refused with that reason and a running chunk is aborted and held.
The ROS graph is checked every diagnostics period, so a publisher seen only in between does not stop anything.

Safety-topic faults (ERROR on /diagnostics, naming the topic): a publisher whose QoS is incompatible with this node's
subscription (rclpy's incompatible-QoS event, and the ROS graph checked every diagnostics period so the ERROR clears
when that publisher leaves) or whose message type differs (never delivered). Malformed messages (a JointState without
positions for its names, NaN, a chunk that cannot be read) are logged (throttled), counted and dropped.

Per chunk: refuse when the estop is latched or joint states are missing/stale → the execution core
:func:`vidplan_core.execution.plan_execution` (the same code the in-process evaluations run): safety filter
(:func:`vidplan_core.safety.filter_chunk`: NaN, lengths, staleness, frame, workspace box, per-step translation and
rotation, gripper range; ``reject`` or ``clip``) → damped-least-squares IK from the measured joint state with
continuity across steps (stops at the last reachable step and reports) → joint position/velocity check →
backend: ``jtc`` (JointTrajectory with ``time_from_start = (i+1)·dt·time_scale``), ``servo`` (PoseStamped stream to
MoveIt Servo) or ``moveit_py`` (MoveItPy, imported lazily; NOT RUN HERE). A rejected chunk moves nothing.
Estop latches a hold (the measured position commanded as a one-point trajectory) until the reset service is called.

Parameters: :mod:`vidplan_ros.executor_params` documents each one (name, type, default, units; ``ros2 param
describe`` shows the same text). All are read once at start-up and are read-only; a value of the wrong type or a
missing / unreadable URDF exits with code 2 and one line naming the parameter or file.

Lifecycle (a managed node, :mod:`vidplan_ros.lifecycle`): parameters are checked at start-up (a bad value exits
with code 2 in any mode); configure loads the kinematics, the backend and the gripper and opens the topics, the
estop and the ExecuteChunk action; only an active executor moves the arm: while inactive every chunk and goal is
refused naming the state, and deactivating stops a running chunk and holds position. The estop stays live in every
configured state; /diagnostics reports the state in every state.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, ShutdownException
from rclpy.qos import (
    QoSCompatibility,
    QoSProfile,
    qos_check_compatible,
    qos_policy_name_from_kind,
    qos_profile_sensor_data,
)
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool
from std_srvs.srv import Trigger

from vidplan_core.execution import Rejection, plan_execution
from vidplan_core.kinematics import PandaKinematics, rotation_error
from vidplan_interfaces.action import ExecuteChunk
from vidplan_interfaces.msg import PlanChunk
from vidplan_ros.compat import QoSRequestedIncompatibleQoSInfo, SubscriptionEventCallbacks
from vidplan_ros.conversions import stamp_to_sec
from vidplan_ros.estop_listener import ESTOP_ANY_QOS, EstopListener
from vidplan_ros.executor_backends import make_backend
from vidplan_ros.executor_params import check_urdf_file, declare_executor_parameters
from vidplan_ros.gripper import ActionGripper, TopicGripper
from vidplan_ros.lifecycle import ManagedNode
from vidplan_ros.node_runner import run_node
from vidplan_ros.qos import action_server_qos

Result = ExecuteChunk.Result
PLAN_QOS = QoSProfile(depth=10)
QOS_EVENT_HOLD_S = 3.0  # an incompatible-QoS event stays reported at least this long (the graph may lag the event)
STATUS_NAMES = {Result.STATUS_SUCCEEDED: "succeeded", Result.STATUS_REJECTED: "rejected",
                Result.STATUS_ABORTED: "aborted", Result.STATUS_CANCELED: "canceled", Result.STATUS_ESTOP: "estop"}


def _incompatible_policy(reason: str) -> str:
    """Policy name for a reason text of :func:`rclpy.qos.qos_check_compatible`."""
    r = reason.lower()
    for key, policy in (("reliab", "RELIABILITY"), ("best effort", "RELIABILITY"), ("durab", "DURABILITY"),
                        ("transient", "DURABILITY"), ("deadline", "DEADLINE"), ("lease", "LIVELINESS"),
                        ("liveliness", "LIVELINESS")):
        if key in r:
            return policy
    return "QoS"


@dataclass(frozen=True)
class _Watched:
    """A safety subscription whose publishers are checked: topic, message type name ("std_msgs/msg/Bool"), QoS."""

    topic: str
    type_name: str
    qos: QoSProfile


def _type_name(msg_type) -> str:
    return f"{msg_type.__module__.split('.')[0]}/msg/{msg_type.__name__}"


def _chunk_mapping(msg: PlanChunk) -> dict[str, object]:
    """PlanChunk → the raw mapping :func:`vidplan_core.execution.plan_execution` checks: ``position`` (H, 3) [m],
    ``quaternion`` (H, 4) xyzw, ``gripper`` (G,) and ``dt`` [s] (lengths not checked here: the safety filter does)."""
    return {"position": np.array([[p.position.x, p.position.y, p.position.z] for p in msg.poses]).reshape(-1, 3),
            "quaternion": np.array([[p.orientation.x, p.orientation.y, p.orientation.z, p.orientation.w]
                                    for p in msg.poses]).reshape(-1, 4),
            "gripper": np.asarray(msg.gripper, dtype=np.float64), "dt": float(msg.dt)}


@dataclass
class _Execution:
    """One chunk being executed (times are ROS time [s]; arrays per executed step)."""

    id: int
    plan_id: int
    t_start: float
    times: np.ndarray  # (K,) time_from_start [s]
    q_start: np.ndarray  # (7,)
    qs: np.ndarray  # (K, 7) commanded joint targets
    targets: np.ndarray  # (K, 4, 4) EE poses of the commanded joint targets
    gripper: np.ndarray  # (K,)
    wait_for_settle: bool
    truncated_reason: str = ""  # IK stopped the chunk early
    notes: str = ""  # clipped violations
    goal_handle: object | None = None
    step_index: int = 0
    gripper_sent: int = -1
    position_error: float = 0.0
    orientation_error: float = 0.0
    result: Result | None = None
    done: threading.Event = field(default_factory=threading.Event)
    last_feedback: float = 0.0
    path_points: np.ndarray | None = None  # (M, 3) TCP positions densely along the commanded joint path [m]


class ExecutorNode(ManagedNode):
    """See the module docstring (a managed node: :mod:`vidplan_ros.lifecycle`)."""

    def __init__(self) -> None:
        super().__init__("executor")

        P = self.params = declare_executor_parameters(self)  # ValueError → run_node exits 2 naming the parameter
        self.backend_name, self.policy, self.joint_prefix, self.base_frame = (P.backend_name, P.policy,
                                                                              P.joint_prefix, P.base_frame)
        self.js_topic, self.js_timeout, self.time_scale = P.js_topic, P.js_timeout, P.time_scale
        self.limits, self.ik_options = P.limits, P.ik_options
        self.goal_pos_tol, self.goal_rot_tol, self.settle_timeout = P.goal_pos_tol, P.goal_rot_tol, P.settle_timeout
        self.path_tol, self.plan_timeout = P.path_tol, P.plan_timeout
        self._lock = threading.RLock()
        self._active: _Execution | None = None  # the running chunk
        self._action_node = None
        self._steady = Clock(clock_type=ClockType.STEADY_TIME)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.estop_listener: EstopListener | None = None
        self.create_timer(P.diag_period, self._on_diagnostics_timer, clock=self._steady)
        self.start(P.autostart)

    # ------------------------------------------------------------------ lifecycle
    def configure(self) -> None:
        """Kinematics, backend, gripper, subscriptions, the estop service and the ExecuteChunk action (ValueError:
        a URDF or frame that cannot load; the node stays unconfigured)."""
        st = self.params
        trajectory_topic, gripper_topic, gripper_interface = st.trajectory_topic, st.gripper_topic, st.gripper_interface
        gripper_action, gripper_open_width, gripper_max_effort = (st.gripper_action, st.gripper_open_width,
                                                                  st.gripper_max_effort)
        servo_topic, servo_rate, servo_switch = st.servo_topic, st.servo_rate, st.servo_switch
        planning_group, moveit_node_name, hold_time = st.planning_group, st.moveit_node_name, st.hold_time
        urdf_path, ee_frame, plan_topic, js_topic = st.urdf_path, st.ee_frame, st.plan_topic, st.js_topic
        estop_topic, action_name, monitor_rate = st.estop_topic, st.action_name, st.monitor_rate
        if urdf_path:
            check_urdf_file(urdf_path)
        try:
            self.kin = PandaKinematics(urdf_path or None, ee_frame or None)
        except (OSError, ValueError, RuntimeError) as exc:  # pinocchio's parse errors, a wrong ee_frame, ...
            raise ValueError(f"cannot load the kinematics (urdf_path={urdf_path or '<installed default>'!r}, "
                             f"ee_frame={ee_frame or '<default>'!r}): {exc}") from exc
        self.joint_names = [f"{self.joint_prefix}_joint{i}" for i in range(1, 8)]
        self.finger_name = f"{self.joint_prefix}_finger_joint1"

        # --- state (guarded by _lock)
        self._q: np.ndarray | None = None
        self._q_wall = 0.0
        self._gripper_width = float("nan")
        self._js_index: tuple[tuple[str, ...], list[int] | None] = ((), None)
        self._estop = False
        self._active = None
        self._next_id = 1
        self.counters = {"chunks_received": 0, "chunks_rejected": 0, "chunks_executed": 0, "estops": 0,
                         "malformed_joint_states": 0, "malformed_chunks": 0}
        self._qos_events: dict[str, tuple[str, float]] = {}  # topic → (fault, monotonic time of the event)
        self._graph_faults: dict[str, str] = {}  # topic → fault found in the ROS graph at the last check
        self._js_publishers: list[str] = []  # nodes publishing on the joint-state topic at the last graph check
        self._last_chunk_mono: float | None = None  # time.monotonic() of the last chunk received (topic or goal)
        self.last_rejection = ""
        self.last_result = ""
        self.last_latency_ms = float("nan")
        self.latencies_ms: deque[float] = deque(maxlen=1000)  # chunk received → trajectory handed to the backend
        self.latencies_cpu_ms: deque[float] = deque(maxlen=1000)  # the same, CPU time of the handling thread
        self.estop_latched_at = float("nan")  # ROS time [s] of the last estop latch

        # --- ROS interfaces. Threading: everything that runs at a high rate or is safety-critical (joint states,
        # /clock, estop, chunks on the topic, the monitor) is spun by run_node's single-threaded executor in the main
        # thread. rclpy's MultiThreadedExecutor costs ~2.4x the CPU per callback (measured: 44 % vs 19 % of a core,
        # idle, with /clock and /joint_states at 100 Hz) and on 2 busy cores that overhead made this node's view of
        # /clock and /joint_states trail the sim by 100+ ms. Only the action server, whose execute callback must block
        # until the chunk is done, lives on a small helper node with its own multithreaded executor (few callbacks).
        self.backend = make_backend(self.backend_name, self, trajectory_topic=trajectory_topic,
                                    servo_topic=servo_topic, joint_names=self.joint_names,
                                    base_frame=self.base_frame, hold_time_s=hold_time, servo_rate_hz=servo_rate,
                                    planning_group=planning_group, moveit_node_name=moveit_node_name,
                                    servo_switch_service=servo_switch)
        if gripper_interface == "action":
            self.gripper = ActionGripper(self, gripper_action, gripper_open_width, gripper_max_effort)
        else:
            self.gripper = TopicGripper(self, gripper_topic) if gripper_topic else None
        # Safety subscriptions: an incompatible publisher is an ERROR on /diagnostics (not only rclpy's log line).
        # The estop subscriptions live on a DDS participant of their own (EstopListener: a flood of chunks must not
        # queue an estop behind it); of them only the best-effort one is watched: a publisher the reliable or latched
        # ones do not match still reaches it (ESTOP_ANY_QOS matches every publisher), so that is no fault.
        self.estop_listener = EstopListener(self, estop_topic, self._on_estop, self._on_incompatible_qos)
        self._watched = [_Watched(js_topic, _type_name(JointState), qos_profile_sensor_data),
                         _Watched(plan_topic, _type_name(PlanChunk), PLAN_QOS),
                         _Watched(self.estop_listener.topic, _type_name(Bool), ESTOP_ANY_QOS)]
        for w, msg_type, cb in zip(self._watched[:2], (JointState, PlanChunk),
                                   (self._on_joint_state, self._on_plan), strict=True):
            events = SubscriptionEventCallbacks(
                incompatible_qos=lambda info, t=w.topic: self._on_incompatible_qos(t, info))
            self.create_subscription(msg_type, w.topic, cb, w.qos, event_callbacks=events)
        self.create_service(Trigger, "/vidplan/reset_estop", self._on_reset_estop)
        self.create_timer(1.0 / monitor_rate, self._monitor, clock=self._steady)
        # Helper node for the action server: no global arguments (so no use_sim_time and no /clock subscription on
        # its executor), no parameter services; the action name is this node's `action_name` parameter.
        self._action_node = rclpy.create_node(f"{self.get_name()}_action", context=self.context,
                                              use_global_arguments=False, start_parameter_services=False)
        self.action_server = ActionServer(self._action_node, ExecuteChunk, action_name,
                                          execute_callback=self._execute_goal,
                                          goal_callback=lambda _g: GoalResponse.ACCEPT,
                                          cancel_callback=lambda _g: CancelResponse.ACCEPT,
                                          callback_group=ReentrantCallbackGroup(), **action_server_qos())
        self._action_executor = MultiThreadedExecutor(num_threads=4, context=self.context)
        self._action_executor.add_node(self._action_node)
        self._action_thread = threading.Thread(target=self._spin_actions, name="execute_chunk_action", daemon=True)
        self._action_thread.start()
        self.get_logger().info("executor configured")

    def activate(self) -> None:
        self.get_logger().info(
            f"executor ready: backend={self.backend_name} policy={self.policy} "
            f"joints={self.joint_prefix}_joint1..7 base_frame={self.base_frame} "
            f"workspace={self.limits.workspace_min}..{self.limits.workspace_max}")

    def deactivate(self) -> None:
        """Stop the running chunk and hold position (chunks and goals are refused until activated again)."""
        with self._lock:
            active = self._active
        if active is not None:
            self._hold()
            self._finish(active, Result.STATUS_ABORTED, "executor deactivated (lifecycle); holding position")

    def release(self) -> None:
        """Hold the arm if it is executing and the context still allows publishing, release the backend and the
        action server (cleanup, a failed configure, exit). After SIGINT/SIGTERM the context is already down and the
        controller keeps holding the last point it received, which is the JTC's own behaviour."""
        try:
            with self._lock:
                active = self._active
            if active is not None and rclpy.ok(context=self.context):
                self._hold()
        except Exception as exc:  # shutting down: report and go on
            self.get_logger().warning(f"could not command a hold on shutdown: {exc}")
        finally:
            backend = getattr(self, "backend", None)
            if backend is not None:
                backend.close()
                self.backend = None
            action_node, self._action_node = self._action_node, None
            if action_node is not None:
                self._action_executor.shutdown(timeout_sec=1.0)
                action_node.destroy_node()
            listener, self.estop_listener = self.estop_listener, None
            if listener is not None:
                listener.close()

    # ------------------------------------------------------------------ helpers
    def _spin_actions(self) -> None:
        try:
            self._action_executor.spin()
        except (ExternalShutdownException, ShutdownException):
            pass

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _joint_state(self) -> tuple[np.ndarray | None, float]:
        """Latest measured arm joints (7,) and their age [s] (wall time since receipt)."""
        with self._lock:
            if self._q is None:
                return None, float("inf")
            return self._q.copy(), time.monotonic() - self._q_wall

    def current_ee_pose(self) -> np.ndarray:
        """(4, 4) EE pose from the measured joints (identity before the first joint state)."""
        q, _ = self._joint_state()
        return self.kin.fk(q) if q is not None else np.eye(4)

    def _pose_errors(self, T_target: np.ndarray, T: np.ndarray) -> tuple[float, float]:
        return (float(np.linalg.norm(T_target[:3, 3] - T[:3, 3])),
                rotation_error(T_target[:3, :3], T[:3, :3]))

    def _make_result(self, status: int, reason: str, steps: int = 0, pos_err: float = 0.0,
                     rot_err: float = 0.0) -> Result:
        r = Result()
        r.status, r.reason, r.steps_executed = int(status), reason, int(steps)
        r.final_position_error, r.final_orientation_error = float(pos_err), float(rot_err)
        return r

    def _reject(self, status: int, reason: str) -> Result:
        with self._lock:
            self.counters["chunks_rejected"] += 1
            self.last_rejection = reason
        self.get_logger().warning(f"chunk {STATUS_NAMES[status]}: {reason}")
        self._publish_diagnostics()
        return self._make_result(status, reason)

    def _hold(self) -> None:
        q, _ = self._joint_state()
        if q is not None:
            self.backend.hold(q, self.kin.fk(q))

    # ------------------------------------------------------------------ callbacks
    def _drop_joint_state(self, why: str) -> None:
        """Count and log (throttled) a malformed JointState; it is not used (no fresh state from it)."""
        self.counters["malformed_joint_states"] += 1
        self.get_logger().warning(f"dropped malformed JointState on {self.js_topic}: {why}",
                                  throttle_duration_sec=2.0)

    def _on_joint_state(self, msg: JointState) -> None:
        names = tuple(msg.name)
        cached_names, idx = self._js_index
        if names != cached_names:
            idx = [names.index(n) for n in self.joint_names] if all(n in names for n in self.joint_names) else None
            if len(set(names)) != len(names):
                idx = None  # which of two positions of one joint is the arm's? neither
            self._js_index = (names, idx)
            if idx is None:
                self.get_logger().warning(f"/joint_states lacks {self.joint_names} or repeats a name (has "
                                          f"{list(names)}); check joint_prefix", throttle_duration_sec=5.0)
        if idx is None:
            return
        if len(msg.position) != len(names):  # sensor_msgs/JointState: one position per name
            self._drop_joint_state(f"{len(names)} names but {len(msg.position)} positions")
            return
        q = np.array([msg.position[i] for i in idx], dtype=np.float64)
        if not np.isfinite(q).all():
            self._drop_joint_state(f"non-finite arm joint positions {q.tolist()}")
            return
        with self._lock:
            self._q = q
            self._q_wall = time.monotonic()
            if self.finger_name in names:
                self._gripper_width = 2.0 * float(msg.position[names.index(self.finger_name)])

    def _chunk_arrived(self) -> None:
        with self._lock:
            self._last_chunk_mono = time.monotonic()

    def _on_plan(self, msg: PlanChunk) -> None:
        self._chunk_arrived()
        try:
            out = self._start(msg, self.policy, 0, 0.0, False, None)
        except Exception as exc:  # a chunk this code cannot read must not stop the node that holds the arm on estop
            self.counters["malformed_chunks"] += 1
            self.get_logger().error(f"dropped malformed PlanChunk on the plan topic: {type(exc).__name__}: {exc}",
                                    throttle_duration_sec=2.0)
            out = self._reject(Result.STATUS_REJECTED, f"malformed chunk: {type(exc).__name__}: {exc}")
        if isinstance(out, Result):
            self.last_result = f"{STATUS_NAMES[out.status]}: {out.reason}"

    def _on_incompatible_qos(self, topic: str, info: QoSRequestedIncompatibleQoSInfo) -> None:
        policy = qos_policy_name_from_kind(info.last_policy_kind)
        fault = (f"incompatible QoS on {topic} ({policy}): a publisher's {policy} policy does not match this "
                 "subscription; its messages are dropped")
        with self._lock:
            self._qos_events[topic] = (fault, time.monotonic())
        self.get_logger().error(fault)
        self._publish_diagnostics()

    def _check_graph(self) -> None:
        """Publishers on the safety topics whose QoS or message type keeps their messages from this node."""
        faults: dict[str, str] = {}
        js_publishers = self._js_publishers
        for w in self._watched:
            try:
                infos = self.get_publishers_info_by_topic(w.topic)
            except Exception as exc:  # the graph is advisory here; the events still report
                self.get_logger().warning(f"cannot read the ROS graph for {w.topic}: {exc}", throttle_duration_sec=10)
                continue
            if w.topic == self.js_topic:
                js_publishers = sorted(f"{i.node_namespace.rstrip('/')}/{i.node_name}" for i in infos)
            for info in infos:
                who = f"node '{info.node_namespace.rstrip('/')}/{info.node_name}'"
                if info.topic_type != w.type_name:
                    faults[w.topic] = (f"wrong message type on {w.topic}: {who} publishes {info.topic_type}, expected "
                                       f"{w.type_name}; its messages are never received")
                    break
                compat, reason = qos_check_compatible(info.qos_profile, w.qos)
                if compat == QoSCompatibility.ERROR:
                    policy = _incompatible_policy(reason)
                    faults[w.topic] = (f"incompatible QoS on {w.topic} ({policy}): {who} offers "
                                       f"{reason.removeprefix('ERROR: ').rstrip(';')}; its messages are dropped")
                    break
        with self._lock:
            self._graph_faults = faults
            self._js_publishers = js_publishers

    def _js_publisher_fault(self) -> str:
        """Why the joint states cannot be trusted because several nodes publish them ('' when at most one does), from
        the last graph check."""
        with self._lock:
            nodes = list(self._js_publishers)
        if len(nodes) <= 1:
            return ""
        return (f"{len(nodes)} publishers on {self.js_topic} (nodes {', '.join(nodes)}; expected 1): another sim, bag "
                "replay or robot on this ROS domain? Joint states from two sources interleave")

    def _safety_faults(self) -> list[str]:
        """Current safety-topic faults: the graph's, plus incompatible-QoS events younger than QOS_EVENT_HOLD_S."""
        now = time.monotonic()
        with self._lock:
            faults = dict(self._graph_faults)
            for topic, (fault, t) in list(self._qos_events.items()):
                if now - t > QOS_EVENT_HOLD_S:
                    del self._qos_events[topic]  # from now on the graph check decides
                elif topic not in faults:
                    faults[topic] = fault
        return [faults[t] for t in sorted(faults)]

    def _on_diagnostics_timer(self) -> None:
        if not self.is_configured:
            self._publish_unconfigured()
            return
        self._check_graph()
        js_fault = self._js_publisher_fault()
        with self._lock:
            active = self._active
        if js_fault and active is not None:
            self._hold()
            self._finish(active, Result.STATUS_ABORTED, f"{js_fault}; holding position")
        self._publish_diagnostics()

    def _on_estop(self, msg: Bool) -> None:
        if not msg.data:
            return  # only the reset service releases a latched estop
        t_latch = self._now()
        with self._lock:
            already = self._estop
            self._estop = True
            active = self._active
            if not already:
                self.counters["estops"] += 1
                self.estop_latched_at = t_latch
        self._hold()
        if active is not None:
            self._finish(active, Result.STATUS_ESTOP, f"emergency stop latched (/vidplan/estop) at t={t_latch:.3f} s "
                                                      "(ROS time); holding position")
        if not already:
            self.get_logger().error("EMERGENCY STOP latched: holding position until /vidplan/reset_estop")
        self._publish_diagnostics()

    def _on_reset_estop(self, _req: Trigger.Request, resp: Trigger.Response) -> Trigger.Response:
        with self._lock:
            was = self._estop
            self._estop = False
        resp.success = True
        resp.message = "estop released" if was else "estop was not latched"
        self.get_logger().info(resp.message)
        self._publish_diagnostics()
        return resp

    # ------------------------------------------------------------------ execution
    def _start(self, msg: PlanChunk, policy: str, max_steps: int, time_scale: float, wait_for_settle: bool,
               goal_handle) -> _Execution | Result:
        """Check and start a chunk. Returns the running execution, or a Result when nothing was started."""
        t_recv, cpu_recv = time.perf_counter(), time.thread_time()
        with self._lock:
            self.counters["chunks_received"] += 1
            estop = self._estop
        if estop:
            return self._reject(Result.STATUS_ESTOP, "emergency stop is latched; call /vidplan/reset_estop first")
        if not self.is_active:
            return self._reject(Result.STATUS_REJECTED, f"executor is {self.lifecycle_state}, not active "
                                "(lifecycle); refusing to move")
        js_fault = self._js_publisher_fault()
        if js_fault:
            return self._reject(Result.STATUS_REJECTED, f"{js_fault}; refusing to move")
        gripper = self._gripper_problem()
        if gripper:
            return self._reject(Result.STATUS_REJECTED, f"{gripper}; refusing to move")
        q, age = self._joint_state()
        if q is None:
            return self._reject(Result.STATUS_REJECTED, "no joint states received yet; refusing to move "
                                f"(expecting {self.joint_names[0]}..7 on /joint_states)")
        if age > self.js_timeout:
            return self._reject(Result.STATUS_REJECTED, f"joint states are stale ({age:.2f} s old > "
                                f"joint_state_timeout_s={self.js_timeout}); refusing to move")
        ts = time_scale if time_scale > 0 else self.time_scale
        stamp = stamp_to_sec(msg.header.stamp)
        plan = plan_execution(_chunk_mapping(msg), q, self.kin, self.limits, policy, self.ik_options,
                              time_scale=ts, max_steps=max_steps,
                              age_s=float("inf") if stamp == 0 else self._now() - stamp,
                              frame_id=msg.header.frame_id, base_frame=self.base_frame)
        if isinstance(plan, Rejection):
            status = Result.STATUS_ABORTED if plan.status == "aborted" else Result.STATUS_REJECTED
            return self._reject(status, plan.reason)
        qs, times, poses = plan.positions, plan.times, plan.ee_targets
        with self._lock:
            if self._estop:  # latched while this chunk was being checked: nothing may move
                return self._reject(Result.STATUS_ESTOP, "emergency stop is latched; call /vidplan/reset_estop first")
            previous = self._active
            ex = _Execution(id=self._next_id, plan_id=int(msg.plan_id), t_start=self._now(), times=times,
                            q_start=plan.q_start, qs=qs, targets=poses, gripper=plan.gripper,
                            wait_for_settle=wait_for_settle, truncated_reason=plan.truncated_reason,
                            notes="; ".join(str(v) for v in plan.notes), goal_handle=goal_handle)
            self._next_id += 1
            self._active = ex
            self.backend.send(qs, times, poses)
            self.last_latency_ms = (time.perf_counter() - t_recv) * 1e3
            self.latencies_ms.append(self.last_latency_ms)
            self.latencies_cpu_ms.append((time.thread_time() - cpu_recv) * 1e3)
            self.counters["chunks_executed"] += 1
            self.last_rejection = "" if not ex.notes else self.last_rejection
        if previous is not None:
            self._finish(previous, Result.STATUS_ABORTED, f"preempted by a newer chunk (plan_id {ex.plan_id})")
        ex.path_points = self._dense_tcp_path(q, qs)  # after the send: not on the chunk → trajectory latency path
        self._send_gripper(ex, 0)
        if ex.notes:
            self.get_logger().warning(f"chunk {ex.plan_id} clipped: {ex.notes}")
        return ex

    def _dense_tcp_path(self, q_start: np.ndarray, qs: np.ndarray, substeps: int = 5) -> np.ndarray:
        """(K·substeps + 1, 3) TCP positions [m] along the joint-space-linear path q_start → qs[0] → ... → qs[-1]."""
        qq = np.vstack([q_start, qs])
        f = np.linspace(0.0, 1.0, substeps + 1)[1:, None, None]  # (substeps, 1, 1)
        dense = (qq[:-1][None] + f * (qq[1:] - qq[:-1])[None]).transpose(1, 0, 2).reshape(-1, qq.shape[1])
        return self.kin.fk_batch(np.vstack([q_start, dense]))[:, :3, 3]

    @staticmethod
    def _distance_to_path(p: np.ndarray, pts: np.ndarray) -> float:
        """Distance [m] of point ``p`` (3,) to the polyline ``pts`` (M, 3)."""
        if len(pts) == 1:
            return float(np.linalg.norm(p - pts[0]))
        a, ab = pts[:-1], np.diff(pts, axis=0)
        t = np.clip(np.einsum("ij,ij->i", p - a, ab) / np.maximum(np.einsum("ij,ij->i", ab, ab), 1e-12), 0.0, 1.0)
        return float(np.min(np.linalg.norm(a + t[:, None] * ab - p, axis=1)))

    def _send_gripper(self, ex: _Execution, i: int) -> None:
        if self.gripper is not None and i > ex.gripper_sent and i < len(ex.gripper):
            self.gripper.send(float(ex.gripper[i]))
            ex.gripper_sent = i

    def _gripper_problem(self) -> str:
        return self.gripper.problem() if self.gripper is not None else ""

    def _finish(self, ex: _Execution, status: int, reason: str, pos_err: float | None = None,
                rot_err: float | None = None) -> None:
        with self._lock:
            if ex.done.is_set():
                return
            steps = int(np.sum(ex.times <= self._now() - ex.t_start + 1e-9))
            if status == Result.STATUS_SUCCEEDED or (status == Result.STATUS_ABORTED and ex.truncated_reason
                                                     and reason == ex.truncated_reason):
                steps = len(ex.times)
            ex.result = self._make_result(status, reason, steps,
                                          ex.position_error if pos_err is None else pos_err,
                                          ex.orientation_error if rot_err is None else rot_err)
            ex.done.set()
            if self._active is ex:
                self._active = None
            self.last_result = f"{STATUS_NAMES[status]}: {reason}"
        if status == Result.STATUS_SUCCEEDED:
            self.get_logger().info(f"chunk {ex.plan_id} succeeded: {reason}")
        else:
            self.get_logger().warning(f"chunk {ex.plan_id} {STATUS_NAMES[status]}: {reason}")

    def _monitor(self) -> None:
        """Track the active execution: step index, tracking error, gripper, feedback, cancel, completion."""
        with self._lock:
            ex = self._active
        if ex is None or ex.done.is_set():
            return
        q, age = self._joint_state()
        if q is None or age > self.js_timeout:
            self._hold()
            self._finish(ex, Result.STATUS_ABORTED, f"joint states lost ({age:.2f} s old > joint_state_timeout_s="
                                                    f"{self.js_timeout}); holding")
            return
        gh = ex.goal_handle
        if gh is not None and gh.is_cancel_requested:
            self._hold()
            self._finish(ex, Result.STATUS_CANCELED, "canceled by the client; holding position")
            return
        t = self._now() - ex.t_start
        k = len(ex.times)
        ex.step_index = int(min(k - 1, np.searchsorted(ex.times, t, side="left")))
        self._send_gripper(ex, ex.step_index)
        # commanded joint state at t (linear between points, as the JTC without velocities) → tracking error
        tt = np.concatenate([[0.0], ex.times])
        qq = np.vstack([ex.q_start, ex.qs])
        q_cmd = np.array([np.interp(t, tt, qq[:, j]) for j in range(7)])
        T_meas = self.kin.fk(q)
        ex.position_error, ex.orientation_error = self._pose_errors(self.kin.fk(q_cmd), T_meas)
        if gh is not None and time.monotonic() - ex.last_feedback >= 0.05:
            fb = ExecuteChunk.Feedback()
            fb.step_index, fb.position_error, fb.orientation_error = (ex.step_index, ex.position_error,
                                                                      ex.orientation_error)
            gh.publish_feedback(fb)
            ex.last_feedback = time.monotonic()
        if self.path_tol > 0 and ex.position_error > self.path_tol and ex.path_points is not None:
            deviation = self._distance_to_path(T_meas[:3, 3], ex.path_points)
            if deviation > self.path_tol:
                self._hold()
                self._finish(ex, Result.STATUS_ABORTED, f"EE {deviation:.3f} m off the commanded path (more than "
                                                        f"path_position_tolerance={self.path_tol} m); holding")
                return
        if t < ex.times[-1]:
            return
        pe, re_ = self._pose_errors(ex.targets[-1], T_meas)
        settled = pe <= self.goal_pos_tol and re_ <= self.goal_rot_tol
        if ex.wait_for_settle and not settled and t < ex.times[-1] + self.settle_timeout:
            return
        if ex.truncated_reason:
            self._finish(ex, Result.STATUS_ABORTED, ex.truncated_reason, pe, re_)
        elif ex.wait_for_settle and not settled:
            self._finish(ex, Result.STATUS_ABORTED, f"did not settle within {self.settle_timeout} s (error {pe:.4f} m,"
                                                    f" {re_:.4f} rad)", pe, re_)
        else:
            self._finish(ex, Result.STATUS_SUCCEEDED, "executed" + (f" (clipped: {ex.notes})" if ex.notes else ""),
                         pe, re_)

    def _execute_goal(self, goal_handle) -> Result:
        # Runs on the action helper node's executor thread and blocks until the monitor (main thread) finishes the
        # execution; feedback, cancel and completion are handled by _monitor, so only one thread is ever parked here
        # for long (a newer goal preempts the older one at once).
        self._chunk_arrived()
        try:
            return self._run_goal(goal_handle)
        except Exception as exc:
            # Like _on_plan: an exception escaping here would end the goal with an empty result (status 0 reads as
            # "succeeded", reason "") while this node lives on. Hold if this goal's chunk was already started.
            what = f"{type(exc).__name__}: {exc}"
            self.get_logger().error(f"ExecuteChunk goal failed: {what}", throttle_duration_sec=2.0)
            with self._lock:
                active = self._active
            if active is not None and active.goal_handle is goal_handle:
                self._hold()
                self._finish(active, Result.STATUS_ABORTED, f"internal error: {what}; holding position")
                result = active.result
            else:
                with self._lock:
                    self.counters["malformed_chunks"] += 1
                result = self._reject(Result.STATUS_REJECTED, f"goal could not be handled: {what}")
            try:
                goal_handle.abort()
            except Exception as exc2:  # already terminal (the error came after succeed/abort): the result stands
                self.get_logger().warning(f"could not abort the failed goal: {exc2}")
            self.last_result = f"{STATUS_NAMES[result.status]}: {result.reason}"
            return result

    def _run_goal(self, goal_handle) -> Result:
        g = goal_handle.request
        if g.out_of_limits_policy not in (ExecuteChunk.Goal.OUT_OF_LIMITS_REJECT, ExecuteChunk.Goal.OUT_OF_LIMITS_CLIP):
            result = self._reject(Result.STATUS_REJECTED, f"unknown out_of_limits_policy {g.out_of_limits_policy} "
                                                          "(0 = reject, 1 = clip)")
            goal_handle.abort()
            return result
        if not (np.isfinite(g.time_scale) and g.time_scale >= 0):
            result = self._reject(Result.STATUS_REJECTED, f"time_scale must be >= 0 (0 = default), got {g.time_scale}")
            goal_handle.abort()
            return result
        policy = "clip" if g.out_of_limits_policy == ExecuteChunk.Goal.OUT_OF_LIMITS_CLIP else "reject"
        out = self._start(g.chunk, policy, int(g.max_steps), float(g.time_scale), bool(g.wait_for_settle),
                          goal_handle)
        if isinstance(out, Result):
            goal_handle.abort()
            return out
        while not out.done.wait(0.05):
            if not rclpy.ok(context=self.context):
                self._finish(out, Result.STATUS_ABORTED, "executor shutting down")
        result = out.result
        if result.status == Result.STATUS_SUCCEEDED:
            goal_handle.succeed()
        elif result.status == Result.STATUS_CANCELED and goal_handle.is_cancel_requested:
            goal_handle.canceled()
        else:
            goal_handle.abort()
        return result

    # ------------------------------------------------------------------ diagnostics
    def _publish_diagnostics(self) -> None:
        q, age = self._joint_state()
        # Two sources of joint states (a second sim, a bag replay, another robot on the same ROS domain) interleave
        # two arms' positions: holds and tracking errors become meaningless, so chunks are refused (_start).
        js_fault = self._js_publisher_fault()
        faults = self._safety_faults()
        gripper = self._gripper_problem()
        with self._lock:
            estop, active = self._estop, self._active
            js_publishers = len(self._js_publishers)
            chunk_age = float("inf") if self._last_chunk_mono is None else time.monotonic() - self._last_chunk_mono
            st = DiagnosticStatus()
            st.name = "vidplan executor"
            st.hardware_id = self.get_fully_qualified_name()
            errors = (["estop latched: holding"] if estop else []) + faults
            if js_fault:
                errors.append(f"{js_fault}: refusing chunks")
            if gripper:
                errors.append(f"{gripper}: refusing chunks")
            if q is None or age > self.js_timeout:
                errors.append("no fresh joint states: refusing chunks")
            if errors:
                st.level, st.message = DiagnosticStatus.ERROR, "; ".join(errors)
            elif not self.is_active:
                st.level, st.message = DiagnosticStatus.WARN, f"{self.lifecycle_state}: refusing chunks until activated"
            elif self._last_chunk_mono is not None and active is None and chunk_age > self.plan_timeout:
                # (before the first chunk the executor is idle, not missing plans)
                st.level, st.message = DiagnosticStatus.WARN, (
                    f"no plan for {chunk_age:.1f} s (plan_timeout_s={self.plan_timeout}): planner stopped or dead? "
                    "holding")
            elif self.last_rejection:
                st.level, st.message = DiagnosticStatus.WARN, f"last chunk rejected: {self.last_rejection}"
            else:
                st.level = DiagnosticStatus.OK
                st.message = "executing" if active is not None else "idle"
            values = {"backend": self.backend_name, "policy": self.policy, "estop": str(estop),
                      "estop_latched_at": f"{self.estop_latched_at:.3f}",
                      "state": "estop" if estop else ("executing" if active is not None else
                                                      "idle" if self.is_active else "inactive"),
                      "lifecycle_state": self.lifecycle_state,
                      "last_rejection_reason": self.last_rejection, "last_result": self.last_result,
                      "joint_state_age_s": f"{age:.3f}", "joint_state_publishers": str(js_publishers),
                      "last_chunk_age_s": f"{chunk_age:.3f}",
                      "gripper_width_m": f"{self._gripper_width:.4f}",
                      "last_chunk_to_trajectory_ms": f"{self.last_latency_ms:.3f}",
                      "chunk_to_trajectory_ms_p50": f"{np.percentile(self.latencies_ms, 50):.3f}"
                      if self.latencies_ms else "nan",
                      "chunk_to_trajectory_ms_p95": f"{np.percentile(self.latencies_ms, 95):.3f}"
                      if self.latencies_ms else "nan",
                      "chunk_to_trajectory_cpu_ms_p50": f"{np.percentile(self.latencies_cpu_ms, 50):.3f}"
                      if self.latencies_cpu_ms else "nan",
                      "chunk_to_trajectory_cpu_ms_p95": f"{np.percentile(self.latencies_cpu_ms, 95):.3f}"
                      if self.latencies_cpu_ms else "nan",
                      "latency_samples": str(len(self.latencies_ms)),
                      "safety_topic_faults": "; ".join(faults),
                      **(self.gripper.status() if self.gripper is not None else {}),
                      **{k: str(v) for k, v in self.counters.items()}}
            if active is not None:
                values.update(step_index=str(active.step_index), position_error_m=f"{active.position_error:.4f}",
                              plan_id=str(active.plan_id))
        st.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        arr = DiagnosticArray()
        arr.header.stamp = self.get_clock().now().to_msg()
        arr.status = [st]
        self.diag_pub.publish(arr)

    def _publish_unconfigured(self) -> None:
        """/diagnostics before configure: OK while waiting, ERROR with the reason after a failed configure."""
        reason = self.lifecycle_error or "waiting for configure"
        st = DiagnosticStatus(level=DiagnosticStatus.ERROR if self.lifecycle_error else DiagnosticStatus.OK,
                              name="vidplan executor", hardware_id=self.get_fully_qualified_name(),
                              message=f"unconfigured: {reason}; refusing chunks",
                              values=[KeyValue(key="state", value="unconfigured"),
                                      KeyValue(key="lifecycle_state", value=self.lifecycle_state),
                                      KeyValue(key="last_rejection_reason", value=reason)])
        arr = DiagnosticArray(status=[st])
        arr.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(arr)

    def close(self) -> None:
        """Called by run_node on exit: hold if executing, release the backend and the action server."""
        if self.is_configured:
            self.is_configured = False
            self.release()


def main(args: list[str] | None = None) -> None:
    run_node(ExecutorNode, args)
