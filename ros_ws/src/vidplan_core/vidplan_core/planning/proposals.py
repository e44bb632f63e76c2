"""Candidate action chunks for the planner's global search.

* :func:`basis_velocity_proposals` — the EE moves along the 6 canonical spatial directions of the base frame
  (±x, ±y, ±z) at a given speed, orientation held: the twist is mapped to joint velocities with the damped
  pseudo-inverse of the pinocchio Jacobian, re-linearised at every control step, integrated under the joint
  velocity and position limits, and mapped back through FK to 7-D poses at the model rate.
* :func:`approach_proposals` — the TCP straight to a point (the planner's estimate of where the target is), stopping
  there.
* :func:`perturbation_proposals` — smooth Gaussian perturbations around a nominal chunk (from a
  :class:`~vidplan_core.planning.nominal.NominalPolicy`).
* :func:`compose_proposals` — concatenate sets (e.g. 6 basis + 10 nominal) keeping a label per candidate.

All chunks are (H, 7) raw EE poses [m, rad, gripper 0..1] in the base frame at the model rate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vidplan_core.spaces import ACTION_DIM, CONTROL_RATE_HZ, MODEL_RATE_HZ, wrap_angle

__all__ = ["BASIS_DIRECTIONS", "ProposalSet", "approach_goal", "approach_proposals", "basis_velocity_proposals",
           "clip_to_workspace", "compose_proposals", "damped_pinv", "gripper_proposals", "integrate_twist",
           "perturbation_proposals", "random_direction_proposals"]

#: The 6 canonical directions (unit linear velocity in the base frame) and their labels.
BASIS_DIRECTIONS: dict[str, np.ndarray] = {
    "+x": np.array([1.0, 0, 0]), "-x": np.array([-1.0, 0, 0]),
    "+y": np.array([0, 1.0, 0]), "-y": np.array([0, -1.0, 0]),
    "+z": np.array([0, 0, 1.0]), "-z": np.array([0, 0, -1.0]),
}


@dataclass
class ProposalSet:
    """N candidate chunks with a label each.

    Attributes:
        actions: (N, H, 7) EE poses.
        labels: N labels ("+x", "nominal", "nominal+3", ...).
    """

    actions: np.ndarray
    labels: list[str]

    def __post_init__(self) -> None:
        self.actions = np.asarray(self.actions, dtype=np.float64)
        if self.actions.ndim != 3 or self.actions.shape[2] != ACTION_DIM:
            raise ValueError(f"proposals must be (N, H, {ACTION_DIM}), got {self.actions.shape}")
        if len(self.labels) != len(self.actions):
            raise ValueError(f"{len(self.labels)} labels for {len(self.actions)} proposals")

    def __len__(self) -> int:
        return len(self.actions)


def damped_pinv(J: np.ndarray, damping: float = 1e-3) -> np.ndarray:
    """Damped least-squares pseudo-inverse ``Jᵀ(JJᵀ + λ²I)⁻¹`` of a (6, 7) Jacobian → (7, 6)."""
    return J.T @ np.linalg.inv(J @ J.T + damping**2 * np.eye(J.shape[0]))


def basis_velocity_proposals(kin, q0: np.ndarray, horizon: int, speed: float = 0.05, gripper: float | None = None,
                             directions: tuple[str, ...] = tuple(BASIS_DIRECTIONS),
                             control_rate_hz: float = CONTROL_RATE_HZ, model_rate_hz: float = MODEL_RATE_HZ,
                             damping: float = 1e-3, euler_center: np.ndarray | None = None,
                             velocity_scale: float = 1.0, workspace_min: np.ndarray | None = None,
                             workspace_max: np.ndarray | None = None, joint_margin: float = 0.0) -> ProposalSet:
    """Jacobian basis-velocity proposals.

    Args:
        kin: a :class:`vidplan_core.kinematics.PandaKinematics`.
        q0: (7,) current joint positions [rad].
        horizon: H model-rate steps.
        speed: EE speed [m/s] along each direction (the proposal magnitude).
        gripper: gripper value held in every step (default: 0, open).
        directions: subset of :data:`BASIS_DIRECTIONS` keys.
        damping: λ of the damped pseudo-inverse (keeps q̇ bounded near singularities).
        velocity_scale: fraction of the URDF joint velocity limits the motion may use (the executor's
            ``joint_velocity_scale`` times a margin), so that no proposal is rejected for joint speed.
        workspace_min, workspace_max: (3,) the executor's EE box [m]; a proposal stops at its wall (the motion
            along a direction that would leave the box is dropped, the EE holds there).

    Returns:
        :class:`ProposalSet` with (len(directions), H, 7) poses; step k is the pose after k+1 model periods.
    """
    if speed < 0 or not np.isfinite(speed):
        raise ValueError(f"speed must be a finite value ≥ 0 m/s, got {speed}")
    unknown = [d for d in directions if d not in BASIS_DIRECTIONS]
    if unknown:
        raise ValueError(f"unknown directions {unknown}; expected a subset of {list(BASIS_DIRECTIONS)}")
    stride = round(control_rate_hz / model_rate_hz)
    dt = 1.0 / control_rate_hz
    q_start = kin.clip(np.asarray(q0, np.float64).reshape(7))
    center = kin.fk_action(q_start)[3:6] if euler_center is None else euler_center
    g = 0.0 if gripper is None else float(gripper)
    out = [integrate_twist(kin, q_start, BASIS_DIRECTIONS[d] * speed, horizon, stride, dt, damping, velocity_scale,
                           workspace_min, workspace_max, center, joint_margin) for d in directions]
    return ProposalSet(np.stack([np.concatenate([ee, np.full((horizon, 1), g)], axis=1) for ee in out]),
                       list(directions))


def integrate_twist(kin, q_start: np.ndarray, linear_velocity: np.ndarray, horizon: int, stride: int, dt: float,
                    damping: float = 1e-3, velocity_scale: float = 1.0, workspace_min: np.ndarray | None = None,
                    workspace_max: np.ndarray | None = None, euler_center: np.ndarray | None = None,
                    joint_margin: float = 0.0, stop_at: np.ndarray | None = None) -> np.ndarray:
    """Move the TCP with ``linear_velocity`` (3,) [m/s] (orientation held) from ``q_start`` for ``horizon·stride``
    control steps of ``dt`` [s]; returns the (horizon, 6) poses [m, rad] at every ``stride``-th step.

    Joint velocities come from the damped pseudo-inverse of the Jacobian at each step, scaled down (direction kept)
    to ``velocity_scale`` × the URDF limits; a velocity component that would take the TCP through a wall of the box
    ``workspace_min..workspace_max`` is zeroed, so the motion slides along / stops at the wall. With ``stop_at``
    (3,) [m] the TCP heads for that point at the speed of ``linear_velocity`` (its direction is ignored), re-aimed
    every step, and stays there once it arrives.
    """
    speed = float(np.linalg.norm(linear_velocity))
    lo = None if workspace_min is None else np.asarray(workspace_min, float)
    hi = None if workspace_max is None else np.asarray(workspace_max, float)
    vmax = kin.velocity_limits * velocity_scale
    q_lo, q_hi = kin.lower + joint_margin, kin.upper - joint_margin  # the executor's keep-out band
    q = q_start.copy()
    samples = []
    for k in range(horizon * stride):
        v = np.asarray(linear_velocity, float).copy()
        p = kin.fk(q)[:3, 3] if stop_at is not None or (lo is not None and hi is not None) else None
        if stop_at is not None:
            d = np.asarray(stop_at, float) - p
            dist = float(np.linalg.norm(d))
            v = d / dt if dist <= speed * dt else d * (speed / dist)  # the last step lands on the point
        if lo is not None and hi is not None:
            nxt = p + v * dt
            v[(nxt < lo) | (nxt > hi)] = 0.0  # stop at the wall rather than ask the executor for what it rejects
        qd = damped_pinv(kin.jacobian(q), damping) @ np.concatenate([v, np.zeros(3)])
        ratio = float(np.max(np.abs(qd) / vmax))
        if ratio > 1.0:  # keep the direction, respect velocity limits
            qd = qd / ratio
        q_next = q + qd * dt
        if joint_margin > 0:  # a joint at its band stops (never moved further into it)
            q_next = np.where((q_next < q_lo) & (qd < 0) | (q_next > q_hi) & (qd > 0), q, q_next)
        q = kin.clip(q_next)
        if (k + 1) % stride == 0:
            samples.append(q.copy())
    return kin.fk_action_batch(np.asarray(samples), euler_center)


def random_direction_proposals(kin, q0: np.ndarray, horizon: int, n: int, speed: float,
                               rng: np.random.Generator, gripper: float, euler_center: np.ndarray,
                               control_rate_hz: float = CONTROL_RATE_HZ, model_rate_hz: float = MODEL_RATE_HZ,
                               damping: float = 1e-3, velocity_scale: float = 1.0,
                               workspace_min: np.ndarray | None = None, workspace_max: np.ndarray | None = None,
                               joint_margin: float = 0.0, toggle: bool = True) -> ProposalSet:
    """``n`` proposals moving the EE at ``speed`` [m/s] in random directions (uniform on the sphere), orientation
    held, each with gripper = ``gripper`` or, with ``toggle``, its toggle (p = 0.5). The same Jacobian integration
    and limits as :func:`basis_velocity_proposals` (only the directions differ); labels ``rand0``, ``rand1``, ... The
    evaluation's ``random`` baseline, and the product's ``ProposalConfig.random_directions``."""
    stride = round(control_rate_hz / model_rate_hz)
    q_start = kin.clip(np.asarray(q0, np.float64).reshape(7))
    dirs = rng.standard_normal((n, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True).clip(1e-9)
    flip = rng.random(n) >= 0.5  # drawn either way (the draws stay those of the runs before ``toggle``)
    grips = np.where(flip & toggle, 1.0 - gripper, gripper)
    out = []
    for d, g in zip(dirs, grips, strict=True):
        ee = integrate_twist(kin, q_start, d * speed, horizon, stride, 1.0 / control_rate_hz, damping, velocity_scale,
                             workspace_min, workspace_max, euler_center, joint_margin)
        out.append(np.concatenate([ee, np.full((horizon, 1), g)], axis=1))
    return ProposalSet(np.stack(out), [f"rand{i}" for i in range(n)])


def approach_proposals(kin, q0: np.ndarray, horizon: int, goal: np.ndarray, speed: float, gripper: float,
                       euler_center: np.ndarray, control_rate_hz: float = CONTROL_RATE_HZ,
                       model_rate_hz: float = MODEL_RATE_HZ, damping: float = 1e-3, velocity_scale: float = 1.0,
                       workspace_min: np.ndarray | None = None, workspace_max: np.ndarray | None = None,
                       joint_margin: float = 0.0, label: str = "approach") -> ProposalSet:
    """One chunk moving the TCP in a straight line at ``speed`` [m/s] to ``goal`` (3,) [m, base frame] and stopping
    there (orientation held, gripper ``gripper`` throughout); the same integration and limits as
    :func:`basis_velocity_proposals`. Returns a :class:`ProposalSet` of one (1, H, 7) chunk labelled ``label``."""
    g = np.asarray(goal, np.float64).reshape(3)
    if not np.isfinite(g).all():
        raise ValueError(f"approach goal must be a finite (3,) point [m], got {goal}")
    if speed <= 0 or not np.isfinite(speed):
        raise ValueError(f"speed must be a finite value > 0 m/s, got {speed}")
    stride = round(control_rate_hz / model_rate_hz)
    q_start = kin.clip(np.asarray(q0, np.float64).reshape(7))
    if workspace_min is not None and workspace_max is not None:  # a goal outside the box: its nearest point
        g = np.clip(g, workspace_min, workspace_max)
    ee = integrate_twist(kin, q_start, np.array([speed, 0.0, 0.0]), horizon, stride, 1.0 / control_rate_hz,
                         damping, velocity_scale, workspace_min, workspace_max, euler_center, joint_margin,
                         stop_at=g)
    chunk = np.concatenate([ee, np.full((horizon, 1), float(gripper))], axis=1)[None]
    # the arrival step aims at the point exactly; its linearisation error must not leave the box
    return ProposalSet(clip_to_workspace(chunk, workspace_min, workspace_max), [label])


def approach_goal(tcp: np.ndarray, reference: np.ndarray, clearance_m: float, reach_m: float,
                  direct: bool = False) -> np.ndarray:
    """Where an approach candidate heads (3,) [m]: ``clearance_m`` above ``reference`` while the TCP is farther
    than ``reach_m`` from it horizontally, else the reference itself: over the point first, then down, as the
    demonstrations approach, so the straight line does not sweep through the object on its way. ``direct``: the
    reference itself at once (a push under way moves through the object, low)."""
    ref = np.asarray(reference, np.float64).reshape(3)
    if not direct and np.linalg.norm(np.asarray(tcp, np.float64)[:2] - ref[:2]) > reach_m:
        return ref + np.array([0.0, 0.0, clearance_m])
    return ref


def perturbation_proposals(nominal: np.ndarray, n: int, sigma: np.ndarray | float = (0.02, 0.02, 0.02, 0.05, 0.05,
                                                                                       0.05, 0.2),
                           rng: np.random.Generator | int | None = None, include_nominal: bool = True,
                           smoothing: float = 0.7, label: str = "nominal") -> ProposalSet:
    """Smooth Gaussian perturbations around a nominal chunk.

    Noise is an AR(1) process along the horizon (``e_k = ρ·e_{k−1} + sqrt(1−ρ²)·σ·ε``) so perturbed chunks stay
    smooth; the gripper is clipped to [0, 1] and angles are kept next to the nominal's.

    Args:
        nominal: (H, 7) nominal chunk.
        n: number of candidates (the first is the nominal itself when ``include_nominal``).
        sigma: per-dimension standard deviation (7,) [m, rad, gripper] or a scalar.
        rng: numpy Generator or seed.
        smoothing: ρ in [0, 1).
    """
    nom = np.asarray(nominal, np.float64)
    if nom.ndim != 2 or nom.shape[1] != ACTION_DIM:
        raise ValueError(f"nominal chunk must be (H, {ACTION_DIM}), got {nom.shape}")
    if n < 0:
        raise ValueError(f"n must be ≥ 0, got {n}")
    if not 0 <= smoothing < 1:
        raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
    sig = np.broadcast_to(np.asarray(sigma, np.float64), (ACTION_DIM,))
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    h = len(nom)
    eps = rng.standard_normal((n, h, ACTION_DIM)) * sig
    noise = np.empty_like(eps)
    noise[:, 0] = eps[:, 0]
    for k in range(1, h):
        noise[:, k] = smoothing * noise[:, k - 1] + np.sqrt(1 - smoothing**2) * eps[:, k]
    acts = nom[None] + noise
    if include_nominal and n > 0:
        acts[0] = nom
    acts[..., 3:6] = wrap_angle(acts[..., 3:6], nom[None, :, 3:6])
    acts[..., 6] = np.clip(acts[..., 6], 0.0, 1.0)
    labels = [label if (include_nominal and i == 0) else f"{label}+{i}" for i in range(n)]
    return ProposalSet(acts, labels)


def clip_to_workspace(actions: np.ndarray, workspace_min: np.ndarray | None,
                      workspace_max: np.ndarray | None) -> np.ndarray:
    """(..., 7) EE chunks with their positions clipped into the executor's box [m] (a copy): a learned nominal
    policy's chunk that dips below the table limit would otherwise be rejected whole by the executor."""
    out = np.array(actions, np.float64, copy=True)
    if workspace_min is not None or workspace_max is not None:
        out[..., :3] = np.clip(out[..., :3], None if workspace_min is None else np.asarray(workspace_min, float),
                               None if workspace_max is None else np.asarray(workspace_max, float))
    return out


def compose_proposals(*sets: ProposalSet) -> ProposalSet:
    """Concatenate proposal sets of the same horizon (e.g. 6 basis + 10 nominal perturbations)."""
    sets = tuple(s for s in sets if len(s))
    if not sets:
        raise ValueError("no proposals to compose")
    hs = {s.actions.shape[1] for s in sets}
    if len(hs) != 1:
        raise ValueError(f"proposal sets have different horizons {sorted(hs)}")
    return ProposalSet(np.concatenate([s.actions for s in sets]), [lab for s in sets for lab in s.labels])


def gripper_proposals(current_pose: np.ndarray, horizon: int, motion: np.ndarray | None = None) -> ProposalSet:
    """One candidate with the gripper toggled (open ↔ closed) for the whole chunk: basis proposals keep the gripper
    as it is, so without this a planner could never grasp or release.

    Args:
        current_pose: (7,) EE pose now [m, rad, gripper 0..1].
        horizon: H model-rate steps.
        motion: (H, 7) a chunk whose poses the toggle follows (the nominal policy's), or None to hold
            ``current_pose``. With a nominal policy the toggle must move like it: a standing-still toggle is the
            most predictable future for a world model that barely follows its actions, and it won 287 of 380
            cycles of the failing scripted+vidplan episodes (bench/results/closed_loop_tiny_decoder.md), holding
            the arm still until time ran out.

    Returns:
        :class:`ProposalSet` of one (1, H, 7) chunk labelled ``toggle_gripper`` (held) or ``toggle_nominal``
        (not ``nominal…``: those labels are the perturbations').
    """
    pose = np.asarray(current_pose, np.float64).reshape(ACTION_DIM)
    if motion is None:
        a, label = np.tile(pose, (1, horizon, 1)), "toggle_gripper"
    else:
        m = np.asarray(motion, np.float64)
        if m.shape != (horizon, ACTION_DIM):
            raise ValueError(f"motion must be ({horizon}, {ACTION_DIM}), got {m.shape}")
        a, label = m[None].copy(), "toggle_nominal"
    a[..., 6] = 1.0 - round(float(pose[6]))
    return ProposalSet(a, [label])
