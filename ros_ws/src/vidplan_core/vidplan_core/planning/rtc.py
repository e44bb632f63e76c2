"""Real-time chunking helpers: plan from where the robot *will* be, and blend chunk seams.

A plan takes ``latency`` seconds to compute while the previous chunk keeps executing. So the next cycle should
(1) start from the pose the executing chunk reaches after that latency (:func:`pose_after_latency`), and
(2) when the new chunk arrives, blend its first steps with the remainder of the executing chunk so that the
commanded pose does not jump at the seam (:func:`blend_chunks`).

Chunks are :class:`~vidplan_core.spaces.EEChunk`; step k of a chunk is the target at ``start + (k+1)·dt``.
"""

from __future__ import annotations

import numpy as np

from vidplan_core.spaces import EEChunk, wrap_angle

__all__ = ["blend_chunks", "pose_after_latency", "remaining_steps"]


def pose_after_latency(current_pose: np.ndarray, chunk: EEChunk | None, elapsed_s: float,
                       latency_s: float) -> np.ndarray:
    """Pose (7,) the robot is expected to have ``latency_s`` from now.

    Args:
        current_pose: (7,) pose at the start of the executing chunk (its step "−1").
        chunk: executing chunk, or None (robot holds: the current pose is returned).
        elapsed_s: time since the chunk started executing [s].
        latency_s: expected planning + transport latency [s].

    Returns:
        (7,) pose linearly interpolated along the chunk (angles along the short way); the last pose past its end.
    """
    pose = np.asarray(current_pose, np.float64).reshape(7)
    if chunk is None or len(chunk) == 0:
        return pose.copy()
    if elapsed_s < 0 or latency_s < 0:
        raise ValueError(f"elapsed_s and latency_s must be ≥ 0, got {elapsed_s}, {latency_s}")
    acts = chunk.actions.copy()
    acts[:, 3:6] = np.unwrap(np.concatenate([pose[None, 3:6], acts[:, 3:6]]), axis=0)[1:]
    pts = np.concatenate([pose[None], acts])
    ts = np.arange(len(pts)) * chunk.dt
    t = min(elapsed_s + latency_s, ts[-1])
    out = np.array([np.interp(t, ts, pts[:, i]) for i in range(7)])
    out[3:6] = wrap_angle(out[3:6], pose[3:6])
    return out


def remaining_steps(chunk: EEChunk, elapsed_s: float) -> np.ndarray:
    """(M, 7) steps of ``chunk`` whose time lies after ``elapsed_s`` (may be empty)."""
    k0 = int(np.floor(elapsed_s / chunk.dt + 1e-9))
    return chunk.actions[k0:]


def blend_chunks(old_tail: np.ndarray, new: EEChunk, blend_steps: int = 2) -> EEChunk:
    """Blend the seam between the rest of the executing chunk and a new chunk.

    Args:
        old_tail: (M, 7) remaining steps of the executing chunk, aligned in time with ``new``'s first steps.
        new: the freshly planned chunk (H steps).
        blend_steps: number of leading steps to blend; weight of the new chunk ramps linearly
            ``(i+1)/(blend_steps+1)`` so the first step is mostly old and step ``blend_steps`` is all new.

    Returns:
        A new :class:`EEChunk` (same dt, uncertainty and value as ``new``).
    """
    if blend_steps < 0:
        raise ValueError(f"blend_steps must be ≥ 0, got {blend_steps}")
    acts = new.actions.copy()
    old = np.asarray(old_tail, np.float64).reshape(-1, 7)
    n = min(blend_steps, len(old), len(acts))
    for i in range(n):
        a = (i + 1) / (blend_steps + 1)
        o = old[i].copy()
        o[3:6] = wrap_angle(o[3:6], acts[i, 3:6])  # blend angles the short way
        acts[i] = (1 - a) * o + a * acts[i]
    return EEChunk.from_actions(acts, dt=new.dt, uncertainty=new.uncertainty, value=new.value)
