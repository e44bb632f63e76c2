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
from pathlib import Path
from typing import Any

import numpy as np

from vidplan_app.jobs.closed_loop_config import (
    BC_VARIANTS,
    DEFAULT_VARIANTS,
    EPISODES,
    NEEDS_MODELS,
    PLANNER_VARIANTS,
    SETTINGS,
    VARIANT_OVERRIDES,
    VARIANTS,
    ClosedLoopConfig,
    ClosedLoopError,
    EpisodeSpec,
    episode_specs,
)
from vidplan_app.jobs.closed_loop_policies import LoadedModels, ScriptedNominalPolicy, load_backends, make_session
from vidplan_app.jobs.closed_loop_report import cells, summarize, write_plot, write_table
from vidplan_core.config import changed_settings
from vidplan_core.execution import IKOptions, JointPlan, plan_execution
from vidplan_core.kinematics import PandaKinematics
from vidplan_core.models.action_maps import FINGER_OPEN_M
from vidplan_core.planning.nominal import NominalObservation
from vidplan_core.planning.proposals import clip_to_workspace
from vidplan_core.spaces import (
    CONTROL_RATE_HZ,
    MODEL_RATE_HZ,
    EEChunk,
    ViewPreparation,
    continuous_euler,
    model_stride,
)
from vidplan_sim.env import SimEnv
from vidplan_sim.expert import ExpertOptions, SceneObservation, ScriptedExpert
from vidplan_sim.oracle import execute_plan
from vidplan_sim.scene import load_scene_config

# The job's API in one place: its settings and variants are defined in closed_loop_config, the policies and sessions
# in closed_loop_policies, the summary, table and plot in closed_loop_report.
__all__ = ["DEFAULT_VARIANTS", "VARIANTS", "ClosedLoopConfig", "ClosedLoopError", "SimExecutor", "observe_env",
           "run_closed_loop", "run_episode", "trace_path"]


# ------------------------------------------------------------------------------------------------------ episode
class SimExecutor:
    """The executor node's chunk path, in-process: THE execution core → the sim's trajectory controller."""

    def __init__(self, env: Any, kin: Any, limits: Any):
        self.env, self.kin, self.limits = env, kin, limits
        self.ik = IKOptions()  # executor_node defaults (ik_max_iterations, ...)
        self.policy = "reject"  # the sim and robot profiles' out_of_limits_policy

    def start(self, chunk: EEChunk, steps: int) -> tuple[np.ndarray, str]:
        """Check and start the first ``steps`` steps; returns (gripper per executed step (K,), problem or '')."""
        q = self.env.joint_positions()
        res = plan_execution(chunk, q, self.kin, self.limits, self.policy, self.ik, max_steps=steps)
        if not isinstance(res, JointPlan):
            execute_plan(self.env, None, q)
            return np.zeros(0), f"{res.status}: {res.reason}"
        execute_plan(self.env, res, q)
        return res.gripper, res.truncated_reason


def observe_env(env: Any, views: Any, images: bool = True) -> tuple[np.ndarray | None, np.ndarray]:
    """(3 views, 3, h, w) uint8 frames as the model sees them (``views``: its
    :class:`~vidplan_core.spaces.ViewPreparation`; or None) and the (7,) EE pose with the command."""
    pose = env.ee_action()
    if not images:
        return None, pose
    frames = views.prepare(env.render())
    return np.ascontiguousarray(frames.transpose(0, 3, 1, 2)), pose


def run_episode(env: Any, spec: EpisodeSpec, variant: str, cfg: ClosedLoopConfig, loaded: LoadedModels | None,
                kin: Any, trace: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Run one episode of ``variant`` in ``env`` (a :class:`vidplan_sim.env.SimEnv`); returns its record.

    Success is :meth:`SimEnv.task_success` (checked after every executed model step; the episode ends at the first
    success). ``steps`` counts control steps (15 Hz) of simulated time. Frames are rendered only at the model rate
    and only when the variant's planner looks at images.

    ``trace``, when given, receives one dict per cycle, before its chunk is executed: ``cycle``, ``step`` (control
    steps so far), ``tcp`` (3,) [m], ``gripper_cmd`` (0 open .. 1 closed), ``gripper_width_m`` (measured finger
    distance), ``target`` (3,) the target object's
    position [m], ``chosen`` (label, or "hold"), and for planner variants ``best_score`` / ``scores`` (per
    proposal label), ``terms`` (per proposal label, its reward's terms at its best frame: ``frame``, ``r_s``,
    ``h_bar``, ``dist``, ``progress``; :attr:`PlanResult.terms`) and, with ``score.target_fusion: table``,
    ``target_estimate`` (the planner's target point [m] and whether it is pushing) — where an episode loses its
    time, and why each candidate won or lost.
    """
    t_wall = time.perf_counter()
    own_trace = trace is None and cfg.trace
    trace = [] if own_trace else trace
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
        session = make_session(variant, cfg, loaded, kin, nominal, env)
    uses_images = (session is not None and variant != "oracle+privileged") or variant == "bc"
    n_hist = (int(session.backend.num_history) if session is not None
              else int(nominal.policy.config.num_history) if variant == "bc" else 1)
    executor = SimExecutor(env, kin, pcfg.limits)
    views = loaded.views if loaded is not None else ViewPreparation(16, 16)
    frames, pose = observe_env(env, views, images=uses_images)
    # The robot stands still before the first plan: T identical observations are what the planner node would have.
    history: deque[tuple[np.ndarray | None, np.ndarray]] = deque([(frames, pose)] * n_hist, maxlen=n_hist)
    cycle, holds, plan_s, labels, problems, skipped, survival, fallbacks = 0, 0, [], {}, [], 0, [], 0
    gaps: list[float] = []  # best score − the nominal's, per cycle (variants with a nominal policy)
    executing: EEChunk | None = None
    success, reason = env.task_success()
    open_loop = pcfg.open_loop_steps
    while not success and clock["k"] < pcfg.episode_steps:
        if session is not None:
            poses = continuous_euler(np.stack([p for _, p in history]))
            hist = (np.stack([f for f, _ in history]) if uses_images
                    else np.zeros((n_hist, 3, 3, 1, 1), np.uint8))  # oracle+privileged never looks at pixels
            t0 = time.perf_counter()
            # the measured finger closure, as the planner node reads it from the finger joints (0 open, 1 together)
            closure = 1.0 - min(max(env.gripper_width() / FINGER_OPEN_M, 0.0), 1.0)
            result, props = session.plan(hist, poses, env.joint_positions(), spec.instruction,
                                         seed=spec.seed * 1000 + cycle, executing=executing,
                                         executing_elapsed_s=open_loop / MODEL_RATE_HZ, gripper_closure=closure)
            if "nominal" in props.labels and len(result.scores) == len(props):
                gaps.append(float(np.max(result.scores) - result.scores[props.labels.index("nominal")]))
            plan_s.append(time.perf_counter() - t0)
            holds += int(result.hold)
            skipped += int(result.refine_skipped)
            fallbacks += int(bool(result.fallback))  # a chunk the executor would have rejected, replaced
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
        if trace is not None:
            trace.append(_trace_row(env, cycle, clock["k"], result if session is not None else None,
                                    props if session is not None else None,
                                    session.planner.target_estimate if session is not None else None))
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
            frames, pose = observe_env(env, views, images=uses_images)
            history.append((frames, pose))
            success, reason = env.task_success()
            if success or clock["k"] >= pcfg.episode_steps:
                break
        cycle += 1
        if nominal is not None and session is None and getattr(nominal, "done", lambda: False)():
            break  # the scripted plan is over: nothing more will happen
    # progress short of success: how far the TCP ended from the target object [m]
    final_dist = float(np.linalg.norm(env.ee_pose()[:3, 3] - env.object_pose(env.layout.target.name)[:3]))
    rec = {"seed": spec.seed, "clutter": spec.clutter, "task": spec.kind, "instruction": spec.instruction,
            "index": spec.index, "variant": variant, "success": bool(success), "reason": reason,
            "final_tcp_target_m": round(final_dist, 4),
            "steps": int(clock["k"]), "sim_time_s": round(env.time, 4), "cycles": cycle,
            "wall_time_s": round(time.perf_counter() - t_wall, 3),
            "plan_s_mean": round(float(np.mean(plan_s)), 4) if plan_s else None, "holds": holds,
            "refine_skipped": skipped, "winner_survival": round(float(np.mean(survival)), 3) if survival else None,
            "exec_problems": len(problems), "first_exec_problem": problems[0] if problems else "",
            "exec_fallbacks": fallbacks,
            "chosen": labels, "nominal_gaps": [round(g, 5) for g in gaps]}
    if own_trace:  # cfg.trace: the runner writes it to its own file (episodes.jsonl stays one line per episode)
        rec["trace"] = trace
    return rec


def _trace_row(env: Any, cycle: int, step: int, result: Any, props: Any,
               estimate: dict[str, Any] | None = None) -> dict[str, Any]:
    """One cycle of :func:`run_episode`'s trace (see there)."""
    row: dict[str, Any] = {"cycle": cycle, "step": step,
                           "tcp": [round(float(v), 4) for v in env.ee_pose()[:3, 3]],
                           "gripper_cmd": round(float(env.gripper_command), 3),
                           "gripper_width_m": round(env.gripper_width(), 4),
                           "target": [round(float(v), 4) for v in env.object_pose(env.layout.target.name)[:3]]}
    if result is not None:
        row["chosen"] = result.chosen_label or "hold"
        if props is not None and len(result.scores) == len(props):
            row["scores"] = {lab: round(float(v), 5) for lab, v in zip(props.labels, result.scores, strict=True)}
            row["best_score"] = round(float(np.max(result.scores)), 5)
            if result.terms:  # empty for planners that score nothing (blind, scripted)
                row["terms"] = {lab: {k: v[i] for k, v in result.terms.items()} for i, lab in enumerate(props.labels)}
    if estimate is not None:
        row["target_estimate"] = estimate
    return row


def trace_path(out: Path, rec: dict[str, Any]) -> Path:
    """Where a run in ``out`` keeps the trace of episode record ``rec`` (``ClosedLoopConfig.trace``)."""
    return out / "traces" / f"{rec['variant']}_{rec['task']}_c{rec['clutter']}_s{rec['seed']}.jsonl"


def _write_trace(out: Path, rec: dict[str, Any], trace: list[dict[str, Any]]) -> None:
    path = trace_path(out, rec)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in trace))


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
        if lines := changed_settings(old.fixed(), cfg.fixed()):
            raise ClosedLoopError(f"{out} holds results of other settings ({lines}); resume with the same settings "
                                  "or choose another --out")
        ep = out / EPISODES
        if ep.is_file():
            for line in ep.read_text().splitlines():
                try:
                    done.append(json.loads(line))
                except json.JSONDecodeError:
                    pass  # a line cut by an interruption: that episode is run again
        # traces of earlier episodes stay in the directory: a resume or --summarize-only without --trace must not
        # rewrite settings.json to say there are none
        cfg = cfg.model_copy(update={"trace": cfg.trace or old.trace})
    out.mkdir(parents=True, exist_ok=True)
    s.write_text(cfg.model_dump_json(indent=2))
    return done


_WORKER: dict[str, Any] = {}


def _worker_init(cfg_json: str, planning: dict[str, dict[str, Any]]) -> None:
    """Per-process state of a ``workers > 1`` run: its own scene, models and kinematics (nothing is shared), and
    the planner configurations the parent resolved (the YAML is not read again)."""
    import torch

    torch.set_num_threads(1)
    cfg = ClosedLoopConfig.model_validate_json(cfg_json)
    cfg.use_planning(planning)
    needs_models = any(v in NEEDS_MODELS for v in cfg.variants)
    _WORKER.update(cfg=cfg, env=SimEnv(width=cfg.width, height=cfg.height), kin=PandaKinematics(),
                   loaded=load_backends(cfg, "no-uq" in cfg.variants, any(v in BC_VARIANTS for v in cfg.variants))
                   if needs_models else None)


def _worker_run(spec: EpisodeSpec, variant: str) -> dict[str, Any]:
    w = _WORKER
    return run_episode(w["env"], spec, variant, w["cfg"], w["loaded"], w["kin"])


def _run_parallel(jobs: list[tuple[EpisodeSpec, str]], cfg: ClosedLoopConfig, workers: int,
                  over_budget: Callable[[], bool], planning: dict[str, dict[str, Any]]):
    """Yield episode records from ``workers`` processes (spawned: MuJoCo's GL context and onnxruntime do not survive
    a fork), keeping at most ``workers`` episodes in flight and starting none once ``over_budget()``; yields None
    for every job not started. ``planning``: the run's resolved planner configurations (the workers plan with them)."""
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    pending = list(jobs)
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_worker_init,
                             initargs=(cfg.model_dump_json(), planning)) as pool:
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
    planner_configs = cfg.resolved_planning()
    needs_models = any(v in NEEDS_MODELS for v in cfg.variants)
    loaded = (load_backends(cfg, "no-uq" in cfg.variants, any(v in BC_VARIANTS for v in cfg.variants))
              if needs_models else None)
    done = _prepare(out, cfg)
    env = None
    if workers > 1:
        scene = load_scene_config()
        colours, shapes = scene.colour_names, scene.shape_names
    else:
        if env_factory is None:
            env = SimEnv(width=cfg.width, height=cfg.height)
        else:
            env = env_factory()
        colours, shapes = env.cfg.colour_names, env.cfg.shape_names

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
            stream = serial() if workers == 1 else _run_parallel(jobs, cfg, workers, over_budget, planner_configs)
            for rec in (progress(stream, len(jobs)) if progress else stream):
                if rec is None:
                    skipped += 1
                    continue
                trace = rec.pop("trace", None)
                if trace is not None:
                    _write_trace(out, rec, trace)
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
    results = {"settings": cfg.model_dump(), "commit": git_commit(), "complete": skipped == 0, "not_run": skipped,
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


def git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                              cwd=Path(__file__).resolve().parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None
