"""One instructed episode driven by the learned planner, watched through the real topics (``vidplan demo --launch``).

Needs a running ``vidplan up sim planner:=true`` whose sim does not publish its own instruction
(``sim.instruction_topic:=""``), so the planner stays idle until this client tells it what to do:

1. wait for ``/sim/reset`` (sim), ``/vidplan/set_instruction`` (planner: models loaded) and optionally a subscriber
   on ``/vidplan/debug/prediction`` (the recorder, which makes the planner publish what it imagines);
2. ``/sim/reset`` (vidplan_interfaces/srv/SetInstruction) to the scene seed and instruction, read the instruction
   back from the latched ``/sim/scene``, then ``/vidplan/set_instruction`` with it: the planner starts planning;
3. watch: ``/vidplan/plan`` (chunks planned), ``/vidplan/plan_diagnostics`` (status and stage timings [s] per
   cycle), the executor's JointTrajectory topic (what was really sent to the arm), ``/diagnostics`` (executor
   counters) and ``/clock``; every second ask ``/sim/task_success``;
4. stop after ``max_steps`` executed 15 Hz control steps, on success, or at the wall-clock timeout; set the
   planner idle (empty instruction) and ask ``/sim/task_success`` once more.

Executed control steps are counted from the executor's JointTrajectory messages in sim time: a trajectory received
at sim time t_i whose last point is due at d_i executed ``min(d_i, t_{i+1} - t_i)`` seconds before the next one
replaced it (the last one until now); steps = executed seconds × 15 Hz. A one-point hold executes nothing.

rclpy is imported here; the CLI imports this module only inside its command.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rosgraph_msgs.msg import Clock
from std_msgs.msg import String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from vidplan_core.spaces import CONTROL_RATE_HZ
from vidplan_core.topics import SET_INSTRUCTION_SERVICE
from vidplan_interfaces.msg import PlanChunk, PlanDiagnostics
from vidplan_interfaces.srv import SetInstruction
from vidplan_ros.qos import LATCHED

__all__ = ["LearnedDemoResult", "UnreachableError", "executed_seconds", "run_learned_demo"]

STATUS_NAMES = {PlanDiagnostics.STATUS_OK: "ok", PlanDiagnostics.STATUS_BUDGET: "budget",
                PlanDiagnostics.STATUS_HOLD: "hold", PlanDiagnostics.STATUS_IDLE: "idle",
                PlanDiagnostics.STATUS_ERROR: "error"}


class UnreachableError(RuntimeError):
    """A service, action or topic the demo needs did not answer in time (exit code 3)."""


@dataclass
class LearnedDemoResult:
    """Outcome of one planner-driven episode (times: sim [s] unless named wall; latencies [ms])."""

    success: bool
    message: str
    instruction: str
    scene_seed: int
    steps_executed: int
    max_steps: int
    stopped_by: str                      # "max_steps" | "success" | "timeout"
    chunks_planned: int                  # PlanChunks published on /vidplan/plan
    plan_cycles: int                     # PlanDiagnostics of cycles that produced a chunk (ok/budget/hold)
    plan_status: dict[str, int] = field(default_factory=dict)
    plan_latency_ms_p50: float = float("nan")   # planner node time per cycle ("node_total" stage)
    plan_latency_ms_p95: float = float("nan")
    plan_latency_ms: list[float] = field(default_factory=list)
    stage_ms_median: dict[str, float] = field(default_factory=dict)
    trajectories_sent: int = 0           # executor → arm JointTrajectories with > 1 point
    executor: dict[str, str] = field(default_factory=dict)  # last executor /diagnostics values
    last_plan_reason: str = ""
    sim_start_s: float = 0.0             # sim time when the instruction was handed to the planner
    sim_time_s: float = 0.0
    wall_time_s: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def executed_seconds(trajectories: list[tuple[float, float]], now: float) -> float:
    """Seconds of arm motion executed from trajectories ``(receipt time, last point's time_from_start)`` [s], each
    replaced by the next one (the last runs until ``now``)."""
    total = 0.0
    for i, (t, dur) in enumerate(trajectories):
        end = trajectories[i + 1][0] if i + 1 < len(trajectories) else now
        total += max(0.0, min(dur, end - t))
    return total


class _Client:
    def __init__(self, trajectory_topic: str) -> None:
        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx)
        self.node = rclpy.create_node("vidplan_learned_demo", context=self.ctx)
        n = self.node
        self.lock = threading.Lock()
        self.clock_t = 0.0
        self.scenes: list[dict] = []
        self.chunks: list[int] = []                      # plan ids
        self.diags: list[tuple[str, dict[str, float], str]] = []  # (status, stage seconds, reason)
        self.trajs: list[tuple[float, float]] = []       # (sim receipt time, last time_from_start)
        self.executor_values: dict[str, str] = {}
        self.active = False                              # count trajectories only while the task runs
        n.create_subscription(Clock, "/clock", self._on_clock, 10)
        n.create_subscription(String, "/sim/scene", self._on_scene, LATCHED)
        n.create_subscription(PlanChunk, "/vidplan/plan", self._on_plan, 10)
        n.create_subscription(PlanDiagnostics, "/vidplan/plan_diagnostics", self._on_diag, 50)
        n.create_subscription(JointTrajectory, trajectory_topic, self._on_traj, 50)
        n.create_subscription(DiagnosticArray, "/diagnostics", self._on_ros_diag, 20)
        self.reset_cli = n.create_client(SetInstruction, "/sim/reset")
        self.instruction_cli = n.create_client(SetInstruction, SET_INSTRUCTION_SERVICE)
        self.success_cli = n.create_client(Trigger, "/sim/task_success")
        self.ex = SingleThreadedExecutor(context=self.ctx)
        self.ex.add_node(n)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self) -> None:
        while not self.stop.is_set() and self.ctx.ok():
            try:
                self.ex.spin_once(timeout_sec=0.02)
            except Exception:  # context shut down under us (Ctrl-C): leave quietly
                break

    # -- callbacks
    def _on_clock(self, msg: Clock) -> None:
        self.clock_t = msg.clock.sec + msg.clock.nanosec * 1e-9

    def _on_scene(self, msg: String) -> None:
        with self.lock:
            self.scenes.append(json.loads(msg.data))

    def _on_plan(self, msg: PlanChunk) -> None:
        with self.lock:
            if self.active:
                self.chunks.append(int(msg.plan_id))

    def _on_diag(self, msg: PlanDiagnostics) -> None:
        status = STATUS_NAMES.get(msg.status, str(msg.status))
        with self.lock:
            if self.active:
                self.diags.append((status, dict(zip(msg.stage_names, msg.stage_seconds, strict=False)), msg.reason))

    def _on_traj(self, msg: JointTrajectory) -> None:
        if len(msg.points) < 2:
            return  # a hold (or empty) trajectory moves nothing forward
        last = msg.points[-1].time_from_start
        with self.lock:
            if self.active:
                self.trajs.append((self.clock_t, last.sec + last.nanosec * 1e-9))

    def _on_ros_diag(self, msg: DiagnosticArray) -> None:
        for st in msg.status:
            if "executor" in st.name:
                with self.lock:
                    self.executor_values = {kv.key: kv.value for kv in st.values}

    # -- helpers
    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=2.0)
        self.node.destroy_node()
        if self.ctx.ok():
            rclpy.shutdown(context=self.ctx)

    def wait(self, pred: Callable[[], bool], timeout: float, what: str, abort: Callable[[], str]) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if pred():
                return
            why = abort()
            if why:
                raise UnreachableError(f"{why} while waiting for {what}")
            time.sleep(0.05)
        raise UnreachableError(f"timed out after {timeout:.0f} s waiting for {what}")

    def call(self, cli, req, timeout: float, abort: Callable[[], str]):
        self.wait(cli.service_is_ready, timeout, f"service {cli.srv_name}", abort)
        fut = cli.call_async(req)
        self.wait(fut.done, timeout, f"an answer from {cli.srv_name}", abort)
        return fut.result()

    def executed_s(self) -> float:
        with self.lock:
            return executed_seconds(list(self.trajs), self.clock_t)


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def run_learned_demo(scene_seed: int = 0, instruction: str = "", max_steps: int = 150, timeout: float = 600.0,
                     connect_timeout: float = 120.0, trajectory_topic: str = "/fr3_arm_controller/joint_trajectory",
                     wait_for_recorder: bool = True, success_poll_s: float = 1.0,
                     abort: Callable[[], str] = lambda: "", log: Callable[[str], object] = print
                     ) -> LearnedDemoResult:
    """Run one planner-driven episode through the sim's and planner's services and report it.

    Args:
        scene_seed: scene seed for /sim/reset.
        instruction: the instruction ("" = the seed's own task).
        max_steps: stop after this many executed 15 Hz control steps.
        timeout: wall-clock limit of the episode itself [s] (after the instruction was set).
        connect_timeout: wall seconds to wait for the sim and the planner (model loading) to come up.
        trajectory_topic: the executor's JointTrajectory topic (steps are counted from it).
        wait_for_recorder: wait (up to 20 s; a warning after) for a subscriber on /vidplan/debug/prediction before
            setting the instruction, so the recording has the imagined frames from the first cycle on.
        abort: returns a non-empty reason when the episode cannot go on (e.g. `vidplan up` exited).
        log: progress printer.

    Raises:
        UnreachableError: the sim or planner did not answer, or ``abort`` said so.
        ValueError: bad arguments.
    """
    if max_steps < 1:
        raise ValueError(f"max_steps must be >= 1, got {max_steps}")
    cl = _Client(trajectory_topic)
    try:
        log(f"[demo] waiting for the sim (/sim/reset) and the planner ({SET_INSTRUCTION_SERVICE}; loading "
            "models) ...")
        cl.wait(cl.reset_cli.service_is_ready, connect_timeout, "the sim's /sim/reset", abort)
        cl.wait(cl.instruction_cli.service_is_ready, connect_timeout, f"the planner's {SET_INSTRUCTION_SERVICE} (it "
                "is up once its models are loaded)", abort)
        if wait_for_recorder:
            try:
                cl.wait(lambda: cl.node.count_subscribers("/vidplan/debug/prediction") > 0, 20.0,
                        "the recorder's subscription to /vidplan/debug/prediction", abort)
            except UnreachableError as exc:
                log(f"[demo] warning: {exc}; the imagined frames may be missing from the recording")
        with cl.lock:
            n_scenes = len(cl.scenes)
        res = cl.call(cl.reset_cli, SetInstruction.Request(instruction=instruction.strip(), scene_seed=scene_seed),
                      connect_timeout, abort)
        if not res.success:
            raise ValueError(f"/sim/reset refused: {res.message}")
        cl.wait(lambda: len(cl.scenes) > n_scenes, connect_timeout, "/sim/scene after the reset", abort)
        scene = cl.scenes[-1]
        said = str(scene["instruction"])
        stamp0 = float(scene.get("stamp", 0.0))
        cl.wait(lambda: cl.clock_t > stamp0, connect_timeout, "/clock after the reset", abort)
        t_sim0, t_wall0 = cl.clock_t, time.monotonic()
        with cl.lock:
            cl.active = True
        res = cl.call(cl.instruction_cli, SetInstruction.Request(instruction=said, scene_seed=-1), connect_timeout,
                      abort)
        if not res.success:
            raise ValueError(f"{SET_INSTRUCTION_SERVICE} refused: {res.message}")
        log(f"[demo] seed {scene_seed}: '{said}' — planning until {max_steps} control steps "
            f"({max_steps / CONTROL_RATE_HZ:.1f} s of sim time) are executed, success, or {timeout:.0f} s wall")

        stopped_by, success_fut, next_poll, last_report = "timeout", None, 0.0, time.monotonic()
        success, message = False, ""
        while time.monotonic() - t_wall0 < timeout:
            why = abort()
            if why:
                raise UnreachableError(f"{why} during the episode")
            steps = int(cl.executed_s() * CONTROL_RATE_HZ + 1e-6)
            if steps >= max_steps:
                stopped_by = "max_steps"
                break
            if success_fut is not None and success_fut.done():
                r = success_fut.result()
                success, message, success_fut = bool(r.success), r.message, None
                if success:
                    stopped_by = "success"
                    break
            if success_fut is None and time.monotonic() >= next_poll and cl.success_cli.service_is_ready():
                success_fut = cl.success_cli.call_async(Trigger.Request())
                next_poll = time.monotonic() + success_poll_s
            if time.monotonic() - last_report > 10.0:
                last_report = time.monotonic()
                log(f"[demo] {steps}/{max_steps} steps, {len(cl.chunks)} chunks, sim {cl.clock_t - t_sim0:.1f} s, "
                    f"wall {time.monotonic() - t_wall0:.0f} s")
            time.sleep(0.05)
        # The planner goes idle (no more chunks); the executor finishes or holds what it has.
        with cl.lock:
            cl.active = False
        steps = int(cl.executed_s() * CONTROL_RATE_HZ + 1e-6)
        try:
            cl.call(cl.instruction_cli, SetInstruction.Request(instruction="", scene_seed=-1), 10.0, abort)
        except UnreachableError as exc:
            log(f"[demo] warning: could not set the planner idle: {exc}")
        r = cl.call(cl.success_cli, Trigger.Request(), connect_timeout, abort)
        success, message = bool(r.success) or stopped_by == "success", r.message
        with cl.lock:
            diags, chunks, trajs, ex_vals = list(cl.diags), list(cl.chunks), list(cl.trajs), dict(cl.executor_values)
        cycles = [d for d in diags if d[0] in ("ok", "budget", "hold")]
        lat = [1e3 * d[1]["node_total"] for d in cycles if "node_total" in d[1] and math.isfinite(d[1]["node_total"])]
        stages: dict[str, list[float]] = {}
        for _, st, _ in cycles:
            for k, v in st.items():
                stages.setdefault(k, []).append(1e3 * v)
        out = LearnedDemoResult(
            success=success, message=message, instruction=said, scene_seed=scene_seed, steps_executed=steps,
            max_steps=max_steps, stopped_by=stopped_by, chunks_planned=len(chunks), plan_cycles=len(cycles),
            plan_status=dict(Counter(d[0] for d in diags)), plan_latency_ms_p50=_percentile(lat, 50),
            plan_latency_ms_p95=_percentile(lat, 95), plan_latency_ms=[round(v, 3) for v in lat],
            stage_ms_median={k: float(np.median(v)) for k, v in stages.items()}, trajectories_sent=len(trajs),
            executor=ex_vals, last_plan_reason=next((d[2] for d in reversed(diags) if d[2]), ""),
            sim_start_s=t_sim0, sim_time_s=cl.clock_t - t_sim0, wall_time_s=time.monotonic() - t_wall0)
        log(f"[demo] {'SUCCESS' if out.success else 'FAILURE'}: {out.message}")
        return out
    finally:
        cl.close()
