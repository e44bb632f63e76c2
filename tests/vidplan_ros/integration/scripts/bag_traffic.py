"""Test peer process for the record/replay tests (tests/vidplan_ros/integration/test_record_replay.py).

pub:  publishes ``--count`` messages on each of /rr/chatter (std_msgs/String), /rr/pose (geometry_msgs/PoseStamped)
      and /rr/camera/image_raw (sensor_msgs/Image, 48×64 rgb8) at ``--rate`` Hz, as serialised bytes (so the
      exact wire bytes are known), after every publisher has ``--wait-subs`` subscribers; waits until all are
      acknowledged, writes what it sent to ``--out`` (JSON: topic → list of base64 payloads, in order) and exits.
sink: subscribes (raw, reliable; transient-local with ``--latched``) to ``--topics`` ("name:pkg/msg/Type" ...), and
      optionally /clock, until it has ``--expect`` messages in total or ``--timeout`` s pass; prints its per-topic
      counts whenever they changed in the last second; writes what it got to ``--out`` (same format, plus the
      /clock stamps in ns under "__clock__") and exits 0 (1 on timeout).
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import time

import numpy as np
import rclpy
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import serialize_message

TOPICS = {
    "/rr/chatter": "std_msgs/msg/String",
    "/rr/pose": "geometry_msgs/msg/PoseStamped",
    "/rr/camera/image_raw": "sensor_msgs/msg/Image",
}
RELIABLE = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1000, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)
LATCHED = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1000, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)


def _cls(msgtype: str) -> type:
    import importlib

    pkg, sub, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{pkg}.{sub}"), name)


def _messages(i: int, rng: np.random.Generator) -> dict[str, object]:
    from geometry_msgs.msg import PoseStamped
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    s = String(data=f"msg {i} " + "é" * (i % 7))  # odd lengths exercise CDR alignment
    p = PoseStamped()
    p.header.frame_id = "panda_link0"
    p.header.stamp.sec, p.header.stamp.nanosec = 1000 + i, 123 * i
    p.pose.position.x, p.pose.position.y, p.pose.position.z = 0.1 * i, -0.2 * i, 0.3
    p.pose.orientation.w = 1.0
    img = Image(height=48, width=64, encoding="rgb8", step=64 * 3)
    img.header.frame_id = "camera"
    img.header.stamp.sec = 1000 + i
    img.data = rng.integers(0, 256, 48 * 64 * 3, dtype=np.uint8).tobytes()
    return {"/rr/chatter": s, "/rr/pose": p, "/rr/camera/image_raw": img}


def _dump(path: str, data: dict[str, list]) -> None:
    with open(path, "w") as f:
        json.dump(data, f)


def run_pub(args: argparse.Namespace) -> int:
    rclpy.init()
    node = rclpy.create_node("rr_pub")
    pubs = {t: node.create_publisher(_cls(ty), t, RELIABLE) for t, ty in TOPICS.items()}
    end = time.monotonic() + args.timeout
    while any(p.get_subscription_count() < args.wait_subs for p in pubs.values()):
        if time.monotonic() > end:
            print("timeout waiting for subscribers", file=sys.stderr)
            return 1
        time.sleep(0.05)
    time.sleep(0.3)  # let the matched readers finish their handshake
    rng = np.random.default_rng(0)
    sent: dict[str, list[str]] = {t: [] for t in TOPICS}
    t0 = time.monotonic()
    for i in range(args.count):
        for topic, msg in _messages(i, rng).items():
            raw = serialize_message(msg)
            pubs[topic].publish(raw)
            sent[topic].append(base64.b64encode(raw).decode())
        time.sleep(max(0.0, t0 + (i + 1) / args.rate - time.monotonic()))
    for p in pubs.values():
        p.wait_for_all_acked(rclpy.duration.Duration(seconds=10))
    _dump(args.out, sent)
    print(f"published {args.count} per topic", flush=True)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


def run_sink(args: argparse.Namespace) -> int:
    rclpy.init()
    node = rclpy.create_node("rr_sink")
    got: dict[str, list] = {}
    total = [0]

    def on_msg(topic: str, data: bytes) -> None:
        got[topic].append(base64.b64encode(data).decode())
        total[0] += 1

    subs = []
    for spec in args.topics:
        topic, _, msgtype = spec.partition(":")
        got[topic] = []
        subs.append(node.create_subscription(_cls(msgtype), topic, lambda d, t=topic: on_msg(t, d),
                                             LATCHED if args.latched else RELIABLE,
                                             raw=True))
    if args.clock:
        from rosgraph_msgs.msg import Clock

        got["__clock__"] = []
        subs.append(node.create_subscription(
            Clock, "/clock", lambda m: got["__clock__"].append(m.clock.sec * 10**9 + m.clock.nanosec), 100))
    print("sink ready", flush=True)
    end = time.monotonic() + args.timeout
    shown, next_show = "", time.monotonic() + 1.0
    while total[0] < args.expect and time.monotonic() < end:
        rclpy.spin_once(node, timeout_sec=0.1)
        if time.monotonic() >= next_show:  # a test that gives up on this sink sees how far it got
            now = str({t: len(v) for t, v in got.items()})
            if now != shown:
                print(f"sink has {now}", flush=True)
            shown, next_show = now, time.monotonic() + 1.0
    _dump(args.out, got)
    print(f"sink got {total[0]}", flush=True)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0 if total[0] >= args.expect else 1


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["pub", "sink"])
    ap.add_argument("--count", type=int, default=30)
    ap.add_argument("--rate", type=float, default=30.0)
    ap.add_argument("--wait-subs", type=int, default=1)
    ap.add_argument("--topics", nargs="*", default=[])
    ap.add_argument("--expect", type=int, default=0)
    ap.add_argument("--clock", action="store_true")
    ap.add_argument("--latched", action="store_true")
    ap.add_argument("--timeout", type=float, default=30.0)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    return run_pub(args) if args.mode == "pub" else run_sink(args)


if __name__ == "__main__":
    sys.exit(main())
