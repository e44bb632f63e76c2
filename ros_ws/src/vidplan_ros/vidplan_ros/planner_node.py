"""planner_node: VidPlan inference-time planning on live (or replayed) camera streams.

A thin adapter around :class:`vidplan_core.planning.session.PlanningSession`: it synchronises the three cameras,
keeps the observation history at the world model's rate, runs plan cycles on its own thread (callbacks never
wait for a plan), and publishes the chunk, its diagnostics and debug pictures.

Subscribes: /cameras/{left,right,wrist}/image_raw (via :class:`vidplan_ros.camera_sync.CameraSync`; or
their ``/compressed`` streams), /ee_pose (or, with ``ee_pose_topic: ""``, the EE pose from forward kinematics of
/joint_states, as on a franka_ros2 robot, which publishes no EE pose topic), /joint_states, /vidplan/instruction
(std_msgs/String: the instruction), /vidplan/estop (std_msgs/Bool, latched; on a node ``<name>_estop`` with a DDS
participant of its own, :class:`vidplan_ros.estop_listener.EstopListener`).
Serves: /vidplan/set_instruction (vidplan_interfaces/SetInstruction).
Publishes: /vidplan/plan (PlanChunk), /vidplan/plan_diagnostics (PlanDiagnostics), /vidplan/debug/prediction and
/vidplan/debug/uncertainty (sensor_msgs/Image rgb8), /vidplan/debug/plan_markers (MarkerArray), /diagnostics.
Optionally sends each chunk to the executor as an ExecuteChunk goal (``executor_interface: action``).
Deprecated (removed in the next release): the instruction's old names, topic /vidplan/task and service
/vidplan/set_task (vidplan_interfaces/SetTask, the same fields), still work exactly like the new ones; the first use
of each logs a warning naming its new name. The /diagnostics key ``instruction`` is also published as ``task``, its
old name, until then.

Behaviour: idle without an instruction; no plan and a diagnostic ERROR while a camera or the robot state is stale or
missing, or — under ``use_sim_time`` — while /clock has stopped (a dead sim freezes the node clock, so every sim-time
age would stay fresh for ever: that is judged on the steady clock, and the ERROR names /clock and how long each input
has been silent in wall time); a plan whose inputs went stale while it was computed is dropped (ERROR diagnostic
with its plan_id and why), never published; diagnostics run on the steady clock; nothing while the e-stop is
latched; a HOLD chunk (current pose repeated) when a cycle fails or any model
output is NaN/Inf. Every message is validated (:mod:`vidplan_ros.conversions`: images, JointState, poses); an invalid
one is dropped and its reason logged (throttled), and while an input has no valid message the ERROR diagnostic gives
that reason ("invalid image size 0x0 ...", "non-finite position ...") rather than "stale". No callback lets a
message end the node. On SIGINT/SIGTERM the node stops without a traceback, also when the plan thread was publishing.

Parameters: :mod:`vidplan_ros.planner_params` documents each one (name, type, default, units; ``ros2 param
describe`` shows the same text). All are read and validated at start-up (a bad value exits with code 2 and names
the parameter); kappa, lambda_centering, uncertainty_weighting, time_budget_s and basis_speed_mps can be changed
live (``ros2 param set``, applied from the next cycle), every other one is read-only.

Lifecycle (a managed node, :mod:`vidplan_ros.lifecycle`): configure loads the models and subscribes; activate starts
planning; deactivate stops sending chunks (a cycle in progress is dropped); cleanup frees the models. /diagnostics
reports the state in every state, and why the last configure failed.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped
from rcl_interfaces.msg import SetParametersResult
from rclpy.clock import Clock, ClockType
from rclpy.qos import qos_profile_sensor_data
from safetensors import SafetensorError
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, JointState
from std_msgs.msg import Bool, String
from visualization_msgs.msg import MarkerArray

from vidplan_core.calibration import load_calibration
from vidplan_core.camera_info import CameraInfoCheck, camera_info_key, check_camera_info
from vidplan_core.eval.visualize import prediction_strip, uncertainty_overlay
from vidplan_core.kinematics import PandaKinematics, transform_to_action
from vidplan_core.observation import ObservationHistory
from vidplan_core.planning.nominal import BCNominalPolicy
from vidplan_core.runtime import loader
from vidplan_core.runtime.base import BackendError
from vidplan_core.spaces import MODEL_RATE_HZ, VIEW_ORDER, EEChunk, quat_to_euler, stack_views
from vidplan_core.topics import (
    DEPRECATED_INSTRUCTION_TOPIC,
    DEPRECATED_SET_INSTRUCTION_SERVICE,
    INSTRUCTION_TOPIC,
    SET_INSTRUCTION_SERVICE,
)
from vidplan_interfaces.action import ExecuteChunk
from vidplan_interfaces.msg import PlanChunk, PlanDiagnostics
from vidplan_interfaces.srv import SetInstruction, SetTask
from vidplan_ros.camera_sync import CameraSync, Triplet
from vidplan_ros.compat import ActionClient
from vidplan_ros.conversions import (
    chunk_markers,
    chunk_to_msg,
    image_to_array,
    pose_to_vec,
    rgb8_image_msg,
    sec_to_stamp,
    stamp_to_sec,
    validate_joint_state,
    validate_pose,
)
from vidplan_ros.estop_listener import EstopListener
from vidplan_ros.lifecycle import ManagedNode
from vidplan_ros.node_runner import run_node
from vidplan_ros.planner_params import LIVE_PARAMETERS, check_live_parameter, declare_planner_parameters
from vidplan_ros.qos import LATCHED

# the EE-pose input's name when it is computed from /joint_states (ee_pose_topic: ""), in diagnostics and logs
FK_SOURCE = "/joint_states (forward kinematics)"
_STATUS = {"ok": PlanDiagnostics.STATUS_OK, "budget": PlanDiagnostics.STATUS_BUDGET,
           "hold": PlanDiagnostics.STATUS_HOLD}


def load_backend(model_dir: str, kind: str, device: str = "cpu", flow_steps: int | None = None,
                 threads: int | None = None):
    """Create the runtime backend for ``model_dir`` with the one model-directory loader
    (:func:`vidplan_core.runtime.loader.load_planner_backend`; heavy imports happen there, not at module import).

    ``model_dir``'s index (``bundle.json``, or the layout when it has none) names the parts: torch loads autoencoder/,
    flow_map/, uq_head/, reward_head/, semantic/; onnxruntime / tensorrt the export (onnx/, or ``model_dir`` itself
    when it is an export directory). Errors (BackendError) name the directory, the index key and what is missing.

    Returns:
        :class:`~vidplan_core.runtime.loader.LoadedBackend` (backend, view_size (h, w), num_history, horizon, index,
        warnings).
    """
    return loader.load_planner_backend(model_dir, kind, device=device, flow_steps=flow_steps, threads=threads)


def load_session(model_dir: str, backend: str, device: str, flow_steps: int, session_cfg, threads: int | None = None,
                 nominal: str = "hold"):
    """Backend + kinematics + :class:`PlanningSession` (nominal chunk: ``hold``, or ``bc`` = the directory's
    behaviour-cloned policy); returns (session, the model's :class:`~vidplan_core.spaces.ViewPreparation`, loader
    warnings)."""
    from vidplan_core.planning.session import PlanningSession

    loaded = load_backend(model_dir, backend, device, flow_steps or None, threads)
    policy = None
    if nominal == "bc":
        policy = BCNominalPolicy.from_bundle(model_dir, loaded.models)
    return (PlanningSession(loaded.backend, PandaKinematics(), session_cfg, nominal=policy), loaded.views,
            loaded.warnings)


def check_cameras(backend, calibration_file: str, model_dir: str) -> str | None:
    """Start-up check that the model was trained on these cameras (and this workspace crop): raises ValueError
    naming the model directory, the calibration file and the views that differ (the geometry the model projects
    its action maps and the planner its TCP with; a model without action maps records the calibration it was
    exported with). Returns a note when a backend records no geometry."""
    from vidplan_core.models.action_maps import check_view_geometry

    geometry = getattr(backend, "view_geometry", None)
    if not geometry or not geometry.get("views"):
        return f"{model_dir} records no camera geometry: not checked against the camera calibration"
    name = calibration_file or "the shipped calibration/droid_cameras.yaml"
    check_view_geometry(geometry, load_calibration(calibration_file or None), f"model_dir '{model_dir}'",
                        f"camera_calibration '{name}'")
    return None


class PlannerNode(ManagedNode):
    """See the module docstring (a managed node: :mod:`vidplan_ros.lifecycle`)."""

    def __init__(self) -> None:
        super().__init__("planner_node")
        P = self.params = declare_planner_parameters(self)  # ValueError → run_node exits 2 naming it
        self.model_dir, self.backend_kind = P.model_dir, P.backend_kind
        self.device, self.threads = P.device, P.threads
        self.open_loop_steps, self.latency_compensation = P.open_loop_steps, P.latency_compensation
        self.expected_latency, self.instruction = P.expected_latency, P.instruction
        self.check_info, self.strict_calibration = P.check_info, P.strict_calibration
        self.camera_timeout, self.state_timeout = P.camera_timeout, P.state_timeout
        self.clock_timeout, self.joint_prefix = P.clock_timeout, P.joint_prefix
        self.ee_source, self.gripper_max_width = P.ee_source, P.gripper_max_width
        self.base_frame, self.send_to_executor = P.base_frame, P.send_to_executor
        self.executor_interface, self.publish_debug = P.executor_interface, P.publish_debug
        self.seed = P.seed
        self._decode_warned = False
        self._deprecation_warned: set[str] = set()  # deprecated names already warned about (once per process)

        # Process-long state and interfaces: the lifecycle state and why a transition failed are on /diagnostics
        # in every state, unconfigured included.
        self._lock = threading.Lock()
        self._plan_id = 0
        self._last_status = "unconfigured"
        self._last_reason = "waiting for configure"
        self._latencies: deque[float] = deque(maxlen=200)  # wall seconds per cycle (diagnostics)
        self._rejected: dict[str, str] = {}
        self._rx_wall: dict[str, float] = {}
        # Steady-clock watch of the node clock (use_sim_time): (last node-clock value [ns], time.monotonic() when it
        # last changed), and the monotonic receipt time of the state topics, to say how long they have been silent.
        self._clock_seen = (self.get_clock().now().nanoseconds, time.monotonic())
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()  # the plan thread's stop (a new one per configure)
        self.session = None
        self.estop_listener: EstopListener | None = None
        self.ros_diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        # Steady-clock timers: under use_sim_time a ROS-clock timer stops with /clock — exactly when the diagnostics
        # matter (a dead sim). The 10 Hz one samples the node clock to notice /clock stopping while a cycle runs.
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        self.create_timer(1.0, self._publish_ros_diagnostics, clock=steady)
        self.create_timer(0.1, self._clock_stall, clock=steady)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.start(P.autostart)

    # ------------------------------------------------------------------ lifecycle
    def configure(self) -> None:
        """Load the models and the planning configuration, then subscribe, advertise and start the plan thread
        (ValueError: a bad configuration or models that cannot load; the node stays unconfigured)."""
        st = self.params
        cfg_path, flow_steps, calibration_file = st.cfg_path, st.flow_steps, st.calibration_file
        topics, info_topics, transport = st.topics, st.info_topics, st.transport
        live = {n: self.get_parameter(n).value for n in LIVE_PARAMETERS}
        weighting, kappa, lam = live["uncertainty_weighting"], live["kappa"], live["lambda_centering"]
        speed, budget = live["basis_speed_mps"], live["time_budget_s"]
        planner, refine_iters, refine_tol, lr = st.planner, st.refine_iters, st.refine_tol, st.lr
        trust, trust_m, trust_rad, num_nominal = st.trust, st.trust_m, st.trust_rad, st.num_nominal
        noise_samples, ws_min, ws_max, jv_scale = st.noise_samples, st.ws_min, st.ws_max, st.jv_scale
        nominal_margin = st.nominal_margin
        history_length, skew = st.history_length, st.skew
        from vidplan_core.planning.config import PlanningConfigError, load_planning_config

        # "none" (w(h) = 1) is exp with κ = 0 for scoring; the refinement objective keeps the backend's own κ (the
        # torch default, or the one fixed inside an ONNX export)
        none = weighting == "none"
        score = {"weighting": "exp" if none else weighting, "kappa": 0.0 if none else kappa, "lam": lam}
        ov = {"session.planner": planner, "flow_steps": flow_steps, "open_loop_steps": self.open_loop_steps,
              "session.proposals.basis_speed_mps": speed, "session.proposals.num_nominal": num_nominal,
              "limits.workspace_min": list(ws_min), "limits.workspace_max": list(ws_max),
              "limits.joint_velocity_scale": jv_scale}
        for sec in ("gradopt", "cem"):  # both planners share the refinement and scoring settings
            ov.update({f"session.{sec}.refine_iters": refine_iters, f"session.{sec}.refine_tol": refine_tol,
                       f"session.{sec}.lr": lr,
                       f"session.{sec}.trust_region": trust, f"session.{sec}.trust_region_m": trust_m or None,
                       f"session.{sec}.trust_region_rad": trust_rad or None,
                       f"session.{sec}.time_budget_s": budget or None,
                       f"session.{sec}.noise_samples": noise_samples,
                       f"session.{sec}.nominal_margin": nominal_margin,
                       **{f"session.{sec}.score.{k}": v for k, v in score.items()}})
        try:
            self.planning = load_planning_config(cfg_path, ov)
        except PlanningConfigError as exc:
            raise ValueError(f"planner parameters: {exc}") from exc
        cfg = self.planning.session
        t0 = time.perf_counter()
        try:
            self.session, self.views, load_warnings = load_session(self.model_dir, self.backend_kind,
                                                                   self.device, flow_steps, cfg, self.threads,
                                                                   nominal=st.nominal_policy)
            note = check_cameras(self.session.backend, calibration_file, self.model_dir)
            self.calibration = load_calibration(calibration_file or None)
            load_warnings = [*load_warnings, *([note] if note else [])]
        except (FileNotFoundError, ImportError, RuntimeError, KeyError, OSError, SafetensorError) as exc:
            # Model problems are start-up errors, never mid-control surprises (a corrupt safetensors file included).
            raise ValueError(f"cannot load models from model_dir '{self.model_dir}' with backend "
                             f"'{self.backend_kind}': {exc}") from exc
        self.get_logger().info(f"loaded {self.backend_kind} backend from {self.model_dir} in "
                               f"{time.perf_counter() - t0:.1f} s (H={self.session.horizon}, "
                               f"{self.threads} intra-op threads)")
        for note in [*load_warnings, *self.session.batching_notes()]:
            self.get_logger().warn(note)
        self.dt = 1.0 / MODEL_RATE_HZ
        t_hist = history_length or int(self.session.backend.num_history)
        if t_hist != int(self.session.backend.num_history):
            raise ValueError(f"parameter 'history_length' is {t_hist} but the model conditions on "
                             f"{self.session.backend.num_history} history frames")
        self.history = ObservationHistory(t_hist, model_rate_hz=1.0 / self.dt)

        # State shared between callbacks and the plan thread (self._lock guards it).
        self._ee: tuple[float, np.ndarray] | None = None        # (stamp, (6,) xyz + euler)
        self._joints: tuple[float, np.ndarray, float] | None = None  # (receipt time, q (7,), gripper 0..1)
        self._closure: float | None = None  # measured finger closure 0..1, None without a finger joint
        self._estop = False
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._last_status, self._last_reason = "inactive", "configured, not active"
        self._cycle_clock: deque[float] = deque(maxlen=10)  # node-clock seconds per cycle (sim time under a sim)
        # (chunk, start time [s, node clock], the EE pose (7,) when it started): for seam blending and latency
        self._executing: tuple[EEChunk, float, np.ndarray] | None = None
        self._last_plan_time = -math.inf
        self._last_error_log = 0.0
        # input → why its newest message was dropped ("/ee_pose", "/joint_states", "camera triplet"); an entry goes
        # when a valid message arrives. Read when the input is stale, so the diagnostics name the true cause.
        self._rejected.clear()
        self._reject_log: dict[str, float] = {}

        # Callbacks only store inputs (one single-threaded executor: rclpy's multithreaded one costs ~2.4x the CPU per
        # callback); plan cycles run on their own thread (self._thread), so subscriptions never wait for a cycle.
        # view → the newest CameraInfo's check against the calibration (problems, undistorter); views without one
        # are used as they come
        self._info: dict[str, CameraInfoCheck] = {}
        if self.check_info:
            for view, topic in info_topics.items():
                self.create_subscription(CameraInfo, topic, self._guarded(topic, lambda m, v=view: self._on_info(v, m)),
                                         qos_profile_sensor_data)
        self.sync = CameraSync(self, topics, max_skew_s=skew, stale_after_s=self.camera_timeout,
                               callback=self._guarded("camera triplet", self._on_triplet),
                               msg_type=CompressedImage if transport == "compressed" else Image)
        # State with sensor-data QoS (best effort): compatible with reliable publishers (robot, sim) and with
        # best-effort ones (bag replay publishes sensor_msgs that way); a reliable subscription would silently
        # never match the latter.
        if self.ee_source:
            self.create_subscription(PoseStamped, self.ee_source, self._guarded(self.ee_source, self._on_ee),
                                     qos_profile_sensor_data)
        else:  # the session's kinematics: the same TCP frame the basis proposals move
            self.ee_source = FK_SOURCE
        self.create_subscription(JointState, "/joint_states", self._guarded("/joint_states", self._on_joints),
                                 qos_profile_sensor_data)
        # Two subscriptions per topic: volatile (any publisher, e.g. a user's one-off message) and transient-local
        # (the sim's latched instruction, also for a planner that starts later). Duplicates are ignored in
        # set_instruction. The deprecated topic keeps old publishers (launch lines, replayed bags) working.
        def on_deprecated_topic(msg: String) -> None:
            self._warn_deprecated(DEPRECATED_INSTRUCTION_TOPIC, f"publish the instruction on {INSTRUCTION_TOPIC}")
            self.set_instruction(msg.data)

        for qos in (10, LATCHED):
            self.create_subscription(String, INSTRUCTION_TOPIC, self._guarded(
                INSTRUCTION_TOPIC, lambda m: self.set_instruction(m.data)), qos)
            self.create_subscription(String, DEPRECATED_INSTRUCTION_TOPIC, self._guarded(
                DEPRECATED_INSTRUCTION_TOPIC, on_deprecated_topic), qos)
        # E-stop from any publisher QoS, latched before start-up included, on a DDS participant of its own so the
        # camera streams cannot queue it (EstopListener, as the executor's); true stops planning, false resumes it.
        self.estop_listener = EstopListener(self, "/vidplan/estop", self._on_estop, lambda topic, info: (
            self.get_logger().error(f"incompatible QoS on {topic}: its e-stops are not received")))

        def on_deprecated_service(req, resp):
            self._warn_deprecated(DEPRECATED_SET_INSTRUCTION_SERVICE, f"call {SET_INSTRUCTION_SERVICE} "
                                  "(vidplan_interfaces/srv/SetInstruction, the same fields)")
            return self._on_set_instruction(req, resp)

        self.create_service(SetInstruction, SET_INSTRUCTION_SERVICE, self._on_set_instruction)
        self.create_service(SetTask, DEPRECATED_SET_INSTRUCTION_SERVICE, on_deprecated_service)
        self.plan_pub = self.create_publisher(PlanChunk, "/vidplan/plan", 10)
        self.diag_pub = self.create_publisher(PlanDiagnostics, "/vidplan/plan_diagnostics", 10)
        self.pred_pub = self.create_publisher(Image, "/vidplan/debug/prediction", 2)
        self.uq_pub = self.create_publisher(Image, "/vidplan/debug/uncertainty", 2)
        self.marker_pub = self.create_publisher(MarkerArray, "/vidplan/debug/plan_markers", 2)
        self.exec_client = (ActionClient(self, ExecuteChunk, "/vidplan/execute_chunk")
                            if self.executor_interface == "action" else None)
        self._thread = threading.Thread(target=self._plan_loop, name="vidplan-plan", daemon=True)
        self._thread.start()
        self.get_logger().info("planner configured")

    def activate(self) -> None:
        self.get_logger().info(f"planner ready; instruction: {self.instruction or '(none: idle)'}")
        self._wake.set()

    def deactivate(self) -> None:
        """Stop sending chunks (a cycle running now is dropped when it ends); the executor holds the arm once its
        chunk ends."""
        with self._lock:
            self._executing = None
        self._set_status("inactive", "deactivated")
        self._wake.set()

    def release(self) -> None:
        """Stop the plan thread and free the models (cleanup / a failed configure / exit)."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            self._wake.set()
            thread.join(timeout=5.0)
        self.session = None
        listener, self.estop_listener = self.estop_listener, None
        if listener is not None:
            listener.close()
        self._set_status("unconfigured", "cleaned up")

    # ------------------------------------------------------------------ parameters
    def _on_set_parameters(self, params) -> SetParametersResult:
        """Live tuning (LIVE_PARAMETERS; rclpy has already refused read-only names): the
        session's scoring/proposal settings change for the next cycle, or the whole change is refused with why."""
        try:  # the start-up checks (type, choices, bound): an int for a double is fine, "abc" or -1 is refused
            new = {p.name: check_live_parameter(p.name, p.value) for p in params if p.name in LIVE_PARAMETERS}
        except ValueError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        if not new:
            return SetParametersResult(successful=True)
        cur = {n: self.get_parameter(n).value for n in LIVE_PARAMETERS}
        cur.update(new)
        none = cur["uncertainty_weighting"] == "none"
        if self.session is None:  # unconfigured: configure() reads the new values
            return SetParametersResult(successful=True)
        try:
            self.session.tune(kappa=0.0 if none else float(cur["kappa"]), lam=float(cur["lambda_centering"]),
                              weighting="exp" if none else cur["uncertainty_weighting"],
                              time_budget_s=float(cur["time_budget_s"]) or None,
                              basis_speed_mps=float(cur["basis_speed_mps"]))
        except ValueError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        self.get_logger().info("live parameters: " + ", ".join(f"{k}={v}" for k, v in new.items()))
        return SetParametersResult(successful=True)

    # ------------------------------------------------------------------ inputs
    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def set_instruction(self, text: str) -> None:
        with self._lock:
            if text.strip() == self.instruction:
                return
            self.instruction = text.strip()
            self._executing = None
            if self.session is not None:  # a new task, even one worded as before: where its target was is unknown
                self.session.reset_episode()
        self.get_logger().info(f"instruction: {self.instruction or '(cleared: idle)'}")
        self._wake.set()

    def _on_set_instruction(self, req, resp):
        """SetInstruction (and the deprecated SetTask, the same fields): plan for ``req.instruction``."""
        self.set_instruction(req.instruction)
        resp.success, resp.message = True, f"planning for: {req.instruction!r}" if req.instruction else "idle"
        return resp

    def _warn_deprecated(self, old: str, instead: str) -> None:
        """Log, the first time in this process only, that the ROS name ``old`` is deprecated (``instead``: what to
        use, naming the new name)."""
        if old not in self._deprecation_warned:
            self._deprecation_warned.add(old)
            self.get_logger().warning(f"{old} is deprecated and will be removed in the next release; {instead}")

    def _on_estop(self, msg: Bool) -> None:
        with self._lock:
            self._estop = bool(msg.data)
            if self._estop:
                self._executing = None
        if msg.data:
            self.get_logger().warn("e-stop latched: planning stopped")
        self._wake.set()

    def _guarded(self, source: str, callback):
        """``callback`` for a subscription whose unexpected exceptions drop the message (logged, kept as the reason
        of ``source``) instead of ending the node; quiet while shutting down."""
        def guarded(msg) -> None:
            try:
                callback(msg)
            except Exception as exc:
                if not self._shutting_down():
                    self._reject(source, f"unexpected {type(exc).__name__} handling the message: {exc}")
        return guarded

    def _reject(self, source: str, reason: str, log: bool = True) -> None:
        """Drop a message of ``source``: keep ``reason`` for the diagnostics; log it at most every 5 s per source."""
        with self._lock:
            self._rejected[source] = reason
        now = time.monotonic()
        if log and now - self._reject_log.get(source, -math.inf) > 5.0:
            self._reject_log[source] = now
            self.get_logger().error(f"dropping {source} message: {reason}")

    def _accept(self, source: str) -> None:
        if source in self._rejected:
            with self._lock:
                self._rejected.pop(source, None)

    def _on_ee(self, msg: PoseStamped) -> None:
        reason = validate_pose(msg.pose)
        if reason is not None:
            self._reject(self.ee_source, reason)
            return
        v = pose_to_vec(msg.pose)
        euler = quat_to_euler(v[3:])
        with self._lock:
            self._ee = (self._now(), np.concatenate([v[:3], euler]))
            self._rx_wall[self.ee_source] = time.monotonic()
            self._rejected.pop(self.ee_source, None)

    def _on_joints(self, msg: JointState) -> None:
        reason = validate_joint_state(msg)
        if reason is not None:
            self._reject("/joint_states", reason)
            return
        idx = {n: i for i, n in enumerate(msg.name)}
        names = [f"{self.joint_prefix}_joint{i}" for i in range(1, 8)]
        missing = [n for n in names if n not in idx]
        if missing:
            # Not malformed (a gripper may publish its own JointState on the topic): ignored without a log line,
            # named in the diagnostics only if no message with the arm's joints comes.
            self._reject("/joint_states", f"messages lack joint(s) {missing} (joint_prefix "
                                          f"'{self.joint_prefix}')", log=False)
            return
        q = np.array([msg.position[idx[n]] for n in names], dtype=np.float64)
        finger = f"{self.joint_prefix}_finger_joint1"
        grip = (1.0 - min(max(msg.position[idx[finger]] / self.gripper_max_width, 0.0), 1.0)
                if finger in idx else 0.0)
        now = self._now()
        ee = (now, transform_to_action(self.session.kin.fk(q))) if self.ee_source == FK_SOURCE else None
        with self._lock:
            self._joints = (now, q, grip)
            self._closure = grip if finger in idx else None
            if ee is not None:
                self._ee = ee
            self._rx_wall["/joint_states"] = time.monotonic()
            self._rejected.pop("/joint_states", None)

    def _on_info(self, view: str, msg: CameraInfo) -> None:
        key = camera_info_key(msg.width, msg.height, msg.k, msg.d, msg.distortion_model)
        with self._lock:
            old = self._info.get(view)
        if old is not None and old.key == key:
            return  # drivers repeat the same CameraInfo with every image
        check = check_camera_info(view, msg.width, msg.height, msg.k, msg.d, msg.distortion_model,
                                  self.calibration.cameras[view])
        with self._lock:
            self._info[view] = check
        for problem in check.problems:
            (self.get_logger().error if self.strict_calibration else self.get_logger().warn)(
                problem + (" (strict_calibration: not planning)" if self.strict_calibration else ""))
        if check.undistorter is not None:
            self.get_logger().info(f"camera '{view}': camera_info reports {msg.distortion_model} distortion; "
                                   "images are undistorted before planning")

    def _frame(self, view: str, msg) -> np.ndarray:
        """One camera message → (H, W, 3) RGB, undistorted when its camera_info reports distortion."""
        img = image_to_array(msg)
        check = self._info.get(view)
        return img if check is None or check.undistorter is None else check.undistorter(img)

    def _on_triplet(self, trip: Triplet) -> None:
        with self._lock:
            ee, joints = self._ee, self._joints
        if ee is None or joints is None:
            return
        try:
            frames = self.views.prepare([self._frame(v, trip.images[v]) for v in VIEW_ORDER])
            pose = np.concatenate([ee[1], [self._gripper_command(joints[2])]])
            with self._lock:
                if self.history.latest is not None and trip.stamp < self.history.latest.stamp - 1.0:
                    self.history.clear()  # clock jumped back (bag loop, sim reset)
                self.history.push(trip.stamp, frames, pose)
        except ValueError as exc:  # ImageDecodeError (the sync validates first, so rarely), pose, image size
            self._reject("camera triplet", str(exc))
            return
        self._accept("camera triplet")
        self._wake.set()

    def _gripper_command(self, measured: float) -> float:
        """Gripper value for the history: the command being executed (what the model was trained on: DROID
        records the commanded gripper), or the measured closure before the first command."""
        with self._lock:
            executing = self._executing
        if executing is None:
            return measured
        chunk, start, _ = executing
        k = int(np.clip((self._now() - start) / chunk.dt, 0, len(chunk) - 1))
        return float(chunk.gripper[k])

    def _throttled_error(self, text: str) -> None:
        if self._shutting_down():
            return  # the ROS logger cannot publish to /rosout any more
        if time.monotonic() - self._last_error_log > 2.0:
            self._last_error_log = time.monotonic()
            self.get_logger().error(text)

    # ------------------------------------------------------------------ plan thread
    def _clock_stall(self) -> float | None:
        """Steady (wall) seconds since the node clock last advanced under use_sim_time; None on the system clock
        (which always advances). Called at 10 Hz by a steady timer and before each input check."""
        clock = self.get_clock()
        if not clock.ros_time_is_active:
            return None
        ns, mono = clock.now().nanoseconds, time.monotonic()
        with self._lock:
            if ns != self._clock_seen[0]:  # also when it jumped back (sim reset, bag loop): it is running
                self._clock_seen = (ns, mono)
            return mono - self._clock_seen[1]

    def _clock_problem(self) -> str:
        """Non-empty when /clock stopped for longer than clock_timeout_s (steady clock): the sim is dead or
        frozen, every input is stale whatever its sim-time age says; names how long each has been silent."""
        stall = self._clock_stall()
        if stall is None or stall <= self.clock_timeout:
            return ""
        with self._lock:
            never = self._clock_seen[0] == 0
            rx = dict(self._rx_wall)
        mono = time.monotonic()
        silent: dict[str, float | None] = dict(self.sync.wall_ages())
        silent.update({t: None if t not in rx else mono - rx[t] for t in self._state_topics()})
        ages = ", ".join(f"{k} {'never received' if a is None else f'{a:.2f} s'}" for k, a in silent.items())
        head = ("/clock: no message received" if never else
                f"/clock stopped: sim time has not advanced for {stall:.2f} s")
        return f"inputs stale: {head} (clock_timeout_s={self.clock_timeout}); wall time since the last message: {ages}"

    def _inputs_problem(self, now: float) -> str:
        """Why no plan can be made now ("" when inputs are fine): /clock stopped (use_sim_time; steady clock);
        for an input without a usable message, the reason its messages were dropped when they were (invalid image,
        NaN pose, malformed JointState), else stale or missing (ages in the node clock ``now`` [s])."""
        clock = self._clock_problem()
        if clock:
            return clock
        if self.strict_calibration:
            with self._lock:
                wrong = [p for c in self._info.values() for p in c.problems]
            if wrong:
                return "camera_info disagrees with camera_calibration (strict_calibration): " + "; ".join(wrong)
        cams = self.sync.problems()
        if cams:
            return "camera(s) unusable: " + "; ".join(f"{v}: {why}" for v, why in cams.items())
        with self._lock:
            ee, joints = self._ee, self._joints
            age = self.history.age(now)
            ready = self.history.ready()
            rejected = dict(self._rejected)
        states = {self.ee_source: ee, "/joint_states": joints}
        for topic in self._state_topics():
            state = states[topic]
            if state is None or now - state[0] > self.state_timeout:
                if topic in rejected:
                    return f"{topic}: no valid message; dropped: {rejected[topic]}"
                return f"{topic} stale or missing"
        if age > self.camera_timeout:
            if "camera triplet" in rejected:
                return f"camera triplets dropped: {rejected['camera triplet']}"
            return f"newest camera triplet is {age:.2f} s old"
        if not ready:
            return f"collecting history ({len(self.history._ring)}/{self.history.length} frames)"
        return ""

    def _state_topics(self) -> tuple[str, ...]:
        """The robot-state inputs: the EE pose topic and /joint_states (only the latter when the pose is FK)."""
        return ("/joint_states",) if self.ee_source == FK_SOURCE else (self.ee_source, "/joint_states")

    def _shutting_down(self) -> bool:
        return self._stop.is_set() or not self.context.ok()

    def _publish(self, pub, msg) -> None:
        """``pub.publish(msg)``; nothing while shutting down (rclpy raises on a publisher of a context that SIGTERM
        has shut down)."""
        try:
            pub.publish(msg)
        except Exception:
            if not self._shutting_down():
                raise

    def _plan_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._plan_step()
            except Exception as exc:
                if self._shutting_down():
                    break  # Ctrl-C / SIGTERM while planning or publishing: nothing can be published any more
                self._throttled_error(f"plan loop: {type(exc).__name__}: {exc}")

    def _plan_step(self) -> None:
        self._wake.wait(timeout=0.1)
        self._wake.clear()
        if self._stop.is_set():
            return
        if not self.is_active:
            self._set_status("inactive", "configured, not active (lifecycle)")
            return
        now = self._now()
        with self._lock:
            instruction, estop = self.instruction, self._estop
        if estop:
            self._set_status("estop", "e-stop latched")
            return
        if not instruction:
            self._set_status("idle", "no instruction")
            return
        if now < self._last_plan_time:
            self._last_plan_time = -math.inf  # the clock jumped back (bag loop, sim reset)
        # Inputs first: with /clock stopped the node clock stands still, and a cycle-period check in it first would
        # return here for ever, silently.
        problem = self._inputs_problem(now)
        if problem:
            if not problem.startswith("collecting"):
                self._publish_error(problem)
            self._set_status("waiting" if problem.startswith("collecting") else "error", problem)
            return
        if now - self._last_plan_time < self.open_loop_steps * self.dt * 0.999:
            return
        self._last_plan_time = now
        try:
            self._cycle(instruction)
        except Exception as exc:
            if self._shutting_down():
                raise
            self.get_logger().error(f"plan cycle failed: {type(exc).__name__}: {exc}")
            self._publish_hold(f"cycle failed: {type(exc).__name__}: {exc}")

    def _expected_latency(self) -> float:
        """Expected time from a cycle's start to its chunk reaching the executor [s, node clock: sim time under a
        sim, where a cycle of seconds of wall time may be a fraction of a second]: ``expected_latency_s``, or (0)
        the median of the last 10 cycles (0 before the first)."""
        if self.expected_latency > 0:
            return self.expected_latency
        return float(np.median(self._cycle_clock)) if self._cycle_clock else 0.0

    def _set_status(self, status: str, reason: str) -> None:
        self._last_status, self._last_reason = status, reason

    def _cycle(self, instruction: str) -> None:
        t_start, clock_start = time.perf_counter(), self._now()
        with self._lock:
            frames, poses, stamp = self.history.window()
        input_age = self._now() - stamp  # newest triplet's age when the cycle starts
        with self._lock:
            q = self._joints[1].copy()
            closure = self._closure
            executing = self._executing
        self._plan_id += 1
        elapsed = max(self._now() - executing[1], 0.0) if executing else 0.0
        # Real-time chunking: the chunk starts where the robot will be when it arrives (the executing chunk goes on
        # meanwhile), and its seam is blended with what remains of the executing chunk at that moment.
        latency = self._expected_latency() if self.latency_compensation else 0.0
        start = (self.session.start_after_latency(q, executing[0], executing[2], elapsed, latency)
                 if executing and self.latency_compensation else None)
        result, props = self.session.plan(frames, poses, q, instruction, seed=self.seed + self._plan_id,
                                          executing=executing[0] if executing else None,
                                          executing_elapsed_s=elapsed + latency, start=start,
                                          gripper_closure=closure)
        with self._lock:
            estop_now, same = self._estop, self.instruction == instruction
        if estop_now or not same or not self.is_active:
            return  # the world changed (or the node was deactivated) while we planned: drop the plan
        problem = self._inputs_problem(self._now())
        if problem:
            # The inputs went stale while we planned (e.g. the sim died mid-cycle): the chunk continues a world
            # nobody observes any more, so it must not reach the arm.
            with self._lock:
                self._executing = None
            self._publish_error(f"plan {self._plan_id} dropped: inputs went stale during the cycle: {problem}",
                                plan_id=self._plan_id)
            self._set_status("error", problem)
            return
        header_stamp = sec_to_stamp(stamp)
        chunk = result.chunk
        # stamped when produced (the executor's max_plan_age_s then measures transport, not planning); the triplet it
        # was planned from stamps its PlanDiagnostics
        msg = chunk_to_msg(chunk, PlanChunk, self.base_frame, self.get_clock().now().to_msg(), self._plan_id,
                           instruction)
        if self.send_to_executor:
            if self.exec_client is not None:
                self.exec_client.send_goal_async(ExecuteChunk.Goal(chunk=msg))
            else:
                self._publish(self.plan_pub, msg)
        with self._lock:
            ee_now = self._ee[1] if self._ee is not None else poses[-1, :6]
            self._executing = ((chunk, self._now(), np.concatenate([ee_now, poses[-1, 6:7]]))
                               if not result.hold else None)
        node_total = time.perf_counter() - t_start
        self._latencies.append(node_total)
        self._cycle_clock.append(max(self._now() - clock_start, 0.0))
        result.timings = {"input_age": input_age, **result.timings, "node_total": node_total}
        self._publish_plan_diagnostics(result, props, stamp)
        self._set_status(result.status, result.reason)
        if result.hold:
            self.get_logger().warn(f"plan {self._plan_id}: HOLD ({result.reason})")
        elif result.fallback:  # the refined chunk would have been rejected by the executor
            self.get_logger().warn(f"plan {self._plan_id}: {result.reason}")
        if self.publish_debug:
            self._publish_debug(frames, chunk, header_stamp)

    # ------------------------------------------------------------------ outputs
    def _publish_plan_diagnostics(self, result, props, stamp: float) -> None:
        d = PlanDiagnostics()
        d.header.stamp = sec_to_stamp(stamp)
        d.header.frame_id = self.base_frame
        d.plan_id = self._plan_id
        d.status = _STATUS[result.status]
        # reason also carries "refinement skipped: uninformative value gradient ..." on OK plans, and the winner's
        # survival of re-drawn noise when measured (noise_samples > 1)
        d.reason = result.reason + ("" if result.winner_survival is None else
                                    f"{'; ' if result.reason else ''}winner survival {result.winner_survival:.2f}")
        d.stage_names = list(result.timings)
        d.stage_seconds = [float(v) for v in result.timings.values()]
        d.num_proposals = len(props)
        d.chosen_index = int(result.chosen_index)
        d.candidate_scores = [float(s) for s in result.scores]
        d.candidate_uncertainty = [float(u) for u in result.uncertainty]
        d.refined_score = float(result.objective_trace[-1]) if result.objective_trace else float("nan")
        d.refine_iterations = max(len(result.objective_trace) - 1, 0)
        d.backend = str(getattr(self.session.backend, "name", self.backend_kind))
        self._publish(self.diag_pub, d)

    def _publish_error(self, reason: str, plan_id: int = 0) -> None:
        """PlanDiagnostics STATUS_ERROR with ``reason`` (``plan_id``: the dropped plan's, 0 = no plan made)."""
        d = PlanDiagnostics(status=PlanDiagnostics.STATUS_ERROR, reason=reason, plan_id=plan_id,
                            backend=str(getattr(self.session.backend, "name", self.backend_kind)))
        d.header.stamp = self.get_clock().now().to_msg()
        self._publish(self.diag_pub, d)
        self._throttled_error(f"not planning: {reason}")

    def _publish_hold(self, reason: str) -> None:
        with self._lock:
            latest = self.history.latest
            self._executing = None
        if latest is None:
            return
        h = self.session.horizon
        pose = latest.ee
        chunk = EEChunk.from_actions(np.tile(pose, (h, 1)), dt=self.dt)
        msg = chunk_to_msg(chunk, PlanChunk, self.base_frame, self.get_clock().now().to_msg(), self._plan_id,
                           self.instruction)
        if self.send_to_executor:
            self._publish(self.plan_pub, msg)
        d = PlanDiagnostics(status=PlanDiagnostics.STATUS_HOLD, reason=reason, plan_id=self._plan_id)
        d.header.stamp = msg.header.stamp
        self._publish(self.diag_pub, d)
        self._set_status("hold", reason)

    def _publish_debug(self, frames: np.ndarray, chunk: EEChunk, stamp) -> None:
        if self.marker_pub.get_subscription_count():
            self._publish(self.marker_pub, chunk_markers(chunk, self.base_frame, stamp))
        want_pred = self.pred_pub.get_subscription_count() > 0
        want_uq = self.uq_pub.get_subscription_count() > 0
        if not (want_pred or want_uq):
            return  # an extra rollout for pictures nobody looks at would only add latency

        out = self.session.backend.rollout(chunk.actions[None])
        pred = self._decode(out.latents)
        if pred is None:
            return
        # One picture per frame: the three views stacked vertically (left, right, wrist), as the model sees them.
        current = stack_views(frames[-1].astype(np.float32) / 255.0)
        predicted = [stack_views(f) for f in pred]  # (F, 3 views, 3, H, W) → F × (3, 3H, W)
        if want_pred:
            self._publish(self.pred_pub, rgb8_image_msg(prediction_strip([[current], predicted]), stamp,
                                                    self.base_frame))
        if want_uq:
            over = [uncertainty_overlay(f, m) for f, m in zip(predicted, out.uq_map[0], strict=False)]
            self._publish(self.uq_pub, rgb8_image_msg(prediction_strip([over]), stamp, self.base_frame))

    def _decode(self, latents: np.ndarray | None) -> np.ndarray | None:
        """(1, F, C, h, w) latents → (F, 3 views, 3, H, W) in [0, 1] by the backend's decode graph; None (no
        pictures, said once in the log) for an export made before that graph existed."""
        decode = getattr(self.session.backend, "decode", None)  # not part of the Backend protocol
        if latents is None or decode is None:
            return None
        try:
            return decode(latents[0])
        except BackendError as exc:
            if not self._decode_warned:
                self._decode_warned = True
                self.get_logger().warn(f"no debug prediction pictures: {exc}")
            return None

    def _publish_ros_diagnostics(self) -> None:
        if not self.is_configured:
            # unconfigured: OK while waiting for configure, ERROR with the reason after a failed one
            st = DiagnosticStatus(level=DiagnosticStatus.ERROR if self.lifecycle_error else DiagnosticStatus.OK,
                                  name="vidplan: planner_node", hardware_id="vidplan",
                                  message=f"unconfigured: {self.lifecycle_error or 'waiting for configure'}",
                                  values=[KeyValue(key="status", value="unconfigured"),
                                          KeyValue(key="reason", value=self.lifecycle_error or "waiting for configure"),
                                          KeyValue(key="lifecycle_state", value=self.lifecycle_state)])
            arr = DiagnosticArray(status=[st])
            arr.header.stamp = self.get_clock().now().to_msg()
            self._publish(self.ros_diag_pub, arr)
            return
        lat = np.asarray(self._latencies) * 1e3
        status, reason = self._last_status, self._last_reason
        if status not in ("idle", "estop", "inactive"):
            # Judged now, not by the plan thread's last word: a cycle can run for seconds after the inputs died.
            problem = self._inputs_problem(self._now())
            if problem and not problem.startswith("collecting"):
                status, reason = "error", problem
        level = {"error": DiagnosticStatus.ERROR, "hold": DiagnosticStatus.WARN, "estop": DiagnosticStatus.WARN,
                 "budget": DiagnosticStatus.WARN}.get(status, DiagnosticStatus.OK)
        values = {"status": status, "reason": reason, "backend": self.backend_kind,
                  "plans": str(self._plan_id), "instruction": self.instruction,
                  "task": self.instruction,  # the deprecated old key of "instruction" (removed in the next release)
                  "lifecycle_state": self.lifecycle_state}
        stall = self._clock_stall()
        if stall is not None:
            values["clock_stalled_s"] = f"{stall:.2f}"  # steady seconds since sim time last advanced
        if lat.size:
            values.update(plan_latency_p50_ms=f"{np.percentile(lat, 50):.1f}",
                          plan_latency_p95_ms=f"{np.percentile(lat, 95):.1f}")
        values.update(self.sync.status())
        with self._lock:  # why the newest message of an input was dropped, while it is the newest
            values.update({f"dropped {src}": why for src, why in self._rejected.items()})
        st = DiagnosticStatus(level=level, name="vidplan: planner_node", hardware_id="vidplan",
                              message=f"{status}: {reason}" if reason else status,
                              values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])
        arr = DiagnosticArray(status=[st])
        arr.header.stamp = self.get_clock().now().to_msg()
        self._publish(self.ros_diag_pub, arr)

    def close(self) -> None:
        self.release()


def main(args: list[str] | None = None) -> None:
    run_node(PlannerNode, args)


# Re-exported for tests.
__all__ = ["PlannerNode", "check_cameras", "load_session", "main", "stamp_to_sec"]
