"""ros2 launch vidplan_bringup replay.launch.py [ARG:=VALUE ...]

Starts the nodes of the 'replay' bring-up profile (ros_ws/src/vidplan_bringup/profiles/replay.yaml), the same profile
that `vidplan up replay` starts on machines without ros2 launch. Needs a full ROS 2 install (launch, launch_ros).
"""

from vidplan_bringup.launch_builder import generate_profile_launch_description


def generate_launch_description():
    return generate_profile_launch_description("replay")
