"""One planning *session*: proposals + planner + real-time chunking around a backend, for nodes and tools.

The planner node, eval-bag's shadow mode and the closed-loop evaluation all run the same sequence per cycle::

    context  = PlanningContext(history frames, history poses, instruction, seed)
    proposals = basis-velocity proposals from the current joints  (+ perturbations around a nominal chunk)
    result   = Planner / CEMPlanner .plan(context, proposals)
    chunk    = blend with the tail of the executing chunk (real-time chunking)

:class:`PlanningSession` holds that sequence so that ROS nodes stay thin adapters. No rclpy here.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from vidplan_core.execution import Rejection, plan_execution
from vidplan_core.kinematics import action_to_transform
from vidplan_core.planning.goal import contact_instruction, instruction_destination
from vidplan_core.planning.nominal import HoldPolicy, NominalObservation, NominalPolicy
from vidplan_core.planning.planner import CEMConfig, CEMPlanner, GradientPlanner, PlannerConfig, PlanResult
from vidplan_core.planning.proposals import (
    BASIS_DIRECTIONS,
    ProposalSet,
    approach_goal,
    approach_proposals,
    basis_velocity_proposals,
    clip_to_workspace,
    compose_proposals,
    gripper_proposals,
    perturbation_proposals,
    random_direction_proposals,
)
from vidplan_core.planning.rtc import blend_chunks, pose_after_latency, remaining_steps
from vidplan_core.runtime.base import Backend, PlanningContext
from vidplan_core.safety import SafetyLimits
from vidplan_core.spaces import MODEL_RATE_HZ, EEChunk

__all__ = ["PlanningSession", "ProposalConfig", "SessionConfig"]


class ProposalConfig(BaseModel):
    """Which candidates a cycle scores (DESIGN: 6 Jacobian basis directions, optionally + nominal perturbations)."""

    model_config = ConfigDict(extra="forbid")
    basis_directions: list[str] = Field(default_factory=lambda: list(BASIS_DIRECTIONS))
    basis_speed_mps: float = Field(0.15, gt=0, description="EE speed of the basis proposals [m/s]")
    fine_speed_mps: float = Field(0.0, ge=0, description="also the basis directions at this slower EE speed [m/s], "
                                  "labelled 'fine+x', ...: positioning finer than basis_speed_mps × the executed "
                                  "part of a chunk allows (0 = none; doubles the basis candidates)")
    num_nominal: int = Field(0, ge=0, description="perturbations around the nominal chunk (0 = basis only)")
    nominal_sigma: list[float] = Field(default_factory=lambda: [0.02, 0.02, 0.02, 0.05, 0.05, 0.05, 0.2],
                                       min_length=7, max_length=7)
    include_hold: bool = Field(True, description="add the 'stay put' candidate (current pose repeated)")
    gripper_toggle: bool = Field(True, description="add a gripper toggle (needed to grasp): the pose held, "
                                "or the nominal chunk's motion when num_nominal > 0")
    contact_closed: bool = Field(False, description="an instruction that asks for contact without a grasp (touch, "
                                 "push: vidplan_core.planning.goal.contact_instruction) is planned with the gripper "
                                 "closed: the basis and hold candidates carry it closed and the toggle candidate is "
                                 "left out. An open gripper straddles a small object without touching it, and the "
                                 "demonstrations the bundled models learned from touch and push with it closed")
    approach: bool = Field(False, description="for a contact instruction (touch, push), one more candidate: the "
                           "TCP straight at where the last cycle's centring pulled it (the 'table' fusion's target "
                           "point, or the push reference; GradientPlanner.target_reference) at basis_speed_mps, "
                           "stopping there; approach_clearance_m above it until the TCP is within approach_reach_m "
                           "horizontally. None before the first cycle or without table fusion")
    approach_clearance_m: float = Field(0.06, ge=0, description="height above the reference an approach heads for "
                                        "first [m] (the demonstrations' approach height)")
    approach_reach_m: float = Field(0.03, gt=0, description="horizontal distance [m] from the reference within "
                                    "which an approach goes down to it")
    reference_speed: bool = Field(False, description="for a contact instruction, the basis speed shrinks near the "
                                  "last cycle's target reference (GradientPlanner.target_reference): min("
                                  "basis_speed_mps, max(reference_min_speed_mps, distance / chunk duration)), so a "
                                  "chunk ends no farther away than the reference is; at full speed every 15 cm "
                                  "chunk overshoots a point 7 cm off and holding wins (traced: ladder push, seed 2, "
                                  "clutter 0)")
    reference_min_speed_mps: float = Field(0.03, gt=0, description="the slowest basis speed reference_speed uses "
                                           "[m/s]")
    put_approach: bool = Field(False, description="for a put's approach (an instruction naming a destination, "
                               "gripper open: goal.instruction_destination), one more candidate: the TCP straight at "
                               "where the last cycle's centring pulled it (GradientPlanner.target_reference: the "
                               "located object, or the point score.grasp_clearance_m above it) at basis_speed_mps, "
                               "stopping there. The basis directions move in 3 cm frames, coarser than a ball or a "
                               "cylinder allows a grasp to be off its centre across the fingers (0.4-0.8 cm)")
    random_directions: int = Field(0, ge=0, description="also this many candidates moving the TCP at the basis "
                                   "speed in random directions (uniform on the sphere, drawn from the cycle's seed; "
                                   "labelled 'rand0', ...; the current gripper, closed under contact_closed). A "
                                   "contact instruction under contact_closed leaves one slot of an export's batch 8 "
                                   "free for one")
    hold_shrink: float = Field(1.0, gt=0, le=1.0, description="for a contact instruction, a step-size rule: each "
                               "cycle whose chosen candidate is 'hold' multiplies the next cycles' basis speed by "
                               "this, each cycle that chooses a basis direction divides it by this again (up to "
                               "basis_speed_mps; 1 = off). Holding means no full-speed step scored better than "
                               "staying, e.g. every 15 cm chunk overshoots a point 7 cm off (traced: ladder push, "
                               "seed 2, clutter 0, 12 holds a hand-width from the standoff point)")
    hold_min_speed_mps: float = Field(0.03, gt=0, description="the slowest basis speed hold_shrink reaches [m/s]")
    velocity_margin: float = Field(0.9, gt=0, le=1.0, description="fraction of the executor's joint velocity "
                                   "allowance the basis proposals use")
    # Filled from the safety limits by PlanningConfig.bounded() (one source of limits; not set by hand).
    joint_velocity_scale: float = Field(0.8, gt=0, le=1.0, description="executor's fraction of the URDF limits")
    joint_margin_rad: float = Field(0.01, ge=0, description="executor's keep-out band inside the joint limits [rad]")
    workspace_min: list[float] | None = Field(None, description="executor's EE box lower corner [m]")
    workspace_max: list[float] | None = Field(None, description="executor's EE box upper corner [m]")

    @model_validator(mode="after")
    def _some_candidate(self) -> ProposalConfig:
        if not (self.basis_directions or self.include_hold or self.gripper_toggle or self.num_nominal
                or self.random_directions):
            raise ValueError("no candidates: give basis_directions, include_hold, gripper_toggle, num_nominal > 0 or "
                             "random_directions > 0")
        return self


class SessionConfig(BaseModel):
    """Everything a planning session needs besides the backend and the kinematics."""

    model_config = ConfigDict(extra="forbid")
    planner: Literal["gradopt", "cem"] = "gradopt"
    gradopt: PlannerConfig = Field(default_factory=PlannerConfig)
    cem: CEMConfig = Field(default_factory=CEMConfig)
    proposals: ProposalConfig = Field(default_factory=ProposalConfig)
    blend_steps: int = Field(1, ge=0, description="chunk steps blended with the executing chunk's tail")
    check_execution: bool = Field(True, description="check the chunk about to leave with the executor's own "
                                  "path (IK, joint position and velocity limits) and fall back to the chosen "
                                  "proposal unrefined, then to hold, rather than send a chunk it would reject")
    # Filled from the planning configuration's limits by PlanningConfig.bounded() (one source of limits).
    limits: SafetyLimits = Field(default_factory=SafetyLimits, description="the executor's safety limits")


class PlanningSession:
    """Proposals + planner + seam blending for one robot.

    Args:
        backend: a loaded :class:`~vidplan_core.runtime.base.Backend`.
        kinematics: a :class:`~vidplan_core.kinematics.PandaKinematics` (for the basis proposals).
        config: :class:`SessionConfig`.
        nominal: nominal policy for perturbation proposals (default: hold the current pose).
    """

    def __init__(self, backend: Backend, kinematics, config: SessionConfig | None = None,
                 nominal: NominalPolicy | None = None):
        self.backend = backend
        self.kin = kinematics
        self.config = config or SessionConfig()
        self.horizon = int(backend.horizon)
        self.nominal = nominal or HoldPolicy(self.horizon)
        if self.config.planner == "cem":
            self.planner = CEMPlanner(backend, self.config.cem)
        else:
            self.planner = GradientPlanner(backend, self.config.gradopt)

    def closed_contact(self, instruction: str) -> bool:
        """Whether ``instruction`` is planned under :attr:`ProposalConfig.contact_closed`'s gripper rule: a touch or
        push (:func:`~vidplan_core.planning.goal.contact_instruction`) with the option on — gripper closed in every
        basis and hold candidate, no toggle. The one place that rule's condition is written."""
        return self.config.proposals.contact_closed and contact_instruction(instruction)

    def step_scale(self, instruction: str) -> float:
        """The factor :attr:`ProposalConfig.hold_shrink` has brought the basis speed to for ``instruction`` (1 for
        another instruction, a fresh session, or after :meth:`reset_episode`)."""
        return self._step_scale[1] if self._step_scale[0] == instruction else 1.0

    def reset_episode(self) -> None:
        """Forget what the last cycles learned about the scene (the target's place, the step size): a new episode,
        with the same instruction or not, or a rearranged scene."""
        self.planner.reset_target()
        self._step_scale = ("", 1.0)

    def _update_step_scale(self, instruction: str, result: PlanResult, props: ProposalSet) -> None:
        pc = self.config.proposals
        if pc.hold_shrink >= 1.0 or not self.closed_contact(instruction):
            return
        floor = min(1.0, pc.hold_min_speed_mps / pc.basis_speed_mps)
        scale = self.step_scale(instruction)
        label = props.labels[result.chosen_index] if 0 <= result.chosen_index < len(props) else ""
        if label == "hold" and not result.fallback:
            scale = max(floor, scale * pc.hold_shrink)
        elif label in pc.basis_directions or label.startswith(("rand", "fine")):  # a move won: the step grows back
            scale = min(1.0, scale / pc.hold_shrink)
        self._step_scale = (instruction, scale)

    #: (instruction, basis speed factor) of ProposalConfig.hold_shrink; replaced, never mutated
    _step_scale: tuple[str, float] = ("", 1.0)

    #: settings :meth:`tune` may change while the session runs (none changes a model, a limit or a buffer size)
    LIVE_SETTINGS = ("kappa", "lam", "weighting", "time_budget_s", "basis_speed_mps")

    def tune(self, **changes) -> None:
        """Change scoring and proposal settings between cycles (a robot's operator tuning live).

        Keys: ``kappa``, ``lam``, ``weighting`` (the scoring of both planners), ``time_budget_s`` (None = no budget)
        and ``basis_speed_mps``. The new configuration is validated whole and swapped in at once, so a cycle sees
        either the old or the new one.

        Raises:
            ValueError: an unknown key or a value the configuration refuses (named, with the reason).
        """
        unknown = sorted(set(changes) - set(self.LIVE_SETTINGS))
        if unknown:
            raise ValueError(f"not live-tunable: {', '.join(unknown)} (live: {', '.join(self.LIVE_SETTINGS)})")
        data = self.config.model_dump()
        for sec in ("gradopt", "cem"):
            for k in ("kappa", "lam", "weighting"):
                if k in changes:
                    data[sec]["score"][k] = changes[k]
            if "time_budget_s" in changes:
                data[sec]["time_budget_s"] = changes["time_budget_s"] or None
        if "basis_speed_mps" in changes:
            data["proposals"]["basis_speed_mps"] = changes["basis_speed_mps"]
        try:
            cfg = SessionConfig.model_validate(data)
        except ValidationError as exc:
            raise ValueError("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())) from exc
        self.planner.config = cfg.cem if cfg.planner == "cem" else cfg.gradopt
        self.config = cfg

    @property
    def num_candidates(self) -> int:
        """Candidates scored per cycle: basis directions + random directions + hold + toggle + nominal perturbations
        (CEM samples its own ``population`` per further iteration). A contact instruction under ``contact_closed``
        has no toggle (one fewer) and, with ``approach``, one approach candidate from its second cycle on."""
        pc = self.config.proposals
        return (len(pc.basis_directions) * (2 if pc.fine_speed_mps else 1) + int(pc.include_hold)
                + int(pc.gripper_toggle) + pc.num_nominal + pc.random_directions)

    def batching_notes(self) -> list[str]:
        """Warnings for candidate counts that the backend can only run padded (exported ONNX/TensorRT batch sizes
        that do not fit; see ``OnnxRuntimeBackend.batching_note``); empty for backends without fixed batch sizes."""
        note = getattr(self.backend, "batching_note", None)
        if note is None:
            return []
        counts = {self.num_candidates} | ({self.config.cem.population} if self.config.planner == "cem" else set())
        return [m for n in sorted(counts) if (m := note(n))]

    def proposals(self, q: np.ndarray, current_pose: np.ndarray, instruction: str = "",
                  images: dict[str, np.ndarray] | None = None, seed: int = 0,
                  frames: np.ndarray | None = None) -> ProposalSet:
        """Candidate chunks (N, H, 7) for the current joint state ``q`` (7,) [rad] and EE pose (7,); ``frames``
        (T, 3, 3, H, W): the prepared history, for a nominal policy that reads it. With ``contact_closed`` and a
        touch/push instruction the basis and hold candidates carry gripper 1 (closed) and there is no toggle."""
        pc = self.config.proposals
        contact = self.closed_contact(instruction)
        if contact:  # closed from the first chunk on; the executor closes it while the arm moves
            current_pose = np.asarray(current_pose, np.float64).copy()
            current_pose[6] = 1.0
        gripper = float(current_pose[6])
        sets = []
        contact_ref = (pc.approach or pc.reference_speed) and contact_instruction(instruction)
        put = gripper < 0.5 and instruction_destination(instruction) is not None
        put_app = pc.put_approach and put
        ref = self.planner.target_reference(instruction) if contact_ref or put_app else None
        basis_speed = pc.basis_speed_mps * self.step_scale(instruction)
        if ref is not None and pc.reference_speed and contact_ref:  # a chunk lasts horizon / model rate seconds
            dist = float(np.linalg.norm(ref[0] - np.asarray(current_pose[:3], np.float64)))
            basis_speed = min(pc.basis_speed_mps, max(pc.reference_min_speed_mps, dist * MODEL_RATE_HZ / self.horizon))
        # basis_directions empty: the nominal's perturbations only (the eval's scripted+vidplan)
        for speed, prefix in ((basis_speed, ""), (pc.fine_speed_mps, "fine")):
            if not (pc.basis_directions and speed):
                continue
            basis = basis_velocity_proposals(self.kin, q, self.horizon, speed=speed, gripper=gripper,
                                             directions=tuple(pc.basis_directions),
                                             euler_center=np.asarray(current_pose[3:6]),
                                             velocity_scale=pc.joint_velocity_scale * pc.velocity_margin,
                                             workspace_min=pc.workspace_min, workspace_max=pc.workspace_max,
                                             joint_margin=pc.joint_margin_rad)
            sets.append(ProposalSet(basis.actions, [prefix + lab for lab in basis.labels]))
        if pc.random_directions:
            sets.append(random_direction_proposals(
                self.kin, q, self.horizon, pc.random_directions, basis_speed, np.random.default_rng([seed, 6]),
                gripper, np.asarray(current_pose[3:6]), velocity_scale=pc.joint_velocity_scale * pc.velocity_margin,
                workspace_min=pc.workspace_min, workspace_max=pc.workspace_max, joint_margin=pc.joint_margin_rad,
                toggle=False))
        if pc.include_hold:
            sets.append(ProposalSet(np.tile(current_pose, (1, self.horizon, 1)), ["hold"]))
        if ref is not None and ((pc.approach and contact_ref) or put_app):
            # a put's reference already stands over the object until the hand is over it (score.grasp_clearance_m)
            goal = ref[0] if put_app else approach_goal(current_pose[:3], ref[0], pc.approach_clearance_m,
                                                        pc.approach_reach_m, ref[1])
            sets.append(approach_proposals(self.kin, q, self.horizon, goal, pc.basis_speed_mps, gripper,
                                           np.asarray(current_pose[3:6]),
                                           velocity_scale=pc.joint_velocity_scale * pc.velocity_margin,
                                           workspace_min=pc.workspace_min, workspace_max=pc.workspace_max,
                                           joint_margin=pc.joint_margin_rad))
        nominal = None
        if pc.num_nominal:
            obs = NominalObservation(ee_pose=np.asarray(current_pose), joint_positions=np.asarray(q),
                                     images=images or {}, instruction=instruction, frames=frames)
            # one source of limits: the executor's box bounds these candidates as it bounds the basis directions
            nominal = clip_to_workspace(self.nominal.infer(obs), pc.workspace_min, pc.workspace_max)
        if pc.gripper_toggle and not contact:  # with a nominal policy the toggle moves like it (see gripper_proposals)
            sets.append(gripper_proposals(current_pose, self.horizon, motion=nominal))
        if nominal is not None:
            props = perturbation_proposals(nominal, pc.num_nominal, np.asarray(pc.nominal_sigma), rng=seed)
            sets.append(ProposalSet(clip_to_workspace(props.actions, pc.workspace_min, pc.workspace_max),
                                    props.labels))
        return compose_proposals(*sets)

    def start_after_latency(self, q: np.ndarray, executing: EEChunk | None, chunk_start_pose: np.ndarray,
                            elapsed_s: float, latency_s: float) -> tuple[np.ndarray, np.ndarray]:
        """Where the next chunk should begin: (pose (7,), q (7,)) the robot reaches ``latency_s`` from now along the
        executing chunk (started ``elapsed_s`` ago from ``chunk_start_pose`` (7,)); IK from ``q`` for the joints
        (the best iterate, within limits). Without an executing chunk: the current pose and ``q``.
        """
        q = np.asarray(q, np.float64)
        if executing is None:
            return np.asarray(chunk_start_pose, np.float64).copy(), q.copy()
        pose = pose_after_latency(chunk_start_pose, executing, max(elapsed_s, 0.0), max(latency_s, 0.0))
        return pose, self.kin.ik(action_to_transform(pose), q).q

    def plan(self, frames: np.ndarray, poses: np.ndarray, q: np.ndarray, instruction: str, seed: int = 0,
             executing: EEChunk | None = None, executing_elapsed_s: float = 0.0,
             start: tuple[np.ndarray, np.ndarray] | None = None, gripper_closure: float | None = None
             ) -> tuple[PlanResult, ProposalSet]:
        """Run one cycle.

        Args:
            frames: (T, 3 views, 3, H, W) history at the model rate (uint8 or float [0, 1]).
            poses: (T, 7) EE poses at the same instants (last = now).
            q: (7,) current joint positions [rad].
            instruction: the instruction text.
            seed: noise seed of this cycle.
            executing: the chunk the robot is executing (for seam blending), or None.
            executing_elapsed_s: time since that chunk started [s], at the moment the new chunk will take over
                (cycle start + expected latency when the caller compensates latency).
            start: (pose (7,), q (7,)) where the proposals begin instead of the observed pose and ``q``: the
                pose the robot will have reached when this chunk arrives (real-time chunking,
                :func:`vidplan_core.planning.rtc.pose_after_latency`). The world model still conditions on the
                observed history; the chunk it scores then begins with the motion made during the latency.
            gripper_closure: the measured finger closure now, 0 (open) … 1 (fingers together), or None where not
                measured (:attr:`~vidplan_core.runtime.base.PlanningContext.gripper_closure`: a put's carry phase
                tells a grasp that holds something from one that closed on nothing).

        Returns:
            (result, proposals). ``result.chunk`` is already blended with the executing chunk's tail.
        """
        ctx = PlanningContext(history_frames=frames, history_actions=poses, instruction=instruction, seed=seed,
                              gripper_closure=gripper_closure)
        start_pose, start_q = (ctx.current_pose, q) if start is None else (np.asarray(start[0], np.float64),
                                                                         np.asarray(start[1], np.float64))
        props = self.proposals(start_q, start_pose, instruction, seed=seed, frames=frames)
        result = self.planner.plan(ctx, props)
        if executing is not None and not result.hold and self.config.blend_steps:
            tail = remaining_steps(executing, executing_elapsed_s)
            if len(tail):
                blended = blend_chunks(tail, result.chunk, self.config.blend_steps)
                # blending two in-box chunks can round one ulp out of the box, which the executor rejects
                pc = self.config.proposals
                result.chunk = EEChunk.from_actions(
                    clip_to_workspace(blended.actions, pc.workspace_min, pc.workspace_max), dt=blended.dt,
                    uncertainty=blended.uncertainty, value=blended.value)
        if not result.hold and self.config.check_execution:
            self._make_executable(result, props, start_pose, start_q)
        self._update_step_scale(instruction, result, props)
        return result, props

    def _make_executable(self, result: PlanResult, props: ProposalSet, pose: np.ndarray, q: np.ndarray) -> None:
        """Run the executor's own check (:func:`vidplan_core.execution.plan_execution`, policy "reject") on the
        chunk about to leave, from the joints ``q`` (7,) [rad] it starts at. The basis proposals respect the joint
        limits by construction, but the refinement and the nominal's perturbations are bounded in EE space only: a
        step the wrist cannot follow at the allowed joint speed had the whole chunk rejected (7 in about 1300
        cycles of closed_loop_box_clip, all at step 0 or 1). Falls back to the chosen proposal as proposed, then to
        hold; ``result.fallback`` and ``result.reason`` say which and why. Changes ``result`` in place."""
        limits = self.config.limits
        first = plan_execution(result.chunk, q, self.kin, limits, "reject")
        if not isinstance(first, Rejection):
            return
        why = f"planned chunk not executable: {first.reason}"
        if 0 <= result.chosen_index < len(props):
            pc = self.config.proposals
            raw = props.actions[result.chosen_index].copy()
            raw[:, :3] = np.clip(raw[:, :3], limits.workspace_min, limits.workspace_max)
            raw[:, 6] = np.clip(raw[:, 6], limits.gripper_min, limits.gripper_max)
            alt = EEChunk.from_actions(clip_to_workspace(raw, pc.workspace_min, pc.workspace_max),
                                       dt=result.chunk.dt, uncertainty=result.chunk.uncertainty,
                                       value=result.chunk.value)
            if not isinstance(plan_execution(alt, q, self.kin, limits, "reject"), Rejection):
                result.chunk, result.fallback = alt, "proposal"
                result.reason = f"{why}; the chosen proposal is executed as proposed"
                return
        # where the arm stands by the kinematics, not the observed pose: a joint a simulator's soft limit let past
        # its limit puts the observed pose out of IK's reach (by 0.6 mm / 0.15° twelve times in one put episode)
        hold = np.asarray(pose, np.float64).copy()
        hold[:6] = self.kin.fk_action(self.kin.clip(q), euler_center=hold[3:6])
        result.chunk = EEChunk.from_actions(np.repeat(hold[None], len(result.chunk), 0), dt=result.chunk.dt)
        result.status, result.fallback, result.reason = "hold", "hold", f"{why}; holding"
