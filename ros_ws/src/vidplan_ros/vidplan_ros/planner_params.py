"""Parameters of :mod:`vidplan_ros.planner_node` (all read at start-up and validated; a bad value exits with code 2 and
names the parameter):
    model_dir (str, "models/demo"): exported/bundled model directory.
    backend (str, "torch"): torch | onnxruntime | tensorrt.
    device (str, "cpu"): torch device / execution provider family.
    threads (int, 0): intra-op threads of the runtime (torch.set_num_threads / onnxruntime intra_op_num_threads);
        0 = $OMP_NUM_THREADS when set, else the CPUs this process may run on (sched_getaffinity): right when the
        planner is alone on the machine; give fewer where a simulator or recorder shares the cores.
    planner_config (str, ""): the planner YAML (vidplan_core.planning.config; "" = the shipped
        vidplan_core/planning/planner.yaml). The defaults of the planning parameters below are read from it (the
        values shown are the shipped file's); setting a parameter overrides that one setting.
    planner (str, "gradopt"): gradopt (Algorithm 3) | cem.
    flow_steps (int, 1): K of the flow map (0 = the model's default).
    refine_iters (int, 5): most gradient refinement iterations per cycle.
    refine_tol (float, 1e-4): refinement stops once an iteration raises the best objective by less than this
        (0 = always run refine_iters); the iterations run are in PlanDiagnostics.refine_iterations.
    learning_rate (float, 0.05): Adam step in normalised action units.
    trust_region (float, 0.25): L∞ radius around the argmax candidate (normalised units).
    trust_region_m (float, 0.03): cap of that radius on each position coordinate [m] (0 = no cap).
    trust_region_rad (float, 0.15): cap on each Euler angle [rad] (0 = no cap).
    lambda_centering (float, 2.0): λ of the centring term (its reference: planner.yaml score.centring).
    uncertainty_weighting (str, "exp"): exp | linear | none  (w(h) = exp(−κ·h̄) | 1 − h̄ | 1; "none" applies to
        candidate scoring, the refinement objective keeps the backend's κ).
    kappa (float, 3.0): κ of the exp weighting.
    Live (``ros2 param set``, applied from the next cycle): kappa, lambda_centering, uncertainty_weighting,
    time_budget_s, basis_speed_mps. Every other parameter is read-only (restart the node to change it).
    basis_speed_mps (float, 0.15): EE speed of the Jacobian basis proposals [m/s].
    num_nominal (int, 0): perturbation proposals around the nominal chunk.
    nominal_policy (str, "hold"): what the nominal chunk is: hold (the current pose) | bc (the model directory's
        behaviour-cloned policy, policy/ from vidplan train bc: VidPlan perturbs its chunks as the paper perturbs
        π0.5's; give num_nominal > 0).
    noise_samples (int, 1): M, candidates scored as the mean over M flow-map noise draws.
    nominal_margin (float, 0.0): keep the nominal policy's own chunk unless a candidate scores more than this
        above it (score units; 0 = plain argmax).
    workspace_min / workspace_max (float[3]): the executor's EE box [m] (give both nodes the same values);
        proposals and refinement stay inside it.
    joint_velocity_scale (float, 0.8): the executor's fraction of the URDF joint velocity limits (the same value
        as the executor's); basis proposals stay within it.
    time_budget_s (float, 0.0): anytime budget per cycle [s] (0 = none).
    open_loop_steps (int, 2): chunk steps executed before the next plan is due (sets the cycle period).
    latency_compensation (bool, true): plan each chunk from the pose the executing chunk reaches when the new one
        arrives (rtc.pose_after_latency) and blend its seam with what remains then (real-time chunking).
    expected_latency_s (float, 0.0): planning + transport time assumed for that [s]; 0 = the median of the last 10
        cycles.
    history_length (int, 0): T history frames (0 = the model's).
    instruction (str, ""): initial instruction ("" = idle until one comes on /vidplan/instruction or
        /vidplan/set_instruction).
    camera_calibration (str, ""): the cameras' calibration YAML ("" = the shipped calibration/droid_cameras.yaml);
        the model must have been trained on the same cameras and workspace crop (checked at start-up), and each
        camera's camera_info is compared with it.
    left_topic / right_topic / wrist_topic (str): camera topics.
    left_info_topic / right_info_topic / wrist_info_topic (str): their sensor_msgs/CameraInfo (default: camera_info
        next to the image topic).
    check_camera_info (bool, true): compare each camera's CameraInfo with camera_calibration (size, intrinsics
        within 3 %) and remove lens distortion it reports (OpenCV remap); a mismatch is a warning, once per change.
    strict_calibration (bool, false): a mismatch stops planning (ERROR diagnostic naming view and values) instead.
    image_transport (str, "raw"): raw | compressed. compressed subscribes to ``<topic>/compressed``
        (sensor_msgs/CompressedImage, JPEG or PNG: what image_transport, networked and ZED/DROID cameras publish).
    max_sync_skew_s (float, 0.03): largest stamp spread of a camera triplet [s].
    camera_timeout_s (float, 0.5): a camera older than this is stale [s].
    state_timeout_s (float, 0.5): /ee_pose or /joint_states older than this is stale [s].
        Both ages are in the node clock (sim time under use_sim_time, so a slow-motion sim is not stale).
    clock_timeout_s (float, 1.0): under use_sim_time, sim time not advancing for this long (steady/wall clock)
        means /clock stopped: all inputs are stale [s]. Above the longest stall of a healthy sim (a lock-step sim
        rendering on busy cores stalls < 1 s).
    joint_prefix (str, "panda"): joint names {prefix}_joint1..7, {prefix}_finger_joint1 (fr3 on a franka_ros2 FR3).
    ee_pose_topic (str, "/ee_pose"): geometry_msgs/PoseStamped of the TCP in base_frame; "" = forward kinematics of
        /joint_states (pinocchio on urdf/panda_droid.urdf, TCP = {prefix}_hand_tcp; the FR3 shares the Panda's
        kinematic parameters).
    gripper_max_width_m (float, 0.04): finger position that means fully open.
    base_frame (str, "panda_link0"): frame of the published poses.
    send_to_executor (bool, true): publish PlanChunks on /vidplan/plan (false: shadow mode, diagnostics only).
    executor_interface (str, "topic"): topic | action (ExecuteChunk goals on /vidplan/execute_chunk).
    publish_debug (bool, true): publish prediction/uncertainty images and markers (only when subscribed).
    seed (int, 0): base seed of the flow map noise (cycle i uses seed + i).
    autostart (bool, true): configure (load the models) and activate at start-up; false = a managed node waiting
        in the unconfigured state for lifecycle transitions (vidplan_ros.lifecycle; lifecycle_manager_node).

:func:`declare_planner_parameters` declares them (descriptions from this docstring, the one place they are
documented: ``ros2 param describe`` shows the same text; ranges from their lower bounds) and returns the start-up
values as :class:`PlannerParams`; the live ones are read by the node when it configures and when they change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vidplan_ros.node_runner import check_parameter, declare_checked, parameter_docs, parameters_declared

__all__ = ["LIVE_PARAMETERS", "PlannerParams", "check_live_parameter", "declare_planner_parameters", "default_threads"]

_DOCS = parameter_docs(__doc__)
# Parameters an operator may change while the node runs (``ros2 param set``): they change how the next cycle scores
# and proposes, nothing it allocates or checks at start-up; every other parameter is read-only.
LIVE_PARAMETERS = ("kappa", "lambda_centering", "uncertainty_weighting", "time_budget_s", "basis_speed_mps")
# their checks, the same at start-up and when set live: (a value of the parameter's type, choices, lower bound)
_LIVE_CHECKS: dict[str, tuple[Any, tuple[str, ...] | None, float | None]] = {
    "kappa": (0.0, None, 0.0), "lambda_centering": (0.0, None, 0.0),
    "uncertainty_weighting": ("exp", ("exp", "linear", "none"), None), "time_budget_s": (0.0, None, 0.0),
    "basis_speed_mps": (0.0, None, 1e-6)}


def check_live_parameter(name: str, value: Any) -> Any:
    """A live parameter's new ``value`` checked as at start-up (type, choices, lower bound) and returned as its type;
    ValueError naming the parameter otherwise."""
    sample, choices, lo = _LIVE_CHECKS[name]
    return check_parameter(name, value, sample, choices=choices, lo=lo)


def default_threads() -> int:
    """The planner's default intra-op thread count: $OMP_NUM_THREADS when set (a positive integer), else the CPUs
    this process may run on."""
    import os

    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _declare(node: Any, name: str, default: Any, choices: Any = None, lo: float | None = None) -> Any:
    """Declare a planner parameter (description from this module's docstring; read-only unless it is one of
    LIVE_PARAMETERS, whose checks are :data:`_LIVE_CHECKS`) and return its checked value."""
    if name in _LIVE_CHECKS:
        _, choices, lo = _LIVE_CHECKS[name]
    return declare_checked(node, name, default, _DOCS.get(name, ""), read_only=name not in LIVE_PARAMETERS,
                           choices=choices, lo=lo)


@dataclass(frozen=True)
class PlannerParams:
    """The planner's start-up parameters, checked (see the module docstring for each one's parameter name; the
    live parameters are not here: the node reads their current values)."""

    model_dir: str
    backend_kind: str
    device: str
    threads: int
    open_loop_steps: int
    latency_compensation: bool
    expected_latency: float
    instruction: str
    check_info: bool
    strict_calibration: bool
    camera_timeout: float
    state_timeout: float
    clock_timeout: float
    joint_prefix: str
    ee_source: str
    gripper_max_width: float
    base_frame: str
    send_to_executor: bool
    executor_interface: str
    publish_debug: bool
    seed: int
    cfg_path: str | None
    planner: str
    flow_steps: int
    refine_iters: int
    refine_tol: float
    lr: float
    trust: float
    trust_m: float
    trust_rad: float
    num_nominal: int
    nominal_policy: str
    noise_samples: int
    nominal_margin: float
    ws_min: list[float]
    ws_max: list[float]
    jv_scale: float
    history_length: int
    calibration_file: str
    topics: dict[str, str]
    info_topics: dict[str, str]
    transport: str
    skew: float
    autostart: bool


def declare_planner_parameters(node: Any) -> PlannerParams:
    """Declare every planner parameter on ``node`` and return the start-up ones. Raises ValueError (run_node: exit 2)
    naming the parameter; an undeclared parameter on the command line fails in ``parameters_declared``."""

    def p(name: str, default: Any, choices: Any = None, lo: float | None = None) -> Any:
        return _declare(node, name, default, choices, lo)

    model_dir = p("model_dir", "models/demo")
    backend_kind = p("backend", "torch", choices=("torch", "onnxruntime", "tensorrt"))
    device = p("device", "cpu")
    threads = p("threads", 0, lo=0) or default_threads()
    # THE planner configuration (planning/planner.yaml or planner_config): its values are the defaults of the
    # node parameters below, which override single settings (vidplan_core.planning.config).
    from vidplan_core.planning.config import PlanningConfigError, load_planning_config

    cfg_path = p("planner_config", "") or None
    try:
        base = load_planning_config(cfg_path)
    except PlanningConfigError as exc:
        raise ValueError(f"parameter 'planner_config': {exc}") from exc
    g, sc = base.session.gradopt, base.session.gradopt.score
    planner = p("planner", base.session.planner, choices=("gradopt", "cem"))
    flow_steps = p("flow_steps", base.flow_steps, lo=0)
    refine_iters = p("refine_iters", g.refine_iters, lo=0)
    refine_tol = p("refine_tol", g.refine_tol, lo=0.0)
    lr = p("learning_rate", g.lr, lo=1e-9)
    trust = p("trust_region", g.trust_region, lo=1e-9)
    trust_m = p("trust_region_m", g.trust_region_m or 0.0, lo=0.0)
    trust_rad = p("trust_region_rad", g.trust_region_rad or 0.0, lo=0.0)
    lam = p("lambda_centering", sc.lam)
    weighting = p("uncertainty_weighting", sc.weighting)
    kappa = p("kappa", sc.kappa)
    speed = p("basis_speed_mps", base.session.proposals.basis_speed_mps)
    num_nominal = p("num_nominal", base.session.proposals.num_nominal, lo=0)
    nominal_policy = p("nominal_policy", "hold", choices=("hold", "bc"))
    noise_samples = p("noise_samples", g.noise_samples, lo=1)
    nominal_margin = p("nominal_margin", g.nominal_margin, lo=0.0)
    budget = p("time_budget_s", g.time_budget_s or 0.0)
    ws_min = p("workspace_min", list(base.limits.workspace_min))
    ws_max = p("workspace_max", list(base.limits.workspace_max))
    jv_scale = p("joint_velocity_scale", base.limits.joint_velocity_scale, lo=1e-3)
    open_loop_steps = p("open_loop_steps", base.open_loop_steps, lo=1)
    latency_compensation = p("latency_compensation", True)
    expected_latency = p("expected_latency_s", 0.0, lo=0.0)
    history_length = p("history_length", 0, lo=0)
    instruction = p("instruction", "")
    # the cameras' calibration ("" = the shipped calibration/droid_cameras.yaml): the model must have been
    # trained on the same cameras and workspace crop (checked at start-up)
    calibration_file = p("camera_calibration", "")
    topics = {v: p(f"{v}_topic", f"/cameras/{v}/image_raw") for v in ("left", "right", "wrist")}
    # camera_info sits in the camera's namespace (image_transport / camera_info_manager convention)
    info_topics = {v: p(f"{v}_info_topic", t.rstrip("/").rsplit("/", 1)[0] + "/camera_info")
                   for v, t in topics.items()}
    check_info = p("check_camera_info", True)
    strict_calibration = p("strict_calibration", False)
    transport = p("image_transport", "raw", choices=("raw", "compressed"))
    if transport == "compressed":  # image_transport's naming: the compressed stream of <topic>
        topics = {v: f"{t.rstrip('/')}/compressed" for v, t in topics.items()}
    skew = p("max_sync_skew_s", 0.03, lo=0.0)
    camera_timeout = p("camera_timeout_s", 0.5, lo=1e-3)
    state_timeout = p("state_timeout_s", 0.5, lo=1e-3)
    clock_timeout = p("clock_timeout_s", 1.0, lo=1e-3)
    joint_prefix = p("joint_prefix", "panda")
    ee_source = p("ee_pose_topic", "/ee_pose")  # "" → FK of /joint_states
    gripper_max_width = p("gripper_max_width_m", 0.04, lo=1e-4)
    base_frame = p("base_frame", "panda_link0")
    send_to_executor = p("send_to_executor", True)
    executor_interface = p("executor_interface", "topic", choices=("topic", "action"))
    publish_debug = p("publish_debug", True)
    seed = p("seed", 0)
    autostart = p("autostart", True)
    parameters_declared(node)  # an unknown parameter fails here, before the models load (listing mode stops)
    del weighting, kappa, lam, speed, budget  # live: the node reads their current values (configure, tuning)
    return PlannerParams(model_dir=model_dir, backend_kind=backend_kind, device=device, threads=threads,
                         open_loop_steps=open_loop_steps, latency_compensation=latency_compensation,
                         expected_latency=expected_latency, instruction=instruction, check_info=check_info,
                         strict_calibration=strict_calibration, camera_timeout=camera_timeout,
                         state_timeout=state_timeout, clock_timeout=clock_timeout, joint_prefix=joint_prefix,
                         ee_source=ee_source, gripper_max_width=gripper_max_width, base_frame=base_frame,
                         send_to_executor=send_to_executor, executor_interface=executor_interface,
                         publish_debug=publish_debug, seed=seed, cfg_path=cfg_path, planner=planner,
                         flow_steps=flow_steps, refine_iters=refine_iters, refine_tol=refine_tol, lr=lr,
                         trust=trust, trust_m=trust_m, trust_rad=trust_rad, num_nominal=num_nominal,
                         nominal_policy=nominal_policy, noise_samples=noise_samples,
                         nominal_margin=nominal_margin, ws_min=ws_min,
                         ws_max=ws_max, jv_scale=jv_scale, history_length=history_length,
                         calibration_file=calibration_file, topics=topics, info_topics=info_topics,
                         transport=transport, skew=skew, autostart=autostart)
