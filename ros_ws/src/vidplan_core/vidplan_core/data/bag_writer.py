"""rosbag2 writing without ROS: :class:`BagWriter` records raw CDR messages through ``rosbags``, splitting into
numbered complete bags by size and/or duration, and hands messages to the OS at least every ``flush_period_s`` so a
killed recording loses about that long (layout and reading: :mod:`vidplan_core.data.bags`)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vidplan_core.data.bags import STORAGES, BagError, MessageDefinitions, normalize_msgtype

__all__ = ["BagWriter"]


@dataclass
class _TopicSpec:
    msgtype: str
    msgdef: str
    digest: str
    qos: tuple


@dataclass
class BagWriter:
    """Write raw CDR messages to a rosbag2 recording at ``path`` (which must not exist), splitting if asked.

    Args:
        path: recording directory to create (see the module docstring for the layout).
        storage: "mcap" (default) or "sqlite3".
        split_size_bytes: start a new numbered bag before the payload of the current one would exceed this many
            bytes (message payload bytes; the file is a little larger). 0 = no size split.
        split_duration_s: start a new numbered bag when a message's timestamp is this many seconds (bag time)
            after the first message of the current bag. 0 = no duration split.
        definitions: where message definitions come from (a default :class:`MessageDefinitions` if None).
        flush_period_s: hand the messages written to the OS (:meth:`flush`) once the oldest unflushed one is this
            many seconds old (wall clock, checked on each :meth:`write` and :meth:`flush_if_due`): a process
            killed mid-recording loses only about that long. 0 = rosbags' own behaviour (mcap chunks of 1 MiB
            held in memory, sqlite3 committed at close: a kill loses up to all of it).

    Attributes (read-only): ``bags`` (directories so far), ``counts`` (messages written per topic),
    ``bytes_written`` (payload bytes), ``flushed_count`` (messages handed to the OS: in closed bags or flushed;
    a kill of this process loses at most ``message_count - flushed_count``).

    Not thread-safe: call from one thread (the recorder's writer thread). Use as a context manager or call
    :meth:`close`; ``metadata.yaml`` of each bag is written when that bag is closed.
    """

    path: Path | str
    storage: str = "mcap"
    split_size_bytes: int = 0
    split_duration_s: float = 0.0
    definitions: MessageDefinitions | None = None
    flush_period_s: float = 1.0
    bags: list[Path] = field(default_factory=list, init=False)
    counts: dict[str, int] = field(default_factory=dict, init=False)
    bytes_written: int = field(default=0, init=False)
    flushed_count: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        from rosbags.rosbag2 import StoragePlugin

        self.path = Path(self.path)
        if self.storage not in STORAGES:
            raise ValueError(f"storage {self.storage!r}: expected one of {sorted(STORAGES)}")
        if self.split_size_bytes < 0 or self.split_duration_s < 0:
            raise ValueError("split_size_bytes and split_duration_s must be >= 0 (0 disables splitting)")
        if not self.flush_period_s >= 0:  # also rejects NaN
            raise ValueError(f"flush_period_s must be >= 0 (0 = flush only at close), got {self.flush_period_s}")
        if self.path.exists():
            raise BagError(self.path, "output path exists already; choose a new one (bags are never overwritten)")
        self._plugin = StoragePlugin.MCAP if self.storage == "mcap" else StoragePlugin.SQLITE3
        self.split = bool(self.split_size_bytes or self.split_duration_s)
        self.definitions = self.definitions or MessageDefinitions()
        self._topics: dict[str, _TopicSpec] = {}
        self._writer = None
        self._conns: dict[str, object] = {}
        self._bag_bytes = 0
        self._bag_start_ns: int | None = None
        self._unflushed_since: float | None = None  # monotonic time of the oldest message not yet flushed
        self._closed = False
        if self.split:
            self.path.mkdir(parents=True)
        self._open_next()

    # -- bag rollover
    def _open_next(self) -> None:
        from rosbags.rosbag2 import Writer

        bag = self.path / f"{self.path.name}_{len(self.bags)}" if self.split else self.path
        writer = Writer(bag, version=9, storage_plugin=self._plugin)
        writer.open()
        _check_flushable(writer.storage, self.storage)
        self._writer = writer
        self.bags.append(bag)
        self._conns = {}
        for topic, spec in self._topics.items():
            self._add_connection(topic, spec)
        self._bag_bytes = 0
        self._bag_start_ns = None
        self._unflushed_since = None

    def _add_connection(self, topic: str, spec: _TopicSpec) -> None:
        self._conns[topic] = self._writer.add_connection(
            topic, spec.msgtype, msgdef=spec.msgdef, rihs01=spec.digest, offered_qos_profiles=list(spec.qos))

    def add_topic(self, topic: str, msgtype: str, qos: Sequence = ()) -> None:
        """Declare a topic before writing to it (also in later split bags).

        Args:
            topic: absolute topic name.
            msgtype: ROS type, ``pkg/msg/Name`` (or ``pkg/Name``).
            qos: QoS profiles offered by its publishers (rosbags ``Qos``; see :func:`make_qos`), stored in the
                metadata so a player can match them.
        Raises:
            ValueError: unknown type (no definition), or the topic was added with another type.
        """
        msgtype = normalize_msgtype(msgtype)
        if topic in self._topics:
            if self._topics[topic].msgtype != msgtype:
                raise ValueError(f"topic {topic}: already recorded as {self._topics[topic].msgtype}, not {msgtype}")
            return
        try:
            msgdef, digest = self.definitions.get(msgtype)
        except ValueError as exc:
            raise ValueError(f"topic {topic}: {exc}") from exc
        spec = _TopicSpec(msgtype, msgdef, digest, tuple(qos))
        self._topics[topic] = spec
        self.counts[topic] = 0
        self._add_connection(topic, spec)

    def write(self, topic: str, timestamp_ns: int, data: bytes | memoryview) -> None:
        """Append one message (raw CDR bytes) with its timestamp (ns); rolls over to a new bag when a split
        limit would be passed (never leaving a bag empty); flushes when ``flush_period_s`` is due."""
        if self._closed:
            raise BagError(self.path, "write after close")
        if topic not in self._conns:
            raise ValueError(f"topic {topic}: not added (call add_topic first)")
        n = len(data)
        if self.split and self._bag_start_ns is not None:
            too_big = self.split_size_bytes and self._bag_bytes + n > self.split_size_bytes
            too_long = self.split_duration_s and timestamp_ns - self._bag_start_ns >= self.split_duration_s * 1e9
            if too_big or too_long:
                self._writer.close()
                self.flushed_count = self.message_count  # a closed bag is complete on disk
                self._open_next()
        if self._bag_start_ns is None:
            self._bag_start_ns = int(timestamp_ns)
        self._writer.write(self._conns[topic], int(timestamp_ns), data)
        self._bag_bytes += n
        self.bytes_written += n
        self.counts[topic] += 1
        if self._unflushed_since is None:
            self._unflushed_since = time.monotonic()
        self.flush_if_due()

    def flush(self) -> None:
        """Hand every message written so far to the operating system: mcap closes rosbags' pending chunk and
        flushes the file buffer, sqlite3 commits. What was flushed survives a kill of this process (not a power
        cut: no fsync) and reads back with ``BagReader(path, recover=True)``; the bag stays open."""
        if self._closed or self._unflushed_since is None:
            return
        storage = self._writer.storage
        if self.storage == "mcap":
            if storage.chunk.msgs:  # a chunk of only schema/channel records would have no time range
                storage.close_chunk()
            storage.bio.flush()
        else:
            storage.conn.commit()
        self._unflushed_since = None
        self.flushed_count = self.message_count

    def flush_if_due(self) -> bool:
        """:meth:`flush` if the oldest unflushed message was written ``flush_period_s`` or more ago (call it
        while idle too, so the last messages before a pause do not wait for the next one); True if it flushed."""
        if (self.flush_period_s and self._unflushed_since is not None
                and time.monotonic() - self._unflushed_since >= self.flush_period_s):
            self.flush()
            return True
        return False

    @property
    def message_count(self) -> int:
        """Messages written so far (all bags)."""
        return sum(self.counts.values())

    def close(self) -> list[Path]:
        """Close the current bag (writing its index and metadata.yaml); returns all bag directories written."""
        if not self._closed:
            self._closed = True
            self._writer.close()
            self.flushed_count = self.message_count
        return list(self.bags)

    def __enter__(self) -> BagWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_flushable(storage: object, name: str) -> None:
    """Fail loudly, not by losing data on a kill, if rosbags' storage writer lacks what :meth:`BagWriter.flush`
    uses (internals of rosbags 0.11: McapWriter.chunk/close_chunk/bio, Sqlite3Writer.conn)."""
    need = ("chunk", "close_chunk", "bio") if name == "mcap" else ("conn",)
    missing = [a for a in need if not hasattr(storage, a)]
    if missing:
        raise RuntimeError(f"rosbags' {type(storage).__name__} has no {missing}: BagWriter.flush cannot bound the "
                           f"loss of a killed recording with this rosbags version (requirements pin 0.11.9)")
