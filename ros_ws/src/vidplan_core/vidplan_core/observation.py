"""Observation history at the world model's rate, fed from camera-rate observations.

Cameras arrive at 15 Hz; the world model conditions on T frames spaced by the model period (0.2 s at 5 Hz).
:class:`ObservationHistory` keeps the newest observation and a ring of T observations spaced by the model
period, so that a plan cycle can start at any moment from ``context()`` without waiting for the next model tick.
Timestamps are those of the camera triplets (seconds, sim or wall clock — whatever the node's clock is).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from vidplan_core.spaces import ACTION_DIM, MODEL_RATE_HZ, ROTATION_DIMS, VIEW_ORDER, wrap_angle

__all__ = ["Observation", "ObservationHistory"]


@dataclass
class Observation:
    """One synchronised observation.

    Attributes:
        stamp: camera triplet time [s].
        frames: (3 views, H, W, 3) uint8 RGB in view order (left, right, wrist).
        ee: (7,) EE pose [x, y, z (m), rx, ry, rz (rad), gripper 0..1] at ``stamp``.
    """

    stamp: float
    frames: np.ndarray
    ee: np.ndarray


class ObservationHistory:
    """Ring buffer of ``length`` observations spaced by ``1 / model_rate_hz`` seconds.

    Args:
        length: T, number of history frames the world model conditions on (the last is the current one).
        model_rate_hz: world model rate [Hz].
        tolerance_s: an observation is accepted as the next history entry when it is at least
            ``period − tolerance_s`` after the previous entry (half a 15 Hz camera period by default).
    """

    def __init__(self, length: int, model_rate_hz: float = MODEL_RATE_HZ, tolerance_s: float = 1 / 30):
        if length < 1:
            raise ValueError(f"history length must be ≥ 1, got {length}")
        self.length = length
        self.period = 1.0 / model_rate_hz
        self.tolerance = tolerance_s
        self._ring: deque[Observation] = deque(maxlen=length)
        self.latest: Observation | None = None
        self.shape: tuple[int, ...] | None = None

    def clear(self) -> None:
        """Forget everything (after a reset, a gap in the data or an e-stop)."""
        self._ring.clear()
        self.latest = None
        self.shape = None

    def push(self, stamp: float, frames: np.ndarray, ee: np.ndarray) -> bool:
        """Add a camera-rate observation; returns True when it became a history entry.

        Raises:
            ValueError: wrong shapes, non-finite pose, a change of image size, or time going backwards by more
                than the tolerance (the caller should :meth:`clear` on a clock jump such as a bag loop).
        """
        frames = np.asarray(frames)
        ee = np.asarray(ee, dtype=np.float64).reshape(-1)
        if frames.ndim != 4 or frames.shape[0] != len(VIEW_ORDER) or frames.shape[-1] != 3:
            raise ValueError(f"frames must be ({len(VIEW_ORDER)}, H, W, 3) RGB, got {frames.shape}")
        if frames.dtype != np.uint8:
            raise ValueError(f"frames must be uint8, got {frames.dtype}")
        if ee.shape != (ACTION_DIM,) or not np.isfinite(ee).all():
            raise ValueError(f"EE pose must be {ACTION_DIM} finite numbers, got {ee}")
        if self.shape is not None and frames.shape != self.shape:
            raise ValueError(f"image size changed from {self.shape} to {frames.shape}")
        if self.latest is not None and stamp < self.latest.stamp - self.tolerance:
            raise ValueError(f"time went backwards: {stamp:.3f} s after {self.latest.stamp:.3f} s")
        self.shape = frames.shape
        obs = Observation(stamp=float(stamp), frames=frames, ee=ee.copy())
        if self._ring:
            # Keep Euler angles continuous along the history (no ±π jumps inside one context).
            prev = self._ring[-1].ee
            obs.ee[list(ROTATION_DIMS)] = wrap_angle(obs.ee[list(ROTATION_DIMS)], prev[list(ROTATION_DIMS)])
        self.latest = obs
        if not self._ring or stamp - self._ring[-1].stamp >= self.period - self.tolerance:
            self._ring.append(obs)
            return True
        return False

    def ready(self) -> bool:
        """True when T history entries are available."""
        return len(self._ring) == self.length

    def age(self, now: float) -> float:
        """Seconds since the latest observation (inf when there is none)."""
        return float("inf") if self.latest is None else now - self.latest.stamp

    def window(self) -> tuple[np.ndarray, np.ndarray, float]:
        """The model-rate history ending with the newest observation.

        The newest camera observation replaces the last ring entry when it is newer (so the plan starts from
        what the robot sees now), keeping spacing within one camera period of the model period.

        Returns:
            frames (T, 3 views, 3, H, W) uint8 (channels first, as the models take them), poses (T, 7), and the
            stamp of the newest observation [s].
        """
        if not self.ready():
            raise RuntimeError(f"history has {len(self._ring)} of {self.length} frames")
        entries = list(self._ring)
        if self.latest is not None and self.latest.stamp > entries[-1].stamp:
            entries[-1] = self.latest
        frames = np.stack([e.frames for e in entries]).transpose(0, 1, 4, 2, 3)
        poses = np.stack([e.ee for e in entries])
        return np.ascontiguousarray(frames), poses, entries[-1].stamp
