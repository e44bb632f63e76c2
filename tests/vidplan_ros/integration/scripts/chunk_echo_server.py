"""Test peer process: echoes PlanChunks (/test/plan_in → /test/plan_out, plan_id + 1000) and serves an
ExecuteChunk action on /test/execute_chunk that 'executes' one step per 0.1 s with feedback, honouring cancel.

Started by tests/vidplan_ros/integration/test_interfaces_dds.py as a separate process (real DDS on loopback).
"""

from __future__ import annotations

import time

import rclpy
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node

from vidplan_interfaces.action import ExecuteChunk
from vidplan_interfaces.msg import PlanChunk


class EchoServer(Node):
    def __init__(self) -> None:
        super().__init__("chunk_echo_server")
        self.pub = self.create_publisher(PlanChunk, "/test/plan_out", 10)
        self.sub = self.create_subscription(PlanChunk, "/test/plan_in", self._echo, 10)
        self.server = ActionServer(self, ExecuteChunk, "/test/execute_chunk", self._execute,
                                   goal_callback=lambda _: GoalResponse.ACCEPT,
                                   cancel_callback=lambda _: CancelResponse.ACCEPT,
                                   callback_group=ReentrantCallbackGroup())

    def _echo(self, msg: PlanChunk) -> None:
        msg.plan_id += 1000
        self.pub.publish(msg)

    def _execute(self, handle):
        chunk = handle.request.chunk
        result = ExecuteChunk.Result()
        for i, _pose in enumerate(chunk.poses):
            if handle.is_cancel_requested:
                handle.canceled()
                result.status = ExecuteChunk.Result.STATUS_CANCELED
                result.reason = f"canceled at step {i}"
                result.steps_executed = i
                return result
            fb = ExecuteChunk.Feedback(step_index=i, position_error=0.001 * (i + 1), orientation_error=0.0)
            handle.publish_feedback(fb)
            time.sleep(0.1)
        handle.succeed()
        result.status = ExecuteChunk.Result.STATUS_SUCCEEDED
        result.steps_executed = len(chunk.poses)
        result.final_position_error = 0.002
        result.reason = chunk.instruction
        return result


def main() -> None:
    rclpy.init()
    node = EchoServer()
    ex = MultiThreadedExecutor()
    ex.add_node(node)
    print("echo server ready", flush=True)
    try:
        ex.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
