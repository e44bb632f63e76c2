"""recorder_node killed with SIGKILL (vidplan issue 13), default flush settings: what it received before the traffic
paused reads back from the interrupted bag (``BagReader(recover=True)``) although nothing closed it — the writer
thread flushes while idle too, not only when the next message comes. Real recorder processes (mcap and sqlite3)
over DDS; the publisher is the record/replay test peer (tests/vidplan_ros/integration/scripts/bag_traffic.py)."""

from __future__ import annotations

import base64
import json
import re
import signal
import sys
import time
from pathlib import Path

import pytest
from proc_helpers import node_executable, started, wait_for

SCRIPT = Path(__file__).parent / "scripts" / "bag_traffic.py"
COUNT = 20  # per topic: 3 × 20 small messages, far below rosbags' 1 MiB mcap chunk
TOPICS = {"/rr/chatter": "std_msgs/msg/String", "/rr/pose": "geometry_msgs/msg/PoseStamped",
          "/rr/camera/image_raw": "sensor_msgs/msg/Image"}
FLUSH_PERIOD_S = 1.0  # recorder_node's default flush_period_s (not passed below: the default is under test)


def _received(proc) -> int:
    counts = re.findall(r"received (\d+),", proc.output())
    return int(counts[-1]) if counts else -1


def test_recorder_killed_while_idle_keeps_everything_it_received(tmp_path):
    from rclpy.serialization import deserialize_message

    from vidplan_core.data.bags import BagError, BagReader
    from vidplan_ros.latency_probe import import_message

    rec = node_executable("vidplan_ros", "recorder_node")
    topics = "[" + ", ".join(f"'{t}:{ty}'" for t, ty in TOPICS.items()) + "]"
    common = ["-p", f"topics:={topics}", "-p", f"output_dir:={tmp_path}", "-p", "stats_interval_s:=0.2",
              "-p", "discovery_timeout_s:=20.0"]
    cmds = {"mcap": [rec, "--ros-args", "-r", "__node:=rec_mcap", "-p", "bag_name:=mcap", *common],
            "sqlite3": [rec, "--ros-args", "-r", "__node:=rec_sqlite", "-p", "bag_name:=sqlite3",
                        "-p", "storage:=sqlite3", *common]}
    with started(cmds["mcap"], tmp_path / "mcap.log") as rm, started(cmds["sqlite3"], tmp_path / "sqlite3.log") as rs:
        recs = {"mcap": rm, "sqlite3": rs}
        with started([sys.executable, str(SCRIPT), "pub", "--count", str(COUNT), "--rate", "30", "--wait-subs", "2",
                      "--timeout", "60", "--out", str(tmp_path / "sent.json")], tmp_path / "pub.log") as pub:
            assert pub.wait(90) == 0, pub.output() + rm.output()[-2000:] + rs.output()[-2000:]
        for r in recs.values():
            assert wait_for(lambda r=r: _received(r) >= 3 * COUNT, 20), r.output()[-3000:]
        # the traffic has stopped: within ~1.25 flush periods the idle writer hands the rest to the file
        time.sleep(FLUSH_PERIOD_S * 1.25 + 1.0)
        logs = {}
        for name, r in recs.items():
            r.signal(signal.SIGKILL)
            assert r.wait(10) == -signal.SIGKILL, name
            logs[name] = r.output()[-3000:]
    sent = {t: [base64.b64decode(x) for x in v] for t, v in json.loads((tmp_path / "sent.json").read_text()).items()}
    for name in recs:
        bag = tmp_path / name
        assert not (bag / "metadata.yaml").exists(), name  # really interrupted
        with pytest.raises(BagError, match=re.escape(str(bag))):
            BagReader(bag)
        with BagReader(bag, recover=True) as reader:
            got: dict[str, list] = {}
            for m in reader.messages():
                got.setdefault(m.topic, []).append(m.data)
            warnings = reader.warnings
        assert {t: len(v) for t, v in got.items()} == {t: COUNT for t in TOPICS}, (name, warnings, logs[name])
        for topic, msgtype in TOPICS.items():  # the same messages in the same order (wire bytes may be padded)
            cls = import_message(msgtype)
            assert [deserialize_message(b, cls) for b in got[topic]] == \
                [deserialize_message(b, cls) for b in sent[topic]], (name, topic)
