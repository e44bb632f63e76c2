"""sim_node (a real process over DDS) refuses JointTrajectories a JointTrajectoryController refuses (issue 13, item 9).

Before: a 1e6 rad target was accepted and MuJoCo drove the joint into its limit at full speed. Now the sim rejects it
with a reason (log + /diagnostics), the arm keeps holding, and valid trajectories still execute afterwards.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from proc_helpers import node_executable, started, wait_for
from ros_spin import SpinningNode
from sensor_msgs.msg import JointState
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from vidplan_sim.scene import HOME_Q

ARM = [f"panda_joint{i}" for i in range(1, 8)]


class Probe(SpinningNode):
    """Test-side node: /joint_states and the sim's /diagnostics in, JointTrajectory out."""

    def __init__(self) -> None:
        super().__init__("sim_traj_fault_probe")
        n = self.node
        self.lock = threading.Lock()
        self.js: list[tuple[float, np.ndarray]] = []  # (sim time [s], arm q)
        self.diag: dict[str, str] = {}
        n.create_subscription(JointState, "/joint_states", self._on_js, 10)
        n.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)
        self.pub = n.create_publisher(JointTrajectory, "/fr3_arm_controller/joint_trajectory", 10)
        self.start_spinning()

    def _on_js(self, m: JointState) -> None:
        q = np.array([m.position[m.name.index(j)] for j in ARM])
        with self.lock:
            self.js.append((m.header.stamp.sec + m.header.stamp.nanosec * 1e-9, q))
            del self.js[:-500]

    def _on_diag(self, m: DiagnosticArray) -> None:
        for st in m.status:
            if st.name == "vidplan_sim: sim_node":
                with self.lock:
                    self.diag = {kv.key: kv.value for kv in st.values}

    def q(self) -> np.ndarray:
        with self.lock:
            return self.js[-1][1].copy()

    def sim_time(self) -> float:
        with self.lock:
            return self.js[-1][0] if self.js else 0.0

    def qs_since(self, t0: float) -> np.ndarray:
        with self.lock:
            return np.array([q for t, q in self.js if t >= t0])

    def send(self, positions, t=1.0, names=ARM, velocities=None) -> None:
        msg = JointTrajectory()
        msg.joint_names = list(names)
        pt = JointTrajectoryPoint()
        pt.positions = [float(x) for x in positions]
        if velocities is not None:
            pt.velocities = [float(x) for x in velocities]
        pt.time_from_start.sec, pt.time_from_start.nanosec = int(t), round((t % 1) * 1e9)
        msg.points = [pt]
        self.pub.publish(msg)


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    log = tmp_path_factory.mktemp("sim_faults") / "sim_node.log"
    # small, slow cameras: this test is about the arm, and the machine is shared
    cmd = [node_executable("vidplan_sim", "sim_node"), "--ros-args", "-p", "scene_seed:=0", "-p", "clutter:=0",
           "-p", "camera_width:=64", "-p", "camera_height:=48", "-p", "camera_rate_hz:=5.0"]
    with started(cmd, log) as proc:
        probe = Probe()
        try:
            assert wait_for(lambda: len(probe.js) > 10 and probe.pub.get_subscription_count() > 0, 60.0), \
                f"sim_node did not come up; log:\n{proc.output()}"
            yield proc, probe
        finally:
            probe.close()


def _rejections(probe) -> int:
    with probe.lock:
        return int(probe.diag.get("rejected", -1))


def test_out_of_limit_target_rejected_and_arm_holds(sim):
    proc, probe = sim
    assert wait_for(lambda: np.abs(probe.q() - HOME_Q).max() < 5e-3, 20.0), probe.q()
    assert wait_for(lambda: _rejections(probe) >= 0, 10.0), "no sim_node /diagnostics"
    r0 = _rejections(probe)
    q_bad = HOME_Q.copy()
    q_bad[0] = 1e6
    t0 = probe.sim_time()
    probe.send(q_bad)
    assert wait_for(lambda: _rejections(probe) > r0, 10.0), f"not rejected; diag {probe.diag}"
    with probe.lock:
        reason = probe.diag["last_trajectory_rejection"]
    assert "panda_joint1" in reason and "1e+06" in reason and "outside its limits" in reason, reason
    assert wait_for(lambda: "rejected JointTrajectory" in proc.output() and "outside its limits" in proc.output(),
                    5.0), proc.output()[-2000:]
    # the arm keeps holding: over 1.5 s of sim time it never leaves home (the old sim swung joint 1 to its limit)
    assert wait_for(lambda: probe.sim_time() > t0 + 1.5, 20.0)
    moved = np.abs(probe.qs_since(t0) - HOME_Q).max()
    assert moved < 5e-3, f"arm moved {moved:.4f} rad after an out-of-limit trajectory"


def test_malformed_trajectories_rejected_and_valid_one_still_runs(sim):
    proc, probe = sim
    r0 = _rejections(probe)
    probe.send(HOME_Q[:6], names=ARM)  # names but too few positions
    assert wait_for(lambda: _rejections(probe) == r0 + 1, 10.0), probe.diag
    assert "6 positions for 7 joints" in probe.diag["last_trajectory_rejection"]
    q_nan = HOME_Q.copy()
    q_nan[4] = float("nan")
    probe.send(q_nan)
    assert wait_for(lambda: _rejections(probe) == r0 + 2, 10.0), probe.diag
    assert "non-finite position" in probe.diag["last_trajectory_rejection"]
    probe.send(HOME_Q + 0.1, velocities=[0.0] * 3)  # velocities for 3 of 7 joints
    assert wait_for(lambda: _rejections(probe) == r0 + 3, 10.0), probe.diag
    assert "3 velocities for 7 joints" in probe.diag["last_trajectory_rejection"]
    assert proc.alive()
    assert np.abs(probe.q() - HOME_Q).max() < 5e-3
    # a valid trajectory is executed
    goal = HOME_Q + np.array([0.2, -0.1, 0.0, 0.1, 0.0, 0.1, -0.2])
    probe.send(goal, t=0.5)
    assert wait_for(lambda: np.abs(probe.q() - goal).max() < 1e-2, 20.0), f"arm at {probe.q()}, goal {goal}"
    assert _rejections(probe) == r0 + 3
