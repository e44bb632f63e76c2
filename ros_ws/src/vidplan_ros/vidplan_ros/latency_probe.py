"""latency_probe: measures header-stamp → arrival latency of a stamped topic (PlanChunk by default).

What it measures is what the stamp means. A PlanChunk is stamped when the planner produces it (so that the
executor's max_plan_age_s measures transport): on /vidplan/plan the probe measures DDS delivery. The planner stamps
its PlanDiagnostics with the camera triplet the plan was made from and publishes it right after the chunk: with
``topic:=/vidplan/plan_diagnostics message_type:=vidplan_interfaces/msg/PlanDiagnostics`` (the replay profile's
setting) the probe measures camera stamp → plan out, end to end. Statistics are logged periodically and written to
``report_path`` (JSON) on every report and at shutdown. Messages stamped later than the probe's clock (the clock
jumped back: a looping bag, a sim reset) are not latencies; they are counted as ``discarded_negative``. Nor are the
PlanDiagnostics of cycles that planned nothing (hold, idle, error: stamped with the planner's clock when published,
so their "latency" is about 0): they are counted as ``discarded_not_planned``, and only OK and BUDGET cycles (a
chunk from that camera triplet) are latencies. Counted, a loaded replay whose planner held at first reported a p50
of 0 ms.

Parameters:
    topic (str, "/vidplan/plan"): topic to probe.
    message_type (str, "vidplan_interfaces/msg/PlanChunk"): its type (must have a std_msgs/Header ``header``).
    report_path (str, ""): JSON file for the statistics ("" = log only).
    report_period_s (float, 5.0): seconds between reports.
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path

import numpy as np
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data

from vidplan_ros.conversions import stamp_to_sec
from vidplan_ros.node_runner import run_node


def import_message(type_name: str) -> type:
    """'pkg/msg/Name' → message class; ValueError with the name if it cannot be imported."""
    parts = type_name.split("/")
    if len(parts) != 3:
        raise ValueError(f"message type must look like 'pkg/msg/Name', got {type_name!r}")
    try:
        return getattr(importlib.import_module(f"{parts[0]}.{parts[1]}"), parts[2])
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot import message type {type_name!r}: {exc}") from exc


class LatencyProbe(Node):
    def __init__(self) -> None:
        super().__init__("latency_probe")
        self.topic = self.declare_parameter("topic", "/vidplan/plan").value
        type_name = self.declare_parameter("message_type", "vidplan_interfaces/msg/PlanChunk").value
        self.report_path = self.declare_parameter("report_path", "").value
        period = float(self.declare_parameter("report_period_s", 5.0).value)
        msg_type = import_message(type_name)
        if "header" not in msg_type.get_fields_and_field_types():
            raise ValueError(f"{type_name} has no header; cannot measure latency")
        self.latencies_ms: list[float] = []
        self.discarded_negative = 0  # messages stamped after "now": the clock jumped back (bag loop, sim reset)
        # PlanDiagnostics: only the cycles that planned from a camera triplet carry its stamp
        self.planned = ({msg_type.STATUS_OK, msg_type.STATUS_BUDGET}
                        if "status" in msg_type.get_fields_and_field_types() and hasattr(msg_type, "STATUS_OK")
                        else None)
        self.discarded_not_planned = 0
        self.first_ids: list[int] = []
        qos = qos_profile_sensor_data if type_name.startswith("sensor_msgs/") else 10
        self.sub = self.create_subscription(msg_type, self.topic, self._on_msg, qos)
        self.timer = self.create_timer(period, self.report)
        self.get_logger().info(f"probing {self.topic} ({type_name})")

    def _on_msg(self, msg) -> None:
        if self.planned is not None and msg.status not in self.planned:
            self.discarded_not_planned += 1
            return
        now = self.get_clock().now().nanoseconds * 1e-9
        latency_ms = (now - stamp_to_sec(msg.header.stamp)) * 1e3
        if latency_ms < 0:
            self.discarded_negative += 1
            return
        self.latencies_ms.append(latency_ms)
        if hasattr(msg, "plan_id") and len(self.first_ids) < 1000:
            self.first_ids.append(int(msg.plan_id))

    def stats(self) -> dict:
        """Count and p50/p95/max latency [ms] so far."""
        lat = np.asarray(self.latencies_ms)
        out = {"topic": self.topic, "count": int(lat.size), "plan_ids": self.first_ids[:50],
               "discarded_negative": self.discarded_negative, "discarded_not_planned": self.discarded_not_planned}
        if lat.size:
            out.update(p50_ms=float(np.percentile(lat, 50)), p95_ms=float(np.percentile(lat, 95)),
                       max_ms=float(lat.max()))
        return out

    def report(self) -> None:
        s = self.stats()
        if s["count"]:
            self.get_logger().info(f"{s['count']} msgs, latency p50 {s['p50_ms']:.2f} ms, "
                                   f"p95 {s['p95_ms']:.2f} ms")
        if self.report_path:
            path = Path(self.report_path)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(path.suffix + ".tmp")
            tmp.write_text(json.dumps(s, indent=1))
            os.replace(tmp, path)

    def close(self) -> None:
        self.report()


def main(args: list[str] | None = None) -> None:
    run_node(LatencyProbe, args)
