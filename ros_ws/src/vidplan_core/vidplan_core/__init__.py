"""vidplan_core: the plain-Python library behind vidplan (no rclpy import anywhere in this package)."""

__version__ = "0.1.0"
