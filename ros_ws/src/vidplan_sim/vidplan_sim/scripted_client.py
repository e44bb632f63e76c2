"""Scripted demo through the real topics: the scripted expert's EE actions sent to the executor as ExecuteChunk goals.

Needs a running sim + executor (``vidplan up sim planner:=false``). Steps:

1. ``/sim/reset`` (vidplan_interfaces/srv/SetInstruction) to the scene seed and instruction (default: put the seed's
   target object in the bowl), then read the scene's object poses from the latched ``/sim/scene`` (privileged state,
   as the scripted expert needs) and the TCP pose from ``/ee_pose``;
2. plan the episode with :class:`vidplan_sim.expert.ScriptedExpert` (15 Hz absolute TCP targets);
3. send it in chunks of ``chunk_steps`` steps (PlanChunk, dt = 1/15 s, stamped with sim time) to the executor's
   ``/vidplan/execute_chunk`` action, one goal after the other, collecting feedback (tracking error) and results;
4. ask ``/sim/task_success`` and report success, steps and tracking errors.

Used by ``vidplan demo --scripted``; importable without a ROS context (rclpy is imported here, so the CLI imports
this module only inside its command).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import rclpy
from geometry_msgs.msg import PoseStamped
from rclpy.executors import SingleThreadedExecutor
from rosgraph_msgs.msg import Clock
from scipy.spatial.transform import Rotation
from std_msgs.msg import String
from std_srvs.srv import Trigger

from vidplan_core.spaces import CONTROL_RATE_HZ, EULER_SEQ, EEChunk
from vidplan_interfaces.action import ExecuteChunk
from vidplan_interfaces.msg import PlanChunk
from vidplan_interfaces.srv import SetInstruction
from vidplan_ros.compat import ActionClient  # rclpy 9.1.2 loses goal responses (compat.py)
from vidplan_ros.conversions import chunk_to_msg, sec_to_stamp
from vidplan_ros.qos import LATCHED
from vidplan_sim.expert import ExpertOptions, SceneObservation, ScriptedExpert
from vidplan_sim.tasks import Task, parse_instruction

__all__ = ["DemoResult", "run_scripted_demo"]

STATUS = {0: "succeeded", 1: "rejected", 2: "aborted", 3: "canceled", 4: "estop"}


@dataclass
class DemoResult:
    """Outcome of one scripted episode through ROS."""

    success: bool
    message: str
    instruction: str
    scene_seed: int
    steps_planned: int
    steps_executed: int
    chunks: int
    chunk_status: list[str] = field(default_factory=list)
    mean_tracking_error_m: float = float("nan")
    max_tracking_error_m: float = float("nan")
    final_position_error_m: float = float("nan")
    final_orientation_error_rad: float = float("nan")
    wall_time_s: float = 0.0
    sim_time_s: float = 0.0

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


class _Client:
    def __init__(self) -> None:
        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx)
        self.node = rclpy.create_node("vidplan_scripted_demo", context=self.ctx)
        n = self.node
        self.clock_t = 0.0  # latest /clock [s]: chunks are stamped in sim time, which the executor judges them by
        self.lock = threading.Lock()
        self.scenes: list[dict] = []
        self.ee: PoseStamped | None = None
        self.feedback: list[float] = []
        n.create_subscription(String, "/sim/scene", self._on_scene, LATCHED)
        n.create_subscription(PoseStamped, "/ee_pose", self._on_ee, 10)
        n.create_subscription(Clock, "/clock", self._on_clock, 10)
        self.reset_cli = n.create_client(SetInstruction, "/sim/reset")
        self.success_cli = n.create_client(Trigger, "/sim/task_success")
        self.action = ActionClient(n, ExecuteChunk, "/vidplan/execute_chunk")
        self.ex = SingleThreadedExecutor(context=self.ctx)
        self.ex.add_node(n)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self) -> None:
        while not self.stop.is_set() and self.ctx.ok():
            self.ex.spin_once(timeout_sec=0.02)

    def _on_scene(self, msg: String) -> None:
        with self.lock:
            self.scenes.append(json.loads(msg.data))

    def _on_clock(self, msg: Clock) -> None:
        self.clock_t = msg.clock.sec + msg.clock.nanosec * 1e-9

    def _on_ee(self, msg: PoseStamped) -> None:
        self.ee = msg

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=2.0)
        self.node.destroy_node()
        rclpy.shutdown(context=self.ctx)

    def sim_time(self) -> float:
        return self.clock_t

    def wait(self, pred, timeout: float, what: str) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if pred():
                return
            time.sleep(0.05)
        raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")

    def call(self, cli, req, timeout: float):
        if not cli.wait_for_service(timeout_sec=timeout):
            raise TimeoutError(f"service {cli.srv_name} not available after {timeout:.0f} s (is `vidplan up sim` "
                               "running?)")
        fut = cli.call_async(req)
        self.wait(fut.done, timeout, f"an answer from {cli.srv_name}")
        return fut.result()

    def reset(self, seed: int, instruction: str, timeout: float) -> dict:
        with self.lock:
            n = len(self.scenes)
        res = self.call(self.reset_cli, SetInstruction.Request(instruction=instruction, scene_seed=seed), timeout)
        if not res.success:
            raise RuntimeError(f"/sim/reset refused: {res.message}")
        self.wait(lambda: len(self.scenes) > n, timeout, "/sim/scene after the reset")
        return self.scenes[-1]

    def execute(self, actions: np.ndarray, timeout: float, time_scale: float, last: bool) -> ExecuteChunk.Result:
        chunk = EEChunk.from_actions(actions, dt=1.0 / CONTROL_RATE_HZ)
        msg = chunk_to_msg(chunk, PlanChunk, "panda_link0", sec_to_stamp(self.clock_t))
        goal = ExecuteChunk.Goal(chunk=msg, out_of_limits_policy=ExecuteChunk.Goal.OUT_OF_LIMITS_REJECT,
                                 max_steps=0, time_scale=float(time_scale), wait_for_settle=bool(last))
        fut = self.action.send_goal_async(goal, feedback_callback=lambda fb: self.feedback.append(
            float(fb.feedback.position_error)))
        self.wait(fut.done, timeout, "the executor to accept the goal")
        handle = fut.result()
        if not handle.accepted:
            raise RuntimeError("the executor did not accept the ExecuteChunk goal")
        rfut = handle.get_result_async()
        self.wait(rfut.done, timeout, "the chunk's result")
        return rfut.result().result


def _observation(scene: dict, ee: PoseStamped) -> SceneObservation:
    p, q = ee.pose.position, ee.pose.orientation
    euler = Rotation.from_quat([q.x, q.y, q.z, q.w]).as_euler(EULER_SEQ)
    return SceneObservation(
        objects={k: np.asarray(v, float) for k, v in scene["objects"].items()},
        object_sizes={k: (float(v[0]), float(v[1])) for k, v in scene["sizes"].items()},
        bowl_pos=np.asarray(scene["bowl"], float),
        ee_action=np.array([p.x, p.y, p.z, *euler, 0.0]))


def run_scripted_demo(scene_seed: int = 0, instruction: str = "", chunk_steps: int = 15, time_scale: float = 0.0,
                      settle_s: float = 1.0, timeout: float = 60.0, noise_std: float = 0.0,
                      log=print) -> DemoResult:
    """Run one scripted episode through /sim/reset, the executor's action and /sim/task_success.

    Args:
        scene_seed: scene seed for /sim/reset.
        instruction: task; "" = "put the <seed's target object> in the bowl" (a pick-and-place).
        chunk_steps: 15 Hz steps per ExecuteChunk goal.
        time_scale: executor time scale (0 = its default).
        settle_s: sim seconds to wait after the last chunk before asking for success.
        timeout: seconds to wait for each service / action / topic.
        noise_std: expert action noise (position and rotation std, m / rad).
        log: progress printer (``print`` by default; pass ``lambda *_: None`` for silence).
    """
    if chunk_steps < 1:
        raise ValueError(f"chunk_steps must be >= 1, got {chunk_steps}")
    t_wall = time.monotonic()
    cl = _Client()
    try:
        log("[demo] waiting for the sim (/sim/reset) and the executor (/vidplan/execute_chunk) ...")
        if not cl.action.wait_for_server(timeout_sec=timeout):
            raise TimeoutError(f"executor action /vidplan/execute_chunk not available after {timeout:.0f} s (is the "
                               "executor running? `vidplan up sim planner:=false`)")
        scene = cl.reset(scene_seed, instruction.strip(), timeout)
        if not instruction.strip():
            t = parse_instruction(scene["instruction"])
            put = Task("put", t.colour, t.shape).instruction
            if put != scene["instruction"]:
                scene = cl.reset(scene_seed, put, timeout)
        task = parse_instruction(scene["instruction"])
        stamp0 = scene["stamp"]
        # A /clock after the reset (and never time 0, which the executor reads as "unstamped").
        cl.wait(lambda: cl.sim_time() > max(stamp0, 0.0), timeout, "/clock after the reset")
        t_sim0 = cl.sim_time()
        cl.wait(lambda: cl.ee is not None and cl.ee.header.stamp.sec + cl.ee.header.stamp.nanosec * 1e-9 >= stamp0,
                timeout, "/ee_pose after the reset")
        expert = ScriptedExpert(task, ExpertOptions(noise_std=[noise_std] * 6 + [0.0]))
        actions = expert.plan(_observation(scene, cl.ee))
        log(f"[demo] seed {scene_seed}: '{task.instruction}' — {len(actions)} steps in "
            f"{int(np.ceil(len(actions) / chunk_steps))} chunks of ≤ {chunk_steps}")
        executed, statuses, results = 0, [], []
        for i in range(0, len(actions), chunk_steps):
            last = i + chunk_steps >= len(actions)
            r = cl.execute(actions[i:i + chunk_steps], timeout, time_scale, last)
            statuses.append(STATUS.get(r.status, str(r.status)))
            results.append(r)
            executed += int(r.steps_executed)
            if r.status != ExecuteChunk.Result.STATUS_SUCCEEDED:
                log(f"[demo] chunk {len(results)} {statuses[-1]}: {r.reason}")
                break
        t_end = cl.sim_time() + settle_s
        cl.wait(lambda: cl.sim_time() >= t_end, timeout, "the sim clock (settling)")
        res = cl.call(cl.success_cli, Trigger.Request(), timeout)
        fb = np.asarray(cl.feedback) if cl.feedback else np.array([0.0])
        last_r = results[-1]
        out = DemoResult(
            success=bool(res.success), message=res.message, instruction=task.instruction, scene_seed=scene_seed,
            steps_planned=len(actions), steps_executed=executed, chunks=len(results), chunk_status=statuses,
            mean_tracking_error_m=float(np.nanmean(fb)), max_tracking_error_m=float(np.nanmax(fb)),
            final_position_error_m=float(last_r.final_position_error),
            final_orientation_error_rad=float(last_r.final_orientation_error),
            wall_time_s=time.monotonic() - t_wall, sim_time_s=cl.sim_time() - t_sim0)
        log(f"[demo] {'SUCCESS' if out.success else 'FAILURE'}: {out.message}")
        log(f"[demo] steps {out.steps_executed}/{out.steps_planned} in {out.chunks} chunks; tracking error mean "
            f"{out.mean_tracking_error_m * 1e3:.1f} mm, max {out.max_tracking_error_m * 1e3:.1f} mm; final "
            f"{out.final_position_error_m * 1e3:.1f} mm / {np.degrees(out.final_orientation_error_rad):.2f}°; "
            f"{out.sim_time_s:.1f} s sim time, {out.wall_time_s:.1f} s wall")
        return out
    finally:
        cl.close()
