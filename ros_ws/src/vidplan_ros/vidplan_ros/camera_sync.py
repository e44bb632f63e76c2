"""Approximate-time synchronisation of the three DROID cameras (left, right, wrist) for the planner.

message_filters is not available from PyPI and, worse, never fires when a publisher's QoS is incompatible with the
subscription — silently. :class:`CameraSync` is a small replacement that:

* subscribes to the three image topics (default ``/cameras/{left,right,wrist}/image_raw``, sensor-data QoS);
* forms triplets whose ``header.stamp`` values lie within ``max_skew_s`` of each other (approximate time: every
  arrival tries to match the newest message of each camera against the closest ones of the others; messages older
  than an emitted triplet are dropped and counted);
* flags a camera as stale when nothing arrived for ``stale_after_s`` (node clock, so sim time under
  ``use_sim_time``: a paused simulation is not "stale") and logs the transition once;
* registers rclpy's incompatible-QoS event callback on each subscription and logs + flags the offending camera
  (``incompatible_qos``) instead of waiting forever.

Thread-safe: callbacks may run on a multithreaded executor; ``latest()`` can be called from any thread.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.node import Node
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import Image

from vidplan_core.spaces import VIEW_ORDER

__all__ = ["CameraSync", "Triplet", "image_to_array"]


def _stamp(msg) -> float:
    return msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9


@dataclass
class Triplet:
    """One synchronised set of images.

    Attributes:
        images: view → message, in :data:`VIEW_ORDER` (left, right, wrist).
        stamps: view → header stamp [s].
        stamp: the newest of the stamps [s] (what a plan computed from this triplet should be stamped with).
        skew_s: newest − oldest stamp [s] (≤ ``max_skew_s``).
    """

    images: dict[str, object]
    stamps: dict[str, float]
    stamp: float
    skew_s: float


@dataclass
class _CamState:
    queue: deque = field(default_factory=deque)  # (stamp, msg), oldest first
    received: int = 0
    dropped: int = 0
    last_rx: float | None = None  # node-clock time of the last arrival [s]
    stale: bool = False
    incompatible_qos: str = ""


class CameraSync:
    """Approximate-time triplets of the left/right/wrist cameras with staleness, drop and QoS reporting.

    Args:
        node: the node that owns the subscriptions (and whose clock measures staleness).
        topics: view → topic (default ``/cameras/<view>/image_raw``); remap here or with ROS remapping rules.
        max_skew_s: largest allowed difference between the stamps of a triplet [s] (default 0.03, half a 15 Hz period).
        stale_after_s: a camera with no message for this long is stale [s].
        queue_size: messages kept per camera while waiting for partners.
        qos: subscription QoS (default sensor data: best effort, volatile — compatible with every publisher's
            reliability and durability).
        callback: called with each new :class:`Triplet` (from the subscription callback's thread).
        check_period_s: how often staleness is re-evaluated and logged [s].
        msg_type: message type (sensor_msgs/Image; CompressedImage works the same).
    """

    def __init__(self, node: Node, topics: Mapping[str, str] | None = None, *, max_skew_s: float = 0.03,
                 stale_after_s: float = 0.5, queue_size: int = 10, qos: QoSProfile = qos_profile_sensor_data,
                 callback: Callable[[Triplet], None] | None = None, check_period_s: float = 0.1,
                 msg_type: type = Image, callback_group=None):
        if max_skew_s < 0 or stale_after_s <= 0 or queue_size < 1 or check_period_s <= 0:
            raise ValueError("CameraSync needs max_skew_s >= 0, stale_after_s > 0, queue_size >= 1, "
                             "check_period_s > 0")
        self.node = node
        self.topics = {v: f"/cameras/{v}/image_raw" for v in VIEW_ORDER}
        if topics:
            unknown = set(topics) - set(VIEW_ORDER)
            if unknown:
                raise ValueError(f"unknown camera views {sorted(unknown)}; expected {list(VIEW_ORDER)}")
            self.topics.update(topics)
        self.max_skew_s = float(max_skew_s)
        self.clock_jump_s = 1.0  # a stamp this much older than the last triplet means time jumped back
        self.stale_after_s = float(stale_after_s)
        self.queue_size = int(queue_size)
        self.callback = callback
        self.triplets = 0
        self._latest: Triplet | None = None
        self._last_emitted = -np.inf
        self._lock = threading.Lock()
        self._cams = {v: _CamState() for v in VIEW_ORDER}
        self._subs = []
        for view in VIEW_ORDER:
            events = SubscriptionEventCallbacks(incompatible_qos=lambda info, v=view: self._on_incompatible(v, info))
            self._subs.append(node.create_subscription(msg_type, self.topics[view],
                                                       lambda msg, v=view: self._on_image(v, msg), qos,
                                                       event_callbacks=events, callback_group=callback_group))
        self._timer = node.create_timer(check_period_s, self.check_staleness, callback_group=callback_group)

    # ------------------------------------------------------------------ public state
    @property
    def received(self) -> dict[str, int]:
        """Messages received per camera."""
        with self._lock:
            return {v: c.received for v, c in self._cams.items()}

    @property
    def dropped(self) -> dict[str, int]:
        """Messages per camera discarded without being part of a triplet (too old, unmatched or queue overflow)."""
        with self._lock:
            return {v: c.dropped for v, c in self._cams.items()}

    @property
    def stale(self) -> dict[str, bool]:
        """Per camera: True when nothing arrived for ``stale_after_s`` (or never), as of the last check."""
        with self._lock:
            return {v: c.stale for v, c in self._cams.items()}

    @property
    def incompatible_qos(self) -> dict[str, str]:
        """Per camera whose publisher has an incompatible QoS: the name of the offending policy."""
        with self._lock:
            return {v: c.incompatible_qos for v, c in self._cams.items() if c.incompatible_qos}

    @property
    def healthy(self) -> bool:
        """All cameras fresh and no QoS incompatibility."""
        with self._lock:
            return not any(c.stale or c.incompatible_qos for c in self._cams.values())

    def latest(self) -> Triplet | None:
        """The newest triplet (None before the first)."""
        with self._lock:
            return self._latest

    def status(self) -> dict[str, str]:
        """Key/value summary for /diagnostics."""
        with self._lock:
            out = {"triplets": str(self.triplets), "max_skew_s": str(self.max_skew_s)}
            for v, c in self._cams.items():
                out[f"{v}.received"] = str(c.received)
                out[f"{v}.dropped"] = str(c.dropped)
                out[f"{v}.stale"] = str(c.stale)
                if c.incompatible_qos:
                    out[f"{v}.incompatible_qos"] = c.incompatible_qos
            return out

    def close(self) -> None:
        """Destroy the subscriptions and the timer."""
        for s in self._subs:
            self.node.destroy_subscription(s)
        self.node.destroy_timer(self._timer)
        self._subs = []

    # ------------------------------------------------------------------ internals
    def _now(self) -> float:
        return self.node.get_clock().now().nanoseconds * 1e-9

    def _on_incompatible(self, view: str, info) -> None:
        kind = getattr(info, "last_policy_kind", None)
        name = getattr(kind, "name", str(kind)).removeprefix("RMW_QOS_POLICY_")
        with self._lock:
            first = not self._cams[view].incompatible_qos
            self._cams[view].incompatible_qos = name
        if first:
            self.node.get_logger().warning(
                f"camera '{view}' on {self.topics[view]}: a publisher offers a QoS incompatible with this "
                f"subscription (policy {name}); no images will arrive from it. Match the publisher's QoS "
                "(sensor-data QoS is the default here).")

    def _on_image(self, view: str, msg) -> None:
        stamp = _stamp(msg)
        now = self._now()
        emit: Triplet | None = None
        with self._lock:
            cam = self._cams[view]
            cam.received += 1
            cam.last_rx = now
            if cam.stale:
                cam.stale = False
                if cam.received > 1:
                    self.node.get_logger().info(f"camera '{view}' is publishing again")
            if stamp < self._last_emitted - self.clock_jump_s:
                # Time jumped back (bag loop, sim reset): start over instead of dropping everything from now on.
                self.node.get_logger().warn(f"camera '{view}' stamp jumped back {self._last_emitted - stamp:.2f} s; "
                                            "resetting the synchroniser")
                self._last_emitted = -np.inf
                for c in self._cams.values():
                    c.queue.clear()
            if stamp <= self._last_emitted:
                cam.dropped += 1  # older than a triplet already emitted
                return
            cam.queue.append((stamp, msg))
            while len(cam.queue) > self.queue_size:
                cam.queue.popleft()
                cam.dropped += 1
            emit = self._match(view)
        if emit is not None and self.callback is not None:
            self.callback(emit)

    def _match(self, pivot_view: str) -> Triplet | None:
        """Try to build a triplet around the newest message of ``pivot_view`` (lock held)."""
        if any(not c.queue for c in self._cams.values()):
            return None
        t_pivot, m_pivot = self._cams[pivot_view].queue[-1]
        chosen = {pivot_view: (t_pivot, m_pivot)}
        for v, c in self._cams.items():
            if v == pivot_view:
                continue
            chosen[v] = min(c.queue, key=lambda sm: abs(sm[0] - t_pivot))
        stamps = [s for s, _ in chosen.values()]
        if max(stamps) - min(stamps) > self.max_skew_s:
            return None
        # emit; drop everything up to and including the chosen messages
        for v, c in self._cams.items():
            t_used = chosen[v][0]
            while c.queue and c.queue[0][0] <= t_used:
                s, _ = c.queue.popleft()
                if s != t_used:
                    c.dropped += 1
        self._last_emitted = max(stamps)
        trip = Triplet(images={v: chosen[v][1] for v in VIEW_ORDER}, stamps={v: chosen[v][0] for v in VIEW_ORDER},
                       stamp=max(stamps), skew_s=max(stamps) - min(stamps))
        self.triplets += 1
        self._latest = trip
        return trip

    def check_staleness(self) -> dict[str, bool]:
        """Re-evaluate staleness now (also runs every ``check_period_s``); logs transitions to stale once."""
        now = self._now()
        newly = []
        with self._lock:
            for v, c in self._cams.items():
                is_stale = c.last_rx is None or now - c.last_rx > self.stale_after_s
                if is_stale and not c.stale and c.last_rx is not None:
                    newly.append((v, now - c.last_rx))
                c.stale = is_stale
            result = {v: c.stale for v, c in self._cams.items()}
        for v, age in newly:
            self.node.get_logger().warning(f"camera '{v}' on {self.topics[v]} is stale: no image for {age:.2f} s "
                                           f"(stale_after_s={self.stale_after_s})")
        return result


def image_to_array(msg) -> np.ndarray:
    """sensor_msgs/Image (rgb8, bgr8, rgba8, bgra8, mono8) → (H, W, 3) uint8 RGB array (a copy)."""
    enc = msg.encoding.lower()
    ch = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}.get(enc)
    if ch is None:
        raise ValueError(f"unsupported image encoding {msg.encoding!r}; expected rgb8, bgr8, rgba8, bgra8 or mono8")
    buf = np.frombuffer(bytes(msg.data), dtype=np.uint8)
    if msg.step < msg.width * ch or len(buf) < msg.step * msg.height:
        raise ValueError(f"image data ({len(buf)} bytes, step {msg.step}) too small for {msg.width}x{msg.height} "
                         f"{msg.encoding}")
    img = buf[:msg.step * msg.height].reshape(msg.height, msg.step)[:, :msg.width * ch].reshape(
        msg.height, msg.width, ch)
    if enc == "mono8":
        return np.repeat(img, 3, axis=2)
    if enc.startswith("bgr"):
        img = img[..., 2::-1]
    return np.ascontiguousarray(img[..., :3])
