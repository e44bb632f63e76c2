"""Scripted expert: waypoint plans from object poses → 7-D EE actions at the control rate (15 Hz).

The expert sees privileged state (object and bowl positions from the simulator, or from the scene layout) and
turns the task into TCP waypoints with the gripper pointing down; straight-line segments between waypoints are cut
into steps no longer than ``max_step`` (well under DROID's 0.075 m per 15 Hz step). Actions are absolute TCP
targets in panda_link0, ``[x, y, z, rx, ry, rz, g]`` (vidplan_core.spaces), executed by IK
(:meth:`vidplan_sim.env.SimEnv.step_ee` in-process, or the executor through ROS).

For training data the expert can add Gaussian action noise (std per dimension) and make deliberate failures:

* ``wrong_object`` — goes for another object (a distractor, or a spot 10 cm off when there is none);
* ``early_release`` — put: opens the gripper half-way to the bowl; touch: stops 4 cm short; push: stops after ~2 cm;
* ``overshoot`` — put: releases 14 cm past the bowl; touch: 7 cm beside the object; push: pushes the wrong way;
* ``miss_grasp`` — put/push/touch aimed 4.5 cm beside the object.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from vidplan_core.spaces import CONTROL_RATE_HZ
from vidplan_sim.tasks import Task

__all__ = ["FAILURE_MODES", "EpisodeResult", "ExpertOptions", "SceneObservation", "ScriptedExpert", "run_episode"]

FAILURE_MODES = ("wrong_object", "early_release", "overshoot", "miss_grasp")
SAFE_Z = 0.16  # [m] TCP travel height above the table
APPROACH_DZ = 0.10  # [m] pre-grasp height above the object centre
MIN_Z = 0.02  # [m] lowest TCP target: the executor's default workspace box starts at z = 0.02 m


@dataclass
class ExpertOptions:
    """Expert behaviour.

    Attributes:
        noise_std: std of Gaussian noise added to each action, scalar or (7,) per dimension (m, rad, gripper).
        failure: force one of :data:`FAILURE_MODES` (None: no forced failure).
        failure_prob: probability of drawing a random failure mode per episode (ignored when ``failure`` is set).
        max_step: longest TCP move per control step [m] (0.02 m = 0.3 m/s keeps every joint under 80 % of the
            Panda's velocity limits — the executor's default margin — across the workspace).
        slow_step: longest TCP move per step near objects (descend, grasp, push) [m].
        max_rot_step: largest orientation change per control step [rad].
        settle_steps: steps holding the last action at the end (objects come to rest before success is judged).
    """

    noise_std: float | list[float] = 0.0
    failure: str | None = None
    failure_prob: float = 0.0
    max_step: float = 0.02
    slow_step: float = 0.012
    max_rot_step: float = 0.05
    settle_steps: int = 10

    def __post_init__(self) -> None:
        if self.failure is not None and self.failure not in FAILURE_MODES:
            raise ValueError(f"failure must be one of {FAILURE_MODES} or None, got {self.failure!r}")
        if not 0 <= self.failure_prob <= 1:
            raise ValueError(f"failure_prob must be in [0, 1], got {self.failure_prob}")
        std = np.broadcast_to(np.asarray(self.noise_std, float), (7,))
        if np.any(std < 0) or not np.all(np.isfinite(std)):
            raise ValueError(f"noise_std must be finite and >= 0, got {self.noise_std}")
        if not 0 < self.slow_step <= self.max_step <= 0.075:
            raise ValueError("need 0 < slow_step <= max_step <= 0.075 m (DROID's per-step limit)")
        if not 0 < self.max_rot_step <= 0.15:
            raise ValueError("need 0 < max_rot_step <= 0.15 rad (DROID's per-step limit)")


@dataclass
class SceneObservation:
    """Privileged state the expert plans from (base frame, metres).

    Attributes:
        objects: name → (7,) pose [x, y, z, qx, qy, qz, qw].
        object_sizes: name → (radius, half_height) [m].
        bowl_pos: (3,) bowl centre.
        ee_action: (7,) current TCP pose as an action (start of the plan).
    """

    objects: dict[str, np.ndarray]
    object_sizes: dict[str, tuple[float, float]]
    bowl_pos: np.ndarray
    ee_action: np.ndarray

    @classmethod
    def from_env(cls, env) -> SceneObservation:
        """Read from a :class:`vidplan_sim.env.SimEnv`."""
        sizes = {o.name: (o.radius, o.half_height) for o in env.layout.objects}
        return cls(objects=env.object_poses(), object_sizes=sizes, bowl_pos=env.bowl_position(),
                   ee_action=env.ee_action())


@dataclass
class EpisodeResult:
    """Outcome of :func:`run_episode`: executed actions (T, 7), success and its reason, failure mode used."""

    actions: np.ndarray
    success: bool
    reason: str
    failure: str | None
    steps: int
    max_ik_error: float = 0.0
    info: dict = field(default_factory=dict)


def _yaw_of(quat_xyzw: np.ndarray) -> float:
    x, y, z, w = quat_xyzw
    return float(np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z)))


class ScriptedExpert:
    """Plans a whole episode of actions for ``task`` (see module docstring).

    Args:
        task: the task to solve.
        options: noise and failure options.
        seed: seed of the noise / failure draws (independent of the scene seed).
    """

    def __init__(self, task: Task, options: ExpertOptions | None = None, seed: int = 0):
        self.task = task
        self.opt = options or ExpertOptions()
        self.rng = np.random.default_rng(seed)
        if self.opt.failure is not None:
            self.failure = self.opt.failure
        elif self.opt.failure_prob > 0 and self.rng.random() < self.opt.failure_prob:
            self.failure = str(self.rng.choice(FAILURE_MODES))
        else:
            self.failure = None

    # -------------------------------------------------------------------------------------------- planning
    def plan(self, obs: SceneObservation) -> np.ndarray:
        """(T, 7) actions at :data:`CONTROL_RATE_HZ` from the current state ``obs`` (noise included)."""
        task = self.task
        name = task.object_name
        if name not in obs.objects:
            raise ValueError(f"target {name!r} of {task.instruction!r} is not in the scene "
                             f"({sorted(obs.objects)})")
        if self.failure == "wrong_object":
            others = [n for n in obs.objects if n != name]
            if others:
                name = others[int(self.rng.integers(len(others)))]
        pose = obs.objects[name]
        radius, half_h = obs.object_sizes[name]
        p = pose[:3].copy()
        if self.failure == "wrong_object" and name == task.object_name:
            p[:2] += self._random_dir() * 0.10
        if self.failure == "miss_grasp":
            p[:2] += self._random_dir() * 0.045
        shape = name.split("_")[-1]
        rz = 0.0
        if shape == "cube":  # fingers close on two faces: yaw modulo π/2, closest to the home yaw (0)
            rz = float((_yaw_of(pose[3:]) + np.pi / 4) % (np.pi / 2) - np.pi / 4)
        start = obs.ee_action.copy()
        wp: list[tuple[np.ndarray, float, float]] = []  # (xyz, gripper, max step)

        def go(xyz, g, step=None, hold=0):
            wp.append((np.asarray(xyz, float), float(g), step or self.opt.max_step))
            for _ in range(hold):
                wp.append((np.asarray(xyz, float), float(g), step or self.opt.max_step))

        top_z = p[2] + half_h
        if task.kind == "put":
            grasp_z = max(p[2], MIN_Z)
            go([p[0], p[1], SAFE_Z], 0.0)
            go([p[0], p[1], grasp_z + APPROACH_DZ], 0.0)
            go([p[0], p[1], grasp_z], 0.0, self.opt.slow_step)
            go([p[0], p[1], grasp_z], 1.0, hold=8)
            lift = [p[0], p[1], SAFE_Z]
            go(lift, 1.0, self.opt.slow_step)
            b = np.asarray(obs.bowl_pos, float)
            drop = np.array([b[0], b[1], 0.10])
            if self.failure == "overshoot":
                drop[:2] += self._random_dir() * 0.14
            above_drop = [drop[0], drop[1], SAFE_Z]
            if self.failure == "early_release":
                mid = 0.5 * (np.asarray(lift) + np.asarray(above_drop))
                go(mid, 1.0)
                go(mid, 0.0, hold=6)
                go(above_drop, 0.0)
            else:
                go(above_drop, 1.0)
                go(drop, 1.0, self.opt.slow_step)
                go(drop, 0.0, hold=6)
            go([drop[0], drop[1], SAFE_Z + 0.04], 0.0, self.opt.slow_step)
        elif task.kind == "touch":
            xy = p[:2].copy()
            if self.failure == "overshoot":
                xy += self._random_dir() * 0.07
            touch_z = top_z - 0.004 if self.failure != "early_release" else top_z + 0.04
            go([xy[0], xy[1], SAFE_Z], 1.0)
            go([xy[0], xy[1], touch_z + 0.06], 1.0)
            go([xy[0], xy[1], touch_z], 1.0, self.opt.slow_step * 0.6, hold=4)
            go([xy[0], xy[1], SAFE_Z], 1.0, self.opt.slow_step)
        else:  # push
            sign = task.push_sign * (-1.0 if self.failure == "overshoot" else 1.0)
            travel = -0.01 if self.failure == "early_release" else 0.05 + 0.08 + 0.02
            push_z = max(min(p[2], 0.022), MIN_Z)
            y0 = p[1] - sign * (radius + 0.03)
            y1 = p[1] + sign * travel
            go([p[0], y0, SAFE_Z], 1.0)
            go([p[0], y0, push_z + 0.06], 1.0)
            go([p[0], y0, push_z], 1.0, self.opt.slow_step)
            go([p[0], y1, push_z], 1.0, self.opt.slow_step)
            go([p[0], y1 - sign * 0.03, push_z + 0.02], 1.0, self.opt.slow_step)
            go([p[0], y1 - sign * 0.03, SAFE_Z], 1.0, self.opt.slow_step)
        euler = np.array([np.pi, 0.0, rz])
        actions = self._interpolate(start, wp, euler)
        return self._add_noise(actions)

    def _random_dir(self) -> np.ndarray:
        a = self.rng.uniform(-np.pi, np.pi)
        return np.array([np.cos(a), np.sin(a)])

    def _interpolate(self, start: np.ndarray, wp: list[tuple[np.ndarray, float, float]],
                     euler: np.ndarray) -> np.ndarray:
        out = []
        cur = start[:3].copy()
        # The orientation turns from the start's to the plan's over the first segment.
        e0 = start[3:6].copy()
        e0 = euler + (e0 - euler + np.pi) % (2 * np.pi) - np.pi  # same branch as the target
        first = True
        for xyz, g, step in wp:
            n = max(int(np.ceil(np.linalg.norm(xyz - cur) / step)), 1)
            if first:  # the turn to the plan's orientation also respects max_rot_step
                n = max(n, int(np.ceil(np.abs(euler - e0).max() / self.opt.max_rot_step)))
            for k in range(1, n + 1):
                u = k / n
                e = e0 + (euler - e0) * u if first else euler
                out.append(np.concatenate([cur + (xyz - cur) * u, e, [g]]))
            first = False
            cur = xyz
        return np.asarray(out)

    def _add_noise(self, actions: np.ndarray) -> np.ndarray:
        std = np.broadcast_to(np.asarray(self.opt.noise_std, float), (7,))
        if np.any(std > 0):
            actions = actions + self.rng.normal(size=actions.shape) * std
            actions[:, 6] = np.clip(actions[:, 6], 0.0, 1.0)
        return actions


def run_episode(env, expert: ScriptedExpert, on_step: Callable[[int, np.ndarray], None] | None = None,
                dt: float = 1.0 / CONTROL_RATE_HZ) -> EpisodeResult:
    """Plan from the env's current state and execute every action with ``env.step_ee``; judge success at the end.

    Args:
        env: a reset :class:`vidplan_sim.env.SimEnv`.
        expert: the expert for ``env``'s task.
        on_step: called as ``on_step(i, action)`` after each executed step (e.g. to render and record).
        dt: control period [s].
    """
    actions = expert.plan(SceneObservation.from_env(env))
    if expert.opt.settle_steps:
        actions = np.vstack([actions, np.repeat(actions[-1:], expert.opt.settle_steps, axis=0)])
    max_err = 0.0
    for i, a in enumerate(actions):
        sol = env.step_ee(a, dt)
        max_err = max(max_err, sol.position_error)
        if on_step is not None:
            on_step(i, a)
    ok, reason = env.task_success()
    return EpisodeResult(actions=actions, success=ok, reason=reason, failure=expert.failure, steps=len(actions),
                         max_ik_error=max_err)
