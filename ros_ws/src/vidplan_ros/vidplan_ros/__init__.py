"""vidplan_ros: rclpy nodes (thin adapters: parameters, message conversion, timers) around vidplan_core."""
