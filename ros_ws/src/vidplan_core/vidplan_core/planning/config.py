"""THE planner configuration: one typed model + one YAML file with documented defaults.

Read by the planner node (``planner_config`` parameter; node parameters are overrides of it), ``vidplan eval sim``
(``--planner-config`` / ``--set KEY=VALUE``; evaluation variants are named overrides of it) and ``vidplan eval-bag``
(shadow planner). The defaults live in ``planning/planner.yaml`` next to this module — that file is the one place to
read what the shipped planner does.

Overrides use dotted keys into the model, e.g. ``session.gradopt.score.kappa=0`` or ``open_loop_steps=3``; a key
that does not exist is a :class:`PlanningConfigError` naming it (never silently ignored).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from vidplan_core.config import ConfigError
from vidplan_core.planning.session import SessionConfig
from vidplan_core.safety import SafetyLimits

__all__ = ["DEFAULT_PLANNER_YAML", "PlanningConfig", "PlanningConfigError", "apply_overrides",
           "load_planning_config", "parse_override"]

DEFAULT_PLANNER_YAML = Path(__file__).with_name("planner.yaml")


class PlanningConfigError(ConfigError):
    """A planner configuration file or override is invalid (the message names the file / key and the reason).
    A :class:`~vidplan_core.config.ConfigError`, so command-line tools exit 2 on it."""

    def __init__(self, message: str):
        ValueError.__init__(self, message)
        self.source, self.problems = "", []


class PlanningConfig(BaseModel):
    """Everything that decides what the planner does besides the models (see ``planner.yaml`` for the defaults).

    Attributes:
        session: proposals, planner (gradopt | cem) and their parameters, seam blending.
        limits: the executor's safety limits. Proposals and refinement stay inside them (workspace box, joint
            velocity fraction), so a plan is never rejected for a limit the planner knew; the executor is started
            with the same values.
        open_loop_steps: chunk steps (model rate) executed before the next plan.
        flow_steps: K of the flow map (0 = the model's default).
        episode_steps: control steps (15 Hz) an episode may take in simulation (demo, eval sim).
    """

    model_config = ConfigDict(extra="forbid")
    session: SessionConfig = Field(default_factory=SessionConfig)
    limits: SafetyLimits = Field(default_factory=SafetyLimits)
    open_loop_steps: int = Field(2, ge=1)
    flow_steps: int = Field(1, ge=0)
    episode_steps: int = Field(225, gt=0)

    @model_validator(mode="after")
    def _one_source_of_limits(self) -> PlanningConfig:
        # session.limits is a copy of `limits` (bounded()); a different one given by hand would be silently replaced
        if "limits" in self.session.model_fields_set and self.session.limits != self.limits:
            raise ValueError("session.limits is copied from the top-level limits; set limits instead")
        return self

    def bounded(self) -> PlanningConfig:
        """A copy whose planner position limits equal the executor's workspace box (one source of limits)."""
        c = self.model_copy(deep=True)
        for p in (c.session.gradopt, c.session.cem):
            p.position_min = tuple(c.limits.workspace_min)
            p.position_max = tuple(c.limits.workspace_max)
        c.session.proposals.workspace_min = list(c.limits.workspace_min)
        c.session.proposals.workspace_max = list(c.limits.workspace_max)
        c.session.proposals.joint_velocity_scale = c.limits.joint_velocity_scale
        c.session.proposals.joint_margin_rad = c.limits.joint_position_margin_rad
        c.session.limits = c.limits.model_copy(deep=True)
        return c


def parse_override(text: str) -> tuple[str, Any]:
    """``"a.b.c=VALUE"`` → (``"a.b.c"``, VALUE parsed as YAML: numbers, booleans, lists, strings)."""
    if "=" not in text:
        raise PlanningConfigError(f"override {text!r} must look like KEY=VALUE (e.g. session.gradopt.refine_iters=0)")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise PlanningConfigError(f"override {text!r}: value is not valid YAML ({exc})") from exc
    return key.strip(), value


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any], source: str = "override") -> dict[str, Any]:
    """Dotted-key overrides on a config dict (a copy); a key not in :class:`PlanningConfig` raises naming it."""
    out = copy.deepcopy(data)
    for key, value in overrides.items():
        parts = key.split(".")
        model: Any = PlanningConfig
        node = out
        for i, part in enumerate(parts):
            fields = getattr(model, "model_fields", None)
            if fields is None or part not in fields:
                where = ".".join(parts[:i]) or "the top level"
                known = sorted(fields) if fields else []
                raise PlanningConfigError(f"{source}: unknown planner setting {key!r} ({part!r} is not a key of "
                                          f"{where}; known: {known})")
            if i == len(parts) - 1:
                node[part] = value
            else:
                node = node.setdefault(part, {})
                if not isinstance(node, dict):
                    raise PlanningConfigError(f"{source}: {'.'.join(parts[:i + 1])} is not a section")
                model = fields[part].annotation
    return out


def load_planning_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> PlanningConfig:
    """Read a planner YAML (default :data:`DEFAULT_PLANNER_YAML`), apply dotted-key overrides, validate, and bound
    the planner by the safety limits (:meth:`PlanningConfig.bounded`).

    Raises:
        PlanningConfigError: unreadable file, unknown key or invalid value (file and key named).
    """
    p = Path(path) if path else DEFAULT_PLANNER_YAML
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise PlanningConfigError(f"cannot read planner config {p}: {exc}") from exc
    if not isinstance(data, dict):
        raise PlanningConfigError(f"planner config {p}: expected a mapping at the top level")
    data = apply_overrides(data, overrides or {}, source=str(p))
    try:
        cfg = PlanningConfig.model_validate(data)
    except ValidationError as exc:
        errs = "; ".join(f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise PlanningConfigError(f"planner config {p}: {errs}") from exc
    return cfg.bounded()
