"""Topic maps: which topic of a recording carries which signal (YAML, :class:`TopicMap`), for
:mod:`vidplan_core.data.convert` (training data) and ``vidplan eval-bag``.

The defaults are the topics vidplan's simulation and recorder write:

==================  ==================================  ===================================================
role                default topic                       accepted types
==================  ==================================  ===================================================
cameras.left/...    /cameras/{left,right,wrist}/image_raw  sensor_msgs/Image (rgb8, bgr8, rgba8, bgra8, mono8) or
                                                        sensor_msgs/CompressedImage (JPEG, PNG); a camera topic
                                                        the bag lacks is read from ``<topic>/compressed``
                                                        (image_transport's name) when the bag has that
ee_pose             /ee_pose                            geometry_msgs/PoseStamped (robot base frame)
action              /vidplan/expert_action              vidplan_interfaces/PlanChunk (first step) or
                                                        geometry_msgs/PoseStamped; ``null`` → measured ee_pose
                                                        (``action_pose``: ``measured`` (default) takes only the
                                                        gripper command from it, ``command`` also the pose)
joint_states        /joint_states                       sensor_msgs/JointState (arm joints → joint_positions)
gripper.topic       /joint_states                       JointState (finger joints; closure = 1 − width /
                                                        open_width) or std_msgs/Float32|Float64 (0 open..1)
episode_info        /vidplan/episode                    std_msgs/String, JSON with success/instruction/task/
                                                        seed/clutter (the last message counts)
success             null                                std_msgs/Bool (last message counts)
instruction         /vidplan/instruction                std_msgs/String (last message counts); a recording
                                                        without it is read from /vidplan/task, the topic's
                                                        deprecated old name (bags recorded before the rename);
                                                        ``null``: from episode_info / the sidecar only
sidecar             true                                ``<bag>.json`` next to the bag directory, or
                                                        ``<bag>/episode.json``: the same keys as episode_info
==================  ==================================  ===================================================
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from vidplan_core.config import load_model
from vidplan_core.spaces import VIEW_ORDER
from vidplan_core.topics import INSTRUCTION_TOPIC, instruction_topic_in

__all__ = ["GripperSource", "TopicMap", "instruction_topic", "load_topic_map", "needed_streams",
           "resolve_camera_topics"]

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
CAMERA_TYPES = (IMAGE, COMPRESSED)
POSE = "geometry_msgs/msg/PoseStamped"
CHUNK = "vidplan_interfaces/msg/PlanChunk"
JOINTS = "sensor_msgs/msg/JointState"
STRING = "std_msgs/msg/String"
BOOL = "std_msgs/msg/Bool"
FLOATS = ("std_msgs/msg/Float32", "std_msgs/msg/Float64")


class GripperSource(BaseModel):
    """Where the measured gripper closure comes from."""

    model_config = ConfigDict(extra="forbid")
    topic: str | None = Field(default="/joint_states", description="JointState or Float32/Float64 topic; "
                              "null: use the commanded gripper of the action source")
    joints: list[str] | None = Field(default=None, description="finger joints whose positions sum to the opening "
                                     "width [m]; default: every joint whose name contains 'finger'")
    open_width: float = Field(default=0.08, gt=0, description="opening width of the open gripper [m]")


class TopicMap(BaseModel):
    """Which topic carries which signal (see the module docstring); load from YAML with :func:`load_topic_map`."""

    model_config = ConfigDict(extra="forbid")
    cameras: dict[str, str] = Field(default_factory=lambda: {v: f"/cameras/{v}/image_raw" for v in VIEW_ORDER})
    ee_pose: str = "/ee_pose"
    action: str | None = "/vidplan/expert_action"
    action_pose: Literal["measured", "command"] = Field(
        default="measured", description="pose part of the action: the measured EE pose at the frame (as DROID / "
        "Ctrl-World, and as the planner's history) or the commanded target; the gripper comes from the command")
    joint_states: str | None = "/joint_states"
    arm_joints: list[str] | None = Field(default=None, description="columns of joint_positions; default: the "
                                         "joint names of the first message without the gripper joints")
    gripper: GripperSource = Field(default_factory=GripperSource)
    episode_info: str | None = "/vidplan/episode"
    success: str | None = None
    instruction: str | None = INSTRUCTION_TOPIC
    sidecar: bool = True
    use_header_stamp: bool = True
    max_gap_s: float = Field(default=0.15, gt=0, description="largest allowed distance of a sample to a frame [s]")

    @field_validator("cameras")
    @classmethod
    def _cams(cls, v: dict[str, str]) -> dict[str, str]:
        if set(v) != set(VIEW_ORDER):
            raise ValueError(f"cameras must name exactly the views {list(VIEW_ORDER)}, got {sorted(v)}")
        return v


def load_topic_map(path: str | Path | None) -> TopicMap:
    """The topic map of a YAML file (``None`` → the defaults, i.e. the topics of vidplan's sim and robot)."""
    if path is None:
        return TopicMap()

    return load_model(TopicMap, path)


def resolve_camera_topics(tm: TopicMap, topics: Mapping[str, str]) -> TopicMap:
    """The topic map with image_transport's convention applied: a camera topic the recording lacks is read from
    ``<topic>/compressed`` when the recording has that as a sensor_msgs/CompressedImage (a ZED/DROID or networked
    camera recorded compressed). ``topics``: topic → message type of the recording."""
    cams = dict(tm.cameras)
    for view, topic in tm.cameras.items():
        alt = f"{topic.rstrip('/')}/compressed"
        if topic not in topics and topics.get(alt) == COMPRESSED:
            cams[view] = alt
    return tm if cams == tm.cameras else tm.model_copy(update={"cameras": cams})


def instruction_topic(tm: TopicMap, topics: Iterable[str]) -> str | None:
    """The topic of a recording (topic names ``topics``) to read the instruction from: ``tm.instruction`` when the
    recording has it; for the default (:data:`~vidplan_core.topics.INSTRUCTION_TOPIC`) a recording made before the
    rename has it on the deprecated /vidplan/task instead; None when there is none (or ``tm.instruction`` is null)."""
    names = set(topics)
    if tm.instruction == INSTRUCTION_TOPIC:
        return instruction_topic_in(names)
    return tm.instruction if tm.instruction in names else None


def needed_streams(tm: TopicMap) -> dict[str, tuple[str, tuple[str, ...]]]:
    """role → (topic, accepted types) of the streams a conversion needs."""
    roles = {f"camera '{v}'": (tm.cameras[v], CAMERA_TYPES) for v in VIEW_ORDER}
    roles["ee_pose"] = (tm.ee_pose, (POSE,))
    if tm.action:
        roles["action"] = (tm.action, (CHUNK, POSE))
    if tm.joint_states:
        roles["joint_states"] = (tm.joint_states, (JOINTS,))
    if tm.gripper.topic:
        roles["gripper"] = (tm.gripper.topic, (JOINTS, *FLOATS))
    return roles
