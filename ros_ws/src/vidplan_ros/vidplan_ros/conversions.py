"""Message ↔ array conversions shared by the nodes, and the validators of the messages they subscribe to (no
business logic here).

Validators return the reason a message is unusable as one line of text (None when it is fine) and never raise, so a
node can log the reason, put it in its diagnostics and drop the message; they only read attributes, so they accept
real ROS messages and duck-typed stand-ins alike. :func:`image_to_array` is THE image decoder of the nodes: it raises
:class:`ImageDecodeError` (a ValueError) carrying :func:`validate_image`'s reason.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Pose

from vidplan_core.spaces import EEChunk, euler_to_quat, quat_to_euler

__all__ = ["IMAGE_ENCODINGS", "ImageDecodeError", "InvalidMessageError", "chunk_from_msg", "chunk_to_msg",
           "image_to_array", "pose_from_vec", "pose_to_vec", "sec_to_stamp", "stamp_to_sec", "validate_image",
           "validate_joint_state", "validate_pose"]

# encoding → channels (1 byte each) of the sensor_msgs/Image encodings the nodes decode
IMAGE_ENCODINGS: dict[str, int] = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}


class InvalidMessageError(ValueError):
    """A message that cannot be used; ``reason`` is the one-line explanation (also the exception text)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class ImageDecodeError(InvalidMessageError):
    """An image message that cannot be decoded (bad size, encoding, step or data length; a compressed image)."""


def _count(value: Any) -> int | None:
    """A non-negative integer field as int, or None when it is not one."""
    if isinstance(value, bool):
        return None
    try:
        n = int(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return n if n == value and n >= 0 else None


def validate_image(msg: Any) -> str | None:
    """Why a sensor_msgs/Image cannot be decoded, or None when :func:`image_to_array` will decode it.

    Checks: an ``encoding`` field (a CompressedImage has none: compressed images are not decoded here), height and
    width > 0, an encoding of :data:`IMAGE_ENCODINGS` (case-insensitive), ``step`` ≥ width × channels (bytes) and
    ``len(data) == step × height`` exactly.
    """
    if not hasattr(msg, "encoding"):
        fmt = getattr(msg, "format", None)
        what = f"a compressed image (format {fmt!r})" if fmt is not None else f"a {type(msg).__name__}"
        return (f"{what} is not supported: publish sensor_msgs/Image with encoding "
                f"{', '.join(IMAGE_ENCODINGS)}")
    h, w, step = (_count(getattr(msg, k, None)) for k in ("height", "width", "step"))
    if h is None or w is None or step is None:
        return (f"invalid image header: height {getattr(msg, 'height', None)!r}, width "
                f"{getattr(msg, 'width', None)!r}, step {getattr(msg, 'step', None)!r} must be non-negative integers")
    if h == 0 or w == 0:
        return f"invalid image size {w}x{h} (width x height): both must be > 0"
    enc = getattr(msg, "encoding", "")
    ch = IMAGE_ENCODINGS.get(enc.lower()) if isinstance(enc, str) else None
    if ch is None:
        return f"unsupported image encoding {enc!r}; expected {', '.join(IMAGE_ENCODINGS)}"
    if step < w * ch:
        return f"image step {step} is less than width {w} x {ch} bytes per pixel ({enc})"
    try:
        n = len(msg.data)
    except TypeError:
        return f"image data of type {type(msg.data).__name__} has no length"
    if n != step * h:
        return (f"image data is {n} bytes, too {'small' if n < step * h else 'large'} for step {step} x height "
                f"{h} = {step * h} bytes ({w}x{h} {enc})")
    return None


def image_to_array(msg: Any) -> np.ndarray:
    """sensor_msgs/Image (rgb8, bgr8, rgba8, bgra8, mono8) → (H, W, 3) uint8 RGB array (a copy).

    Raises:
        ImageDecodeError: the message fails :func:`validate_image` (its ``reason`` says why).
    """
    reason = validate_image(msg)
    if reason is not None:
        raise ImageDecodeError(reason)
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    enc = msg.encoding.lower()
    ch = IMAGE_ENCODINGS[enc]
    data = msg.data
    try:
        buf = np.frombuffer(data, dtype=np.uint8)
    except (TypeError, ValueError):  # a list of ints (duck-typed messages)
        try:
            buf = np.asarray(data, dtype=np.uint8)
        except (TypeError, ValueError, OverflowError) as exc:
            raise ImageDecodeError(f"image data is not bytes: {exc}") from exc
    if buf.size != step * h:  # a buffer of wider items than bytes
        raise ImageDecodeError(f"image data is {buf.size} bytes, expected step {step} x height {h} = {step * h}")
    img = buf.reshape(h, step)[:, :w * ch].reshape(h, w, ch)
    if enc == "mono8":
        return np.repeat(img, 3, axis=2)
    if enc.startswith("bgr"):
        img = img[..., 2::-1]
    return np.ascontiguousarray(img[..., :3])


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
