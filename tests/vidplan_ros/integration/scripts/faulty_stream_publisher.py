"""Test peer process: the robot's sensor streams (three rgb8 cameras, /joint_states, /ee_pose at 15 Hz, arm at the
Franka "ready" pose, EE pose from the real kinematics) with faults switched on and off from the test through the
latched topic /test/fault (std_msgs/String; several faults at once separated by commas; ``--fault`` sets the first).
While a fault is on, the faulty message replaces the good one:

    none                   every stream good
    zero_image:VIEW        VIEW's images are 0x0 (no data)
    bad_encoding:VIEW      VIEW's images say encoding "yuv422" (otherwise well formed)
    short_data:VIEW        VIEW's images carry half their data
    joints_no_positions    /joint_states has names but no positions
    joints_nan             /joint_states has a NaN position for panda_joint4
    nan_ee                 /ee_pose has a NaN position

Prints "fault: <value>" when a fault takes effect. Used by tests/vidplan_ros/integration/test_planner_faults.py.
"""

from __future__ import annotations

import argparse

import numpy as np
import rclpy
from geometry_msgs.msg import PoseStamped
from rclpy.executors import ExternalShutdownException
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String

from vidplan_core.kinematics import PandaKinematics
from vidplan_core.spaces import euler_to_quat
from vidplan_ros.conversions import pose_from_vec

LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--width", type=int, default=40)
    ap.add_argument("--height", type=int, default=24)
    ap.add_argument("--rate", type=float, default=15.0)
    ap.add_argument("--fault", default="none", help="fault(s) from the start, as on /test/fault")
    a = ap.parse_args()
    rclpy.init()
    node = rclpy.create_node("faulty_stream_publisher")
    views = ("left", "right", "wrist")
    cams = {v: node.create_publisher(Image, f"/cameras/{v}/image_raw", qos_profile_sensor_data) for v in views}
    js_pub = node.create_publisher(JointState, "/joint_states", 10)
    ee_pub = node.create_publisher(PoseStamped, "/ee_pose", 10)
    faults: set[tuple[str, str]] = set()  # (kind, view or "")

    def set_faults(text: str) -> None:
        faults.clear()
        faults.update(tuple(f.strip().partition(":")[::2]) for f in text.split(",") if f.strip() != "none")
        print(f"fault: {text}", flush=True)

    set_faults(a.fault)
    node.create_subscription(String, "/test/fault", lambda m: set_faults(m.data), LATCHED)

    kin = PandaKinematics()
    q = kin.HOME_Q.copy()
    ee = kin.fk_action(q)
    ee_vec = np.concatenate([ee[:3], euler_to_quat(ee[3:6])])
    rng = np.random.default_rng(0)
    base = {v: rng.integers(0, 255, (a.height, a.width, 3), dtype=np.uint8) for v in views}
    frame = 0

    def tick() -> None:
        nonlocal frame
        stamp = node.get_clock().now().to_msg()
        for v in views:
            img = np.roll(base[v], frame, axis=1)
            msg = Image(height=a.height, width=a.width, encoding="rgb8", step=a.width * 3, data=img.tobytes())
            if ("zero_image", v) in faults:
                msg = Image(height=0, width=0, encoding="rgb8", step=0, data=b"")
            elif ("bad_encoding", v) in faults:
                msg.encoding = "yuv422"
            elif ("short_data", v) in faults:
                msg.data = img.tobytes()[: img.size // 2]
            msg.header.stamp, msg.header.frame_id = stamp, f"{v}_camera_optical_frame"
            cams[v].publish(msg)
        names = [f"panda_joint{i}" for i in range(1, 8)] + ["panda_finger_joint1"]
        positions = [*map(float, q), 0.04]
        if ("joints_no_positions", "") in faults:
            positions = []
        elif ("joints_nan", "") in faults:
            positions[3] = float("nan")
        js = JointState(name=names, position=positions)
        js.header.stamp = stamp
        js_pub.publish(js)
        ps = PoseStamped(pose=pose_from_vec(ee_vec))  # a new message each tick: faults edit it
        if ("nan_ee", "") in faults:
            ps.pose.position.x = float("nan")
        ps.header.stamp, ps.header.frame_id = stamp, "panda_link0"
        ee_pub.publish(ps)
        frame += 1

    node.create_timer(1.0 / a.rate, tick)
    print("faulty stream publisher ready", flush=True)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
