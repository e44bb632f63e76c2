"""Parameters of :mod:`vidplan_ros.executor_node` (all documented with their defaults; units m, rad, s). A value of
the wrong type (`max_plan_age_s:=abc`) or a missing / unreadable URDF exits with code 2 and one line naming the
parameter or file; an integer is accepted where a float is expected (`time_scale:=2`):
    backend (str, "jtc"): jtc | servo | moveit_py.
    trajectory_topic (str, "/fr3_arm_controller/joint_trajectory"): JointTrajectory topic (jtc backend).
    gripper_interface (str, "topic"): topic | action. topic: std_msgs/Float64 on gripper_topic; action:
        control_msgs/GripperCommand goals on gripper_action (franka_ros2's franka_gripper; chunks are refused, the
        arm holding, while its server is absent).
    gripper_topic (str, "/gripper/command"): std_msgs/Float64 gripper command, 0 open .. 1 closed ("" = none).
    gripper_action (str, "/franka_gripper/gripper_action"): the GripperCommand action server.
    gripper_open_width_m (float, 0.08): gap of the open gripper [m]; command g → position (1 − g) × this.
    gripper_max_effort_n (float, 20.0): grasp force sent with each goal [N].
    servo_topic (str, "/servo_node/pose_target_cmds"): PoseStamped topic of MoveIt Servo (servo backend).
    servo_rate_hz (float, 50.0): pose stream rate of the servo backend.
    servo_switch_service (str, "/servo_node/switch_command_type"): MoveIt Servo's ServoCommandType service, called
        with POSE before the first stream (Jazzy and newer; absent on Humble, then poses stream without it; "" =
        never call it).
    moveit_planning_group (str, "fr3_arm"), moveit_node_name (str, "vidplan_moveit_py"): moveit_py backend.
    joint_prefix (str, "panda"): joint names in /joint_states and trajectories are {prefix}_joint1..7; the gripper
        width is 2 × {prefix}_finger_joint1 (each finger's opening, as franka_ros2 reports it).
    base_frame (str, "panda_link0"): frame of the chunks (PlanChunk.header.frame_id must be this or empty).
    urdf_path (str, ""): URDF for kinematics ("" = the installed urdf/panda_droid.urdf; only joint order matters
        for names, so a panda_* URDF serves fr3_* joints).
    ee_frame (str, ""): EE frame of the URDF ("" = {urdf prefix}_hand_tcp).
    plan_topic (str, "/vidplan/plan"), joint_states_topic (str, "/joint_states"), estop_topic (str, "/vidplan/estop"):
        the chunk, joint-state and e-stop topics.
    action_name (str, "/vidplan/execute_chunk"): the ExecuteChunk action (served by the helper node
        ``<node name>_action``, which ignores command-line remappings: set this parameter instead).
    out_of_limits_policy (str, "reject"): reject | clip, for chunks on plan_topic (action goals carry their own).
    workspace_min (float[3], [0.20, -0.45, 0.02]), workspace_max (float[3], [0.80, 0.45, 0.70]): EE box, base frame.
    max_translation_per_control_step (float, 0.075): DROID step limit on the EE translation [m per control step].
    max_rotation_per_control_step (float, 0.15): DROID step limit on the EE rotation [rad per control step].
    control_rate_hz (float, 15.0): the control rate the step limits refer to; they are scaled to the chunk's
        executed step duration.
    joint_position_margin_rad (float, 0.01), joint_velocity_scale (float, 0.8): joint limit margin [rad] (IK stays
        this far inside each limit; a joint already inside may hold or move out) and the fraction of the URDF
        velocity limits allowed.
    max_plan_age_s (float, 1.0): chunks stamped longer ago are rejected (ROS time, so sim time under use_sim_time).
    max_horizon (int, 64): longest accepted chunk.
    joint_state_timeout_s (float, 0.5): joint states older than this (wall time since receipt) → refuse / abort.
    time_scale (float, 1.0): default execution time scale (>1 slower) for topic chunks and goals with 0.
    ik_max_iterations (int, 100): damped-least-squares IK iterations per step.
    ik_position_tolerance (float, 5e-4), ik_rotation_tolerance (float, 5e-3): IK tolerances [m, rad]; a step whose
        IK misses them is "unreachable".
    ik_damping (float, 0.01): damping of the least-squares IK step.
    goal_position_tolerance (float, 0.005), goal_orientation_tolerance (float, 0.0349): settle tolerances
        (5 mm, 2°) for goals with wait_for_settle.
    settle_timeout_s (float, 2.0): how long after the last point to wait for settling.
    path_position_tolerance (float, 0.10): abort + hold when the EE strays further than this from the commanded path
        (0 = off). Measured geometrically — distance of the EE to the TCP path of the commanded joint trajectory —
        not against the commanded point at the current time: an arm that trails its command because a message or a
        loaded machine delayed the trajectory is late, not off its path (that time-based error is what feedback
        reports as tracking error).
    hold_time_s (float, 0.0): time_from_start of the one-point hold trajectory (measured position, zero velocity;
        0 = hold at once, which stops the arm fastest).
    monitor_rate_hz (float, 100.0): execution monitoring rate (feedback, gripper, completion).
    diagnostics_period_s (float, 1.0): /diagnostics period (also the period of the ROS graph checks).
    plan_timeout_s (float, 3.0): after the first chunk, no chunk for longer than this while idle → WARN "no plan".
    autostart (bool, true): configure and activate at start-up; false = a managed node waiting in the unconfigured
        state for lifecycle transitions (vidplan_ros.lifecycle; lifecycle_manager_node).

Every parameter is read once, at start-up, and declared read-only: a live ``ros2 param set`` is refused instead of
reporting success and changing nothing. :func:`declare_executor_parameters` declares, checks and returns them as
:class:`ExecutorParams`; this docstring is their one description (``ros2 param describe`` shows the same text).
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vidplan_core.execution import IKOptions
from vidplan_core.safety import SafetyLimits
from vidplan_ros.executor_backends import BACKENDS
from vidplan_ros.node_runner import declare_checked, parameter_docs, parameters_declared

__all__ = ["ExecutorParams", "check_urdf_file", "declare_executor_parameters"]

_DOCS = parameter_docs(__doc__)
def check_urdf_file(path: str) -> None:
    """ValueError naming ``path`` when it is not a readable XML file with a <robot> root (checked before pinocchio,
    whose parser prints C++ errors and raises less clear ones)."""
    f = Path(path)
    if not f.exists():
        raise ValueError(f"parameter urdf_path: URDF file {path} does not exist")
    if not f.is_file():
        raise ValueError(f"parameter urdf_path: {path} is not a file")
    if not os.access(f, os.R_OK):
        raise ValueError(f"parameter urdf_path: URDF file {path} is not readable (permissions)")
    try:
        root = ET.parse(f).getroot()
    except (ET.ParseError, OSError) as exc:
        raise ValueError(f"parameter urdf_path: {path} is not a URDF (not valid XML: {exc})") from exc
    if root.tag != "robot":
        raise ValueError(f"parameter urdf_path: {path} is not a URDF (root element <{root.tag}>, expected <robot>)")


@dataclass(frozen=True)
class ExecutorParams:
    """The executor's checked parameters (see the module docstring for each one's parameter name and meaning)."""

    backend_name: str
    trajectory_topic: str
    gripper_topic: str
    gripper_interface: str
    gripper_action: str
    gripper_open_width: float  # [m]
    gripper_max_effort: float  # [N]
    servo_topic: str
    servo_rate: float  # [Hz]
    servo_switch: str
    planning_group: str
    moveit_node_name: str
    joint_prefix: str
    base_frame: str
    urdf_path: str
    ee_frame: str
    plan_topic: str
    js_topic: str
    estop_topic: str
    action_name: str
    policy: str
    limits: SafetyLimits
    js_timeout: float  # [s]
    time_scale: float
    ik_options: IKOptions
    goal_pos_tol: float  # [m]
    goal_rot_tol: float  # [rad]
    settle_timeout: float  # [s]
    path_tol: float  # [m]
    hold_time: float  # [s]
    monitor_rate: float  # [Hz]
    diag_period: float  # [s]
    plan_timeout: float  # [s]
    autostart: bool


def declare_executor_parameters(node: Any) -> ExecutorParams:
    """Declare every executor parameter on ``node`` (read-only, dynamically typed, described), check types and values,
    and return them. Raises ValueError (run_node: exit 2 with the message) naming the parameter; an undeclared
    parameter given on the command line fails in :func:`vidplan_ros.node_runner.parameters_declared`."""

    def p(name: str, default: Any) -> Any:
        # read-only: every setting is read once here, so a live `ros2 param set` is refused instead of reporting
        # success and changing nothing
        return declare_checked(node, name, default, _DOCS.get(name, ""))

    backend_name = str(p("backend", "jtc"))
    trajectory_topic = str(p("trajectory_topic", "/fr3_arm_controller/joint_trajectory"))
    gripper_topic = str(p("gripper_topic", "/gripper/command"))
    gripper_interface = str(p("gripper_interface", "topic"))
    gripper_action = str(p("gripper_action", "/franka_gripper/gripper_action"))
    gripper_open_width = float(p("gripper_open_width_m", 0.08))
    gripper_max_effort = float(p("gripper_max_effort_n", 20.0))
    if gripper_interface not in ("topic", "action"):
        raise ValueError(f"gripper_interface must be one of topic, action, got {gripper_interface!r}")
    servo_topic = str(p("servo_topic", "/servo_node/pose_target_cmds"))
    servo_rate = float(p("servo_rate_hz", 50.0))
    servo_switch = str(p("servo_switch_service", "/servo_node/switch_command_type"))
    planning_group = str(p("moveit_planning_group", "fr3_arm"))
    moveit_node_name = str(p("moveit_node_name", "vidplan_moveit_py"))
    joint_prefix = str(p("joint_prefix", "panda"))
    base_frame = str(p("base_frame", "panda_link0"))
    urdf_path = str(p("urdf_path", ""))
    ee_frame = str(p("ee_frame", ""))
    plan_topic = str(p("plan_topic", "/vidplan/plan"))
    js_topic = str(p("joint_states_topic", "/joint_states"))
    estop_topic = str(p("estop_topic", "/vidplan/estop"))
    action_name = str(p("action_name", "/vidplan/execute_chunk"))
    policy = str(p("out_of_limits_policy", "reject"))
    defaults = SafetyLimits()
    limit_params = {
        "workspace_min": p("workspace_min", defaults.workspace_min),
        "workspace_max": p("workspace_max", defaults.workspace_max),
        "max_translation_per_control_step": p("max_translation_per_control_step",
                                              defaults.max_translation_per_control_step),
        "max_rotation_per_control_step": p("max_rotation_per_control_step",
                                           defaults.max_rotation_per_control_step),
        "control_rate_hz": p("control_rate_hz", defaults.control_rate_hz),
        "joint_position_margin_rad": p("joint_position_margin_rad", defaults.joint_position_margin_rad),
        "joint_velocity_scale": p("joint_velocity_scale", defaults.joint_velocity_scale),
        "max_plan_age_s": p("max_plan_age_s", defaults.max_plan_age_s),
        "max_horizon": p("max_horizon", defaults.max_horizon),
    }
    js_timeout = float(p("joint_state_timeout_s", 0.5))
    time_scale = float(p("time_scale", 1.0))
    ik_defaults = IKOptions()  # parameter ik_<field> for each field: ik_max_iterations, ik_position_tolerance, ...
    ik_params = {f: p(f"ik_{f}", getattr(ik_defaults, f)) for f in IKOptions.model_fields}
    goal_pos_tol = float(p("goal_position_tolerance", 0.005))
    goal_rot_tol = float(p("goal_orientation_tolerance", float(np.radians(2.0))))
    settle_timeout = float(p("settle_timeout_s", 2.0))
    path_tol = float(p("path_position_tolerance", 0.10))
    hold_time = float(p("hold_time_s", 0.0))
    monitor_rate = float(p("monitor_rate_hz", 100.0))
    diag_period = float(p("diagnostics_period_s", 1.0))
    plan_timeout = float(p("plan_timeout_s", 3.0))
    autostart = bool(p("autostart", True))
    parameters_declared(node)  # an unknown parameter (a typo of a limit) fails here (listing mode stops)

    # --- validate (ValueError → run_node exits 2 with the message)
    if backend_name not in BACKENDS:
        raise ValueError(f"parameter backend must be one of {BACKENDS}, got {backend_name!r}")
    if policy not in ("reject", "clip"):
        raise ValueError(f"parameter out_of_limits_policy must be 'reject' or 'clip', got {policy!r}")
    for name, val in (("joint_state_timeout_s", js_timeout), ("time_scale", time_scale),
                      ("monitor_rate_hz", monitor_rate), ("diagnostics_period_s", diag_period),
                      ("settle_timeout_s", settle_timeout), ("plan_timeout_s", plan_timeout)):
        if not val > 0:
            raise ValueError(f"parameter {name} must be > 0, got {val}")
    if not hold_time >= 0:
        raise ValueError(f"parameter hold_time_s must be >= 0, got {hold_time}")
    try:
        limits = SafetyLimits(**limit_params)
    except ValueError as exc:  # pydantic's ValidationError: one line per error, not its multi-line report
        errors = exc.errors() if hasattr(exc, "errors") else []
        raise ValueError("; ".join((f"parameter {e['loc'][0]}: " if e["loc"] else "parameters: ")
                                   + e["msg"].removeprefix("Value error, ") for e in errors) or str(exc)) from exc
    try:
        ik_options = IKOptions(**ik_params)
    except ValueError as exc:  # pydantic's ValidationError: name the parameters (ik_<field>), not the fields
        errors = exc.errors() if hasattr(exc, "errors") else []
        raise ValueError("; ".join(f"parameter ik_{e['loc'][0]}: {e['msg']} (got {e['input']})"
                                   for e in errors) or str(exc)) from exc
    return ExecutorParams(backend_name=backend_name, trajectory_topic=trajectory_topic,
                          gripper_topic=gripper_topic, gripper_interface=gripper_interface,
                          gripper_action=gripper_action, gripper_open_width=gripper_open_width,
                          gripper_max_effort=gripper_max_effort, servo_topic=servo_topic, servo_rate=servo_rate,
                          servo_switch=servo_switch, planning_group=planning_group,
                          moveit_node_name=moveit_node_name, joint_prefix=joint_prefix, base_frame=base_frame,
                          urdf_path=urdf_path, ee_frame=ee_frame, plan_topic=plan_topic, js_topic=js_topic,
                          estop_topic=estop_topic, action_name=action_name, policy=policy, limits=limits,
                          js_timeout=js_timeout, time_scale=time_scale, ik_options=ik_options,
                          goal_pos_tol=goal_pos_tol, goal_rot_tol=goal_rot_tol, settle_timeout=settle_timeout,
                          path_tol=path_tol, hold_time=hold_time, monitor_rate=monitor_rate,
                          diag_period=diag_period, plan_timeout=plan_timeout, autostart=autostart)
