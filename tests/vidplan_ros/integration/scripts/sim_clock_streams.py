"""Test peer process: a stand-in for a simulator's outputs in sim time — /clock (at --clock-rate Hz, sim time
starting at --start s and advancing with the wall clock) and the robot's sensor streams stamped with that sim time
(three rgb8 cameras, /joint_states, /ee_pose at --rate Hz; arm at the Franka "ready" pose, EE pose from the real
kinematics). Killing it (SIGKILL) is a sim that dies: /clock and every stream stop at once.

Prints "sim clock streams ready" once publishing. Used by tests/vidplan_ros/integration/test_planner_sim_clock.py.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import rclpy
from geometry_msgs.msg import PoseStamped
from rclpy.executors import ExternalShutdownException
from rclpy.qos import qos_profile_sensor_data
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image, JointState

from vidplan_core.kinematics import PandaKinematics
from vidplan_core.spaces import euler_to_quat
from vidplan_ros.conversions import pose_from_vec, sec_to_stamp


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--width", type=int, default=40)
    ap.add_argument("--height", type=int, default=24)
    ap.add_argument("--rate", type=float, default=15.0, help="camera and state rate [Hz]")
    ap.add_argument("--clock-rate", type=float, default=100.0, help="/clock rate [Hz]")
    ap.add_argument("--start", type=float, default=1000.0, help="sim time at start-up [s]")
    a = ap.parse_args()
    rclpy.init()
    node = rclpy.create_node("sim_clock_streams")
    t0 = time.monotonic()

    def sim_now() -> float:
        return a.start + time.monotonic() - t0

    views = ("left", "right", "wrist")
    cams = {v: node.create_publisher(Image, f"/cameras/{v}/image_raw", qos_profile_sensor_data) for v in views}
    clock_pub = node.create_publisher(Clock, "/clock", 10)
    js_pub = node.create_publisher(JointState, "/joint_states", 10)
    ee_pub = node.create_publisher(PoseStamped, "/ee_pose", 10)
    kin = PandaKinematics()
    q = kin.HOME_Q.copy()
    ee = kin.fk_action(q)
    ee_vec = np.concatenate([ee[:3], euler_to_quat(ee[3:6])])
    rng = np.random.default_rng(0)
    base = {v: rng.integers(0, 255, (a.height, a.width, 3), dtype=np.uint8) for v in views}
    frame = 0

    def tick() -> None:
        nonlocal frame
        stamp = sec_to_stamp(sim_now())
        for v in views:
            msg = Image(height=a.height, width=a.width, encoding="rgb8", step=a.width * 3,
                        data=np.roll(base[v], frame, axis=1).tobytes())
            msg.header.stamp, msg.header.frame_id = stamp, f"{v}_camera_optical_frame"
            cams[v].publish(msg)
        js = JointState(name=[f"panda_joint{i}" for i in range(1, 8)] + ["panda_finger_joint1"],
                        position=[*map(float, q), 0.04])
        js.header.stamp = stamp
        js_pub.publish(js)
        ps = PoseStamped(pose=pose_from_vec(ee_vec))
        ps.header.stamp, ps.header.frame_id = stamp, "panda_link0"
        ee_pub.publish(ps)
        frame += 1

    # wall-clock timers (this node is not on sim time: it makes it)
    node.create_timer(1.0 / a.clock_rate, lambda: clock_pub.publish(Clock(clock=sec_to_stamp(sim_now()))))
    node.create_timer(1.0 / a.rate, tick)
    print("sim clock streams ready", flush=True)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
