"""Message ↔ array conversions shared by the nodes, and the validators of the messages they subscribe to (no
business logic here).

Validators return the reason a message is unusable as one line of text (None when it is fine) and never raise, so a
node can log the reason, put it in its diagnostics and drop the message; they only read attributes, so they accept
real ROS messages and duck-typed stand-ins alike. Images are decoded by the suite's one decoder,
:mod:`vidplan_core.images` (raw and compressed), re-exported here as :func:`image_to_array` / :func:`validate_image`
for the nodes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Pose

from vidplan_core.images import IMAGE_ENCODINGS, ImageDecodeError, validate_image
from vidplan_core.images import decode_image as image_to_array
from vidplan_core.spaces import EEChunk, euler_to_quat, quat_to_euler

__all__ = [
    "IMAGE_ENCODINGS",
    "ImageDecodeError",
    "chunk_from_msg",
    "chunk_markers",
    "chunk_to_msg",
    "image_to_array",
    "pose_from_vec",
    "pose_to_vec",
    "rgb8_image_msg",
    "sec_to_stamp",
    "stamp_to_sec",
    "validate_image",
    "validate_joint_state",
    "validate_pose",
]


def _floats(values: Any, what: str) -> tuple[np.ndarray | None, str | None]:
    try:
        arr = np.asarray(list(values), dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        return None, f"{what} are not numbers"
    return arr, None


def validate_joint_state(msg: Any, required: Sequence[str] = ()) -> str | None:
    """Why a sensor_msgs/JointState cannot be used, or None.

    Checks: names are strings without duplicates; ``position`` has one finite value per name (a JointState with
    names but no positions is unusable here); ``velocity`` / ``effort`` are empty or one per name (their values are
    not used, so NaN there is tolerated: drivers publish NaN for unmeasured efforts); every name in ``required`` is
    present.
    """
    try:
        names = list(msg.name)
        positions = msg.position
    except (AttributeError, TypeError):
        return f"not a JointState (a {type(msg).__name__})"
    if not all(isinstance(n, str) for n in names):
        return "joint names must be strings"
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        return f"duplicate joint names {dup}"
    pos, bad = _floats(positions, "joint positions")
    if bad:
        return bad
    if len(pos) != len(names):
        return f"JointState has {len(names)} names but {len(pos)} positions"
    for field in ("velocity", "effort"):
        try:
            n = len(getattr(msg, field, ()))
        except TypeError:
            return f"JointState {field} has no length"
        if n not in (0, len(names)):
            return f"JointState has {len(names)} names but {n} {field} values (must be 0 or one per name)"
    if not np.isfinite(pos).all():
        return "non-finite joint position(s) for " + ", ".join(
            n for n, p in zip(names, pos, strict=True) if not math.isfinite(p))
    missing = [n for n in required if n not in names]
    if missing:
        return f"JointState lacks joint(s) {missing}"
    return None


def validate_pose(pose: Any) -> str | None:
    """Why a geometry_msgs/Pose cannot be used, or None: a finite position [m] and a finite quaternion whose norm is
    non-zero and finite (it need not be normalised)."""
    try:
        p, q = pose.position, pose.orientation
        v = np.array([p.x, p.y, p.z, q.x, q.y, q.z, q.w], dtype=np.float64)
    except (AttributeError, TypeError, ValueError, OverflowError):
        return f"not a Pose (a {type(pose).__name__})"
    if not np.isfinite(v[:3]).all():
        return f"non-finite position {v[:3].tolist()}"
    if not np.isfinite(v[3:]).all():
        return f"non-finite orientation {v[3:].tolist()}"
    with np.errstate(over="ignore"):
        norm = float(np.linalg.norm(v[3:]))
    if norm < 1e-6:
        return f"orientation quaternion of zero norm {v[3:].tolist()}"
    if not math.isfinite(norm):  # huge finite components: the norm overflows and the quaternion cannot be normalised
        return f"orientation quaternion whose norm overflows {v[3:].tolist()}"
    return None


def stamp_to_sec(stamp: Time) -> float:
    """builtin_interfaces/Time → seconds (float)."""
    return stamp.sec + stamp.nanosec * 1e-9


def sec_to_stamp(t: float) -> Time:
    """Seconds → builtin_interfaces/Time."""
    ns = round(t * 1e9)
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def pose_to_vec(pose: Pose) -> np.ndarray:
    """geometry_msgs/Pose → (7,) [x, y, z (m), qx, qy, qz, qw]."""
    p, q = pose.position, pose.orientation
    return np.array([p.x, p.y, p.z, q.x, q.y, q.z, q.w], dtype=np.float64)


def pose_from_vec(v: np.ndarray) -> Pose:
    """(7,) [x, y, z, qx, qy, qz, qw] → geometry_msgs/Pose."""
    pose = Pose()
    pose.position.x, pose.position.y, pose.position.z = (float(x) for x in v[:3])
    (pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w) = (float(x) for x in v[3:7])
    return pose


def chunk_to_msg(chunk: EEChunk, msg_type: type, frame_id: str, stamp: Time, plan_id: int = 0,
                 instruction: str = ""):
    """:class:`EEChunk` → vidplan_interfaces/PlanChunk (``msg_type`` passed in so this module stays import-light).
    ``stamp``: when the chunk is produced (the executor ages it from then)."""
    msg = msg_type()
    msg.header.frame_id = frame_id
    msg.header.stamp = stamp
    msg.plan_id = int(plan_id)
    msg.dt = float(chunk.dt)
    quats = euler_to_quat(chunk.euler)
    msg.poses = [pose_from_vec(np.concatenate([p, q])) for p, q in zip(chunk.position, quats, strict=True)]
    msg.gripper = [float(g) for g in chunk.gripper]
    msg.uncertainty = [float(u) for u in (chunk.uncertainty if chunk.uncertainty is not None else [])]
    msg.value = [float(v) for v in (chunk.value if chunk.value is not None else [])]
    msg.instruction = instruction
    return msg


def chunk_from_msg(msg) -> EEChunk:
    """vidplan_interfaces/PlanChunk → :class:`EEChunk`. Raises ValueError on inconsistent lengths."""
    n = len(msg.poses)
    if len(msg.gripper) != n:
        raise ValueError(f"PlanChunk has {n} poses but {len(msg.gripper)} gripper values")
    vec = np.array([pose_to_vec(p) for p in msg.poses]).reshape(n, 7)
    return EEChunk(
        position=vec[:, :3],
        euler=quat_to_euler(vec[:, 3:]),
        gripper=np.asarray(msg.gripper, dtype=np.float64),
        dt=float(msg.dt),
        uncertainty=np.asarray(msg.uncertainty, dtype=np.float64) if len(msg.uncertainty) else None,
        value=np.asarray(msg.value, dtype=np.float64) if len(msg.value) else None,
    )


def rgb8_image_msg(img: np.ndarray, stamp: Time, frame_id: str) -> Any:
    """(H, W, 3) uint8 RGB → ``sensor_msgs/Image`` (rgb8, row step 3·W)."""
    from sensor_msgs.msg import Image

    msg = Image(height=int(img.shape[0]), width=int(img.shape[1]), encoding="rgb8", is_bigendian=0,
                step=int(img.shape[1] * 3))
    msg.header.stamp, msg.header.frame_id = stamp, frame_id
    msg.data = np.ascontiguousarray(img, dtype=np.uint8).tobytes()
    return msg


def chunk_markers(chunk: EEChunk, frame_id: str, stamp: Time) -> Any:
    """An EE chunk as RViz markers (``visualization_msgs/MarkerArray``): the TCP path as a line strip and its
    waypoints as spheres, in ``frame_id`` [m]."""
    from geometry_msgs.msg import Point
    from visualization_msgs.msg import Marker, MarkerArray

    line = Marker(ns="vidplan_plan", id=0, type=Marker.LINE_STRIP, action=Marker.ADD)
    line.header.frame_id, line.header.stamp = frame_id, stamp
    line.scale.x = 0.005
    line.color.r, line.color.g, line.color.b, line.color.a = 0.1, 0.6, 1.0, 1.0
    line.pose.orientation.w = 1.0
    line.points = [Point(x=float(p[0]), y=float(p[1]), z=float(p[2])) for p in chunk.position]
    pts = Marker(ns="vidplan_plan", id=1, type=Marker.SPHERE_LIST, action=Marker.ADD)
    pts.header = line.header
    pts.scale.x = pts.scale.y = pts.scale.z = 0.015
    pts.color.r, pts.color.g, pts.color.b, pts.color.a = 1.0, 0.5, 0.0, 1.0
    pts.pose.orientation.w = 1.0
    pts.points = line.points
    return MarkerArray(markers=[line, pts])
