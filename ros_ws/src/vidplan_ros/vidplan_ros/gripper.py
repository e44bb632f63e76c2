"""The executor's gripper backends: one interface, two transports.

* :class:`TopicGripper` — ``std_msgs/Float64`` 0 = open .. 1 = closed on a topic (the sim's ``/gripper/command``);
* :class:`ActionGripper` — ``control_msgs/action/GripperCommand``, the action franka_ros2's ``franka_gripper`` node
  serves (``/franka_gripper/gripper_action``; also MoveIt's and most ros2_control grippers'). The command is a gap
  [m]: ``position = (1 − g) · open_width_m``; ``max_effort`` [N] is the grasp force when closing on an object.
  control_msgs is imported when this backend is built (a ROS 2 installation provides it; CI builds the stand-in
  in ros_ws/standins).

The action backend sends a goal only when the command differs from the last one sent (by ``deadband``), so a chunk
whose steps repeat the gripper value does not preempt a grasp in progress 5 times a second (the topic backend
publishes every step, as a position controller expects). :meth:`problem` says why the
gripper cannot be commanded now (no action server), so the executor can refuse chunks and report it.
"""

from __future__ import annotations

import threading

from rclpy.node import Node
from std_msgs.msg import Float64

from vidplan_ros.compat import ActionClient  # rclpy 9.1.2 loses goal responses (compat.py)

__all__ = ["ActionGripper", "TopicGripper"]


class TopicGripper:
    """Float64 gripper command on ``topic`` (0 open .. 1 closed)."""

    def __init__(self, node: Node, topic: str):
        self.name = topic
        self._pub = node.create_publisher(Float64, topic, 10)

    def problem(self) -> str:
        return ""

    def send(self, g: float) -> None:
        self._pub.publish(Float64(data=float(g)))

    def status(self) -> dict[str, str]:
        return {"gripper_interface": "topic", "gripper_target": self.name}


class ActionGripper:
    """control_msgs/GripperCommand goals on ``action_name``.

    Args:
        node: the executor node (its executor runs the client's callbacks).
        action_name: the action server (franka_ros2: ``/franka_gripper/gripper_action``).
        open_width_m: the gap of the open gripper [m] (Franka hand: 0.08); ``g`` maps to ``(1 − g)·open_width_m``.
        max_effort_n: grasp force [N] sent with every goal.
        deadband: smallest change of ``g`` that sends a new goal.
    """

    def __init__(self, node: Node, action_name: str, open_width_m: float = 0.08, max_effort_n: float = 20.0,
                 deadband: float = 0.05):
        from control_msgs.action import GripperCommand  # a ROS 2 installation's (or CI's stand-in)

        self._type = GripperCommand
        self.name = action_name
        self.open_width = float(open_width_m)
        self.max_effort = float(max_effort_n)
        self.deadband = float(deadband)
        self._client = ActionClient(node, GripperCommand, action_name)
        self._lock = threading.Lock()
        self._last: float | None = None
        self.goals_sent = 0
        self.last_result = ""

    def problem(self) -> str:
        if not self._client.server_is_ready():
            return f"gripper action server {self.name} (control_msgs/GripperCommand) is not available"
        return ""

    def send(self, g: float) -> None:
        with self._lock:
            if self._last is not None and abs(g - self._last) < self.deadband:
                return
            self._last = float(g)
            self.goals_sent += 1
        goal = self._type.Goal()
        goal.command.position = (1.0 - min(max(float(g), 0.0), 1.0)) * self.open_width
        goal.command.max_effort = self.max_effort
        self._client.send_goal_async(goal).add_done_callback(self._accepted)

    def _accepted(self, fut) -> None:
        handle = fut.result()
        if handle is None or not handle.accepted:
            self.last_result = "goal rejected by the gripper server"
            return
        handle.get_result_async().add_done_callback(self._done)

    def _done(self, fut) -> None:
        r = fut.result().result
        self.last_result = (f"gap {r.position:.4f} m, reached_goal {r.reached_goal}, stalled {r.stalled}")

    def status(self) -> dict[str, str]:
        return {"gripper_interface": "action", "gripper_target": self.name, "gripper_goals_sent": str(self.goals_sent),
                "gripper_last_result": self.last_result}
