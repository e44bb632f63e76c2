"""The execution core gives identical joint plans to what the executor node publishes for the same chunk and state.

A real executor_node process (jtc backend, default limits, policy and IK options) on loopback DDS gets /joint_states
and chunks from this test process; every JointTrajectory it publishes is compared point by point with
:func:`vidplan_core.execution.plan_execution` run here on the same chunk (the message's own values) and joint state.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from proc_helpers import node_executable, started, wait_for
from test_executor import HOME_EE, HOME_Q, KIN, Harness, rig_with_arm_at_home

from vidplan_core.execution import IKOptions, JointPlan, plan_execution
from vidplan_core.safety import SafetyLimits
from vidplan_core.spaces import EEChunk
from vidplan_interfaces.action import ExecuteChunk
from vidplan_interfaces.msg import PlanChunk
from vidplan_ros.conversions import chunk_to_msg

# Timing-sensitive on 2 shared cores (a chunk older than max_plan_age_s on arrival is refused): rerun a failure up to
# twice; reruns are printed in the summary ("R").
pytestmark = pytest.mark.flaky(reruns=2, reruns_delay=2)

R = ExecuteChunk.Result
BASE = "panda_link0"


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    # only the monitoring is relaxed (nobody moves the arm here); limits, policy and IK options are the defaults
    yield from rig_with_arm_at_home(tmp_path_factory, "execution_core", "joint_state_timeout_s:=2.0",
                                    "path_position_tolerance:=0.0")


def _msg(rig: Harness, q: np.ndarray, offsets, dt: float, euler=None, gripper=None, plan_id: int = 1) -> PlanChunk:
    """A PlanChunk of EE targets at ``offsets`` [m] from the EE pose of ``q``, stamped now."""
    ee = KIN.fk_action(q, euler_center=[np.pi, 0, 0])
    offsets = np.asarray(offsets, float).reshape(-1, 3)
    h = len(offsets)
    ch = EEChunk(position=ee[:3] + offsets, euler=np.tile(ee[3:6], (h, 1)) if euler is None else euler,
                 gripper=np.linspace(0, 1, h) if gripper is None else gripper, dt=dt)
    return chunk_to_msg(ch, PlanChunk, BASE, rig.node.get_clock().now().to_msg(), plan_id)


def _as_received(msg: PlanChunk) -> dict:
    """The chunk as the node reads it off the wire (the message's own float64 poses, float32 gripper, dt)."""
    return {"position": np.array([[p.position.x, p.position.y, p.position.z] for p in msg.poses]),
            "quaternion": np.array([[p.orientation.x, p.orientation.y, p.orientation.z, p.orientation.w]
                                    for p in msg.poses]),
            "gripper": np.asarray(msg.gripper, dtype=np.float64), "dt": float(msg.dt)}


def _published(rig: Harness, since: int):
    assert wait_for(lambda: len(rig.trajs) > since, 10), "the executor published no trajectory"
    traj = rig.trajs[since][1]
    qs = np.array([p.positions for p in traj.points], dtype=np.float64)
    times = np.array([p.time_from_start.sec + p.time_from_start.nanosec * 1e-9 for p in traj.points])
    return traj, qs, times


def _assert_same(rig: Harness, since: int, msg: PlanChunk, q: np.ndarray, policy: str = "reject",
                 time_scale: float = 1.0, max_steps: int = 0) -> JointPlan:
    traj, qs, times = _published(rig, since)
    plan = plan_execution(_as_received(msg), q, KIN, SafetyLimits(), policy, IKOptions(), time_scale=time_scale,
                          max_steps=max_steps, age_s=0.0, frame_id=msg.header.frame_id, base_frame=BASE)
    assert isinstance(plan, JointPlan), plan
    assert traj.joint_names == [f"panda_joint{i}" for i in range(1, 8)]
    assert qs.shape == plan.positions.shape, (qs.shape, plan.positions.shape)
    np.testing.assert_allclose(qs, plan.positions, rtol=0, atol=1e-9)  # [rad]
    np.testing.assert_allclose(times, plan.times, rtol=0, atol=1e-6)  # [s]
    return plan


def _run_goal(rig: Harness, msg: PlanChunk, **goal) -> tuple[int, object]:
    n0 = len(rig.trajs)
    res = rig.result(rig.send(msg, **goal), timeout=20)
    return n0, res


def test_topic_chunk_from_home(rig):
    rig.q = HOME_Q.copy()
    time.sleep(0.2)
    msg = _msg(rig, rig.q, [[0.01 * (i + 1), 0.005 * (i + 1), -0.004 * (i + 1)] for i in range(5)], dt=0.1,
               plan_id=7)
    n0 = len(rig.trajs)
    rig.plan_pub.publish(msg)
    plan = _assert_same(rig, n0, msg, rig.q)
    assert len(plan.positions) == 5 and plan.notes == []


def test_goal_with_time_scale_max_steps_and_clipping_from_another_state(rig):
    q = HOME_Q + np.array([0.3, 0.2, -0.1, 0.25, 0.1, -0.2, 0.3])
    rig.q = q
    time.sleep(0.3)  # the node must have this joint state before the chunk arrives
    # down 14 cm per step, 4 of 6 steps executed: step 3 leaves the workspace (clipped to z = 0.02 m) and some steps
    # are too fast for the joints even 1.05x slower (the whole chunk is slowed down further)
    msg = _msg(rig, q, [[0.005 * (i + 1), 0.0, -0.14 * (i + 1)] for i in range(6)], dt=0.2, plan_id=8)
    n0, res = _run_goal(rig, msg, policy=ExecuteChunk.Goal.OUT_OF_LIMITS_CLIP, time_scale=1.05, max_steps=4)
    assert res.status == R.STATUS_SUCCEEDED and "clipped" in res.reason, res.reason
    plan = _assert_same(rig, n0, msg, q, policy="clip", time_scale=1.05, max_steps=4)
    assert len(plan.positions) == 4 and {v.rule for v in plan.notes} == {"workspace", "joint_velocity"}
    assert plan.times[0] > 0.2 * 1.05 + 1e-3  # slowed down beyond the time scale
    rig.q = HOME_Q.copy()


def test_ik_truncated_chunk(rig):
    rig.q = HOME_Q.copy()
    time.sleep(0.2)
    target = np.array([0.8, 0.45, 0.02]) - HOME_EE[:3]
    euler = np.array([HOME_EE[3:6], [0.0, 0.0, 0.0]])
    msg = _msg(rig, rig.q, [[0.01, 0, 0], target], dt=2.0, euler=euler, gripper=np.zeros(2), plan_id=9)
    n0, res = _run_goal(rig, msg)
    assert res.status == R.STATUS_ABORTED and "IK unreachable at step 1" in res.reason, res.reason
    plan = _assert_same(rig, n0, msg, rig.q)
    assert plan.truncated_reason == res.reason


def test_bad_ik_parameter_exits_with_code_2(tmp_path):
    # the node's ik_* parameters become one IKOptions; a bad value is named by its parameter, not by the field
    cmd = [node_executable("vidplan_ros", "executor_node"), "--ros-args", "-p", "ik_max_iterations:=0"]
    with started(cmd, tmp_path / "bad_ik.log") as proc:
        assert proc.wait(30) == 2, proc.output()
        assert "parameter ik_max_iterations" in proc.output() and "got 0" in proc.output(), proc.output()
