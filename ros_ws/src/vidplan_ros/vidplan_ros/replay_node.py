"""replay_node: plays a rosbag2 recording (mcap or sqlite3, single or split) on live topics, as raw CDR bytes.

Messages are published with ``publisher.publish(raw_bytes)`` on publishers of the recorded types, so they arrive
byte for byte as recorded, at the recorded pace scaled by ``rate``, optionally with ``/clock`` (bag time) for
nodes running with ``use_sim_time``. Playback runs on its own thread; the executor stays free.

A missing, truncated or corrupt bag stops the node at start-up with ``error: bag PATH: problem`` and exit code 2;
a bag found corrupt during playback logs the error and exits with code 1.

A bag recorded before the instruction's topic was renamed holds it on /vidplan/task (deprecated): that topic is
replayed on /vidplan/instruction, where the planner listens, unless the bag has /vidplan/instruction too or ``remap``
names /vidplan/task (a line in the log says so).

At the end of the bag (not looping) the node logs "end of bag" and then idles (keeps its publishers, so a
bring-up's ``required`` replay does not stop the other nodes and latched subscribers keep their data), unless
``exit_at_end`` is true, in which case it exits with code 0.

Parameters:
    bag (str, required): recording path (a bag directory or a split recording's directory).
    rate (float, 1.0): playback speed factor (> 0; 2.0 = twice as fast).
    start_offset_s (float, 0.0): skip this many seconds from the start of the bag.
    loop (bool, false): start over at the end (bag time, and /clock, jump back).
    topics (string[], []): only these recorded topics (empty = all).
    remap (string[], []): "/from:=/to" topic renames (ROS ``-r`` remapping also works).
    publish_clock (bool, false): publish rosgraph_msgs/Clock with the bag time.
    clock_rate_hz (float, 100.0): /clock publish rate between messages.
    qos_overrides (string[], []): "/topic:reliable|best_effort[:volatile|transient_local]" (recorded names).
        Otherwise sensor_msgs/* use sensor-data QoS (best-effort, depth 5) and other topics the QoS recorded
        in the bag (reliable/volatile when none).
    qos_depth (int, 10): history depth of the non-sensor publishers.
    wait_subscribers (int, 0): before playing, wait until every publisher has this many subscribers ...
    wait_timeout_s (float, 10.0): ... for at most this long (then play anyway, with a warning).
    start_delay_s (float, 0.5): pause after creating publishers so discovery can settle.
    exit_at_end (bool, false): exit (code 0) at the end of the bag instead of idling.
    drain_timeout_s (float, 5.0): with exit_at_end, wait at most this long for the subscribers to acknowledge
        the reliable topics' messages before exiting (a subscriber still completing discovery would lose the
        last messages otherwise); a warning names the topics not acknowledged in time.
    progress_interval_s (float, 5.0): period of the progress log line.
"""

from __future__ import annotations

import sys
import threading
import time

import rclpy
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data

from vidplan_core.data.bags import BagError, BagReader, parse_qos_overrides, qos_policies
from vidplan_core.topics import DEPRECATED_INSTRUCTION_TOPIC, INSTRUCTION_TOPIC
from vidplan_ros.latency_probe import import_message
from vidplan_ros.node_runner import parameters_declared, run_node
from vidplan_ros.recorder_node import rclpy_qos

__all__ = ["Replay", "main", "parse_remap"]


def parse_remap(entries: list[str]) -> dict[str, str]:
    """["/a:=/b", ...] → {"/a": "/b"}; ValueError naming a malformed entry."""
    out: dict[str, str] = {}
    for entry in entries:
        if not entry.strip():
            continue
        src, sep, dst = entry.strip().partition(":=")
        if not sep or not src.startswith("/") or not dst.startswith("/"):
            raise ValueError(f"remap entry {entry!r}: expected '/from:=/to'")
        out[src] = dst
    return out


class Replay(Node):
    """Publishes a recording's messages on their (remapped) topics; see the module docstring."""

    def __init__(self) -> None:
        super().__init__("replay")
        p = self.declare_parameter
        bag = str(p("bag", "").value)
        self.rate = float(p("rate", 1.0).value)
        self.start_offset_s = float(p("start_offset_s", 0.0).value)
        self.loop = bool(p("loop", False).value)
        only = [t for t in (p("topics", [""]).value or []) if t.strip()]
        remap = parse_remap(list(p("remap", [""]).value or []))
        self.publish_clock = bool(p("publish_clock", False).value)
        clock_rate = float(p("clock_rate_hz", 100.0).value)
        overrides = parse_qos_overrides(p("qos_overrides", [""]).value or [])
        depth = int(p("qos_depth", 10).value)
        self.wait_subscribers = int(p("wait_subscribers", 0).value)
        self.wait_timeout_s = float(p("wait_timeout_s", 10.0).value)
        self.start_delay_s = float(p("start_delay_s", 0.5).value)
        self.exit_at_end = bool(p("exit_at_end", False).value)
        self.drain_timeout_s = float(p("drain_timeout_s", 5.0).value)
        self.progress_interval_s = float(p("progress_interval_s", 5.0).value)
        parameters_declared(self)  # an unknown parameter fails here, before the bag is opened (listing mode stops)
        if not bag:
            raise ValueError("parameter 'bag' is empty: give the path of a rosbag2 recording")
        if self.rate <= 0:
            raise ValueError(f"rate must be > 0, got {self.rate}")
        if self.start_offset_s < 0:
            raise ValueError(f"start_offset_s must be >= 0, got {self.start_offset_s}")
        if clock_rate <= 0:
            raise ValueError(f"clock_rate_hz must be > 0, got {clock_rate}")
        if self.drain_timeout_s < 0:
            raise ValueError(f"drain_timeout_s must be >= 0, got {self.drain_timeout_s}")
        self.clock_period_s = 1.0 / clock_rate

        self.reader = BagReader(bag)  # BagError (a ValueError) → "error: bag PATH: problem", exit code 2
        unknown = [t for t in only + list(overrides) + list(remap) if t not in self.reader.topics]
        if unknown:
            raise ValueError(f"bag {bag}: has no topic(s) {unknown}; it has {sorted(self.reader.topics)}")
        self.topics = only or sorted(self.reader.topics)
        # an old bag's instruction goes where today's planner listens, so old recordings outlive the deprecated topic
        if (DEPRECATED_INSTRUCTION_TOPIC in self.topics and INSTRUCTION_TOPIC not in self.reader.topics
                and DEPRECATED_INSTRUCTION_TOPIC not in remap):
            remap[DEPRECATED_INSTRUCTION_TOPIC] = INSTRUCTION_TOPIC
            self.get_logger().info(f"bag {bag} holds the instruction on {DEPRECATED_INSTRUCTION_TOPIC} (recorded "
                                   f"before the rename): replaying it on {INSTRUCTION_TOPIC}")
        if self.reader.message_count == 0:
            raise ValueError(f"bag {bag}: holds no messages")
        self.publishers_: dict[str, object] = {}
        for topic in self.topics:
            info = self.reader.topics[topic]
            try:
                msg_cls = import_message(info.msgtype)
            except ValueError as exc:
                self.get_logger().warning(f"skipping {topic}: {exc}")
                continue
            if topic in overrides:
                qos = rclpy_qos(*overrides[topic], depth)
            elif info.msgtype.startswith("sensor_msgs/"):
                qos = qos_profile_sensor_data
            else:
                rel, dur = qos_policies(info.qos)
                qos = rclpy_qos(rel or "reliable", dur or "volatile", depth)
            self.publishers_[topic] = self.create_publisher(msg_cls, remap.get(topic, topic), qos)
        if not self.publishers_:
            raise ValueError(f"bag {bag}: none of its topics has an importable message type")
        self.clock_pub = None
        if self.publish_clock:
            from rosgraph_msgs.msg import Clock

            self._clock_cls = Clock
            self.clock_pub = self.create_publisher(Clock, "/clock", 10)
        self.published = 0
        self.failed: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._play_safe, name="replay", daemon=True)
        self._thread.start()
        self.get_logger().info(
            f"replaying {bag}: {len(self.publishers_)} topic(s), {self.reader.message_count} messages, "
            f"{self.reader.duration_s:.2f} s, rate {self.rate}, offset {self.start_offset_s} s"
            + (", loop" if self.loop else "") + (", /clock" if self.publish_clock else ""))

    # -- playback thread
    def _sleep_until(self, wall_target: float, bag_t0: int, wall_t0: float) -> bool:
        """Sleep until ``wall_target`` (monotonic s), publishing /clock meanwhile; False if stopping."""
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= wall_target:
                return True
            if self.clock_pub is not None:
                self._publish_clock(bag_t0 + int((now - wall_t0) * self.rate * 1e9))
                self._stop.wait(min(self.clock_period_s, wall_target - now))
            else:
                self._stop.wait(min(0.1, wall_target - now))
        return False

    def _publish_clock(self, t_ns: int) -> None:
        msg = self._clock_cls()
        msg.clock.sec, msg.clock.nanosec = divmod(int(t_ns), 1_000_000_000)
        self.clock_pub.publish(msg)

    def _wait_for_subscribers(self) -> None:
        if self.wait_subscribers <= 0:
            return
        end = time.monotonic() + self.wait_timeout_s
        while time.monotonic() < end and not self._stop.is_set():
            if all(p.get_subscription_count() >= self.wait_subscribers for p in self.publishers_.values()):
                return
            time.sleep(0.05)
        short = [t for t, p in self.publishers_.items() if p.get_subscription_count() < self.wait_subscribers]
        if short:
            self.get_logger().warning(f"playing although {short} have fewer than {self.wait_subscribers} "
                                      f"subscriber(s) after {self.wait_timeout_s} s")

    def _play(self) -> None:
        self._wait_for_subscribers()
        start_ns = self.reader.start_ns + int(self.start_offset_s * 1e9)
        # hold /clock at the start time meanwhile, so use_sim_time nodes have a time before the first message
        end_delay = time.monotonic() + self.start_delay_s
        while time.monotonic() < end_delay:
            if self.clock_pub is not None:
                self._publish_clock(start_ns)
            if self._stop.wait(min(self.clock_period_s, max(0.0, end_delay - time.monotonic()))):
                return
        total_s = max(self.reader.end_ns - start_ns, 0) / 1e9
        topics = list(self.publishers_)
        while not self._stop.is_set():
            wall_t0 = time.monotonic()
            next_progress = wall_t0 + self.progress_interval_s
            for msg in self.reader.messages(topics, start_ns=start_ns):
                target = wall_t0 + (msg.timestamp_ns - start_ns) / 1e9 / self.rate
                if not self._sleep_until(target, start_ns, wall_t0):
                    return
                if self.clock_pub is not None:
                    self._publish_clock(msg.timestamp_ns)
                self.publishers_[msg.topic].publish(msg.data)
                self.published += 1
                if time.monotonic() >= next_progress:
                    next_progress += self.progress_interval_s
                    done = (msg.timestamp_ns - start_ns) / 1e9
                    self.get_logger().info(f"bag time {done:.1f}/{total_s:.1f} s "
                                           f"({100 * done / max(total_s, 1e-9):.0f}%), {self.published} published")
            if not self.loop:
                break
            self.get_logger().info(f"looping ({self.published} published so far)")
        self.get_logger().info(f"end of bag: {self.published} messages published"
                               + ("; exiting" if self.exit_at_end else "; idling (exit_at_end is false)"))
        if self.exit_at_end:
            self._drain()
            self._shutdown()

    def _drain(self) -> None:
        """Wait (≤ drain_timeout_s in all) until matched subscribers acknowledged every reliable message.

        A reliable writer that exits right after its last publish loses that message for a reader whose half of
        discovery is still under way (it drops data from a writer it does not know yet, and the writer is gone
        before its next heartbeat); best-effort publishers return at once."""
        end = time.monotonic() + self.drain_timeout_s
        late = []
        for topic, pub in self.publishers_.items():
            left = max(0.0, end - time.monotonic())
            if not pub.wait_for_all_acked(Duration(nanoseconds=int(left * 1e9))):
                late.append(topic)
        if late:
            self.get_logger().warning(f"exiting although {late} were not acknowledged by every subscriber within "
                                      f"drain_timeout_s = {self.drain_timeout_s} s")

    def _play_safe(self) -> None:
        try:
            self._play()
        except BagError as exc:
            self.failed = str(exc)
        except Exception as exc:  # report and exit non-zero rather than hang silently
            if self._stop.is_set() or not self.context.ok():
                return  # publishing raced with shutdown (Ctrl-C / SIGTERM): a normal exit
            self.failed = f"replay failed: {type(exc).__name__}: {exc}"
        if self.failed:
            print(f"error: {self.failed}", file=sys.stderr, flush=True)
            self._shutdown()

    def _shutdown(self) -> None:
        # Ends executor.spin() in run_node, which then calls close() and destroys the node.
        if self.context.ok():
            rclpy.try_shutdown(context=self.context)

    def close(self) -> None:
        """Stop the playback thread (called by run_node on shutdown)."""
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=5.0)
        self.reader.close()


def main(args: list[str] | None = None) -> None:
    nodes: list[Replay] = []

    def factory() -> Replay:
        nodes.append(Replay())
        return nodes[-1]

    run_node(factory, args)
    if nodes and nodes[0].failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
