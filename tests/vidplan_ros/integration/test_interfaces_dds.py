"""The built vidplan_interfaces travel between processes over DDS on loopback: PlanChunk round trip and an
ExecuteChunk goal with feedback, result and cancel."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest
from proc_helpers import node_executable, started, wait_for
from ros_spin import SpinningNode

from vidplan_core.spaces import EEChunk
from vidplan_interfaces.action import ExecuteChunk
from vidplan_interfaces.msg import PlanChunk, PlanDiagnostics
from vidplan_interfaces.srv import SetInstruction, SetTask
from vidplan_ros.compat import ActionClient  # rclpy 9.1.2 loses goal responses (compat.py)
from vidplan_ros.conversions import chunk_from_msg, chunk_to_msg

SCRIPT = Path(__file__).parent / "scripts" / "chunk_echo_server.py"


@pytest.fixture
def ros_node():
    with SpinningNode("interfaces_test_client", period=0.05, start=True) as s:
        yield s.node


def _chunk(h: int = 5) -> EEChunk:
    pos = np.stack([np.linspace(0.4, 0.5, h), np.zeros(h), np.full(h, 0.3)], 1)
    return EEChunk(position=pos, euler=np.tile([np.pi - 0.1, 0.05, 0.2], (h, 1)), gripper=np.linspace(0, 1, h),
                   dt=0.2, uncertainty=np.full(h, 0.25), value=np.linspace(0.1, 0.9, h))


def test_interface_definitions_have_documented_fields():
    fields = PlanChunk.get_fields_and_field_types()
    for f in ("header", "plan_id", "dt", "poses", "gripper", "uncertainty", "value", "instruction"):
        assert f in fields
    assert "stage_seconds" in PlanDiagnostics.get_fields_and_field_types()
    request = {"instruction": "string", "scene_seed": "int64"}
    response = {"success": "boolean", "message": "string"}
    for srv in (SetInstruction, SetTask):  # SetTask: SetInstruction's deprecated old name, the same fields
        assert srv.Request.get_fields_and_field_types() == request, srv
        assert srv.Response.get_fields_and_field_types() == response, srv


def test_plan_chunk_round_trip_between_processes(tmp_path, ros_node):
    received: list[PlanChunk] = []
    ros_node.create_subscription(PlanChunk, "/test/plan_out", received.append, 10)
    pub = ros_node.create_publisher(PlanChunk, "/test/plan_in", 10)
    sent = chunk_to_msg(_chunk(), PlanChunk, "panda_link0", ros_node.get_clock().now().to_msg(), 7,
                        "put the red cube in the bowl")
    with started([sys.executable, str(SCRIPT)], tmp_path / "server.log") as server:
        assert wait_for(lambda: pub.get_subscription_count() > 0, 20), server.output()
        assert wait_for(lambda: (pub.publish(sent), bool(received))[1], 20, interval=0.2), server.output()
    msg = received[0]
    assert msg.plan_id == 1007 and msg.instruction == "put the red cube in the bowl"
    back = chunk_from_msg(msg)
    ref = _chunk()
    assert np.allclose(back.position, ref.position) and np.allclose(back.gripper, ref.gripper, atol=1e-6)
    # Euler angles survive the quaternion round trip (wrapped into (−π, π]).
    assert np.allclose(np.cos(back.euler), np.cos(ref.euler), atol=1e-9)
    assert np.allclose(back.value, ref.value, atol=1e-6)


def test_execute_chunk_feedback_result_and_cancel(tmp_path, ros_node):
    client = ActionClient(ros_node, ExecuteChunk, "/test/execute_chunk")
    with started([sys.executable, str(SCRIPT)], tmp_path / "server.log") as server:
        assert client.wait_for_server(timeout_sec=20), server.output()
        # 1. a full goal: feedback for every step, then the result.
        feedback = []
        goal = ExecuteChunk.Goal(chunk=chunk_to_msg(_chunk(5), PlanChunk, "panda_link0",
                                                     ros_node.get_clock().now().to_msg(), 1, "touch"))
        fut = client.send_goal_async(goal, feedback_callback=lambda fb: feedback.append(fb.feedback.step_index))
        assert wait_for(fut.done, 10)
        handle = fut.result()
        assert handle.accepted
        res_fut = handle.get_result_async()
        assert wait_for(res_fut.done, 10), server.output()
        result = res_fut.result().result
        assert result.status == ExecuteChunk.Result.STATUS_SUCCEEDED
        assert result.steps_executed == 5 and result.reason == "touch"
        assert wait_for(lambda: len(feedback) >= 4, 2)
        assert feedback == sorted(feedback) and feedback[-1] == 4
        # 2. a long goal canceled mid-way.
        goal.chunk = chunk_to_msg(_chunk(50), PlanChunk, "panda_link0", ros_node.get_clock().now().to_msg(), 2)
        fut = client.send_goal_async(goal)
        assert wait_for(fut.done, 10)
        handle = fut.result()
        time.sleep(0.35)
        cancel = handle.cancel_goal_async()
        assert wait_for(cancel.done, 10)
        res_fut = handle.get_result_async()
        assert wait_for(res_fut.done, 10)
        result = res_fut.result().result
        assert result.status == ExecuteChunk.Result.STATUS_CANCELED
        assert 0 < result.steps_executed < 50


def test_scripted_chunk_node_publishes_valid_chunks(tmp_path, ros_node):
    received: list[PlanChunk] = []
    ros_node.create_subscription(PlanChunk, "/test/scripted", received.append, 10)
    cmd = [node_executable("vidplan_ros", "scripted_chunk_node"), "--ros-args", "-p", "topic:=/test/scripted",
           "-p", "rate_hz:=20.0", "-p", "horizon:=4"]
    with started(cmd, tmp_path / "pub.log") as pub:
        assert wait_for(lambda: len(received) >= 3, 20), pub.output()
    chunk = chunk_from_msg(received[-1])
    assert len(chunk) == 4 and chunk.dt == pytest.approx(0.2)
    assert np.allclose(np.linalg.norm(chunk.position[:, :2] - [0.45, 0.0], axis=1), 0.03, atol=1e-6)
    assert [m.plan_id for m in received] == sorted(m.plan_id for m in received)


def test_goal_sent_from_another_thread_is_answered_even_when_the_response_wins_the_race(tmp_path, ros_node,
                                                                                        monkeypatch):
    """rclpy 9.1.2's ``send_goal_async`` registers the goal's future twice (the second time outside its lock) and
    returns the second: a response the spinning thread handles in between completes the first and the caller waits
    forever (CI: "goal not answered"). The race is forced by slowing every Future rclpy's action client module
    creates by 0.5 s, so the response always arrives in that window: rclpy's own client then never answers where
    the bug is present (``RCLPY_REGISTERS_GOAL_TWICE``), vidplan's ``compat.ActionClient`` always does."""
    import rclpy.action
    import rclpy.action.client
    from rclpy.task import Future

    from vidplan_ros.compat import RCLPY_REGISTERS_GOAL_TWICE

    class SlowFuture(Future):
        def __init__(self, *a, **kw) -> None:
            time.sleep(0.5)
            super().__init__(*a, **kw)

    monkeypatch.setattr(rclpy.action.client, "Future", SlowFuture)
    ours = ActionClient(ros_node, ExecuteChunk, "/test/execute_chunk")
    upstream = rclpy.action.ActionClient(ros_node, ExecuteChunk, "/test/execute_chunk")
    goal = ExecuteChunk.Goal(chunk=chunk_to_msg(_chunk(2), PlanChunk, "panda_link0",
                                                 ros_node.get_clock().now().to_msg(), 1))
    with started([sys.executable, str(SCRIPT)], tmp_path / "server.log") as server:
        assert ours.wait_for_server(timeout_sec=20) and upstream.wait_for_server(timeout_sec=20), server.output()
        futs = [ours.send_goal_async(goal) for _ in range(3)]
        assert wait_for(lambda: all(f.done() for f in futs), 10), "compat.ActionClient lost a goal response"
        assert all(f.result().accepted for f in futs)
        lost = upstream.send_goal_async(goal)
        # rclpy without the bug answers within the same 10 s; with it, the returned future never completes
        assert wait_for(lost.done, 3 if RCLPY_REGISTERS_GOAL_TWICE else 10) == (not RCLPY_REGISTERS_GOAL_TWICE)
