"""ROS 2 messages as CDR bytes without rclpy: build, serialise and decode the robot's topics via ``rosbags``.

``rosbags`` ships its own typestore (ROS 2 Kilted definitions) and CDR (de)serialiser, so vidplan_core can write
and read the exact bytes a ROS 2 node publishes without importing rclpy. Custom vidplan types
(``vidplan_interfaces/msg/PlanChunk``) are registered from their ``.msg`` files through
:class:`vidplan_core.data.bags.MessageDefinitions`.

Conventions (see :mod:`vidplan_core.spaces`): poses in the robot base frame [m], orientation quaternions in ROS
order (x, y, z, w) on the wire and Euler xyz [rad] in 7-D actions; gripper 0 = open .. 1 = closed.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from vidplan_core.data.bags import MessageDefinitions
from vidplan_core.spaces import euler_to_quat, quat_to_euler

__all__ = ["Codec", "stamp_ns"]


def stamp_ns(msg: Any) -> int:
    """Header stamp of a decoded message in ns (0 when it has no header)."""
    header = getattr(msg, "header", None)
    if header is None:
        return 0
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


class Codec:
    """Build and (de)serialise the messages vidplan records, with the ROS 2 Kilted typestore of ``rosbags``.

    Args:
        definitions: a :class:`vidplan_core.data.bags.MessageDefinitions` whose typestore is used (so custom
            types registered for a :class:`~vidplan_core.data.bag_writer.BagWriter` serialise too); a new one if None.
    """

    def __init__(self, definitions: Any | None = None):

        self.definitions = definitions or MessageDefinitions()
        self.ts = self.definitions.typestore

    # -- generic
    def type(self, msgtype: str) -> Any:
        """The message class of ``pkg/msg/Name`` (registering vidplan's own types on first use)."""
        if msgtype not in self.ts.types:
            self.definitions.get(msgtype)  # registers it from its .msg file
        return self.ts.types[msgtype]

    def serialize(self, msg: Any) -> bytes:
        """CDR bytes of a message built by this codec (as a ROS 2 publisher sends them)."""
        return bytes(self.ts.serialize_cdr(msg, msg.__msgtype__))

    def deserialize(self, data: bytes, msgtype: str) -> Any:
        """Decode CDR bytes of type ``msgtype``."""
        self.type(msgtype)
        return self.ts.deserialize_cdr(data, msgtype)

    def header(self, t_ns: int, frame_id: str) -> Any:
        Time = self.type("builtin_interfaces/msg/Time")
        Header = self.type("std_msgs/msg/Header")
        return Header(stamp=Time(sec=int(t_ns // 1_000_000_000), nanosec=int(t_ns % 1_000_000_000)),
                      frame_id=frame_id)

    def pose(self, action: np.ndarray) -> Any:
        """geometry_msgs/Pose from the first six entries of a 7-D action (xyz [m], Euler xyz [rad])."""
        Pose = self.type("geometry_msgs/msg/Pose")
        Point = self.type("geometry_msgs/msg/Point")
        Quat = self.type("geometry_msgs/msg/Quaternion")
        a = np.asarray(action, dtype=np.float64)
        q = euler_to_quat(a[3:6])
        return Pose(position=Point(x=float(a[0]), y=float(a[1]), z=float(a[2])),
                    orientation=Quat(x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3])))

    # -- builders (return CDR bytes)
    def image(self, t_ns: int, frame_id: str, rgb: np.ndarray) -> bytes:
        """sensor_msgs/Image, rgb8, from an (H, W, 3) uint8 array."""
        rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"image must have shape (H, W, 3) uint8, got {rgb.shape}")
        Image = self.type("sensor_msgs/msg/Image")
        h, w, _ = rgb.shape
        return self.serialize(Image(header=self.header(t_ns, frame_id), height=h, width=w, encoding="rgb8",
                                    is_bigendian=0, step=3 * w, data=rgb.reshape(-1)))

    def camera_info(self, t_ns: int, frame_id: str, width: int, height: int, K: np.ndarray,
                    distortion: list[float] | None = None) -> bytes:
        """sensor_msgs/CameraInfo (plumb_bob) with intrinsics K (3×3, [px]) for an image of width×height."""
        CameraInfo = self.type("sensor_msgs/msg/CameraInfo")
        Roi = self.type("sensor_msgs/msg/RegionOfInterest")
        K = np.asarray(K, dtype=np.float64).reshape(3, 3)
        P = np.zeros((3, 4))
        P[:, :3] = K
        d = np.asarray(distortion if distortion is not None else [0.0] * 5, dtype=np.float64)
        return self.serialize(CameraInfo(
            header=self.header(t_ns, frame_id), height=int(height), width=int(width), distortion_model="plumb_bob",
            d=d, k=K.reshape(-1), r=np.eye(3).reshape(-1), p=P.reshape(-1), binning_x=0, binning_y=0,
            roi=Roi(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)))

    def joint_state(self, t_ns: int, names: list[str], position: np.ndarray,
                    velocity: np.ndarray | None = None) -> bytes:
        """sensor_msgs/JointState (positions [rad or m], velocities [rad/s or m/s])."""
        JointState = self.type("sensor_msgs/msg/JointState")
        pos = np.asarray(position, dtype=np.float64).reshape(-1)
        if len(pos) != len(names):
            raise ValueError(f"joint_state: {len(names)} names but {len(pos)} positions")
        vel = np.zeros(0) if velocity is None else np.asarray(velocity, dtype=np.float64).reshape(-1)
        return self.serialize(JointState(header=self.header(t_ns, ""), name=list(names), position=pos,
                                         velocity=vel, effort=np.zeros(0)))

    def pose_stamped(self, t_ns: int, frame_id: str, action: np.ndarray) -> bytes:
        """geometry_msgs/PoseStamped from a 6- or 7-D pose (xyz [m], Euler xyz [rad])."""
        PoseStamped = self.type("geometry_msgs/msg/PoseStamped")
        return self.serialize(PoseStamped(header=self.header(t_ns, frame_id), pose=self.pose(action)))

    def plan_chunk(self, t_ns: int, frame_id: str, actions: np.ndarray, dt: float, instruction: str = "",
                   plan_id: int = 0) -> bytes:
        """vidplan_interfaces/PlanChunk from an (H, 7) action array (uncertainty/value left empty)."""
        PlanChunk = self.type("vidplan_interfaces/msg/PlanChunk")
        a = np.asarray(actions, dtype=np.float64).reshape(-1, 7)
        return self.serialize(PlanChunk(
            header=self.header(t_ns, frame_id), plan_id=int(plan_id), dt=float(dt),
            poses=[self.pose(x) for x in a], gripper=a[:, 6].astype(np.float32),
            uncertainty=np.zeros(0, np.float32), value=np.zeros(0, np.float32), instruction=instruction))

    def string(self, text: str) -> bytes:
        """std_msgs/String."""
        return self.serialize(self.type("std_msgs/msg/String")(data=text))

    def json_string(self, obj: Any) -> bytes:
        """std_msgs/String holding ``json.dumps(obj)``."""
        return self.string(json.dumps(obj, sort_keys=True))

    # -- decoders of decoded messages
    @staticmethod
    def pose_to_vec(pose: Any) -> np.ndarray:
        """geometry_msgs/Pose → (6,) [x, y, z, rx, ry, rz] (Euler xyz [rad])."""
        p, q = pose.position, pose.orientation
        euler = quat_to_euler(np.array([q.x, q.y, q.z, q.w], dtype=np.float64))
        return np.array([p.x, p.y, p.z, *euler], dtype=np.float64)
