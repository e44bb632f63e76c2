"""Safety filter for planned EE chunks: the last check between a plan and a moving arm (pure numpy, no ROS).

Rules (each violation names its rule, the step and the reason):

=================  ==============================================================  =====================
rule               what                                                            ``policy="clip"``
=================  ==============================================================  =====================
``structure``      wrong shapes/lengths, empty chunk, too long, bad dt              reject
``non_finite``     NaN/inf in positions, orientations, gripper or the current EE    reject
``quaternion``     zero-norm orientation quaternion, or one whose norm overflows    reject
``stale``          plan older than ``max_plan_age_s`` (or unstamped / from the future) reject
``frame``          chunk not in the base frame                                      reject
``gripper``        gripper outside [gripper_min, gripper_max] (0 open .. 1 closed)  clip to the range
``workspace``      EE position outside the workspace box (base frame)              clip into the box
``step_translation`` distance between consecutive targets (the first from the       shorten the step
                   current EE) above ``max_translation_per_control_step`` scaled
                   to the chunk's dt
``step_rotation``  same for the orientation change (angle)                          slerp towards the
                                                                                   previous orientation
``joint_position`` IK solution within ``joint_position_margin_rad`` of a limit,      clip into the margin
                   deeper than the arm stands now (a joint already in the band       (or to where the
                   may stay there or move out)                                       joint stands)
``joint_velocity`` IK steps faster than ``joint_velocity_scale`` × URDF limits        slow the chunk down
=================  ==============================================================  =====================

Step limits: DROID bounds one 15 Hz control step to 0.075 m and 0.15 rad; a chunk step of ``dt`` seconds may move
``limit · dt · control_rate_hz`` (0.225 m and 0.45 rad for the 5 Hz model rate).

Workspace box default (base frame ``panda_link0``, robot mounted at the table edge, table top at z = 0):
x 0.20..0.80 m (in front of the base, beyond the base's own footprint, within reach), y −0.45..0.45 m, z 0.02..0.70 m
(2 cm above the table top so fingertips never press into it; the TCP sits between the fingertips).
Change it for your own table (executor parameters ``workspace_min`` / ``workspace_max``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator
from scipy.spatial.transform import Rotation, Slerp

from vidplan_core.spaces import CONTROL_RATE_HZ, EULER_SEQ, EEChunk

__all__ = ["FilterResult", "Policy", "SafetyLimits", "Violation", "check_joint_trajectory", "filter_chunk"]

Policy = Literal["reject", "clip"]


class SafetyLimits(BaseModel):
    """Limits of the safety filter (units: m, rad, s; positions in the base frame)."""

    model_config = ConfigDict(extra="forbid")

    workspace_min: list[float] = Field(default_factory=lambda: [0.20, -0.45, 0.02],
                                       description="[m] lower corner of the EE workspace box (base frame)")
    workspace_max: list[float] = Field(default_factory=lambda: [0.80, 0.45, 0.70],
                                       description="[m] upper corner of the EE workspace box (base frame)")
    max_translation_per_control_step: float = Field(0.075, gt=0, description="[m] per control step (DROID)")
    max_rotation_per_control_step: float = Field(0.15, gt=0, description="[rad] per control step (DROID)")
    control_rate_hz: float = Field(CONTROL_RATE_HZ, gt=0, description="[Hz] rate the step limits refer to")
    gripper_min: float = Field(0.0, description="gripper command lower bound (0 = open)")
    gripper_max: float = Field(1.0, description="gripper command upper bound (1 = closed)")
    joint_position_margin_rad: float = Field(0.01, ge=0, description="[rad] keep-out band inside each joint limit")
    joint_velocity_scale: float = Field(0.8, gt=0, le=1.0, description="fraction of the URDF velocity limits")
    max_plan_age_s: float = Field(1.0, gt=0, description="[s] reject chunks stamped longer ago than this")
    max_horizon: int = Field(64, gt=0, description="longest accepted chunk [steps]")
    min_dt: float = Field(0.01, gt=0, description="[s] shortest accepted chunk step")
    max_dt: float = Field(2.0, gt=0, description="[s] longest accepted chunk step")

    @model_validator(mode="after")
    def _check(self) -> SafetyLimits:
        lo, hi = np.asarray(self.workspace_min, float), np.asarray(self.workspace_max, float)
        if lo.shape != (3,) or hi.shape != (3,) or not (np.isfinite(lo).all() and np.isfinite(hi).all()):
            raise ValueError("workspace_min and workspace_max must be 3 finite numbers [m] each")
        if np.any(lo >= hi):
            raise ValueError(f"workspace_min {self.workspace_min} must be below workspace_max {self.workspace_max} "
                             "on every axis")
        if self.gripper_min >= self.gripper_max:
            raise ValueError("gripper_min must be below gripper_max")
        if self.min_dt >= self.max_dt:
            raise ValueError("min_dt must be below max_dt")
        return self

    def max_translation(self, dt: float) -> float:
        """[m] allowed per chunk step of ``dt`` seconds."""
        return self.max_translation_per_control_step * dt * self.control_rate_hz

    def max_rotation(self, dt: float) -> float:
        """[rad] allowed per chunk step of ``dt`` seconds."""
        return self.max_rotation_per_control_step * dt * self.control_rate_hz


@dataclass
class Violation:
    """One broken rule: ``rule`` (see module table), ``message`` (human readable), ``step`` (chunk index or None for
    the whole chunk) and whether it was ``clipped`` (True) or causes rejection (False)."""

    rule: str
    message: str
    step: int | None = None
    clipped: bool = False

    def __str__(self) -> str:
        where = f"step {self.step}: " if self.step is not None else ""
        return f"[{self.rule}] {where}{self.message}" + (" (clipped)" if self.clipped else "")


class FilterResult(NamedTuple):
    """``(chunk, violations)``: the chunk to execute (None when rejected; clipped under ``policy="clip"``)."""

    chunk: EEChunk | None
    violations: list[Violation]

    @property
    def accepted(self) -> bool:
        return self.chunk is not None

    @property
    def clipped(self) -> bool:
        return any(v.clipped for v in self.violations)

    @property
    def reason(self) -> str:
        """All violations in one line ('' when there are none); long lists are abbreviated."""
        msgs = [str(v) for v in self.violations]
        return "; ".join(msgs[:5]) + (f"; … and {len(msgs) - 5} more" if len(msgs) > 5 else "")


def _structure(chunk: EEChunk | Mapping[str, Any], limits: SafetyLimits,
               clip: bool) -> tuple[EEChunk | None, list[Violation]]:
    """Shape/finiteness checks on an EEChunk or a mapping of raw message arrays (see :func:`filter_chunk`)."""
    v: list[Violation] = []
    if isinstance(chunk, EEChunk):
        pos, eul, grip, dt = chunk.position, chunk.euler, chunk.gripper, float(chunk.dt)
        quat = None
    else:
        try:
            pos = np.asarray(chunk["position"], dtype=np.float64)
            grip = np.asarray(chunk["gripper"], dtype=np.float64)
            dt = float(chunk["dt"])
            quat = np.asarray(chunk["quaternion"], dtype=np.float64) if "quaternion" in chunk else None
            eul = np.asarray(chunk["euler"], dtype=np.float64) if quat is None else None
        except (KeyError, TypeError, ValueError) as exc:
            return None, [Violation("structure", f"chunk is missing or has unreadable fields ({exc}); expected "
                                                 "position (H,3), quaternion (H,4) or euler (H,3), gripper (H,), dt")]
        h = len(pos) if pos.ndim >= 1 else -1
        if pos.ndim != 2 or pos.shape[1] != 3:
            v.append(Violation("structure", f"positions have shape {pos.shape}, expected (H, 3)"))
        rot = quat if quat is not None else eul
        want = 4 if quat is not None else 3
        if rot.ndim != 2 or rot.shape[1] != want or len(rot) != h:
            v.append(Violation("structure", f"orientations have shape {rot.shape}, expected ({h}, {want})"))
        if grip.ndim != 1 or len(grip) != h:
            v.append(Violation("structure", f"gripper has {grip.size} values, expected {h} (one per pose)"))
        if v:
            return None, v
        if not np.isfinite(rot).all():
            bad = sorted({int(i) for i in np.nonzero(~np.isfinite(rot))[0]})
            return None, [Violation("non_finite", f"orientation is NaN/inf at steps {bad}")]
        if quat is not None:
            with np.errstate(over="ignore"):  # huge finite components: the norm overflows to inf, handled below
                norms = np.linalg.norm(quat, axis=1)
            if np.any(norms < 1e-6):
                return None, [Violation("quaternion", f"zero-norm quaternion at steps "
                                                      f"{np.nonzero(norms < 1e-6)[0].tolist()}")]
            if not np.isfinite(norms).all():
                # quat / inf = 0 would reach Rotation.from_quat as a zero quaternion (ValueError): no plausible
                # orientation, and not clippable (same rule as vidplan_ros.conversions.validate_pose)
                bad = np.nonzero(~np.isfinite(norms))[0]
                return None, [Violation("quaternion", f"quaternion norm overflows float64 at steps {bad.tolist()} "
                                                      f"(components up to {np.max(np.abs(quat[bad])):.3g}); "
                                                      "cannot be normalised")]
            if np.any(np.abs(norms - 1.0) > 1e-2):
                v.append(Violation("quaternion", "quaternions are not unit length (max |norm−1| = "
                                                 f"{np.max(np.abs(norms - 1)):.3g})", clipped=clip))
            eul = Rotation.from_quat(quat / norms[:, None]).as_euler(EULER_SEQ) if len(quat) else np.zeros((0, 3))
    h = len(pos)
    if h == 0:
        return None, [Violation("structure", "chunk is empty (0 steps)")]
    if h > limits.max_horizon:
        return None, [Violation("structure", f"chunk has {h} steps, more than max_horizon={limits.max_horizon}")]
    if not (np.isfinite(dt) and limits.min_dt <= dt <= limits.max_dt):
        return None, [Violation("structure", f"dt={dt} s outside [{limits.min_dt}, {limits.max_dt}] s")]
    for name, arr in (("position", pos), ("orientation", eul), ("gripper", grip)):
        if not np.isfinite(arr).all():
            bad = sorted({int(i) for i in np.nonzero(~np.isfinite(arr.reshape(h, -1)))[0]})
            v.append(Violation("non_finite", f"{name} is NaN/inf at steps {bad}"))
    if any(x.rule == "non_finite" for x in v):
        return None, v
    return EEChunk(position=pos.copy(), euler=eul.copy(), gripper=grip.copy(), dt=dt), v


def _ee_pose(current_ee: np.ndarray) -> tuple[np.ndarray, Rotation]:
    a = np.asarray(current_ee, dtype=np.float64)
    if a.shape == (4, 4):
        if not np.isfinite(a).all():
            raise ValueError("current EE pose is NaN/inf")
        return a[:3, 3].copy(), Rotation.from_matrix(a[:3, :3])
    a = a.reshape(-1)
    if a.shape[0] not in (6, 7) or not np.isfinite(a[:6]).all():
        raise ValueError(f"current EE must be a finite (6,)/(7,) action or (4, 4) pose, got {a.tolist()}")
    return a[:3].copy(), Rotation.from_euler(EULER_SEQ, a[3:6])


def filter_chunk(chunk: EEChunk | Mapping[str, Any], current_ee: np.ndarray, limits: SafetyLimits | None = None,
                 policy: Policy = "reject", *, age_s: float | None = None, frame_id: str | None = None,
                 base_frame: str | None = None) -> FilterResult:
    """Check (and under ``policy="clip"`` repair) a chunk of EE targets before anything moves.

    Args:
        chunk: an :class:`EEChunk`, or a mapping of raw arrays as received (shapes not yet checked):
            ``position`` (H, 3) [m], ``quaternion`` (H, 4) xyzw or ``euler`` (H, 3) [rad], ``gripper`` (H,), ``dt`` [s].
        current_ee: current EE pose, (6,)/(7,) action [x,y,z,rx,ry,rz(,g)] or (4, 4) transform, base frame.
        limits: :class:`SafetyLimits` (default limits when None).
        policy: "reject" — any violation rejects the chunk; "clip" — gripper, workspace and step violations are
            clipped, the rest (structure, NaN, stale, frame) still reject.
        age_s: age of the plan [s] (now − header.stamp), None = not checked; ``inf`` for an unstamped plan.
        frame_id, base_frame: the chunk's frame and the executor's base frame; a mismatch rejects (an empty
            ``frame_id`` is taken as the base frame).

    Returns:
        :class:`FilterResult` ``(chunk or None, violations)``; Euler angles of the returned chunk are unwrapped
        around the current EE orientation.

    Raises:
        ValueError: ``current_ee`` is malformed (a caller bug, not a plan problem) or ``policy`` is unknown.
    """
    if policy not in ("reject", "clip"):
        raise ValueError(f"policy must be 'reject' or 'clip', got {policy!r}")
    limits = limits or SafetyLimits()
    p_cur, R_cur = _ee_pose(current_ee)
    violations: list[Violation] = []
    if age_s is not None and not abs(age_s) <= limits.max_plan_age_s:
        if np.isinf(age_s):
            msg = "plan is unstamped (header.stamp = 0)"
        elif age_s < 0:
            msg = f"plan is stamped {-age_s:.3f} s in the future (clocks out of sync? use_sim_time?)"
        else:
            msg = f"plan is {age_s:.3f} s old, more than max_plan_age_s={limits.max_plan_age_s} s"
        violations.append(Violation("stale", msg))
    if frame_id and base_frame and frame_id != base_frame:
        violations.append(Violation("frame", f"chunk frame '{frame_id}' is not the base frame '{base_frame}'"))
    clip = policy == "clip"
    ee, v = _structure(chunk, limits, clip)
    violations += v
    if ee is None or any(not x.clipped for x in violations):
        return FilterResult(None, violations)

    pos, grip, dt = ee.position.copy(), ee.gripper.copy(), ee.dt
    rots = Rotation.from_euler(EULER_SEQ, ee.euler)

    # gripper range
    g_bad = (grip < limits.gripper_min) | (grip > limits.gripper_max)
    for i in np.nonzero(g_bad)[0]:
        violations.append(Violation("gripper", f"gripper {grip[i]:.3f} outside [{limits.gripper_min}, "
                                               f"{limits.gripper_max}]", int(i), clip))
    grip = np.clip(grip, limits.gripper_min, limits.gripper_max)

    # workspace box
    lo, hi = np.asarray(limits.workspace_min), np.asarray(limits.workspace_max)
    outside = np.nonzero(np.any((pos < lo) | (pos > hi), axis=1))[0]
    for i in outside:
        axes = [ax for k, ax in enumerate("xyz") if not lo[k] <= pos[i, k] <= hi[k]]
        violations.append(Violation(
            "workspace", f"EE position ({pos[i, 0]:.3f}, {pos[i, 1]:.3f}, {pos[i, 2]:.3f}) m outside the "
            f"workspace box on {','.join(axes)} (min {lo.tolist()}, max {hi.tolist()})", int(i), clip))
    pos = np.clip(pos, lo, hi)

    # per-step translation / rotation from the current EE pose onwards (vectorised check first: the common case of
    # a chunk within limits needs no sequential pass)
    max_t, max_r = limits.max_translation(dt), limits.max_rotation(dt)
    dists = np.linalg.norm(pos - np.vstack([p_cur, pos[:-1]]), axis=1)
    prev_rots = Rotation.from_quat(np.vstack([R_cur.as_quat()[None], rots.as_quat()[:-1]]))
    if np.all(dists <= max_t + 1e-9) and np.all((prev_rots.inv() * rots).magnitude() <= max_r + 1e-9):
        out_R = [rots]
        loop_steps = range(0)
    else:
        out_R = []
        loop_steps = range(len(pos))
    prev_p, prev_R = p_cur, R_cur
    for i in loop_steps:
        d = pos[i] - prev_p
        dist = float(np.linalg.norm(d))
        if dist > max_t + 1e-9:
            violations.append(Violation("step_translation", f"moves {dist:.3f} m in one {dt:.3f} s step, limit "
                                                            f"{max_t:.3f} m", i, clip))
            pos[i] = prev_p + d * (max_t / dist)
        Ri = rots[i]
        ang = float((prev_R.inv() * Ri).magnitude())
        if ang > max_r + 1e-9:
            violations.append(Violation("step_rotation", f"rotates {ang:.3f} rad in one {dt:.3f} s step, limit "
                                                         f"{max_r:.3f} rad", i, clip))
            Ri = Slerp([0.0, 1.0], Rotation.concatenate([prev_R, Ri]))([max_r / ang])[0]
        out_R.append(Ri)
        prev_p, prev_R = pos[i], Ri

    if violations and not clip:
        return FilterResult(None, violations)
    eul = Rotation.concatenate(out_R).as_euler(EULER_SEQ)
    # unwrap along the chunk, starting at the current orientation (consecutive steps differ by < π per angle)
    eul = np.unwrap(np.vstack([R_cur.as_euler(EULER_SEQ)[None], eul]), axis=0)[1:]
    out = EEChunk(position=pos, euler=eul, gripper=grip, dt=dt, uncertainty=ee.uncertainty, value=ee.value)
    return FilterResult(out, violations)


def joint_band(q0: np.ndarray, lower: np.ndarray, upper: np.ndarray, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """The joint bounds (lower, upper) (7,) [rad] a plan starting at ``q0`` (7,) may use: ``margin`` inside each URDF
    limit, except that a joint already standing in that band may stay where it stands or move out, never further in
    (never past the limit itself). A band that rejected standing in it would reject every chunk from there, the hold
    included, and leave the arm stuck (tracking overshoot puts it there; a simulator's soft limit even past the
    limit). MoveIt Servo's joint-limit margin likewise halts only motion towards a limit. The executor's IK is clipped
    to these bounds; the proposals stop a joint at them (:func:`vidplan_core.planning.proposals.integrate_twist`)."""
    lower, upper = np.asarray(lower, dtype=np.float64), np.asarray(upper, dtype=np.float64)
    q = np.clip(np.asarray(q0, dtype=np.float64).reshape(-1), lower, upper)
    return np.minimum(lower + margin, q), np.maximum(upper - margin, q)


def check_joint_trajectory(qs: np.ndarray, q0: np.ndarray, dt: float, lower: np.ndarray, upper: np.ndarray,
                           velocity_limits: np.ndarray, limits: SafetyLimits | None = None,
                           policy: Policy = "reject") -> tuple[np.ndarray, float, list[Violation]]:
    """Joint position and velocity rules on an IK solution.

    Args:
        qs: (K, 7) joint targets [rad], one per executed step; q0: (7,) current joint positions [rad].
        dt: time between targets [s] (already multiplied by the execution time scale).
        lower, upper, velocity_limits: (7,) URDF limits [rad], [rad/s].

    Returns:
        ``(qs, time_scale, violations)``: joint targets (clipped into the margin band under "clip"), the factor
        (≥ 1) by which execution must be slowed so every joint stays within ``joint_velocity_scale`` × its limit
        ("clip"; 1.0 otherwise), and the violations (under "reject" any violation means: do not execute).
    """
    limits = limits or SafetyLimits()
    qs = np.array(qs, dtype=np.float64).reshape(-1, 7)
    q0 = np.asarray(q0, dtype=np.float64).reshape(7)
    lower, upper = np.asarray(lower, dtype=np.float64), np.asarray(upper, dtype=np.float64)
    clip = policy == "clip"
    v: list[Violation] = []
    lo, hi = joint_band(q0, lower, upper, limits.joint_position_margin_rad)
    for i in range(len(qs)):
        bad = np.nonzero((qs[i] < lo) | (qs[i] > hi))[0]
        if len(bad):
            v.append(Violation("joint_position", "joints " + ", ".join(
                f"{j + 1} ({qs[i, j]:.3f} rad, limits [{lower[j]:.3f}, {upper[j]:.3f}], from {q0[j]:.3f})"
                for j in bad) + f" within {limits.joint_position_margin_rad} rad of a limit, further in than the "
                "arm stands", i, clip))
    if clip:
        qs = np.clip(qs, lo, hi)
    vmax = np.asarray(velocity_limits) * limits.joint_velocity_scale
    steps = np.diff(np.vstack([q0, qs]), axis=0)
    ratio = np.abs(steps) / (dt * vmax) if len(qs) else np.zeros((0, 7))
    scale = 1.0
    for i in range(len(qs)):
        if np.any(ratio[i] > 1.0 + 1e-9):
            j = int(np.argmax(ratio[i]))
            v.append(Violation("joint_velocity", f"joint {j + 1} needs {abs(steps[i, j]) / dt:.3f} rad/s, limit "
                                                 f"{vmax[j]:.3f} rad/s" + (" (execution slowed down)" if clip else ""),
                               i, clip))
            scale = max(scale, float(ratio[i].max()))
    return qs, (scale if clip else 1.0), v
