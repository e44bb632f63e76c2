"""Build a ros2 LaunchDescription from a bring-up profile (the same YAML that ``vidplan up`` reads).

Needs ``launch`` and ``launch_ros`` (a full ROS 2 install: Humble, Jazzy, Kilted). They are not installable on
pip-only machines, so this module is exercised on the robot, not in our CI; the profile handling it relies on
(:mod:`vidplan_bringup.profiles`) is tested everywhere.
"""

from __future__ import annotations

from typing import Any


def generate_profile_launch_description(profile_name: str) -> Any:
    """LaunchDescription for ``profile_name``: one DeclareLaunchArgument per profile arg, one Node per node.

    Launch arguments use the profile's arg names (``ros2 launch vidplan_bringup sim.launch.py bag:=/path``);
    required nodes shut the launch down when they exit, like ``vidplan up``.
    """
    from launch.actions import DeclareLaunchArgument, EmitEvent, OpaqueFunction, RegisterEventHandler
    from launch.event_handlers import OnProcessExit
    from launch.events import Shutdown
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import Node

    from launch import LaunchDescription
    from vidplan_bringup.profiles import load_profile, parse_overrides, resolve_profile

    profile, path = load_profile(profile_name)

    def _nodes(context: Any) -> list[Any]:
        overrides = [f"{k}:={LaunchConfiguration(k).perform(context)}" for k in profile.args]
        args, _ = parse_overrides(overrides)
        actions: list[Any] = []
        for node in resolve_profile(profile, str(path), args, {}):
            ros_node = Node(
                package=node.package,
                executable=node.executable,
                name=node.name,
                parameters=[node.parameters],
                remappings=list(node.remappings.items()),
                respawn=node.respawn,
                output="screen",
                emulate_tty=True,
            )
            actions.append(ros_node)
            if node.required:
                actions.append(RegisterEventHandler(OnProcessExit(
                    target_action=ros_node,
                    on_exit=[EmitEvent(event=Shutdown(reason=f"required node {node.name} exited"))],
                )))
        return actions

    declared = [DeclareLaunchArgument(k, default_value=str(v).lower() if isinstance(v, bool) else str(v),
                                      description=f"profile arg '{k}' of {path.name}")
                for k, v in profile.args.items()]
    return LaunchDescription([*declared, OpaqueFunction(function=_nodes)])
