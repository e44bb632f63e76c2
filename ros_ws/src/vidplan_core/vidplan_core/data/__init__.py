"""Data: rosbag2 recordings (``bags``), ROS messages as bytes without rclpy (``messages``), simulated episode
generation (``generate``), bag → training-shard conversion (``convert``), the dataset schema (``schema``,
DATASET.md), windowed torch datasets (``dataset``) and cached latents (``latents``).

Import submodules explicitly (``from vidplan_core.data import bags``); this package imports nothing heavy.
"""
