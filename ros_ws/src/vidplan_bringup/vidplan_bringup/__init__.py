"""vidplan_bringup: profiles and the LaunchDescription builder used by launch/*.launch.py."""
