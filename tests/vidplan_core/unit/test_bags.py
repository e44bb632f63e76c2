"""vidplan_core.data.bags: rosbag2 writing (with splitting) and reading of raw CDR messages, and its errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from vidplan_core.data import bags as B
from vidplan_core.data.bag_writer import BagWriter


def _cdr(kind: str, i: int) -> bytes:
    """Real CDR bytes of a String / PoseStamped / Image (rclpy serialisation, as a live publisher would send)."""
    from geometry_msgs.msg import PoseStamped
    from rclpy.serialization import serialize_message
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    if kind == "str":
        return serialize_message(String(data=f"m{i}" + "x" * (i % 5)))
    if kind == "pose":
        p = PoseStamped()
        p.header.frame_id = "panda_link0"
        p.pose.position.x = 0.01 * i
        p.pose.orientation.w = 1.0
        return serialize_message(p)
    img = Image(height=8, width=16, encoding="rgb8", step=48, data=bytes([i % 256]) * (8 * 48))
    return serialize_message(img)


TOPICS = {"/s": ("std_msgs/msg/String", "str"), "/p": ("geometry_msgs/PoseStamped", "pose"),
          "/img": ("sensor_msgs/msg/Image", "img")}


def _write(path: Path, n: int = 40, step_ns: int = 10_000_000, **kw) -> list[tuple[str, int, bytes]]:
    """Write n rounds of the three topics; equal timestamps within a round (order must still be kept)."""
    sent = []
    with BagWriter(path, **kw) as w:
        for topic, (msgtype, _) in TOPICS.items():
            w.add_topic(topic, msgtype, [B.make_qos("best_effort" if topic == "/img" else "reliable")])
        for i in range(n):
            for topic, (_, kind) in TOPICS.items():
                data = _cdr(kind, i)
                w.write(topic, 1_000_000_000 + i * step_ns, data)
                sent.append((topic, 1_000_000_000 + i * step_ns, data))
    return sent


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_round_trip_keeps_bytes_order_and_valid_metadata(tmp_path, storage):
    sent = _write(tmp_path / "bag", storage=storage)
    meta = yaml.safe_load((tmp_path / "bag" / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert meta["version"] == 9 and meta["storage_identifier"] == storage
    assert meta["message_count"] == len(sent)
    assert {t["topic_metadata"]["name"]: t["message_count"] for t in meta["topics_with_message_count"]} == \
        {t: 40 for t in TOPICS}
    assert all(t["topic_metadata"]["type_description_hash"].startswith("RIHS01_")
               for t in meta["topics_with_message_count"])
    assert (tmp_path / "bag" / meta["relative_file_paths"][0]).is_file()
    with B.BagReader(tmp_path / "bag") as r:
        assert r.bags == [tmp_path / "bag"]
        assert r.topics["/p"].msgtype == "geometry_msgs/msg/PoseStamped" and r.topics["/p"].message_count == 40
        assert B.qos_policies(r.topics["/img"].qos) == ("best_effort", "volatile")
        assert r.start_ns == 1_000_000_000 and r.end_ns == 1_000_000_000 + 39 * 10_000_000
        got = [(m.topic, m.timestamp_ns, m.data) for m in r.messages()]
        assert got == sent  # equal timestamps keep write order
        assert [m.data for m in r.messages(["/img"], start_ns=1_050_000_000, stop_ns=1_100_000_000)] == \
            [d for t, ts, d in sent if t == "/img" and 1_050_000_000 <= ts < 1_100_000_000]
        with pytest.raises(B.BagError, match="has no topic"):
            list(r.messages(["/nope"]))


def test_cdr_decodes_with_an_independent_reader(tmp_path):
    """The stored bytes are ordinary CDR: rosbags' typestore decodes them and the mcap library sees the schema."""
    from mcap.reader import make_reader
    from rosbags.typesys import Stores, get_typestore

    _write(tmp_path / "bag", n=5)
    ts = get_typestore(Stores.ROS2_KILTED)
    img = next(m for m in B.read_messages(tmp_path / "bag", ["/img"]))
    msg = ts.deserialize_cdr(img.data, img.msgtype)
    assert (msg.height, msg.width, msg.encoding, len(msg.data)) == (8, 16, "rgb8", 8 * 48)
    with open(tmp_path / "bag" / "bag.mcap", "rb") as f:
        reader = make_reader(f)
        summary = reader.get_summary()
        assert summary.statistics.message_count == 15
        assert {s.name for s in summary.schemas.values()} == {t for t, _ in
                                                              [(B.normalize_msgtype(v[0]), 0) for v in TOPICS.values()]}


def test_split_by_size_gives_complete_numbered_bags(tmp_path):
    limit = 1500  # a round is ~0.6 kB (the 384-byte image + pose + string): ~15 bags, so "_10" sorts after "_9"
    sent = _write(tmp_path / "rec", n=40, split_size_bytes=limit)
    bags = B.find_bags(tmp_path / "rec")
    assert len(bags) >= 10 and [b.name for b in bags] == [f"rec_{i}" for i in range(len(bags))]
    union = []
    for bag in bags:
        meta = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
        with B.BagReader(bag) as r:  # each bag is valid on its own
            msgs = list(r.messages())
        assert meta["message_count"] == len(msgs) > 0
        assert sum(len(m.data) for m in msgs) <= limit
        union += [(m.topic, m.timestamp_ns, m.data) for m in msgs]
    assert union == sent
    with B.BagReader(tmp_path / "rec") as r:  # the recording as a whole, merged in time order
        assert r.message_count == len(sent)
        assert [(m.topic, m.timestamp_ns, m.data) for m in r.messages()] == sent


def test_split_by_duration(tmp_path):
    sent = _write(tmp_path / "rec", n=40, step_ns=100_000_000, split_duration_s=1.0, storage="sqlite3")
    bags = B.find_bags(tmp_path / "rec")
    assert len(bags) == 4  # 40 rounds 0.1 s apart → [0, 1), [1, 2), [2, 3), [3, 3.9] s
    for bag in bags:
        with B.BagReader(bag) as r:
            assert r.end_ns - r.start_ns < 1_000_000_000
            assert r.message_count == 30
    assert [(m.topic, m.timestamp_ns, m.data) for m in B.read_messages(tmp_path / "rec")] == sent


def test_custom_interface_definition_and_hash_match_the_built_package(tmp_path):
    defs = B.MessageDefinitions()
    msgdef, digest = defs.get("vidplan_interfaces/PlanChunk")
    share = next(Path(p) / "share" / "vidplan_interfaces" for p in os.environ["AMENT_PREFIX_PATH"].split(os.pathsep)
                 if (Path(p) / "share" / "vidplan_interfaces").is_dir())
    expected = json.loads((share / "msg" / "PlanChunk.json").read_text())["type_hashes"][0]["hash_string"]
    assert digest == expected
    assert "MSG: geometry_msgs/Pose" in msgdef or "geometry_msgs/" in msgdef
    w = BagWriter(tmp_path / "bag")
    w.add_topic("/vidplan/plan", "vidplan_interfaces/msg/PlanChunk")
    w.close()
    with B.BagReader(tmp_path / "bag") as r:
        assert r.topics["/vidplan/plan"].msgtype == "vidplan_interfaces/msg/PlanChunk"
        assert r.message_count == 0 and list(r.messages()) == []


def test_writer_rejects_bad_input(tmp_path):
    (tmp_path / "exists").mkdir()
    with pytest.raises(B.BagError, match="exists already"):
        BagWriter(tmp_path / "exists")
    with pytest.raises(ValueError, match="storage"):
        BagWriter(tmp_path / "x", storage="rosbag1")
    w = BagWriter(tmp_path / "bag")
    with pytest.raises(ValueError, match="nope_msgs/msg/Thing"):
        w.add_topic("/t", "nope_msgs/msg/Thing")
    with pytest.raises(ValueError, match="expected 'pkg/msg/Name'"):
        w.add_topic("/t", "String")
    w.add_topic("/t", "std_msgs/msg/String")
    with pytest.raises(ValueError, match="already recorded as std_msgs/msg/String"):
        w.add_topic("/t", "std_msgs/msg/Bool")
    with pytest.raises(ValueError, match="not added"):
        w.write("/other", 0, b"\x00\x01\x00\x00")
    w.close()
    with pytest.raises(B.BagError, match="after close"):
        w.write("/t", 0, _cdr("str", 0))


def test_missing_empty_truncated_and_corrupt_bags_fail_with_clear_errors(tmp_path):
    with pytest.raises(B.BagError, match=r"bag .*nope: does not exist"):
        B.BagReader(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(B.BagError, match="holds no rosbag2 bag"):
        B.BagReader(tmp_path / "empty")
    # ~4 MB of 64 kB images: several 1 MiB mcap chunks, so a cut at 70 % leaves complete chunks before it
    sent = []
    with BagWriter(tmp_path / "bag") as w:
        w.add_topic("/img", "sensor_msgs/msg/Image")
        for i in range(64):
            sent.append(("/img", i * 1000, bytes([0, 1, 0, 0]) + bytes([i]) * 65536))
            w.write(*sent[-1])
    mcap_file = tmp_path / "bag" / "bag.mcap"
    data = mcap_file.read_bytes()
    mcap_file.write_bytes(data[: len(data) * 7 // 10])
    with pytest.raises(B.BagError) as err:
        B.BagReader(tmp_path / "bag")
    assert str(tmp_path / "bag") in str(err.value) and "truncated" in str(err.value)
    # recovery salvages what precedes the damage, in write order, and says so
    with B.BagReader(tmp_path / "bag", recover=True) as r:
        got = [(m.topic, m.timestamp_ns, m.data) for m in r.messages()]
        assert 0 < len(got) < len(sent) and got == sent[: len(got)]
        assert r.warnings and "truncated" in r.warnings[0]
    # an interrupted recording: storage file without metadata.yaml
    _write(tmp_path / "nometa", n=20)
    (tmp_path / "nometa" / "metadata.yaml").unlink()
    with pytest.raises(B.BagError, match="nometa"):
        B.BagReader(tmp_path / "nometa")
    with B.BagReader(tmp_path / "nometa", recover=True) as r:
        assert r.message_count == 60 and r.topics["/img"].msgtype == "sensor_msgs/msg/Image"
    # garbage instead of an mcap file
    _write(tmp_path / "garbage", n=5)
    (tmp_path / "garbage" / "garbage.mcap").write_bytes(b"not an mcap file at all" * 10)
    with pytest.raises(B.BagError, match="garbage"):
        B.BagReader(tmp_path / "garbage")


def test_qos_and_name_helpers():
    assert B.normalize_msgtype("std_msgs/String") == "std_msgs/msg/String"
    assert B.normalize_msgtype("sensor_msgs/msg/Image") == "sensor_msgs/msg/Image"
    with pytest.raises(ValueError):
        B.normalize_msgtype("std_msgs/srv/Trigger")
    assert B.parse_qos_overrides(["/a:best_effort", "/b:reliable:transient_local", ""]) == {
        "/a": ("best_effort", "volatile"), "/b": ("reliable", "transient_local")}
    for bad in ("a:reliable", "/a:fast", "/a:reliable:forever", "/a"):
        with pytest.raises(ValueError, match="QoS override"):
            B.parse_qos_overrides([bad])
    rel, latched = B.make_qos("reliable", "transient_local"), B.make_qos("best_effort")
    assert B.qos_policies([rel]) == ("reliable", "transient_local")
    assert B.qos_policies([rel, latched]) == ("best_effort", "volatile")
    assert B.qos_policies([]) == (None, None)
    with pytest.raises(ValueError, match="reliability"):
        B.make_qos("sometimes")
