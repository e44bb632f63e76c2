"""Test peer process: a fake-free stand-in for a robot's sensor streams — three rgb8 cameras, /joint_states and
/ee_pose at 15 Hz (arm at the Franka "ready" pose, EE pose from the real kinematics), with one camera that can be
silenced after some time (--silence VIEW --after S). --compressed jpeg|png publishes the cameras as
image_transport does (sensor_msgs/CompressedImage on <topic>/compressed) instead; --static keeps every frame the same
(a fixed scene: plans are then reproducible across runs). Used by tests/vidplan_ros/integration/test_planner_node.py.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import rclpy
from geometry_msgs.msg import PoseStamped
from rclpy.executors import ExternalShutdownException
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, JointState

from vidplan_core.calibration import load_calibration
from vidplan_core.images import encode_compressed
from vidplan_core.kinematics import PandaKinematics
from vidplan_core.spaces import euler_to_quat
from vidplan_ros.conversions import pose_from_vec


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--height", type=int, default=32)
    ap.add_argument("--rate", type=float, default=15.0)
    ap.add_argument("--silence", default="", help="camera view to stop publishing")
    ap.add_argument("--after", type=float, default=0.0, help="seconds after the first subscriber")
    ap.add_argument("--compressed", default="", choices=("", "jpeg", "png"), help="publish CompressedImage")
    ap.add_argument("--quality", type=int, default=95, help="JPEG quality")
    ap.add_argument("--static", action="store_true", help="the same image every frame")
    ap.add_argument("--prefix", default="panda", help="joint name prefix (fr3 as franka_ros2 names them)")
    ap.add_argument("--no-ee-pose", action="store_true", help="no /ee_pose (as franka_ros2: joints only)")
    ap.add_argument("--camera-info", default="", choices=("", "calibrated", "wrong-fx"),
                    help="publish /cameras/<view>/camera_info: the shipped calibration, or the left camera's fx +20 %%")
    a = ap.parse_args()
    rclpy.init()
    node = rclpy.create_node("robot_stream_publisher")
    views = ("left", "right", "wrist")
    suffix, msg_type = ("/compressed", CompressedImage) if a.compressed else ("", Image)
    cams = {v: node.create_publisher(msg_type, f"/cameras/{v}/image_raw{suffix}", qos_profile_sensor_data)
            for v in views}
    js_pub = node.create_publisher(JointState, "/joint_states", 10)
    infos = {}
    if a.camera_info:
        calib = load_calibration()
        for v in views:
            c = calib.cameras[v].scaled(a.width, a.height)
            fx = c.fx * (1.2 if a.camera_info == "wrong-fx" and v == "left" else 1.0)
            infos[v] = (node.create_publisher(CameraInfo, f"/cameras/{v}/camera_info", qos_profile_sensor_data),
                        CameraInfo(width=a.width, height=a.height, distortion_model="plumb_bob", d=[0.0] * 5,
                                   k=[fx, 0.0, c.cx, 0.0, c.fy, c.cy, 0.0, 0.0, 1.0]))
    ee_pub = node.create_publisher(PoseStamped, "/ee_pose", 10)
    kin = PandaKinematics()
    q = kin.HOME_Q.copy()
    ee = kin.fk_action(q)
    pose = pose_from_vec(np.concatenate([ee[:3], euler_to_quat(ee[3:6])]))
    rng = np.random.default_rng(0)
    base = {v: rng.integers(0, 255, (a.height, a.width, 3), dtype=np.uint8) for v in views}
    if a.static:  # a camera-like picture (smooth shading, a few objects): what JPEG is made for, unlike noise
        y, x = np.mgrid[0:a.height, 0:a.width] / max(a.height, a.width)
        for i, v in enumerate(views):
            img = np.stack([80 + 120 * x, 90 + 100 * y, np.full_like(x, 60.0 + 40 * i)], axis=2)
            for _ in range(3):
                r0, c0 = rng.integers(0, a.height - 8), rng.integers(0, a.width - 8)
                img[r0:r0 + 8, c0:c0 + 8] = rng.integers(0, 255, 3)
            base[v] = img.astype(np.uint8)
    started: list[float] = []
    frame = 0

    def tick() -> None:
        nonlocal frame
        if not started and any(p.get_subscription_count() for p in cams.values()):
            started.append(time.monotonic())
        stamp = node.get_clock().now().to_msg()
        silenced = bool(a.silence and started and time.monotonic() - started[0] > a.after)
        for v in views:
            if silenced and v == a.silence:
                continue
            img = base[v] if a.static else np.roll(base[v], frame, axis=1)
            if a.compressed:
                fmt, data = encode_compressed(np.ascontiguousarray(img), a.compressed, a.quality)
                msg = CompressedImage(format=fmt, data=data)
            else:
                msg = Image(height=a.height, width=a.width, encoding="rgb8", step=a.width * 3, data=img.tobytes())
            msg.header.stamp, msg.header.frame_id = stamp, f"{v}_camera_optical_frame"
            cams[v].publish(msg)
        for v, (pub, info) in infos.items():
            info.header.stamp, info.header.frame_id = stamp, f"{v}_camera_optical_frame"
            pub.publish(info)
        js = JointState(name=[f"{a.prefix}_joint{i}" for i in range(1, 8)] + [f"{a.prefix}_finger_joint1"],
                        position=[*map(float, q), 0.04])
        js.header.stamp = stamp
        js_pub.publish(js)
        if not a.no_ee_pose:
            ps = PoseStamped(pose=pose)
            ps.header.stamp, ps.header.frame_id = stamp, f"{a.prefix}_link0"
            ee_pub.publish(ps)
        frame += 1

    node.create_timer(1.0 / a.rate, tick)
    print("robot stream publisher ready", flush=True)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
