"""Closed-loop success in simulation: VidPlan, its ablations, baselines and the oracle ladder, in-process.

``vidplan eval sim`` runs, for every episode (seed, clutter level, task) and every variant, the loop the ROS graph
runs (sim → planner → executor → sim) in one process, without ROS, in lock-step::

    observe: 3 rendered views at the model rate (resized to the model's view size), EE pose + commanded gripper
    plan:    PlanningSession.plan(history at 5 Hz, poses, q, instruction)      (the planner node's object, built
             from the same planner configuration: vidplan_core.planning.config, planner.yaml)
    execute: the chunk's first ``open_loop_steps`` model steps through THE execution core
             (vidplan_core.execution.plan_execution — what executor_node runs: safety filter → IK → joint checks →
             timed joint plan, or a rejection → hold) into the simulated joint-trajectory controller
    repeat until the task predicate (SimEnv.task_success) holds or ``episode_steps`` control steps (15 Hz) have run.

Variants (:data:`VARIANTS`) are *named overrides* of the planner configuration (:data:`VARIANT_OVERRIDES`, printed
in results.json) plus, for the ladder, a world model or reward swapped for ground truth:

======================  ===============================================================================================
``vidplan``             the product: the planner configuration as shipped, learned world model + learned reward
``no-uq``               as ``vidplan`` with κ = 0 (w(h) = 1) in scoring and, on torch, in the refinement objective
``argmax``              as ``vidplan`` without gradient refinement
``random``              as many proposals as ``vidplan`` scores, in random directions (same speed, random gripper)
``scripted``            the scripted expert's plan (privileged object poses) executed through the same path; no planner
``scripted+vidplan``    VidPlan's perturbation proposals around that nominal chunk, full scoring and refinement
``bc``                  the bundle's behaviour-cloned policy (``policy/``, ``vidplan train bc``) alone: its chunks
                        executed as they come (the paper's π0.5 baseline; asked for by name)
``bc+vidplan``          the planner's proposals (basis directions, hold, gripper toggle) + perturbations of the bc
                        policy's chunk, full scoring and refinement — the planner node with ``nominal_policy:=bc`` (the
                        paper's headline comparison; asked for by name)
``oracle+privileged``   world model = the simulator (:class:`vidplan_sim.oracle.OracleBackend`), reward = privileged
                        task progress (:mod:`vidplan_sim.privileged`): can the proposals + executor succeed at all?
``oracle+learned``      world model = the simulator (true future frames through the bundle's encoder), reward = the
                        bundle's heads + semantic scorer: is the learned *reward* good enough?
``oracle+learned-pixels`` as ``oracle+learned``, but the semantic scorer reads the simulator's frames themselves instead
                        of their encode/decode round trip through the bundle's VAE: is the reward *design* right,
                        whatever the VAE loses? (a diagnostic; not in the default variant list)
``learned+privileged``  world model = the bundle's flow map, reward = privileged task progress of the state read from
                        its predicted frames (:mod:`vidplan_sim.predicted_state`): is the learned *world model* good
                        enough?
======================  ===============================================================================================

Oracle and privileged variants are diagnostics that locate where success is lost; they are never the product.

Episodes: per task kind, clutter level and i in 0..n−1, scene seed ``seed + i`` (default seed 0: ``vidplan data
generate`` for the demo models used seeds ≥ 1000, so these scenes were never trained on); the task (colour, shape,
direction) is drawn from the seed and the kind. Every variant sees the same scenes (paired comparison); the core
variants (:data:`CORE_VARIANTS`) run ``episodes`` per cell, the others ``episodes_other``. Per-cycle flow-map noise
seeds are ``seed·1000 + cycle`` for every variant (common random numbers).

Output (``out``): ``episodes.jsonl`` (one line per finished episode, written as it finishes: an interrupted run
resumes from it), ``settings.json``, ``results.json`` (settings, the resolved planner configuration per variant,
episodes, summary, ``cells`` with Wilson 95 % intervals), ``table.md`` and ``success.png``.
No rclpy here (vidplan_core rule); vidplan_sim is imported lazily.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from vidplan_core.eval.metrics import wilson_interval  # re-exported: the ladder's tables use it
from vidplan_core.planning.nominal import NominalObservation
from vidplan_core.planning.proposals import ProposalSet, clip_to_workspace, compose_proposals, perturbation_proposals
from vidplan_core.planning.session import PlanningSession
from vidplan_core.spaces import (
    CONTROL_RATE_HZ,
    MODEL_RATE_HZ,
    ROTATION_DIMS,
    EEChunk,
    ViewPreparation,
    model_stride,
    wrap_angle,
)

__all__ = [
    "CORE_VARIANTS",
    "DEFAULT_VARIANTS",
    "VARIANTS",
    "VARIANT_OVERRIDES",
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
    "wilson_interval",
    "write_plot",
    "write_table",
]

VARIANTS = ("oracle+privileged", "oracle+learned", "oracle+learned-pixels", "learned+privileged", "vidplan", "no-uq",
            "argmax", "random", "scripted", "scripted+vidplan", "bc", "bc+vidplan")
#: run unless ``variants`` says otherwise (the pixel diagnostic and the bc pair, which need a bundle with a
#: policy, are asked for by name)
DEFAULT_VARIANTS = tuple(v for v in VARIANTS if v not in ("oracle+learned-pixels", "bc", "bc+vidplan"))
CORE_VARIANTS = ("oracle+privileged", "vidplan", "random", "scripted")
PLANNER_VARIANTS = tuple(v for v in VARIANTS if v not in ("scripted", "bc"))
NEEDS_MODELS = ("oracle+learned", "oracle+learned-pixels", "learned+privileged", "vidplan", "no-uq", "argmax", "random",
                "scripted+vidplan", "bc", "bc+vidplan")
BC_VARIANTS = ("bc", "bc+vidplan")
_PRIVILEGED_SCORE = {"session.gradopt.refine_iters": 0, "session.gradopt.score.kappa": 0.0,
                     "session.gradopt.score.lam": 0.0, "session.gradopt.score.suppress_semantic": False}
#: Each variant as overrides of the planner configuration (dotted keys of PlanningConfig).
VARIANT_OVERRIDES: dict[str, dict[str, Any]] = {
    "vidplan": {},
    "no-uq": {"session.gradopt.score.kappa": 0.0},
    "argmax": {"session.gradopt.refine_iters": 0},
    "random": {"session.gradopt.refine_iters": 0},
    "scripted": {},
    "scripted+vidplan": {"session.proposals.num_nominal": 8},
    "bc": {},
    "bc+vidplan": {"session.proposals.num_nominal": 8},
    # the oracle has no gradients; the privileged reward is a plain per-frame score (no UQ, no centring)
    "oracle+privileged": dict(_PRIVILEGED_SCORE),
    "oracle+learned": {"session.gradopt.refine_iters": 0},
    "oracle+learned-pixels": {"session.gradopt.refine_iters": 0},
    "learned+privileged": dict(_PRIVILEGED_SCORE),
}
SETTINGS = "settings.json"
EPISODES = "episodes.jsonl"


class ClosedLoopError(ValueError):
    """Bad evaluation settings, model directory, planner configuration or output directory."""


class ClosedLoopConfig(BaseModel):
    """Settings of ``vidplan eval sim`` (stored in ``OUT/settings.json``; a resumed run must use the same ones).

    The planner itself is configured by the planner YAML (``planner_config``, default the shipped
    ``planning/planner.yaml``) and ``overrides`` (dotted keys), exactly as the planner node is.
    """

    model_config = ConfigDict(extra="forbid")
    model: str = Field("models/demo", description="model bundle directory (torch) or export directory (onnxruntime)")
    planner_config: str | None = Field(None, description="planner YAML (default: the shipped planning/planner.yaml)")
    overrides: dict[str, Any] = Field(default_factory=dict, description="dotted-key overrides of the planner config")
    episodes: int = Field(5, gt=0, description="episodes per (task, clutter) cell for the core variants")
    episodes_other: int = Field(3, gt=0, description="episodes per cell for the other variants")
    clutter: list[int] = Field(default_factory=lambda: [0, 1, 2, 3], min_length=1)
    tasks: list[str] = Field(default_factory=lambda: ["touch", "push", "put"], min_length=1)
    seed: int = Field(0, description="first scene seed (the demo models trained on seeds ≥ 1000)")
    variants: list[str] = Field(default_factory=lambda: list(DEFAULT_VARIANTS), min_length=1)
    backend: Literal["torch", "onnxruntime"] = "torch"
    threads: int = Field(1, ge=1, description="torch / onnxruntime intra-op threads")
    device: str = Field("cpu", pattern=r"^(cpu|cuda(:\d+)?|tensorrt)$", description="torch device (cpu, cuda[:i]) "
                        "or onnxruntime provider (cpu, cuda, tensorrt); GPU paths are not exercised on CPU machines")
    nominal_sigma: list[float] = Field(default_factory=lambda: [0.02, 0.02, 0.02, 0.05, 0.05, 0.05, 0.2],
                                       min_length=7, max_length=7)
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
        """Settings that must not change on resume (episode counts, variants, tasks and clutter levels may grow)."""
        return self.model_dump(exclude={"episodes", "episodes_other", "variants", "threads", "clutter", "tasks"})

    def planning(self, variant: str) -> Any:
        """The resolved :class:`~vidplan_core.planning.config.PlanningConfig` of ``variant`` (YAML + the run's
        overrides + the variant's named overrides); a bad key or value is a :class:`ClosedLoopError`."""
        from vidplan_core.planning.config import PlanningConfigError, load_planning_config

        try:
            return load_planning_config(self.planner_config, {**self.overrides, **VARIANT_OVERRIDES[variant]})
        except PlanningConfigError as exc:
            raise ClosedLoopError(str(exc)) from exc

    def episodes_for(self, variant: str) -> int:
        return self.episodes if variant in CORE_VARIANTS else self.episodes_other


@dataclass(frozen=True)
class EpisodeSpec:
    """One evaluation episode: scene seed, clutter level and task (shared by every variant)."""

    seed: int
    clutter: int
    kind: str
    instruction: str
    index: int = 0  # i within its (task, clutter) cell


def episode_specs(cfg: ClosedLoopConfig, colours: list[str], shapes: list[str]) -> list[EpisodeSpec]:
    """The episodes of ``cfg`` (the most any variant runs): per i, task kind and clutter level, seed ``seed + i``,
    the task drawn from the seed and the kind. Ordered by i first, so a run cut short covers every cell."""
    from vidplan_sim.tasks import sample_task

    n = max(cfg.episodes_for(v) for v in cfg.variants)
    out = []
    for i in range(n):
        for kind in cfg.tasks:
            for clutter in cfg.clutter:
                seed = cfg.seed + i
                task = sample_task(np.random.default_rng([seed, 11]), colours, shapes, kinds=(kind,))
                out.append(EpisodeSpec(seed=seed, clutter=clutter, kind=kind, instruction=task.instruction, index=i))
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
                               damping: float = 1e-3, velocity_scale: float = 1.0,
                               workspace_min: Any = None, workspace_max: Any = None,
                               joint_margin: float = 0.0) -> ProposalSet:
    """``n`` proposals moving the EE at ``speed`` [m/s] in random directions (uniform on the sphere), orientation
    held, each with gripper = ``gripper`` or its toggle (p = 0.5). The same Jacobian integration and limits as
    :func:`vidplan_core.planning.proposals.basis_velocity_proposals` (only the directions differ)."""
    from vidplan_core.planning.proposals import integrate_twist

    stride = round(control_rate_hz / model_rate_hz)
    q_start = kin.clip(np.asarray(q0, np.float64).reshape(7))
    dirs = rng.standard_normal((n, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True).clip(1e-9)
    grips = np.where(rng.random(n) < 0.5, gripper, 1.0 - gripper)
    out = []
    for d, g in zip(dirs, grips, strict=True):
        ee = integrate_twist(kin, q_start, d * speed, horizon, stride, 1.0 / control_rate_hz, damping, velocity_scale,
                             workspace_min, workspace_max, euler_center, joint_margin)
        out.append(np.concatenate([ee, np.full((horizon, 1), g)], axis=1))
    return ProposalSet(np.stack(out), [f"rand{i}" for i in range(n)])



class EvalSession(PlanningSession):
    """:class:`PlanningSession` with the evaluation's proposal modes (the planner and the blending are unchanged).

    Args:
        mode: ``"basis"`` (the session's own proposals), ``"random"`` (:func:`random_direction_proposals`, as many as
            ``basis`` would give) or ``"nominal"`` (perturbations around the nominal chunk + the gripper toggle).
    """

    def __init__(self, *args: Any, mode: Literal["basis", "random", "nominal"] = "basis", **kw: Any):
        super().__init__(*args, **kw)
        self.mode = mode

    def proposals(self, q: np.ndarray, current_pose: np.ndarray, instruction: str = "",
                  images: dict[str, np.ndarray] | None = None, seed: int = 0,
                  frames: np.ndarray | None = None) -> ProposalSet:
        from vidplan_core.planning.proposals import gripper_proposals

        pc = self.config.proposals
        pose = np.asarray(current_pose, np.float64)
        if self.mode == "random":
            return random_direction_proposals(self.kin, q, self.horizon, self.num_candidates, pc.basis_speed_mps,
                                              np.random.default_rng([seed, 5]), round(float(pose[6])), pose[3:6],
                                              velocity_scale=pc.joint_velocity_scale * pc.velocity_margin,
                                              workspace_min=pc.workspace_min, workspace_max=pc.workspace_max,
                                              joint_margin=pc.joint_margin_rad)
        if self.mode == "nominal":
            obs = NominalObservation(ee_pose=pose, joint_positions=np.asarray(q), images=images or {},
                                     instruction=instruction, frames=frames)
            props = perturbation_proposals(self.nominal.infer(obs), pc.num_nominal, np.asarray(pc.nominal_sigma),
                                           rng=seed)
            props = ProposalSet(clip_to_workspace(props.actions, pc.workspace_min, pc.workspace_max), props.labels)
            if pc.gripper_toggle:
                props = compose_proposals(props, gripper_proposals(pose, self.horizon))
            return props
        return super().proposals(q, current_pose, instruction, images, seed, frames)


# ------------------------------------------------------------------------------------------------------ models
@dataclass
class _Loaded:
    backends: dict[str, Any]  # "default" and (torch) "no-uq" → Backend
    views: Any  # the model's ViewPreparation (view size, workspace crops)
    warnings: list[str]
    policy: Any = None  # the bundle's BCNominalPolicy (bc variants only)


def _load_backends(cfg: ClosedLoopConfig, need_no_uq: bool, need_policy: bool = False) -> _Loaded:
    """The bundle's backend(s) for the learned variants, through the one model-directory loader (the planner
    node's: :func:`vidplan_core.runtime.loader.load_planner_backend`). A bad directory, or an index naming a part
    that is not there, is a ClosedLoopError before any episode runs."""
    from vidplan_core.runtime.base import BackendError
    from vidplan_core.runtime.graphs import ObjectiveConfig
    from vidplan_core.runtime.loader import load_planner_backend

    base = cfg.planning("vidplan")
    flow_steps = base.flow_steps or 1
    kappa = base.session.gradopt.score.kappa
    d = Path(cfg.model)
    if cfg.backend == "torch" and cfg.device == "tensorrt":
        raise ClosedLoopError("device 'tensorrt' is an onnxruntime provider; use --backend onnxruntime")
    try:
        lb = load_planner_backend(d, cfg.backend, device=cfg.device, flow_steps=flow_steps, threads=cfg.threads,
                                  objective=ObjectiveConfig(kappa=kappa))
        warnings = list(lb.warnings)
        backends = {"default": lb.backend}
        if need_no_uq:  # the refinement objective's κ is part of the value graph: a second backend, same models
            backends["no-uq"] = lb.with_objective(ObjectiveConfig(kappa=0.0))
            if lb.models is None:
                warnings.append(f"no-uq with the {cfg.backend} backend: scoring uses w(h) = 1, but the exported "
                                f"value-and-grad graph keeps its objective {lb.backend.objective} for the refinement")
        elif lb.models is None:
            backends["no-uq"] = lb.backend
        policy = None
        if need_policy:  # torch, on the bundle's own autoencoder and text embedding
            from vidplan_core.planning.nominal import BCNominalPolicy

            policy = BCNominalPolicy.from_bundle(d, lb.models)
        return _Loaded(backends, lb.views, warnings, policy)
    except (BackendError, FileNotFoundError, OSError, KeyError) as exc:
        raise ClosedLoopError(f"cannot load the {cfg.backend} models from {d}: {exc}") from exc


def _make_session(variant: str, cfg: ClosedLoopConfig, loaded: _Loaded | None, kin: Any, nominal: Any,
                  env: Any) -> EvalSession:
    """The planning session of ``variant``: its resolved planner configuration around the variant's backend."""
    pcfg = cfg.planning(variant)
    sc = pcfg.session
    mode = {"random": "random", "scripted+vidplan": "nominal"}.get(variant, "basis")
    if mode == "nominal" or variant == "bc+vidplan":  # bc+vidplan: the planner node's basis + bc perturbations
        sc.proposals.nominal_sigma = list(cfg.nominal_sigma)
    else:
        sc.proposals.num_nominal = 0  # perturbations around a nominal only where there is one
    if variant.startswith("oracle+"):
        from vidplan_core.execution import IKOptions
        from vidplan_sim.oracle import OracleBackend
        from vidplan_sim.privileged import PrivilegedReward

        learned = None if variant == "oracle+privileged" else loaded.backends["default"]
        backend = OracleBackend(env, kin, limits=pcfg.limits, ik=IKOptions(),
                                reward=PrivilegedReward() if learned is None else None, learned=learned,
                                views=loaded.views if learned is not None else None,
                                score_pixels=variant == "oracle+learned-pixels")
    elif variant == "learned+privileged":
        from vidplan_sim.predicted_state import PredictedStateBackend
        from vidplan_sim.privileged import PrivilegedReward

        backend = PredictedStateBackend(loaded.backends["default"], env, PrivilegedReward())
    else:
        backend = loaded.backends["no-uq" if variant == "no-uq" else "default"]
    return EvalSession(backend, kin, sc, nominal=nominal, mode=mode)


# ------------------------------------------------------------------------------------------------------ episode
class _Executor:
    """The executor node's chunk path, in-process: THE execution core → the sim's trajectory controller."""

    def __init__(self, env: Any, kin: Any, limits: Any):
        from vidplan_core.execution import IKOptions

        self.env, self.kin, self.limits = env, kin, limits
        self.ik = IKOptions()  # executor_node defaults (ik_max_iterations, ...)
        self.policy = "reject"  # the sim and robot profiles' out_of_limits_policy

    def start(self, chunk: EEChunk, steps: int) -> tuple[np.ndarray, str]:
        """Check and start the first ``steps`` steps; returns (gripper per executed step (K,), problem or '')."""
        from vidplan_core.execution import JointPlan, plan_execution
        from vidplan_sim.oracle import execute_plan

        q = self.env.joint_positions()
        res = plan_execution(chunk, q, self.kin, self.limits, self.policy, self.ik, max_steps=steps)
        if not isinstance(res, JointPlan):
            execute_plan(self.env, None, q)
            return np.zeros(0), f"{res.status}: {res.reason}"
        execute_plan(self.env, res, q)
        return res.gripper, res.truncated_reason


def _observe(env: Any, views: Any, images: bool = True) -> tuple[np.ndarray | None, np.ndarray]:
    """(3 views, 3, h, w) uint8 frames as the model sees them (``views``: its
    :class:`~vidplan_core.spaces.ViewPreparation`; or None) and the (7,) EE pose with the command."""
    pose = env.ee_action()
    if not images:
        return None, pose
    frames = views.prepare(env.render())
    return np.ascontiguousarray(frames.transpose(0, 3, 1, 2)), pose


def run_episode(env: Any, spec: EpisodeSpec, variant: str, cfg: ClosedLoopConfig, loaded: _Loaded | None,
                kin: Any) -> dict[str, Any]:
    """Run one episode of ``variant`` in ``env`` (a :class:`vidplan_sim.env.SimEnv`); returns its record.

    Success is :meth:`SimEnv.task_success` (checked after every executed model step; the episode ends at the first
    success). ``steps`` counts control steps (15 Hz) of simulated time. Frames are rendered only at the model rate
    and only when the variant's planner looks at images.
    """
    from vidplan_sim.expert import ExpertOptions, SceneObservation, ScriptedExpert

    t_wall = time.perf_counter()
    env.reset(seed=spec.seed, clutter=spec.clutter, task=spec.instruction)
    pcfg = cfg.planning(variant)
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
    elif variant in BC_VARIANTS:
        nominal = loaded.policy
        nominal.reset()
    session = None
    if variant in PLANNER_VARIANTS:
        if loaded is None and variant in NEEDS_MODELS:
            raise ClosedLoopError(f"variant {variant!r} needs models")
        session = _make_session(variant, cfg, loaded, kin, nominal, env)
    uses_images = (session is not None and variant != "oracle+privileged") or variant == "bc"
    n_hist = (int(session.backend.num_history) if session is not None
              else int(nominal.policy.config.num_history) if variant == "bc" else 1)
    executor = _Executor(env, kin, pcfg.limits)
    views = loaded.views if loaded is not None else ViewPreparation(16, 16)
    frames, pose = _observe(env, views, images=uses_images)
    # The robot stands still before the first plan: T identical observations are what the planner node would have.
    history: deque[tuple[np.ndarray | None, np.ndarray]] = deque([(frames, pose)] * n_hist, maxlen=n_hist)
    cycle, holds, plan_s, labels, problems, skipped, survival = 0, 0, [], {}, [], 0, []
    executing: EEChunk | None = None
    success, reason = env.task_success()
    open_loop = pcfg.open_loop_steps
    while not success and clock["k"] < pcfg.episode_steps:
        if session is not None:
            poses = np.stack([p for _, p in history])
            for i in range(1, len(poses)):  # Euler continuity along the history (as ObservationHistory does)
                poses[i, list(ROTATION_DIMS)] = wrap_angle(poses[i, list(ROTATION_DIMS)],
                                                           poses[i - 1, list(ROTATION_DIMS)])
            hist = (np.stack([f for f, _ in history]) if uses_images
                    else np.zeros((n_hist, 3, 3, 1, 1), np.uint8))  # oracle+privileged never looks at pixels
            t0 = time.perf_counter()
            result, _ = session.plan(hist, poses, env.joint_positions(), spec.instruction,
                                     seed=spec.seed * 1000 + cycle, executing=executing,
                                     executing_elapsed_s=open_loop / MODEL_RATE_HZ)
            plan_s.append(time.perf_counter() - t0)
            holds += int(result.hold)
            skipped += int(result.refine_skipped)
            if result.winner_survival is not None:
                survival.append(result.winner_survival)
            labels[result.chosen_label or "hold"] = labels.get(result.chosen_label or "hold", 0) + 1
            chunk = result.chunk
            executing = None if result.hold else chunk
        else:
            frames_h = np.stack([f for f, _ in history]) if uses_images else None
            t0 = time.perf_counter()
            acts = nominal.infer(NominalObservation(ee_pose=env.ee_action(), joint_positions=env.joint_positions(),
                                                    instruction=spec.instruction, frames=frames_h))
            if variant == "bc":  # the planner's limits bound the policy's chunk as they bound every proposal
                pc = pcfg.session.proposals
                acts = clip_to_workspace(acts, pc.workspace_min, pc.workspace_max)
            chunk = EEChunk.from_actions(acts)
            if variant == "bc":
                plan_s.append(time.perf_counter() - t0)
        grip, problem = executor.start(chunk, open_loop)
        if problem:
            problems.append(problem)
            if not len(grip):
                executing = None
        for j in range(open_loop):
            if j < len(grip):
                env.set_gripper(float(grip[j]))
            for _ in range(stride):
                env.step(dt_ctrl)
                clock["k"] += 1
            frames, pose = _observe(env, views, images=uses_images)
            history.append((frames, pose))
            success, reason = env.task_success()
            if success or clock["k"] >= pcfg.episode_steps:
                break
        cycle += 1
        if nominal is not None and session is None and getattr(nominal, "done", lambda: False)():
            break  # the scripted plan is over: nothing more will happen
    # progress short of success: how far the TCP ended from the target object [m]
    final_dist = float(np.linalg.norm(env.ee_pose()[:3, 3] - env.object_pose(env.layout.target.name)[:3]))
    return {"seed": spec.seed, "clutter": spec.clutter, "task": spec.kind, "instruction": spec.instruction,
            "index": spec.index, "variant": variant, "success": bool(success), "reason": reason,
            "final_tcp_target_m": round(final_dist, 4),
            "steps": int(clock["k"]), "sim_time_s": round(env.time, 4), "cycles": cycle,
            "wall_time_s": round(time.perf_counter() - t_wall, 3),
            "plan_s_mean": round(float(np.mean(plan_s)), 4) if plan_s else None, "holds": holds,
            "refine_skipped": skipped, "winner_survival": round(float(np.mean(survival)), 3) if survival else None,
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


_WORKER: dict[str, Any] = {}


def _worker_init(cfg_json: str) -> None:
    """Per-process state of a ``workers > 1`` run: its own scene, models and kinematics (nothing is shared)."""
    import torch

    from vidplan_core.kinematics import PandaKinematics
    from vidplan_sim.env import SimEnv

    torch.set_num_threads(1)
    cfg = ClosedLoopConfig.model_validate_json(cfg_json)
    needs_models = any(v in NEEDS_MODELS for v in cfg.variants)
    _WORKER.update(cfg=cfg, env=SimEnv(width=cfg.width, height=cfg.height), kin=PandaKinematics(),
                   loaded=_load_backends(cfg, "no-uq" in cfg.variants, any(v in BC_VARIANTS for v in cfg.variants))
                   if needs_models else None)


def _worker_run(spec: EpisodeSpec, variant: str) -> dict[str, Any]:
    w = _WORKER
    return run_episode(w["env"], spec, variant, w["cfg"], w["loaded"], w["kin"])


def _run_parallel(jobs: list[tuple[EpisodeSpec, str]], cfg: ClosedLoopConfig, workers: int,
                  over_budget: Callable[[], bool]):
    """Yield episode records from ``workers`` processes (spawned: MuJoCo's GL context and onnxruntime do not survive
    a fork), keeping at most ``workers`` episodes in flight and starting none once ``over_budget()``; yields None
    for every job not started."""
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    pending = list(jobs)
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_worker_init,
                             initargs=(cfg.model_dump_json(),)) as pool:
        running = set()
        while pending or running:
            while pending and len(running) < workers:
                if over_budget():
                    for _ in pending:
                        yield None
                    pending = []
                    break
                running.add(pool.submit(_worker_run, *pending.pop(0)))
            if not running:
                break
            finished, running = wait(running, return_when=FIRST_COMPLETED)
            for f in finished:
                yield f.result()


def run_closed_loop(cfg: ClosedLoopConfig, out: str | Path,
                    progress: Callable[[Iterable[Any], int], Iterable[Any]] | None = None,
                    env_factory: Callable[[], Any] | None = None, time_budget_s: float | None = None,
                    workers: int = 1) -> dict[str, Any]:
    """Run every (episode, variant) of ``cfg`` not already in ``out``; write results.json, table.md, success.png.

    Args:
        cfg: settings.
        out: output directory (resumable).
        progress: wraps the iterable of jobs (``progress(jobs, total)``), e.g. tqdm.
        env_factory: builds the :class:`vidplan_sim.env.SimEnv` (default: the default scene at cfg.width×height);
            only with ``workers == 1``.
        time_budget_s: start no new episode after this many seconds (wall); the results then cover the episodes that
            finished (``results["complete"]`` is False) and a later call with the same ``out`` resumes.
        workers: episodes run in parallel, one process each with its own scene and models (both cores of a 2-core
            machine: 2). Results do not depend on it: every episode is seeded by (seed, clutter, task).

    Returns:
        The content of results.json.
    """
    out = Path(out)
    if workers < 1 or (workers > 1 and env_factory is not None):
        raise ClosedLoopError(f"workers must be ≥ 1 (and 1 with a custom env_factory), got {workers}")
    # Planner configurations and models first: a bad key, file or model directory fails before anything is written.
    planner_configs = {v: cfg.planning(v).model_dump(mode="json") for v in cfg.variants}
    needs_models = any(v in NEEDS_MODELS for v in cfg.variants)
    loaded = (_load_backends(cfg, "no-uq" in cfg.variants, any(v in BC_VARIANTS for v in cfg.variants))
              if needs_models else None)
    done = _prepare(out, cfg)
    env = None
    if workers > 1:
        from vidplan_sim.scene import load_scene_config

        scene = load_scene_config()
        colours, shapes = scene.colour_names, scene.shape_names
    else:
        if env_factory is None:
            from vidplan_sim.env import SimEnv

            env = SimEnv(width=cfg.width, height=cfg.height)
        else:
            env = env_factory()
        colours, shapes = env.cfg.colour_names, env.cfg.shape_names
    from vidplan_core.kinematics import PandaKinematics

    kin = PandaKinematics()
    specs = episode_specs(cfg, colours, shapes)
    want = {(v, s.clutter, s.seed, s.instruction) for s in specs for v in cfg.variants
            if s.index < cfg.episodes_for(v)}
    have = {_key(r): r for r in done if _key(r) in want}  # same episode (task included) and variant: reuse
    jobs = [(s, v) for s in specs for v in cfg.variants
            if s.index < cfg.episodes_for(v) and (v, s.clutter, s.seed, s.instruction) not in have]
    records = list(have.values())
    t_start = time.perf_counter()

    def over_budget() -> bool:
        return time_budget_s is not None and time.perf_counter() - t_start > time_budget_s

    def serial():
        for spec, variant in jobs:
            yield None if over_budget() else run_episode(env, spec, variant, cfg, loaded, kin)

    skipped = 0
    try:
        with (out / EPISODES).open("a") as fh:
            stream = serial() if workers == 1 else _run_parallel(jobs, cfg, workers, over_budget)
            for rec in (progress(stream, len(jobs)) if progress else stream):
                if rec is None:
                    skipped += 1
                    continue
                fh.write(json.dumps(rec) + "\n")
                fh.flush()
                records.append(rec)
    finally:
        close = getattr(env, "close", None)
        if close is not None:
            close()
    order = {v: i for i, v in enumerate(cfg.variants)}
    records.sort(key=lambda r: (order[r["variant"]], r["task"], r["clutter"], r["seed"]))
    summary = summarize(records, cfg)
    results = {"settings": cfg.model_dump(), "commit": _git_commit(), "complete": skipped == 0, "not_run": skipped,
               "warnings": loaded.warnings if loaded else [],
               "variant_overrides": {v: VARIANT_OVERRIDES[v] for v in cfg.variants},
               "planner_configs": planner_configs,
               "seeds": sorted({s.seed for s in specs}),
               "episode_specs": [{"seed": s.seed, "clutter": s.clutter, "task": s.kind, "instruction": s.instruction}
                                 for s in specs],
               "episodes": records, "summary": summary, "cells": cells(records, cfg)}
    (out / "results.json").write_text(json.dumps(results, indent=2))
    write_table(results, out / "table.md")
    write_plot(results, out / "success.png")
    return results


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                              cwd=Path(__file__).resolve().parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def summarize(records: list[dict[str, Any]], cfg: ClosedLoopConfig) -> dict[str, Any]:
    """Success counts, rates and Wilson 95 % intervals per variant × task kind (and "all") × clutter (and "all")."""
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
                ci = wilson_interval(k, n)
                out[v][task][str(c)] = {"n": n, "success": k, "rate": (k / n) if n else None,
                                        "ci95": [round(ci[0], 4), round(ci[1], 4)] if ci else None}
    return out


def cells(records: list[dict[str, Any]], cfg: ClosedLoopConfig) -> list[dict[str, Any]]:
    """One object per (variant, task, clutter): episodes, successes and the Wilson 95 % interval."""
    out = []
    for v in cfg.variants:
        for task in cfg.tasks:
            for c in cfg.clutter:
                rc = [r for r in records if r["variant"] == v and r["task"] == task and r["clutter"] == c]
                n, k = len(rc), sum(r["success"] for r in rc)
                ci = wilson_interval(k, n)
                out.append({"variant": v, "task": task, "clutter": c, "episodes": n, "successes": k,
                            "ci95": [round(ci[0], 4), round(ci[1], 4)] if ci else None})
    return out


def _cell(s: dict[str, Any]) -> str:
    if not s["n"]:
        return "–"
    lo, hi = s["ci95"]
    return f"{s['success']}/{s['n']} [{lo:.2f}, {hi:.2f}]"


def write_table(results: dict[str, Any], path: str | Path) -> Path:
    """Markdown: success rate (successes/episodes) per variant × clutter, one table per task kind and overall."""
    cfg = results["settings"]
    summ = results["summary"]
    cols = [str(c) for c in cfg["clutter"]] + ["all"]
    pcs = results.get("planner_configs", {})
    base = pcs.get("vidplan") or next(iter(pcs.values()), None)
    timing = ""
    if base:
        steps = base["episode_steps"]
        timing = (f" Planner: `{cfg['planner_config'] or 'planning/planner.yaml'}` (basis speed "
                  f"{base['session']['proposals']['basis_speed_mps']} m/s, {base['open_loop_steps']} steps executed "
                  f"per plan, K={base['flow_steps']}), episodes of {steps} control steps "
                  f"({steps / CONTROL_RATE_HZ:g} s).")
    lines = ["# Closed-loop success in simulation (`vidplan eval sim`)", "",
             f"Model `{cfg['model']}` ({cfg['backend']}); {cfg['episodes']} episodes per (task, clutter) cell for "
             f"{', '.join(v for v in CORE_VARIANTS if v in cfg['variants'])}, {cfg['episodes_other']} for the "
             f"others; scene seeds from {cfg['seed']} (the demo models trained on seeds ≥ 1000).{timing} "
             f"Commit `{results.get('commit')}`.", "",
             "Cells: successes/episodes [Wilson 95 % interval]. Oracle and privileged variants are diagnostics (the "
             "simulator as world model / reward from the simulator state), not the product.", "",
             "Variants as overrides of the planner configuration: " + "; ".join(
                 f"`{v}`: {json.dumps(o) if o else 'as shipped'}" for v, o in results.get("variant_overrides",
                                                                                            {}).items())]
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
    fig, ax = plt.subplots(figsize=(3.2 + 1.4 * len(groups), 3.6))
    x = np.arange(len(groups))
    for i, v in enumerate(variants):
        cs = [summ[v]["all"][g] for g in groups]
        rates = [c["rate"] if c["rate"] is not None else 0.0 for c in cs]
        err = np.array([[r - c["ci95"][0], c["ci95"][1] - r] if c["ci95"] else [0.0, 0.0]
                        for r, c in zip(rates, cs, strict=True)]).T
        bars = ax.bar(x + (i - (len(variants) - 1) / 2) * width, rates, width, label=v, yerr=err, capsize=1.5,
                      error_kw={"elinewidth": 0.6})
        for b, c in zip(bars, cs, strict=True):
            ax.text(b.get_x() + b.get_width() / 2, b.get_height() + 0.01, f"{c['success']}/{c['n']}",
                    ha="center", va="bottom", fontsize=6, rotation=90)
    ax.set_xticks(x, [f"clutter {g}" if g != "all" else "all" for g in groups])
    ax.set_ylim(0, 1.15)
    ax.set_ylabel("success rate")
    ax.set_title(f"closed-loop success with Wilson 95 % intervals (tasks: {', '.join(cfg['tasks'])})", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # outside: bars reach 1.0
    fig.tight_layout()
    p = Path(path)
    fig.savefig(p, dpi=120)
    plt.close(fig)
    return p
