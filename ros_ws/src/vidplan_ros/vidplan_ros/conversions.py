"""Message ↔ array conversions shared by the nodes (no business logic here)."""

from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Pose

from vidplan_core.spaces import EEChunk, euler_to_quat, quat_to_euler

__all__ = ["chunk_from_msg", "chunk_to_msg", "pose_from_vec", "pose_to_vec", "sec_to_stamp", "stamp_to_sec"]


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
    """:class:`EEChunk` → vidplan_interfaces/PlanChunk (``msg_type`` passed in so this module stays import-light)."""
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
