"""ROS names of the instruction — the text the robot is told ("put the red cube in the bowl") — in one place, for the
nodes that publish and serve it (planner, simulator, clients) and the tools that write and read recordings.

A *task* is the manipulation task (touch / push / put, :mod:`vidplan_sim.tasks`); the text is the *instruction*.
Until this release the instruction's ROS names said "task": the old names below still work for one release (the
planner listens and serves on them too and logs a one-time deprecation warning; readers of recordings fall back to
the old topic for bags recorded before the rename, :func:`instruction_topic_in`) and go in the next one.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["DEPRECATED_INSTRUCTION_TOPIC", "DEPRECATED_SET_INSTRUCTION_SERVICE", "INSTRUCTION_TOPIC",
           "SET_INSTRUCTION_SERVICE", "instruction_topic_in"]

#: std_msgs/String: the instruction (the planner subscribes; the simulator publishes it latched after each reset)
INSTRUCTION_TOPIC = "/vidplan/instruction"
#: the old name of :data:`INSTRUCTION_TOPIC` (deprecated; removed in the next release), in recordings made before
DEPRECATED_INSTRUCTION_TOPIC = "/vidplan/task"
#: vidplan_interfaces/srv/SetInstruction, served by the planner
SET_INSTRUCTION_SERVICE = "/vidplan/set_instruction"
#: the old name of :data:`SET_INSTRUCTION_SERVICE` (vidplan_interfaces/srv/SetTask; deprecated, removed in the next
#: release)
DEPRECATED_SET_INSTRUCTION_SERVICE = "/vidplan/set_task"


def instruction_topic_in(topics: Iterable[str]) -> str | None:
    """The topic of a recording (whose topic names are ``topics``) that carries the instruction:
    :data:`INSTRUCTION_TOPIC`, else :data:`DEPRECATED_INSTRUCTION_TOPIC` (a recording made before the rename), else
    None."""
    names = set(topics)
    for topic in (INSTRUCTION_TOPIC, DEPRECATED_INSTRUCTION_TOPIC):
        if topic in names:
            return topic
    return None
