"""Data access: rosbag2 recordings (``bags``) and, later, episode datasets.

Import submodules explicitly (``from vidplan_core.data import bags``); this package imports nothing heavy.
"""
