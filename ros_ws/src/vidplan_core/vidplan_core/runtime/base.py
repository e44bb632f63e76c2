"""The ``Backend`` protocol every planner talks to, and the data it exchanges.

A backend owns the models (world model as K-step flow map, UQ and reward heads, VAE decoder, semantic towers) in
some runtime (torch, onnxruntime, TensorRT). One planning cycle is::

    backend.set_context(ctx)              # encode history frames once, embed the instruction, fix the noise
    out = backend.rollout(actions)        # (N, H, 7) future EE poses → predictions + heads + semantic map
    J, g = backend.value_and_grad(a)      # refinement objective (N,) and dJ/da (N, H, 7)

Actions crossing this interface are *raw* EE poses (m, rad, gripper 0..1, base frame) of the H future steps; the
history poses come with the context. The world model normalises internally (p01/p99, ``backend.normalizer``);
the planner takes its Adam steps in the normalised space and converts gradients with the chain rule
(``dJ/da_n = dJ/da · (p99 − p01)/2``). All arrays are numpy float32 on the way out (cheap from every runtime).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from vidplan_core.spaces import ACTION_DIM, ActionNormalizer

__all__ = ["Backend", "BackendError", "PlanningContext", "RolloutOutput", "check_actions"]


class BackendError(RuntimeError):
    """A backend cannot be created or used (not installed, model/config mismatch, bad manifest, bad input)."""


@dataclass
class PlanningContext:
    """Everything a cycle conditions on besides the candidate actions.

    Attributes:
        history_frames: (T, 3, 3, H, W) camera history at the model rate, views ordered (left, right, wrist),
            RGB, uint8 [0, 255] or float [0, 1]; the last entry is the current observation.
        history_actions: (T, 7) EE poses (raw units: m, rad, gripper 0..1) at the same instants.
        instruction: natural-language task, e.g. "put the red cube in the bowl".
        seed: seed of the flow map's initial noise; the same noise is used for every candidate and every
            refinement iteration of a cycle (common random numbers make candidates comparable).
        target_text: what the semantic scorer scores the predicted frames against this cycle, when not the
            instruction itself: a phase of the task, e.g. "the bowl" while a put carries the object
            (:attr:`~vidplan_core.planning.scoring.ScoreConfig.carry_height_m`). The world model and the reward
            head stay conditioned on the instruction.
        gripper_closure: the measured finger closure now, 0 (open) … 1 (fingers together), or None where the
            caller does not measure it; tells a grasp that holds something from one that closed on nothing.
    """

    history_frames: np.ndarray
    history_actions: np.ndarray
    instruction: str
    seed: int = 0
    target_text: str | None = None
    gripper_closure: float | None = None

    def __post_init__(self) -> None:
        f = np.asarray(self.history_frames)
        if f.ndim != 5 or f.shape[1] != 3 or f.shape[2] != 3:
            raise ValueError(f"history_frames must be (T, 3 views, 3, H, W), got {f.shape}")
        a = np.asarray(self.history_actions, dtype=np.float64)
        if a.ndim != 2 or a.shape[1] != ACTION_DIM or len(a) != len(f):
            raise ValueError(f"history_actions must be (T={len(f)}, {ACTION_DIM}), got {a.shape}")
        if not np.isfinite(a).all():
            raise ValueError("history_actions contain NaN/Inf")
        self.history_frames, self.history_actions = f, a

    @property
    def scoring_text(self) -> str:
        """The text the semantic scorer scores against: :attr:`target_text`, else the instruction."""
        return self.target_text or self.instruction

    @property
    def current_pose(self) -> np.ndarray:
        """(7,) the latest EE pose."""
        return self.history_actions[-1].copy()


@dataclass
class RolloutOutput:
    """Predictions for N candidates over F = H predicted frames (numpy float32).

    Attributes:
        h_bar: (N, F) mean normalised UQ entropy per frame, in [0, 1].
        uq_map: (N, F, h, w) normalised UQ entropy per latent pixel (mean over latent channels).
        value: (N, F) reward-head expected value in [0, 1].
        value_entropy: (N, F) reward-head normalised entropy in [0, 1].
        semantic_score: (N, F) image–text score of each decoded frame.
        semantic_map: (N, F, Hp, Wp) patch similarity map.
        latents: optional (N, F, C, h, w) predicted latents (debug pictures: a backend's ``decode``).
        timings: seconds per stage of this call ("rollout", "heads", "semantic").
    """

    h_bar: np.ndarray
    uq_map: np.ndarray
    value: np.ndarray
    value_entropy: np.ndarray
    semantic_score: np.ndarray
    semantic_map: np.ndarray
    latents: np.ndarray | None = None
    timings: dict[str, float] = field(default_factory=dict)

    def arrays(self) -> dict[str, np.ndarray]:
        """The mandatory arrays by name (used for NaN/Inf checks)."""
        return {k: getattr(self, k) for k in ("h_bar", "uq_map", "value", "value_entropy", "semantic_score",
                                              "semantic_map")}

    def non_finite(self) -> list[str]:
        """Names of arrays that contain NaN or Inf (empty when all are finite)."""
        return [k for k, v in self.arrays().items() if not np.isfinite(v).all()]


@runtime_checkable
class Backend(Protocol):
    """What a planner needs from a runtime. See the module docstring for the call sequence.

    Attributes:
        name: e.g. "torch", "onnxruntime", "tensorrt".
        horizon: H, number of actions per candidate (= predicted frames F).
        normalizer: action statistics of the world model.

    Optional, outside the protocol: ``decode(latents)`` — (H, C, h, w) latents of one candidate → (H, 3 views, 3,
    H_img, W_img) frames in [0, 1] for debug pictures (the torch, onnxruntime and TensorRT backends have it).
    """

    name: str
    horizon: int
    normalizer: ActionNormalizer

    def set_context(self, ctx: PlanningContext) -> float:
        """Encode the history and the instruction for this cycle; returns seconds spent."""
        ...

    def rollout(self, actions: np.ndarray) -> RolloutOutput:
        """(N, H, 7) raw future EE poses → :class:`RolloutOutput` (no gradients)."""
        ...

    def value_and_grad(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, H, 7) raw future EE poses → refinement objective J (N,) and dJ/dactions (N, H, 7)."""
        ...


def check_actions(actions: np.ndarray, horizon: int) -> np.ndarray:
    """Validate and convert candidate actions to contiguous float32 (N, H, 7); raise naming the expected shape."""
    a = np.asarray(actions)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3 or a.shape[1:] != (horizon, ACTION_DIM):
        raise BackendError(f"actions must be (N, {horizon}, {ACTION_DIM}) EE poses, got {a.shape}")
    if not np.isfinite(a).all():
        raise BackendError("actions contain NaN/Inf")
    return np.ascontiguousarray(a, dtype=np.float32)
