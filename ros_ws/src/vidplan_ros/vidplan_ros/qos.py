"""QoS profiles that vidplan's nodes share, named once so publishers, subscribers and action ends agree.

* :data:`LATCHED` — the last message stays available to late joiners (scene, instruction): reliable,
  transient-local, depth 1 (``ros2 topic pub --qos-durability transient_local`` matches it).
* :data:`ACTION_SERVICES` — the goal, result and cancel services of vidplan's actions (``ExecuteChunk``, the sim's
  ``GripperCommand``), on both the server (:func:`action_server_qos`) and the client (``compat.ActionClient``).
"""

from __future__ import annotations

from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)

# rclpy's default for action services keeps the last 10 requests (rmw_qos_profile_services_default). A server whose
# executor falls behind for a moment (2 loaded cores) then has its oldest goal requests overwritten in its reader's
# history: they are dropped without an answer, and the client waits forever for a goal response. Measured against
# the executor node: a burst of 30 goals got 12 answers, 60 got 22; with depth 100, 30 of 30 and 60 of 60
# (test_executor.py::test_a_burst_of_goals_is_answered_in_full). Requests are small; 100 costs nothing.
ACTION_SERVICES = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.VOLATILE)


def action_server_qos() -> dict[str, QoSProfile]:
    """Keyword arguments of ``rclpy.action.ActionServer`` for :data:`ACTION_SERVICES` on its three services."""
    return {"goal_service_qos_profile": ACTION_SERVICES, "result_service_qos_profile": ACTION_SERVICES,
            "cancel_service_qos_profile": ACTION_SERVICES}


__all__ = ["ACTION_SERVICES", "LATCHED", "action_server_qos"]
