"""THE path from a planned EE chunk to the arm: safety filter → IK → joint checks → timed joint plan, or a rejection.

One implementation, used by ``vidplan_ros``' executor node (between receiving a chunk and handing the trajectory to
its backend) and by every in-process evaluation, so what is evaluated is what the robot would execute.

:func:`plan_execution` does, in order:

1. ``max_steps`` truncation (keep the first ``max_steps`` steps; 0 = all). A mapping whose position, orientation and
   gripper lengths differ is passed on whole, so the filter reports the mismatch.
2. ``dt`` × ``time_scale`` (> 1 executes slower): every step limit below refers to the executed step duration.
3. :func:`vidplan_core.safety.filter_chunk` from the EE pose FK(q) (NaN, structure, staleness, frame, workspace box,
   per-step translation/rotation, gripper range; ``reject`` or ``clip``).
4. Damped-least-squares IK (:meth:`PandaKinematics.ik_trajectory`) from the measured joints ``q``, each step seeded
   with the previous solution; it stops at the first unreachable step: the plan keeps the steps before it and says
   so in ``truncated_reason``, or, when step 0 is unreachable, the chunk is aborted.
5. :func:`vidplan_core.safety.check_joint_trajectory` (joint position margin, joint velocity): under ``reject`` any
   violation rejects the chunk; under ``clip`` positions are clipped and execution is slowed down.
6. Timing: ``times[i] = dt · time_scale · slow · (i + 1)`` [s] after the start, ``slow`` ≥ 1 from step 5.

Units: m, rad, s; poses in the robot base frame. Pure numpy (no ROS, no simulator).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from vidplan_core.kinematics import PandaKinematics, actions_to_transforms
from vidplan_core.safety import Policy, SafetyLimits, Violation, check_joint_trajectory, filter_chunk, joint_band
from vidplan_core.spaces import EEChunk

__all__ = ["IKOptions", "JointPlan", "Rejection", "plan_execution"]


class IKOptions(BaseModel):
    """IK settings of the execution path (defaults: the executor node's ``ik_*`` parameters). A step whose IK misses
    either tolerance is "unreachable"."""

    model_config = ConfigDict(extra="forbid")

    max_iterations: int = Field(100, ge=1, description="damped-least-squares iterations per step")
    position_tolerance: float = Field(5e-4, gt=0, description="[m] TCP position error accepted as reached")
    rotation_tolerance: float = Field(5e-3, gt=0, description="[rad] TCP orientation error accepted as reached")
    damping: float = Field(0.01, ge=0, description="damping λ of (J Jᵀ + λ² I)")

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :meth:`PandaKinematics.ik` / :meth:`PandaKinematics.ik_trajectory`."""
        return dict(max_iters=self.max_iterations, position_tol=self.position_tolerance,
                    rotation_tol=self.rotation_tolerance, damping=self.damping)


@dataclass
class JointPlan:
    """A chunk accepted for execution: K ≥ 1 timed joint targets (K < H when IK stopped the chunk early).

    Attributes:
        q_start: (7,) measured joint positions the plan starts from [rad].
        positions: (K, 7) joint targets [rad].
        times: (K,) time_from_start of each target [s] (strictly increasing, the first one step after the start).
        gripper: (K,) gripper command per step, 0 open .. 1 closed.
        ee_targets: (K, 4, 4) EE poses (FK) of ``positions``, base frame.
        notes: clipped safety violations (filter and joint checks; only under ``policy="clip"``), [] when none.
        truncated_reason: why IK stopped the chunk early ("" when every step is in the plan).
        chunk: the (possibly clipped) chunk that was converted, its ``dt`` already × ``time_scale`` [s].
    """

    q_start: np.ndarray
    positions: np.ndarray
    times: np.ndarray
    gripper: np.ndarray
    ee_targets: np.ndarray
    notes: list[Violation]
    truncated_reason: str = ""
    chunk: EEChunk | None = None


@dataclass
class Rejection:
    """A chunk that must move nothing: ``status`` "rejected" (a safety rule; the reason names it, e.g.
    ``[workspace] step 3: ...``) or "aborted" (IK unreachable at step 0), and the human-readable ``reason``."""

    status: Literal["rejected", "aborted"]
    reason: str


_ROT_KEYS = ("quaternion", "euler")


def _truncate(chunk: EEChunk | Mapping[str, Any], max_steps: int) -> EEChunk | Mapping[str, Any]:
    """The first ``max_steps`` steps of ``chunk`` (all when ``max_steps`` <= 0 or the mapping's lengths disagree)."""
    if max_steps <= 0:
        return chunk
    if isinstance(chunk, EEChunk):
        cut = {k: (None if getattr(chunk, k) is None else getattr(chunk, k)[:max_steps])
               for k in ("position", "euler", "gripper", "uncertainty", "value")}
        return dataclasses.replace(chunk, **cut)
    rot_key = next((k for k in _ROT_KEYS if k in chunk), None)
    keys = ("position", rot_key, "gripper")
    try:
        lengths = {len(chunk[k]) for k in keys}
    except (KeyError, TypeError):
        return chunk  # unreadable: filter_chunk reports it
    if len(lengths) != 1:
        return chunk  # lengths differ: filter_chunk reports it on the whole chunk
    out = dict(chunk)
    for k in keys:
        out[k] = chunk[k][:max_steps]
    return out


def _scale_dt(chunk: EEChunk | Mapping[str, Any], time_scale: float) -> EEChunk | Mapping[str, Any]:
    """``chunk`` with ``dt`` × ``time_scale`` (a mapping with no readable dt is passed on for the filter to report)."""
    if isinstance(chunk, EEChunk):
        return dataclasses.replace(chunk, dt=float(chunk.dt) * time_scale)
    try:
        dt = float(chunk["dt"]) * time_scale
    except (KeyError, TypeError, ValueError):
        return chunk
    return {**chunk, "dt": dt}


def plan_execution(chunk: EEChunk | Mapping[str, Any], q: np.ndarray, kin: PandaKinematics,
                   limits: SafetyLimits | None = None, policy: Policy = "reject", ik: IKOptions | None = None, *,
                   time_scale: float = 1.0, max_steps: int = 0, age_s: float | None = None,
                   frame_id: str | None = None, base_frame: str | None = None) -> JointPlan | Rejection:
    """Turn a chunk of EE targets into a timed joint plan for an arm standing at ``q``, or say why not.

    Args:
        chunk: an :class:`EEChunk`, or a mapping of raw arrays as received (shapes not yet checked):
            ``position`` (H, 3) [m], ``quaternion`` (H, 4) xyzw or ``euler`` (H, 3) [rad], ``gripper`` (H,) 0 open ..
            1 closed, ``dt`` [s] between steps; base frame.
        q: (7,) measured joint positions [rad] (finite).
        kin: kinematics of the arm (FK of ``q`` is the current EE pose; IK, joint and velocity limits).
        limits: safety limits (default :class:`SafetyLimits` when None).
        policy: "reject" (any violation rejects) or "clip" (gripper, workspace, step sizes and joint positions are
            clipped, joint velocity is kept by slowing the chunk down; structure, NaN, stale and frame still reject).
        ik: IK settings (default :class:`IKOptions` when None).
        time_scale: > 0; the chunk's ``dt`` is multiplied by it before anything else (> 1 executes slower).
        max_steps: execute only the first ``max_steps`` steps (0 = all).
        age_s, frame_id, base_frame: staleness [s] and frame checks of :func:`filter_chunk` (None = not checked).

    Returns:
        :class:`JointPlan` (move) or :class:`Rejection` (move nothing; its reason names the broken rule).

    Raises:
        ValueError: a caller bug, not a plan problem: ``q`` not a finite (7,) vector, ``time_scale`` not > 0, or an
            unknown ``policy``.
    """
    q = np.array(q, dtype=np.float64)
    if q.shape != (7,) or not np.isfinite(q).all():
        raise ValueError(f"q must be a finite (7,) joint vector [rad], got {q.tolist()}")
    if not (np.isfinite(time_scale) and time_scale > 0):
        raise ValueError(f"time_scale must be > 0, got {time_scale}")
    limits = limits if limits is not None else SafetyLimits()
    ik = ik if ik is not None else IKOptions()
    chunk = _scale_dt(_truncate(chunk, int(max_steps)), float(time_scale))
    res = filter_chunk(chunk, kin.fk(q), limits, policy, age_s=age_s, frame_id=frame_id, base_frame=base_frame)
    if not res.accepted:
        return Rejection("rejected", res.reason)
    c = res.chunk
    # IK inside the keep-out band (a joint already in it may stay), so a redundant arm solves around a joint at its
    # band instead of the whole chunk being rejected for it
    band = joint_band(q, kin.lower, kin.upper, limits.joint_position_margin_rad)
    qs, iks = kin.ik_trajectory(actions_to_transforms(c.actions), q, bounds=band, **ik.kwargs())
    truncated = ""
    if len(qs) < len(c):
        r = iks[-1]
        truncated = (f"IK unreachable at step {len(qs)} (residual {r.position_error_m:.4f} m, "
                     f"{r.rotation_error_rad:.4f} rad)")
        if len(qs) == 0:
            return Rejection("aborted", truncated + "; nothing executed")
        truncated += f"; executed steps 0..{len(qs) - 1} and stopped there"
    qs, slow, jv = check_joint_trajectory(qs, q, c.dt, kin.lower, kin.upper, kin.velocity_limits, limits, policy)
    if jv and policy == "reject":
        return Rejection("rejected", "; ".join(str(v) for v in jv[:5]))
    step_dt = c.dt * slow
    times = step_dt * (np.arange(len(qs)) + 1)
    return JointPlan(q_start=q, positions=qs, times=times, gripper=c.gripper[:len(qs)], ee_targets=kin.fk_batch(qs),
                     notes=list(res.violations) + list(jv), truncated_reason=truncated, chunk=c)
