"""rclpy names that moved between the ROS 2 distributions vidplan supports (Humble, Jazzy, Kilted), and rclpy bugs
worked around (``ActionClient``).

Import them from here, never from rclpy directly, so one place knows the differences. Only the Kilted branch runs in
CI (rclpy from PyPI wheels); the Humble branch follows Humble's documented module layout and is untested here.
"""

from __future__ import annotations

import inspect

import rclpy.action
from rclpy.task import Future

from vidplan_ros.qos import ACTION_SERVICES

try:  # Iron and newer (Jazzy, Kilted)
    from rclpy.event_handler import QoSRequestedIncompatibleQoSInfo, SubscriptionEventCallbacks
except ImportError:  # Humble: the same classes in rclpy.qos_event (renamed to event_handler in Iron)
    from rclpy.qos_event import QoSRequestedIncompatibleQoSInfo, SubscriptionEventCallbacks  # type: ignore[no-redef]



def _registers_goal_twice() -> bool:
    """True for rclpy 9.1.2 (the Kilted wheels): its ``ActionClient.send_goal_async`` registers the goal's future
    under the client's lock (the fix of ros2/rclpy#1123, backported in ros2/rclpy#1517), then a leftover unlocked copy
    of the old code registers a second future under the same sequence number and returns that one. When the executor
    thread handles the goal response in between, the first future completes and the returned one never does: the
    caller waits forever for a goal the server has accepted (seen in CI: "goal not answered" at 2 loaded cores)."""
    try:
        src = inspect.getsource(rclpy.action.ActionClient.send_goal_async)
    except (OSError, TypeError):  # no source shipped: nothing to inspect, trust rclpy
        return False
    return src.count("self._pending_goal_requests[sequence_number] = future") > 1


RCLPY_REGISTERS_GOAL_TWICE = _registers_goal_twice()


class ActionClient(rclpy.action.ActionClient):
    """rclpy's action client with ``send_goal_async`` safe to call from a thread other than the one spinning the
    node (the planner's plan thread, a test's main thread). Identical to rclpy's wherever rclpy is not affected
    (``RCLPY_REGISTERS_GOAL_TWICE`` false, e.g. Humble/Jazzy or a fixed Kilted release); on the affected release the
    goal is sent and its one future registered in a single critical section, as upstream rolling does.

    Its goal, result and cancel services default to :data:`vidplan_ros.qos.ACTION_SERVICES` (depth 100, as vidplan's
    action servers use) instead of rclpy's depth 10, so a burst of responses is not overwritten while this node's
    executor is busy; any ``*_qos_profile`` keyword given still wins."""

    def __init__(self, node, action_type, action_name: str, **kwargs) -> None:
        for key in ("goal_service_qos_profile", "result_service_qos_profile", "cancel_service_qos_profile"):
            kwargs.setdefault(key, ACTION_SERVICES)
        super().__init__(node, action_type, action_name, **kwargs)

    def send_goal_async(self, goal, feedback_callback=None, goal_uuid=None) -> Future:
        lock = getattr(self, "_lock", None)
        if not RCLPY_REGISTERS_GOAL_TWICE or lock is None:
            return super().send_goal_async(goal, feedback_callback, goal_uuid)
        if not isinstance(goal, self._action_type.Goal):
            raise TypeError(f"Expected goal type ({type(self._action_type.Goal)}) but received ({type(goal)})")
        request = self._action_type.Impl.SendGoalService.Request()
        request.goal_id = self._generate_random_uuid() if goal_uuid is None else goal_uuid
        request.goal = goal
        future: Future = Future()
        with lock:
            # feedback can arrive as soon as the goal is out: register its callback first
            if feedback_callback is not None:
                self._feedback_callbacks[bytes(request.goal_id.uuid)] = feedback_callback
            sequence_number = self._client_handle.send_goal_request(request)
            if sequence_number in self._pending_goal_requests:
                raise RuntimeError(f"Sequence ({sequence_number}) conflicts with pending goal request")
            self._pending_goal_requests[sequence_number] = future
            self._goal_sequence_number_to_goal_id[sequence_number] = request.goal_id
            future.add_done_callback(self._remove_pending_goal_request)
            self.add_future(future)
        return future


__all__ = ["RCLPY_REGISTERS_GOAL_TWICE", "ActionClient", "QoSRequestedIncompatibleQoSInfo",
           "SubscriptionEventCallbacks"]
