"""latency_probe on a real node process: on PlanDiagnostics it measures only the cycles that planned from a camera
triplet (OK, BUDGET); hold, idle and error diagnostics are stamped when published, so they are counted apart instead
of pulling the latency towards 0 (a loaded replay once reported a p50 of 0 ms from them)."""

from __future__ import annotations

import json

from proc_helpers import node_executable, started, wait_for
from ros_spin import SpinningNode


def test_probe_counts_only_planned_cycles_of_plan_diagnostics(tmp_path):
    from vidplan_interfaces.msg import PlanDiagnostics

    report = tmp_path / "probe.json"
    probe = [node_executable("vidplan_ros", "latency_probe"), "--ros-args", "-p", "topic:=/probe_test/diag",
             "-p", "message_type:=vidplan_interfaces/msg/PlanDiagnostics", "-p", f"report_path:={report}",
             "-p", "report_period_s:=0.3"]
    me = SpinningNode("probe_test_pub", start=True)
    try:
        pub = me.node.create_publisher(PlanDiagnostics, "/probe_test/diag", 10)
        with started(probe, tmp_path / "probe.log") as proc:
            assert wait_for(lambda: pub.get_subscription_count() > 0, 60), proc.output()
            def send() -> None:
                now = me.node.get_clock().now().nanoseconds
                for status, age_s in ((PlanDiagnostics.STATUS_OK, 0.5), (PlanDiagnostics.STATUS_BUDGET, 0.5),
                                      (PlanDiagnostics.STATUS_ERROR, 0.0), (PlanDiagnostics.STATUS_HOLD, 0.0),
                                      (PlanDiagnostics.STATUS_IDLE, 0.0)):
                    d = PlanDiagnostics(status=status, plan_id=7)
                    t = now - int(age_s * 1e9)  # a plan's stamp: its camera triplet, 0.5 s before
                    d.header.stamp.sec, d.header.stamp.nanosec = t // 10**9, t % 10**9
                    pub.publish(d)

            def enough() -> bool:
                send()
                return report.is_file() and json.loads(report.read_text())["count"] >= 6

            assert wait_for(enough, 60, interval=0.2), proc.output()
        stats = json.loads(report.read_text())
    finally:
        me.close()
    assert stats["discarded_not_planned"] >= stats["count"] * 3 / 2 - 3, stats  # 3 others per 2 planned
    assert 400 < stats["p50_ms"] < 5000 and stats["max_ms"] < 5000, stats  # the planned ones' 0.5 s, not 0
    assert set(stats["plan_ids"]) == {7}, stats
