"""executor_node's ExecuteChunk callback when handling a goal raises (issue 13).

No message from the wire makes it raise today (tests/vidplan_ros/unit/test_fuzz_validators.py and
tests/vidplan_ros/integration/fault_injection/test_fuzz_live.py check that), so the error is injected: a real
ExecutorNode, in this process, is handed a goal whose chunk the conversion cannot read. Before the fix the exception
escaped the execute callback and rclpy ended the goal with an EMPTY result (status 0 = "succeeded", reason "").
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
import rclpy

from vidplan_core.kinematics import HOME_Q
from vidplan_interfaces.action import ExecuteChunk
from vidplan_ros.executor_node import ExecutorNode

R = ExecuteChunk.Result


class _GoalHandle:
    """Stands in for rclpy's ServerGoalHandle: the node's execute callback is called directly and what it does to
    the handle is recorded."""

    def __init__(self, request: object) -> None:
        self.request = request
        self.is_cancel_requested = False
        self.calls: list[str] = []

    def abort(self) -> None:
        self.calls.append("abort")

    def succeed(self) -> None:
        self.calls.append("succeed")

    def canceled(self) -> None:
        self.calls.append("canceled")

    def publish_feedback(self, _fb: object) -> None:
        pass


@pytest.fixture
def node() -> Iterator[ExecutorNode]:
    rclpy.init()  # ExecutorNode lives in the default context
    n = ExecutorNode()
    try:
        yield n
    finally:
        n.close()
        n.destroy_node()
        rclpy.shutdown()


def test_an_exception_while_handling_a_goal_rejects_it_with_a_reason(node):
    with node._lock:  # fresh joint states at the ready pose: the goal gets as far as reading its chunk
        node._q, node._q_wall = HOME_Q.copy(), time.monotonic()
    gh = _GoalHandle(SimpleNamespace(out_of_limits_policy=ExecuteChunk.Goal.OUT_OF_LIMITS_REJECT, time_scale=0.0,
                                     max_steps=0, wait_for_settle=False, chunk=None))
    res = node._execute_goal(gh)
    assert res.status == R.STATUS_REJECTED and "goal could not be handled: AttributeError" in res.reason, res
    assert gh.calls == ["abort"]
    assert node._active is None  # nothing started
    assert node.last_rejection == res.reason and node.counters["malformed_chunks"] == 1
