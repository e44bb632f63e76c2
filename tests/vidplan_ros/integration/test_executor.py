"""executor_node as a real process on loopback DDS, talking to this test process.

This test process plays the robot's state side only: it publishes /joint_states (a robot standing at the
"ready" pose) and records what the executor commands. Motion against a moving arm is tested with the MuJoCo sim in
test_executor_sim.py.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from proc_helpers import node_executable, started, wait_for
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from ros_spin import SpinningNode
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Float64
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from vidplan_core.kinematics import HOME_Q, PandaKinematics
from vidplan_core.spaces import EEChunk
from vidplan_interfaces.action import ExecuteChunk
from vidplan_interfaces.msg import PlanChunk
from vidplan_ros.compat import ActionClient  # rclpy 9.1.2 loses goal responses (compat.py)
from vidplan_ros.conversions import chunk_to_msg, sec_to_stamp

# Timing-sensitive on 2 shared cores (executor callbacks stall now and then, see the issue-3 note): rerun a failure
# up to twice; reruns are printed in the summary ("R"), so flakiness stays visible.
pytestmark = pytest.mark.flaky(reruns=2, reruns_delay=2)

R = ExecuteChunk.Result
TRAJ = "/fr3_arm_controller/joint_trajectory"
KIN = PandaKinematics()
HOME_EE = KIN.fk_action(HOME_Q, euler_center=[np.pi, 0, 0])


class Harness(SpinningNode):
    """Test-side node: joint-state publisher (switchable), recorders and the action client."""

    def __init__(self) -> None:
        super().__init__("executor_test_harness")
        n = self.node
        self.publish_joints = False
        self.q = HOME_Q.copy()
        self.trajs: list[tuple[float, JointTrajectory]] = []
        self.grippers: list[float] = []
        self.diags: list[DiagnosticArray] = []
        self.js_pub = n.create_publisher(JointState, "/joint_states", 10)
        self.plan_pub = n.create_publisher(PlanChunk, "/vidplan/plan", 10)
        self.estop_pub = n.create_publisher(Bool, "/vidplan/estop", QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL))
        n.create_subscription(JointTrajectory, TRAJ, lambda m: self.trajs.append((time.monotonic(), m)), 10)
        n.create_subscription(Float64, "/gripper/command", lambda m: self.grippers.append(m.data), 10)
        n.create_subscription(DiagnosticArray, "/diagnostics", self.diags.append, 10)
        n.create_timer(0.02, self._tick)
        self.client = ActionClient(n, ExecuteChunk, "/vidplan/execute_chunk")
        self.reset = n.create_client(Trigger, "/vidplan/reset_estop")
        self.start_spinning()

    def _tick(self) -> None:
        if not self.publish_joints:
            return
        msg = JointState()
        msg.header.stamp = self.node.get_clock().now().to_msg()
        msg.name = [f"panda_joint{i}" for i in range(1, 8)] + ["panda_finger_joint1", "panda_finger_joint2"]
        msg.position = [float(x) for x in self.q] + [0.04, 0.04]
        self.js_pub.publish(msg)

    def chunk_msg(self, offsets, dt=0.1, euler=None, gripper=None, stamp=None, plan_id=1) -> PlanChunk:
        offsets = np.asarray(offsets, float).reshape(-1, 3)
        h = len(offsets)
        ch = EEChunk(position=HOME_EE[:3] + offsets,
                     euler=np.tile(HOME_EE[3:6], (h, 1)) if euler is None else euler,
                     gripper=np.linspace(0, 1, h) if gripper is None else gripper, dt=dt)
        st = self.node.get_clock().now().to_msg() if stamp is None else stamp
        return chunk_to_msg(ch, PlanChunk, "panda_link0", st, plan_id)

    def send(self, chunk: PlanChunk, policy=0, time_scale=0.0, max_steps=0, wait_for_settle=False,
             feedback=None):
        goal = ExecuteChunk.Goal(chunk=chunk, out_of_limits_policy=policy, time_scale=time_scale,
                                 max_steps=max_steps, wait_for_settle=wait_for_settle)
        fut = self.client.send_goal_async(goal, feedback_callback=feedback)
        assert wait_for(fut.done, 10)
        handle = fut.result()
        assert handle.accepted
        return handle

    def result(self, handle, timeout=10.0):
        fut = handle.get_result_async()
        assert wait_for(fut.done, timeout)
        return fut.result().result


def rig_with_arm_at_home(tmp_path_factory, name: str, *params: str):
    """A module fixture's body: an executor node with ``params`` (``key:=value``) beside a :class:`Harness` that
    publishes joint states at the home pose once the executor serves its action; yields the harness (``.proc`` is
    the executor)."""
    h = Harness()
    cmd = [node_executable("vidplan_ros", "executor_node"), "--ros-args"]
    for p in params:
        cmd += ["-p", p]
    try:
        with started(cmd, tmp_path_factory.mktemp(name) / "executor.log") as proc:
            assert h.client.wait_for_server(timeout_sec=30), proc.output()
            h.publish_joints = True
            assert wait_for(lambda: h.node.count_subscribers("/joint_states") >= 1, 10)
            time.sleep(0.5)
            h.proc = proc
            yield h
    finally:
        h.close()


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    h = Harness()
    cmd = [node_executable("vidplan_ros", "executor_node"), "--ros-args", "-p", "joint_state_timeout_s:=2.0",
           "-p", "diagnostics_period_s:=0.2",
           # nobody moves the arm in this rig (joint states stay put), so the path-deviation abort is off here
           "-p", "path_position_tolerance:=0.0"]
    log = tmp_path_factory.mktemp("executor") / "executor.log"
    try:
        with started(cmd, log) as proc:
            assert h.client.wait_for_server(timeout_sec=30), proc.output()
            h.proc = proc
            yield h
    finally:
        h.close()


def _new_trajs(h, since: int, wait: float = 0.5) -> list[JointTrajectory]:
    time.sleep(wait)
    return [m for _, m in h.trajs[since:]]


def test_refuses_without_and_with_stale_joint_states(rig):
    rig.publish_joints = False
    n0 = len(rig.trajs)
    res = rig.result(rig.send(rig.chunk_msg([[0.01, 0, 0]])))
    assert res.status == R.STATUS_REJECTED and "no joint states" in res.reason, res.reason
    rig.publish_joints = True
    assert wait_for(lambda: rig.result(rig.send(rig.chunk_msg([[0.0, 0, 0]]))).status == R.STATUS_SUCCEEDED, 10)
    rig.publish_joints = False
    time.sleep(2.5)  # > joint_state_timeout_s (2 s: loose enough for a loaded 2-core CI machine)
    res = rig.result(rig.send(rig.chunk_msg([[0.01, 0, 0]])))
    assert res.status == R.STATUS_REJECTED and "stale" in res.reason, res.reason
    rig.publish_joints = True
    time.sleep(0.2)
    assert all(len(m.points) for m in _new_trajs(rig, n0, 0.0))


def test_out_of_workspace_chunk_rejected_with_reason_and_nothing_moves(rig):
    rig.publish_joints = True
    time.sleep(0.1)
    n0, d0 = len(rig.trajs), len(rig.diags)
    # 5 steps going down 12 cm per step: the last ones are below the table (z < 0.02 m)
    res = rig.result(rig.send(rig.chunk_msg([[0, 0, -0.12 * (i + 1)] for i in range(5)], dt=0.2)))
    assert res.status == R.STATUS_REJECTED
    assert "workspace" in res.reason and "z" in res.reason and res.steps_executed == 0, res.reason
    assert _new_trajs(rig, n0) == []  # nothing commanded
    # the same reason is on /diagnostics
    assert wait_for(lambda: any("workspace" in kv.value for d in rig.diags[d0:] for s in d.status
                                for kv in s.values if kv.key == "last_rejection_reason"), 5)
    # clip policy: the same chunk is executed, clipped into the box
    res = rig.result(rig.send(rig.chunk_msg([[0, 0, -0.12 * (i + 1)] for i in range(5)], dt=0.2), policy=1))
    assert res.status == R.STATUS_SUCCEEDED and "clipped" in res.reason, res.reason
    traj = _new_trajs(rig, n0, 0.0)[-1]
    z = [KIN.fk(np.array(p.positions))[2, 3] for p in traj.points]
    assert min(z) == pytest.approx(0.02, abs=1e-3)


def test_a_burst_of_goals_is_answered_in_full(rig):
    """Goal requests sent back to back all get a response (here: a refusal). With rclpy's default action-service
    QoS (keep the last 10 requests) the server's reader overwrote the oldest while its executor was busy: 12 of 30
    and 22 of 60 were answered, and each lost one left its client waiting forever (vidplan_ros.qos)."""
    rig.publish_joints = True
    n0 = len(rig.trajs)
    futs = []
    for i in range(60):
        bad = rig.chunk_msg([[0.01, 0, 0], [0.02, 0, 0]], gripper=[1.5, 0.0], plan_id=1000 + i)  # gripper > 1
        futs.append(rig.client.send_goal_async(ExecuteChunk.Goal(chunk=bad)))
    wait_for(lambda: all(f.done() for f in futs), 30)
    assert sum(f.done() for f in futs) == len(futs), f"{sum(f.done() for f in futs)} of {len(futs)} goals answered"
    results = [rig.result(f.result()) for f in futs]
    # refused for the gripper value (or, as the module's first test, for joint states not received yet)
    assert all(r.status == R.STATUS_REJECTED and r.reason.strip() for r in results), {r.reason for r in results}
    assert _new_trajs(rig, n0) == []


def test_execute_chunk_round_trip(rig):
    rig.publish_joints = True
    time.sleep(0.1)
    n0, g0 = len(rig.trajs), len(rig.grippers)
    feedback = []
    offsets = [[0.01 * (i + 1), 0.005 * (i + 1), 0.0] for i in range(5)]
    t_send = time.monotonic()
    handle = rig.send(rig.chunk_msg(offsets, dt=0.1, plan_id=42), time_scale=2.0,
                      feedback=lambda fb: feedback.append(fb.feedback))
    res = rig.result(handle)
    assert res.status == R.STATUS_SUCCEEDED, res.reason
    assert res.steps_executed == 5
    # the joint states stay at home (nobody moves the arm here), so the final error is the chunk's reach
    assert res.final_position_error == pytest.approx(np.linalg.norm(offsets[-1]), abs=2e-3)
    t_traj, traj = rig.trajs[n0]
    assert t_traj - t_send < 1.0
    assert traj.joint_names == [f"panda_joint{i}" for i in range(1, 8)]
    times = [p.time_from_start.sec + p.time_from_start.nanosec * 1e-9 for p in traj.points]
    np.testing.assert_allclose(times, 0.2 * np.arange(1, 6), atol=1e-6)  # (i+1)·dt·time_scale
    for p, off in zip(traj.points, offsets, strict=True):
        T = KIN.fk(np.array(p.positions))
        np.testing.assert_allclose(T[:3, 3], HOME_EE[:3] + off, atol=1e-3)
    assert feedback and feedback[-1].step_index == 4
    assert [f.step_index for f in feedback] == sorted(f.step_index for f in feedback)
    assert max(f.position_error for f in feedback) > 0.01  # tracking error is measured, not assumed
    assert wait_for(lambda: len(rig.grippers) - g0 >= 5, 2)
    np.testing.assert_allclose(rig.grippers[g0:g0 + 5], np.linspace(0, 1, 5), atol=1e-6)
    # the /vidplan/plan topic path commands the same way; a newer chunk replaces the current one
    n1 = len(rig.trajs)
    rig.plan_pub.publish(rig.chunk_msg(offsets, dt=0.1, plan_id=43))
    assert wait_for(lambda: len(rig.trajs) > n1, 5)
    assert len(rig.trajs[n1][1].points) == 5


def test_stale_plan_and_unreachable_ik(rig):
    rig.publish_joints = True
    time.sleep(0.1)
    old = sec_to_stamp(rig.node.get_clock().now().nanoseconds * 1e-9 - 5.0)
    res = rig.result(rig.send(rig.chunk_msg([[0.01, 0, 0]], stamp=old)))
    assert res.status == R.STATUS_REJECTED and "old" in res.reason, res.reason
    # step 1 asks for the far low corner of the box with the gripper pointing up: within the workspace and the
    # (long-dt) step limits, but beyond the arm's reach → execute step 0, stop, report
    n0 = len(rig.trajs)
    target = np.array([0.8, 0.45, 0.02]) - HOME_EE[:3]
    euler = np.array([HOME_EE[3:6], [0.0, 0.0, 0.0]])
    res = rig.result(rig.send(rig.chunk_msg([[0.01, 0, 0], target], dt=2.0, euler=euler, gripper=np.zeros(2))),
                     timeout=15)
    assert res.status == R.STATUS_ABORTED and "IK unreachable at step 1" in res.reason, res.reason
    assert res.steps_executed == 1
    assert len(_new_trajs(rig, n0, 0.0)[0].points) == 1


def test_cancel_holds(rig):
    rig.publish_joints = True
    time.sleep(0.1)
    handle = rig.send(rig.chunk_msg([[0.01 * (i + 1), 0, 0] for i in range(5)], dt=0.5))
    time.sleep(0.4)
    n0 = len(rig.trajs)
    assert wait_for(handle.cancel_goal_async().done, 5)
    res = rig.result(handle)
    assert res.status == R.STATUS_CANCELED, res.reason
    assert wait_for(lambda: len(rig.trajs) > n0, 2)
    hold = rig.trajs[n0][1]
    assert len(hold.points) == 1 and np.allclose(hold.points[0].positions, HOME_Q)


def test_estop_latches_until_reset(rig):
    rig.publish_joints = True
    time.sleep(0.1)
    handle = rig.send(rig.chunk_msg([[0.01 * (i + 1), 0, 0] for i in range(5)], dt=0.5))
    time.sleep(0.3)
    n0 = len(rig.trajs)
    rig.estop_pub.publish(Bool(data=True))
    res = rig.result(handle)
    assert res.status == R.STATUS_ESTOP, res.reason
    assert wait_for(lambda: len(rig.trajs) > n0, 2)
    hold = rig.trajs[n0][1]
    assert len(hold.points) == 1 and np.allclose(hold.points[0].positions, HOME_Q)
    # latched: a release message does not unlatch, new chunks are refused
    rig.estop_pub.publish(Bool(data=False))
    time.sleep(0.2)
    res = rig.result(rig.send(rig.chunk_msg([[0.01, 0, 0]])))
    assert res.status == R.STATUS_ESTOP and "reset_estop" in res.reason
    n1 = len(rig.trajs)
    rig.plan_pub.publish(rig.chunk_msg([[0.01, 0, 0]]))
    assert _new_trajs(rig, n1) == []
    # only the reset service releases it
    assert rig.reset.wait_for_service(timeout_sec=5)
    fut = rig.reset.call_async(Trigger.Request())
    assert wait_for(fut.done, 5) and fut.result().success
    res = rig.result(rig.send(rig.chunk_msg([[0.01, 0, 0]])))
    assert res.status == R.STATUS_SUCCEEDED, res.reason


def test_bad_parameters_exit_with_code_2(tmp_path):
    cmd = [node_executable("vidplan_ros", "executor_node"), "--ros-args", "-p", "backend:=bogus"]
    with started(cmd, tmp_path / "bad.log") as proc:
        assert proc.wait(30) == 2, proc.output()
        assert "backend must be one of" in proc.output()
    cmd = [node_executable("vidplan_ros", "executor_node"), "--ros-args", "-p", "workspace_min:=[0.9, 0.0, 0.0]"]
    with started(cmd, tmp_path / "bad2.log") as proc:
        assert proc.wait(30) == 2, proc.output()
        assert "workspace_min" in proc.output()
    # moveit_py is not installable here: the backend says so plainly instead of crashing
    cmd = [node_executable("vidplan_ros", "executor_node"), "--ros-args", "-p", "backend:=moveit_py"]
    with started(cmd, tmp_path / "bad3.log") as proc:
        assert proc.wait(30) == 2, proc.output()
        assert "moveit_py" in proc.output() and "not installed here" in proc.output()


def test_second_joint_state_publisher_is_reported(rig):
    # a second source of /joint_states (another sim, a bag replay, a robot on the same domain) is a misconfiguration
    # the executor cannot resolve: it must say so on /diagnostics
    def status() -> tuple[str, str]:
        for d in reversed(rig.diags):
            for st in d.status:
                if st.name == "vidplan executor":
                    vals = {kv.key: kv.value for kv in st.values}
                    return vals.get("joint_state_publishers", ""), st.message
        return "", ""

    rig.publish_joints = True
    assert wait_for(lambda: status()[0] == "1", 10), status()
    extra = rig.node.create_publisher(JointState, "/joint_states", 10)
    try:
        assert wait_for(lambda: status()[0] == "2", 10), status()
        assert "2 publishers on /joint_states" in status()[1], status()
    finally:
        rig.node.destroy_publisher(extra)
    assert wait_for(lambda: status()[0] == "1", 10), status()
