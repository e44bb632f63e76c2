"""recorder_node: records topics as raw CDR bytes into a rosbag2 recording (mcap or sqlite3) through rosbags.

Subscriptions use ``raw=True`` so the bytes stored are exactly those on the wire (rclpy's serialize_message may pad
with zeros that rosbags rejects). Each message is stamped with its receive time on the node clock (sim time under
``use_sim_time``) and handed to a writer thread through a queue, so disk writes never block the subscription
callbacks. On SIGINT/SIGTERM (rclpy shuts the context down; ``run_node`` then calls :meth:`Recorder.close`) the
queue is drained and every bag is closed with a valid metadata.yaml: nothing that was received is lost.
Killed without that chance (SIGKILL, OOM killer, power to the process cut), the recording loses about the last
``flush_period_s`` (1 s by default): the writer thread hands the messages to the OS at least that often, also while
no message arrives, and the bag without metadata.yaml reads back with ``BagReader(path, recover=True)`` (``vidplan
eval-bag`` salvages it by itself; see ``vidplan_core.data.bags``).

Messages are not decoded, so none is validated or dropped for its content: a malformed one (a 0x0 image, a JointState
with names but no positions, a NaN pose) is recorded byte for byte like any other — a recording of a fault is its
evidence — and cannot fail a callback (tests/vidplan_ros/integration/test_recorder_faults.py).

Splitting (``split_size_bytes`` / ``split_duration_s``) writes numbered complete bags ``<output>/<name>_0/``,
``<name>_1/``, ... (see ``vidplan_core.data.bags``); without splitting ``<output_dir>/<bag_name>/`` is one bag.

Parameters:
    topics (string[], required): "name" or "name:pkg/msg/Type". Without a type it is discovered from the graph.
        Each topic is subscribed as soon as a publisher of it is seen (so the QoS can match that publisher); a
        typed topic with no publisher after ``discovery_timeout_s`` is subscribed with the default QoS below; an
        untyped one is subscribed whenever it appears (a warning names it).
    output_dir (str, "bags"): parent directory of the recording.
    bag_name (str, ""): recording name ("" = rec_<UTC yyyymmdd_HHMMSS>); ``output_dir/bag_name`` must not exist.
    storage (str, "mcap"): "mcap" or "sqlite3".
    split_size_bytes (int, 0): start a new numbered bag before this many payload bytes (0 = off).
    split_duration_s (float, 0.0): start a new numbered bag after this many seconds of bag time (0 = off).
    flush_period_s (float, 1.0): hand written messages to the OS at least this often (wall clock); bounds what a
        kill -9 loses (0 = only rosbags' 1 MiB mcap chunks / the sqlite3 commit at close: a kill loses up to all).
    discovery_timeout_s (float, 5.0): how long start-up waits for untyped topics to appear.
    qos_depth (int, 100): history depth of the subscriptions.
    qos_overrides (string[], []): "/topic:reliable|best_effort[:volatile|transient_local]". Otherwise the QoS
        matches the publishers seen at subscription time (best-effort if any publisher is, transient-local if all
        are); with no publisher seen yet, sensor_msgs/* use best-effort (matches any publisher) and others
        reliable/volatile. The QoS chosen is stored in the bag as the topic's offered QoS.
    max_queue_mb (float, 1024.0): writer-queue bound; messages arriving while it is full are dropped and counted.
    stats_interval_s (float, 10.0): period of the progress log line (0 = off).
    stats_path (str, ""): JSON file written at close with per-topic received/written/dropped counts, flushed,
        bags, bytes.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from vidplan_core.data.bag_writer import BagWriter
from vidplan_core.data.bags import MessageDefinitions, make_qos, normalize_msgtype, parse_qos_overrides
from vidplan_ros.latency_probe import import_message
from vidplan_ros.node_runner import parameters_declared, run_node

__all__ = ["Recorder", "main", "publisher_policies", "rclpy_qos"]


def rclpy_qos(reliability: str, durability: str, depth: int) -> QoSProfile:
    """rclpy QoSProfile (keep-last ``depth``) from plain names ("reliable"/"best_effort", "volatile"/
    "transient_local")."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=int(depth),
        reliability=ReliabilityPolicy.RELIABLE if reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if durability == "transient_local" else DurabilityPolicy.VOLATILE)


def publisher_policies(node: Node, topic: str) -> tuple[str, str] | None:
    """(reliability, durability) a subscription needs to match every current publisher of ``topic`` and get
    latched messages; None when no publisher is known."""
    infos = node.get_publishers_info_by_topic(topic)
    if not infos:
        return None
    best_effort = any(i.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT for i in infos)
    latched = all(i.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL for i in infos)
    return ("best_effort" if best_effort else "reliable", "transient_local" if latched else "volatile")


class Recorder(Node):
    """Subscribes (raw) to the configured topics and writes them on a writer thread; see the module docstring."""

    def __init__(self) -> None:
        super().__init__("recorder")
        p = self.declare_parameter
        specs = list(p("topics", [""]).value or [])
        output_dir = Path(str(p("output_dir", "bags").value))
        name = str(p("bag_name", "").value) or datetime.now(timezone.utc).strftime("rec_%Y%m%d_%H%M%S")
        storage = str(p("storage", "mcap").value)
        split_size = int(p("split_size_bytes", 0).value)
        split_duration = float(p("split_duration_s", 0.0).value)
        flush_period = float(p("flush_period_s", 1.0).value)
        discovery_timeout = float(p("discovery_timeout_s", 5.0).value)
        self.qos_depth = int(p("qos_depth", 100).value)
        self.overrides = parse_qos_overrides(p("qos_overrides", [""]).value or [])
        self.max_queue_bytes = int(float(p("max_queue_mb", 1024.0).value) * 2**20)
        stats_interval = float(p("stats_interval_s", 10.0).value)
        self.stats_path = str(p("stats_path", "").value)
        parameters_declared(self)  # an unknown parameter fails here; listing mode stops before the bag is created

        self.wanted: dict[str, str | None] = {}  # topic → type (None until discovered)
        for spec in specs:
            if not spec.strip():
                continue
            topic, _, msgtype = spec.strip().partition(":")
            if not topic.startswith("/"):
                topic = "/" + topic
            self.wanted[topic] = normalize_msgtype(msgtype) if msgtype else None
        if not self.wanted:
            raise ValueError("parameter 'topics' is empty: give at least one 'name' or 'name:pkg/msg/Type'")
        if self.qos_depth < 1:
            raise ValueError(f"qos_depth must be >= 1, got {self.qos_depth}")

        self.definitions = MessageDefinitions()
        for topic, msgtype in self.wanted.items():  # bad explicit types fail before anything is created
            if msgtype is not None:
                self._check_type(topic, msgtype)
        self.path = output_dir / name
        self.received: dict[str, int] = {}
        self.dropped: dict[str, int] = {}
        self.queued_bytes = 0
        self._lock = threading.Lock()
        self.write_errors = 0
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._subs: dict[str, object] = {}
        self._closed = False
        self._t0 = time.monotonic()
        # The writer lives on its own thread (sqlite3 connections must stay on the thread that made them).
        # BagWriter validates storage/split values and refuses an existing path (ValueError → exit code 2).
        self.writer: BagWriter | None = None
        self._writer_error: Exception | None = None
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._write_loop, args=(ready, dict(storage=storage, split_size_bytes=split_size,
                                                       split_duration_s=split_duration,
                                                       flush_period_s=flush_period)),
            name="bag_writer", daemon=True)
        self._thread.start()
        ready.wait()
        if self._writer_error is not None:
            raise self._writer_error

        # Subscribe to each topic once a publisher is seen (so the QoS can match it) or, for typed topics, when
        # discovery_timeout_s has passed; polled from a timer so the executor spins meanwhile.
        self._deadline = time.monotonic() + discovery_timeout
        self._discovery_timeout = discovery_timeout
        self._warned_pending = False
        self._poll_topics()
        # Steady-clock timers: under use_sim_time a ROS-time timer would not fire until /clock advances.
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        self._discovery_timer = self.create_timer(0.2, self._poll_topics, clock=steady)
        if stats_interval > 0:
            self._stats_timer = self.create_timer(stats_interval, self._log_stats, clock=steady)
        self.get_logger().info(f"recording {len(self.wanted)} topic(s) to {self.path} ({storage}"
                               + (f", split {split_size} B" if split_size else "")
                               + (f", split {split_duration} s" if split_duration else "") + ")")

    # -- discovery and subscription
    def _discover(self) -> None:
        names = dict(self.get_topic_names_and_types())
        for topic, msgtype in self.wanted.items():
            if msgtype is None and topic in names:
                types = names[topic]
                if len(types) > 1:
                    self.get_logger().warning(f"{topic} is published with several types {types}; using {types[0]}")
                self.wanted[topic] = types[0]

    def _check_type(self, topic: str, msgtype: str) -> type:
        """The message class of ``msgtype``; ValueError naming the topic if it is not installed or has no
        definition (checked here, not in the writer thread)."""
        try:
            msg_cls = import_message(msgtype)
            self.definitions.get(msgtype)
        except ValueError as exc:
            raise ValueError(f"topic {topic}: {exc}") from exc
        return msg_cls

    def _poll_topics(self) -> None:
        if any(t is None for t in self.wanted.values()):
            self._discover()
        past_deadline = time.monotonic() >= self._deadline
        for topic, msgtype in list(self.wanted.items()):
            if msgtype is None or topic in self._subs:
                continue
            if not (past_deadline or topic in self.overrides or self.count_publishers(topic)):
                continue
            try:
                self._subscribe(topic, msgtype)
            except ValueError as exc:  # a discovered topic of an unusable type: skip it, record the rest
                self.get_logger().error(f"not recording {topic}: {exc}")
                self._subs[topic] = None
        pending = [t for t in self.wanted if t not in self._subs]
        if past_deadline and pending and not self._warned_pending:
            self._warned_pending = True
            self.get_logger().warning(f"topics not seen within {self._discovery_timeout:.1f} s: {pending}; "
                                      f"they will be recorded once they appear")
        if not pending and getattr(self, "_discovery_timer", None) is not None:
            self._discovery_timer.cancel()

    def _subscribe(self, topic: str, msgtype: str) -> None:
        if topic in self._subs:
            return
        msg_cls = self._check_type(topic, msgtype)
        if topic in self.overrides:
            rel, dur = self.overrides[topic]
        else:
            rel, dur = publisher_policies(self, topic) or (
                "best_effort" if msgtype.startswith("sensor_msgs/") else "reliable", "volatile")
        self._queue.put(("topic", topic, msgtype, (make_qos(rel, dur, self.qos_depth),)))
        self.received[topic] = 0
        self.dropped[topic] = 0
        self._subs[topic] = self.create_subscription(
            msg_cls, topic, lambda data, t=topic: self._on_message(t, data),
            rclpy_qos(rel, dur, self.qos_depth), raw=True)
        self.get_logger().info(f"subscribed {topic} [{msgtype}] ({rel}, {dur})")

    def _on_message(self, topic: str, data: bytes) -> None:
        stamp = self.get_clock().now().nanoseconds
        n = len(data)
        with self._lock:
            self.received[topic] += 1
            if self.queued_bytes + n > self.max_queue_bytes:
                self.dropped[topic] += 1
                return
            self.queued_bytes += n
        self._queue.put(("msg", topic, stamp, data))

    # -- writer thread
    def _write_loop(self, ready: threading.Event, writer_kw: dict) -> None:
        try:
            self.writer = BagWriter(self.path, definitions=self.definitions, **writer_kw)
        except Exception as exc:  # handed to the constructor, which raises it
            self._writer_error = exc if isinstance(exc, ValueError) else ValueError(f"{self.path}: {exc}")
            return
        finally:
            ready.set()
        # While idle, wake often enough that the last messages before a pause are flushed within ~1.25 periods.
        idle_wake_s = self.writer.flush_period_s / 4 if self.writer.flush_period_s else None
        while True:
            try:
                item = self._queue.get(timeout=idle_wake_s)
            except queue.Empty:
                item = ()
            if item is None:
                break
            try:
                if not item:
                    self.writer.flush_if_due()
                    continue
                if item[0] == "topic":
                    self.writer.add_topic(item[1], item[2], item[3])
                else:
                    _, topic, stamp, data = item
                    with self._lock:
                        self.queued_bytes -= len(data)
                    self.writer.write(topic, stamp, data)
            except Exception as exc:  # disk full etc.: count, report, keep the thread alive
                self.write_errors += 1
                if self.write_errors <= 5:
                    what = item[1] if item else "(flush)"
                    print(f"[recorder] ERROR writing {what}: {exc}", flush=True)
        try:
            self.writer.close()
        except Exception as exc:  # report; close() still writes the stats
            print(f"[recorder] ERROR closing {self.path}: {exc}", flush=True)
            self.write_errors += 1

    # -- reporting and shutdown
    def stats(self) -> dict:
        """Per-topic received / written / dropped counts, messages flushed (all topics: what a kill cannot lose),
        bags and payload bytes written so far."""
        with self._lock:
            received, dropped = dict(self.received), dict(self.dropped)
        return {"path": str(self.path), "bags": [str(b) for b in self.writer.bags], "received": received,
                "written": dict(self.writer.counts), "flushed": self.writer.flushed_count, "dropped": dropped,
                "write_errors": self.write_errors,
                "bytes_written": self.writer.bytes_written, "queued_bytes": self.queued_bytes,
                "elapsed_s": round(time.monotonic() - self._t0, 3)}

    def _log_stats(self) -> None:
        s = self.stats()
        self.get_logger().info(f"received {sum(s['received'].values())}, written {sum(s['written'].values())}, "
                               f"flushed {s['flushed']}, dropped {sum(s['dropped'].values())}, "
                               f"{s['bytes_written'] / 2**20:.1f} MiB, "
                               f"queue {s['queued_bytes'] / 2**20:.1f} MiB")

    def close(self) -> None:
        """Drain the queue, close the bag(s) (metadata.yaml) and write ``stats_path``; idempotent."""
        if self._closed:
            return
        self._closed = True
        for sub in self._subs.values():  # no new messages while draining
            if sub is None:
                continue
            try:
                self.destroy_subscription(sub)
            except Exception:  # the context may already be shut down
                pass
        self._queue.put(None)
        self._thread.join()  # drains the queue and closes the bag(s) on the writer thread
        s = self.stats()
        if self.stats_path:
            path = Path(self.stats_path)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(s, indent=2))
        # print, not the ROS logger: the context is usually shut down already at this point
        print(f"[recorder] closed {self.path}: {len(s['bags'])} bag(s), received {sum(s['received'].values())}, "
              f"written {sum(s['written'].values())}, dropped {sum(s['dropped'].values())}, "
              f"write errors {self.write_errors}", flush=True)


def main(args: list[str] | None = None) -> None:
    run_node(Recorder, args)


if __name__ == "__main__":
    main()
