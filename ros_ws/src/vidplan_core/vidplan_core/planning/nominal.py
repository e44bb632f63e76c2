"""Nominal policies: where the perturbation proposals are centred.

A :class:`NominalPolicy` maps the latest observation to an (H, 7) chunk of EE poses at the model rate (raw units:
m, rad, gripper 0..1, base frame). Implementations:

* :class:`HoldPolicy` — stay where you are (the safe default).
* :class:`ReplayPolicy` — replay recorded actions (a bag or a demonstration), advancing one step per call.
* :class:`BCNominalPolicy` — the bundle's behaviour-cloned policy (``policy/``, ``vidplan train bc``) on the
  planner's own prepared history frames, encoded with the bundle's autoencoder (torch; the paper's π0.5 role).
* :class:`OpenPIPolicy` — ask an openpi policy server (π0 / π0-FAST / π0.5 on DROID) through
  ``openpi_client.websocket_client_policy.WebsocketClientPolicy``. DROID policies answer joint velocities +
  gripper at 15 Hz; they are integrated with the Panda kinematics and mapped through FK to EE poses at the model
  rate. Policies that answer EE poses directly are supported with ``action_space="ee_pose"``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from vidplan_core.runtime.bundle import frames_to_float
from vidplan_core.runtime.bundle_index import read_bundle_index
from vidplan_core.runtime.loader import load_part, load_planner_models
from vidplan_core.spaces import ACTION_DIM, CONTROL_RATE_HZ, MODEL_RATE_HZ, model_stride

__all__ = ["BCNominalPolicy", "HoldPolicy", "NominalObservation", "NominalPolicy", "OpenPIPolicy", "ReplayPolicy"]


@dataclass
class NominalObservation:
    """The latest observation, in the form nominal policies need.

    Attributes:
        ee_pose: (7,) current EE pose [x, y, z, rx, ry, rz, g].
        joint_positions: optional (7,) arm joint angles [rad] (needed for joint-velocity policies).
        images: optional dict view name ("left", "right", "wrist") → (H, W, 3) uint8 RGB.
        instruction: the instruction text.
        frames: optional (T, 3 views, 3, H, W) uint8 history at the model rate, cut and resized as the world model
            sees it (the planner's context; last = now) — what a policy trained on the bundle's data reads.
    """

    ee_pose: np.ndarray
    joint_positions: np.ndarray | None = None
    images: dict[str, np.ndarray] = field(default_factory=dict)
    instruction: str = ""
    frames: np.ndarray | None = None


@runtime_checkable
class NominalPolicy(Protocol):
    """Produces a nominal chunk of H EE poses, (H, 7), from an observation."""

    horizon: int

    def infer(self, obs: NominalObservation) -> np.ndarray:
        """(H, 7) EE poses at the model rate."""
        ...

    def reset(self) -> None:
        """Forget episode state."""
        ...


class HoldPolicy:
    """Repeat the current EE pose for H steps."""

    def __init__(self, horizon: int):
        self.horizon = int(horizon)

    def infer(self, obs: NominalObservation) -> np.ndarray:
        pose = np.asarray(obs.ee_pose, dtype=np.float64).reshape(ACTION_DIM)
        return np.repeat(pose[None], self.horizon, axis=0)

    def reset(self) -> None:
        pass


class BCNominalPolicy:
    """The bundle's behaviour-cloned policy (:class:`vidplan_core.models.BCPolicy`) as a nominal policy.

    It reads ``obs.frames`` (the planner's prepared history; its last ``num_history`` frames), encodes them with the
    bundle's autoencoder, embeds the instruction as the world model does, and answers (H, 7) raw EE poses.
    """

    def __init__(self, policy: Any, models: Any):
        """``policy``: a BCPolicy; ``models``: the bundle's :class:`~vidplan_core.runtime.bundle.PlannerModels`
        (its autoencoder, and its semantic scorer for the text embedding). Shapes must agree (ValueError)."""
        import torch

        self.policy, self.models = policy.eval(), models
        self.horizon = int(policy.config.horizon)
        C, h, w = models.suite.autoencoder.latent_shape
        pc = policy.config
        if (pc.latent_channels, pc.latent_height, pc.latent_width) != (C, h, w):
            raise ValueError(f"the policy reads latents {(pc.latent_channels, pc.latent_height, pc.latent_width)}, "
                             f"the bundle's autoencoder makes {(C, h, w)}")
        if pc.text_dim and pc.text_dim != models.text_dim():
            raise ValueError(f"the policy reads text embeddings of width {pc.text_dim}, the bundle's text conditioning "
                             f"makes {models.text_dim()}")
        self._torch = torch
        self._text: dict[str, Any] = {}

    @classmethod
    def from_bundle(cls, model_dir: Any, models: Any = None) -> BCNominalPolicy:
        """The policy of a model directory (its index's ``policy`` part; BundleError naming it when absent), with
        the directory's torch models (``models``, or loaded here)."""
        index = read_bundle_index(model_dir)
        index.require(["policy"], "the behaviour-cloned nominal policy (vidplan train bc, then assemble-models)")
        if models is None:
            models = load_planner_models(model_dir)
        return cls(load_part(index, "policy"), models)

    def _text_embedding(self, instruction: str) -> Any:
        if instruction not in self._text:  # the conditioning embedding, as the world model's (PlannerModels)
            self._text[instruction] = self.models.conditioning_embedding(instruction)
        return self._text[instruction]

    def infer(self, obs: NominalObservation) -> np.ndarray:
        torch = self._torch
        T = int(self.policy.config.num_history)
        if obs.frames is None or len(obs.frames) < T:
            raise ValueError(f"the behaviour-cloned policy needs the last {T} prepared history frames "
                             "(NominalObservation.frames), got " + ("none" if obs.frames is None
                                                                    else str(len(obs.frames))))

        frames = torch.as_tensor(frames_to_float(np.asarray(obs.frames)[-T:]))
        pose = torch.as_tensor(np.asarray(obs.ee_pose, np.float32).reshape(1, ACTION_DIM))
        with torch.no_grad():
            lat = self.models.suite.autoencoder.encode(frames).float()[None]  # (1, T, C, h, w)
            text = self._text_embedding(obs.instruction) if self.policy.config.text_dim else None
            out = self.policy.act(lat, pose, text)[0]
        return out.double().numpy()

    def reset(self) -> None:
        pass


class ReplayPolicy:
    """Replay a recorded (T, 7) sequence of EE poses at the model rate, one step further per call.

    Past the end the last pose is held (never extrapolated).
    """

    def __init__(self, actions: np.ndarray, horizon: int, start: int = 0):
        a = np.asarray(actions, dtype=np.float64)
        if a.ndim != 2 or a.shape[1] != ACTION_DIM or len(a) == 0:
            raise ValueError(f"recorded actions must be (T>0, {ACTION_DIM}), got {a.shape}")
        self.actions, self.horizon, self._start, self.step = a, int(horizon), int(start), int(start)

    def infer(self, obs: NominalObservation) -> np.ndarray:
        idx = np.clip(np.arange(self.step + 1, self.step + 1 + self.horizon), 0, len(self.actions) - 1)
        self.step += 1
        return self.actions[idx].copy()

    def reset(self) -> None:
        self.step = self._start


class OpenPIPolicy:
    """Client of an openpi policy server (``openpi_client.websocket_client_policy.WebsocketClientPolicy``).

    The observation dict follows openpi's DROID example (``examples/droid/main.py``):
    ``observation/exterior_image_1_left``, ``observation/exterior_image_2_left``, ``observation/wrist_image_left``
    (224×224 uint8 RGB, resized with padding by ``openpi_client.image_tools``), ``observation/joint_position`` (7,),
    ``observation/gripper_position`` (1,), ``observation/cartesian_position`` (6,) and ``prompt``.
    The response's ``actions`` is (H', 8) for DROID policies (7 joint velocities [rad/s] + gripper position at
    ``policy_rate_hz``); with ``action_space="ee_pose"`` it is (H', 7) EE poses.

    Args:
        host, port: server address.
        horizon: H, model-rate steps returned by :meth:`infer`.
        kinematics: a ``PandaKinematics`` (required for ``action_space="joint_velocity"``).
        action_space: ``"joint_velocity"`` (DROID) or ``"ee_pose"``.
        policy_rate_hz: rate of the server's action chunk (15 Hz for DROID).
        image_size: side of the square images sent (224 for π0 DROID).
        connect_timeout_s: how long to wait for the server at start-up (a missing server is a start-up error).
    """

    def __init__(self, host: str, port: int, horizon: int, kinematics: Any | None = None,
                 action_space: Literal["joint_velocity", "ee_pose"] = "joint_velocity",
                 policy_rate_hz: float = CONTROL_RATE_HZ, image_size: int = 224, connect_timeout_s: float = 10.0,
                 api_key: str | None = None):
        from openpi_client import websocket_client_policy

        if action_space not in ("joint_velocity", "ee_pose"):
            raise ValueError(f"action_space must be 'joint_velocity' or 'ee_pose', got {action_space!r}")
        if action_space == "joint_velocity" and kinematics is None:
            raise ValueError("action_space='joint_velocity' needs a PandaKinematics to integrate and run FK")
        self.horizon, self.kin, self.action_space = int(horizon), kinematics, action_space
        self.policy_rate_hz, self.image_size = float(policy_rate_hz), int(image_size)
        deadline = time.monotonic() + connect_timeout_s
        last: Exception | None = None
        while True:  # openpi-client 0.1.2 tries once; retry until the timeout so start-up order does not matter
            try:
                self._client = websocket_client_policy.WebsocketClientPolicy(host=host, port=port, api_key=api_key)
                break
            except OSError as exc:
                last = exc
                if time.monotonic() > deadline:
                    raise ConnectionError(f"no openpi policy server at ws://{host}:{port} after "
                                          f"{connect_timeout_s:.0f} s: {last}") from exc
                time.sleep(0.2)
        self.server_metadata: dict = self._client.get_server_metadata()

    def build_request(self, obs: NominalObservation) -> dict[str, Any]:
        """The openpi DROID observation dict for ``obs``."""
        from openpi_client import image_tools

        def img(name: str) -> np.ndarray:
            im = obs.images.get(name)
            if im is None:
                return np.zeros((self.image_size, self.image_size, 3), np.uint8)
            return image_tools.convert_to_uint8(image_tools.resize_with_pad(np.asarray(im), self.image_size,
                                                                             self.image_size))

        pose = np.asarray(obs.ee_pose, dtype=np.float64).reshape(ACTION_DIM)
        q = np.zeros(7) if obs.joint_positions is None else np.asarray(obs.joint_positions, np.float64)
        return {
            "observation/exterior_image_1_left": img("left"),
            "observation/exterior_image_2_left": img("right"),
            "observation/wrist_image_left": img("wrist"),
            "observation/joint_position": q,
            "observation/gripper_position": np.array([pose[6]]),
            "observation/cartesian_position": pose[:6].copy(),
            "prompt": obs.instruction,
        }

    def infer(self, obs: NominalObservation) -> np.ndarray:
        resp = self._client.infer(self.build_request(obs))
        if "actions" not in resp:
            raise RuntimeError(f"openpi server response lacks 'actions' (keys: {sorted(resp)})")
        acts = np.asarray(resp["actions"], dtype=np.float64)
        if acts.ndim != 2 or not np.isfinite(acts).all():
            raise RuntimeError(f"openpi server returned invalid actions of shape {acts.shape}")
        stride = max(1, round(self.policy_rate_hz / MODEL_RATE_HZ))
        if self.action_space == "ee_pose":
            if acts.shape[1] != ACTION_DIM:
                raise RuntimeError(f"expected (H', 7) EE poses from the server, got {acts.shape}")
            idx = np.minimum(np.arange(1, self.horizon + 1) * stride - 1, len(acts) - 1)
            return acts[idx]
        if acts.shape[1] != 8:
            raise RuntimeError(f"expected (H', 8) joint velocities + gripper from a DROID server, got {acts.shape}")
        if obs.joint_positions is None:
            raise ValueError("joint-velocity policies need obs.joint_positions")
        return joint_velocity_chunk_to_ee(self.kin, np.asarray(obs.joint_positions, np.float64), acts,
                                          1.0 / self.policy_rate_hz, self.horizon, stride)

    def reset(self) -> None:
        self._client.reset()

    def close(self) -> None:
        """Close the websocket."""
        ws = getattr(self._client, "_ws", None)
        if ws is not None:
            ws.close()


def joint_velocity_chunk_to_ee(kin: Any, q0: np.ndarray, acts: np.ndarray, dt: float, horizon: int,
                               stride: int = model_stride()) -> np.ndarray:
    """(H', 8) joint velocities [rad/s] + gripper at 1/dt Hz → (H, 7) EE poses at the model rate.

    Uses ``PandaKinematics.integrate_joint_velocity`` (velocity and position limits, Euler unwrapped); the chunk
    holds its last command if it is shorter than ``H·stride`` steps.
    """
    n_steps = horizon * stride
    idx = np.minimum(np.arange(n_steps), len(acts) - 1)
    _, ee = kin.integrate_joint_velocity(np.asarray(q0, np.float64), acts[idx, :7], dt)
    keep = np.arange(stride - 1, n_steps, stride)
    out = ee[keep]
    out[:, 6] = np.clip(acts[idx[keep], 7], 0.0, 1.0)
    return out
