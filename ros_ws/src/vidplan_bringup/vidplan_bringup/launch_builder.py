"""Build a ros2 LaunchDescription from a bring-up profile (the same YAML that ``vidplan up`` reads).

Needs ``launch`` and ``launch_ros`` (a full ROS 2 install: Humble, Jazzy, Kilted). They are not installable on
pip-only machines, so this module is exercised on the robot, not in our CI; the profile handling it relies on
(:mod:`vidplan_bringup.profiles`) and :func:`launch_overrides` (plain Python: launch arguments → profile overrides,
deprecated arg names included) are tested everywhere.
"""

from __future__ import annotations

from typing import Any

from vidplan_bringup.profiles import Profile, load_profile, parse_overrides, resolve_profile


def _text(value: Any) -> str:
    """A profile arg's default as launch holds it (text; bools as true/false)."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def launch_overrides(profile: Profile, values: dict[str, str]) -> list[str]:
    """The ``ARG:=VALUE`` overrides for :func:`~vidplan_bringup.profiles.resolve_profile` from the launch arguments'
    ``values`` (text, as launch holds them: every profile arg, and every deprecated name with "" when not given).

    launch cannot tell an arg left at its default from one given as the default, so every profile arg is passed;
    for a deprecated name that was given, its new arg is passed only when it differs from its default. Then
    ``task:=...`` alone is the deprecated spelling (resolve_profile maps it and warns), and ``task:=a
    instruction:=b`` is resolve_profile's ConfigError naming both.
    """
    given = {k: values[k] for k in profile.args}
    for old, new in profile.deprecated_args.items():
        if values.get(old, "") == "":
            continue
        if given[new] == _text(profile.args[new]):
            given.pop(new)
        given[old] = values[old]
    return [f"{k}:={v}" for k, v in given.items()]


def generate_profile_launch_description(profile_name: str) -> Any:
    """LaunchDescription for ``profile_name``: one DeclareLaunchArgument per profile arg, one Node per node.

    Launch arguments use the profile's arg names (``ros2 launch vidplan_bringup sim.launch.py bag:=/path``);
    required nodes shut the launch down when they exit, like ``vidplan up``. A deprecated arg name
    (``deprecated_args``, e.g. ``task:=``) is declared too, with an empty default meaning "not given"
    (:func:`launch_overrides`).
    """
    from launch.actions import DeclareLaunchArgument, EmitEvent, OpaqueFunction, RegisterEventHandler
    from launch.event_handlers import OnProcessExit
    from launch.events import Shutdown
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import Node

    from launch import LaunchDescription

    profile, path = load_profile(profile_name)

    def _nodes(context: Any) -> list[Any]:
        names = [*profile.args, *profile.deprecated_args]
        args, _ = parse_overrides(launch_overrides(profile, {k: LaunchConfiguration(k).perform(context)
                                                             for k in names}))
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

    declared = [DeclareLaunchArgument(k, default_value=_text(v), description=f"profile arg '{k}' of {path.name}")
                for k, v in profile.args.items()]
    declared += [DeclareLaunchArgument(old, default_value="", description=f"DEPRECATED (removed in the next "
                                       f"release): the old name of the arg '{new}'")
                 for old, new in profile.deprecated_args.items()]
    return LaunchDescription([*declared, OpaqueFunction(function=_nodes)])
