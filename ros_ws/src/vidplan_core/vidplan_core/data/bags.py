"""rosbag2 recordings without ROS: read raw CDR messages back (:class:`BagReader`, salvaging interrupted bags), the
message definitions and QoS they carry; writing is :mod:`vidplan_core.data.bag_writer`, through ``rosbags``.

Messages are handled as raw CDR bytes exactly as they travel on the wire (an rclpy subscription with
``raw=True`` gives them; ``publisher.publish(raw_bytes)`` replays them; ``rclpy.serialization.deserialize_message``
or a ``rosbags`` typestore decodes them). Nothing here imports rclpy.

Layout of a recording (``path``):

- no splitting: ``path/`` is one rosbag2 bag (``path/metadata.yaml`` + ``path/<name>.mcap`` or ``.db3``).
- split by size and/or duration: ``path/`` is a directory of numbered, complete rosbag2 bags
  ``path/<name>_0/``, ``path/<name>_1/``, ... Each has its own ``metadata.yaml`` and plays alone
  (``ros2 bag play path/<name>_3``); :class:`BagReader` on ``path`` reads them all, merged in time order.
  Why this layout: rosbags' ``Writer`` writes exactly one storage file per bag, so numbered complete bags are the
  split layout it supports through its public API.

An interrupted recording (the writing process killed, even with SIGKILL) has no ``metadata.yaml`` in its last (or
only) bag, whose storage file ends wherever the writer stopped; :class:`BagReader` with ``recover=True`` salvages
its messages. rosbags alone would hold up to 1 MiB of mcap messages in memory (its chunk) and commit sqlite3 only
at close, so a kill would lose all of that — by default :class:`BagWriter` hands the messages to the OS at least
every ``flush_period_s`` (1 s) instead, which bounds the loss of a killed recording to about that long.

Timestamps are integer nanoseconds (the recorder's receive time on the node clock; sim time under use_sim_time).
"""

from __future__ import annotations

import heapq
import os
import re
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

__all__ = [
    "BagError",
    "BagMessage",
    "BagReader",
    "MessageDefinitions",
    "TopicInfo",
    "find_bags",
    "make_qos",
    "normalize_msgtype",
    "parse_qos_overrides",
    "qos_policies",
    "read_messages",
]

STORAGES = {"mcap": ".mcap", "sqlite3": ".db3"}


class BagError(ValueError):
    """A bag that is missing, truncated, corrupt or unusable; the message names the bag and the problem."""

    def __init__(self, path: str | Path, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"bag {self.path}: {problem}")


class BagMessage(NamedTuple):
    """One recorded message: topic name, ROS type (``pkg/msg/Name``), timestamp (ns) and raw CDR bytes."""

    topic: str
    msgtype: str
    timestamp_ns: int
    data: bytes


@dataclass(frozen=True)
class TopicInfo:
    """A topic of a recording: type, message count (summed over split bags) and the QoS offered when recorded
    (a list of ``rosbags.interfaces.Qos``; empty when unknown)."""

    name: str
    msgtype: str
    message_count: int
    qos: tuple = ()


def normalize_msgtype(msgtype: str) -> str:
    """``pkg/Name`` or ``pkg/msg/Name`` → ``pkg/msg/Name``; raises ValueError for anything else."""
    parts = msgtype.strip().split("/")
    if len(parts) == 2 and all(parts):
        return f"{parts[0]}/msg/{parts[1]}"
    if len(parts) == 3 and all(parts) and parts[1] == "msg":
        return "/".join(parts)
    raise ValueError(f"message type {msgtype!r}: expected 'pkg/msg/Name' or 'pkg/Name'")


# --------------------------------------------------------------------------------------------------------------
# QoS (rosbags' representation, stored in metadata.yaml as offered_qos_profiles)


def make_qos(reliability: str = "reliable", durability: str = "volatile", depth: int = 10):
    """A ``rosbags.interfaces.Qos`` (keep-last ``depth``) from plain names.

    Args:
        reliability: "reliable" or "best_effort".
        durability: "volatile" or "transient_local".
        depth: history depth (messages).
    """
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    rel = {"reliable": QosReliability.RELIABLE, "best_effort": QosReliability.BEST_EFFORT}
    dur = {"volatile": QosDurability.VOLATILE, "transient_local": QosDurability.TRANSIENT_LOCAL}
    if reliability not in rel:
        raise ValueError(f"QoS reliability {reliability!r}: expected one of {sorted(rel)}")
    if durability not in dur:
        raise ValueError(f"QoS durability {durability!r}: expected one of {sorted(dur)}")
    never = QosTime(0, 0)  # rosbag2 writes "infinite"/default durations as 0
    return Qos(QosHistory.KEEP_LAST, int(depth), rel[reliability], dur[durability], never, never,
               QosLiveliness.AUTOMATIC, never, False)


def qos_policies(qos: Iterable) -> tuple[str | None, str | None]:
    """(reliability, durability) names that match every publisher in ``qos`` (rosbags Qos list).

    Returns ("best_effort" if any publisher is best-effort else "reliable", "transient_local" only if all are),
    or (None, None) for an empty list (QoS unknown).
    """
    from rosbags.interfaces import QosDurability, QosReliability

    qos = list(qos)
    if not qos:
        return None, None
    rel = "best_effort" if any(q.reliability == QosReliability.BEST_EFFORT for q in qos) else "reliable"
    dur = "transient_local" if all(q.durability == QosDurability.TRANSIENT_LOCAL for q in qos) else "volatile"
    return rel, dur


def parse_qos_overrides(entries: Iterable[str]) -> dict[str, tuple[str, str]]:
    """Parse ``["/topic:best_effort", "/estop:reliable:transient_local", ...]`` → {topic: (reliability,
    durability)} (durability defaults to "volatile"); ValueError naming the bad entry otherwise."""
    out: dict[str, tuple[str, str]] = {}
    for entry in entries:
        if not entry.strip():
            continue
        parts = entry.strip().split(":")
        if len(parts) not in (2, 3) or not parts[0].startswith("/") \
                or parts[1] not in ("reliable", "best_effort") \
                or (len(parts) == 3 and parts[2] not in ("volatile", "transient_local")):
            raise ValueError(f"QoS override {entry!r}: expected '/topic:reliable|best_effort"
                             f"[:volatile|transient_local]'")
        out[parts[0]] = (parts[1], parts[2] if len(parts) == 3 else "volatile")
    return out


# --------------------------------------------------------------------------------------------------------------
# Message definitions (needed in metadata/mcap schemas so other tools can decode the bag)


class MessageDefinitions:
    """Message definition text and RIHS01 type hash for ROS 2 types, as rosbag2 stores them.

    Standard types come from rosbags' ROS 2 Kilted typestore; others (e.g. ``vidplan_interfaces/msg/PlanChunk``)
    are parsed from ``share/<pkg>/msg/<Name>.msg`` under the ament prefixes (``AMENT_PREFIX_PATH``) and
    ``search_paths`` (extra prefixes or share directories).
    """

    def __init__(self, search_paths: Sequence[str | Path] = ()):
        from rosbags.typesys import Stores, get_typestore

        self.typestore = get_typestore(Stores.ROS2_KILTED)
        prefixes = [Path(p) for p in search_paths]
        prefixes += [Path(p) for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
        self._prefixes = prefixes
        self._cache: dict[str, tuple[str, str]] = {}

    def _find_msg_file(self, msgtype: str) -> Path | None:
        pkg, _, name = msgtype.split("/")
        for prefix in self._prefixes:
            for cand in (prefix / "share" / pkg / "msg" / f"{name}.msg", prefix / pkg / "msg" / f"{name}.msg"):
                if cand.is_file():
                    return cand
        return None

    def _register(self, msgtype: str) -> None:
        from rosbags.typesys import get_types_from_msg

        path = self._find_msg_file(msgtype)
        if path is None:
            raise ValueError(f"message type {msgtype}: unknown to the ROS 2 Kilted typestore and no "
                             f"share/<pkg>/msg/<Name>.msg found under AMENT_PREFIX_PATH or the search paths")
        self.typestore.register(get_types_from_msg(path.read_text(), msgtype))

    def get(self, msgtype: str) -> tuple[str, str]:
        """(message definition text, RIHS01 hash) of ``msgtype``; raises ValueError when it cannot be found."""
        from rosbags.typesys import TypesysError

        msgtype = normalize_msgtype(msgtype)
        if msgtype in self._cache:
            return self._cache[msgtype]
        if msgtype not in self.typestore.fielddefs:
            self._register(msgtype)
        for _ in range(64):  # nested custom types: register each missing one and retry
            try:
                msgdef, _ = self.typestore.generate_msgdef(msgtype, ros_version=2)
                digest = self.typestore.hash_rihs01(msgtype)
                break
            except (TypesysError, KeyError) as exc:
                m = re.search(r"([A-Za-z0-9_]+/msg/[A-Za-z0-9_]+)", str(exc))
                if not m or m.group(1) in self.typestore.fielddefs:
                    raise ValueError(f"message type {msgtype}: cannot build its definition ({exc})") from exc
                self._register(m.group(1))
        else:  # pragma: no cover - a cycle would be a broken typestore
            raise ValueError(f"message type {msgtype}: too many nested unknown types")
        self._cache[msgtype] = (msgdef, digest)
        return msgdef, digest


# --------------------------------------------------------------------------------------------------------------
# Reading


def _storage_files(bag: Path) -> list[Path]:
    return sorted(p for p in bag.iterdir() if p.suffix in (".mcap", ".db3") and p.is_file())


def _is_bag_dir(path: Path) -> bool:
    return path.is_dir() and ((path / "metadata.yaml").is_file() or bool(_storage_files(path)))


def _split_index(path: Path) -> tuple[int, str]:
    m = re.search(r"_(\d+)$", path.name)
    return (int(m.group(1)) if m else -1, path.name)


def find_bags(path: str | Path) -> list[Path]:
    """The bag directories of a recording: ``[path]`` for a single bag, or the numbered bags of a split recording
    (sorted by their number). Raises :class:`BagError` when ``path`` is missing or holds no bag."""
    path = Path(path)
    if not path.exists():
        raise BagError(path, "does not exist")
    if path.is_file():
        if path.suffix in (".mcap", ".db3") and _is_bag_dir(path.parent):
            return [path.parent]
        raise BagError(path, "is a file; expected a rosbag2 bag directory (with metadata.yaml)")
    if _is_bag_dir(path):
        return [path]
    subs = sorted((p for p in path.iterdir() if _is_bag_dir(p)), key=_split_index)
    if not subs:
        raise BagError(path, "holds no rosbag2 bag (no metadata.yaml or .mcap/.db3 file, nor numbered bags)")
    return subs


class _RecoveredBag:
    """Messages salvaged from the storage files of a bag without metadata or with a truncated file (file order):
    .mcap files are read record by record up to the damage, .db3 files through sqlite3 (what was committed)."""

    def __init__(self, bag: Path, warnings: list[str]):
        from mcap.exceptions import EndOfFile
        from mcap.records import Channel, Message, Schema
        from mcap.stream_reader import StreamReader

        self.bag = bag
        self.topics: dict[str, TopicInfo] = {}
        self._messages: list[BagMessage] = []  # file order; the recorder writes in receive order
        files = _storage_files(bag)
        if not files:
            raise BagError(bag, "cannot be recovered: it has no .mcap or .db3 file")
        counts: dict[str, int] = {}
        for f in files:
            if f.suffix == ".db3":
                self._recover_db3(f, counts, warnings)
                continue
            schemas: dict[int, str] = {}
            channels: dict[int, tuple[str, str]] = {}
            n = 0
            with open(f, "rb") as fh:
                try:
                    for rec in StreamReader(fh, skip_magic=False).records:
                        if isinstance(rec, Schema):
                            schemas[rec.id] = rec.name
                        elif isinstance(rec, Channel):
                            channels[rec.id] = (rec.topic, schemas.get(rec.schema_id, ""))
                        elif isinstance(rec, Message) and rec.channel_id in channels:
                            topic, msgtype = channels[rec.channel_id]
                            self._messages.append(BagMessage(topic, msgtype, rec.log_time, bytes(rec.data)))
                            counts[topic] = counts.get(topic, 0) + 1
                            n += 1
                    warnings.append(f"bag {bag}: {f.name} recovered without metadata.yaml ({n} messages)")
                except EndOfFile:  # the file just stops: the writer was killed (or the file was cut short)
                    warnings.append(f"bag {bag}: {f.name} is truncated (interrupted recording: no summary, no "
                                    f"metadata.yaml); recovered the {n} messages written before it stopped")
                except Exception as exc:  # any other decode error ends the readable part of the file
                    warnings.append(f"bag {bag}: {f.name} is truncated or corrupt ({type(exc).__name__}: {exc}); "
                                    f"recovered the {n} messages before the damage")
            for topic, msgtype in channels.values():
                self.topics.setdefault(topic, TopicInfo(topic, msgtype, 0))
        for topic, info in self.topics.items():
            self.topics[topic] = TopicInfo(topic, info.msgtype, counts.get(topic, 0))

    def _recover_db3(self, f: Path, counts: dict[str, int], warnings: list[str]) -> None:
        n = 0
        try:
            # mode=rw: never create a file; opening rolls back a killed writer's uncommitted transaction
            conn = sqlite3.connect(f"file:{f}?mode=rw", uri=True)
            try:
                rows = conn.execute("SELECT id, name, type FROM topics")
                channels = {i: (name, msgtype) for i, name, msgtype in rows}
                for topic, msgtype in channels.values():
                    self.topics.setdefault(topic, TopicInfo(topic, msgtype, 0))
                rows = conn.execute("SELECT topic_id, timestamp, data FROM messages ORDER BY id")
                for topic_id, stamp, data in rows:
                    if topic_id in channels:
                        topic, msgtype = channels[topic_id]
                        self._messages.append(BagMessage(topic, msgtype, int(stamp), bytes(data)))
                        counts[topic] = counts.get(topic, 0) + 1
                        n += 1
            finally:
                conn.close()
            warnings.append(f"bag {self.bag}: {f.name} recovered without metadata.yaml ({n} messages)")
        except sqlite3.Error as exc:
            warnings.append(f"bag {self.bag}: {f.name} is truncated or corrupt ({type(exc).__name__}: {exc}); "
                            f"recovered the {n} messages before the damage")

    def messages(self, topics: set[str] | None, start_ns: int | None, stop_ns: int | None) -> Iterator[BagMessage]:
        for m in self._messages:
            if topics is not None and m.topic not in topics:
                continue
            if start_ns is not None and m.timestamp_ns < start_ns:
                continue
            if stop_ns is not None and m.timestamp_ns >= stop_ns:
                continue
            yield m


def _explain(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    low = text.lower()
    if "end magic" in low or "truncat" in low or "unexpected end" in low or "not enough data" in low:
        return f"storage file is truncated or was not closed (interrupted recording?): {text}"
    if "metadata" in low and ("not exist" in low or "missing" in low or "no such" in low):
        return "metadata.yaml is missing (recording interrupted before it was closed?)"
    if "magic" in low or "not a database" in low or "malformed" in low:
        return f"storage file is corrupt or not an mcap/sqlite3 file: {text}"
    return f"cannot be read ({type(exc).__name__}: {text})"


class BagReader:
    """Read a rosbag2 recording (single bag or split recording; mcap or sqlite3) as raw messages in time order.

    Args:
        path: bag directory, or directory of numbered bags written by :class:`BagWriter` with splitting.
        recover: for a bag that cannot be opened (no metadata.yaml, truncated .mcap), salvage the messages
            before the damage instead of failing; each salvage adds a line to :attr:`warnings`.
    Raises:
        BagError: missing path, no bag, unreadable/truncated/corrupt bag (naming the bag and the problem), or
            one topic recorded with different types.
    Attributes:
        bags: bag directories, in order. topics: name → :class:`TopicInfo`. start_ns/end_ns: first/last
        timestamp (ns; 0 when empty). message_count: total. warnings: recovery notes.
    """

    def __init__(self, path: str | Path, *, recover: bool = False):
        from rosbags.rosbag2 import Reader

        self.path = Path(path)
        self.bags = find_bags(self.path)
        self.warnings: list[str] = []
        self._readers: list = []
        topics: dict[str, TopicInfo] = {}
        start, end = None, None
        for bag in self.bags:
            try:
                reader = Reader(bag)
                reader.open()
            except Exception as exc:  # rosbags raises ReaderError, but also OSError/KeyError for odd files
                problem = _explain(exc)
                if not recover:
                    raise BagError(bag, problem) from exc
                self._readers.append(_RecoveredBag(bag, self.warnings))
                bag_topics = self._readers[-1].topics.values()
                stamps = [m.timestamp_ns for m in self._readers[-1]._messages]
                bstart, bend = (min(stamps), max(stamps)) if stamps else (None, None)
            else:
                self._readers.append(reader)
                bag_topics = []
                for conn in reader.connections:
                    qos = tuple(getattr(conn.ext, "offered_qos_profiles", ()) or ())
                    bag_topics.append(TopicInfo(conn.topic, conn.msgtype, conn.msgcount, qos))
                bstart, bend = (reader.start_time, reader.end_time - 1) if reader.message_count else (None, None)
            for t in bag_topics:
                if t.name in topics:
                    if topics[t.name].msgtype != t.msgtype:
                        raise BagError(bag, f"topic {t.name} has type {t.msgtype} here but {topics[t.name].msgtype} "
                                            f"in an earlier bag of the recording")
                    old = topics[t.name]
                    topics[t.name] = TopicInfo(t.name, t.msgtype, old.message_count + t.message_count, old.qos or t.qos)
                else:
                    topics[t.name] = t
            if bstart is not None:
                start = bstart if start is None else min(start, bstart)
                end = bend if end is None else max(end, bend)
        self.topics = topics
        self.start_ns = start or 0
        self.end_ns = end or 0
        self.message_count = sum(t.message_count for t in topics.values())

    @property
    def duration_s(self) -> float:
        """Time from the first to the last message (s)."""
        return (self.end_ns - self.start_ns) / 1e9

    def _iter_bag(self, i: int, topics: set[str] | None, start_ns: int | None,
                  stop_ns: int | None) -> Iterator[BagMessage]:
        reader, bag = self._readers[i], self.bags[i]
        if isinstance(reader, _RecoveredBag):
            yield from reader.messages(topics, start_ns, stop_ns)
            return
        conns = [c for c in reader.connections if topics is None or c.topic in topics]
        if not conns:
            return
        n = 0
        it = reader.messages(connections=conns, start=start_ns, stop=stop_ns)
        while True:
            try:
                conn, ts, data = next(it)
            except StopIteration:
                return
            except Exception as exc:  # corrupt chunk, bad compression, sqlite errors
                raise BagError(bag, f"corrupt after {n} messages: {_explain(exc)}") from exc
            n += 1
            yield BagMessage(conn.topic, conn.msgtype, ts, bytes(data))

    def messages(self, topics: Iterable[str] | None = None, start_ns: int | None = None,
                 stop_ns: int | None = None) -> Iterator[BagMessage]:
        """Messages with ``start_ns <= timestamp < stop_ns`` on ``topics`` (all if None), in timestamp order
        across all bags; messages with equal timestamps keep their write order, so per-topic order is kept.

        Raises:
            BagError: a bag turns out corrupt while reading (naming it and how many messages were read).
        """
        wanted = None if topics is None else set(topics)
        if wanted is not None:
            unknown = wanted - set(self.topics)
            if unknown:
                raise BagError(self.path, f"has no topic(s) {sorted(unknown)}; it has {sorted(self.topics)}")
        iters = [self._iter_bag(i, wanted, start_ns, stop_ns) for i in range(len(self.bags))]
        if len(iters) == 1:
            yield from iters[0]
        else:
            yield from heapq.merge(*iters, key=lambda m: m.timestamp_ns)

    def close(self) -> None:
        for r in self._readers:
            if not isinstance(r, _RecoveredBag):
                r.close()
        self._readers = []

    def __enter__(self) -> BagReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_messages(path: str | Path, topics: Iterable[str] | None = None, *, recover: bool = False
                  ) -> Iterator[BagMessage]:
    """Shorthand: every message of the recording at ``path`` (on ``topics``) in time order; see :class:`BagReader`."""
    with BagReader(path, recover=recover) as reader:
        yield from reader.messages(topics)
