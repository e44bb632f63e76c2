"""Simulated demonstrations → one rosbag2 (mcap) per episode, as the robot would record them.

Runs :class:`vidplan_sim.env.SimEnv` and :class:`vidplan_sim.expert.ScriptedExpert` in-process (the same scene,
task and expert code as ``sim_node``), with Gaussian action noise and deliberate failures, clutter 0–3 and every
task kind, and records per episode (sim time; stamps start at 1 s):

=============================================  ==================================  =====================================
topic                                          type                                rate / content
=============================================  ==================================  =====================================
/cameras/{left,right,wrist}/image_raw          sensor_msgs/Image (rgb8)            ``camera_rate_hz`` (15 Hz)
/cameras/{left,right,wrist}/camera_info        sensor_msgs/CameraInfo              with every image
/joint_states                                  sensor_msgs/JointState              15 Hz: <prefix>_joint1..7 [rad] +
                                                                                   <prefix>_finger_joint1/2 [m]
/ee_pose                                       geometry_msgs/PoseStamped           15 Hz, TCP in panda_link0
/vidplan/expert_action                         vidplan_interfaces/PlanChunk        15 Hz, one step: the EE target
                                                                                   commanded at that time (dt 1/15 s)
/vidplan/instruction                           std_msgs/String                     once, the instruction (older
                                                                                   bags: /vidplan/task)
/vidplan/episode                               std_msgs/String (JSON)              once at the end: task, instruction,
                                                                                   success, reason, seed, clutter,
                                                                                   failure, steps
=============================================  ==================================  =====================================

Output layout (``OUT``)::

    OUT/generate.json              the generation settings (a resumed run must use the same ones)
    OUT/episode_000000/            rosbag2 bag (metadata.yaml + episode_000000.mcap)
    OUT/episode_000000.json        sidecar: the same JSON as /vidplan/episode — written last, it marks the
                                   episode as complete
    OUT/.partial/                  the episode being written (removed and redone on resume)

Resumable: episodes with a sidecar are skipped; a half-written episode is deleted and generated again. Episode
``i`` uses seed ``seed + i`` for its scene, task, clutter, noise and failure draw, so a resumed run produces the
same data as an uninterrupted one.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from vidplan_core.config import changed_settings
from vidplan_core.data.bag_writer import BagWriter
from vidplan_core.data.bags import make_qos
from vidplan_core.data.messages import Codec
from vidplan_core.spaces import CONTROL_RATE_HZ, VIEW_ORDER
from vidplan_core.topics import INSTRUCTION_TOPIC
from vidplan_sim.env import SimEnv
from vidplan_sim.expert import ExpertOptions, SceneObservation, ScriptedExpert
from vidplan_sim.scene import load_scene_config
from vidplan_sim.tasks import sample_task

__all__ = ["GenerateConfig", "GenerateError", "episode_draw", "episode_name", "generate_dataset", "generate_episode"]

MANIFEST = "generate.json"
T0_NS = 1_000_000_000  # first stamp: 1 s (a zero stamp means "unset" to many ROS tools)


class GenerateError(ValueError):
    """Bad generation settings or output directory."""


class GenerateConfig(BaseModel):
    """Settings of ``vidplan data generate`` (also stored in ``OUT/generate.json``)."""

    model_config = ConfigDict(extra="forbid")
    episodes: int = Field(default=30, gt=0)
    seed: int = 0
    width: int = Field(default=320, ge=16, description="camera width [px]")
    height: int = Field(default=180, ge=16, description="camera height [px]")
    camera_rate_hz: float = Field(default=CONTROL_RATE_HZ, gt=0, description="divides the 15 Hz control rate")
    clutter: list[int] = Field(default=[0, 1, 2, 3], min_length=1, description="clutter levels, drawn uniformly")
    tasks: list[str] = Field(default=["put", "touch", "push"], min_length=1, description="task kinds, in turn")
    failure_prob: float = Field(default=0.4, ge=0, le=1, description="probability of a deliberate failure "
                                "(some deliberate failures still succeed: about a third of episodes fail)")
    noise_std: list[float] = Field(default=[0.002, 0.002, 0.002, 0.01, 0.01, 0.01, 0.0], min_length=7,
                                   max_length=7, description="action noise std per dimension (m, rad, gripper)")
    max_steps: int = Field(default=0, ge=0, description="cut episodes after this many control steps (0 = none)")
    settle_steps: int = Field(default=10, ge=0)
    joint_prefix: str = "panda"
    base_frame: str = "panda_link0"
    scene: str | None = Field(default=None, description="scene YAML (default: vidplan_sim's default scene)")

    @field_validator("camera_rate_hz")
    @classmethod
    def _rate(cls, v: float) -> float:
        ratio = CONTROL_RATE_HZ / v
        if abs(ratio - round(ratio)) > 1e-6 or ratio < 1:
            raise ValueError(f"camera rate {v} Hz must divide the control rate {CONTROL_RATE_HZ} Hz")
        return v

    @field_validator("clutter")
    @classmethod
    def _clutter(cls, v: list[int]) -> list[int]:
        if any(c not in (0, 1, 2, 3) for c in v):
            raise ValueError(f"clutter levels must be within 0..3, got {v}")
        return v

    @field_validator("tasks")
    @classmethod
    def _tasks(cls, v: list[str]) -> list[str]:
        kinds = ("put", "touch", "push")
        bad = [k for k in v if k not in kinds]
        if bad:
            raise ValueError(f"unknown task kind(s) {bad}; expected some of {list(kinds)}")
        return v

    def fixed(self) -> dict[str, Any]:
        """Settings that must not change when a run is resumed (everything but the episode count)."""
        return self.model_dump(exclude={"episodes"})


def episode_name(i: int) -> str:
    """Directory / sidecar stem of episode ``i``."""
    return f"episode_{i:06d}"


def episode_draw(cfg: GenerateConfig, i: int, colours: list[str], shapes: list[str]) -> dict[str, Any]:
    """Deterministic draws of episode ``i``: ``{"seed", "task" (a Task), "clutter"}`` (a resumed run, and a
    diagnostic that revisits the training scenes, gets the same ones)."""
    seed = cfg.seed + i
    rng = np.random.default_rng([cfg.seed, i, 7])
    kind = cfg.tasks[i % len(cfg.tasks)]  # in turn, so every kind appears in a handful of episodes
    task = sample_task(rng, colours, shapes, kinds=(kind,))
    clutter = int(cfg.clutter[int(rng.integers(len(cfg.clutter)))])
    return {"seed": seed, "task": task, "clutter": clutter}


def generate_episode(env: Any, cfg: GenerateConfig, i: int, bag_path: Path) -> dict[str, Any]:
    """Run episode ``i`` in ``env`` (a :class:`vidplan_sim.env.SimEnv`) and write its bag at ``bag_path``.

    Returns the episode info (also recorded on /vidplan/episode).
    """
    plan = episode_draw(cfg, i, env.cfg.colour_names, env.cfg.shape_names)
    task = plan["task"]
    env.reset(seed=plan["seed"], clutter=plan["clutter"], task=task)
    expert = ScriptedExpert(task, ExpertOptions(noise_std=list(cfg.noise_std), failure_prob=cfg.failure_prob,
                                                settle_steps=cfg.settle_steps), seed=plan["seed"])
    actions = expert.plan(SceneObservation.from_env(env))
    if cfg.settle_steps:
        actions = np.vstack([actions, np.repeat(actions[-1:], cfg.settle_steps, axis=0)])
    if cfg.max_steps:
        actions = actions[: cfg.max_steps]

    dt = 1.0 / CONTROL_RATE_HZ
    cam_every = round(CONTROL_RATE_HZ / cfg.camera_rate_hz)
    cams = {v: env.calibration.cameras[v].scaled(cfg.width, cfg.height) for v in VIEW_ORDER}
    arm_names = [f"{cfg.joint_prefix}_joint{k}" for k in range(1, 8)]
    finger_names = [f"{cfg.joint_prefix}_finger_joint1", f"{cfg.joint_prefix}_finger_joint2"]
    sensor = make_qos("best_effort", "volatile", 5)
    reliable = make_qos("reliable", "volatile", 10)
    latched = make_qos("reliable", "transient_local", 1)
    with BagWriter(bag_path) as writer:
        codec = Codec(writer.definitions)
        for v in VIEW_ORDER:
            writer.add_topic(f"/cameras/{v}/image_raw", "sensor_msgs/msg/Image", [sensor])
            writer.add_topic(f"/cameras/{v}/camera_info", "sensor_msgs/msg/CameraInfo", [sensor])
        writer.add_topic("/joint_states", "sensor_msgs/msg/JointState", [reliable])
        writer.add_topic("/ee_pose", "geometry_msgs/msg/PoseStamped", [reliable])
        writer.add_topic("/vidplan/expert_action", "vidplan_interfaces/msg/PlanChunk", [reliable])
        writer.add_topic(INSTRUCTION_TOPIC, "std_msgs/msg/String", [latched])
        writer.add_topic("/vidplan/episode", "std_msgs/msg/String", [latched])
        writer.write(INSTRUCTION_TOPIC, T0_NS, codec.string(task.instruction))

        def observe(k: int) -> int:
            t = T0_NS + round(k * dt * 1e9)
            if k % cam_every == 0:
                frames = env.render()
                for vi, v in enumerate(VIEW_ORDER):
                    frame_id = cams[v].frame_id
                    writer.write(f"/cameras/{v}/image_raw", t, codec.image(t, frame_id, frames[vi]))
                    writer.write(f"/cameras/{v}/camera_info", t,
                                 codec.camera_info(t, frame_id, cfg.width, cfg.height, cams[v].K, cams[v].distortion))
            writer.write("/joint_states", t, codec.joint_state(
                t, arm_names + finger_names, np.concatenate([env.joint_positions(), env.finger_positions()]),
                np.concatenate([env.joint_velocities(), np.zeros(2)])))
            writer.write("/ee_pose", t, codec.pose_stamped(t, cfg.base_frame, env.ee_action()))
            return t

        max_err = 0.0
        t = observe(0)
        for k, a in enumerate(actions):
            writer.write("/vidplan/expert_action", t, codec.plan_chunk(t, cfg.base_frame, a[None], dt,
                                                                       task.instruction, plan_id=k))
            sol = env.step_ee(a, dt)
            max_err = max(max_err, float(sol.position_error))
            t = observe(k + 1)
        success, reason = env.task_success()
        info = {"name": bag_path.name, "task": task.kind, "instruction": task.instruction, "success": bool(success),
                "reason": reason, "seed": plan["seed"], "clutter": plan["clutter"], "failure": expert.failure,
                "steps": len(actions), "control_rate_hz": CONTROL_RATE_HZ, "camera_rate_hz": cfg.camera_rate_hz,
                "image_size": [cfg.height, cfg.width], "max_ik_error_m": max_err}
        writer.write("/vidplan/episode", t, codec.json_string(info))
    return info


def _prepare_output(out: Path, cfg: GenerateConfig) -> None:
    manifest = out / MANIFEST
    if manifest.is_file():
        try:
            old = GenerateConfig.model_validate(json.loads(manifest.read_text()))
        except Exception as exc:
            raise GenerateError(f"{manifest}: unreadable ({exc}); delete the directory or choose another") from exc
        if lines := changed_settings(old.fixed(), cfg.fixed()):
            raise GenerateError(f"{out} holds episodes generated with other settings ({lines}); resume with the same "
                                f"settings or write to a new directory")
    elif out.exists() and any(p for p in out.iterdir() if p.name != ".partial"):
        raise GenerateError(f"{out} exists, is not empty and has no {MANIFEST}: not a generation output")
    out.mkdir(parents=True, exist_ok=True)
    tmp = manifest.with_suffix(".json.tmp")
    tmp.write_text(cfg.model_dump_json(indent=2))
    tmp.replace(manifest)


def is_complete(out: Path, i: int) -> bool:
    """Episode ``i`` has been written completely (its sidecar exists; it is written last)."""
    name = episode_name(i)
    return (out / f"{name}.json").is_file() and (out / name / "metadata.yaml").is_file()


def generate_dataset(out: str | Path, cfg: GenerateConfig,
                     progress: Callable[[Iterable[int], int], Iterable[int]] | None = None,
                     env_factory: Callable[[], Any] | None = None) -> list[dict[str, Any]]:
    """Generate ``cfg.episodes`` episodes into ``out`` (resumable; see the module docstring).

    Args:
        out: output directory.
        cfg: settings.
        progress: wraps the iterable of episode indices to do (``progress(indices, total)``), e.g. tqdm.
        env_factory: builds the environment (default: ``SimEnv(scene, width=cfg.width, height=cfg.height)``).

    Returns:
        The info of every episode (also the finished ones of an earlier run), in episode order.
    """
    out = Path(out)
    _prepare_output(out, cfg)
    partial = out / ".partial"
    if partial.exists():
        shutil.rmtree(partial)  # an interrupted episode: redo it from the start
    todo = []
    for i in range(cfg.episodes):
        if is_complete(out, i):
            continue
        name = episode_name(i)
        if (out / name).exists():  # moved but no sidecar: incomplete
            shutil.rmtree(out / name)
        todo.append(i)
    if todo:
        if env_factory is None:
            scene = load_scene_config(cfg.scene) if cfg.scene else None
            env = SimEnv(scene, width=cfg.width, height=cfg.height)
        else:
            env = env_factory()
        try:
            for i in (progress(todo, len(todo)) if progress else todo):
                name = episode_name(i)
                partial.mkdir(parents=True, exist_ok=True)
                info = generate_episode(env, cfg, i, partial / name)
                (partial / name).rename(out / name)
                tmp = out / f".{name}.json.tmp"
                tmp.write_text(json.dumps(info, indent=2, sort_keys=True))
                tmp.replace(out / f"{name}.json")
        finally:
            close = getattr(env, "close", None)
            if close is not None:
                close()
        if partial.exists():
            shutil.rmtree(partial)
    return [json.loads((out / f"{episode_name(i)}.json").read_text()) for i in range(cfg.episodes)]
