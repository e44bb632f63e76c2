"""Joint-trajectory following the way ros2_control's JointTrajectoryController samples a trajectory.

A trajectory is a start time plus points with ``time_from_start``; before the first point the controller
interpolates from the state it had when the trajectory arrived (the "current point" JTC inserts at t = 0), between
points it interpolates (cubic Hermite when velocities are given for both ends, otherwise linear), and after the last
point it holds the last position. A new trajectory replaces the current one from its start time on.

:func:`check_joint_trajectory` refuses what the JointTrajectoryController refuses (with the reason): unknown, missing
or repeated joint names, points whose positions / velocities / accelerations do not have one value per joint, effort
fields, non-finite values, time_from_start that is negative or not strictly increasing, and positions outside the
joint limits of the robot model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

__all__ = ["LIMIT_TOLERANCE_RAD", "CheckedTrajectory", "JointTrajectoryTracker", "TrajectoryRejectedError",
           "check_joint_trajectory"]

# Positions may exceed a joint limit by this much [rad]: MuJoCo's joint limits are soft, so a measured position (which
# a client sends back to hold the arm where it is) can sit a hair past the limit.
LIMIT_TOLERANCE_RAD = 0.005


class TrajectoryRejectedError(ValueError):
    """A JointTrajectory the controller refuses; the message is the reason."""


class CheckedTrajectory(NamedTuple):
    """A trajectory that passed :func:`check_joint_trajectory`, in the controller's joint order."""

    times: np.ndarray  # (k,) time_from_start [s]
    positions: np.ndarray  # (k, n) [rad]
    velocities: np.ndarray | None  # (k, n) [rad/s] when every point gives them, else None (linear interpolation)


def check_joint_trajectory(joints: Sequence[str], names: Sequence[str], times: Sequence[float],
                           positions: Sequence[Sequence[float]], velocities: Sequence[Sequence[float]] = (),
                           accelerations: Sequence[Sequence[float]] = (), efforts: Sequence[Sequence[float]] = (),
                           lower: np.ndarray | None = None, upper: np.ndarray | None = None,
                           tolerance: float = LIMIT_TOLERANCE_RAD) -> CheckedTrajectory:
    """Validate a JointTrajectory the way ros2_control's JointTrajectoryController does and reorder it.

    Args:
        joints: the controller's n joint names, in its order.
        names: the message's joint names (any order; all n, each once).
        times: (k,) time_from_start of the points [s].
        positions: k lists of len(names) positions [rad] (message order).
        velocities, accelerations, efforts: per point, empty or one value per name (efforts must be empty: a
            position-controlled JTC rejects them); () = empty for every point.
        lower, upper: (n,) joint limits [rad] in ``joints`` order (None = unlimited); positions may exceed them
            by ``tolerance`` [rad].

    Returns:
        :class:`CheckedTrajectory` (k = 0 for a trajectory without points: the caller holds).

    Raises:
        TrajectoryRejectedError: naming the first problem found (joint, point index, value).
    """
    names = list(names)
    unknown = [n for n in names if n not in joints]
    missing = [n for n in joints if n not in names]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if unknown or missing or repeated:
        raise TrajectoryRejectedError(f"joint names do not match the controller's {list(joints)}: unknown "
                                      f"{unknown}, missing {missing}, repeated {repeated}")
    k, n = len(times), len(names)
    if len(positions) != k:
        raise TrajectoryRejectedError(f"{len(positions)} position lists for {k} points")
    order = [names.index(j) for j in joints]
    fields = {name: list(values) if len(values) else [()] * k
              for name, values in (("velocities", velocities), ("accelerations", accelerations), ("effort", efforts))}
    for field_name, values in fields.items():
        if len(values) != k:
            raise TrajectoryRejectedError(f"{len(values)} {field_name} lists for {k} points")
    t = np.asarray(times, dtype=float).reshape(-1)
    for i in range(k):
        if len(positions[i]) != n:
            raise TrajectoryRejectedError(f"point {i} has {len(positions[i])} positions for {n} joints")
        for field_name in ("velocities", "accelerations"):
            m = len(fields[field_name][i])
            if m not in (0, n):
                raise TrajectoryRejectedError(f"point {i} has {m} {field_name} for {n} joints (0 or {n} allowed)")
        if len(fields["effort"][i]):
            raise TrajectoryRejectedError(f"point {i} has effort values: not supported by a position-controlled "
                                          "JointTrajectoryController")
        if not np.isfinite(t[i]) or t[i] < 0 or (i > 0 and t[i] <= t[i - 1]):
            raise TrajectoryRejectedError("time_from_start must be finite, >= 0 and strictly increasing; point "
                                          f"{i} has {t[i]:.9g} s" + (f" after {t[i - 1]:.9g} s" if i > 0 else ""))
    if k == 0:
        return CheckedTrajectory(np.zeros(0), np.zeros((0, n)), None)
    pos = np.array([[float(pt[j]) for j in order] for pt in positions], dtype=float)
    vel = None
    if all(len(v) == n for v in fields["velocities"]):
        vel = np.array([[float(v[j]) for j in order] for v in fields["velocities"]], dtype=float)
    for field_name, rows in (("position", positions), ("velocity", fields["velocities"]),
                             ("acceleration", fields["accelerations"])):
        for i, row in enumerate(rows):
            values = np.asarray(row, dtype=float)
            if not np.isfinite(values).all():
                j = int(np.argmin(np.isfinite(values)))
                raise TrajectoryRejectedError(f"non-finite {field_name} {values[j]} for {names[j]} at point {i}")
    lo = np.full(n, -np.inf) if lower is None else np.asarray(lower, dtype=float) - tolerance
    hi = np.full(n, np.inf) if upper is None else np.asarray(upper, dtype=float) + tolerance
    bad = np.argwhere((pos < lo) | (pos > hi))
    if len(bad):
        i, j = bad[0]
        raise TrajectoryRejectedError(f"point {i}: {joints[j]} = {pos[i, j]:.6g} rad is outside its limits "
                                      f"[{lo[j] + tolerance:.4f}, {hi[j] - tolerance:.4f}] rad")
    return CheckedTrajectory(t, pos, vel)


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
