"""The simulator as a world model: the top rungs of the closed-loop ladder (diagnostics, never the product).

:class:`OracleBackend` implements the planner's :class:`~vidplan_core.runtime.base.Backend` protocol by rolling
every candidate chunk out *in the simulator itself*: it snapshots the scene at :meth:`set_context`, and for each
candidate restores the snapshot, sends the chunk through the robot's execution path
(:func:`vidplan_core.execution.plan_execution`: safety filter → IK → joint checks → timed joint plan; a rejected
chunk leaves the arm holding, exactly as the executor would), steps the physics at the control rate and records
each model-rate instant. The scene is restored afterwards, so planning never changes the episode.

What a candidate's future is scored with:

* ``reward`` given (a :class:`~vidplan_sim.privileged.PrivilegedReward`): the privileged task progress of each
  instant becomes the candidate's per-frame ``semantic_score`` (uncertainty and value are 0, maps are empty; run
  these variants with κ = 0, λ = 0 and no refinement) — ``oracle+privileged``;
* ``learned`` given (a torch or onnxruntime backend of a model bundle): the three cameras are rendered at the
  model rate, resized to the model's view size, encoded with the bundle's encoder, and the bundle's UQ head,
  reward head and semantic scorer score these *true* future latents (``score_latents``) — ``oracle+learned``.

The oracle has no gradients: :meth:`value_and_grad` raises, the planner must not refine (``refine_iters: 0``).
"""

from __future__ import annotations

import inspect
import time
from typing import Any

import numpy as np

from vidplan_core.execution import IKOptions, JointPlan, plan_execution
from vidplan_core.runtime.base import BackendError, PlanningContext, RolloutOutput, check_actions
from vidplan_core.safety import SafetyLimits
from vidplan_core.spaces import CONTROL_RATE_HZ, MODEL_RATE_HZ, ActionNormalizer, EEChunk, ViewPreparation, model_stride
from vidplan_sim.privileged import PrivilegedReward, PrivilegedState
from vidplan_sim.trajectory import JointTrajectoryTracker

__all__ = ["OracleBackend", "execute_plan", "workspace_normalizer"]


def workspace_normalizer(limits: SafetyLimits | None = None) -> ActionNormalizer:
    """Action normaliser spanning the executor's workspace box (positions), ±π (angles) and the gripper range:
    what the planner's trust region and limits are expressed in when no learned model brings its own."""
    lim = limits or SafetyLimits()
    lo = np.array([*lim.workspace_min, -np.pi, -np.pi, -np.pi, lim.gripper_min])
    hi = np.array([*lim.workspace_max, np.pi, np.pi, np.pi, lim.gripper_max])
    return ActionNormalizer(lo, hi)


def execute_plan(env: Any, plan: JointPlan | None, q_hold: np.ndarray) -> None:
    """Hand a joint plan to the simulated joint-trajectory controller (or hold ``q_hold`` when ``plan`` is None),
    as the executor's ``jtc`` backend does with a JointTrajectory message."""
    if plan is None:
        env.set_joint_targets(q_hold)
        return
    env.set_trajectory(JointTrajectoryTracker(env.time, env.commanded_joints(), plan.times, plan.positions))


class OracleBackend:
    """:class:`~vidplan_core.runtime.base.Backend` whose world model is the simulator (see the module docstring).

    Args:
        env: a :class:`vidplan_sim.env.SimEnv` at the current state of the episode (it is restored after use).
        kin: :class:`vidplan_core.kinematics.PandaKinematics` (the executor's IK).
        horizon: H model-rate steps per candidate (default: the learned backend's, else 5).
        limits, policy, ik: the executor's safety limits, out-of-limits policy and IK options.
        reward: privileged reward (oracle+privileged), or None.
        learned: a bundle's backend providing ``encode_frames`` and ``score_latents`` (oracle+learned), or None.
        score_pixels: the learned scorer reads the rendered frames directly (``oracle+learned-pixels``; torch).
        views: the learned model's :class:`~vidplan_core.spaces.ViewPreparation` (frames are cropped and resized
            with it before encoding).
    """

    name = "oracle"

    def __init__(self, env: Any, kin: Any, *, horizon: int | None = None, limits: SafetyLimits | None = None,
                 policy: str = "reject", ik: IKOptions | None = None, reward: PrivilegedReward | None = None,
                 learned: Any = None, views: ViewPreparation | None = None, score_pixels: bool = False):
        if (reward is None) == (learned is None):
            raise ValueError("OracleBackend scores with exactly one of reward (privileged) or learned (a bundle)")
        if learned is not None and (views is None or not hasattr(learned, "score_latents")):
            raise ValueError("oracle+learned needs a torch/onnxruntime backend with score_latents and its views")
        self.env, self.kin = env, kin
        self.limits, self.policy, self.ik = limits or SafetyLimits(), policy, ik or IKOptions()
        self.reward, self.learned, self.views = reward, learned, views
        self.score_pixels = bool(score_pixels)
        if score_pixels and (learned is None or "frames" not in inspect.signature(learned.score_latents).parameters):
            raise ValueError("score_pixels needs a learned backend whose score_latents takes frames (torch)")
        self.horizon = int(horizon or (learned.horizon if learned is not None else 5))
        self.num_history = int(learned.num_history) if learned is not None else 1
        self.normalizer = learned.normalizer if learned is not None else workspace_normalizer(self.limits)
        self._snap = None
        self._instruction = ""
        #: per candidate of the last rollout: (H, 3) TCP positions, (H, 3) the task's target object's positions [m]
        #: (privileged; NaN without a target) and the chunk's fate ("" or the rejection)
        self.last_tcp: np.ndarray | None = None
        self.last_target: np.ndarray | None = None
        self.last_problems: list[str] = []

    @property
    def centring_view(self) -> int | None:
        """The learned scorer's semantic-map view (oracle+learned); None with the privileged reward (no maps)."""
        return getattr(self.learned, "centring_view", None) if self.learned is not None else None

    @property
    def map_views(self) -> tuple[int, ...] | None:
        return getattr(self.learned, "map_views", None) if self.learned is not None else None

    @property
    def view_geometry(self) -> dict | None:
        return getattr(self.learned, "view_geometry", None) if self.learned is not None else None

    def set_context(self, ctx: PlanningContext) -> float:
        """Snapshot the scene now (the candidates start from it); with a learned scorer, its context too."""
        t0 = time.perf_counter()
        self._snap = self.env.snapshot()
        self._instruction = ctx.instruction
        if self.learned is not None:
            self.learned.set_context(ctx)
        return time.perf_counter() - t0

    def rollout(self, actions: np.ndarray) -> RolloutOutput:
        """(N, H, 7) chunks → each rolled out in the simulator; see the module docstring for the scores."""
        if self._snap is None:
            raise BackendError("set_context() must be called before rollout()")
        a_all = check_actions(actions, self.horizon).astype(np.float64)
        n, h = len(a_all), self.horizon
        env, stride, dt_ctrl = self.env, model_stride(), 1.0 / CONTROL_RATE_HZ
        t0 = time.perf_counter()
        progress = np.zeros((n, h), np.float32)
        tcp = np.zeros((n, h, 3))
        target = np.full((n, h, 3), np.nan)
        layout = getattr(env, "layout", None)
        target_name = layout.target.name if layout is not None else None
        frames: list[np.ndarray] = []
        problems: list[str] = []
        try:
            for i, a in enumerate(a_all):
                env.restore(self._snap)
                q = env.joint_positions()
                res = plan_execution(EEChunk.from_actions(a, dt=1.0 / MODEL_RATE_HZ), q, self.kin, self.limits,
                                     self.policy, self.ik)
                plan = res if isinstance(res, JointPlan) else None
                problems.append("" if plan is not None else res.reason)
                execute_plan(env, plan, q)
                for j in range(h):
                    if plan is not None and j < len(plan.gripper):
                        env.set_gripper(float(plan.gripper[j]))
                    for _ in range(stride):
                        env.step(dt_ctrl)
                    tcp[i, j] = env.ee_pose()[:3, 3]
                    if target_name is not None:
                        target[i, j] = env.object_pose(target_name)[:3]
                    if self.reward is not None:
                        st = PrivilegedState(tcp=tcp[i, j], gripper=env.gripper_command, task=env.task_state())
                        progress[i, j] = self.reward(env.task, st)
                    else:
                        frames.append(self.views.prepare(env.render()).transpose(0, 3, 1, 2))
        finally:
            env.restore(self._snap)
        self.last_tcp, self.last_target, self.last_problems = tcp, target, problems
        t_sim = time.perf_counter() - t0
        if self.reward is not None:
            z = np.zeros((n, h), np.float32)
            return RolloutOutput(h_bar=z, uq_map=np.zeros((n, h, 1, 1), np.float32), value=z, value_entropy=z,
                                 semantic_score=progress, semantic_map=np.zeros((n, h, 1, 1), np.float32),
                                 timings={"rollout": t_sim})
        t1 = time.perf_counter()
        lat = self.learned.encode_frames(np.stack(frames))
        lat = lat.reshape(n, h, *lat.shape[1:])
        if self.score_pixels:  # the scorer reads the true frames, not their VAE round trip (diagnostic)
            out = self.learned.score_latents(lat, a_all.astype(np.float32),
                                             frames=np.stack(frames).reshape(n, h, *frames[0].shape))
        else:
            out = self.learned.score_latents(lat, a_all.astype(np.float32))
        out.timings["rollout"] = t_sim + (time.perf_counter() - t1) - sum(out.timings.values())
        return out

    def value_and_grad(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise BackendError("the oracle world model (the simulator) has no gradients: plan with refine_iters 0")
