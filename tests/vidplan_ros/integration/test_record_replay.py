"""Recorder → bag → replay round trip with real processes over DDS (loopback).

One publisher process (String, PoseStamped, 48×64 rgb8 Image; reliable) feeds three peers at once: recorder A
(mcap, no split, one topic's type discovered from the graph), recorder B (sqlite3, split by size) and a raw
"direct" sink whose bytes are the ground truth of what travelled on the wire. Fast DDS pads serialized payloads
to 4 bytes on the wire, so the truth is the received raw bytes, not the publisher's serialize_message output
(which is still compared after deserialisation). Both recorders are stopped with SIGTERM once they have received
everything; then replay processes publish the bags to sink processes.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import shutil
import signal
import sys
from pathlib import Path

import pytest
from proc_helpers import node_executable, started, wait_for

SCRIPT = Path(__file__).parent / "scripts" / "bag_traffic.py"
COUNT = 30  # per topic
TOPICS = {
    "/rr/chatter": "std_msgs/msg/String",
    "/rr/pose": "geometry_msgs/msg/PoseStamped",
    "/rr/camera/image_raw": "sensor_msgs/msg/Image",
}
SPLIT_BYTES = 60_000


def _load(path: Path) -> dict[str, list]:
    data = json.loads(path.read_text())
    return {k: (v if k == "__clock__" else [base64.b64decode(x) for x in v]) for k, v in data.items()}


def _bag_bytes(path: Path) -> dict[str, list[bytes]]:
    from vidplan_core.data.bags import BagReader

    out: dict[str, list[bytes]] = {}
    with BagReader(path) as reader:
        for m in reader.messages():
            out.setdefault(m.topic, []).append(m.data)
    return out


def _received(proc) -> int:
    counts = re.findall(r"received (\d+),", proc.output())
    return int(counts[-1]) if counts else -1


def _sink_cmd(out: Path, topics: dict[str, str], expect: int, clock: bool = False, latched: bool = False,
              timeout: float = 40.0) -> list[str]:
    cmd = [sys.executable, str(SCRIPT), "sink", "--out", str(out), "--expect", str(expect), "--timeout", str(timeout),
           "--topics", *[f"{t}:{ty}" for t, ty in topics.items()]]
    return cmd + (["--clock"] if clock else []) + (["--latched"] if latched else [])


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """Record once with both recorders (SIGTERM at the end) and the direct sink; returns paths and exit codes."""
    tmp = tmp_path_factory.mktemp("record")
    rec = node_executable("vidplan_ros", "recorder_node")
    common = ["-p", "stats_interval_s:=0.2", "-p", "discovery_timeout_s:=20.0", "-p", f"output_dir:={tmp}"]
    # A: /rr/pose without a type (discovered from the graph); B: all typed, sqlite3, split by size
    topics_a = "['/rr/chatter:std_msgs/msg/String', '/rr/pose', '/rr/camera/image_raw:sensor_msgs/msg/Image']"
    topics_b = "[" + ", ".join(f"'{t}:{ty}'" for t, ty in TOPICS.items()) + "]"
    cmd_a = [rec, "--ros-args", "-p", f"topics:={topics_a}", "-p", "bag_name:=a", "-p", f"stats_path:={tmp}/a.json",
             *common]
    cmd_b = [rec, "--ros-args", "-r", "__node:=recorder_b", "-p", f"topics:={topics_b}", "-p", "bag_name:=b",
             "-p", "storage:=sqlite3", "-p", f"split_size_bytes:={SPLIT_BYTES}", "-p", f"stats_path:={tmp}/b.json",
             *common]
    with started(cmd_a, tmp / "rec_a.log") as ra, started(cmd_b, tmp / "rec_b.log") as rb, \
            started(_sink_cmd(tmp / "direct.json", TOPICS, 3 * COUNT), tmp / "direct.log") as direct:
        with started([sys.executable, str(SCRIPT), "pub", "--count", str(COUNT), "--rate", "30", "--wait-subs", "3",
                      "--timeout", "40", "--out", str(tmp / "sent.json")], tmp / "pub.log") as pub:
            assert pub.wait(60) == 0, pub.output() + ra.output() + rb.output()
        assert direct.wait(20) == 0, direct.output()
        # SIGTERM as soon as each recorder has received everything: the writer queue and the open mcap chunk /
        # sqlite transaction must still be flushed by close().
        for proc in (ra, rb):
            assert wait_for(lambda p=proc: _received(p) >= 3 * COUNT, 20), proc.output()
            proc.signal(signal.SIGTERM)
        codes = {"a": ra.wait(20), "b": rb.wait(20)}
        logs = {"a": ra.output(), "b": rb.output()}
    return {"dir": tmp, "a": tmp / "a", "b": tmp / "b", "codes": codes, "logs": logs,
            "sent": _load(tmp / "sent.json"), "direct": _load(tmp / "direct.json")}


def test_sigterm_flushes_everything_with_valid_metadata(recording):
    from mcap.reader import make_reader
    from rosbags.rosbag2 import Reader

    assert recording["codes"] == {"a": 0, "b": 0}, recording["logs"]
    for name in ("a", "b"):
        stats = json.loads((recording["dir"] / f"{name}.json").read_text())
        assert stats["received"] == {t: COUNT for t in TOPICS}, stats
        assert stats["written"] == stats["received"] and sum(stats["dropped"].values()) == 0, stats
    # metadata.yaml (rosbags) and, independently, the mcap file itself (mcap library) agree with the publisher
    with Reader(recording["a"]) as reader:
        assert reader.message_count == 3 * COUNT
        assert {c.topic: c.msgcount for c in reader.connections} == {t: COUNT for t in TOPICS}
        assert {c.topic: c.msgtype for c in reader.connections} == TOPICS
    mcap_file = next(recording["a"].glob("*.mcap"))
    with open(mcap_file, "rb") as f:
        summary = make_reader(f).get_summary()
        assert summary.statistics.message_count == 3 * COUNT


def test_bag_holds_the_wire_bytes_in_order(recording):
    from rclpy.serialization import deserialize_message

    from vidplan_ros.latency_probe import import_message

    bag = _bag_bytes(recording["a"])
    for topic, msgtype in TOPICS.items():
        assert len(recording["direct"][topic]) == COUNT
        assert bag[topic] == recording["direct"][topic], topic  # byte for byte, same order
        cls = import_message(msgtype)
        sent = [deserialize_message(b, cls) for b in recording["sent"][topic]]
        assert [deserialize_message(b, cls) for b in bag[topic]] == sent, topic


def test_split_by_size_gives_valid_bags_whose_union_is_the_input(recording):
    from rosbags.rosbag2 import Reader

    bags = sorted((p for p in recording["b"].iterdir() if p.is_dir()), key=lambda p: int(p.name.split("_")[-1]))
    total_payload = sum(len(b) for msgs in recording["direct"].values() for b in msgs)
    assert len(bags) >= total_payload // SPLIT_BYTES, [b.name for b in bags]
    union: dict[str, list[bytes]] = {t: [] for t in TOPICS}
    for bag in bags:
        assert (bag / "metadata.yaml").is_file() and list(bag.glob("*.db3")), bag
        with Reader(bag) as reader:  # each numbered bag is complete on its own
            payload = 0
            for conn, _, data in reader.messages():
                union[conn.topic].append(bytes(data))
                payload += len(data)
            assert reader.message_count > 0
            assert payload <= SPLIT_BYTES or reader.message_count == 1
    assert union == recording["direct"]
    assert _bag_bytes(recording["b"]) == recording["direct"]  # BagReader merges the split recording


def test_replay_round_trip_is_byte_exact_with_clock(recording, tmp_path):
    """Replay A at 2× with /clock to a raw sink and to a use_sim_time recorder: the sink gets the bag's bytes in
    order, and the second recording is stamped in bag time (from /clock), not wall time."""
    from vidplan_core.data.bags import BagReader

    bag = _bag_bytes(recording["a"])
    with BagReader(recording["a"]) as reader:
        start, end = reader.start_ns, reader.end_ns
    replay = node_executable("vidplan_ros", "replay_node")
    rec = node_executable("vidplan_ros", "recorder_node")
    rec_cmd = [rec, "--ros-args", "-p", "use_sim_time:=true",
               "-p", "topics:=['/rr/chatter', '/rr/pose', '/rr/camera/image_raw']",
               "-p", f"output_dir:={tmp_path}", "-p", "bag_name:=simtime", "-p", "stats_interval_s:=0.2",
               "-p", "discovery_timeout_s:=20.0"]
    # Transient-local publishers (history = the whole bag) and subscribers: a CI run under load once lost messages
    # at a volatile sink although the replay waited for two matched subscribers and a further 2 s (the publisher
    # side matches a subscriber before that subscriber has matched the publisher; DDS discovery is not symmetric,
    # and a volatile reader drops what it got before). Latched, a late-matching reader gets the history instead.
    latched = [f"{t}:reliable:transient_local" for t in TOPICS]
    with started(_sink_cmd(tmp_path / "replayed.json", TOPICS, 3 * COUNT, clock=True, latched=True, timeout=90),
                 tmp_path / "sink.log") as sink, started(rec_cmd, tmp_path / "rec.log") as rc:
        assert wait_for(lambda: "sink ready" in sink.output(), 20)
        with started([replay, "--ros-args", "-p", f"bag:={recording['a']}", "-p", "rate:=2.0",
                      "-p", "publish_clock:=true", "-p", "wait_subscribers:=2", "-p", "start_delay_s:=2.0",
                      "-p", f"qos_overrides:={latched}", "-p", f"qos_depth:={COUNT}"], tmp_path / "replay.log") as rp:
            # The replay stays up (no exit_at_end) until both readers are done: its history is what a late reader gets.
            assert wait_for(lambda: "end of bag: 90 messages published" in rp.output(), 40), rp.output() + rc.output()
            assert sink.wait(30) == 0, sink.output() + rp.output()
            assert wait_for(lambda: _received(rc) >= 3 * COUNT, 20), rc.output()
            assert rp.stop() == 0, rp.output()
        rc.signal(signal.SIGTERM)
        assert rc.wait(20) == 0, rc.output()
    got = _load(tmp_path / "replayed.json")
    for topic in TOPICS:
        assert got[topic] == bag[topic], topic
    clock = got["__clock__"]
    assert clock and all(a <= b for a, b in itertools.pairwise(clock))
    assert start <= clock[0] and clock[-1] <= end
    with BagReader(tmp_path / "simtime") as again:
        stamps = [m.timestamp_ns for m in again.messages()]
        assert {t: i.message_count for t, i in again.topics.items()} == {t: COUNT for t in TOPICS}
    assert start <= min(stamps) and max(stamps) <= end  # bag time from /clock (wall time would be later)


def test_replay_split_recording_with_filter_remap_offset_and_loop(recording, tmp_path):
    from vidplan_core.data.bags import BagReader

    with BagReader(recording["b"]) as reader:
        t_from = reader.start_ns + 500_000_000
        expected = [m.data for m in reader.messages(["/rr/pose"], start_ns=t_from)]
    assert 0 < len(expected) < COUNT
    replay = node_executable("vidplan_ros", "replay_node")
    out = {"/rr/pose_replayed": TOPICS["/rr/pose"]}
    with started(_sink_cmd(tmp_path / "replayed.json", out, 2 * len(expected)), tmp_path / "sink.log") as sink:
        assert wait_for(lambda: "sink ready" in sink.output(), 20)
        with started([replay, "--ros-args", "-p", f"bag:={recording['b']}", "-p", "rate:=4.0",
                      "-p", "topics:=['/rr/pose']", "-p", "remap:=['/rr/pose:=/rr/pose_replayed']",
                      "-p", "start_offset_s:=0.5", "-p", "loop:=true", "-p", "wait_subscribers:=1"],
                     tmp_path / "replay.log") as rp:
            assert sink.wait(30) == 0, sink.output() + rp.output()
            assert rp.alive()  # looping: still playing
            code = rp.stop()
        assert code == 0, rp.output()
    assert _load(tmp_path / "replayed.json")["/rr/pose_replayed"] == expected + expected


def test_truncated_or_missing_bag_fails_cleanly(recording, tmp_path):
    replay = node_executable("vidplan_ros", "replay_node")
    broken = tmp_path / "broken"
    shutil.copytree(recording["a"], broken)
    mcap_file = next(broken.glob("*.mcap"))
    data = mcap_file.read_bytes()
    mcap_file.write_bytes(data[: len(data) * 6 // 10])
    for bag, words in ((broken, ("truncated",)), (tmp_path / "nope", ("does not exist",))):
        with started([replay, "--ros-args", "-p", f"bag:={bag}"], tmp_path / f"{bag.name}.log") as rp:
            code = rp.wait(30)
            out = rp.output()
        assert code == 2, out
        assert f"bag {bag}" in out and all(w in out for w in words), out
        assert "Traceback" not in out, out
    # the recorder refuses to overwrite an existing recording
    rec = node_executable("vidplan_ros", "recorder_node")
    with started([rec, "--ros-args", "-p", "topics:=['/x:std_msgs/msg/String']",
                  "-p", f"output_dir:={recording['dir']}", "-p", "bag_name:=a"], tmp_path / "rec.log") as rp:
        code = rp.wait(30)
        out = rp.output()
    assert code == 2 and "exists already" in out, out
