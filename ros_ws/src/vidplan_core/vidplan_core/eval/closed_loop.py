"""Closed-loop success in simulation: VidPlan and its ablations/baselines on the MuJoCo DROID scene, in-process.

``vidplan eval sim`` runs, for every episode (seed, clutter level, task) and every variant, the loop the ROS graph
runs (sim → planner → executor → sim) in one process, without ROS, in lock-step::

    observe: 3 rendered views (resized to the model's view size), EE pose + commanded gripper, joints
    plan:    PlanningSession.plan(history at 5 Hz, poses, q, instruction)      (the planner node's object)
    execute: the chunk's first ``open_loop_steps`` model steps through the executor's path:
             safety filter (vidplan_core.safety.filter_chunk) → IK (PandaKinematics.ik_trajectory, seeded with the
             measured joints) → joint-velocity check → a joint trajectory the sim tracks as a JTC would
             (vidplan_sim.trajectory.JointTrajectoryTracker), gripper command per chunk step
    repeat until the task predicate (SimEnv.task_success) holds or ``max_steps`` control steps (15 Hz) have run.

Variants (:data:`VARIANTS`):

============================  ==========================================================================================
``vidplan``                   full: Jacobian basis proposals (+ hold, + gripper toggle), uncertainty-weighted
                              hierarchical reward (w(h) = exp(−κ·h̄)), argmax, gradient refinement (Alg. 3)
``no-uq``                     as ``vidplan`` with w(h) = 1 everywhere (κ = 0: scoring, semantic-map suppression and the
                              refinement objective). Torch backend only for the refinement part: an ONNX export bakes
                              κ into its value-and-grad graph (a warning is recorded)
``argmax``                    as ``vidplan`` without gradient refinement (refine_iters = 0)
``random``                    as many proposals as ``vidplan`` scores, in random directions (uniform on the sphere, same
                              speed) with a random gripper command (current or toggled), argmax, no refinement
``scripted``                  the scripted expert's plan (privileged object poses, no noise) as the nominal chunk,
                              executed through the same executor path, no planner
``scripted+vidplan``          VidPlan's perturbation proposals around that nominal chunk (the nominal itself included),
                              full scoring and refinement
============================  ==========================================================================================

Episodes: for every clutter level L and i in 0..episodes−1, seed = ``seed + i``; the task kind cycles through
``tasks`` and the task (colour, shape, direction) is drawn from the seed, so every variant sees the same scenes
(paired comparison) and anyone can rerun an episode from (seed, clutter, task). Per-cycle flow-map noise seeds are
``seed·1000 + cycle`` for every variant (common random numbers).

Output (``out``): ``episodes.jsonl`` (one line per finished episode, written as it finishes: resumable),
``settings.json``, ``results.json`` (settings + episodes + summary), ``table.md`` and ``success.png``.
No rclpy here (vidplan_core rule); vidplan_sim is imported lazily.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from vidplan_core.planning.nominal import NominalObservation
from vidplan_core.planning.proposals import ProposalSet, compose_proposals, damped_pinv, perturbation_proposals
from vidplan_core.planning.session import PlanningSession
from vidplan_core.spaces import CONTROL_RATE_HZ, MODEL_RATE_HZ, ROTATION_DIMS, EEChunk, model_stride, wrap_angle

__all__ = [
    "VARIANTS",
    "ClosedLoopConfig",
    "ClosedLoopError",
    "EpisodeSpec",
    "EvalSession",
    "ScriptedNominalPolicy",
    "episode_specs",
    "random_direction_proposals",
    "run_closed_loop",
    "run_episode",
    "summarize",
    "write_plot",
    "write_table",
]

VARIANTS = ("vidplan", "no-uq", "argmax", "random", "scripted", "scripted+vidplan")
PLANNER_VARIANTS = ("vidplan", "no-uq", "argmax", "random", "scripted+vidplan")
SETTINGS = "settings.json"
EPISODES = "episodes.jsonl"


class ClosedLoopError(ValueError):
    """Bad evaluation settings, model directory or output directory."""


class ClosedLoopConfig(BaseModel):
    """Settings of ``vidplan eval sim`` (stored in ``OUT/settings.json``; a resumed run must use the same ones)."""

    model_config = ConfigDict(extra="forbid")
    model: str = Field("models/demo", description="model bundle directory (torch) or export directory (onnxruntime)")
    episodes: int = Field(4, gt=0, description="episodes per clutter level")
    clutter: list[int] = Field(default_factory=lambda: [0, 1, 2, 3], min_length=1)
    tasks: list[str] = Field(default_factory=lambda: ["put", "touch", "push"], min_length=1)
    seed: int = 0
    max_steps: int = Field(225, gt=0, description="episode budget in control steps at 15 Hz (225 = 15 s)")
    variants: list[str] = Field(default_factory=lambda: list(VARIANTS), min_length=1)
    backend: Literal["torch", "onnxruntime"] = "torch"
    threads: int = Field(1, ge=1, description="torch / onnxruntime intra-op threads")
    device: str = Field("cpu", pattern=r"^(cpu|cuda(:\d+)?|tensorrt)$", description="torch device (cpu, cuda[:i]) "
                        "or onnxruntime provider (cpu, cuda, tensorrt); GPU paths are not exercised on CPU machines")
    flow_steps: int = Field(1, ge=1, description="K of the flow map")
    open_loop_steps: int = Field(2, ge=1, description="chunk steps (5 Hz) executed before the next plan")
    refine_iters: int = Field(5, ge=0, description="gradient refinement iterations (vidplan, no-uq, scripted+vidplan)")
    kappa: float = Field(3.0, ge=0, description="κ of w(h) = exp(−κ·h̄) (no-uq uses 0)")
    lam: float = Field(0.5, ge=0, description="λ of the centring term")
    basis_speed_mps: float = Field(0.15, gt=0, le=1.0, description="EE speed of basis and random proposals [m/s]. "
                                   "Higher than the planner node's 0.05 m/s: the target is ~0.6 m from the home pose, "
                                   "which 0.05 m/s covers in 12 s only if every cycle picks the right direction")
    gripper_toggle: bool = Field(True, description="add a 'hold, toggle the gripper' candidate (basis proposals "
                                 "keep the gripper as it is, so without it a planner can never grasp)")
    num_nominal: int = Field(8, ge=1, description="perturbations around the scripted nominal (scripted+vidplan)")
    nominal_sigma: list[float] = Field(default_factory=lambda: [0.02, 0.02, 0.02, 0.05, 0.05, 0.05, 0.2],
                                       min_length=7, max_length=7)
    exec_policy: Literal["reject", "clip"] = Field("reject", description="executor out_of_limits_policy (the sim "
                                                   "profile's: reject → the arm holds for that cycle)")
    width: int = Field(320, ge=16, description="sim camera width [px] (resized to the model's view size)")
    height: int = Field(180, ge=16, description="sim camera height [px]")
    settle_steps: int = Field(10, ge=0, description="scripted plan: steps holding its last pose")

    @field_validator("clutter")
    @classmethod
    def _clutter(cls, v: list[int]) -> list[int]:
        if any(c not in (0, 1, 2, 3) for c in v) or len(set(v)) != len(v):
            raise ValueError(f"clutter levels must be distinct values within 0..3, got {v}")
        return v

    @field_validator("tasks")
    @classmethod
    def _tasks(cls, v: list[str]) -> list[str]:
        bad = [k for k in v if k not in ("put", "touch", "push")]
        if bad:
            raise ValueError(f"unknown task kind(s) {bad}; expected some of ['put', 'touch', 'push']")
        return v

    @field_validator("variants")
    @classmethod
    def _variants(cls, v: list[str]) -> list[str]:
        bad = [k for k in v if k not in VARIANTS]
        if bad:
            raise ValueError(f"unknown variant(s) {bad}; expected some of {list(VARIANTS)}")
        if len(set(v)) != len(v):
            raise ValueError(f"variants listed twice: {v}")
        return v

    def fixed(self) -> dict[str, Any]:
        """Settings that must not change on resume (episode count and variant list may grow)."""
        return self.model_dump(exclude={"episodes", "variants", "threads", "clutter", "tasks"})


@dataclass(frozen=True)
class EpisodeSpec:
    """One evaluation episode: scene seed, clutter level and task (shared by every variant)."""

    seed: int
    clutter: int
    kind: str
    instruction: str


def episode_specs(cfg: ClosedLoopConfig, colours: list[str], shapes: list[str]) -> list[EpisodeSpec]:
    """The episodes of ``cfg``: per clutter level, seeds ``seed + i``; task kinds in turn, task drawn from the seed.

    Ordered by i, then clutter level, so a run cut short (time budget) still covers every clutter level.
    """
    from vidplan_sim.tasks import sample_task

    out = []
    for i in range(cfg.episodes):
        for clutter in cfg.clutter:
            seed = cfg.seed + i
            kind = cfg.tasks[i % len(cfg.tasks)]
            task = sample_task(np.random.default_rng([seed, 11]), colours, shapes, kinds=(kind,))
            out.append(EpisodeSpec(seed=seed, clutter=clutter, kind=kind, instruction=task.instruction))
    return out


# ------------------------------------------------------------------------------------------------------ policies
class ScriptedNominalPolicy:
    """:class:`~vidplan_core.planning.nominal.NominalPolicy` over a scripted-expert plan, indexed by time.

    The plan is (T, 7) EE targets at the control rate (action k is reached at (k+1)/15 s). ``infer`` returns the H
    model-rate poses following the current time ``clock()`` [control steps since the episode start]: step j of the
    chunk is the plan's pose at t + (j+1)/5 s. Past the end the last pose is held. Being time-indexed (not replanned),
    it keeps its course after a perturbed chunk, as a feedback-free nominal policy would.
    """

    def __init__(self, plan: np.ndarray, horizon: int, clock: Callable[[], int], stride: int = model_stride()):
        p = np.asarray(plan, np.float64)
        if p.ndim != 2 or p.shape[1] != 7 or len(p) == 0:
            raise ValueError(f"expert plan must be (T>0, 7), got {p.shape}")
        self.plan, self.horizon, self.clock, self.stride = p, int(horizon), clock, int(stride)

    def infer(self, obs: NominalObservation | None = None) -> np.ndarray:
        k0 = int(self.clock())
        idx = np.clip(k0 + self.stride * np.arange(1, self.horizon + 1) - 1, 0, len(self.plan) - 1)
        out = self.plan[idx].copy()
        if obs is not None:  # keep Euler angles on the current pose's branch (no 2π jumps in the chunk)
            out[:, 3:6] = wrap_angle(out[:, 3:6], np.asarray(obs.ee_pose, np.float64)[3:6])
        return out

    def done(self) -> bool:
        """The plan (including its settle steps) has been played to the end."""
        return int(self.clock()) >= len(self.plan)

    def reset(self) -> None:
        pass


def random_direction_proposals(kin: Any, q0: np.ndarray, horizon: int, n: int, speed: float,
                               rng: np.random.Generator, gripper: float, euler_center: np.ndarray,
                               control_rate_hz: float = CONTROL_RATE_HZ, model_rate_hz: float = MODEL_RATE_HZ,
                               damping: float = 1e-3) -> ProposalSet:
    """``n`` proposals moving the EE at ``speed`` [m/s] in random directions (uniform on the sphere), orientation
    held, each with gripper = ``gripper`` or its toggle (p = 0.5). The same Jacobian integration as
    :func:`vidplan_core.planning.proposals.basis_velocity_proposals` (only the directions differ)."""
    stride = round(control_rate_hz / model_rate_hz)
    dt = 1.0 / control_rate_hz
    q_start = kin.clip(np.asarray(q0, np.float64).reshape(7))
    dirs = rng.standard_normal((n, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True).clip(1e-9)
    grips = np.where(rng.random(n) < 0.5, gripper, 1.0 - gripper)
    out = []
    for d, g in zip(dirs, grips, strict=True):
        twist = np.concatenate([d * speed, np.zeros(3)])
        q = q_start.copy()
        samples = []
        for k in range(horizon * stride):
            qd = damped_pinv(kin.jacobian(q), damping) @ twist
            ratio = float(np.max(np.abs(qd) / kin.velocity_limits))
            if ratio > 1.0:
                qd = qd / ratio
            q = kin.clip(q + qd * dt)
            if (k + 1) % stride == 0:
                samples.append(q.copy())
        ee = kin.fk_action_batch(np.asarray(samples), euler_center)
        out.append(np.concatenate([ee, np.full((horizon, 1), g)], axis=1))
    return ProposalSet(np.stack(out), [f"rand{i}" for i in range(n)])


class EvalSession(PlanningSession):
    """:class:`PlanningSession` with the evaluation's proposal modes (the planner and the blending are unchanged).

    Args:
        mode: ``"basis"`` (the session's own proposals), ``"random"`` (:func:`random_direction_proposals`, as many as
            ``basis`` would give) or ``"nominal"`` (perturbations around the nominal chunk only).
        gripper_toggle: add a candidate holding the pose with the gripper toggled (basis and nominal modes).
    """

    def __init__(self, *args: Any, mode: Literal["basis", "random", "nominal"] = "basis",
                 gripper_toggle: bool = True, **kw: Any):
        super().__init__(*args, **kw)
        self.mode, self.gripper_toggle = mode, gripper_toggle

    def proposals(self, q: np.ndarray, current_pose: np.ndarray, instruction: str = "",
                  images: dict[str, np.ndarray] | None = None, seed: int = 0) -> ProposalSet:
        pc = self.config.proposals
        pose = np.asarray(current_pose, np.float64)
        toggle = np.tile(pose, (1, self.horizon, 1))
        toggle[..., 6] = 1.0 - round(float(pose[6]))
        if self.mode == "random":
            n = len(pc.basis_directions) + int(pc.include_hold) + int(self.gripper_toggle)
            return random_direction_proposals(self.kin, q, self.horizon, n, pc.basis_speed_mps,
                                              np.random.default_rng([seed, 5]), round(float(pose[6])), pose[3:6])
        if self.mode == "nominal":
            obs = NominalObservation(ee_pose=pose, joint_positions=np.asarray(q), images=images or {},
                                     instruction=instruction)
            props = perturbation_proposals(self.nominal.infer(obs), pc.num_nominal, np.asarray(pc.nominal_sigma),
                                           rng=seed)
        else:
            props = super().proposals(q, current_pose, instruction, images, seed)
        if self.gripper_toggle:
            props = compose_proposals(props, ProposalSet(toggle, ["toggle_gripper"]))
        return props


# ------------------------------------------------------------------------------------------------------ models
@dataclass
class _Loaded:
    backends: dict[str, Any]  # "default" and (torch) "no-uq" → Backend
    view: tuple[int, int]
    warnings: list[str]


def _load_backends(cfg: ClosedLoopConfig, need_no_uq: bool) -> _Loaded:
    from vidplan_core.runtime.base import BackendError

    d = Path(cfg.model)
    warnings: list[str] = []
    try:
        if cfg.backend == "torch":
            import torch

            from vidplan_core.runtime.bundle import PlannerModels
            from vidplan_core.runtime.graphs import ObjectiveConfig
            from vidplan_core.runtime.torch_backend import TorchBackend

            torch.set_num_threads(cfg.threads)
            if cfg.device == "tensorrt":
                raise ClosedLoopError("device 'tensorrt' is an onnxruntime provider; use --backend onnxruntime")
            models = PlannerModels.load(d, device=cfg.device)
            ae = models.suite.autoencoder.config
            backends = {"default": TorchBackend(models, cfg.flow_steps, ObjectiveConfig(kappa=cfg.kappa),
                                                device=cfg.device)}
            if need_no_uq:  # the refinement objective's κ is part of the value graph: a second backend, same models
                backends["no-uq"] = TorchBackend(models, cfg.flow_steps, ObjectiveConfig(kappa=0.0), device=cfg.device)
            return _Loaded(backends, (int(ae.view_height), int(ae.view_width)), warnings)
        from vidplan_core.runtime.ort_backend import OnnxRuntimeBackend

        export = d if (d / "manifest.json").is_file() else d / "onnx"
        provider = cfg.device.split(":")[0]
        be = OnnxRuntimeBackend(export, flow_steps=cfg.flow_steps, threads=cfg.threads, provider=provider)
        if need_no_uq:
            warnings.append("no-uq with the onnxruntime backend: scoring uses w(h) = 1, but the exported "
                            f"value-and-grad graph keeps its objective {be.objective} for the refinement")
        vh, vw = be.manifest.model["view_size"]
        return _Loaded({"default": be, "no-uq": be}, (int(vh), int(vw)), warnings)
    except (BackendError, FileNotFoundError, OSError, KeyError) as exc:
        raise ClosedLoopError(f"cannot load the {cfg.backend} models from {d}: {exc}") from exc


def _make_session(variant: str, cfg: ClosedLoopConfig, loaded: _Loaded, kin: Any, nominal: Any) -> EvalSession:
    from vidplan_core.planning.planner import PlannerConfig, ScoreConfig
    from vidplan_core.planning.session import ProposalConfig, SessionConfig

    no_uq = variant == "no-uq"
    score = ScoreConfig(kappa=0.0 if no_uq else cfg.kappa, lam=cfg.lam)
    refine = 0 if variant in ("argmax", "random") else cfg.refine_iters
    mode = {"random": "random", "scripted+vidplan": "nominal"}.get(variant, "basis")
    # Perturbations around a nominal only where there is one (the planner node's default is basis + hold only).
    props = ProposalConfig(basis_speed_mps=cfg.basis_speed_mps, num_nominal=cfg.num_nominal if mode == "nominal" else 0,
                           nominal_sigma=list(cfg.nominal_sigma))
    sc = SessionConfig(gradopt=PlannerConfig(score=score, refine_iters=refine), proposals=props)
    backend = loaded.backends["no-uq" if no_uq else "default"]
    return EvalSession(backend, kin, sc, nominal=nominal, mode=mode, gripper_toggle=cfg.gripper_toggle)


# ------------------------------------------------------------------------------------------------------ episode
class _Executor:
    """The executor node's chunk path, in-process: filter → IK → joint check → trajectory + gripper per step."""

    def __init__(self, env: Any, kin: Any, policy: str):
        from vidplan_core.safety import SafetyLimits

        self.env, self.kin, self.policy = env, kin, policy
        self.limits = SafetyLimits()
        # executor_node defaults (ik_max_iterations, ik_position_tolerance, ik_rotation_tolerance, ik_damping)
        self.ik_opts = dict(max_iters=100, position_tol=5e-4, rotation_tol=5e-3, damping=0.01)

    def start(self, chunk: EEChunk, steps: int) -> tuple[np.ndarray, np.ndarray, str]:
        """Check and start the first ``steps`` steps; returns (times (K,) [s], gripper (K,), problem or '')."""
        from vidplan_core.kinematics import actions_to_transforms
        from vidplan_core.safety import check_joint_trajectory, filter_chunk
        from vidplan_sim.trajectory import JointTrajectoryTracker

        env, kin = self.env, self.kin
        q = env.joint_positions()
        acts = chunk.actions[:steps]
        res = filter_chunk({"position": acts[:, :3], "euler": acts[:, 3:6], "gripper": acts[:, 6], "dt": chunk.dt},
                           kin.fk(q), self.limits, self.policy)
        if not res.accepted:
            return self._hold(q, f"rejected: {res.reason}")
        c = res.chunk
        qs, iks = kin.ik_trajectory(actions_to_transforms(c.actions), q, **self.ik_opts)
        if len(qs) == 0:
            return self._hold(q, f"IK unreachable at step 0 (residual {iks[-1].position_error_m:.4f} m)")
        qs, slow, jv = check_joint_trajectory(qs, q, c.dt, kin.lower, kin.upper, kin.velocity_limits, self.limits,
                                              self.policy)
        if jv and self.policy == "reject":
            return self._hold(q, "rejected: " + "; ".join(str(v) for v in jv[:3]))
        times = c.dt * slow * (np.arange(len(qs)) + 1)
        env.set_trajectory(JointTrajectoryTracker(env.time, env.commanded_joints(), times, qs))
        return times, c.gripper[: len(qs)], ""

    def _hold(self, q: np.ndarray, why: str) -> tuple[np.ndarray, np.ndarray, str]:
        self.env.set_joint_targets(q)
        return np.zeros(0), np.zeros(0), why


def _observe(env: Any, view: tuple[int, int], images: bool = True) -> tuple[np.ndarray | None, np.ndarray]:
    """(3 views, 3, h, w) uint8 frames at the model's view size (or None) and the (7,) EE pose with the command."""
    from vidplan_core.spaces import resize_view

    pose = env.ee_action()
    if not images:
        return None, pose
    frames = np.stack([resize_view(f, view[0], view[1]) for f in env.render()])
    return np.ascontiguousarray(frames.transpose(0, 3, 1, 2)), pose


def run_episode(env: Any, spec: EpisodeSpec, variant: str, cfg: ClosedLoopConfig, loaded: _Loaded | None,
                kin: Any) -> dict[str, Any]:
    """Run one episode of ``variant`` in ``env`` (a :class:`vidplan_sim.env.SimEnv`); returns its record.

    Success is :meth:`SimEnv.task_success` (checked after every executed model step; the episode ends at the first
    success). ``steps`` counts control steps (15 Hz) of simulated time.
    """
    from vidplan_sim.expert import ExpertOptions, SceneObservation, ScriptedExpert

    t_wall = time.perf_counter()
    env.reset(seed=spec.seed, clutter=spec.clutter, task=spec.instruction)
    stride = model_stride()
    dt_ctrl = 1.0 / CONTROL_RATE_HZ
    clock = {"k": 0}
    nominal = None
    if variant in ("scripted", "scripted+vidplan"):
        expert = ScriptedExpert(env.task, ExpertOptions(settle_steps=cfg.settle_steps), seed=spec.seed)
        plan = expert.plan(SceneObservation.from_env(env))
        if cfg.settle_steps:
            plan = np.vstack([plan, np.repeat(plan[-1:], cfg.settle_steps, axis=0)])
        horizon = loaded.backends["default"].horizon if loaded is not None else 5
        nominal = ScriptedNominalPolicy(plan, horizon, lambda: clock["k"], stride)
    session = None
    if variant in PLANNER_VARIANTS:
        if loaded is None:
            raise ClosedLoopError(f"variant {variant!r} needs models")
        session = _make_session(variant, cfg, loaded, kin, nominal)
    n_hist = int(session.backend.num_history) if session is not None else 1
    executor = _Executor(env, kin, cfg.exec_policy)
    view = loaded.view if loaded is not None else (16, 16)
    frames, pose = _observe(env, view, images=session is not None)
    # The robot stands still before the first plan: T identical observations are what the planner node would have.
    history: deque[tuple[np.ndarray | None, np.ndarray]] = deque([(frames, pose)] * n_hist, maxlen=n_hist)
    cycle, holds, plan_s, labels, problems = 0, 0, [], {}, []
    executing: EEChunk | None = None
    success, reason = env.task_success()
    while not success and clock["k"] < cfg.max_steps:
        if session is not None:
            poses = np.stack([p for _, p in history])
            for i in range(1, len(poses)):  # Euler continuity along the history (as ObservationHistory does)
                poses[i, list(ROTATION_DIMS)] = wrap_angle(poses[i, list(ROTATION_DIMS)],
                                                           poses[i - 1, list(ROTATION_DIMS)])
            hist = np.stack([f for f, _ in history])
            t0 = time.perf_counter()
            result, _ = session.plan(hist, poses, env.joint_positions(), spec.instruction,
                                     seed=spec.seed * 1000 + cycle, executing=executing,
                                     executing_elapsed_s=cfg.open_loop_steps / MODEL_RATE_HZ)
            plan_s.append(time.perf_counter() - t0)
            holds += int(result.hold)
            labels[result.chosen_label or "hold"] = labels.get(result.chosen_label or "hold", 0) + 1
            chunk = result.chunk
            executing = None if result.hold else chunk
        else:
            chunk = EEChunk.from_actions(nominal.infer(NominalObservation(ee_pose=env.ee_action())))
        _times, grip, problem = executor.start(chunk, cfg.open_loop_steps)
        if problem:
            problems.append(problem)
            executing = None
        for j in range(cfg.open_loop_steps):
            if j < len(grip):
                env.set_gripper(float(grip[j]))
            for _ in range(stride):
                env.step(dt_ctrl)
                clock["k"] += 1
            frames, pose = _observe(env, view, images=session is not None)
            history.append((frames, pose))
            success, reason = env.task_success()
            if success or clock["k"] >= cfg.max_steps:
                break
        cycle += 1
        if nominal is not None and session is None and nominal.done():
            break  # the scripted plan is over: nothing more will happen
    return {"seed": spec.seed, "clutter": spec.clutter, "task": spec.kind, "instruction": spec.instruction,
            "variant": variant, "success": bool(success), "reason": reason, "steps": int(clock["k"]),
            "sim_time_s": round(env.time, 4), "cycles": cycle, "wall_time_s": round(time.perf_counter() - t_wall, 3),
            "plan_s_mean": round(float(np.mean(plan_s)), 4) if plan_s else None, "holds": holds,
            "exec_problems": len(problems), "first_exec_problem": problems[0] if problems else "",
            "chosen": labels}


# ------------------------------------------------------------------------------------------------------ runner
def _key(r: dict[str, Any]) -> tuple[str, int, int, str]:
    return (r["variant"], int(r["clutter"]), int(r["seed"]), r["instruction"])


def _prepare(out: Path, cfg: ClosedLoopConfig) -> list[dict[str, Any]]:
    """Create ``out``; return the episodes of an earlier run with the same fixed settings (resume)."""
    s = out / SETTINGS
    done: list[dict[str, Any]] = []
    if s.is_file():
        try:
            old = ClosedLoopConfig.model_validate(json.loads(s.read_text()))
        except Exception as exc:
            raise ClosedLoopError(f"{s}: unreadable ({exc}); delete {out} or choose another --out") from exc
        diff = {k: (v, cfg.fixed()[k]) for k, v in old.fixed().items() if cfg.fixed()[k] != v}
        if diff:
            lines = ", ".join(f"{k}: {a!r} → {b!r}" for k, (a, b) in diff.items())
            raise ClosedLoopError(f"{out} holds results of other settings ({lines}); resume with the same settings "
                                  "or choose another --out")
        ep = out / EPISODES
        if ep.is_file():
            for line in ep.read_text().splitlines():
                try:
                    done.append(json.loads(line))
                except json.JSONDecodeError:
                    pass  # a line cut by an interruption: that episode is run again
    out.mkdir(parents=True, exist_ok=True)
    s.write_text(cfg.model_dump_json(indent=2))
    return done


def run_closed_loop(cfg: ClosedLoopConfig, out: str | Path,
                    progress: Callable[[Iterable[Any], int], Iterable[Any]] | None = None,
                    env_factory: Callable[[], Any] | None = None, time_budget_s: float | None = None
                    ) -> dict[str, Any]:
    """Run every (episode, variant) of ``cfg`` not already in ``out``; write results.json, table.md, success.png.

    Args:
        cfg: settings.
        out: output directory (resumable).
        progress: wraps the iterable of jobs (``progress(jobs, total)``), e.g. tqdm.
        env_factory: builds the :class:`vidplan_sim.env.SimEnv` (default: the default scene at cfg.width×height).
        time_budget_s: start no new episode after this many seconds (wall); the results then cover the episodes that
            finished (``results["complete"]`` is False) and a later call with the same ``out`` resumes.

    Returns:
        The content of results.json.
    """
    out = Path(out)
    needs_models = any(v in PLANNER_VARIANTS for v in cfg.variants)
    # Models first: a bad model directory fails before anything is written.
    loaded = _load_backends(cfg, "no-uq" in cfg.variants) if needs_models else None
    done = _prepare(out, cfg)
    if env_factory is None:
        from vidplan_sim.env import SimEnv

        env = SimEnv(width=cfg.width, height=cfg.height)
    else:
        env = env_factory()
    from vidplan_core.kinematics import PandaKinematics

    kin = PandaKinematics()
    specs = episode_specs(cfg, env.cfg.colour_names, env.cfg.shape_names)
    want = {(v, s.clutter, s.seed, s.instruction) for s in specs for v in cfg.variants}
    have = {_key(r): r for r in done if _key(r) in want}  # same episode (task included) and variant: reuse
    jobs = [(s, v) for s in specs for v in cfg.variants if (v, s.clutter, s.seed, s.instruction) not in have]
    records = list(have.values())
    t_start = time.perf_counter()
    skipped = 0
    try:
        with (out / EPISODES).open("a") as fh:
            for spec, variant in (progress(jobs, len(jobs)) if progress else jobs):
                if time_budget_s is not None and time.perf_counter() - t_start > time_budget_s:
                    skipped += 1
                    continue
                rec = run_episode(env, spec, variant, cfg, loaded, kin)
                fh.write(json.dumps(rec) + "\n")
                fh.flush()
                records.append(rec)
    finally:
        close = getattr(env, "close", None)
        if close is not None:
            close()
    order = {v: i for i, v in enumerate(cfg.variants)}
    records.sort(key=lambda r: (order[r["variant"]], r["clutter"], r["seed"]))
    summary = summarize(records, cfg)
    results = {"settings": cfg.model_dump(), "complete": skipped == 0, "not_run": skipped,
               "warnings": loaded.warnings if loaded else [],
               "seeds": sorted({s.seed for s in specs}),
               "episode_specs": [{"seed": s.seed, "clutter": s.clutter, "task": s.kind, "instruction": s.instruction}
                                 for s in specs],
               "episodes": records, "summary": summary}
    (out / "results.json").write_text(json.dumps(results, indent=2))
    write_table(results, out / "table.md")
    write_plot(results, out / "success.png")
    return results


def summarize(records: list[dict[str, Any]], cfg: ClosedLoopConfig) -> dict[str, Any]:
    """Success counts per variant × task kind (and "all") × clutter level (and "all")."""
    out: dict[str, Any] = {}
    for v in cfg.variants:
        rv = [r for r in records if r["variant"] == v]
        out[v] = {}
        for task in [*cfg.tasks, "all"]:
            rt = [r for r in rv if task == "all" or r["task"] == task]
            out[v][task] = {}
            for c in [*cfg.clutter, "all"]:
                rc = [r for r in rt if c == "all" or r["clutter"] == c]
                n, k = len(rc), sum(r["success"] for r in rc)
                out[v][task][str(c)] = {"n": n, "success": k, "rate": (k / n) if n else None}
    return out


def _cell(s: dict[str, Any]) -> str:
    return "–" if not s["n"] else f"{s['rate']:.2f} ({s['success']}/{s['n']})"


def write_table(results: dict[str, Any], path: str | Path) -> Path:
    """Markdown: success rate (successes/episodes) per variant × clutter, one table per task kind and overall."""
    cfg = results["settings"]
    summ = results["summary"]
    cols = [str(c) for c in cfg["clutter"]] + ["all"]
    lines = ["# Closed-loop success in simulation (`vidplan eval sim`)", "",
             f"Model `{cfg['model']}` ({cfg['backend']}, K={cfg['flow_steps']}), {cfg['episodes']} episodes per "
             f"clutter level, budget {cfg['max_steps']} control steps ({cfg['max_steps'] / CONTROL_RATE_HZ:g} s), "
             f"open-loop steps {cfg['open_loop_steps']}, refinement iterations {cfg['refine_iters']}, "
             f"κ={cfg['kappa']}, executor policy `{cfg['exec_policy']}`.", "",
             "Cells: success rate (successes/episodes)."]
    for task in [*cfg["tasks"], "all"]:
        lines += ["", f"## Task: {task}", "", "| variant | " + " | ".join(f"clutter {c}" if c != "all" else "all"
                                                                         for c in cols) + " |",
                  "|---|" + "---|" * len(cols)]
        for v in cfg["variants"]:
            lines.append(f"| {v} | " + " | ".join(_cell(summ[v][task][c]) for c in cols) + " |")
    if not results.get("complete", True):
        lines += ["", f"**Partial run**: {results['not_run']} (episode, variant) pairs were not run (time budget); "
                  "the counts above cover the finished ones only."]
    lines += ["", "## Episodes (seed, clutter, task; the same scenes for every variant)", ""]
    for s in results["episode_specs"]:
        lines.append(f"- seed {s['seed']}, clutter {s['clutter']}: \"{s['instruction']}\"")
    if results.get("warnings"):
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in results["warnings"]]
    p = Path(path)
    p.write_text("\n".join(lines) + "\n")
    return p


def write_plot(results: dict[str, Any], path: str | Path) -> Path:
    """Bar plot: success rate per variant (bars) and clutter level (groups), all task kinds together."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = results["settings"]
    summ = results["summary"]
    groups = [str(c) for c in cfg["clutter"]] + ["all"]
    variants = cfg["variants"]
    width = 0.8 / len(variants)
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(groups), 3.6))
    x = np.arange(len(groups))
    for i, v in enumerate(variants):
        cells = [summ[v]["all"][g] for g in groups]
        rates = [c["rate"] if c["rate"] is not None else 0.0 for c in cells]
        bars = ax.bar(x + (i - (len(variants) - 1) / 2) * width, rates, width, label=v)
        for b, c in zip(bars, cells, strict=True):
            ax.text(b.get_x() + b.get_width() / 2, b.get_height() + 0.01, f"{c['success']}/{c['n']}",
                    ha="center", va="bottom", fontsize=6, rotation=90)
    ax.set_xticks(x, [f"clutter {g}" if g != "all" else "all" for g in groups])
    ax.set_ylim(0, 1.15)
    ax.set_ylabel("success rate")
    ax.set_title(f"closed-loop success ({cfg['episodes']} episodes per clutter level, tasks: "
                 f"{', '.join(cfg['tasks'])})", fontsize=9)
    ax.legend(fontsize=7, ncol=min(3, len(variants)), loc="upper right")
    fig.tight_layout()
    p = Path(path)
    fig.savefig(p, dpi=120)
    plt.close(fig)
    return p
