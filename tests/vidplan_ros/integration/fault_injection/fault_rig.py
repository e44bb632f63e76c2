"""Shared rig of the fault-injection tests (issue 13): real sim_node / executor_node / planner_node / recorder_node
processes over DDS on loopback (the run's own ROS_DOMAIN_ID, see tests/conftest.py) and a test-side observer node.

:class:`Stack` starts and stops named node processes (only its own PIDs; ``kill9`` sends SIGKILL to exactly one of
them); :class:`Observer` records what the nodes publish, stamped with this process's ``time.monotonic()`` at
receipt (CLOCK_MONOTONIC is system-wide on Linux, so other processes' monotonic stamps compare with it). The
fixtures built on them live in conftest.py next to this file.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from pathlib import Path

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from fuzz_strategies import FUZZ_FRAME
from geometry_msgs.msg import PoseStamped
from proc_helpers import ManagedProcess, node_executable, wait_for
from ros_spin import SpinningNode
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from vidplan_core.topics import INSTRUCTION_TOPIC
from vidplan_interfaces.action import ExecuteChunk
from vidplan_interfaces.msg import PlanChunk, PlanDiagnostics
from vidplan_ros.compat import ActionClient  # rclpy 9.1.2 loses goal responses (compat.py)
from vidplan_ros.conversions import pose_to_vec, stamp_to_sec
from vidplan_ros.qos import LATCHED

EXECUTOR = "vidplan executor"  # DiagnosticStatus.name of each node
PLANNER = "vidplan: planner_node"
TRAJECTORY_TOPIC = "/fr3_arm_controller/joint_trajectory"
JOINTS = tuple(f"panda_joint{i}" for i in range(1, 8))
NODE_ENV = {"OMP_NUM_THREADS": "1"}  # torch / onnxruntime threads would only fight over the 2 cores

# Tiny renders at the model rate: these tests are about processes and motion, and rendering is the sim's cost.
SIM_PARAMS = {"scene_seed": 0, "clutter": 0, "lockstep": True, "real_time_factor": 1.0, "camera_width": 32,
              "camera_height": 18, "camera_rate_hz": 5.0}
EXECUTOR_PARAMS = {"use_sim_time": True, "backend": "jtc", "joint_prefix": "panda", "base_frame": "panda_link0",
                   # the lock-step sim stalls now and then (wall time) when the 2 cores are busy
                   "joint_state_timeout_s": 2.0, "diagnostics_period_s": 0.2}
PLANNER_PARAMS = {"use_sim_time": True, "refine_iters": 0, "publish_debug": False, "camera_timeout_s": 1.0,
                  "state_timeout_s": 1.0, "clock_timeout_s": 1.0, "instruction": "put the red cube in the bowl"}


def ros_cmd(package: str, executable: str, params: dict[str, object], remaps: dict[str, str] | None = None
            ) -> list[str]:
    """Command line of a built node with ``-p name:=value`` parameters (bools as true/false)."""
    cmd = [node_executable(package, executable), "--ros-args"]
    for src, dst in (remaps or {}).items():
        cmd += ["-r", f"{src}:={dst}"]
    for k, v in params.items():
        value = str(v).lower() if isinstance(v, bool) else "''" if v == "" else v  # rcl rejects "name:="
        cmd += ["-p", f"{k}:={value}"]
    return cmd


def sim_cmd(**over: object) -> list[str]:
    return ros_cmd("vidplan_sim", "sim_node", {**SIM_PARAMS, **over})


def executor_cmd(**over: object) -> list[str]:
    return ros_cmd("vidplan_ros", "executor_node", {**EXECUTOR_PARAMS, **over})


def planner_cmd(model_dir: Path, instruction_topic: str | None = None, **over: object) -> list[str]:
    """planner_node on ``model_dir``; with ``instruction_topic`` it listens there instead of on /vidplan/instruction
    (where the sim publishes its latched instruction) and starts idle (no instruction), so it can load and collect
    history early and start planning when an instruction is published there (:meth:`Observer.set_instruction`). Its
    deprecated /vidplan/task subscription stays as it is: nothing in these tests publishes there."""
    if instruction_topic is None:
        return ros_cmd("vidplan_ros", "planner_node", {**PLANNER_PARAMS, "model_dir": str(model_dir), **over})
    return ros_cmd("vidplan_ros", "planner_node", {**PLANNER_PARAMS, "model_dir": str(model_dir), "instruction": "",
                                                   **over}, {INSTRUCTION_TOPIC: instruction_topic})


def kv(status: DiagnosticStatus) -> dict[str, str]:
    """The key/value pairs of a diagnostic status."""
    return {v.key: v.value for v in status.values}


def level(status: DiagnosticStatus) -> int:
    """DiagnosticStatus.level as an int (0 OK, 1 WARN, 2 ERROR, 3 STALE; rclpy gives a byte)."""
    lv = status.level
    return lv[0] if isinstance(lv, bytes) else int(lv)


class Observer(SpinningNode):
    """Test-side node: records joint states (the sim's, not the fuzzer's), trajectories, plans, diagnostics and
    /clock; publishes estop / plans; ExecuteChunk action and reset_estop clients. All records are
    ``(time.monotonic() at receipt, message)``."""

    def __init__(self, name: str = "fault_injection_observer") -> None:
        super().__init__(name)
        n = self.node
        self.joints: deque[tuple[float, float, np.ndarray]] = deque(maxlen=20000)  # (mono, stamp [s], q (7,))
        self.ee: deque[tuple[float, np.ndarray]] = deque(maxlen=5000)
        self.trajs: list[tuple[float, JointTrajectory]] = []
        self.plans: list[tuple[float, PlanChunk]] = []
        self.plan_diags: list[tuple[float, PlanDiagnostics]] = []
        self.diags: dict[str, list[tuple[float, DiagnosticStatus]]] = defaultdict(list)
        self.sim_time = 0.0
        self._lock = threading.Lock()
        n.create_subscription(JointState, "/joint_states", self._on_joints, 200)
        n.create_subscription(PoseStamped, "/ee_pose", self._on_ee, 50)
        n.create_subscription(Clock, "/clock", self._on_clock, 50)
        n.create_subscription(JointTrajectory, TRAJECTORY_TOPIC, self._rec(self.trajs), 1000)
        n.create_subscription(PlanChunk, "/vidplan/plan", self._rec(self.plans), 100)
        n.create_subscription(PlanDiagnostics, "/vidplan/plan_diagnostics", self._rec(self.plan_diags), 100)
        n.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 100)
        self.estop_pub = n.create_publisher(Bool, "/vidplan/estop", LATCHED)
        self.plan_pub = n.create_publisher(PlanChunk, "/vidplan/plan", 10)
        self.action = ActionClient(n, ExecuteChunk, "/vidplan/execute_chunk")
        self.reset = n.create_client(Trigger, "/vidplan/reset_estop")
        self._instruction_pubs: dict[str, object] = {}
        self.start_spinning()

    def _rec(self, into: list) -> Callable:
        return lambda msg: into.append((time.monotonic(), msg))

    def _on_joints(self, msg: JointState) -> None:
        if msg.header.frame_id == FUZZ_FRAME or not all(j in msg.name for j in JOINTS):
            return
        try:
            q = np.array([msg.position[list(msg.name).index(j)] for j in JOINTS])
        except IndexError:
            return
        self.joints.append((time.monotonic(), stamp_to_sec(msg.header.stamp), q))

    def _on_ee(self, msg: PoseStamped) -> None:
        if msg.header.frame_id != FUZZ_FRAME:
            self.ee.append((time.monotonic(), pose_to_vec(msg.pose)))

    def _on_clock(self, msg: Clock) -> None:
        self.sim_time = stamp_to_sec(msg.clock)

    def _on_diag(self, msg: DiagnosticArray) -> None:
        t = time.monotonic()
        for st in msg.status:
            self.diags[st.name].append((t, st))

    def set_instruction(self, topic: str, text: str) -> None:
        """Publish the instruction ``text`` (latched) on a planner's own instruction topic (see :func:`planner_cmd`)."""
        if topic not in self._instruction_pubs:
            self._instruction_pubs[topic] = self.node.create_publisher(String, topic, LATCHED)
        self._instruction_pubs[topic].publish(String(data=text))

    # ------------------------------------------------------------------ queries
    def status(self, name: str, since: float = -np.inf) -> DiagnosticStatus | None:
        """Latest diagnostic status of node ``name`` received after ``since`` (monotonic), or None."""
        recs = [s for t, s in list(self.diags.get(name, [])) if t > since]
        return recs[-1] if recs else None

    def statuses(self, name: str, since: float = -np.inf, until: float = np.inf) -> list[DiagnosticStatus]:
        return [s for t, s in list(self.diags.get(name, [])) if since < t <= until]

    def trajectories(self, since: float = -np.inf, until: float = np.inf, min_points: int = 1
                     ) -> list[tuple[float, JointTrajectory]]:
        return [(t, m) for t, m in list(self.trajs) if since < t <= until and len(m.points) >= min_points]

    def joints_between(self, since: float, until: float = np.inf) -> np.ndarray:
        """(N, 7) joint positions of the sim's arm received in (since, until]."""
        qs = [q for t, _s, q in list(self.joints) if since < t <= until]
        return np.array(qs).reshape(-1, 7)

    def joints_sim(self, since: float, until: float = np.inf) -> tuple[np.ndarray, np.ndarray]:
        """Sim-time stamps (N,) [s] and joint positions (N, 7) of the sim's arm stamped in (since, until] (sim
        time: independent of how late this process received them)."""
        recs = [(s, q) for _t, s, q in list(self.joints) if since < s <= until]
        return np.array([s for s, _q in recs]), np.array([q for _s, q in recs]).reshape(-1, 7)

    def q(self) -> np.ndarray:
        return self.joints[-1][2].copy()

    def close(self, join_timeout: float = 10.0) -> None:  # the fault rig loads the machine more than most
        super().close(join_timeout)


def joint_span(qs: np.ndarray) -> float:
    """Largest range [rad] any joint covered over the samples (0 for fewer than 2)."""
    return float(np.max(qs.max(axis=0) - qs.min(axis=0))) if len(qs) >= 2 else 0.0


class Stack:
    """Named node processes of one test module, each in its own process group with its log in ``logs``."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.procs: dict[str, ManagedProcess] = {}

    def start(self, name: str, cmd: list[str], **kw) -> ManagedProcess:
        old = self.procs.get(name)
        if old is not None:
            old.stop()
        i = sum(1 for p in self.logs.glob(f"{name}*.log"))
        proc = ManagedProcess(cmd, self.logs / f"{name}{'' if i == 0 else i}.log", env={**NODE_ENV, **kw})
        self.procs[name] = proc
        return proc

    def kill9(self, name: str) -> float:
        """SIGKILL exactly this node's process (no cleanup, as a crash or the OOM killer would); returns the
        monotonic time it was sent."""
        proc = self.procs[name]
        t = time.monotonic()
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(10) == -signal.SIGKILL, f"{name} did not die of SIGKILL"
        return t

    def alive(self, name: str) -> bool:
        return name in self.procs and self.procs[name].alive()

    def output(self, name: str, tail: int | None = 3000) -> str:
        """The last ``tail`` characters (all when None) a node printed."""
        if name not in self.procs:
            return f"({name} not started)"
        out = self.procs[name].output()
        return out if tail is None else out[-tail:]

    def outputs(self, tail: int = 2000) -> str:
        return "\n".join(f"--- {n} ---\n{p.output()[-tail:]}" for n, p in self.procs.items())

    def stop(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc is not None:
            proc.stop()

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name)


def wait_executor_ready(obs: Observer, stack: Stack, timeout: float = 90.0) -> None:
    """The executor reports idle with fresh joint states (the action server answers before it has any)."""
    assert obs.action.wait_for_server(timeout_sec=timeout), stack.outputs()
    assert wait_for(lambda: len(obs.joints) > 20 and obs.sim_time > 0.5, timeout), stack.outputs()
    assert wait_for(lambda: (s := obs.status(EXECUTOR)) is not None and s.message == "idle", timeout), (
        obs.status(EXECUTOR), stack.outputs())
