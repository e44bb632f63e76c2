"""The sim's Franka hand behind ``control_msgs/action/GripperCommand`` — the interface franka_ros2's
``franka_gripper`` serves (``~/gripper_action``), so the executor's action backend is tested against the real
protocol here.

Goal ``command.position`` is the gap between the fingers [m] (0 closed .. ``open_width_m``); the result comes when
the fingers stop moving: ``reached_goal`` when the gap is within ``tolerance_m`` of the goal, ``stalled`` when they
stopped short of it (closed on an object), ``position`` the gap then. A newer goal preempts the running one.

The server runs on a node and executor of its own (two threads, so a new goal is accepted while one waits):
waiting for the fingers blocks only this server, never the sim node's trajectory and service callbacks.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import rclpy
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor

from vidplan_ros.qos import action_server_qos

__all__ = ["GripperActionServer"]


class GripperActionServer:
    """control_msgs/GripperCommand for a :class:`vidplan_sim.sim_node.SimNode`.

    Args:
        sim: the sim node (its command queue, env, lock and clock are used).
        action_name: the action's name.
        open_width_m: gap of the open hand [m] (Franka hand: 0.08).
        tolerance_m: a gap within this of the goal has reached it [m].
        settle_s: the fingers count as stopped after moving less than 0.2 mm for this long [s, sim time].
        timeout_s: give up waiting after this long [s, wall] (result: not reached, not stalled).
    """

    def __init__(self, sim, action_name: str, open_width_m: float = 0.08, tolerance_m: float = 0.002,
                 settle_s: float = 0.15, timeout_s: float = 60.0):
        from control_msgs.action import GripperCommand  # a ROS 2 installation's (or CI's stand-in)

        self.sim = sim
        self._type = GripperCommand
        self.open_width, self.tol, self.settle_s, self.timeout_s = open_width_m, tolerance_m, settle_s, timeout_s
        # Named after the sim node, without the process's command-line arguments: a `-r __node:=NAME` remap (the
        # supervisor starts every node so) renames every node of the process, and two nodes named alike share one
        # rosout publisher and confuse `ros2 node list`. The action name is a sim parameter, not a remap.
        self.node = rclpy.create_node(f"{sim.get_name()}_gripper_action", namespace=sim.get_namespace(),
                                      context=sim.context, use_global_arguments=False)
        self._goal_lock = threading.Lock()
        self._current = None
        self.server = ActionServer(self.node, GripperCommand, action_name, execute_callback=self._execute,
                                   goal_callback=self._on_goal, cancel_callback=lambda _g: CancelResponse.ACCEPT,
                                   callback_group=ReentrantCallbackGroup(), **action_server_qos())
        self.executor = MultiThreadedExecutor(num_threads=2, context=sim.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, name="sim-gripper-action", daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except (ExternalShutdownException, rclpy.executors.ShutdownException):
            pass

    def _on_goal(self, goal) -> GoalResponse:
        p = float(goal.command.position)
        if not np.isfinite(p):
            self.sim.get_logger().error(f"gripper action: rejected goal position {p}: must be finite [m]")
            return GoalResponse.REJECT
        return GoalResponse.ACCEPT

    def _execute(self, handle):
        with self._goal_lock:  # a newer goal preempts: the older one ends at its next poll
            self._current = handle
        target = float(np.clip(handle.request.command.position, 0.0, self.open_width))
        g = 1.0 - target / self.open_width
        self.sim._commands.append(lambda: self.sim.env.set_gripper(g))
        result = self._type.Result()
        t0, last_w, still_since = time.monotonic(), None, None
        while True:
            time.sleep(0.01)
            w, now = float(self.sim.env.gripper_width()), self.sim.sim_now()
            if last_w is None or abs(w - last_w) > 2e-4:
                last_w, still_since = w, now
            settled = still_since is not None and now - still_since >= self.settle_s
            preempted = self._current is not handle
            if settled or preempted or handle.is_cancel_requested or time.monotonic() - t0 > self.timeout_s:
                break
            fb = self._type.Feedback()
            fb.position, fb.reached_goal = w, abs(w - target) <= self.tol
            handle.publish_feedback(fb)
        result.position = w
        result.reached_goal = bool(abs(w - target) <= self.tol)
        result.stalled = bool(settled and not result.reached_goal)
        if handle.is_cancel_requested:
            handle.canceled()
        elif preempted:
            handle.abort()
        else:
            handle.succeed()
        return result

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
