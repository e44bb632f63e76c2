"""Franka Panda kinematics (pinocchio): FK, Jacobian, damped-least-squares IK and the joint-velocity adapter.

Frames and units: poses are in the robot base frame (``{prefix}_link0``), positions in metres, angles in radians.
The end effector is ``{prefix}_hand_tcp`` (0.1034 m past the hand flange, between the fingertips) unless another
frame is asked for. EE actions follow :mod:`vidplan_core.spaces`: ``[x, y, z, rx, ry, rz]`` with Euler angles
scipy "xyz" (extrinsic); with the gripper pointing down ``rx`` sits near ±π, so every function that returns Euler
angles takes an ``euler_center`` and wraps into ``[center − π, center + π)`` (:func:`vidplan_core.spaces.wrap_angle`);
sequences are unwrapped step by step so that they never jump by 2π.

The model is ``urdf/panda_droid.urdf`` (generated from the xacro by ``urdf/generate_urdf.py``) reduced to the 7 arm
joints (fingers locked open: they do not move the TCP). Joint order is ``{prefix}_joint1..7``.

No rclpy here (vidplan_core rule). The class is thread-safe (one lock around pinocchio's Data).
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.spatial.transform import Rotation

from vidplan_core.paths import share_file
from vidplan_core.spaces import EULER_SEQ, wrap_angle

__all__ = [
    "HOME_Q",
    "IKResult",
    "PandaKinematics",
    "action_to_transform",
    "actions_to_transforms",
    "default_urdf_path",
    "rotation_error",
    "transform_to_action",
    "unwrap_euler",
]

#: franka_ros "ready" pose [rad]: TCP at about (0.307, 0, 0.487) m pointing down (Euler xyz ≈ [π, 0, 0]).
HOME_Q = np.array([0.0, -np.pi / 4, 0.0, -3 * np.pi / 4, 0.0, np.pi / 2, np.pi / 4])


def default_urdf_path() -> Path:
    """urdf/panda_droid.urdf of the installed bring-up package (share/vidplan_bringup/urdf), else of the source tree."""
    return share_file("vidplan_bringup", "urdf/panda_droid.urdf",
                      Path(__file__).resolve().parents[4] / "urdf" / "panda_droid.urdf")


def action_to_transform(action: np.ndarray) -> np.ndarray:
    """(6,) or (7,) EE action [x, y, z, rx, ry, rz(, g)] → (4, 4) homogeneous transform in the base frame."""
    a = np.asarray(action, dtype=np.float64).reshape(-1)
    if a.shape[0] not in (6, 7) or not np.isfinite(a[:6]).all():
        raise ValueError(f"EE action must be 6 or 7 finite numbers [x,y,z,rx,ry,rz(,g)], got {a.tolist()}")
    T = np.eye(4)
    T[:3, :3] = Rotation.from_euler(EULER_SEQ, a[3:6]).as_matrix()
    T[:3, 3] = a[:3]
    return T


def actions_to_transforms(actions: np.ndarray) -> np.ndarray:
    """(H, 6) or (H, 7) EE actions → (H, 4, 4) transforms (vectorised :func:`action_to_transform`)."""
    a = np.asarray(actions, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] not in (6, 7) or not np.isfinite(a[:, :6]).all():
        raise ValueError(f"EE actions must be finite with shape (H, 6) or (H, 7), got {a.shape}")
    T = np.tile(np.eye(4), (len(a), 1, 1))
    if len(a):
        T[:, :3, :3] = Rotation.from_euler(EULER_SEQ, a[:, 3:6]).as_matrix()
        T[:, :3, 3] = a[:, :3]
    return T


def transform_to_action(T: np.ndarray, euler_center: np.ndarray | float | None = None) -> np.ndarray:
    """(4, 4) transform → (6,) [x, y, z, rx, ry, rz]; Euler wrapped around ``euler_center`` (default (−π, π])."""
    T = np.asarray(T, dtype=np.float64)
    eul = Rotation.from_matrix(T[:3, :3]).as_euler(EULER_SEQ)
    if euler_center is not None:
        eul = wrap_angle(eul, np.asarray(euler_center, dtype=np.float64))
    return np.concatenate([T[:3, 3], eul])


def unwrap_euler(euler: np.ndarray, center: np.ndarray | float | None = None) -> np.ndarray:
    """(H, 3) Euler angles → same angles with each step wrapped within π of the previous one (first step around
    ``center``, default unchanged): removes 2π jumps from a trajectory near rx = ±π."""
    e = np.array(euler, dtype=np.float64).reshape(-1, 3)
    ref = e[0] if center is None else np.asarray(center, dtype=np.float64)
    for i in range(len(e)):
        e[i] = wrap_angle(e[i], ref)
        ref = e[i]
    return e


def rotation_error(R_target: np.ndarray, R: np.ndarray) -> float:
    """Angle [rad] of the rotation taking ``R`` to ``R_target`` (both (3, 3))."""
    c = (np.trace(np.asarray(R_target).T @ np.asarray(R)) - 1.0) / 2.0
    return float(np.arccos(np.clip(c, -1.0, 1.0)))


@dataclass
class IKResult:
    """Result of :meth:`PandaKinematics.ik`.

    Attributes:
        q: (7,) joint positions [rad] (the best found, within joint limits, also when ``success`` is False).
        success: both errors within tolerance.
        position_error_m: remaining TCP position error [m].
        rotation_error_rad: remaining TCP orientation error [rad].
        iterations: iterations used.
    """

    q: np.ndarray
    success: bool
    position_error_m: float
    rotation_error_rad: float
    iterations: int


class PandaKinematics:
    """Panda / FR3 kinematics on a URDF (default: the repository's ``urdf/panda_droid.urdf``).

    Args:
        urdf_path: URDF file; None = :func:`default_urdf_path`.
        ee_frame: end-effector frame; None = ``{prefix}_hand_tcp`` (``panda_hand_tcp`` for the default URDF).

    Attributes:
        prefix: joint/link prefix found in the URDF ("panda" or "fr3").
        joint_names: the 7 arm joint names, in order.
        lower, upper: (7,) position limits [rad].
        velocity_limits: (7,) velocity limits [rad/s].
        HOME_Q: (7,) franka "ready" pose [rad].
    """

    HOME_Q = HOME_Q

    def __init__(self, urdf_path: str | Path | None = None, ee_frame: str | None = None):
        import pinocchio as pin

        self._pin = pin
        self.urdf_path = Path(urdf_path) if urdf_path is not None else default_urdf_path()
        if not self.urdf_path.is_file():
            raise FileNotFoundError(f"URDF not found: {self.urdf_path} (generate it: python urdf/generate_urdf.py)")
        full = pin.buildModelFromUrdf(str(self.urdf_path))
        names = list(full.names)[1:]
        arm = [n for n in names if re.fullmatch(r".+_joint[1-7]", n) and "finger" not in n]
        if len(arm) != 7:
            raise ValueError(f"{self.urdf_path}: expected 7 arm joints named <prefix>_joint1..7, found {arm}")
        self.prefix = arm[0].rsplit("_joint", 1)[0]
        lock = [full.getJointId(n) for n in names if n not in arm]
        self.model = pin.buildReducedModel(full, lock, pin.neutral(full)) if lock else full
        self.data = self.model.createData()
        self.joint_names: list[str] = list(self.model.names)[1:]
        if self.joint_names != [f"{self.prefix}_joint{i}" for i in range(1, 8)]:
            raise ValueError(f"{self.urdf_path}: unexpected arm joint order {self.joint_names}")
        self.lower = np.array(self.model.lowerPositionLimit, dtype=np.float64)
        self.upper = np.array(self.model.upperPositionLimit, dtype=np.float64)
        self.velocity_limits = np.array(self.model.velocityLimit, dtype=np.float64)
        self.ee_frame = ee_frame or f"{self.prefix}_hand_tcp"
        self.ee_frame_id = self._frame_id(self.ee_frame)
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ helpers
    @property
    def frame_names(self) -> list[str]:
        """All frame names of the model (links, joints, camera frames)."""
        return [f.name for f in self.model.frames]

    def _frame_id(self, frame: str) -> int:
        if not self.model.existFrame(frame):
            raise ValueError(f"frame '{frame}' is not in {self.urdf_path.name}; known: {self.frame_names}")
        return int(self.model.getFrameId(frame))

    def _q(self, q: np.ndarray) -> np.ndarray:
        q = np.asarray(q, dtype=np.float64).reshape(-1)
        if q.shape != (7,) or not np.isfinite(q).all():
            raise ValueError(f"joint positions must be 7 finite numbers [rad], got {q.tolist()}")
        return q

    def within_limits(self, q: np.ndarray, tol: float = 1e-9) -> bool:
        """True when ``q`` (7,) lies within the position limits (± ``tol`` rad)."""
        q = self._q(q)
        return bool(np.all(q >= self.lower - tol) and np.all(q <= self.upper + tol))

    def clip(self, q: np.ndarray) -> np.ndarray:
        """(..., 7) joint positions clipped to the position limits."""
        return np.clip(np.asarray(q, dtype=np.float64), self.lower, self.upper)

    # ------------------------------------------------------------------ forward kinematics
    def frame_pose(self, q: np.ndarray, frame: str) -> np.ndarray:
        """(4, 4) pose of ``frame`` in the base frame at joint positions ``q`` (7,)."""
        fid = self._frame_id(frame)
        q = self._q(q)
        with self._lock:
            self._pin.framesForwardKinematics(self.model, self.data, q)
            return np.array(self.data.oMf[fid].homogeneous)

    def fk(self, q: np.ndarray) -> np.ndarray:
        """(4, 4) EE pose in the base frame at joint positions ``q`` (7,) [rad]."""
        q = self._q(q)
        with self._lock:
            self._pin.framesForwardKinematics(self.model, self.data, q)
            return np.array(self.data.oMf[self.ee_frame_id].homogeneous)

    def fk_action(self, q: np.ndarray, euler_center: np.ndarray | float | None = None) -> np.ndarray:
        """(6,) EE action [x, y, z (m), rx, ry, rz (rad, Euler xyz wrapped around ``euler_center``)]."""
        return transform_to_action(self.fk(q), euler_center)

    def fk_batch(self, qs: np.ndarray) -> np.ndarray:
        """(N, 7) → (N, 4, 4) EE poses."""
        qs = np.asarray(qs, dtype=np.float64).reshape(-1, 7)
        return np.stack([self.fk(q) for q in qs]) if len(qs) else np.zeros((0, 4, 4))

    def fk_action_batch(self, qs: np.ndarray, euler_center: np.ndarray | float | None = None) -> np.ndarray:
        """(N, 7) → (N, 6) EE actions, Euler unwrapped along the sequence (first step around ``euler_center``)."""
        Ts = self.fk_batch(qs)
        if not len(Ts):
            return np.zeros((0, 6))
        acts = np.stack([transform_to_action(T) for T in Ts])
        acts[:, 3:6] = unwrap_euler(acts[:, 3:6], euler_center)
        return acts

    # ------------------------------------------------------------------ Jacobian
    def jacobian(self, q: np.ndarray) -> np.ndarray:
        """(6, 7) EE Jacobian, LOCAL_WORLD_ALIGNED: rows 0-2 map q̇ to the EE linear velocity [m/s] and rows 3-5 to
        the angular velocity [rad/s], both expressed in the base frame (origin at the EE)."""
        q = self._q(q)
        with self._lock:
            return np.array(self._pin.computeFrameJacobian(self.model, self.data, q, self.ee_frame_id,
                                                           self._pin.ReferenceFrame.LOCAL_WORLD_ALIGNED))

    def jacobian_batch(self, qs: np.ndarray) -> np.ndarray:
        """(N, 7) → (N, 6, 7) Jacobians (see :meth:`jacobian`)."""
        qs = np.asarray(qs, dtype=np.float64).reshape(-1, 7)
        return np.stack([self.jacobian(q) for q in qs]) if len(qs) else np.zeros((0, 6, 7))

    # ------------------------------------------------------------------ inverse kinematics
    def ik(self, target_T: np.ndarray, q0: np.ndarray, *, max_iters: int = 200, position_tol: float = 1e-4,
           rotation_tol: float = 1e-3, damping: float = 1e-2, rotation_weight: float = 0.5,
           max_step_rad: float = 0.2, posture_gain: float = 0.0,
           bounds: tuple[np.ndarray, np.ndarray] | None = None) -> IKResult:
        """Damped-least-squares IK for the EE pose ``target_T`` (4, 4) starting from ``q0`` (7,).

        Each iteration solves ``dq = Jᵀ (J Jᵀ + λ² I)⁻¹ e`` for the base-frame error ``e = [Δp; w·log(R_t Rᵀ)]``
        (position [m] and weighted rotation vector [rad]), limits the step to ``max_step_rad`` and clips to the joint
        limits, so the result is always within limits and close to ``q0`` (continuity along a trajectory).
        ``posture_gain`` > 0 adds a null-space pull towards ``q0``. ``bounds`` (lower, upper) (7,) [rad]: tighter
        bounds to clip to instead (the executor's keep-out band, :func:`vidplan_core.safety.joint_band`); the
        redundant joints then do the work of a joint held at its bound.

        Returns:
            :class:`IKResult` with the best iterate (smallest weighted error).
        """
        pin = self._pin
        T_t = np.asarray(target_T, dtype=np.float64)
        if T_t.shape != (4, 4) or not np.isfinite(T_t).all():
            raise ValueError(f"IK target must be a finite (4, 4) transform, got shape {T_t.shape}")
        lo, hi = (self.lower, self.upper) if bounds is None else (np.maximum(bounds[0], self.lower),
                                                                  np.minimum(bounds[1], self.upper))
        q0 = np.clip(self._q(q0), lo, hi)
        q = q0.copy()
        p_t, R_t = T_t[:3, 3], T_t[:3, :3]
        W = np.diag([1.0, 1.0, 1.0, rotation_weight, rotation_weight, rotation_weight])
        best = (np.inf, q.copy(), np.inf, np.inf)
        it = 0
        for it in range(1, max_iters + 1):  # noqa: B007 - `it` is reported in the result
            with self._lock:
                pin.framesForwardKinematics(self.model, self.data, q)
                M = self.data.oMf[self.ee_frame_id]
                p, R = np.array(M.translation), np.array(M.rotation)
                J = np.array(pin.computeFrameJacobian(self.model, self.data, q, self.ee_frame_id,
                                                      pin.ReferenceFrame.LOCAL_WORLD_ALIGNED))
            e = np.concatenate([p_t - p, pin.log3(R_t @ R.T)])
            pos_err, rot_err = float(np.linalg.norm(e[:3])), float(np.linalg.norm(e[3:]))
            werr = pos_err + rotation_weight * rot_err
            if werr < best[0]:
                best = (werr, q.copy(), pos_err, rot_err)
            if pos_err <= position_tol and rot_err <= rotation_tol:
                break
            Jw, ew = W @ J, W @ e
            dq = Jw.T @ np.linalg.solve(Jw @ Jw.T + damping**2 * np.eye(6), ew)
            if posture_gain > 0:
                N = np.eye(7) - np.linalg.pinv(Jw) @ Jw
                dq += N @ (posture_gain * (q0 - q))
            n = float(np.max(np.abs(dq)))
            if n > max_step_rad:
                dq *= max_step_rad / n
            q = np.clip(q + dq, lo, hi)
        _, qb, pe, re_ = best
        return IKResult(q=qb, success=bool(pe <= position_tol and re_ <= rotation_tol), position_error_m=pe,
                        rotation_error_rad=re_, iterations=it)

    def ik_trajectory(self, targets: np.ndarray, q0: np.ndarray, *, stop_on_failure: bool = True,
                      **ik_kwargs: Any) -> tuple[np.ndarray, list[IKResult]]:
        """IK for a sequence of (H, 4, 4) targets, each seeded with the previous solution (continuity).

        Returns:
            ``(qs, results)``: (K, 7) joint positions of the solved steps and their :class:`IKResult` list. With
            ``stop_on_failure`` the sequence ends at the first step that fails (K < H; that failed result is the
            last in ``results`` and its q is not in ``qs``).
        """
        targets = np.asarray(targets, dtype=np.float64).reshape(-1, 4, 4)
        q = self._q(q0)
        qs: list[np.ndarray] = []
        results: list[IKResult] = []
        for T in targets:
            r = self.ik(T, q, **ik_kwargs)
            results.append(r)
            if not r.success and stop_on_failure:
                break
            qs.append(r.q)
            q = r.q
        return (np.stack(qs) if qs else np.zeros((0, 7))), results

    # ------------------------------------------------------------------ joint-velocity adapter
    def integrate_joint_velocity(self, q0: np.ndarray, qdot: np.ndarray, dt: float, steps: int | None = None, *,
                                 gripper: float = 0.0, euler_center: np.ndarray | float | None = None,
                                 limit_velocity: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Joint velocity → joint positions → EE actions (the planner's Jacobian-proposal adapter).

        Args:
            q0: (7,) start joint positions [rad].
            qdot: (7,) constant joint velocity [rad/s] applied for ``steps`` steps, or (H, 7) one per step.
            dt: step duration [s].
            steps: number of steps for a (7,) ``qdot`` (required then); must equal H (or be None) for (H, 7).
            gripper: gripper value copied into every action (0 open .. 1 closed; the adapter does not change it).
            euler_center: centre for wrapping the first step's Euler angles (default: Euler of FK(q0)); later steps
                are unwrapped step by step.
            limit_velocity: scale each step's q̇ uniformly (keeping its direction) to the velocity limits.

        Returns:
            ``(qs, actions)``: (H, 7) joint positions after each step (clipped to the position limits) and (H, 7) EE
            actions [x, y, z, rx, ry, rz, gripper].
        """
        q = self.clip(self._q(q0))
        qd = np.asarray(qdot, dtype=np.float64)
        if qd.shape == (7,):
            if steps is None or steps < 1:
                raise ValueError("steps (>= 1) is required for a constant (7,) joint velocity")
            qd = np.broadcast_to(qd, (int(steps), 7))
        elif qd.ndim == 2 and qd.shape[1] == 7:
            if steps is not None and steps != len(qd):
                raise ValueError(f"steps={steps} does not match qdot of shape {qd.shape}")
        else:
            raise ValueError(f"qdot must have shape (7,) or (H, 7), got {qd.shape}")
        if not np.isfinite(qd).all() or not (dt > 0 and np.isfinite(dt)):
            raise ValueError("qdot must be finite and dt > 0 [s]")
        qs = np.empty((len(qd), 7))
        for i, v in enumerate(qd):
            if limit_velocity:
                ratio = float(np.max(np.abs(v) / self.velocity_limits))
                if ratio > 1.0:
                    v = v / ratio
            q = self.clip(q + v * dt)
            qs[i] = q
        center = self.fk_action(q0)[3:6] if euler_center is None else euler_center
        ee = self.fk_action_batch(qs, center)
        actions = np.concatenate([ee, np.full((len(qs), 1), float(gripper))], axis=1)
        return qs, actions
