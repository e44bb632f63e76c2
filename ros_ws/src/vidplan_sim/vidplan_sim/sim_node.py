"""sim_node: the MuJoCo DROID scene speaking the robot's ROS 2 topics (a thin adapter over :class:`SimEnv`).

Publishes (stamps in simulation time, which this node also publishes on /clock):
    /cameras/{left,right,wrist}/image_raw    sensor_msgs/Image rgb8, camera_width × camera_height, sensor-data QoS
    /cameras/{left,right,wrist}/camera_info  sensor_msgs/CameraInfo (calibration scaled to the resolution), same QoS
    /joint_states   sensor_msgs/JointState: {prefix}_joint1..7 [rad] and {prefix}_finger_joint1/2 [m] — each finger's
                    opening 0..0.04 m as franka_ros2's gripper reports it (gripper width = their sum)
    /ee_pose        geometry_msgs/PoseStamped: TCP (panda_hand + 0.1034 m along z) in base_frame
    /clock          rosgraph_msgs/Clock (at state_rate_hz; monotonic across resets)
                    (/joint_states, /ee_pose and /clock are reliable, keep-last 1 s of samples)
    /tf, /tf_static tf2_msgs/TFMessage: the arm's links and the three camera optical frames, as robot_state_publisher
                    would publish them from urdf/panda_droid.urdf (/tf at tf_rate_hz; /tf_static latched, once)
    /diagnostics    diagnostic_msgs/DiagnosticArray every 1 s (wall): sim time, sim/wall rate, triplets rendered and
                    dropped, trajectories executed and rejected, matched subscribers per camera
                    (camera_subscribers); WARN when real-time mode drops frames
    /sim/scene      std_msgs/String JSON, latched: instruction, scene_seed, clutter, object poses and sizes, bowl
                    position, right after every reset (privileged state for scripted experts and evaluation)
    instruction_topic  std_msgs/String, latched: the instruction after every reset ("" disables; default
                    /vidplan/instruction)
Subscribes:
    /fr3_arm_controller/joint_trajectory  trajectory_msgs/JointTrajectory, executed like ros2_control's
        JointTrajectoryController: the arm interpolates from its current command to the points by time_from_start
        (cubic when velocities are given, else linear), starting at header.stamp (sim time) or at receipt when the
        stamp is zero; a new trajectory replaces the current one; an empty one holds the current command. Rejected,
        as the JTC rejects them (the arm keeps its current trajectory / hold; the reason is logged, throttled, and on
        /diagnostics as last_trajectory_rejection): unknown, missing or repeated joint names, points with the wrong
        number of positions / velocities / accelerations, effort values, non-finite values, time_from_start negative
        or not strictly increasing, positions outside the model's joint limits, a non-zero header.stamp whose
        trajectory ends in the past (see vidplan_sim.trajectory.check_joint_trajectory).
    /gripper/command  std_msgs/Float64, 0 = open .. 1 = closed (values outside are clipped with a warning).
Actions:
    gripper_action    control_msgs/GripperCommand (as franka_ros2's franka_gripper): goal position = finger gap
                      [m], result when the fingers stop (vidplan_sim.gripper_action).
Services:
    /sim/reset         vidplan_interfaces/srv/SetInstruction: rebuild the scene for ``scene_seed`` (-1 keeps the
                       current seed) and ``instruction`` ("" = the seed's own task), arm at home, gripper open.
                       (It took SetTask, the same fields, before this release; this development service changed
                       type without a deprecation period.)
    /sim/task_success  std_srvs/Trigger: success of the current task; message = "<instruction>: <reason>".

Parameters (defaults in brackets):
    scene_seed [0]            scene / task seed
    clutter [1]               clutter level 0..3 (0 = target alone); read again at every reset
    instruction [""]          the instruction; "" = the seed's own task (``task``: its deprecated old name)
    lockstep [true]           true: every camera period is rendered and published before physics goes on (sim time
                              advances one camera period per rendered triplet, so slow rendering or a slow machine
                              never changes what happens, only how fast); false: real time — physics follows the wall
                              clock and camera frames are dropped when rendering falls behind
    real_time_factor [1.0]    sim seconds per wall second at most (both modes); 0 = unlimited (lockstep only)
    camera_width [320], camera_height [180]  [px]
    camera_rate_hz [15.0]     camera rate in sim time [Hz]
    state_rate_hz [100.0]     /joint_states, /ee_pose and /clock rate in sim time [Hz]
    base_frame ["panda_link0"]
    joint_prefix ["panda"]    joint names {prefix}_joint1..7 on /joint_states and in trajectories
    physics_timestep [0.0]    [s]; 0 = the scene file's
    scene_file [""]           scene description YAML; "" = vidplan_sim's scenes/default.yaml
    calibration_file [""]     camera calibration YAML; "" = calibration/droid_cameras.yaml
    trajectory_topic ["/fr3_arm_controller/joint_trajectory"], gripper_topic ["/gripper/command"]
    instruction_topic ["/vidplan/instruction"]  (``task_topic``: its deprecated old name)
    tf_rate_hz [30.0]         /tf rate in sim time [Hz] (0 = no /tf and /tf_static; skipped with a warning where
                              tf2_msgs is not installed)
    gripper_action ["/franka_gripper/gripper_action"]  GripperCommand server ("" = none; skipped with a warning
                              where control_msgs is not installed)

Deprecated parameter names (removed in the next release): ``task`` (now ``instruction``) and ``task_topic`` (now
``instruction_topic``). Set to a value other than the default, the old name's value is used and a warning names the
new parameter; both names set to different values, the node refuses to start (exit 2) naming both.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped, TransformStamped
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from rosgraph_msgs.msg import Clock
from scipy.spatial.transform import Rotation
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Float64, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from vidplan_core.calibration import load_calibration
from vidplan_core.config import ConfigError
from vidplan_core.robot_state import RobotStateModel
from vidplan_core.spaces import VIEW_ORDER
from vidplan_core.topics import INSTRUCTION_TOPIC
from vidplan_interfaces.srv import SetInstruction
from vidplan_ros.conversions import rgb8_image_msg, sec_to_stamp, stamp_to_sec
from vidplan_ros.node_runner import declare_checked, declare_renamed, parameters_declared, run_node
from vidplan_ros.qos import LATCHED
from vidplan_sim.env import FINGER_MAX, SimEnv
from vidplan_sim.gripper_action import GripperActionServer
from vidplan_sim.scene import load_scene_config
from vidplan_sim.trajectory import JointTrajectoryTracker, TrajectoryRejectedError, check_joint_trajectory

__all__ = ["SimNode", "main"]


class SimNode(Node):
    def __init__(self) -> None:
        super().__init__("sim")

        def p(name: str, default, old_name: str = ""):
            # checked like every node's (an int for a double is fine, `abc` is named); not read-only: clutter is
            # read again at each reset. old_name: the deprecated name the parameter had before this release
            if old_name:
                return declare_renamed(self, name, old_name, default, read_only=False)
            return declare_checked(self, name, default, read_only=False)

        self.scene_seed = int(p("scene_seed", 0))
        p("clutter", 1)
        self.instruction = str(p("instruction", "", "task") or "")
        self.lockstep = bool(p("lockstep", True))
        self.rtf = float(p("real_time_factor", 1.0))
        self.width = int(p("camera_width", 320))
        self.height = int(p("camera_height", 180))
        self.cam_rate = float(p("camera_rate_hz", 15.0))
        self.state_rate = float(p("state_rate_hz", 100.0))
        self.base_frame = str(p("base_frame", "panda_link0"))
        self.prefix = str(p("joint_prefix", "panda"))
        timestep = float(p("physics_timestep", 0.0))
        scene_file = str(p("scene_file", "") or "") or None
        calib_file = str(p("calibration_file", "") or "") or None
        traj_topic = str(p("trajectory_topic", "/fr3_arm_controller/joint_trajectory"))
        grip_topic = str(p("gripper_topic", "/gripper/command"))
        instruction_topic = str(p("instruction_topic", INSTRUCTION_TOPIC, "task_topic") or "")
        gripper_action = str(p("gripper_action", "/franka_gripper/gripper_action") or "")
        self.tf_rate = float(p("tf_rate_hz", 30.0))
        parameters_declared(self)  # an unknown parameter fails here, before MuJoCo starts (listing mode stops)
        if self.cam_rate <= 0 or self.state_rate <= 0:
            raise ValueError(f"camera_rate_hz and state_rate_hz must be > 0, got {self.cam_rate}, {self.state_rate}")
        if self.rtf < 0 or (self.rtf == 0 and not self.lockstep):
            raise ValueError(f"real_time_factor must be > 0 (or 0 = unlimited with lockstep), got {self.rtf}")
        if timestep < 0:
            raise ValueError(f"physics_timestep must be >= 0 s, got {timestep}")
        try:
            cfg = load_scene_config(scene_file)
            calib = load_calibration(calib_file)
        except ConfigError as exc:
            raise ValueError(str(exc)) from exc
        if timestep > 0:
            cfg = cfg.model_copy(update={"physics": cfg.physics.model_copy(update={"timestep": timestep})})
        self.arm_names = [f"{self.prefix}_joint{i}" for i in range(1, 8)]
        self.finger_names = [f"{self.prefix}_finger_joint1", f"{self.prefix}_finger_joint2"]
        self.env = SimEnv(cfg, calib, self.width, self.height, render=True)
        self.cam_info = {v: self._camera_info(calib.cameras[v].scaled(self.width, self.height)) for v in VIEW_ORDER}

        self.pub_img = {v: self.create_publisher(Image, f"/cameras/{v}/image_raw", qos_profile_sensor_data)
                        for v in VIEW_ORDER}
        self.pub_info = {v: self.create_publisher(CameraInfo, f"/cameras/{v}/camera_info", qos_profile_sensor_data)
                         for v in VIEW_ORDER}
        # 1 s of state history (100 samples at 100 Hz): a reliable subscriber whose process stalls for up to that
        # long (a recorder on a loaded machine) still receives every sample; depth 10 lost everything after 0.1 s.
        state_depth = max(10, round(self.state_rate))
        self.pub_js = self.create_publisher(JointState, "/joint_states", state_depth)
        self.pub_ee = self.create_publisher(PoseStamped, "/ee_pose", state_depth)
        self.pub_clock = self.create_publisher(Clock, "/clock", state_depth)
        self._setup_tf()
        self.pub_scene = self.create_publisher(String, "/sim/scene", LATCHED)
        self.pub_instruction = (self.create_publisher(String, instruction_topic, LATCHED) if instruction_topic
                                else None)
        self.create_subscription(JointTrajectory, traj_topic, self._on_trajectory, 10)
        self.create_subscription(Float64, grip_topic, self._on_gripper, 10)
        self.create_service(SetInstruction, "/sim/reset", self._on_reset)
        self.create_service(Trigger, "/sim/task_success", self._on_success)
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diag_last = (time.monotonic(), 0.0, 0)
        self.create_timer(1.0, self._publish_diagnostics)

        self._lock = threading.RLock()
        # Commands from ROS callbacks, applied by the sim thread right before its next physics step. Callbacks never
        # wait for the sim thread's lock: a lock-step sim that renders slower than real time re-takes the lock at
        # once after each render, and a callback waiting for it could stall for a long time.
        self._commands: deque[Callable[[], None]] = deque()
        self._running = True
        self._ready = threading.Event()
        self._reset_req: dict | None = None
        self._reset_done = threading.Event()
        self._reset_result = (False, "")
        self._clock_offset = 0.0  # ROS sim time = offset + env.time (monotonic across resets)
        self.stats = {"triplets": 0, "dropped": 0, "trajectories": 0, "rejected": 0}
        self.last_rejection = ""  # reason of the last rejected JointTrajectory
        self._error: str | None = None
        self._thread = threading.Thread(target=self._loop, name="sim", daemon=True)
        self._thread.start()
        if not self._ready.wait(60.0) or self._error:
            raise ValueError(f"simulation failed to start: {self._error or 'timeout'}")
        self.joint_lower, self.joint_upper = self.env.arm_joint_limits()  # the same robot in every scene
        self.gripper_server = None
        if gripper_action:
            try:
                self.gripper_server = GripperActionServer(self, gripper_action, open_width_m=2 * FINGER_MAX)
            except ImportError as exc:
                self.get_logger().warn(f"gripper action {gripper_action} not served: {exc}")
        self.get_logger().info(
            f"sim ready: '{self.env.task.instruction}' seed {self.scene_seed} clutter {self._clutter()}; "
            f"{'lock-step' if self.lockstep else 'real-time'}, rtf {self.rtf}, cameras {self.width}x{self.height} @ "
            f"{self.cam_rate} Hz, state @ {self.state_rate} Hz")

    # ------------------------------------------------------------------------------------------- helpers
    def _clutter(self) -> int:
        return int(self.get_parameter("clutter").value)

    def sim_now(self) -> float:
        """Current ROS sim time [s]."""
        return self._clock_offset + self.env.time

    def _camera_info(self, cam) -> CameraInfo:
        info = CameraInfo()
        info.header.frame_id = cam.frame_id
        info.width, info.height = cam.width, cam.height
        info.distortion_model = "plumb_bob"
        info.d = [float(x) for x in cam.distortion]
        info.k = [float(x) for x in cam.K.reshape(-1)]
        info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
        info.p = [cam.fx, 0.0, cam.cx, 0.0, 0.0, cam.fy, cam.cy, 0.0, 0.0, 0.0, 1.0, 0.0]
        return info

    def _do_reset(self, seed: int, instruction: str) -> tuple[bool, str]:
        try:
            with self._lock:
                offset = self.sim_now() if self.env.model is not None else 0.0
                layout = self.env.reset(seed, self._clutter(), instruction or None)
                self._clock_offset = offset
                self.scene_seed = seed
        except (ValueError, ConfigError) as exc:
            return False, str(exc)
        scene = {
            "instruction": layout.task.instruction, "scene_seed": seed, "clutter": layout.clutter,
            "target": layout.target.name, "stamp": self.sim_now(),
            "objects": {n: [round(float(x), 6) for x in v] for n, v in self.env.object_poses().items()},
            "sizes": {o.name: [o.radius, o.half_height] for o in layout.objects},
            "bowl": [float(x) for x in self.env.bowl_position()],
            "bowl_radius": self.env.cfg.bowl.radius, "base_frame": self.base_frame,
        }
        self.pub_scene.publish(String(data=json.dumps(scene)))
        if self.pub_instruction is not None:
            self.pub_instruction.publish(String(data=layout.task.instruction))
        return True, f"reset to seed {seed}: {layout.task.instruction}"

    # ------------------------------------------------------------------------------------------- sim loop
    def _loop(self) -> None:
        try:
            ok, msg = self._do_reset(self.scene_seed, self.instruction)
        except Exception as exc:  # surfaced to the constructor, which exits with the message
            ok, msg = False, f"{type(exc).__name__}: {exc}"
        if not ok:
            self._error = msg
            self._ready.set()
            return
        self._ready.set()
        try:
            self._run()
        except Exception as exc:
            if self.context.ok() and self._running:  # not a shutdown race: report it
                self.get_logger().fatal(f"simulation loop died: {type(exc).__name__}: {exc}")
                raise
        finally:
            self.env.close()  # the GL context belongs to this thread

    def _run(self) -> None:
        ts = self.env.timestep
        n_step = 0  # physics steps since the (re)start of pacing
        k_state, k_cam = 1, 1
        wall0 = time.monotonic()
        self._publish_state()
        self._render_and_publish()
        while self._running and self.context.ok():
            if self._reset_req is not None:
                req, self._reset_req = self._reset_req, None
                self._commands.clear()  # commands for the old scene do not carry over
                self._reset_result = self._do_reset(req["seed"], req["instruction"])
                self._reset_done.set()
                n_step, k_state, k_cam = 0, 1, 1
                wall0 = time.monotonic()
                self._publish_state()
                self._render_and_publish()
                continue
            # Next event in physics steps: a state publication or a camera frame.
            s_state = round(k_state / (self.state_rate * ts))
            s_cam = round(k_cam / (self.cam_rate * ts))
            s_next = min(s_state, s_cam)
            if self.rtf > 0:  # never run faster than real_time_factor
                wait = wall0 + (s_next * ts) / self.rtf - time.monotonic()
                if wait > 0:
                    time.sleep(min(wait, 0.05))
                    if wait > 0.05:
                        continue
            with self._lock:
                while self._commands:
                    self._commands.popleft()()
                if s_next > n_step:
                    self.env.step((s_next - n_step) * ts)
                n_step = s_next
            if s_next == s_state:
                k_state += 1
                self._publish_state()
            if s_next == s_cam:
                k_cam += 1
                behind = time.monotonic() - (wall0 + (n_step * ts) / self.rtf) if self.rtf > 0 else 0.0
                if not self.lockstep and behind > 1.0 / self.cam_rate:
                    self.stats["dropped"] += 1  # real-time mode: skip this frame to keep up with the wall clock
                else:
                    self._render_and_publish()

    def _setup_tf(self) -> None:
        """/tf_static now (latched) and the /tf publisher, from the URDF's joint tree (robot_state.RobotStateModel);
        frame names take this node's joint_prefix."""
        self.pub_tf, self._tf_last = None, -np.inf
        if self.tf_rate <= 0:
            return
        try:
            from tf2_msgs.msg import TFMessage
        except ImportError as exc:
            self.get_logger().warn(f"/tf not published: {exc}")
            return
        self._tf_msg = TFMessage
        self.robot_state = RobotStateModel()
        urdf_prefix = self.robot_state.root.rsplit("_link0", 1)[0]
        self._tf_name = (lambda n: n) if urdf_prefix == self.prefix else (
            lambda n: self.prefix + n[len(urdf_prefix):] if n.startswith(urdf_prefix + "_") else n)
        self.pub_tf_static = self.create_publisher(TFMessage, "/tf_static", LATCHED)  # tf2's static QoS
        self.pub_tf = self.create_publisher(TFMessage, "/tf", 10)
        self.pub_tf_static.publish(self._tf(self.robot_state.static_transforms(), sec_to_stamp(0.0)))

    def _tf(self, transforms, stamp):
        msg = self._tf_msg()
        for parent, child, T in transforms:
            t = TransformStamped()
            t.header.stamp, t.header.frame_id, t.child_frame_id = stamp, self._tf_name(parent), self._tf_name(child)
            tr = t.transform.translation
            tr.x, tr.y, tr.z = (float(x) for x in T[:3, 3])
            qx, qy, qz, qw = Rotation.from_matrix(T[:3, :3]).as_quat()
            t.transform.rotation.x, t.transform.rotation.y, t.transform.rotation.z, t.transform.rotation.w = (
                float(qx), float(qy), float(qz), float(qw))
            msg.transforms.append(t)
        return msg

    def _publish_state(self) -> None:
        with self._lock:
            now = self.sim_now()
            q, dq = self.env.joint_positions(), self.env.joint_velocities()
            fingers = self.env.finger_positions()
            T = self.env.ee_pose()
        stamp = sec_to_stamp(now)
        self.pub_clock.publish(Clock(clock=stamp))
        js = JointState()
        js.header.stamp = stamp
        js.name = self.arm_names + self.finger_names
        js.position = [float(x) for x in np.concatenate([q, fingers])]
        js.velocity = [float(x) for x in np.concatenate([dq, [0.0, 0.0]])]
        self.pub_js.publish(js)
        ps = PoseStamped()
        ps.header.stamp = stamp
        ps.header.frame_id = self.base_frame
        ps.pose.position.x, ps.pose.position.y, ps.pose.position.z = (float(x) for x in T[:3, 3])
        qx, qy, qz, qw = Rotation.from_matrix(T[:3, :3]).as_quat()
        ps.pose.orientation.x, ps.pose.orientation.y, ps.pose.orientation.z, ps.pose.orientation.w = (
            float(qx), float(qy), float(qz), float(qw))
        self.pub_ee.publish(ps)
        if self.pub_tf is not None and now - self._tf_last >= 1.0 / self.tf_rate - 1e-9:
            self._tf_last = now
            pos = dict(zip(self.robot_state.actuated_names, (*q, fingers[0]), strict=True))
            self.pub_tf.publish(self._tf(self.robot_state.transforms(pos), stamp))

    def _render_and_publish(self) -> None:
        t0 = time.monotonic()
        with self._lock:
            stamp = sec_to_stamp(self.sim_now())
            frames = self.env.render()
        took = time.monotonic() - t0
        if self.stats["triplets"] == 0 or took > 2.0:  # the first frame, and any render that stalls the sim
            self.get_logger().info(f"camera frame {self.stats['triplets']} rendered in {took:.2f} s (wall)")
        for v, img in zip(VIEW_ORDER, frames, strict=True):
            self.pub_img[v].publish(rgb8_image_msg(img, stamp, self.cam_info[v].header.frame_id))
            info = self.cam_info[v]
            info.header.stamp = stamp
            self.pub_info[v].publish(info)
        self.stats["triplets"] += 1

    def _publish_diagnostics(self) -> None:
        now_w, now_s = time.monotonic(), self.sim_now()
        w0, s0, d0 = self._diag_last
        self._diag_last = (now_w, now_s, self.stats["dropped"])
        rate = (now_s - s0) / max(now_w - w0, 1e-6)
        dropped = self.stats["dropped"] - d0
        st = DiagnosticStatus(name="vidplan_sim: sim_node", hardware_id="mujoco")
        st.level = DiagnosticStatus.WARN if dropped > 0 else DiagnosticStatus.OK
        st.message = (f"real-time mode dropped {dropped} camera frames in the last second" if dropped
                      else f"running ({'lock-step' if self.lockstep else 'real-time'})")
        vals = {"instruction": self.env.task.instruction if self.env.layout else "", "scene_seed": self.scene_seed,
                "sim_time_s": f"{now_s:.3f}", "sim_per_wall": f"{rate:.3f}", **self.stats,
                "last_trajectory_rejection": self.last_rejection,
                # matched readers per camera: "no images" on a subscriber with 0 here is discovery, not the sim
                "camera_subscribers": " ".join(f"{v}:{p.get_subscription_count()}" for v, p in self.pub_img.items())}
        st.values = [KeyValue(key=k, value=str(v)) for k, v in vals.items()]
        msg = DiagnosticArray(status=[st])
        msg.header.stamp = sec_to_stamp(now_s)
        self.pub_diag.publish(msg)

    # ------------------------------------------------------------------------------------------- callbacks
    def _reject_trajectory(self, reason: str) -> None:
        """Count, log (throttled: a client may flood the topic) and report a rejected JointTrajectory; the arm keeps
        what it was doing (its current trajectory or hold), as with a JTC."""
        self.stats["rejected"] += 1
        self.last_rejection = reason
        self.get_logger().error(f"rejected JointTrajectory: {reason}", throttle_duration_sec=1.0)

    def _on_trajectory(self, msg: JointTrajectory) -> None:
        pts = msg.points
        try:
            checked = check_joint_trajectory(
                self.arm_names, list(msg.joint_names),
                [pt.time_from_start.sec + pt.time_from_start.nanosec * 1e-9 for pt in pts],
                [pt.positions for pt in pts], [pt.velocities for pt in pts], [pt.accelerations for pt in pts],
                [pt.effort for pt in pts], self.joint_lower, self.joint_upper)
        except TrajectoryRejectedError as exc:
            self._reject_trajectory(str(exc))
            return
        if not len(checked.times):  # JTC: an empty trajectory stops and holds the current command
            self._commands.append(lambda: self.env.set_joint_targets(self.env.commanded_joints()))
            return
        stamp = stamp_to_sec(msg.header.stamp)

        def apply() -> None:  # on the sim thread, before the next physics step
            start = self.env.time if stamp == 0.0 else stamp - self._clock_offset
            if start + checked.times[-1] < self.env.time:  # as the JTC: a stamped trajectory already over
                self._reject_trajectory(f"header.stamp {stamp:.3f} s + last time_from_start {checked.times[-1]:.3f} s "
                                        f"ends in the past (sim time {self.sim_now():.3f} s)")
                return
            try:
                tracker = JointTrajectoryTracker(start, self.env.commanded_joints(), checked.times, checked.positions,
                                                 checked.velocities)
            except ValueError as exc:
                self._reject_trajectory(str(exc))
                return
            self.env.set_trajectory(tracker)
            self.stats["trajectories"] += 1

        self._commands.append(apply)

    def _on_gripper(self, msg: Float64) -> None:
        g = float(msg.data)
        if not np.isfinite(g):
            self.get_logger().error(f"rejected gripper command {g}: must be finite in [0, 1]")
            return
        if not 0.0 <= g <= 1.0:
            self.get_logger().warning(f"gripper command {g} outside [0, 1]; clipped")
        self._commands.append(lambda: self.env.set_gripper(g))

    def _on_reset(self, req: SetInstruction.Request, resp: SetInstruction.Response) -> SetInstruction.Response:
        seed = int(req.scene_seed) if req.scene_seed >= 0 else self.scene_seed
        self._reset_done.clear()
        self._reset_req = {"seed": seed, "instruction": req.instruction.strip()}
        if not self._reset_done.wait(60.0):
            resp.success, resp.message = False, "reset timed out (60 s)"
            return resp
        resp.success, resp.message = self._reset_result
        if resp.success:
            self.get_logger().info(f"/sim/reset: {resp.message}")
        else:
            self.get_logger().error(f"/sim/reset failed: {resp.message}")
        return resp

    def _on_success(self, req: Trigger.Request, resp: Trigger.Response) -> Trigger.Response:
        with self._lock:
            ok, why = self.env.task_success()
            resp.success, resp.message = bool(ok), f"{self.env.task.instruction}: {why}"
        return resp

    def close(self) -> None:
        """Stop the simulation thread and release the renderer."""
        self._running = False
        if self.gripper_server is not None:
            try:
                self.gripper_server.close()
            except Exception as exc:  # shutting down: report and go on
                self.get_logger().warn(f"gripper action server did not close cleanly: {exc}")
        if self._thread.is_alive():
            self._thread.join(timeout=5.0)


def main(args: list[str] | None = None) -> None:
    run_node(SimNode, args)
