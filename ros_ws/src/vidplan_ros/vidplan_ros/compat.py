"""rclpy names that moved between the ROS 2 distributions vidplan supports (Humble, Jazzy, Kilted).

Import them from here, never from rclpy directly, so one place knows the differences. Only the Kilted branch runs in
CI (rclpy from PyPI wheels); the Humble branch follows Humble's documented module layout and is untested here.
"""

from __future__ import annotations

try:  # Iron and newer (Jazzy, Kilted)
    from rclpy.event_handler import QoSRequestedIncompatibleQoSInfo, SubscriptionEventCallbacks
except ImportError:  # Humble: the same classes in rclpy.qos_event (renamed to event_handler in Iron)
    from rclpy.qos_event import QoSRequestedIncompatibleQoSInfo, SubscriptionEventCallbacks  # type: ignore[no-redef]

__all__ = ["QoSRequestedIncompatibleQoSInfo", "SubscriptionEventCallbacks"]
