"""Algorithm 3 of VidPlan: global argmax over proposals, then local gradient refinement; plus a CEM planner.

Both planners work against the :class:`~vidplan_core.runtime.base.Backend` protocol and return a
:class:`PlanResult` (the chunk as :class:`~vidplan_core.spaces.EEChunk` plus diagnostics). A cycle::

    t=0  set_context(history, instruction)          "encode"
         rollout(all N proposals in one batch)      "rollout", "heads", "semantic" (backend timings)
         hierarchical reward → argmax               "select"
         repeat refine_iters times (GradOpt):       "refinement"
             J, dJ/da = value_and_grad(a)  (re-rollout through flow map + heads)
             Adam step on the normalised actions (ascent), project into the trust region and the limits

Anytime: with ``time_budget_s`` set, refinement stops before an iteration that would overrun the budget; the best
plan so far is returned with ``budget_exhausted=True``. Safety: any exception or NaN/Inf in a backend output gives
a *hold* result (current pose repeated) with the reason, never a partial or non-finite plan.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from vidplan_core.planning.goal import instruction_direction
from vidplan_core.planning.proposals import ProposalSet
from vidplan_core.planning.put_phase import PutPhase
from vidplan_core.planning.scoring import (
    ScoreConfig,
    TargetMemory,
    grasp_gripper,
    locate_on_table,
    locate_target,
    score_rollout,
    score_terms,
    wrist_locate,
)
from vidplan_core.runtime.base import Backend, PlanningContext
from vidplan_core.spaces import MODEL_RATE_HZ, EEChunk, wrap_angle

__all__ = ["CEMConfig", "CEMPlanner", "GradientPlanner", "PlanResult", "PlannerConfig"]


class PlannerConfig(BaseModel):
    """Algorithm 3 parameters. Position limits are in the base frame [m]; the trust region is an L∞ radius in
    normalised action units around the argmax candidate, capped per dimension at ``trust_region_m`` [m] and
    ``trust_region_rad`` [rad]."""

    model_config = ConfigDict(extra="forbid")
    score: ScoreConfig = Field(default_factory=ScoreConfig)
    refine_iters: int = Field(5, ge=0, description="most gradient refinement iterations per cycle (0 = argmax only)")
    refine_tol: float = Field(0.0, ge=0, description="refinement stops early once an iteration raises the best "
                              "objective J by less than this (J units; 0 = always run refine_iters)")
    lr: float = Field(0.05, gt=0, description="Adam step size (normalised action units)")
    trust_region: float = Field(0.25, gt=0)
    trust_region_m: float | None = Field(0.03, gt=0, description="cap of the trust region on each position "
                                         "coordinate [m] (None: normalised radius only)")
    trust_region_rad: float | None = Field(0.15, gt=0, description="cap of the trust region on each Euler angle "
                                           "[rad] (None: normalised radius only)")
    # The executor's workspace box (SafetyLimits defaults; PlanningConfig.bounded() sets them from its limits).
    position_min: tuple[float, float, float] = (0.20, -0.45, 0.02)
    position_max: tuple[float, float, float] = (0.80, 0.45, 0.70)
    time_budget_s: float | None = Field(None, gt=0)
    refine_gripper: bool = False
    min_grad: float = Field(1e-3, ge=0, description="refinement is skipped (result.refine_skipped) when the largest "
                            "|dJ/da| in normalised units is below this: Adam would rescale a ~0 gradient into "
                            "trust-region-sized noise steps")
    noise_samples: int = Field(1, ge=1, description="M: score every candidate as the mean over M flow-map noise "
                               "draws (seeds seed, seed+1, ...; shared by all candidates); cost ×M on the global stage")
    stop_at_best_frame: bool = Field(True, description="cut the chosen chunk at its best-scoring frame (later steps "
                                     "hold that pose): the score is a max over frames, so the steps after the best "
                                     "frame were never asked for")
    survival_check: bool = Field(False, description="one extra global rollout with a re-drawn noise seed, to report "
                                 "whether the winner survives it (result.winner_survival); diagnostics, costs ×2")
    nominal_margin: float = Field(0.0, ge=0, description="keep the candidate labelled 'nominal' (a nominal policy's "
                                  "own chunk) unless the best candidate's score beats it by more than this (score "
                                  "units; 0 = plain argmax, the paper's rule): a world model that cannot tell the "
                                  "candidates apart then does not trade a policy's chunk for a perturbation of it")


class CEMConfig(PlannerConfig):
    """CEM parameters (forward passes only)."""

    iterations: int = Field(3, ge=1)
    population: int = Field(16, ge=2)
    elites: int = Field(4, ge=1)
    init_std: float = Field(0.1, gt=0, description="initial std in normalised action units")
    min_std: float = Field(0.01, gt=0)
    seed: int = 0


@dataclass
class PlanResult:
    """Output of one planning cycle.

    Attributes:
        chunk: H EE poses to execute (the current pose repeated on hold); ``chunk.uncertainty``/``value`` are the
            chosen candidate's per-step h̄ and expected value from the global rollout.
        status: "ok", "budget" (time budget hit, best plan so far) or "hold".
        reason: why (empty when ok).
        chosen_index: index of the argmax proposal (−1 on hold before selection).
        chosen_label: its label.
        scores: (N,) hierarchical reward of every proposal.
        uncertainty: (N,) mean h̄ of every proposal.
        values: (N,) mean expected value of every proposal.
        objective_trace: refinement objective J at each evaluated iterate (first = argmax candidate).
        timings: seconds per stage ("encode", "rollout", "heads", "semantic", "select", "refinement", "total").
        refine_skipped: refinement was skipped because the value gradient was uninformative (see ``reason``).
        winner_survival: fraction of the noise draws (M > 1, or the survival check's re-drawn seed) whose own argmax
            is the chosen candidate; None when not measured.
        fallback: "" or what replaced a chunk the executor would have rejected ("proposal": the chosen candidate
            unrefined; "hold"), set by :class:`~vidplan_core.planning.session.PlanningSession`.
        terms: why each proposal scored as it did: the terms of its reward at its best frame
            (:meth:`~vidplan_core.planning.scoring.ScoreTerms.at`: ``frame``, ``r_s``, ``h_bar``, ``dist``,
            ``progress``; lists of N, the first noise draw's); empty before selection.
    """

    chunk: EEChunk
    status: Literal["ok", "budget", "hold"] = "ok"
    reason: str = ""
    chosen_index: int = -1
    chosen_label: str = ""
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0))
    uncertainty: np.ndarray = field(default_factory=lambda: np.zeros(0))
    values: np.ndarray = field(default_factory=lambda: np.zeros(0))
    objective_trace: list[float] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    refine_skipped: bool = False
    winner_survival: float | None = None
    fallback: str = ""
    terms: dict[str, list] = field(default_factory=dict)

    @property
    def hold(self) -> bool:
        return self.status == "hold"

    @property
    def budget_exhausted(self) -> bool:
        return self.status == "budget"


class _HoldError(Exception):
    pass


class _BasePlanner:
    def __init__(self, backend: Backend, config: PlannerConfig | None = None):
        if not isinstance(backend, Backend):
            raise TypeError(f"{type(backend).__name__} does not implement the Backend protocol "
                            "(name, horizon, normalizer, set_context, rollout, value_and_grad)")
        self.backend = backend
        self.config = config or PlannerConfig()
        self.horizon = backend.horizon
        # the views of the semantic map (None: a backend without views, e.g. the oracle's privileged reward) and
        # the camera geometry the gripper-referenced centring term projects the TCP with
        self._map_views: tuple[int, ...] | None = getattr(backend, "map_views", None) or (
            (backend.centring_view,) if getattr(backend, "centring_view", None) is not None else None)
        self._geometry: Any = None
        self._goal_dir: np.ndarray | None = None  # set per cycle from the instruction
        self._put = PutPhase()  # a put's phase this cycle (approach, carry, let go; score.carry_height_m)
        self._fused: np.ndarray | None = None  # the exterior fusion's point the hand camera replaced this cycle
        # object permanence across cycles (score.target_gate): where each map view last put the target, per
        # instruction; this cycle's target, used by every scoring of the cycle
        self._memory: tuple[str, TargetMemory] | None = None
        self._terms: dict[str, list] = {}  # the last selection's ScoreTerms.at, for PlanResult.terms
        self._target: torch.Tensor | None = None
        # score.target_fusion resolved for this backend ('auto': 'table' where an exterior map view has geometry)
        self._fusion = "off" if self.config.score.target_fusion == "auto" else self.config.score.target_fusion
        centring = self.config.score.centring
        if centring in ("gripper", "auto"):
            from vidplan_core.models.action_maps import ActionMapRenderer

            geo = getattr(backend, "view_geometry", None)
            self._geometry = (ActionMapRenderer(geo) if geo is not None and self._map_views is not None
                              else None)  # built once, used every cycle
            # lam = 0 switches the centring term off (the privileged variants' scores): no geometry needed then
            if centring == "gripper" and self.config.score.lam > 0 and self._geometry is None:
                raise ValueError("score.centring 'gripper' needs a backend with semantic-map views and camera "
                                 f"geometry; {type(backend).__name__} has none")
            exterior = self._geometry is not None and not all(self._geometry.on_hand[v] for v in self._map_views)
            if self.config.score.target_fusion == "auto":
                self._fusion = "table" if exterior else "off"
            if self.config.score.target_fusion == "table" and self._geometry is not None and not exterior:
                raise ValueError("score.target_fusion 'table' needs an exterior (fixed) camera among the semantic "
                                 f"map views; {type(backend).__name__} maps only hand-camera views "
                                 f"{list(self._map_views)} (set it to 'off')")
        norm = backend.normalizer
        self._scale = np.asarray(norm.scale, np.float64)
        self._ref = np.zeros((self.horizon, 7))
        lo = np.array([*self.config.position_min, 0, 0, 0, 0.0])
        hi = np.array([*self.config.position_max, 0, 0, 0, 1.0])
        # Limits in normalised units (rotation dims unbounded: they wrap).
        self._lo_n = torch.as_tensor(norm.normalize(lo[None])[0])
        self._hi_n = torch.as_tensor(norm.normalize(hi[None])[0])
        self._lo_n[3:6], self._hi_n[3:6] = -torch.inf, torch.inf
        # Trust region per action dimension in normalised units, capped in metres / radians: one normalised unit
        # is half the p01–p99 range, which for a roll that wraps at ±π is ≈ 3 rad, so 0.25 alone let refinement
        # turn the wrist by 0.75 rad per 0.2 s step (the executor then rejects the chunk for joint velocity).
        tr = np.full(7, self.config.trust_region)
        half = np.maximum(self._scale / 2, 1e-9)
        if self.config.trust_region_m is not None:
            tr[:3] = np.minimum(tr[:3], self.config.trust_region_m / half[:3])
        if self.config.trust_region_rad is not None:
            tr[3:6] = np.minimum(tr[3:6], self.config.trust_region_rad / half[3:6])
        self._trust = torch.as_tensor(tr)

    # -- helpers ------------------------------------------------------------------------------------------------
    def _normalize(self, actions: np.ndarray) -> np.ndarray:
        return np.asarray(self.backend.normalizer.normalize(np.asarray(actions, np.float64)), np.float64)

    def _denormalize(self, actions_n: np.ndarray, like: np.ndarray) -> np.ndarray:
        a = np.asarray(self.backend.normalizer.denormalize(np.asarray(actions_n, np.float64)))
        a[..., 3:6] = wrap_angle(a[..., 3:6], like[..., 3:6])  # keep angles next to the proposal's (no 2π jumps)
        return a

    def _project(self, x: torch.Tensor) -> torch.Tensor:
        return torch.maximum(torch.minimum(x, self._hi_n.to(x)), self._lo_n.to(x))

    def _hold(self, ctx: PlanningContext, reason: str, timings: dict[str, float], **kw) -> PlanResult:
        pose = ctx.current_pose
        chunk = EEChunk.from_actions(np.repeat(pose[None], self.horizon, 0), dt=1.0 / MODEL_RATE_HZ)
        return PlanResult(chunk=chunk, status="hold", reason=reason, timings=timings, **kw)

    @staticmethod
    def _proposals(proposals: ProposalSet | np.ndarray) -> ProposalSet:
        if isinstance(proposals, ProposalSet):
            return proposals
        a = np.asarray(proposals, np.float64)
        return ProposalSet(a, [f"p{i}" for i in range(len(a))])

    def _global(self, ctx: PlanningContext, props: ProposalSet, timings: dict[str, float]):
        """Encode, roll out all proposals in one batch, score: returns (out, scores, per_frame)."""
        if props.actions.shape[1] != self.horizon:
            raise ValueError(f"proposals have horizon {props.actions.shape[1]}, the backend expects {self.horizon}")
        if not np.isfinite(props.actions).all():
            raise _HoldError("proposals contain NaN/Inf")
        cfg = self.config
        # the motion the instruction asks for ("push … to the left"), scored by the push-progress term where the
        # backend has the camera geometry to project it (as 'auto' centring, off for the privileged rewards)
        self._goal_dir = (instruction_direction(ctx.instruction)
                          if (cfg.score.direction_weight > 0 or cfg.score.push_displacement_weight > 0)
                          and self._geometry is not None else None)
        # a put's carry phase: the hand closed on the object, so the destination is what the frames are scored
        # against and located (score.carry_height_m); the world model stays conditioned on the instruction
        put = self._put
        put.update(ctx, cfg.score, self._fusion == "table" and self._geometry is not None,
                   self._memory[0] if self._memory is not None else None)
        if put.carry is not None:
            ctx = replace(ctx, target_text=put.carry)
        seeds = [ctx.seed + m for m in range(cfg.noise_samples)]
        if cfg.survival_check and cfg.noise_samples == 1:
            seeds.append(ctx.seed + 7919)  # re-drawn seed, for the survival diagnostic only
        draws, first = [], None
        for m, seed in enumerate(seeds):
            t = time.perf_counter()
            self.backend.set_context(ctx if seed == ctx.seed else replace(ctx, seed=seed))
            timings["encode"] = timings.get("encode", 0.0) + time.perf_counter() - t
            out = self.backend.rollout(props.actions.astype(np.float32))
            for k in ("rollout", "heads", "semantic"):
                timings[k] = timings.get(k, 0.0) + out.timings.get(k, 0.0)
            bad = out.non_finite()
            if bad:
                raise _HoldError(f"non-finite backend output: {', '.join(bad)}")
            t = time.perf_counter()
            with torch.no_grad():
                if m == 0:
                    self._target = self._locate(ctx.scoring_text, out, ctx.current_pose[:3], ctx)
                terms = score_terms(out, cfg.score, self._map_views, props.actions, self._geometry, self._goal_dir,
                                    self._target, self._target_point(), self._keepout(), self._drop(),
                                    put.let_go, self._grasp(), self._approach(), put.tcp, self._relook(),
                                    self._push_point())
                per_frame = terms.reward(cfg.score)
                scores = per_frame.amax(dim=1)
                if m == 0:
                    self._terms = terms.at(per_frame.argmax(dim=1))
            timings["select"] = timings.get("select", 0.0) + time.perf_counter() - t
            if not torch.isfinite(scores).all():
                raise _HoldError("non-finite candidate scores")
            draws.append((scores.numpy(), per_frame.numpy()))
            if m == 0:
                first = out
        if len(seeds) > cfg.noise_samples:  # the survival check's draw is reported, not averaged in
            self._survival_draws = [d[0] for d in draws[cfg.noise_samples:]]  # the re-drawn seed alone: 0 or 1
            draws = draws[: cfg.noise_samples]
        else:
            self._survival_draws = [d[0] for d in draws] if len(draws) > 1 else []
        # The refinement starts from the first draw's context (seed = ctx.seed), as without averaging.
        if len(seeds) > 1:
            self.backend.set_context(ctx)
        scores = np.mean([d[0] for d in draws], axis=0)
        per_frame = np.mean([d[1] for d in draws], axis=0)
        return first, scores, per_frame

    def _grasp(self) -> np.ndarray | None:
        """(3,) [m] the located object while a put approaches it with the gripper open and its grasp zone applies
        (score.grasp_radius_m, :meth:`PutPhase.grasp_allowed`; with score.close_radius_m only while the TCP is in the
        zone), else None."""
        sc = self.config.score
        point = self._approach()
        if point is None or self._relook() or not self._put.grasp_allowed(sc.grasp_radius_m):
            return None
        if sc.close_radius_m > 0 and not bool(grasp_gripper(torch.as_tensor(self._put.tcp), point, sc)):
            return None  # the hand is not in the zone yet: the way down into it is free
        return point

    def _relook(self) -> bool:
        """score.relook_after_empty: a put's approach after an empty grasp, before the hand went back up."""
        return self._approaching() and self._put.relook

    def _approaching(self) -> bool:
        """Whether this cycle is a put's approach: the gripper open (not carrying, not letting go)."""
        put = self._put
        return put.put and put.carry is None and not put.let_go and put.tcp is not None

    def _approach(self) -> np.ndarray | None:
        """(3,) [m] the located object while a put approaches it with the gripper open (not carrying, not letting
        go), else None."""
        return self._memory[1].point if self._memory is not None and self._approaching() else None

    def _wrist_refiner(self, ctx: PlanningContext):
        """score.wrist_refine_m: fused point (3,) [m] → where the hand camera's current frame puts the object (3,)
        [m], or None (the rule is off, the backend has no frame scorer or no hand camera, the TCP is farther than
        wrist_refine_m from the point, or no cell of the map near the point sees the table; below score.wrist_freeze_m
        the point it found last with this memory). Records the fused point it replaced in ``self._fused`` for traces
        and the hand camera's point in the memory (``TargetMemory.wrist``)."""
        sc = self.config.score
        scorer = getattr(self.backend, "frame_scorer", None)
        hand = [v for v, on in enumerate(self._geometry.on_hand) if on] if self._geometry is not None else []
        if sc.wrist_refine_m <= 0 or scorer is None or not hand:
            return None
        pose = np.asarray(ctx.current_pose, np.float64)
        mem = self._memory[1] if self._memory is not None else None

        def refine(point: np.ndarray) -> np.ndarray | None:
            if np.linalg.norm(pose[:2] - point[:2]) > sc.wrist_refine_m:
                return None
            if (sc.wrist_freeze_m > 0 and pose[2] - sc.table_height_m < sc.wrist_freeze_m and mem is not None
                    and mem.wrist is not None):
                q = mem.wrist.copy()  # at the object's height the fingers hide it: the point seen from above
            else:
                logits = scorer.map(ctx.history_frames[-1, hand[0]], ctx.scoring_text)
                q = wrist_locate(logits, self._geometry, hand[0], pose, point, sc)
            if q is not None:
                self._fused = np.asarray(point, np.float64).copy()
                if mem is not None:
                    mem.wrist = np.asarray(q, np.float64).copy()
            return q

        return refine

    def _observed_maps(self, ctx: PlanningContext) -> list[torch.Tensor | None] | None:
        """score.approach_observed / score.locate_observed: per map view, the scorer's (gh, gw) logits of its current
        observed frame for the exterior views (None for hand views), or None (both rules are off, or the backend has
        no frame scorer). Which phases read them: :meth:`_locate`."""
        scorer = getattr(self.backend, "frame_scorer", None)
        sc = self.config.score
        if not (sc.approach_observed or sc.locate_observed) or scorer is None or self._geometry is None:
            return None
        return [None if self._geometry.on_hand[v] else scorer.map(ctx.history_frames[-1, v], ctx.scoring_text)
                for v in self.map_views]

    def _drop(self) -> np.ndarray | None:
        """(3,) [m] the point over the destination this cycle's carry releases at, or None (no carry phase)."""
        mem = self._memory[1] if self._memory is not None and self._put.carry is not None else None
        return None if mem is None or mem.drop is None else mem.drop

    def _locate(self, instruction: str, out, tcp: np.ndarray | None = None,
                ctx: PlanningContext | None = None) -> torch.Tensor | None:
        """This cycle's centring target per map view with the memory of earlier cycles (score.target_fusion
        'table' or score.target_gate > 0, and camera geometry), else None (each scoring takes its own most confident
        centroid). ``instruction``: the text scored (the memory is kept per text: a put's destination while it
        carries, :class:`PutPhase`); ``ctx``: the cycle's context, whose last frame the hand camera's refinement of
        a put's approach reads (score.wrist_refine_m)."""
        sc = self.config.score
        self._fused = None
        if (self._fusion == "off" and sc.target_gate <= 0) or self._geometry is None or self._map_views is None:
            return None
        mem = self._memory
        if mem is None or mem[0] != instruction:  # a new task, or a new phase of a put: forget the old target
            # a put's hand that lost its object (let go of an emptied grasp) searches near where it lost it first
            seed = self._put.take_lost_at() if instruction != self._put.carry else None
            mem = self._memory = (instruction, TargetMemory(point=seed))
        if self._fusion == "table":
            region = ((self.config.position_min[0], self.config.position_max[0]),
                      (self.config.position_min[1], self.config.position_max[1]))
            carry = self._put.carry is not None
            direction = instruction_direction(instruction) if sc.push_standoff_m > 0 and not carry else None
            approach = self._approaching()
            # the observed frames: a put's approach (approach_observed), or touch and push (locate_observed)
            observe = ctx is not None and ((approach and sc.approach_observed)
                                           or (not self._put.put and sc.locate_observed))
            return locate_on_table(out, sc, self._map_views, self._geometry, region, mem[1], tcp, direction, carry,
                                   carry and self._put.settle, approach,
                                   self._wrist_refiner(ctx) if approach and ctx is not None else None,
                                   self._observed_maps(ctx) if observe else None,
                                   self._relook())
        return locate_target(out, sc, self._map_views, mem[1])

    def _target_point(self) -> np.ndarray | None:
        """(3,) [m] where this cycle's 'table' fusion put the centring reference (the target, or a push's standoff
        or lead point), or None (no fusion, no cycle yet)."""
        mem = self._memory[1] if self._memory is not None and self._fusion == "table" else None
        return None if mem is None or mem.reference is None else mem.reference

    def _push_point(self) -> np.ndarray | None:
        """(3,) [m] where this cycle's 'table' fusion put the target itself (not a push's standoff or lead point)
        outside a put's carry phase, for score.push_displacement_weight; else None."""
        mem = self._memory[1] if self._memory is not None and self._fusion == "table" else None
        return None if mem is None or mem.point is None or self._put.carry is not None else mem.point

    def _keepout(self) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """((3,) [m], (3,), (3,) [m]) the target's centre, the push's unit motion and the TCP while this cycle's push
        goes round (score.push_keepout_m), else None."""
        mem = self._memory[1] if self._memory is not None and self._fusion == "table" else None
        if mem is None or mem.keepout is None or mem.motion is None or mem.tcp is None:
            return None
        return mem.keepout, mem.motion, mem.tcp

    @property
    def map_views(self) -> tuple[int, ...] | None:
        """The semantic map's views (indices into the camera triplet, stacked in this order along a map's height),
        or None for a backend without views (the oracle's privileged reward)."""
        v = self._map_views
        return None if v is None else ((v,) if isinstance(v, int) else tuple(v))

    @property
    def view_geometry(self) -> Any:
        """The camera geometry the planner projects with (an ``ActionMapRenderer`` over the backend's views), or
        None where the backend has none or ``score.centring`` is 'image'."""
        return self._geometry

    @property
    def target_estimate(self) -> dict[str, Any] | None:
        """Where the 'table' fusion put the target this cycle: ``{"point": [x, y, z] m, "pushing": bool,
        "reference": [x, y, z] m, "carry": str, "let_go": True}`` (reference: where the centring pulls the TCP; carry:
        the destination phrase during a put's carry phase; let_go: a put's closed gripper that holds nothing; both
        absent otherwise), or None (fusion off, or no cycle yet). For traces and debugging."""
        mem = self._memory[1] if self._memory is not None else None
        if mem is None or mem.point is None:
            return None
        est = {"point": [round(float(v), 4) for v in mem.point], "pushing": bool(mem.pushing)}
        if mem.reference is not None:
            est["reference"] = [round(float(v), 4) for v in mem.reference]
        if self._put.carry is not None:  # a put's carry phase: the point is the destination's
            est["carry"] = self._put.carry
        if self._put.let_go:  # a put's closed gripper holds nothing
            est["let_go"] = True
        if self._fused is not None:  # the hand camera placed the point: the exterior views' one
            est["fused"] = [round(float(v), 4) for v in self._fused]
        return est

    def target_reference(self, instruction: str) -> tuple[np.ndarray, bool] | None:
        """Where the last cycle's centring pulled the TCP for ``instruction`` ('table' fusion): ((3,) point [m],
        whether a push is under way), or None (fusion off, no cycle yet, or another instruction)."""
        if self._memory is None or self._memory[0] != instruction or self._memory[1].reference is None:
            return None
        mem = self._memory[1]
        return mem.reference.copy(), bool(mem.pushing)

    def reset_target(self) -> None:
        """Forget where the target was (a new episode with the same instruction, a scene that was rearranged)."""
        self._memory = None
        self._fused = None
        self._put.reset()

    def _select(self, scores: np.ndarray, props: ProposalSet) -> int:
        """Index of the chosen candidate: the argmax, or the nominal when the argmax beats it by no more than
        ``nominal_margin``."""
        idx = int(np.argmax(scores))
        margin = self.config.nominal_margin
        if margin > 0 and "nominal" in props.labels:
            nom = props.labels.index("nominal")
            if float(scores[idx] - scores[nom]) <= margin:
                return nom
        return idx

    def _survival(self, idx: int) -> float | None:
        draws = getattr(self, "_survival_draws", [])
        if not draws:
            return None
        return float(np.mean([int(np.argmax(s)) == idx for s in draws]))

    def _result(self, ctx, props, out, scores, idx, best_n, status, reason, trace, timings, t0) -> PlanResult:
        actions = self._denormalize(best_n, props.actions[idx])
        pf = getattr(self, "_per_frame", None)
        if self.config.stop_at_best_frame and pf is not None and len(pf) == len(props) and best_n is not None:
            # A candidate is scored by its best frame: executing past it is what the score did not ask for (on the
            # oracle rung this alone turned ±x overshoot oscillations into pushes).
            best = int(np.argmax(pf[idx]))
            actions[best + 1:] = actions[best]
        if not np.isfinite(actions).all():
            return self._hold(ctx, "non-finite plan", timings)
        # One source of limits, enforced on what leaves the planner: the executor checks its box exactly, and the
        # winner could sit just outside it — the round trip through the normalised space puts a pose clipped to the
        # floor one ulp below it (z = 0.019999999999999997 < 0.02 for about 4 in 10 normalisers), and a Jacobian
        # proposal moving sideways near the floor drifts a few mm below it. Either had the whole chunk rejected
        # (bench/results/closed_loop_tiny_decoder: 264 rejected chunks in 1259 vidplan cycles, the first one of
        # every such episode at the floor).
        actions[:, :3] = np.clip(actions[:, :3], self.config.position_min, self.config.position_max)
        actions[:, 6] = np.clip(actions[:, 6], 0.0, 1.0)
        timings["total"] = time.perf_counter() - t0
        chunk = EEChunk.from_actions(actions, dt=1.0 / MODEL_RATE_HZ, uncertainty=np.clip(out.h_bar[idx], 0, 1),
                                     value=np.clip(out.value[idx], 0, 1))
        return PlanResult(chunk=chunk, status=status, reason=reason, chosen_index=int(idx),
                          chosen_label=props.labels[idx], scores=scores, uncertainty=out.h_bar.mean(1),
                          values=out.value.mean(1), objective_trace=trace, timings=timings,
                          winner_survival=self._survival(int(idx)), terms=self._terms)


class GradientPlanner(_BasePlanner):
    """Algorithm 3: batched rollout of all proposals, hierarchical-reward argmax, GradOpt refinement.

    Args:
        backend: any :class:`~vidplan_core.runtime.base.Backend`.
        config: :class:`PlannerConfig`.
    """

    def plan(self, ctx: PlanningContext, proposals: ProposalSet | np.ndarray) -> PlanResult:
        """Plan one chunk.

        Args:
            ctx: history frames, history poses and instruction.
            proposals: (N, H, 7) candidate EE chunks (raw units) or a :class:`ProposalSet`.

        Returns:
            :class:`PlanResult` (never raises for backend failures or non-finite outputs: those give a hold).
        """
        t0 = time.perf_counter()
        cfg = self.config
        timings: dict[str, float] = {}
        props = self._proposals(proposals)
        try:
            out, scores, self._per_frame = self._global(ctx, props, timings)
        except _HoldError as exc:
            return self._hold(ctx, str(exc), timings)
        except Exception as exc:  # a failing backend must never leave the arm moving
            return self._hold(ctx, f"backend error during global search: {type(exc).__name__}: {exc}", timings)
        idx = self._select(scores, props)
        self._ref = props.actions[idx]
        x0 = torch.as_tensor(self._normalize(props.actions[idx]))[None]
        best_x, trace, status, reason = x0.clone(), [], "ok", ""
        skipped = False

        def over_budget(next_cost: float) -> bool:
            return cfg.time_budget_s is not None and time.perf_counter() - t0 + next_cost > cfg.time_budget_s

        t_ref = time.perf_counter()
        if cfg.refine_iters > 0:
            # First value_and_grad (one candidate): no measurement yet; forward + backward ≈ 3× a forward of one
            # candidate, bounded by 2× the batched forward of all N candidates.
            est = 2.0 * (timings.get("rollout", 0) + timings.get("heads", 0))
            if over_budget(est):
                status, reason = "budget", "time budget reached before refinement"
            else:
                try:
                    best_x, trace, status, reason = self._refine(x0, t0, est, over_budget)
                    skipped = status == "skipped"
                    if status in ("skipped", "converged"):
                        status = "ok"
                except _HoldError as exc:
                    timings["refinement"] = time.perf_counter() - t_ref
                    return self._hold(ctx, str(exc), timings, chosen_index=idx, scores=scores)
                except Exception as exc:
                    timings["refinement"] = time.perf_counter() - t_ref
                    return self._hold(ctx, f"backend error during refinement: {type(exc).__name__}: {exc}", timings,
                                      chosen_index=idx, scores=scores)
        timings["refinement"] = time.perf_counter() - t_ref
        res = self._result(ctx, props, out, scores, idx, best_x[0].numpy(), status, reason, trace, timings, t0)
        res.refine_skipped = skipped
        return res

    def _refine(self, x0: torch.Tensor, t0: float, est: float, over_budget):
        """GradOpt: Adam ascent on J with trust region and limits; returns (best x, trace, status, reason)."""
        cfg = self.config
        x = x0.clone().requires_grad_(True)
        opt = torch.optim.Adam([x], lr=cfg.lr)
        mask = torch.ones_like(x)
        if not cfg.refine_gripper:
            mask[..., 6] = 0.0
        trace: list[float] = []
        best_x, best_j = x0.clone(), -np.inf
        for it in range(cfg.refine_iters + 1):
            t = time.perf_counter()
            a = self._denormalize(x.detach()[0].numpy(), self._ref)[None]
            j, g = self.backend.value_and_grad(a.astype(np.float32))
            est = time.perf_counter() - t
            # chain rule into the normalised space: a = (x + 1)/2·scale + p01
            j, g = np.asarray(j, np.float64).reshape(-1), np.asarray(g, np.float64) * self._scale / 2
            if not (np.isfinite(j).all() and np.isfinite(g).all()):
                raise _HoldError(f"non-finite refinement objective or gradient at iteration {it}")
            trace.append(float(j[0]))
            gain = float(j[0]) - best_j
            if j[0] > best_j:
                best_j, best_x = float(j[0]), x.detach().clone()
            if it > 0 and cfg.refine_tol > 0 and gain < cfg.refine_tol:
                # the last Adam step bought less than the tolerance: further steps (each a forward + backward of
                # the flow map and heads) are unlikely to pay for themselves
                return best_x, trace, "converged", (f"refinement converged after {it} iterations (gain {gain:.1e} < "
                                                    f"refine_tol {cfg.refine_tol:g})")
            if it == 0 and float(np.max(np.abs(g * mask.numpy().reshape(g.shape)))) < cfg.min_grad:
                return best_x, trace, "skipped", (f"refinement skipped: uninformative value gradient (max |dJ/da| = "
                                                  f"{float(np.max(np.abs(g))):.1e} < min_grad {cfg.min_grad:g})")
            if it == cfg.refine_iters:
                break
            if over_budget(est):
                return best_x, trace, "budget", f"time budget reached after {it} refinement iterations"
            opt.zero_grad()
            x.grad = -torch.as_tensor(g).reshape(x.shape) * mask  # ascent
            opt.step()
            with torch.no_grad():
                tr = self._trust.to(x)
                x.copy_(self._project(torch.clamp(x, x0 - tr, x0 + tr)))
        return best_x, trace, "ok", ""


class CEMPlanner(_BasePlanner):
    """Cross-entropy method on the hierarchical reward: forward passes (``rollout``) only, no gradients.

    Iteration 0 scores the proposals; each further iteration samples ``population`` candidates from a diagonal
    Gaussian (normalised action space) fitted to the elites so far, within the limits.
    """

    config: CEMConfig

    def __init__(self, backend: Backend, config: CEMConfig | None = None):
        super().__init__(backend, config or CEMConfig())

    def plan(self, ctx: PlanningContext, proposals: ProposalSet | np.ndarray) -> PlanResult:
        t0 = time.perf_counter()
        cfg = self.config
        timings: dict[str, float] = {}
        props = self._proposals(proposals)
        rng = np.random.default_rng(cfg.seed)
        with torch.no_grad():
            try:
                out, scores, _ = self._global(ctx, props, timings)
                self._per_frame = None  # CEM's winner is a sample, not a scored proposal: no frame cut
            except _HoldError as exc:
                return self._hold(ctx, str(exc), timings)
            except Exception as exc:
                return self._hold(ctx, f"backend error: {type(exc).__name__}: {exc}", timings)
            idx0 = self._select(scores, props)
            pop_n = self._normalize(props.actions)
            best_n, best_s, best_out_idx = pop_n[idx0].copy(), float(scores[idx0]), idx0
            elites = pop_n[np.argsort(-scores)[: cfg.elites]]
            mean = elites.mean(0)
            std = np.maximum(elites.std(0), cfg.init_std)
            trace, status, reason = [best_s], "ok", ""
            t_ref = time.perf_counter()
            last = timings.get("rollout", 0) + timings.get("heads", 0) + timings.get("semantic", 0)
            for it in range(1, cfg.iterations):
                if cfg.time_budget_s is not None and time.perf_counter() - t0 + last > cfg.time_budget_s:
                    status, reason = "budget", f"time budget reached after {it - 1} CEM iterations"
                    break
                t = time.perf_counter()
                samples = mean + std * rng.standard_normal((cfg.population, *mean.shape))
                samples = self._project(torch.as_tensor(samples)).numpy()
                samples[0] = best_n  # elitism: the best so far is always re-evaluated
                try:
                    cand = self._denormalize(samples, props.actions[idx0][None]).astype(np.float32)
                    o = self.backend.rollout(cand)
                except Exception as exc:
                    return self._hold(ctx, f"backend error: {type(exc).__name__}: {exc}", timings)
                bad = o.non_finite()
                if bad:
                    return self._hold(ctx, f"non-finite backend output: {', '.join(bad)}", timings)
                s = score_rollout(o, cfg.score, self._map_views, cand, self._geometry, self._goal_dir,
                                  self._target, self._target_point(), self._keepout(), self._drop(),
                                  self._put.let_go, self._grasp(), self._approach(), self._put.tcp,
                                  self._relook(), self._push_point())[0].numpy()
                order = np.argsort(-s)
                if s[order[0]] > best_s:
                    best_s, best_n = float(s[order[0]]), samples[order[0]].copy()
                el = samples[order[: cfg.elites]]
                mean, std = el.mean(0), np.maximum(el.std(0), cfg.min_std)
                trace.append(best_s)
                last = time.perf_counter() - t
            timings["refinement"] = time.perf_counter() - t_ref
        return self._result(ctx, props, out, scores, best_out_idx, best_n, status, reason, trace, timings, t0)
