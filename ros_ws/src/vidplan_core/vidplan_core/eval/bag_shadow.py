"""The shadow planner of ``vidplan eval-bag``: the bundle's planner, run on the recorded observations (it
commands nothing), with its semantic scorer and instruction embedding."""

from __future__ import annotations

from typing import Any

from vidplan_core.config import validate_model
from vidplan_core.eval.bag_bundle import Bundle, safetensor_errors, unreadable_model_file
from vidplan_core.eval.bag_config import MODEL_READ_ERRORS, EvalBagConfig, EvalBagError

__all__ = ["load_conditioner", "load_scorer", "make_shadow_planner", "session_config", "text_embedding"]


def load_scorer(bundle: Bundle, device: str) -> tuple[Any | None, str]:
    """The bundle's semantic scorer, or (None, why not)."""
    if bundle.semantic_dir is None:
        return None, bundle.missing.get("semantic", "no semantic model in the bundle")
    from vidplan_core.models import ModelLoadError
    from vidplan_core.runtime.loader import load_semantic_scorer

    try:
        return load_semantic_scorer(bundle.semantic_dir, device=device), ""  # SigLIP/CLIP or the grounded scorer
    except (ModelLoadError, *MODEL_READ_ERRORS, *safetensor_errors()) as exc:
        bad = unreadable_model_file(bundle.semantic_dir)
        if bad is not None:  # a damaged file is bad input, not a missing optional part
            raise EvalBagError(f"model directory {bundle.path}: semantic model: {bad[0]} is {bad[1]}") from exc
        return None, f"semantic model {bundle.semantic_dir} does not load: {exc}"


def make_shadow_planner(bundle: Bundle, scorer: Any, cfg: EvalBagConfig, device: str, session_cfg: Any
                         ) -> tuple[Any | None, str]:
    """A :class:`~vidplan_core.planning.session.PlanningSession` on the torch backend over the bundle's models
    (shared with the evaluation, not loaded twice: the one model-directory loader,
    :func:`vidplan_core.runtime.loader.load_planner_backend`, is handed them), or (None, why not)."""
    try:
        from vidplan_core.kinematics import PandaKinematics
        from vidplan_core.models.configs import ModelSuite
        from vidplan_core.planning.session import PlanningSession
        from vidplan_core.runtime.bundle import PlannerModels
        from vidplan_core.runtime.loader import load_part, load_planner_backend
    except ImportError as exc:
        return None, f"the planning runtime is not available ({exc})"
    if bundle.uq_head is None or bundle.reward_head is None:
        return None, "the planner needs the UQ and reward heads; the bundle lacks " + ", ".join(
            k for k in ("uq_head", "reward_head") if getattr(bundle, k) is None)
    try:
        # the teacher (world_model) is not used by the planner graphs; the flow map is
        suite = ModelSuite(bundle.autoencoder, None, bundle.flow_map, bundle.uq_head, bundle.reward_head)
        idx = bundle.index
        # what the planner node loads from the same index: its views and, when named, the tiny decoder it scores with
        views = {} if idx is None else {
            "semantic_view": idx.semantic_view if idx.semantic_view is not None else 0,
            "centring_view": idx.centring_view if idx.centring_view is not None else 2,
            "map_views": tuple(idx.map_views) if idx.map_views else None}
        tiny = load_part(idx, "tiny_decoder", device) if idx is not None and "tiny_decoder" in idx.parts else None
        models = PlannerModels(suite, scorer, config_name=idx.config if idx is not None else None,
                               tiny_decoder=tiny, text_conditioner=load_conditioner(bundle, device), **views)
        backend = load_planner_backend(bundle.path, "torch", device=device, flow_steps=cfg.flow_steps,
                                       models=models).backend
        session = PlanningSession(backend, PandaKinematics(), session_cfg)
    except Exception as exc:  # any failure to build the planner only disables shadow mode, with the reason
        return None, f"cannot build the planner from {bundle.path}: {type(exc).__name__}: {exc}"
    return session, ""


def session_config(planner: Any) -> Any:
    """The shadow planner's SessionConfig: from THE planner configuration (None = the shipped planning/planner.yaml,
    or a planner YAML path: :func:`vidplan_core.planning.config.load_planning_config`), a SessionConfig, or a dict
    (a PlanningConfig's or, for older callers, a SessionConfig's keys). Errors are ConfigErrors naming file and key."""
    from vidplan_core.planning.config import PlanningConfig, load_planning_config
    from vidplan_core.planning.session import SessionConfig

    if isinstance(planner, SessionConfig):
        return planner
    if isinstance(planner, dict):
        if set(planner) <= set(PlanningConfig.model_fields):
            return validate_model(PlanningConfig, planner, "planner config").bounded().session
        return validate_model(SessionConfig, planner, "planner config")
    return load_planning_config(planner).session


def load_conditioner(bundle: Bundle, device: str) -> Any:
    """The bundle's ``text_conditioner`` part (the world model's own text input), or None when it has none."""
    from vidplan_core.runtime.loader import load_part

    idx = bundle.index
    return load_part(idx, "text_conditioner", device) if idx is not None and "text_conditioner" in idx.parts else None


def text_embedding(scorer: Any, session: Any, instruction: str, conditioner: Any = None) -> Any:
    """(1, D) instruction embedding the world model conditions on, exactly as the planner's backend computes it
    (``conditioner``: the bundle's text_conditioner, when it has one; else the scorer's embedding)."""
    if session is not None and hasattr(session.backend, "conditioning_embedding"):
        # no silent fallback: the scorer's embedding is not the world model's when the bundle has a text_conditioner
        return session.backend.conditioning_embedding(instruction)
    from vidplan_core.runtime.bundle import PlannerModels

    # the one implementation of the conditioning embedding (tokenised with the scorer, encoded by the conditioner)
    return PlannerModels(None, scorer, text_conditioner=conditioner).conditioning_embedding(instruction)
