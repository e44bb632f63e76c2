"""Flood /vidplan/plan with PlanChunks and publish an e-stop in the middle of the flood (a process of its own, so the
flood does not share the test process's GIL with the observer that watches the arm).

Chunks are valid and keep the arm moving: each one runs from the sim's latest end-effector pose (/ee_pose) in 5
steps of 0.4 s to a target 20 cm along −y of where the flood began, stamped with the sim's /clock, so every chunk the
executor gets to replaces the previous one and the arm keeps going until the e-stop latches. Writes JSON to
``--out``: when the e-stop was published (``t_estop`` monotonic, ``t_estop_wall`` wall time to compare with ROS log
stamps, ``t_estop_sim`` sim time), the chunks sent before and after it and the flood's duration.

    python flood_chunks.py --count 3000 --estop-after 1500 --out flood.json
"""

from __future__ import annotations

import argparse
import json
import threading
import time

import numpy as np
import rclpy
from geometry_msgs.msg import Pose, PoseStamped
from rclpy.duration import Duration
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import Bool

from vidplan_interfaces.msg import PlanChunk


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=3000)
    ap.add_argument("--estop-after", type=int, default=1500)
    ap.add_argument("--out", required=True)
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--preroll-s", type=float, default=1.0, help="chunks at 10 Hz for this long first [s]")
    ap.add_argument("--executor", default="executor", help="node name of the executor the flood is aimed at")
    args = ap.parse_args()

    rclpy.init()
    node = rclpy.create_node("chunk_flood", parameter_overrides=[Parameter("use_sim_time", value=True)])
    ee: list[Pose] = []
    node.create_subscription(PoseStamped, "/ee_pose", lambda m: ee.append(m.pose), 10)
    plan_pub = node.create_publisher(PlanChunk, "/vidplan/plan", 10)
    estop_pub = node.create_publisher(Bool, "/vidplan/estop", QoSProfile(
        depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL))
    ex = SingleThreadedExecutor()
    ex.add_node(node)
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            ex.spin_once(timeout_sec=0.05)

    spinner = threading.Thread(target=spin, daemon=True)
    spinner.start()

    def executor_subscribes(topic: str, node_name: str) -> bool:
        # the executor itself, not just any subscriber (the observer records /vidplan/plan, the planner listens to
        # /vidplan/estop): a flood that starts before this process has discovered the executor proves nothing
        return any(i.node_name == node_name for i in node.get_subscriptions_info_by_topic(topic))

    end = time.monotonic() + args.timeout
    while (not ee or node.get_clock().now().nanoseconds == 0 or not executor_subscribes("/vidplan/plan", args.executor)
           # the executor's estop subscriptions are on its own participant, node <name>_estop (EstopListener)
           or not executor_subscribes("/vidplan/estop", f"{args.executor}_estop")):
        if time.monotonic() > end:
            raise SystemExit(f"no /ee_pose, /clock or subscription of the '{args.executor}' node")
        time.sleep(0.05)
    time.sleep(0.5)  # let the executor's subscriptions match fully
    start = ee[-1]
    target = np.array([start.position.x, start.position.y - 0.20, start.position.z])
    out = {"sent_before": 0, "sent_after": 0, "t_estop": None}
    t0 = time.monotonic()
    # pre-roll at a planner's pace so the arm is up to speed when the flood (and the e-stop in it) comes
    preroll = int(args.preroll_s * 10)
    for i in range(args.count + preroll):
        if i < preroll:
            time.sleep(0.1)
        elif i - preroll == args.estop_after:
            out["t_estop"], out["t_estop_wall"] = time.monotonic(), time.time()
            out["t_estop_sim"] = node.get_clock().now().nanoseconds * 1e-9
            estop_pub.publish(Bool(data=True))
        now = ee[-1]
        here = np.array([now.position.x, now.position.y, now.position.z])
        msg = PlanChunk()
        msg.header.stamp = node.get_clock().now().to_msg()
        msg.header.frame_id = "panda_link0"
        msg.plan_id, msg.dt = i + 1, 0.4
        poses = []
        for k in range(5):
            p = Pose()
            p.position.x, p.position.y, p.position.z = (float(x) for x in here + (target - here) * (k + 1) / 5)
            p.orientation = start.orientation
            poses.append(p)
        msg.poses, msg.gripper = poses, [0.0] * 5
        plan_pub.publish(msg)
        if i >= preroll:
            out["sent_after" if out["t_estop"] is not None else "sent_before"] += 1
        if i % 100 == 99:
            time.sleep(0.01)  # a breath every 100 chunks: /ee_pose keeps flowing in, so the chunks follow the arm
    out["duration_s"] = time.monotonic() - t0
    # the e-stop is reliable: keep this publisher until every reliable reader has acknowledged it (a process that
    # exits first takes an undelivered sample with it)
    out["estop_acked"] = estop_pub.wait_for_all_acked(Duration(seconds=10.0))
    with open(args.out, "w") as f:
        json.dump(out, f)
    print(json.dumps(out), flush=True)
    time.sleep(1.0)  # keep the latched estop published while the executor receives it
    stop.set()
    spinner.join(timeout=5)
    ex.shutdown()
    node.destroy_node()
    rclpy.shutdown()


if __name__ == "__main__":
    main()
