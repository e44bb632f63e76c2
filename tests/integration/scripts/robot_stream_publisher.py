"""Test peer process: a fake-free stand-in for a robot's sensor streams — three rgb8 cameras, /joint_states and
/ee_pose at 15 Hz (arm at the Franka "ready" pose, EE pose from the real kinematics), with one camera that can be
silenced after some time (--silence VIEW --after S). Used by tests/integration/test_planner_node.py.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import rclpy
from geometry_msgs.msg import PoseStamped
from rclpy.executors import ExternalShutdownException
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState

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
    a = ap.parse_args()
    rclpy.init()
    node = rclpy.create_node("robot_stream_publisher")
    views = ("left", "right", "wrist")
    cams = {v: node.create_publisher(Image, f"/cameras/{v}/image_raw", qos_profile_sensor_data) for v in views}
    js_pub = node.create_publisher(JointState, "/joint_states", 10)
    ee_pub = node.create_publisher(PoseStamped, "/ee_pose", 10)
    kin = PandaKinematics()
    q = kin.HOME_Q.copy()
    ee = kin.fk_action(q)
    pose = pose_from_vec(np.concatenate([ee[:3], euler_to_quat(ee[3:6])]))
    rng = np.random.default_rng(0)
    base = {v: rng.integers(0, 255, (a.height, a.width, 3), dtype=np.uint8) for v in views}
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
            img = np.roll(base[v], frame, axis=1)
            msg = Image(height=a.height, width=a.width, encoding="rgb8", step=a.width * 3, data=img.tobytes())
            msg.header.stamp, msg.header.frame_id = stamp, f"{v}_camera_optical_frame"
            cams[v].publish(msg)
        js = JointState(name=[f"panda_joint{i}" for i in range(1, 8)] + ["panda_finger_joint1"],
                        position=[*map(float, q), 0.04])
        js.header.stamp = stamp
        js_pub.publish(js)
        ps = PoseStamped(pose=pose)
        ps.header.stamp, ps.header.frame_id = stamp, "panda_link0"
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
