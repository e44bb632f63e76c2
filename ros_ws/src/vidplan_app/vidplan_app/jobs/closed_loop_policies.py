"""What the closed-loop evaluation plans or acts with: the scripted nominal policy, random-direction proposals,
the evaluation's planning session, and the models and sessions each variant loads."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from vidplan_app.jobs.closed_loop_config import ClosedLoopConfig, ClosedLoopError
from vidplan_core.execution import IKOptions
from vidplan_core.planning.nominal import BCNominalPolicy, NominalObservation
from vidplan_core.planning.planner import PlanResult
from vidplan_core.planning.proposals import ProposalSet, random_direction_proposals
from vidplan_core.planning.session import PlanningSession
from vidplan_core.runtime import loader
from vidplan_core.runtime.base import BackendError, PlanningContext, RolloutOutput, check_actions
from vidplan_core.spaces import (
    MODEL_RATE_HZ,
    EEChunk,
    model_stride,
    wrap_angle,
)
from vidplan_sim.oracle import OracleBackend
from vidplan_sim.predicted_state import PredictedStateBackend
from vidplan_sim.privileged import PrivilegedReward

__all__ = [
    "BlindPlanner",
    "EvalSession",
    "LoadedModels",
    "ScriptedNominalPolicy",
    "StaticWorldBackend",
    "load_backends",
    "make_session",
]


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


class BlindPlanner:
    """The ``blind`` variant's planner: one of the proposals uniformly at random, no model, no score (a chance
    baseline: with :class:`EvalSession`'s random directions it says what the learned scoring adds over moving at
    random with the product's gripper rule). Seeded by the cycle's seed; the target is never estimated."""

    target_estimate = None

    def plan(self, ctx: Any, props: ProposalSet) -> PlanResult:
        """``props`` (N candidates) → the chosen chunk at the model rate (5 Hz), index drawn from ``ctx.seed``."""
        idx = int(np.random.default_rng([int(ctx.seed), 11]).integers(len(props)))
        return PlanResult(chunk=EEChunk.from_actions(props.actions[idx], dt=1.0 / MODEL_RATE_HZ), chosen_index=idx,
                          chosen_label=props.labels[idx])

    def target_reference(self, instruction: str) -> None:
        return None

    def reset_target(self) -> None:
        pass


class StaticWorldBackend:
    """The ``static-world`` diagnostic: the bundle's backend with a world model that ignores its actions.

    Every candidate is given the learned prediction for holding still (the current pose repeated over the
    horizon): its predicted frames, UQ, value and semantic score and maps. The learned terms of the score are then
    equal across candidates, and only what the planner computes from the candidate's own actions — the
    kinematic TCP's distance to the target located on the observed frames, the push and put rules — can tell
    them apart. Its success against ``argmax`` (the same planner, refinement off, the world model in) is what
    the world model's action-dependence buys in closed loop. Refinement has no gradient here (J = 0).

    Args:
        learned: the bundle's backend (any :class:`~vidplan_core.runtime.base.Backend`); its other attributes
            (views, camera geometry, frame scorer, ``decode``) are passed through.
    """

    def __init__(self, learned: Any):
        self.learned = learned
        self.name = f"static-world({learned.name})"
        self.horizon, self.normalizer = learned.horizon, learned.normalizer
        self._hold: np.ndarray | None = None  # (1, H, 7) this cycle's hold
        self._out: RolloutOutput | None = None  # the hold's rollout, once per cycle

    def __getattr__(self, key: str) -> Any:  # only for attributes not set above
        return getattr(self.__dict__["learned"], key)

    def set_context(self, ctx: PlanningContext) -> float:
        self._hold = np.repeat(ctx.current_pose[None, None], self.horizon, axis=1).astype(np.float32)
        self._out = None
        return self.learned.set_context(ctx)

    def rollout(self, actions: np.ndarray) -> RolloutOutput:
        """(N, H, 7) raw EE poses → the hold's :class:`RolloutOutput`, repeated N times."""
        n = len(check_actions(actions, self.horizon))
        if self._hold is None:
            raise BackendError("static-world: rollout before set_context")
        fresh = self._out is None
        if fresh:
            self._out = self.learned.rollout(self._hold)
        o = self._out
        rep = {k: np.repeat(v, n, axis=0) for k, v in o.arrays().items()}
        # the hold's cost is paid once per cycle: a cached call reports zero, so plan timings are not over-counted
        return RolloutOutput(**rep, latents=None if o.latents is None else np.repeat(o.latents, n, axis=0),
                             timings=dict(o.timings) if fresh else dict.fromkeys(o.timings, 0.0))

    def value_and_grad(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """J = 0 and dJ/da = 0 for every candidate: nothing the actions change is modelled."""
        a = check_actions(actions, self.horizon)
        return np.zeros(len(a), np.float32), np.zeros_like(a)


class EvalSession(PlanningSession):
    """:class:`PlanningSession` with the evaluation's random-direction baseline (the planner and the blending are
    unchanged). The nominal variants need no mode of their own: their proposal set is configuration
    (:data:`~vidplan_app.jobs.closed_loop_config.VARIANT_OVERRIDES`), built by the product's
    :meth:`PlanningSession.proposals`.

    Args:
        mode: ``"basis"`` (the session's own proposals) or ``"random"`` (:func:`random_direction_proposals`, as many
            as ``basis`` would give).
    """

    def __init__(self, *args: Any, mode: Literal["basis", "random"] = "basis", **kw: Any):
        super().__init__(*args, **kw)
        self.mode = mode

    def proposals(self, q: np.ndarray, current_pose: np.ndarray, instruction: str = "",
                  images: dict[str, np.ndarray] | None = None, seed: int = 0,
                  frames: np.ndarray | None = None) -> ProposalSet:
        if self.mode == "random":
            pc = self.config.proposals
            pose = np.asarray(current_pose, np.float64)
            # the product's gripper rule (contact_closed: closed, no toggle, one candidate fewer), so that the
            # baseline differs from the product in the directions and their selection only
            contact = self.closed_contact(instruction)
            n = self.num_candidates - int(contact and pc.gripper_toggle)
            return random_direction_proposals(self.kin, q, self.horizon, n, pc.basis_speed_mps,
                                              np.random.default_rng([seed, 5]),
                                              1.0 if contact else round(float(pose[6])), pose[3:6],
                                              velocity_scale=pc.joint_velocity_scale * pc.velocity_margin,
                                              workspace_min=pc.workspace_min, workspace_max=pc.workspace_max,
                                              joint_margin=pc.joint_margin_rad, toggle=not contact)
        return super().proposals(q, current_pose, instruction, images, seed, frames)


# ------------------------------------------------------------------------------------------------------ models
@dataclass
class LoadedModels:
    backends: dict[str, Any]  # "default" and (torch) "no-uq" → Backend
    views: Any  # the model's ViewPreparation (view size, workspace crops)
    warnings: list[str]
    policy: Any = None  # the bundle's BCNominalPolicy (bc variants only)


def load_backends(cfg: ClosedLoopConfig, need_no_uq: bool, need_policy: bool = False) -> LoadedModels:
    """The bundle's backend(s) for the learned variants, through the one model-directory loader (the planner
    node's: :func:`vidplan_core.runtime.loader.load_planner_backend`). A bad directory, or an index naming a part
    that is not there, is a ClosedLoopError before any episode runs."""
    from vidplan_core.runtime.graphs import ObjectiveConfig

    base = cfg.planning("vidplan")
    flow_steps = base.flow_steps or 1
    kappa = base.session.gradopt.score.kappa
    d = Path(cfg.model)
    if cfg.backend == "torch" and cfg.device == "tensorrt":
        raise ClosedLoopError("device 'tensorrt' is an onnxruntime provider; use --backend onnxruntime")
    try:
        lb = loader.load_planner_backend(d, cfg.backend, device=cfg.device, flow_steps=flow_steps, threads=cfg.threads,
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

            policy = BCNominalPolicy.from_bundle(d, lb.models)
        return LoadedModels(backends, lb.views, warnings, policy)
    except (BackendError, FileNotFoundError, OSError, KeyError) as exc:
        raise ClosedLoopError(f"cannot load the {cfg.backend} models from {d}: {exc}") from exc


def make_session(variant: str, cfg: ClosedLoopConfig, loaded: LoadedModels | None, kin: Any, nominal: Any,
                  env: Any) -> EvalSession:
    """The planning session of ``variant``: its resolved planner configuration around the variant's backend."""
    pcfg = cfg.planning(variant)
    sc = pcfg.session
    mode = "random" if variant in ("random", "blind") else "basis"
    if variant in ("scripted+vidplan", "bc+vidplan"):
        sc.proposals.nominal_sigma = list(cfg.nominal_sigma)
    else:
        sc.proposals.num_nominal = 0  # perturbations around a nominal only where there is one
    if variant.startswith("oracle+"):
        learned = None if variant == "oracle+privileged" else loaded.backends["default"]
        backend = OracleBackend(env, kin, limits=pcfg.limits, ik=IKOptions(),
                                reward=PrivilegedReward() if learned is None else None, learned=learned,
                                views=loaded.views if learned is not None else None,
                                score_pixels=variant == "oracle+learned-pixels")
    elif variant == "learned+privileged":
        backend = PredictedStateBackend(loaded.backends["default"], env, PrivilegedReward())
    elif variant == "static-world":
        backend = StaticWorldBackend(loaded.backends["default"])
    else:
        backend = loaded.backends["no-uq" if variant == "no-uq" else "default"]
    session = EvalSession(backend, kin, sc, nominal=nominal, mode=mode)
    if variant == "blind":  # the model's horizon and history length only; nothing is rolled out or scored
        session.planner = BlindPlanner()
    return session
