"""BagWriter's periodic flush (vidplan issue 13): a writer process killed with SIGKILL, with the default settings,
leaves a bag whose messages read back (``BagReader(recover=True)``) up to about ``flush_period_s`` (1 s) before the
kill, for mcap (rosbags otherwise holds a 1 MiB chunk in memory) and sqlite3 (otherwise committed only at close)."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
import time

import pytest

from vidplan_core.data import bags as B
from vidplan_core.data.bag_writer import BagWriter

# A writer with the DEFAULT settings that writes a numbered String ~every 10 ms (stamp = wall clock) for 2.6 s,
# reports each index after writing it, then dies of SIGKILL (no close, no atexit, no buffer flush).
WRITER = textwrap.dedent("""
    import os, signal, sys, time
    from rclpy.serialization import serialize_message
    from std_msgs.msg import String
    from vidplan_core.data.bag_writer import BagWriter

    w = BagWriter(sys.argv[1], storage=sys.argv[2])
    w.add_topic("/s", "std_msgs/msg/String")
    end = time.time() + 2.6
    i = 0
    while time.time() < end:
        stamp = time.time_ns()
        w.write("/s", stamp, serialize_message(String(data=f"m{i}")))
        print(i, stamp, flush=True)
        i += 1
        time.sleep(0.01)
    os.kill(os.getpid(), signal.SIGKILL)
""")


def _decode(data: bytes) -> str:
    from rclpy.serialization import deserialize_message
    from std_msgs.msg import String

    return deserialize_message(data, String).data


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_killed_default_writer_reads_back_all_but_the_last_second(tmp_path, storage):
    proc = subprocess.run([sys.executable, "-c", WRITER, str(tmp_path / "bag"), storage], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == -9, proc.stderr
    written = [tuple(map(int, line.split())) for line in proc.stdout.strip().splitlines()]
    assert len(written) > 100, proc.stdout[-500:]
    assert not (tmp_path / "bag" / "metadata.yaml").exists()  # really interrupted: never closed
    with pytest.raises(B.BagError):
        B.BagReader(tmp_path / "bag")
    with B.BagReader(tmp_path / "bag", recover=True) as r:
        got = [(m.timestamp_ns, _decode(m.data)) for m in r.messages()]
        warnings = list(r.warnings)
    assert got, f"nothing read back ({warnings})"
    # a prefix of what was written, in order, with no hole ...
    assert [d for _t, d in got] == [f"m{i}" for i in range(len(got))], warnings
    assert [t for t, _d in got] == [t for _i, t in written[:len(got)]]
    # ... missing only about the last flush period (1 s; + slack for a loaded machine) before the kill
    lost_s = (written[-1][1] - got[-1][0]) * 1e-9
    assert lost_s <= 1.5, f"{lost_s:.2f} s lost ({len(got)} of {len(written)} read back; {warnings})"


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_flush_if_due_hands_idle_messages_to_the_file_while_the_bag_stays_open(tmp_path, storage):
    from rclpy.serialization import serialize_message
    from std_msgs.msg import String

    with BagWriter(tmp_path / "bag", storage=storage, flush_period_s=0.2) as w:
        w.add_topic("/s", "std_msgs/msg/String")
        for i in range(3):
            w.write("/s", 1_000 + i, serialize_message(String(data=f"m{i}")))
        assert not w.flush_if_due()  # not yet due: still only in memory
        assert w.flushed_count == 0 and w.message_count == 3
        with B.BagReader(tmp_path / "bag", recover=True) as r:
            assert r.message_count == 0, r.warnings
        time.sleep(0.25)
        assert w.flush_if_due()  # due while no new message arrives (the recorder calls it when idle)
        assert not w.flush_if_due()  # nothing left to flush
        assert w.flushed_count == 3
        with B.BagReader(tmp_path / "bag", recover=True) as r:
            assert [_decode(m.data) for m in r.messages()] == ["m0", "m1", "m2"], r.warnings
            assert r.topics["/s"].msgtype == "std_msgs/msg/String"
        w.write("/s", 2_000, serialize_message(String(data="m3")))
        assert w.flushed_count == 3
    assert w.flushed_count == 4  # close writes everything
    # closed normally after mid-recording flushes: a complete, valid bag with everything
    with B.BagReader(tmp_path / "bag") as r:
        assert [_decode(m.data) for m in r.messages()] == ["m0", "m1", "m2", "m3"]
        assert r.start_ns == 1_000 and r.end_ns == 2_000


@pytest.mark.parametrize("period", [-1.0, math.nan])
def test_bad_flush_period_is_refused_naming_it(tmp_path, period):
    with pytest.raises(ValueError, match="flush_period_s"):
        BagWriter(tmp_path / "bag", flush_period_s=period)
    assert not (tmp_path / "bag").exists()


def test_flush_period_zero_keeps_rosbags_behaviour(tmp_path):
    from rclpy.serialization import serialize_message
    from std_msgs.msg import String

    with BagWriter(tmp_path / "bag", flush_period_s=0) as w:
        w.add_topic("/s", "std_msgs/msg/String")
        w.write("/s", 1, serialize_message(String(data="m0")))
        assert not w.flush_if_due()
        w.flush()  # an explicit flush still works
        with B.BagReader(tmp_path / "bag", recover=True) as r:
            assert [_decode(m.data) for m in r.messages()] == ["m0"]


def test_flushed_count_counts_closed_bags_and_flushes(tmp_path):
    """``flushed_count`` (what a kill cannot lose; the recorder logs it) grows at a split rollover and a flush,
    never on a plain write, and matches what a recovering reader gets back."""
    from rclpy.serialization import serialize_message
    from std_msgs.msg import String

    w = BagWriter(tmp_path / "rec", split_duration_s=1.0, flush_period_s=0)
    w.add_topic("/s", "std_msgs/msg/String")
    for i in range(5):  # 0.0 .. 0.8 s: all in the first bag
        w.write("/s", i * 200_000_000, serialize_message(String(data=f"m{i}")))
    assert w.flushed_count == 0
    w.write("/s", 1_000_000_000, serialize_message(String(data="m5")))  # rolls over: rec_0 closed with 5
    assert w.flushed_count == 5 and len(w.bags) == 2
    w.write("/s", 1_100_000_000, serialize_message(String(data="m6")))
    assert w.flushed_count == 5
    with B.BagReader(tmp_path / "rec", recover=True) as r:
        assert r.message_count == w.flushed_count
    w.flush()
    assert w.flushed_count == 7
    with B.BagReader(tmp_path / "rec", recover=True) as r:
        assert [_decode(m.data) for m in r.messages()] == [f"m{i}" for i in range(7)], r.warnings
    w.close()
