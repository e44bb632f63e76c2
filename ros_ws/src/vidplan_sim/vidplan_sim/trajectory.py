"""Joint-trajectory following the way ros2_control's JointTrajectoryController samples a trajectory.

A trajectory is a start time plus points with ``time_from_start``; before the first point the controller
interpolates from the state it had when the trajectory arrived (the "current point" JTC inserts at t = 0), between
points it interpolates (cubic Hermite when velocities are given for both ends, otherwise linear), and after the last
point it holds the last position. A new trajectory replaces the current one from its start time on.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["JointTrajectoryTracker"]


class JointTrajectoryTracker:
    """Samples joint position targets (n,) [rad] at times [s] (any clock, the caller's).

    Args:
        start_time: when ``time_from_start = 0`` is [s].
        start_positions: (n,) positions at the start (the current command when the trajectory arrived).
        times: (k,) ``time_from_start`` of the points [s], strictly increasing, ≥ 0.
        positions: (k, n) joint positions [rad].
        velocities: optional (k, n) joint velocities [rad/s] (cubic Hermite interpolation when given).
    """

    def __init__(self, start_time: float, start_positions: np.ndarray, times: Sequence[float],
                 positions: np.ndarray, velocities: np.ndarray | None = None):
        t = np.asarray(times, dtype=float).reshape(-1)
        p = np.asarray(positions, dtype=float)
        q0 = np.asarray(start_positions, dtype=float).reshape(-1)
        if p.ndim != 2 or p.shape[0] != len(t) or p.shape[1] != len(q0):
            raise ValueError(f"positions must have shape ({len(t)}, {len(q0)}), got {p.shape}")
        if len(t) == 0:
            raise ValueError("a trajectory needs at least one point")
        if not (np.all(np.isfinite(t)) and np.all(np.isfinite(p))):
            raise ValueError("trajectory times and positions must be finite")
        if t[0] < 0 or np.any(np.diff(t) <= 0):
            raise ValueError(f"time_from_start must be >= 0 and strictly increasing, got {t.tolist()}")
        v = None
        if velocities is not None:
            v = np.asarray(velocities, dtype=float)
            if v.shape != p.shape or not np.all(np.isfinite(v)):
                raise ValueError(f"velocities must be finite with shape {p.shape}, got {v.shape}")
        # Prepend the start state at t = 0 (JTC does the same when the first point is in the future).
        if t[0] > 0:
            t = np.concatenate([[0.0], t])
            p = np.vstack([q0, p])
            if v is not None:
                v = np.vstack([np.zeros_like(q0), v])
        self.start_time = float(start_time)
        self.times, self.positions, self.velocities = t, p, v

    @property
    def end_time(self) -> float:
        """Absolute time of the last point [s]."""
        return self.start_time + float(self.times[-1])

    @property
    def final_positions(self) -> np.ndarray:
        return self.positions[-1].copy()

    def sample(self, now: float) -> np.ndarray:
        """(n,) position target at absolute time ``now`` [s]."""
        s = now - self.start_time
        t, p = self.times, self.positions
        if s <= t[0]:
            return p[0].copy()
        if s >= t[-1]:
            return p[-1].copy()
        i = int(np.searchsorted(t, s, side="right") - 1)
        h = t[i + 1] - t[i]
        u = (s - t[i]) / h
        if self.velocities is None:
            return (1 - u) * p[i] + u * p[i + 1]
        v = self.velocities
        h00, h10, h01, h11 = 2 * u**3 - 3 * u**2 + 1, u**3 - 2 * u**2 + u, -2 * u**3 + 3 * u**2, u**3 - u**2
        return h00 * p[i] + h10 * h * v[i] + h01 * p[i + 1] + h11 * h * v[i + 1]

    def sample_velocity(self, now: float) -> np.ndarray:
        """(n,) velocity of the interpolated target at ``now`` [rad/s] (0 before the start and after the end)."""
        s = now - self.start_time
        t, p = self.times, self.positions
        if s <= t[0] or s >= t[-1]:
            return np.zeros(p.shape[1])
        i = int(np.searchsorted(t, s, side="right") - 1)
        h = t[i + 1] - t[i]
        if self.velocities is None:
            return (p[i + 1] - p[i]) / h
        u = (s - t[i]) / h
        v = self.velocities
        d00, d10, d01, d11 = 6 * u**2 - 6 * u, 3 * u**2 - 4 * u + 1, -6 * u**2 + 6 * u, 3 * u**2 - 2 * u
        return (d00 * p[i] + d01 * p[i + 1]) / h + d10 * v[i] + d11 * v[i + 1]
