"""The closed-loop evaluation's settings: the variants of the oracle ladder, what each overrides, the run's
configuration (:class:`ClosedLoopConfig`) and the episodes it runs (scene seed, clutter, task)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator

from vidplan_sim.tasks import sample_task

__all__ = [
    "BC_VARIANTS",
    "CORE_VARIANTS",
    "DEFAULT_VARIANTS",
    "EPISODES",
    "NEEDS_MODELS",
    "PLANNER_VARIANTS",
    "SETTINGS",
    "VARIANTS",
    "VARIANT_OVERRIDES",
    "ClosedLoopConfig",
    "ClosedLoopError",
    "EpisodeSpec",
    "episode_specs",
]

VARIANTS = ("oracle+privileged", "oracle+learned", "oracle+learned-pixels", "learned+privileged", "vidplan", "no-uq",
            "argmax", "static-world", "random", "blind", "scripted", "scripted+vidplan", "bc", "bc+vidplan")
#: run unless ``variants`` says otherwise (the pixel and static-world diagnostics and the bc pair, which needs a
#: bundle with a policy, are asked for by name)
DEFAULT_VARIANTS = tuple(v for v in VARIANTS
                         if v not in ("oracle+learned-pixels", "static-world", "blind", "bc", "bc+vidplan"))
CORE_VARIANTS = ("oracle+privileged", "vidplan", "random", "scripted")
PLANNER_VARIANTS = tuple(v for v in VARIANTS if v not in ("scripted", "bc"))
NEEDS_MODELS = ("oracle+learned", "oracle+learned-pixels", "learned+privileged", "vidplan", "no-uq", "argmax",
                "static-world", "random", "blind", "scripted+vidplan", "bc",
                "bc+vidplan")  # blind: the model's horizon and history length
BC_VARIANTS = ("bc", "bc+vidplan")
_PRIVILEGED_SCORE = {"session.gradopt.refine_iters": 0, "session.gradopt.score.kappa": 0.0,
                     "session.gradopt.score.lam": 0.0, "session.gradopt.score.suppress_semantic": False,
                     "session.gradopt.score.direction_weight": 0.0,  # the privileged reward has its own push term
                     "session.gradopt.score.target_fusion": "off"}  # ... and knows where the target is
#: Each variant as overrides of the planner configuration (dotted keys of PlanningConfig).
VARIANT_OVERRIDES: dict[str, dict[str, Any]] = {
    "vidplan": {},
    "no-uq": {"session.gradopt.score.kappa": 0.0},
    "argmax": {"session.gradopt.refine_iters": 0},
    # argmax with every candidate given the hold's prediction (a world model that ignores its actions)
    "static-world": {"session.gradopt.refine_iters": 0},
    "random": {"session.gradopt.refine_iters": 0},
    # random's directions, one picked at random (no model runs): a chance baseline for the learned scoring
    "blind": {"session.gradopt.refine_iters": 0},
    "scripted": {},
    # the expert's chunk, its perturbations and the gripper toggle only: no basis directions, no hold
    "scripted+vidplan": {"session.proposals.num_nominal": 8, "session.proposals.basis_directions": [],
                         "session.proposals.include_hold": False},
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
    trace: bool = Field(False, description="write every episode's per-cycle trace (TCP, target, chosen proposal, "
                                           "scores) to OUT/traces/<variant>_<task>_c<clutter>_s<seed>.jsonl")
    _planning: dict[str, Any] = PrivateAttr(default_factory=dict)  # variant → PlanningConfig, resolved once

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
        """Settings that must not change on resume (episode counts, variants, tasks and clutter levels may grow;
        tracing may be switched on or off)."""
        return self.model_dump(exclude={"episodes", "episodes_other", "variants", "threads", "clutter", "tasks",
                                        "trace"})

    def planning(self, variant: str) -> Any:
        """The resolved :class:`~vidplan_core.planning.config.PlanningConfig` of ``variant`` (YAML + the run's
        overrides + the variant's named overrides); a bad key or value is a :class:`ClosedLoopError`.

        The YAML is read once per variant and kept: every episode of a run, in whichever worker, plans with the
        configuration resolved at its start, even if the file is edited while the run goes on (a run of hours once
        died when planner.yaml gained a key). Returns a copy the caller may change."""
        from vidplan_core.planning.config import PlanningConfigError, load_planning_config

        if variant not in self._planning:
            try:
                self._planning[variant] = load_planning_config(self.planner_config,
                                                               {**self.overrides, **VARIANT_OVERRIDES[variant]})
            except PlanningConfigError as exc:
                raise ClosedLoopError(str(exc)) from exc
        return self._planning[variant].model_copy(deep=True)

    def resolved_planning(self) -> dict[str, dict[str, Any]]:
        """Every variant's resolved planner configuration as JSON-able dicts, and "vidplan"'s, which model loading
        reads (flow steps, κ): what results.json records and a worker process is given (:meth:`use_planning`)."""
        return {v: self.planning(v).model_dump(mode="json") for v in dict.fromkeys(["vidplan", *self.variants])}

    def use_planning(self, resolved: dict[str, dict[str, Any]]) -> None:
        """Plan with configurations resolved elsewhere (:meth:`resolved_planning` of the run's parent process)
        instead of reading the YAML again."""
        from vidplan_core.planning.config import PlanningConfig

        self._planning = {v: PlanningConfig.model_validate(d) for v, d in resolved.items()}

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
    n = max(cfg.episodes_for(v) for v in cfg.variants)
    out = []
    for i in range(n):
        for kind in cfg.tasks:
            for clutter in cfg.clutter:
                seed = cfg.seed + i
                task = sample_task(np.random.default_rng([seed, 11]), colours, shapes, kinds=(kind,))
                out.append(EpisodeSpec(seed=seed, clutter=clutter, kind=kind, instruction=task.instruction, index=i))
    return out
