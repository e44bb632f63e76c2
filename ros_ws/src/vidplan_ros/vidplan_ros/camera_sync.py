"""Approximate-time synchronisation of the three DROID cameras (left, right, wrist) for the planner.

message_filters is not available from PyPI and, worse, never fires when a publisher's QoS is incompatible with the
subscription — silently. :class:`CameraSync` is a small replacement that:

* subscribes to the three image topics (default ``/cameras/{left,right,wrist}/image_raw``, sensor-data QoS);
* forms triplets whose ``header.stamp`` values lie within ``max_skew_s`` of each other (approximate time: every
  arrival tries to match the newest message of each camera against the closest ones of the others; messages older
  than an emitted triplet are dropped and counted);
* flags a camera as stale when nothing arrived for ``stale_after_s`` (node clock, so sim time under
  ``use_sim_time``: a sim in slow motion is not "stale") and logs the transition once. The check runs on a
  steady-clock timer, so it keeps running when /clock stops; whether /clock itself stopped (a dead sim, which leaves
  every sim-time age frozen) is for the owner to judge, with :meth:`CameraSync.wall_ages` (steady time since each
  camera's last image) to say how long the cameras have been silent;
* registers rclpy's incompatible-QoS event callback on each subscription and logs + flags the offending camera
  (``incompatible_qos``) instead of waiting forever.
* validates every image (:func:`vidplan_core.images.validate_image`: size, encoding, step, data length; format and
  header of a compressed one) before
  it can join a triplet: an invalid one is dropped and counted (``invalid``), its reason logged (at most every
  ``log_period_s`` per camera) and kept (``rejected`` / :meth:`CameraSync.problems`), so whoever reports the camera
  as unusable can say why instead of "stale".

Thread-safe: callbacks may run on a multithreaded executor; ``latest()`` can be called from any thread.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import Image

from vidplan_core.spaces import VIEW_ORDER
from vidplan_ros.compat import SubscriptionEventCallbacks
from vidplan_ros.conversions import ImageDecodeError, image_to_array, validate_image

# image_to_array / ImageDecodeError live in vidplan_ros.conversions (the one image decoder); re-exported here
__all__ = ["CameraSync", "ImageDecodeError", "Triplet", "image_to_array"]


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
    last_rx_wall: float | None = None  # time.monotonic() of the last arrival [s]
    stale: bool = False
    incompatible_qos: str = ""
    invalid: int = 0  # messages dropped as invalid images
    rejected: str = ""  # why the newest message was dropped ("" once a valid one arrives)
    rejected_at: float | None = None  # node-clock time of that message [s]
    last_log: float = -np.inf  # monotonic time of the last "dropping invalid image" log line


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
        msg_type: message type: sensor_msgs/Image, or sensor_msgs/CompressedImage (JPEG/PNG, image_transport's
            ``<topic>/compressed``). Every message must pass :func:`vidplan_core.images.validate_image`.
        log_period_s: at most one "dropping invalid image" log line per camera per this period [s].
    """

    def __init__(self, node: Node, topics: Mapping[str, str] | None = None, *, max_skew_s: float = 0.03,
                 stale_after_s: float = 0.5, queue_size: int = 10, qos: QoSProfile = qos_profile_sensor_data,
                 callback: Callable[[Triplet], None] | None = None, check_period_s: float = 0.1,
                 msg_type: type = Image, callback_group=None, log_period_s: float = 5.0):
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
        self.log_period_s = float(log_period_s)
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
        # Steady clock: a ROS-clock timer under use_sim_time never fires again once /clock stops.
        self._timer = node.create_timer(check_period_s, self.check_staleness, callback_group=callback_group,
                                        clock=Clock(clock_type=ClockType.STEADY_TIME))

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
    def invalid(self) -> dict[str, int]:
        """Messages per camera dropped because they failed image validation."""
        with self._lock:
            return {v: c.invalid for v, c in self._cams.items()}

    @property
    def rejected(self) -> dict[str, str]:
        """Per camera whose newest message was dropped as invalid: the reason (gone once a valid image arrives)."""
        with self._lock:
            return {v: c.rejected for v, c in self._cams.items() if c.rejected}

    def problems(self) -> dict[str, str]:
        """Per camera that is unusable as of the last staleness check: why, in words — its newest image was
        invalid (the validation reason), its publisher's QoS is incompatible, or no image arrived for
        ``stale_after_s`` / at all. Empty when every camera is fine."""
        now = self._now()
        with self._lock:
            out = {}
            for v, c in self._cams.items():
                if c.incompatible_qos:
                    out[v] = f"QoS incompatible with the publisher (policy {c.incompatible_qos})"
                elif c.stale and c.rejected:
                    out[v] = f"invalid image: {c.rejected}"
                elif c.stale:
                    out[v] = ("no image received yet" if c.last_rx is None else
                              f"stale: no image for {now - c.last_rx:.2f} s")
            return out

    def wall_ages(self) -> dict[str, float | None]:
        """Per camera: steady (wall) seconds since its last valid image, None before the first. Unlike
        :attr:`stale` (node clock), this keeps growing when the node clock stops (/clock of a dead sim)."""
        mono = time.monotonic()
        with self._lock:
            return {v: None if c.last_rx_wall is None else mono - c.last_rx_wall for v, c in self._cams.items()}

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
                out[f"{v}.invalid"] = str(c.invalid)
                if c.rejected:
                    out[f"{v}.rejected"] = c.rejected
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
        try:
            emit = self._receive(view, msg)
        except Exception as exc:  # never let one message take the node down; say what happened instead
            self._reject(view, f"unexpected {type(exc).__name__} while handling the image: {exc}")
            return
        if emit is not None and self.callback is not None:
            self.callback(emit)

    def _reject(self, view: str, reason: str) -> None:
        """Count and keep why a message of ``view`` was dropped; log it at most every ``log_period_s``."""
        now, mono = self._now(), time.monotonic()
        with self._lock:
            cam = self._cams[view]
            cam.received += 1
            cam.invalid += 1
            cam.rejected, cam.rejected_at = reason, now
            log = mono - cam.last_log >= self.log_period_s
            if log:
                cam.last_log = mono
            n = cam.invalid
        if log:
            self.node.get_logger().error(f"camera '{view}' on {self.topics[view]}: dropping invalid image ({n} so "
                                         f"far): {reason}")

    def _receive(self, view: str, msg) -> Triplet | None:
        """Validate and queue one image; the triplet it completes, if any."""
        reason = validate_image(msg)
        if reason is not None:
            self._reject(view, reason)
            return None
        stamp = _stamp(msg)
        now = self._now()
        with self._lock:
            cam = self._cams[view]
            cam.received += 1
            cam.last_rx = now
            cam.last_rx_wall = time.monotonic()
            cam.rejected, cam.rejected_at = "", None
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
                return None
            cam.queue.append((stamp, msg))
            while len(cam.queue) > self.queue_size:
                cam.queue.popleft()
                cam.dropped += 1
            return self._match(view)

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
                    newly.append((v, now - c.last_rx, c.rejected))
                c.stale = is_stale
            result = {v: c.stale for v, c in self._cams.items()}
        for v, age, rejected in newly:
            why = f"; its images are dropped as invalid: {rejected}" if rejected else ""
            self.node.get_logger().warning(f"camera '{v}' on {self.topics[v]} is stale: no valid image for "
                                           f"{age:.2f} s (stale_after_s={self.stale_after_s}){why}")
        return result

