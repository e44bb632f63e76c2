"""recorder_node on malformed messages (vidplan issue 13): it records raw bytes without decoding them, so a 0x0 image,
a JointState with names but no positions and a NaN pose are neither fatal nor dropped: they land in the bag byte for
byte (a recording of a fault is the evidence of it), and the bag closes valid on SIGTERM."""

from __future__ import annotations

import math
import re
import signal
import sys
from pathlib import Path

from proc_helpers import node_executable, started, wait_for

SCRIPT = Path(__file__).parent / "scripts" / "faulty_stream_publisher.py"
TOPICS = {"/cameras/left/image_raw": "sensor_msgs/msg/Image", "/joint_states": "sensor_msgs/msg/JointState",
          "/ee_pose": "geometry_msgs/msg/PoseStamped"}


def _received(proc) -> int:
    counts = re.findall(r"received (\d+),", proc.output())
    return int(counts[-1]) if counts else -1


def test_recorder_keeps_malformed_messages_and_survives_them(tmp_path):
    from rclpy.serialization import deserialize_message

    from vidplan_core.data.bags import BagReader
    from vidplan_ros.latency_probe import import_message

    rec = node_executable("vidplan_ros", "recorder_node")
    topics = "[" + ", ".join(f"'{t}:{ty}'" for t, ty in TOPICS.items()) + "]"
    cmd = [rec, "--ros-args", "-p", f"topics:={topics}", "-p", f"output_dir:={tmp_path}", "-p", "bag_name:=faults",
           "-p", "stats_interval_s:=0.2", "-p", "discovery_timeout_s:=20.0"]
    pub = [sys.executable, str(SCRIPT), "--fault", "zero_image:left,joints_no_positions,nan_ee"]
    with started(pub, tmp_path / "pub.log") as p, started(cmd, tmp_path / "rec.log") as r:
        assert wait_for(lambda: _received(r) >= 30, 60), (r.output()[-3000:], p.output()[-1000:])
        r.signal(signal.SIGTERM)
        assert r.wait(30) == 0, r.output()[-3000:]
        log = r.output()
    assert "Traceback" not in log and "write errors 0" in log, log[-3000:]
    msgs: dict[str, list] = {}
    with BagReader(tmp_path / "faults") as reader:
        for m in reader.messages():
            msgs.setdefault(m.topic, []).append(deserialize_message(m.data, import_message(TOPICS[m.topic])))
    assert set(msgs) == set(TOPICS), list(msgs)
    img = msgs["/cameras/left/image_raw"][0]
    assert (img.height, img.width, len(img.data)) == (0, 0, 0)
    js = msgs["/joint_states"][0]
    assert len(js.name) == 8 and len(js.position) == 0
    assert math.isnan(msgs["/ee_pose"][0].pose.position.x)
