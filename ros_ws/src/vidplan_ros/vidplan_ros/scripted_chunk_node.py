"""scripted_chunk_node: publishes scripted PlanChunks (a small circle around a centre pose) at a fixed rate.

Useful to exercise an executor without a planner, and as a smoke-test publisher.

Parameters:
    topic (str, "/vidplan/plan"): PlanChunk topic.
    rate_hz (float, 1.0): chunks per second.
    horizon (int, 5): steps per chunk.
    dt (float, 0.2): seconds between chunk steps (model rate 5 Hz).
    frame_id (str, "panda_link0"): base frame of the poses.
    center (float[3], [0.45, 0.0, 0.35]): circle centre [m].
    euler (float[3], [π, 0, 0]): EE orientation, Euler xyz [rad] (gripper pointing down).
    radius (float, 0.03): circle radius [m].
    count (int, 0): stop after this many chunks (0 = never).
    instruction (str, ""): instruction field of the chunks.
"""

from __future__ import annotations

import math

import numpy as np
from rclpy.node import Node

from vidplan_core.spaces import EEChunk
from vidplan_interfaces.msg import PlanChunk
from vidplan_ros.conversions import chunk_to_msg
from vidplan_ros.node_runner import run_node


class ScriptedChunkNode(Node):
    def __init__(self) -> None:
        super().__init__("scripted_chunk_node")
        p = self.declare_parameter
        self.topic = p("topic", "/vidplan/plan").value
        rate = float(p("rate_hz", 1.0).value)
        self.horizon = int(p("horizon", 5).value)
        self.dt = float(p("dt", 0.2).value)
        self.frame_id = p("frame_id", "panda_link0").value
        self.center = np.array(p("center", [0.45, 0.0, 0.35]).value, dtype=float)
        self.euler = np.array(p("euler", [math.pi, 0.0, 0.0]).value, dtype=float)
        self.radius = float(p("radius", 0.03).value)
        self.count = int(p("count", 0).value)
        self.instruction = p("instruction", "").value
        if rate <= 0 or self.horizon < 1 or self.dt <= 0:
            raise ValueError("rate_hz and dt must be > 0 and horizon >= 1")
        if self.center.shape != (3,) or self.euler.shape != (3,):
            raise ValueError("center and euler must have 3 elements")
        self.pub = self.create_publisher(PlanChunk, self.topic, 10)
        self.sent = 0
        self.timer = self.create_timer(1.0 / rate, self._tick)
        self.get_logger().info(f"publishing {self.horizon}-step chunks on {self.topic} at {rate} Hz")

    def _tick(self) -> None:
        if self.count and self.sent >= self.count:
            return
        phase = 2 * math.pi * (self.sent * 0.1 + np.arange(self.horizon) / max(self.horizon, 1) * 0.25)
        pos = self.center + self.radius * np.stack([np.cos(phase), np.sin(phase), np.zeros_like(phase)], 1)
        chunk = EEChunk(position=pos, euler=np.tile(self.euler, (self.horizon, 1)),
                        gripper=np.zeros(self.horizon), dt=self.dt)
        self.sent += 1
        msg = chunk_to_msg(chunk, PlanChunk, self.frame_id, self.get_clock().now().to_msg(), self.sent,
                           self.instruction)
        self.pub.publish(msg)


def main(args: list[str] | None = None) -> None:
    run_node(ScriptedChunkNode, args)
