"""Tiny three-camera publisher for tests/vidplan_ros/integration/test_camera_sync.py (a separate process on loopback
DDS).

Publishes small rgb8 images on /cameras/{left,right,wrist}/image_raw at --rate Hz, stamped with the node clock plus
a fixed per-camera offset (--offsets-ms left right wrist), so the subscriber sees a known skew. --stop-wrist-after S
stops the wrist camera S seconds after all three publishers have a subscriber (so slow discovery does not eat the
window) and prints "wrist stopped; last wrist stamp <s>"; --reliability picks the publishers' QoS reliability.
"""

from __future__ import annotations

import argparse
import sys
import time

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from vidplan_ros.conversions import sec_to_stamp


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=float, default=15.0)
    ap.add_argument("--offsets-ms", type=float, nargs=3, default=[0.0, 5.0, 10.0])
    ap.add_argument("--stop-wrist-after", type=float, default=0.0)
    ap.add_argument("--duration", type=float, default=30.0)
    ap.add_argument("--reliability", choices=["best_effort", "reliable"], default="best_effort")
    a = ap.parse_args()
    rclpy.init()
    node = rclpy.create_node("test_camera_publisher")
    qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT if a.reliability == "best_effort"
                     else ReliabilityPolicy.RELIABLE)
    views = ("left", "right", "wrist")
    pubs = {v: node.create_publisher(Image, f"/cameras/{v}/image_raw", qos) for v in views}
    t0 = time.monotonic()
    matched_at: list[float] = []
    frame = 0
    last_wrist: float | None = None  # stamp [s] of the last wrist frame sent
    wrist_stop_announced = False

    def tick() -> None:
        nonlocal frame, last_wrist, wrist_stop_announced
        if not matched_at and all(p.get_subscription_count() > 0 for p in pubs.values()):
            matched_at.append(time.monotonic())
        elapsed = time.monotonic() - matched_at[0] if matched_at else 0.0
        now = node.get_clock().now().nanoseconds * 1e-9
        for v, off in zip(views, a.offsets_ms, strict=True):
            if v == "wrist" and a.stop_wrist_after and elapsed > a.stop_wrist_after:
                if last_wrist is not None and not wrist_stop_announced:  # the test: no triplet newer than this
                    print(f"wrist stopped; last wrist stamp {last_wrist:.9f}", flush=True)
                    wrist_stop_announced = True
                continue
            msg = Image(height=4, width=4, encoding="rgb8", step=12, data=bytes([frame % 256]) * 48)
            msg.header.stamp = sec_to_stamp(now + off * 1e-3)
            if v == "wrist":
                last_wrist = now + off * 1e-3
            msg.header.frame_id = f"{v}_camera_optical_frame"
            pubs[v].publish(msg)
        frame += 1
        if time.monotonic() - t0 > a.duration:
            raise SystemExit(0)

    node.create_timer(1.0 / a.rate, tick)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException, SystemExit):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
